// Gradient clipping by global norm, the non-finite report, a norm independent of threads, and the
// flat form that decides a step in a step status (clip_factor).
#include <meap/core/philox.hpp>
#include <meap/optim/clip.hpp>

#include "optim/support.hpp"

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <limits>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace {
using optim_test::error_says;
using optim_test::stored_parameter;
namespace tt = boost::test_tools;
}  // namespace

BOOST_AUTO_TEST_SUITE(clip)

// Gradients (3) and (4): norm 5; max_norm 1 scales both by 1 / (5 + 1e-6), as PyTorch does.
BOOST_AUTO_TEST_CASE(norm_above_max_scales_every_gradient) {
  std::vector<stored_parameter<float>> stored;
  stored.emplace_back("a", meap::dims{1}, std::vector<float>{0.0f});
  stored.emplace_back("b", meap::dims{1}, std::vector<float>{0.0f});
  stored[0].grad = {3.0f};
  stored[1].grad = {-4.0f};
  const auto result = meap::clip_grad_norm(meap::cpu{}, optim_test::parameters(stored), 1.0);
  BOOST_TEST(result.finite);
  BOOST_TEST(result.total_norm == 5.0);
  BOOST_TEST(result.scale == 1.0 / (5.0 + 1e-6));
  const auto factor = static_cast<float>(1.0 / (5.0 + 1e-6));
  BOOST_TEST(stored[0].grad[0] == 3.0f * factor);
  BOOST_TEST(stored[1].grad[0] == -4.0f * factor);
  // The clipped gradients have norm max_norm (up to the 1e-6).
  BOOST_TEST(meap::grad_norm(meap::cpu{}, optim_test::parameters(stored)) == 1.0, tt::tolerance(1e-6));
  // Values are untouched.
  BOOST_TEST(stored[0].value[0] == 0.0f);
}

BOOST_AUTO_TEST_CASE(norm_below_max_leaves_gradients_bitwise_unchanged) {
  std::vector<stored_parameter<double>> stored;
  stored.emplace_back("w", meap::dims{2, 2}, std::vector<double>(4, 0.0));
  stored[0].grad = {0.1, -0.2, 0.3, 1e-300};
  const auto before = stored[0].grad;
  const auto result = meap::clip_grad_norm(meap::cpu{}, optim_test::parameters(stored), 10.0);
  BOOST_TEST(result.finite);
  BOOST_TEST(result.scale == 1.0);
  BOOST_TEST(result.total_norm == std::sqrt(0.1 * 0.1 + 0.2 * 0.2 + 0.3 * 0.3), tt::tolerance(1e-15));
  BOOST_TEST(std::memcmp(before.data(), stored[0].grad.data(), sizeof(double) * 4) == 0);
}

BOOST_AUTO_TEST_CASE(nonfinite_gradients_are_reported_and_left_alone) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<stored_parameter<float>> stored;
  stored.emplace_back("fine", meap::dims{3}, std::vector<float>(3, 0.0f));
  stored.emplace_back("layers.1.w", meap::dims{2, 2}, std::vector<float>(4, 0.0f));
  stored.emplace_back("also_bad", meap::dims{2}, std::vector<float>(2, 0.0f));
  stored[0].grad = {100.0f, 100.0f, 100.0f};
  stored[1].grad = {1.0f, 2.0f, nan, 4.0f};
  stored[2].grad = {inf, 0.0f};
  const auto snapshot = [&] {
    std::vector<float> all;
    for (const auto& s : stored) all.insert(all.end(), s.grad.begin(), s.grad.end());
    return all;
  };
  const auto before = snapshot();
  const auto params = optim_test::parameters(stored);
  const auto result = meap::clip_grad_norm(meap::cpu{}, params, 1.0);
  BOOST_TEST(!result.finite);
  BOOST_TEST(std::isnan(result.total_norm));
  BOOST_TEST(result.scale == 1.0);
  const auto after = snapshot();
  BOOST_TEST(std::memcmp(before.data(), after.data(), before.size() * sizeof(float)) == 0);

  const auto bad = meap::first_nonfinite_gradient(meap::cpu{}, params);
  BOOST_TEST_REQUIRE(bad.has_value());
  BOOST_TEST(bad->parameter == "layers.1.w");
  BOOST_TEST(bad->position == 1u);
  BOOST_TEST(bad->index == 2);
  BOOST_TEST(std::isnan(bad->value));

  // Only an infinity: the norm is +inf.
  stored[1].grad[2] = 3.0f;
  const auto inf_result = meap::clip_grad_norm(meap::cpu{}, params, 1.0);
  BOOST_TEST(!inf_result.finite);
  BOOST_TEST(inf_result.total_norm == std::numeric_limits<double>::infinity());
  const auto inf_bad = meap::first_nonfinite_gradient(meap::cpu{}, params);
  BOOST_TEST_REQUIRE(inf_bad.has_value());
  BOOST_TEST(inf_bad->parameter == "also_bad");
  BOOST_TEST(inf_bad->index == 0);
  BOOST_TEST(inf_bad->value == std::numeric_limits<double>::infinity());

  stored[2].grad[0] = -1.0f;
  BOOST_TEST(!meap::first_nonfinite_gradient(meap::cpu{}, params).has_value());
  BOOST_TEST(meap::clip_grad_norm(meap::cpu{}, params, 1.0).finite);
}

