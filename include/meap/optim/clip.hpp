// meap/optim/clip.hpp: gradient clipping by global L2 norm, and the non-finite gradient report,
// on every device (optim/cpu/clip.hpp, optim/cuda/clip.hpp).
//
// Two forms:
//  * Over a list of named parameters, as torch.nn.utils.clip_grad_norm_ does:
//      const auto clip = meap::clip_grad_norm(device, params, 1.0);
//      if (!clip.finite) { report(meap::first_nonfinite_gradient(device, params)); skip the step; }
//    total_norm = sqrt(sum over all gradient elements of g^2), and every gradient is multiplied by
//    scale = min(1, max_norm / (total_norm + 1e-6)). Two differences, both deliberate: the sum is
//    accumulated in double in a fixed order (so the norm, and therefore the training run, does not
//    depend on the thread count or the grid), and a non-finite norm leaves the gradients untouched
//    and says so, where PyTorch would multiply them by NaN. It returns the norm to the host (on
//    CUDA it waits for the stream).
//  * Over a flat gradient buffer into a step_status (optim/status.hpp), without waiting:
//      meap::clip_factor(device, store.grad_flat(), 1.0, status, loss_scale);
//    computes the norm on the device, and there decides the step: update only when the norm, the
//    loss and every deferred check are fine, with the gradients multiplied by
//    min(1, max_norm / (norm + 1e-6)) / loss_scale, which AdamW applies as it reads them (the same
//    rounding as scaling them in place). The gradients themselves are not modified.
// Element types: float and double on the CPU; float, half and bfloat16 on CUDA. The sum of
// squares of float, half or bfloat16 values cannot overflow a double; for double gradients beyond
// 1e154 the CPU recomputes the norm with every element divided by the largest magnitude first.
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/error.hpp>
#include <meap/core/precision.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/backend.hpp>
#include <meap/optim/cpu/clip.hpp>
#include <meap/optim/parameter.hpp>
#include <meap/optim/status.hpp>

#include <algorithm>
#include <cmath>
#include <optional>
#include <span>
#include <string_view>
#include <type_traits>
#include <vector>

