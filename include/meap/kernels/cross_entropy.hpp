// meap/kernels/cross_entropy.hpp: selective cross-entropy, plain (from logits) and fused with the
// LM head (from hidden states and the head weight, never materializing the N x V logits).
//
//   logits: (N, V)   hidden: (N, d)   weight: (V, d)   labels: (N) int32, ignore_index = -100
//
// The loss is the mean over the selected rows (label != -100) of
//   (1 - eps) (L - z_y) + eps (L - mean_j z_j) + lambda L^2,   L = log sum_j exp z_j,
// i.e. ordinary cross-entropy when label_smoothing eps = 0 and z_loss lambda = 0 (the defaults).
// Gradients are those of that mean. If no row is selected the loss is defined as 0 and every
// gradient is 0 (never NaN), so a batch without targets contributes nothing.
//
// Cost of the fused version is proportional to the number of selected rows: they are gathered
// first, then processed in tiles of 512 rows x 256 vocabulary entries with an online
// log-sum-exp. half / bfloat16 inputs are widened to float per tile; results are rounded once.
// All views must be contiguous; gradient outputs are overwritten (pass a default view to skip).
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/dtype.hpp>
#include <meap/core/error.hpp>
#include <meap/core/labels.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/cpu/convert.hpp>
#include <meap/kernels/cpu/cross_entropy.hpp>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

namespace meap {


struct cross_entropy_options {
  double label_smoothing = 0.0;  // eps in [0, 1)
  double z_loss = 0.0;           // lambda >= 0, weight of L^2 (PaLM's z-loss)
};

struct cross_entropy_result {
  double loss = 0.0;    // mean over selected rows; 0 when none is selected
  index_t selected = 0; // rows whose label is not ignore_index
};

namespace detail {

inline void check_cross_entropy_options(std::string_view function, const cross_entropy_options& options) {
  check_argument(options.label_smoothing >= 0.0 && options.label_smoothing < 1.0, function, "label_smoothing",
                 options.label_smoothing, "a value in [0, 1)");
  check_argument(options.z_loss >= 0.0 && std::isfinite(options.z_loss), function, "z_loss", options.z_loss,
                 "a finite non-negative weight");
}

// Every label is ignore_index or in [0, vocab).
inline void check_labels(std::string_view function, const tensor_view<const std::int32_t, cpu>& labels,
                         index_t vocab) {
  const std::int32_t* p = labels.data();
  for (index_t r = 0, n = labels.numel(); r < n; ++r)
    if (p[r] != ignore_index && (p[r] < 0 || p[r] >= vocab))
      throw_argument_error(function, "labels", "labels[" + std::to_string(r) + "] = " + std::to_string(p[r]),
                           "a class in [0, " + std::to_string(vocab) + ") or -100 (ignored)");
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
template <class L>
  requires floating_element<std::remove_const_t<L>>
cross_entropy_result cross_entropy(const cpu&, const tensor_view<L, cpu>& logits,
                                   const tensor_view<const std::int32_t, cpu>& labels,
                                   const tensor_view<std::remove_const_t<L>, cpu>& d_logits = {},
                                   const cross_entropy_options& options = {}) {
  using T = std::remove_const_t<L>;
  constexpr std::string_view function = "meap::cross_entropy";
  check_argument(logits.rank() == 2 && logits.size(1) >= 1, function, "logits", "shape " + to_string(logits.shape()),
                 "a rank-2 shape (N, V) with V >= 1");
  const index_t N = logits.size(0), V = logits.size(1);
  check_shape(function, "labels", labels, dims{N});
  check_contiguous(function, "logits", logits);
  check_contiguous(function, "labels", labels);
  detail::check_gradient(function, "d_logits", d_logits, logits.shape());
  detail::check_cross_entropy_options(function, options);
  detail::check_labels(function, labels, V);
  cross_entropy_result result;
  const double total = detail::cpu_impl::cross_entropy<accumulate_t<T>>(
      static_cast<const T*>(logits.data()), labels.data(), N, V, {options.label_smoothing, options.z_loss}, ignore_index,
      d_logits.rank() != 0 ? d_logits.data() : nullptr, result.selected);
  result.loss = result.selected > 0 ? total / static_cast<double>(result.selected) : 0.0;
  return result;
}

// Selective cross-entropy fused with the LM head: logits = hidden weight^T, never stored whole.
// hidden: (N, d), weight: (V, d), labels: (N); d_hidden: (N, d) and d_weight: (V, d), each a
// default view to skip it. Rows with label -100 get d_hidden = 0 and cost nothing.
template <floating_element T>
cross_entropy_result linear_cross_entropy(const cpu&, std::type_identity_t<tensor_view<const T, cpu>> hidden,
                                          std::type_identity_t<tensor_view<const T, cpu>> weight,
                                          const tensor_view<const std::int32_t, cpu>& labels,
                                          const tensor_view<T, cpu>& d_hidden,
                                          std::type_identity_t<tensor_view<T, cpu>> d_weight,
                                          const cross_entropy_options& options = {}) {
  using A = accumulate_t<T>;
  constexpr std::string_view function = "meap::linear_cross_entropy";
  check_argument(hidden.rank() == 2, function, "hidden", "shape " + to_string(hidden.shape()),
                 "a rank-2 shape (N, d)");
  const index_t N = hidden.size(0), d = hidden.size(1);
  check_argument(weight.rank() == 2 && weight.size(0) >= 1 && weight.size(1) == d, function, "weight",
                 "shape " + to_string(weight.shape()),
                 "shape (V, d) with V >= 1 and d = " + std::to_string(d) + ", the last axis of hidden");
  const index_t V = weight.size(0);
  check_shape(function, "labels", labels, dims{N});
  check_contiguous(function, "hidden", hidden);
  check_contiguous(function, "weight", weight);
  check_contiguous(function, "labels", labels);
  detail::check_gradient(function, "d_hidden", d_hidden, hidden.shape());
  detail::check_gradient(function, "d_weight", d_weight, weight.shape());
  detail::check_cross_entropy_options(function, options);
  detail::check_labels(function, labels, V);

  cross_entropy_result result;
  std::optional<detail::cpu_impl::narrowed<A, T>> dh, dw;
  if (d_hidden.rank() != 0) dh.emplace(d_hidden);
  if (d_weight.rank() != 0) dw.emplace(d_weight);
  const double total = detail::cpu_impl::linear_cross_entropy<A>(
      hidden.data(), weight.data(), labels.data(), N, d, V, {options.label_smoothing, options.z_loss}, ignore_index,
      dh ? dh->data() : nullptr, dw ? dw->data() : nullptr, result.selected);
  if (dh) dh->store();
  if (dw) dw->store();
  result.loss = result.selected > 0 ? total / static_cast<double>(result.selected) : 0.0;
  return result;
}

// Forward only: the loss of the fused version without gradients. T is taken from hidden.
template <class H>
  requires floating_element<std::remove_const_t<H>>
cross_entropy_result linear_cross_entropy(const cpu& device, const tensor_view<H, cpu>& hidden,
                                          std::type_identity_t<tensor_view<H, cpu>> weight,
                                          const tensor_view<const std::int32_t, cpu>& labels,
                                          const cross_entropy_options& options = {}) {
  using T = std::remove_const_t<H>;
  return linear_cross_entropy<T>(device, hidden, weight, labels, tensor_view<T, cpu>{}, tensor_view<T, cpu>{}, options);
}

}  // namespace meap
