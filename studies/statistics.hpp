// studies/statistics.hpp: what a comparison over a few seeds can say. Two models trained from
// the same initialization and data differ by one choice (NTP or MEAP); each seed gives one paired
// difference d_i = score(MEAP, seed i) - score(NTP, seed i). paired_comparison reports
//   mean and sample standard deviation of both and of d, the paired t statistic
//   t = mean(d) / (sd(d) / sqrt(n)) with its two-sided p-value (Student's t, n - 1 degrees of
//   freedom), and the exact two-sided p-value of the sign-flip permutation test (under "no
//   difference" each d_i is as likely to have had the other sign: the share of the 2^n sign
//   patterns whose |mean| is at least the observed one). The permutation test assumes no normality;
//   with n seeds its smallest possible p is 2 / 2^n (0.0625 for 5 seeds), which is worth knowing
//   before reading a table.
//
// Study tooling, not library: nothing here touches a model, a tensor or a device, nothing in
// include/meap uses it, and only the seed studies (studies/harness.hpp) and their test do. (It was
// meap/eval/statistics.hpp.)
#pragma once

#include <meap/core/error.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

namespace meap_studies {

struct summary {
  std::size_t n = 0;
  double mean = 0.0;
  double sd = 0.0;  // sample standard deviation (n - 1); 0 for n = 1
};

inline summary summarize(std::span<const double> values) {
  summary s;
  s.n = values.size();
  if (s.n == 0) return s;
  for (const double v : values) s.mean += v;
  s.mean /= static_cast<double>(s.n);
  if (s.n > 1) {
    double squares = 0.0;
    for (const double v : values) squares += (v - s.mean) * (v - s.mean);
    s.sd = std::sqrt(squares / static_cast<double>(s.n - 1));
  }
  return s;
}

namespace detail {

// The continued fraction of the incomplete beta function (modified Lentz), for x < (a + 1) / (a + b + 2).
inline double incomplete_beta_fraction(double a, double b, double x) {
  constexpr double tiny = 1e-300;
  double c = 1.0, d = 1.0 - (a + b) * x / (a + 1.0);
  if (std::abs(d) < tiny) d = tiny;
  d = 1.0 / d;
  double h = d;
  for (int m = 1; m <= 300; ++m) {
    const double m2 = 2.0 * m;
    double numerator = m * (b - m) * x / ((a + m2 - 1.0) * (a + m2));
    d = 1.0 + numerator * d;
    c = 1.0 + numerator / c;
    d = 1.0 / (std::abs(d) < tiny ? tiny : d);
    c = std::abs(c) < tiny ? tiny : c;
    h *= d * c;
    numerator = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0));
    d = 1.0 + numerator * d;
    c = 1.0 + numerator / c;
    d = 1.0 / (std::abs(d) < tiny ? tiny : d);
    c = std::abs(c) < tiny ? tiny : c;
    const double delta = d * c;
    h *= delta;
    if (std::abs(delta - 1.0) < 1e-15) break;
  }
  return h;
}

// The regularized incomplete beta function I_x(a, b).
inline double regularized_incomplete_beta(double a, double b, double x) {
  if (x <= 0.0) return 0.0;
  if (x >= 1.0) return 1.0;
  const double front =
      std::exp(std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) + b * std::log1p(-x));
  if (x < (a + 1.0) / (a + b + 2.0)) return front * incomplete_beta_fraction(a, b, x) / a;
  return 1.0 - front * incomplete_beta_fraction(b, a, 1.0 - x) / b;
}

}  // namespace detail

// Two-sided p-value of Student's t with `dof` degrees of freedom: P(|T| >= |t|).
inline double student_t_two_sided_p(double t, double dof) {
  meap::check_argument(dof > 0.0, "meap_studies::student_t_two_sided_p", "dof", dof, "degrees of freedom > 0");
  if (std::isnan(t)) return std::numeric_limits<double>::quiet_NaN();
  if (std::isinf(t)) return 0.0;
  return detail::regularized_incomplete_beta(dof / 2.0, 0.5, dof / (dof + t * t));
}

// Exact two-sided sign-flip permutation p-value of the mean of `differences` (n <= 24).
inline double sign_flip_p(std::span<const double> differences) {
  const std::size_t n = differences.size();
  meap::check_argument(n >= 1 && n <= 24, "meap_studies::sign_flip_p", "differences", std::to_string(n) + " values",
                 "1 to 24 paired differences (2^n sign patterns are enumerated)");
  double observed = 0.0;
  for (const double d : differences) observed += d;
  observed = std::abs(observed);
  const std::uint64_t patterns = std::uint64_t{1} << n;
  std::uint64_t as_extreme = 0;
  for (std::uint64_t pattern = 0; pattern < patterns; ++pattern) {
    double sum = 0.0;
    for (std::size_t i = 0; i < n; ++i) sum += (pattern >> i & 1u) ? -differences[i] : differences[i];
    // A relative margin, so that the observed pattern itself always counts despite rounding.
    as_extreme += std::abs(sum) >= observed * (1.0 - 1e-12);
  }
  return static_cast<double>(as_extreme) / static_cast<double>(patterns);
}

struct paired_result {
  summary a, b, difference;  // difference = b - a, per pair
  double t = std::numeric_limits<double>::quiet_NaN();        // NaN when n < 2 or sd(d) = 0
  double t_p = std::numeric_limits<double>::quiet_NaN();      // two-sided, Student's t
  double sign_flip_p = std::numeric_limits<double>::quiet_NaN();  // exact, two-sided
};

// Paired comparison of b against a (one pair per seed): see the top of the file.
inline paired_result paired_comparison(std::span<const double> a, std::span<const double> b) {
  meap::check_argument(a.size() == b.size() && !a.empty(), "meap_studies::paired_comparison", "b",
                 std::to_string(b.size()) + " values", "as many values as a (" + std::to_string(a.size()) + "), at least one");
  std::vector<double> d(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) d[i] = b[i] - a[i];
  paired_result r;
  r.a = summarize(a);
  r.b = summarize(b);
  r.difference = summarize(d);
  if (d.size() <= 24) r.sign_flip_p = meap_studies::sign_flip_p(d);
  if (r.difference.n >= 2 && r.difference.sd > 0.0) {
    r.t = r.difference.mean / (r.difference.sd / std::sqrt(static_cast<double>(r.difference.n)));
    r.t_p = student_t_two_sided_p(r.t, static_cast<double>(r.difference.n - 1));
  }
  return r;
}

}  // namespace meap_studies
