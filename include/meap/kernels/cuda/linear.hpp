// meap/kernels/cuda/linear.hpp: the meap::cuda implementation behind <meap/kernels/linear.hpp>:
// y = x W^T without bias, forward and backward, as cuBLASLt GEMMs (kernels/cuda/gemm.hpp).
//
//   x: (N, in)   w: (out, in) as nn.Linear stores it   y: (N, out)
//
// float, half and bfloat16 (float accumulation; 16-bit outputs rounded once). dw may be float for
// 16-bit T, so parameter gradients keep float precision for AdamW's master weights. The front
// door has checked every argument. Its CPU twin is kernels/cpu/linear.hpp.
// Part of <meap/cuda.hpp>; compiled by nvcc only.
#pragma once
#if !defined(__CUDACC__)
#error "meap/kernels/cuda/*.hpp (and <meap/cuda.hpp>) must be compiled by nvcc: put this code in a .cu file"
#endif

#include <meap/core/device.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/backend.hpp>
#include <meap/kernels/cuda/gemm.hpp>
#include <meap/kernels/cuda/support.hpp>
#include <meap/kernels/linear.hpp>

namespace meap::detail {

template <>
struct linear_kernels<cuda> {
  template <class T>
  static void forward(const cuda& device, const tensor_view<const T, cuda>& x, const tensor_view<const T, cuda>& w,
                      const tensor_view<T, cuda>& y) {
    const index_t rows = x.size(0), in = x.size(1), out = w.size(0);
    // y (N, out) = x (N, in) w^T
    cuda_impl::gemm<T, T>(device, gemm_transpose::no, gemm_transpose::yes, rows, out, in, x.data(), in, w.data(), in,
                          y.data(), out);
  }

  // dx: empty to skip it.
  template <class T, class G>
  static void backward(const cuda& device, const tensor_view<const T, cuda>& x, const tensor_view<const T, cuda>& w,
                       const tensor_view<const T, cuda>& dy, const tensor_view<T, cuda>& dx,
                       const tensor_view<G, cuda>& dw, gradient_write dx_mode) {
    const index_t rows = x.size(0), in = x.size(1), out = w.size(0);
    // dx (N, in) = dy (N, out) w (out, in) [+ dx]
    if (dx.rank() != 0)
      cuda_impl::gemm<T, T>(device, gemm_transpose::no, gemm_transpose::no, rows, in, out, dy.data(), out, w.data(), in,
                            dx.data(), in, {.beta = dx_mode == gradient_write::accumulate ? 1.0f : 0.0f});
    // dw (out, in) += dy^T (out, N) x (N, in)
    cuda_impl::gemm<T, G>(device, gemm_transpose::yes, gemm_transpose::no, out, in, rows, dy.data(), out, x.data(), in,
                          dw.data(), in, {.beta = 1.0f});
  }
};

}  // namespace meap::detail
