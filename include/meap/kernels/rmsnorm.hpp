// meap/kernels/rmsnorm.hpp: RMSNorm (LLaMA), forward and backward.
//
//   x, y: (N, d)   w: (d)   inv_rms: (N), saved by the forward for the backward
//   y = x / sqrt(mean(x^2) + eps) * w
//
// Backward overwrites dx and accumulates dw. Contiguous views; float and double.
#pragma once

#include <meap/kernels/linear.hpp>

#include <cmath>

namespace meap {

template <host_compute_type T>
void rmsnorm_forward(const cpu&, std::type_identity_t<tensor_view<const T, cpu>> x,
                     std::type_identity_t<tensor_view<const T, cpu>> w, const tensor_view<T, cpu>& y,
                     std::type_identity_t<tensor_view<T, cpu>> inv_rms, double eps) {
  constexpr std::string_view function = "meap::rmsnorm_forward";
  check_argument(x.rank() == 2, function, "x", "shape " + to_string(x.shape()), "a rank-2 shape (N, d)");
  check_argument(std::isfinite(eps) && eps > 0, function, "eps", eps, "a finite positive epsilon");
  detail::check_matrix(function, "x", x, x.size(0), x.size(1));
  check_shape(function, "w", w, dims{x.size(1)});
  detail::check_matrix(function, "y", y, x.size(0), x.size(1));
  check_shape(function, "inv_rms", inv_rms, dims{x.size(0)});
  detail::cpu_impl::rmsnorm_forward(x.data(), w.data(), y.data(), inv_rms.data(), x.size(0), x.size(1), eps);
}

template <host_compute_type T>
void rmsnorm_backward(const cpu&, std::type_identity_t<tensor_view<const T, cpu>> x,
                      std::type_identity_t<tensor_view<const T, cpu>> w,
                      std::type_identity_t<tensor_view<const T, cpu>> inv_rms,
                      std::type_identity_t<tensor_view<const T, cpu>> dy, const tensor_view<T, cpu>& dx,
                      std::type_identity_t<tensor_view<T, cpu>> dw) {
  constexpr std::string_view function = "meap::rmsnorm_backward";
  check_argument(x.rank() == 2, function, "x", "shape " + to_string(x.shape()), "a rank-2 shape (N, d)");
  detail::check_matrix(function, "x", x, x.size(0), x.size(1));
  check_shape(function, "w", w, dims{x.size(1)});
  check_shape(function, "inv_rms", inv_rms, dims{x.size(0)});
  detail::check_matrix(function, "dy", dy, x.size(0), x.size(1));
  detail::check_matrix(function, "dx", dx, x.size(0), x.size(1));
  check_shape(function, "dw", dw, dims{x.size(1)});
  detail::cpu_impl::rmsnorm_backward(x.data(), w.data(), inv_rms.data(), dy.data(), dx.data(), dw.data(), x.size(0),
                                     x.size(1));
}

}  // namespace meap
