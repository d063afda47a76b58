// meap/optim/schedule.hpp: learning-rate schedules.
//
// warmup_cosine: linear warmup to peak_lr, then a half cosine down to min_lr, then min_lr. For
// the optimizer step with 0-based index s (W = warmup_steps, S = total_steps):
//   s <  W:      lr = peak_lr * (s + 1) / W
//   W <= s < S:  lr = min_lr + (peak_lr - min_lr) * (1 + cos(pi * (s - W) / (S - W))) / 2
//   s >= S:      lr = min_lr
// Warmup starts at peak_lr / W rather than 0, so no step is spent at lr 0; step W - 1 reaches
// peak_lr and step W (the start of the cosine) is peak_lr again. This is the rule of llm.c and
// nanoGPT. See docs/optim.md.
//
//   meap::warmup_cosine schedule({.peak_lr = 3e-4, .min_lr = 3e-5, .warmup_steps = 100, .total_steps = 5000});
//   opt.step(meap::cpu{}, params, schedule(step));
#pragma once

#include <meap/core/error.hpp>

#include <cmath>
#include <cstdint>
#include <numbers>
#include <string_view>

namespace meap {

struct warmup_cosine_config {
  double peak_lr = 3e-4;
  double min_lr = 0.0;
  std::int64_t warmup_steps = 0;
  std::int64_t total_steps = 0;  // the step at which lr reaches min_lr; must be set (>= 1)

  // Throws meap::error naming the first invalid field.
  void validate() const {
    constexpr std::string_view function = "meap::warmup_cosine_config";
    check_argument(std::isfinite(peak_lr) && peak_lr >= 0, function, "peak_lr", peak_lr, "a finite value >= 0");
    check_argument(std::isfinite(min_lr) && min_lr >= 0 && min_lr <= peak_lr, function, "min_lr", min_lr,
                   "a finite value in [0, peak_lr = " + detail::value_to_string(peak_lr) + "]");
    check_argument(warmup_steps >= 0, function, "warmup_steps", warmup_steps, "a step count >= 0");
    // total_steps has no usable default: 0 would make every step min_lr.
    check_argument(total_steps >= 1 && total_steps >= warmup_steps, function, "total_steps", total_steps,
                   "a step count >= 1 and >= warmup_steps = " + std::to_string(warmup_steps));
  }
};

class warmup_cosine {
 public:
  explicit warmup_cosine(const warmup_cosine_config& config) : config_(config) { config_.validate(); }

  const warmup_cosine_config& config() const noexcept { return config_; }

  // The learning rate of the optimizer step with 0-based index `step` (>= 0).
  double operator()(std::int64_t step) const {
    check_argument(step >= 0, "meap::warmup_cosine", "step", step, "a step index >= 0");
    const auto& c = config_;
    if (step < c.warmup_steps)
      return c.peak_lr * static_cast<double>(step + 1) / static_cast<double>(c.warmup_steps);
    if (step >= c.total_steps) return c.min_lr;
    const double progress =
        static_cast<double>(step - c.warmup_steps) / static_cast<double>(c.total_steps - c.warmup_steps);
    return c.min_lr + (c.peak_lr - c.min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
  }

 private:
  warmup_cosine_config config_;
};

}  // namespace meap
