// meap/kernels/cross_entropy.hpp: selective cross-entropy, plain (from logits) and fused with the
// LM head (from hidden states and the head weight, never materializing the N x V logits), on
// every device (kernels/cpu/cross_entropy.hpp, kernels/cuda/cross_entropy.hpp).
//
//   logits: (N, V)   hidden: (N, d)   weight: (V, d)   labels: (N) int32, ignore_index = -100
//
// The loss is the sum over the selected rows (label != -100) of
//   (1 - eps) (L - z_y) + eps (L - mean_j z_j) + lambda L^2,   L = log sum_j exp z_j,
// divided by options.normalizer (by default the number of selected rows: the mean), i.e. ordinary
// cross-entropy when label_smoothing eps = 0 and z_loss lambda = 0 (the defaults). Gradients are
// those of that loss, times options.gradient_scale. If no row is selected the loss is 0 and every
// gradient is 0 (never NaN), so a batch without targets contributes nothing.
//
// Cost of the fused version is proportional to the number of selected rows: they are gathered
// first, then processed in blocks (logits in the accumulate type, one block at a time).
// half / bfloat16 inputs are widened to float; results are rounded once. All views must be
// contiguous and on one device; gradient outputs are overwritten (d_weight: or added to, with
// options.d_weight_write), and a default view skips one. Labels are data: on meap::cuda their
// check waits for the stream unless options.checks defers it; see kernels/options.hpp for the
// options that let a training step avoid every wait.
#pragma once

#include <meap/core/deferred_checks.hpp>
#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/dtype.hpp>
#include <meap/core/error.hpp>
#include <meap/core/labels.hpp>
#include <meap/core/precision.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/backend.hpp>
#include <meap/kernels/cpu/cross_entropy.hpp>
#include <meap/kernels/options.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

