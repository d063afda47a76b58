// studies/statistics.hpp against values known in closed form or from tables.
#include "support/errors.hpp"

#include "statistics.hpp"

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <vector>

using meap_test::error_says;

BOOST_AUTO_TEST_SUITE(statistics)

BOOST_AUTO_TEST_CASE(summaries) {
  const std::vector<double> v{2, 4, 4, 4, 5, 5, 7, 9};
  const auto s = meap_studies::summarize(v);
  BOOST_TEST(s.n == 8u);
  BOOST_TEST(s.mean == 5.0);
  BOOST_TEST(std::abs(s.sd - std::sqrt(32.0 / 7.0)) < 1e-14);
  BOOST_TEST(meap_studies::summarize(std::vector<double>{3}).sd == 0.0);
}

BOOST_AUTO_TEST_CASE(student_t_against_tables) {
  // Cauchy (1 dof): P(|T| >= 1) = 1/2 exactly; two-sided 5% critical values of t tables.
  BOOST_TEST(std::abs(meap_studies::student_t_two_sided_p(1.0, 1) - 0.5) < 1e-12);
  BOOST_TEST(std::abs(meap_studies::student_t_two_sided_p(2.776445, 4) - 0.05) < 1e-6);
  BOOST_TEST(std::abs(meap_studies::student_t_two_sided_p(-2.570582, 5) - 0.05) < 1e-6);
  BOOST_TEST(std::abs(meap_studies::student_t_two_sided_p(4.604095, 4) - 0.01) < 1e-6);
  BOOST_TEST(std::abs(meap_studies::student_t_two_sided_p(1.959964, 1e7) - 0.05) < 1e-6);  // the normal limit
  BOOST_TEST(meap_studies::student_t_two_sided_p(0.0, 3) == 1.0);
  BOOST_CHECK_EXCEPTION(meap_studies::student_t_two_sided_p(1, 0), meap::error, error_says("dof", {"> 0"}));
}

BOOST_AUTO_TEST_CASE(sign_flip_is_exact) {
  // All five differences positive: only the two one-sign patterns are as extreme, 2 / 32.
  BOOST_TEST(meap_studies::sign_flip_p(std::vector<double>{1, 2, 3, 4, 5}) == 2.0 / 32);
  // {3, -1}: sums 2, -2, 4, -4; |sum| >= 2 for all four patterns.
  BOOST_TEST(meap_studies::sign_flip_p(std::vector<double>{3, -1}) == 1.0);
  // {5, 1, 1}: |sums| 7, 5, 5, 3 (and mirrors): as extreme as 7 only the two +-7 patterns.
  BOOST_TEST(meap_studies::sign_flip_p(std::vector<double>{5, 1, 1}) == 2.0 / 8);
  BOOST_CHECK_EXCEPTION(meap_studies::sign_flip_p(std::vector<double>(25, 1.0)), meap::error,
                        error_says("differences", {"25 values", "1 to 24"}));
}

BOOST_AUTO_TEST_CASE(paired_comparison_of_seeds) {
  const std::vector<double> ntp{50, 60, 55, 70, 65}, meap{52, 63, 55, 75, 66};
  const auto r = meap_studies::paired_comparison(ntp, meap);
  BOOST_TEST(r.difference.mean == 2.2);
  // d = {2, 3, 0, 5, 1}: sd = sqrt(14.8 / 4), t = 2.2 / (sd / sqrt 5).
  const double sd = std::sqrt(14.8 / 4);
  BOOST_TEST(std::abs(r.difference.sd - sd) < 1e-12);
  BOOST_TEST(std::abs(r.t - 2.2 / (sd / std::sqrt(5.0))) < 1e-12);
  BOOST_TEST(r.t_p > 0.05);
  BOOST_TEST(r.t_p < 0.1);
  BOOST_TEST(r.sign_flip_p == 4.0 / 32);  // the zero difference makes two patterns tie with the observed one
  const auto same = meap_studies::paired_comparison(ntp, ntp);
  BOOST_TEST(std::isnan(same.t));
  BOOST_TEST(same.sign_flip_p == 1.0);
  BOOST_CHECK_EXCEPTION(meap_studies::paired_comparison(ntp, std::vector<double>{1}), meap::error,
                        error_says("b", {"1 values", "as many values as a (5)"}));
}

BOOST_AUTO_TEST_SUITE_END()