namespace meap {

struct clip_result {
  double total_norm = 0;  // global L2 norm of the gradients before clipping (NaN or inf if non-finite)
  double scale = 1;       // factor the gradients were multiplied by (1: untouched)
  bool finite = true;     // false: some gradient is NaN or inf; nothing was changed, skip the step
};

// The global L2 norm of all gradients (NaN or inf when one is non-finite). Nothing is modified.
template <class T, device Device>
  requires layer_element<T, Device>
double grad_norm(const Device& device, std::span<const named_parameter<T, Device>> params) {
  detail::check_parameters<T, Device>("meap::grad_norm", params);
  return detail::clip_kernels<Device>::template norm<T>(device, params);
}

// Scales all gradients so that their global L2 norm is at most about max_norm (see the top of
// this file). max_norm must be finite and > 0.
template <class T, device Device>
  requires layer_element<T, Device>
clip_result clip_grad_norm(const Device& device, std::span<const named_parameter<T, Device>> params, double max_norm) {
  constexpr std::string_view function = "meap::clip_grad_norm";
  check_argument(std::isfinite(max_norm) && max_norm > 0, function, "max_norm", max_norm, "a finite value > 0");
  detail::check_parameters<T, Device>(function, params);
  const double norm = detail::clip_kernels<Device>::template norm<T>(device, params);
  if (!std::isfinite(norm)) return {norm, 1.0, false};
  const double scale = std::min(1.0, max_norm / (norm + 1e-6));
  if (scale < 1.0) detail::clip_kernels<Device>::template scale<T>(device, params, scale);
  return {norm, scale, true};
}

// The first non-finite gradient element, or nullopt when all are finite: what a trainer prints
// when clip_grad_norm reports finite == false. On CUDA it waits for the stream.
template <class T, device Device>
  requires layer_element<T, Device>
std::optional<nonfinite_gradient> first_nonfinite_gradient(const Device& device,
                                                           std::span<const named_parameter<T, Device>> params) {
  detail::check_parameters<T, Device>("meap::first_nonfinite_gradient", params);
  return detail::clip_kernels<Device>::template first_nonfinite<T>(device, params);
}

// The same for a std::vector of parameters (a template cannot deduce T through the conversion to
// std::span).
template <class T, device Device>
double grad_norm(const Device& device, const std::vector<named_parameter<T, Device>>& params) {
  return grad_norm(device, std::span<const named_parameter<T, Device>>(params));
}
template <class T, device Device>
clip_result clip_grad_norm(const Device& device, const std::vector<named_parameter<T, Device>>& params,
                           double max_norm) {
  return clip_grad_norm(device, std::span<const named_parameter<T, Device>>(params), max_norm);
}
template <class T, device Device>
std::optional<nonfinite_gradient> first_nonfinite_gradient(const Device& device,
                                                           const std::vector<named_parameter<T, Device>>& params) {
  return first_nonfinite_gradient(device, std::span<const named_parameter<T, Device>>(params));
}

// The flat form (see the top of this file): grads (n) contiguous, the gradients of a whole model
// (nn::parameter_store::grad_flat()) scaled by loss_scale; status.values receives the unscaled
// norm, the factor AdamW applies and the update decision. max_norm > 0 (infinity: no clipping);
// loss_scale a finite value > 0 (1 unless fp16 loss scaling). Does not wait for the device.
template <class T, device Device>
  requires layer_element<std::remove_const_t<T>, Device>
void clip_factor(const Device& device, const tensor_view<T, Device>& grads, double max_norm,
                 const step_status<Device>& status, double loss_scale = 1.0) {
  using U = std::remove_const_t<T>;
  constexpr std::string_view function = "meap::clip_factor";
  check_argument(max_norm > 0 && !std::isnan(max_norm), function, "max_norm", max_norm,
                 "a value > 0 (infinity for no clipping)");
  check_argument(std::isfinite(loss_scale) && loss_scale > 0, function, "loss_scale", loss_scale, "a finite value > 0");
  check_argument(grads.rank() == 1, function, "grads", "shape " + to_string(grads.shape()),
                 "a rank-1 (flat) gradient buffer");
  check_contiguous(function, "grads", grads);
  detail::check_status(function, status);
  check_colocated<Device>(function, {at("grads", grads), at("status.values", status.values),
                                     at("status.checks", status.checks)});
  detail::clip_kernels<Device>::template factor<U>(device, grads.as_const(), max_norm, loss_scale, status);
}

// The flat form split in two, for gradients spread over processes (ZeRO-1, dist/): each rank
// writes the sum of squares of its shard of the (loss-scaled) gradients into sum (1), without
// waiting; once the ranks' sums are gathered into sums (k, rank order), clip_factor_from_sums
// adds them in that order and decides the step as clip_factor does (norm = sqrt(sum) /
// loss_scale). Unlike clip_factor there is no rescaled second pass for double gradients beyond
// 1e154: their norm comes out infinite and the step is skipped.
template <class T, device Device>
  requires layer_element<std::remove_const_t<T>, Device>
void sum_of_squares(const Device& device, const tensor_view<T, Device>& grads, const tensor_view<double, Device>& sum) {
  using U = std::remove_const_t<T>;
  constexpr std::string_view function = "meap::sum_of_squares";
  check_argument(grads.rank() == 1, function, "grads", "shape " + to_string(grads.shape()), "a rank-1 (flat) buffer");
  check_contiguous(function, "grads", grads);
  check_shape(function, "sum", sum, dims{1});
  check_colocated<Device>(function, {at("grads", grads), at("sum", sum)});
  detail::clip_kernels<Device>::template sum_of_squares<U>(device, grads.as_const(), sum.data());
}

template <device Device>
void clip_factor_from_sums(const Device& device, const tensor_view<const double, Device>& sums, double max_norm,
                           const step_status<Device>& status, double loss_scale = 1.0) {
  constexpr std::string_view function = "meap::clip_factor_from_sums";
  check_argument(max_norm > 0 && !std::isnan(max_norm), function, "max_norm", max_norm,
                 "a value > 0 (infinity for no clipping)");
  check_argument(std::isfinite(loss_scale) && loss_scale > 0, function, "loss_scale", loss_scale, "a finite value > 0");
  check_argument(sums.rank() == 1 && sums.size(0) >= 1, function, "sums", "shape " + to_string(sums.shape()),
                 "(k) sums of squares, k >= 1");
  check_contiguous(function, "sums", sums);
  detail::check_status(function, status);
  check_colocated<Device>(function, {at("sums", sums), at("status.values", status.values),
                                     at("status.checks", status.checks)});
  detail::clip_kernels<Device>::factor_from_sums(device, sums.data(), sums.numel(), max_norm, loss_scale, status);
}

}  // namespace meap