namespace meap {

// Where linear_cross_entropy may write the head's gradient for T inputs: T, or float for 16-bit T.
template <class G, class T, class Device>
concept loss_gradient_element =
    loss_element<T, Device> && (std::is_same_v<G, T> || (std::is_same_v<G, float> && sizeof(T) == 2));

namespace detail {

template <class Device>
void check_cross_entropy_options(std::string_view function, const cross_entropy_options<Device>& options,
                                 index_t rows) {
  check_argument(options.label_smoothing >= 0.0 && options.label_smoothing < 1.0, function, "label_smoothing",
                 options.label_smoothing, "a value in [0, 1)");
  check_argument(options.z_loss >= 0.0 && std::isfinite(options.z_loss), function, "z_loss", options.z_loss,
                 "a finite non-negative weight");
  check_argument(options.normalizer >= 0.0 && std::isfinite(options.normalizer), function, "normalizer",
                 options.normalizer, "a finite value > 0, or 0 for the number of selected rows");
  check_argument(options.gradient_scale > 0.0 && std::isfinite(options.gradient_scale), function, "gradient_scale",
                 options.gradient_scale, "a finite value > 0");
  if (options.selected_rows)
    check_argument(*options.selected_rows >= 0 && *options.selected_rows <= rows, function, "options.selected_rows",
                   *options.selected_rows, "a row count in [0, " + std::to_string(rows) + "]");
  if (options.loss_sum.rank() != 0) {
    check_shape(function, "options.loss_sum", options.loss_sum, dims{2});
    check_contiguous(function, "options.loss_sum", options.loss_sum);
  }
  if (options.checks.active()) check_shape(function, "options.checks", options.checks.words, dims{deferred_check_count});
  check_argument(options.logits_budget_bytes > 0, function, "options.logits_budget_bytes", "0",
                 "a positive byte budget for one block's logits");
}

template <class T, class Device>
void check_gradient(std::string_view function, std::string_view argument, const tensor_view<T, Device>& view,
                    const dims& expected) {
  if (view.rank() == 0) return;  // not requested
  check_shape(function, argument, view, expected);
  check_contiguous(function, argument, view);
}

}  // namespace detail

// Plain selective cross-entropy from logits. logits: (N, V), labels: (N); d_logits: (N, V) or a
// default view to skip the gradient. T is taken from logits (const or not).
template <class L, device Device>
  requires loss_element<std::remove_const_t<L>, Device>
cross_entropy_result cross_entropy(const Device& device, const tensor_view<L, Device>& logits,
                                   std::type_identity_t<tensor_view<const std::int32_t, Device>> labels,
                                   std::type_identity_t<tensor_view<std::remove_const_t<L>, Device>> d_logits = {},
                                   const cross_entropy_options<Device>& options = {}) {
  using T = std::remove_const_t<L>;
  using kernels = detail::cross_entropy_kernels<Device>;
  constexpr std::string_view function = "meap::cross_entropy";
  check_argument(logits.rank() == 2 && logits.size(1) >= 1, function, "logits", "shape " + to_string(logits.shape()),
                 "a rank-2 shape (N, V) with V >= 1");
  const index_t N = logits.size(0);
  check_shape(function, "labels", labels, dims{N});
  check_contiguous(function, "logits", logits);
  check_contiguous(function, "labels", labels);
  detail::check_gradient(function, "d_logits", d_logits, logits.shape());
  detail::check_cross_entropy_options(function, options, N);
  kernels::template check_limits<T>(function, N);
  check_colocated<Device>(function, {at("logits", logits), at("labels", labels), at("d_logits", d_logits),
                                     at("options.loss_sum", options.loss_sum),
                                     at("options.checks", options.checks.words)});
  return kernels::template plain<T>(device, function, logits.as_const(), labels, d_logits, options);
}

// Selective cross-entropy fused with the LM head: logits = hidden weight^T, never stored whole.
// hidden: (N, d), weight: (V, d), labels: (N); d_hidden: (N, d) (T) and d_weight: (V, d) (T, or
// float for 16-bit T), each a default view to skip it. Rows with label -100 get d_hidden = 0 and
// cost nothing.
template <class T, class G = T, device Device>
  requires loss_gradient_element<G, T, Device>
cross_entropy_result linear_cross_entropy(const Device& device, std::type_identity_t<tensor_view<const T, Device>> hidden,
                                          std::type_identity_t<tensor_view<const T, Device>> weight,
                                          std::type_identity_t<tensor_view<const std::int32_t, Device>> labels,
                                          const tensor_view<T, Device>& d_hidden, const tensor_view<G, Device>& d_weight,
                                          const cross_entropy_options<Device>& options = {}) {
  using kernels = detail::cross_entropy_kernels<Device>;
  constexpr std::string_view function = "meap::linear_cross_entropy";
  check_argument(hidden.rank() == 2, function, "hidden", "shape " + to_string(hidden.shape()),
                 "a rank-2 shape (N, d)");
  const index_t N = hidden.size(0), d = hidden.size(1);
  check_argument(weight.rank() == 2 && weight.size(0) >= 1 && weight.size(1) == d, function, "weight",
                 "shape " + to_string(weight.shape()),
                 "shape (V, d) with V >= 1 and d = " + std::to_string(d) + ", the last axis of hidden");
  check_shape(function, "labels", labels, dims{N});
  check_contiguous(function, "hidden", hidden);
  check_contiguous(function, "weight", weight);
  check_contiguous(function, "labels", labels);
  detail::check_gradient(function, "d_hidden", d_hidden, hidden.shape());
  detail::check_gradient(function, "d_weight", d_weight, weight.shape());
  detail::check_cross_entropy_options(function, options, N);
  kernels::template check_limits<T>(function, N);
  check_colocated<Device>(function, {at("hidden", hidden), at("weight", weight), at("labels", labels),
                                     at("d_hidden", d_hidden), at("d_weight", d_weight),
                                     at("options.loss_sum", options.loss_sum),
                                     at("options.checks", options.checks.words)});
  return kernels::template fused<T, G>(device, function, hidden, weight, labels, d_hidden, d_weight, options);
}

// Forward only: the loss of the fused version without gradients. T is taken from hidden.
template <class H, device Device>
  requires loss_element<std::remove_const_t<H>, Device>
cross_entropy_result linear_cross_entropy(const Device& device, const tensor_view<H, Device>& hidden,
                                          std::type_identity_t<tensor_view<H, Device>> weight,
                                          std::type_identity_t<tensor_view<const std::int32_t, Device>> labels,
                                          const cross_entropy_options<Device>& options = {}) {
  using T = std::remove_const_t<H>;
  return linear_cross_entropy<T, T>(device, hidden, weight, labels, tensor_view<T, Device>{}, tensor_view<T, Device>{},
                                    options);
}

}  // namespace meap
