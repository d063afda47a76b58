// warmup_cosine at its boundaries, and its validation.
#include <meap/optim/schedule.hpp>

#include "optim/support.hpp"

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <limits>
#include <numbers>

namespace {
using optim_test::error_says;
namespace tt = boost::test_tools;
}  // namespace

BOOST_AUTO_TEST_SUITE(schedule)

BOOST_AUTO_TEST_CASE(warmup_cosine_boundaries) {
  const double peak = 1e-3, floor = 1e-4;
  const meap::warmup_cosine lr({.peak_lr = peak, .min_lr = floor, .warmup_steps = 10, .total_steps = 110});
  // Warmup: step s gets peak * (s + 1) / 10, so no step runs at lr 0 and step 9 reaches the peak.
  BOOST_TEST(lr(0) == peak / 10, tt::tolerance(1e-15));
  BOOST_TEST(lr(4) == peak * 5 / 10, tt::tolerance(1e-15));
  BOOST_TEST(lr(9) == peak, tt::tolerance(1e-15));
  // The cosine starts at the peak, is halfway at its midpoint, and ends at min_lr.
  BOOST_TEST(lr(10) == peak, tt::tolerance(1e-15));
  BOOST_TEST(lr(60) == (peak + floor) / 2, tt::tolerance(1e-14));
  BOOST_TEST(lr(35) == floor + (peak - floor) * 0.5 * (1 + std::cos(std::numbers::pi * 0.25)), tt::tolerance(1e-14));
  BOOST_TEST(lr(109) > floor);
  BOOST_TEST(lr(109) - floor < 1e-3 * (peak - floor));  // (1 + cos(0.99 pi)) / 2 = 2.5e-4
  BOOST_TEST(lr(110) == floor);
  BOOST_TEST(lr(1'000'000) == floor);
  for (std::int64_t s = 0; s + 1 < 10; ++s) BOOST_TEST(lr(s) < lr(s + 1));
  for (std::int64_t s = 10; s < 110; ++s) BOOST_TEST(lr(s) >= lr(s + 1));
}

BOOST_AUTO_TEST_CASE(no_warmup_starts_at_the_peak) {
  const meap::warmup_cosine lr({.peak_lr = 2.0, .min_lr = 0.0, .warmup_steps = 0, .total_steps = 4});
  BOOST_TEST(lr(0) == 2.0);
  BOOST_TEST(lr(2) == 1.0, tt::tolerance(1e-15));
  BOOST_TEST(lr(4) == 0.0);
}

BOOST_AUTO_TEST_CASE(total_equal_to_warmup_drops_to_min_after_warmup) {
  const meap::warmup_cosine lr({.peak_lr = 1.0, .min_lr = 0.25, .warmup_steps = 4, .total_steps = 4});
  BOOST_TEST(lr(3) == 1.0);
  BOOST_TEST(lr(4) == 0.25);
  const meap::warmup_cosine flat({.peak_lr = 0.5, .min_lr = 0.5, .warmup_steps = 0, .total_steps = 1});
  BOOST_TEST(flat(0) == 0.5);
  BOOST_TEST(flat(7) == 0.5);
}

BOOST_AUTO_TEST_CASE(config_and_step_are_validated) {
  const auto rejects = [](meap::warmup_cosine_config c, const std::string& field, const std::string& fragment) {
    BOOST_CHECK_EXCEPTION(meap::warmup_cosine{c}, meap::error,
                          error_says(field, {"meap::warmup_cosine_config", fragment}));
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  rejects({.peak_lr = -1.0, .total_steps = 10}, "peak_lr", ">= 0");
  rejects({.peak_lr = nan, .total_steps = 10}, "peak_lr", "finite");
  rejects({.peak_lr = 1.0, .min_lr = 2.0, .total_steps = 10}, "min_lr", "[0, peak_lr = 1]");
  rejects({.peak_lr = 1.0, .min_lr = -0.5, .total_steps = 10}, "min_lr", "[0, peak_lr");
  rejects({.peak_lr = 1.0, .warmup_steps = -1, .total_steps = 10}, "warmup_steps", ">= 0");
  rejects({.peak_lr = 1.0, .warmup_steps = 20, .total_steps = 10}, "total_steps", ">= warmup_steps = 20");
  rejects({.peak_lr = 1.0}, "total_steps", ">= 1");
  const meap::warmup_cosine lr({.peak_lr = 1.0, .total_steps = 10});
  BOOST_CHECK_EXCEPTION(lr(-1), meap::error, error_says("step", {"meap::warmup_cosine", ">= 0"}));
}

BOOST_AUTO_TEST_SUITE_END()
