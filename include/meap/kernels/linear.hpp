// meap/kernels/linear.hpp: y = x W^T without bias, forward and backward (kernels/cpu/gemm.hpp:
// OpenBLAS through CBLAS when meap::meap found it, Eigen otherwise).
//
//   x: (N, in)   w: (out, in) as nn.Linear / Hugging Face store it   y: (N, out)
//
// Backward writes dx = dy W (or adds it to dx, gradient_write::accumulate) and accumulates
// dw += dy^T x (parameter gradients add up over uses, e.g. a tied embedding and LM head). Every
// view must be contiguous. float and double.
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/error.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/cpu/layers.hpp>

#include <string>
#include <type_traits>

namespace meap {

// The element types the per-token layers compute in on the host.
template <class T>
concept host_compute_type = std::is_same_v<T, float> || std::is_same_v<T, double>;

// How a backward pass writes an input gradient: replace dx, or add to it (several layers reading
// one input, e.g. the q, k and v projections, sum their gradients without a temporary).
enum class gradient_write { overwrite, accumulate };

namespace detail {
template <class T>
void check_matrix(std::string_view function, std::string_view argument, const tensor_view<T, cpu>& view, index_t rows,
                  index_t columns) {
  check_shape(function, argument, view, dims{rows, columns});
  check_contiguous(function, argument, view);
}
}  // namespace detail

template <host_compute_type T>
void linear_forward(const cpu&, std::type_identity_t<tensor_view<const T, cpu>> x,
                    std::type_identity_t<tensor_view<const T, cpu>> w, const tensor_view<T, cpu>& y) {
  constexpr std::string_view function = "meap::linear_forward";
  check_argument(x.rank() == 2, function, "x", "shape " + to_string(x.shape()), "a rank-2 shape (N, in)");
  check_argument(w.rank() == 2 && w.size(1) == x.size(1), function, "w", "shape " + to_string(w.shape()),
                 "shape (out, " + std::to_string(x.size(1)) + "), matching x " + to_string(x.shape()));
  detail::check_matrix(function, "x", x, x.size(0), x.size(1));
  detail::check_matrix(function, "w", w, w.size(0), w.size(1));
  detail::check_matrix(function, "y", y, x.size(0), w.size(0));
  detail::cpu_impl::linear_forward(x.data(), w.data(), y.data(), x.size(0), x.size(1), w.size(0));
}

// dx may be a default (empty) view to skip it (e.g. the first layer's input needs no gradient).
template <host_compute_type T>
void linear_backward(const cpu&, std::type_identity_t<tensor_view<const T, cpu>> x,
                     std::type_identity_t<tensor_view<const T, cpu>> w,
                     std::type_identity_t<tensor_view<const T, cpu>> dy, const tensor_view<T, cpu>& dx,
                     std::type_identity_t<tensor_view<T, cpu>> dw, gradient_write dx_mode = gradient_write::overwrite) {
  constexpr std::string_view function = "meap::linear_backward";
  check_argument(x.rank() == 2 && w.rank() == 2 && w.size(1) == x.size(1), function, "w",
                 "shape " + to_string(w.shape()), "shape (out, in) matching x " + to_string(x.shape()));
  detail::check_matrix(function, "x", x, x.size(0), x.size(1));
  detail::check_matrix(function, "w", w, w.size(0), w.size(1));
  detail::check_matrix(function, "dy", dy, x.size(0), w.size(0));
  const bool want_dx = dx.rank() != 0;
  if (want_dx) detail::check_matrix(function, "dx", dx, x.size(0), x.size(1));
  detail::check_matrix(function, "dw", dw, w.size(0), w.size(1));
  detail::cpu_impl::linear_backward(x.data(), w.data(), dy.data(), want_dx ? dx.data() : nullptr, dw.data(), x.size(0),
                                    x.size(1), w.size(0), dx_mode == gradient_write::accumulate);
}

}  // namespace meap
