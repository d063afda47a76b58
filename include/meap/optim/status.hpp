// meap/optim/status.hpp: the numbers of a training step that stay on the device until the step's
// one read-back.
//
// A step on meap::cuda must not wait for the GPU until it reports. So the loss, the gradient
// norm and the decision to update live in a small device buffer: the cross-entropy adds its loss
// there (cross_entropy_options::loss_sum), clip_factor() writes the norm, the clipping factor and
// whether to update, and adamw::step() reads that decision on the device and leaves parameters
// and moments untouched when it is "skip" (a non-finite loss or gradient, or a deferred check
// that failed). The trainer copies the buffer back once, at the end of the step. On meap::cpu the
// same buffer is host memory and the same functions read and write it directly.
#pragma once

#include <meap/core/deferred_checks.hpp>
#include <meap/core/device.hpp>
#include <meap/core/error.hpp>
#include <meap/core/tensor_view.hpp>

#include <cstdint>
#include <string_view>

namespace meap {

// The values of a step_status, by index.
enum class status_value : int {
  loss = 0,         // the loss (cross-entropy sums divided by the normalizer: the global mean)
  selected = 1,     // positions with a label
  grad_norm = 2,    // global gradient norm, unscaled (divided by the loss scale)
  grad_factor = 3,  // what AdamW multiplies each gradient by: clip factor / loss scale
  update = 4,       // 1: apply the update; 0: skip it
};
inline constexpr int status_value_count = 5;

template <class Device>
struct step_status {
  tensor_view<double, Device> values{};         // (status_value_count)
  tensor_view<std::uint64_t, Device> checks{};  // deferred check words: k * deferred_check_count, or empty

  double* value(status_value v) const noexcept { return values.data() + static_cast<int>(v); }
  // The (2) values cross_entropy_options::loss_sum adds to.
  tensor_view<double, Device> loss_sum() const { return values.slice(0, 0, 2); }
  // The deferred checks of group k (e.g. micro-batch k).
  deferred_checks<Device> checks_of(index_t k) const {
    return {checks.slice(0, k * deferred_check_count, (k + 1) * deferred_check_count)};
  }
};

namespace detail {
template <class Device>
void check_status(std::string_view function, const step_status<Device>& status) {
  check_shape(function, "status.values", status.values, dims{status_value_count});
  check_contiguous(function, "status.values", status.values);
  if (status.checks.rank() != 0) {
    check_argument(status.checks.rank() == 1 && status.checks.size(0) % deferred_check_count == 0, function,
                   "status.checks", "shape " + to_string(status.checks.shape()),
                   "a multiple of " + std::to_string(deferred_check_count) + " words (deferred_check_count)");
    check_contiguous(function, "status.checks", status.checks);
  }
}
}  // namespace detail

}  // namespace meap
