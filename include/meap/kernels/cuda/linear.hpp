// meap/kernels/cuda/linear.hpp: the meap::cuda twins of <meap/kernels/linear.hpp>: y = x W^T
// without bias, forward and backward, as cuBLASLt GEMMs (kernels/cuda/gemm.hpp).
//
//   x: (N, in)   w: (out, in) as nn.Linear stores it   y: (N, out)
//
// Same checks and messages as the CPU front door. Element types float, half and bfloat16
// (float accumulation; 16-bit outputs rounded once). Backward writes dx = dy W (or adds it,
// gradient_write::accumulate) and accumulates dw += dy^T x; dw may be float for 16-bit T, so
// parameter gradients keep float precision for AdamW's master weights.
// Part of <meap/cuda.hpp>; compiled by nvcc only.
#pragma once
#if !defined(__CUDACC__)
#error "meap/kernels/cuda/*.hpp (and <meap/cuda.hpp>) must be compiled by nvcc: put this code in a .cu file"
#endif

#include <meap/core/device.hpp>
#include <meap/core/error.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/cuda/gemm.hpp>
#include <meap/kernels/cuda/support.hpp>
#include <meap/kernels/linear.hpp>

#include <string>
#include <string_view>
#include <type_traits>

namespace meap {

template <cuda_compute_type T>
void linear_forward(const cuda& device, std::type_identity_t<tensor_view<const T, cuda>> x,
                    std::type_identity_t<tensor_view<const T, cuda>> w, const tensor_view<T, cuda>& y) {
  namespace impl = detail::cuda_impl;
  constexpr std::string_view function = "meap::linear_forward";
  check_argument(x.rank() == 2, function, "x", "shape " + to_string(x.shape()), "a rank-2 shape (N, in)");
  check_argument(w.rank() == 2 && w.size(1) == x.size(1), function, "w", "shape " + to_string(w.shape()),
                 "shape (out, " + std::to_string(x.size(1)) + "), matching x " + to_string(x.shape()));
  impl::check_matrix(function, "x", x, x.size(0), x.size(1));
  impl::check_matrix(function, "w", w, w.size(0), w.size(1));
  impl::check_matrix(function, "y", y, x.size(0), w.size(0));
  impl::check_colocated(function, "x", x, "w", w);
  impl::check_colocated(function, "x", x, "y", y);
  const index_t rows = x.size(0), in = x.size(1), out = w.size(0);
  // y (N, out) = x (N, in) w^T
  impl::gemm<T, T>(device, gemm_transpose::no, gemm_transpose::yes, rows, out, in, x.data(), in, w.data(), in, y.data(),
                   out);
}

// dx may be a default (empty) view to skip it. G, taken from dw, is T or float.
template <cuda_compute_type T, class G = T>
  requires cuda_gradient_type<G, T>
void linear_backward(const cuda& device, std::type_identity_t<tensor_view<const T, cuda>> x,
                     std::type_identity_t<tensor_view<const T, cuda>> w,
                     std::type_identity_t<tensor_view<const T, cuda>> dy, const tensor_view<T, cuda>& dx,
                     const tensor_view<G, cuda>& dw, gradient_write dx_mode = gradient_write::overwrite) {
  namespace impl = detail::cuda_impl;
  constexpr std::string_view function = "meap::linear_backward";
  check_argument(x.rank() == 2 && w.rank() == 2 && w.size(1) == x.size(1), function, "w",
                 "shape " + to_string(w.shape()), "shape (out, in) matching x " + to_string(x.shape()));
  impl::check_matrix(function, "x", x, x.size(0), x.size(1));
  impl::check_matrix(function, "w", w, w.size(0), w.size(1));
  impl::check_matrix(function, "dy", dy, x.size(0), w.size(0));
  const bool want_dx = dx.rank() != 0;
  if (want_dx) impl::check_matrix(function, "dx", dx, x.size(0), x.size(1));
  impl::check_matrix(function, "dw", dw, w.size(0), w.size(1));
  impl::check_colocated(function, "x", x, "w", w);
  impl::check_colocated(function, "x", x, "dy", dy);
  if (want_dx) impl::check_colocated(function, "x", x, "dx", dx);
  impl::check_colocated(function, "x", x, "dw", dw);
  const index_t rows = x.size(0), in = x.size(1), out = w.size(0);
  // dx (N, in) = dy (N, out) w (out, in) [+ dx]
  if (want_dx)
    impl::gemm<T, T>(device, gemm_transpose::no, gemm_transpose::no, rows, in, out, dy.data(), out, w.data(), in,
                     dx.data(), in, {.beta = dx_mode == gradient_write::accumulate ? 1.0f : 0.0f});
  // dw (out, in) += dy^T (out, N) x (N, in)
  impl::gemm<T, G>(device, gemm_transpose::yes, gemm_transpose::no, out, in, rows, dy.data(), out, x.data(), in,
                   dw.data(), in, {.beta = 1.0f});
}

}  // namespace meap