// Gradients spanning many chunks: the norm matches a long double sum, and the same gradients
// give the same bits with one thread or several.
BOOST_AUTO_TEST_CASE(large_norm_is_accurate_and_independent_of_thread_count) {
  std::vector<stored_parameter<float>> stored;
  stored.emplace_back("big", meap::dims{300'007}, std::vector<float>(300'007, 0.0f));
  stored.emplace_back("small", meap::dims{5}, std::vector<float>(5, 0.0f));
  meap::philox_stream random(3, 0);
  long double reference = 0;
  for (auto& s : stored)
    for (auto& g : s.grad) {
      g = static_cast<float>(random.next_double() * 2.0 - 1.0);
      reference += static_cast<long double>(g) * static_cast<long double>(g);
    }
  const auto params = optim_test::parameters(stored);
  const double norm = meap::grad_norm(meap::cpu{}, params);
  BOOST_TEST(norm == static_cast<double>(std::sqrt(reference)), tt::tolerance(1e-13));
#if defined(_OPENMP)
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const double one = meap::grad_norm(meap::cpu{}, params);
  omp_set_num_threads(3);
  const double three = meap::grad_norm(meap::cpu{}, params);
  omp_set_num_threads(threads);
  BOOST_TEST(std::memcmp(&one, &norm, sizeof norm) == 0);
  BOOST_TEST(std::memcmp(&three, &norm, sizeof norm) == 0);
#endif
  const auto result = meap::clip_grad_norm(meap::cpu{}, params, 1.0);
  BOOST_TEST(result.scale < 1.0);
  BOOST_TEST(meap::grad_norm(meap::cpu{}, params) == 1.0, tt::tolerance(1e-5));
}

// Finite double gradients whose squares overflow still have a finite norm.
BOOST_AUTO_TEST_CASE(double_gradients_beyond_1e154_do_not_overflow_the_norm) {
  std::vector<stored_parameter<double>> stored;
  stored.emplace_back("w", meap::dims{4}, std::vector<double>(4, 0.0));
  stored[0].grad = {1e200, -1e200, 1e200, 1e200};
  const auto result = meap::clip_grad_norm(meap::cpu{}, optim_test::parameters(stored), 1.0);
  BOOST_TEST(result.finite);
  BOOST_TEST(result.total_norm == 2e200, tt::tolerance(1e-14));
  BOOST_TEST(stored[0].grad[0] == 0.5, tt::tolerance(1e-12));
  BOOST_TEST(stored[0].grad[1] == -0.5, tt::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(empty_parameter_list_has_norm_zero) {
  const std::vector<meap::named_parameter<float, meap::cpu>> none;
  const auto result = meap::clip_grad_norm(meap::cpu{}, none, 1.0);
  BOOST_TEST(result.total_norm == 0.0);
  BOOST_TEST(result.scale == 1.0);
  BOOST_TEST(result.finite);
}

BOOST_AUTO_TEST_CASE(max_norm_and_parameters_are_validated) {
  std::vector<stored_parameter<float>> stored;
  stored.emplace_back("w", meap::dims{2}, std::vector<float>{1.0f, 2.0f});
  const auto params = optim_test::parameters(stored);
  for (const double bad : {0.0, -1.0, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()})
    BOOST_CHECK_EXCEPTION(meap::clip_grad_norm(meap::cpu{}, params, bad), meap::error,
                          error_says("max_norm", {"meap::clip_grad_norm", "a finite value > 0"}));
  auto mismatched = params;
  mismatched[0].grad = mismatched[0].grad.reshape({1, 2});
  BOOST_CHECK_EXCEPTION(meap::clip_grad_norm(meap::cpu{}, mismatched, 1.0), meap::error,
                        error_says("params", {"meap::clip_grad_norm", "grad shape (1, 2)"}));
  BOOST_CHECK_EXCEPTION(meap::grad_norm(meap::cpu{}, mismatched), meap::error, error_says("params", {"meap::grad_norm"}));
  BOOST_CHECK_EXCEPTION(meap::first_nonfinite_gradient(meap::cpu{}, mismatched), meap::error,
                        error_says("params", {"meap::first_nonfinite_gradient"}));
}

// The flat form: norm, factor and decision into a status, nothing modified.
BOOST_AUTO_TEST_CASE(clip_factor_decides_the_update_in_a_status) {
  std::vector<float> grads = {3.0f, 0.0f, 4.0f, 0.0f};
  std::vector<double> values(meap::status_value_count, 0.0);
  std::vector<std::uint64_t> checks(2 * meap::deferred_check_count, meap::deferred_none);
  const meap::step_status<meap::cpu> status{meap::make_view(std::span<double>(values), {meap::status_value_count}),
                                            meap::make_view(std::span<std::uint64_t>(checks),
                                                            {2 * meap::deferred_check_count})};
  const auto g = meap::make_view(std::span<const float>(grads), {4});
  const auto value = [&](meap::status_value v) { return values[static_cast<int>(v)]; };
  values[static_cast<int>(meap::status_value::loss)] = 2.5;
  meap::clip_factor(meap::cpu{}, g, 1.0, status);
  BOOST_TEST(value(meap::status_value::grad_norm) == 5.0);
  BOOST_TEST(value(meap::status_value::grad_factor) == 1.0 / (5.0 + 1e-6));
  BOOST_TEST(value(meap::status_value::update) == 1.0);
  BOOST_TEST(grads[0] == 3.0f);  // untouched
  // Gradients scaled by a loss scale of 1024: the same norm, the factor divided by the scale.
  std::vector<float> scaled = {3072.0f, 0.0f, 4096.0f, 0.0f};
  meap::clip_factor(meap::cpu{}, meap::make_view(std::span<const float>(scaled), {4}), 10.0, status, 1024.0);
  BOOST_TEST(value(meap::status_value::grad_norm) == 5.0);
  BOOST_TEST(value(meap::status_value::grad_factor) == 1.0 / 1024.0);
  // No clipping (max_norm infinite).
  meap::clip_factor(meap::cpu{}, g, std::numeric_limits<double>::infinity(), status);
  BOOST_TEST(value(meap::status_value::grad_factor) == 1.0);
  // Skip on a non-finite gradient, a non-finite loss, or a failed deferred check.
  grads[1] = std::numeric_limits<float>::infinity();
  meap::clip_factor(meap::cpu{}, g, 1.0, status);
  BOOST_TEST(value(meap::status_value::update) == 0.0);
  BOOST_TEST(value(meap::status_value::grad_factor) == 1.0);
  grads[1] = 0.0f;
  values[static_cast<int>(meap::status_value::loss)] = std::numeric_limits<double>::quiet_NaN();
  meap::clip_factor(meap::cpu{}, g, 1.0, status);
  BOOST_TEST(value(meap::status_value::update) == 0.0);
  values[static_cast<int>(meap::status_value::loss)] = 2.5;
  checks[meap::deferred_check_count + 1] = meap::deferred_failure(3, 77);
  meap::clip_factor(meap::cpu{}, g, 1.0, status);
  BOOST_TEST(value(meap::status_value::update) == 0.0);
  checks[meap::deferred_check_count + 1] = meap::deferred_none;
  meap::clip_factor(meap::cpu{}, g, 1.0, status);
  BOOST_TEST(value(meap::status_value::update) == 1.0);
  // Arguments.
  BOOST_CHECK_EXCEPTION(meap::clip_factor(meap::cpu{}, g, 0.0, status), meap::error,
                        error_says("max_norm", {"meap::clip_factor", "> 0"}));
  BOOST_CHECK_EXCEPTION(meap::clip_factor(meap::cpu{}, g, 1.0, status, 0.0), meap::error,
                        error_says("loss_scale", {"finite value > 0"}));
  BOOST_CHECK_EXCEPTION(meap::clip_factor(meap::cpu{}, g.reshape({2, 2}), 1.0, status), meap::error,
                        error_says("grads", {"rank-1"}));
  const meap::step_status<meap::cpu> short_status{meap::make_view(std::span<double>(values).first(3), {3})};
  BOOST_CHECK_EXCEPTION(meap::clip_factor(meap::cpu{}, g, 1.0, short_status), meap::error,
                        error_says("status.values", {"(5)"}));
}

BOOST_AUTO_TEST_SUITE_END()
