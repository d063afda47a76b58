// meap/kernels/cpu/linear.hpp: the meap::cpu implementation behind <meap/kernels/linear.hpp>.
// The front door has checked every argument; these trust their inputs (contiguous, row-major,
// shapes consistent). Its CUDA twin is kernels/cuda/linear.hpp.
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/parallel.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/backend.hpp>
#include <meap/kernels/cpu/gemm.hpp>

#include <type_traits>

namespace meap::detail {

namespace cpu_impl {

// y (N, out) = x (N, in) * W^T, W: (out, in) as PyTorch's nn.Linear stores it.
template <class T>
void linear_forward(const T* x, const T* w, T* y, index_t rows, index_t in, index_t out) {
  gemm<T>(transpose::no, transpose::yes, rows, out, in, T(1), x, in, w, in, T(0), y, out);
}

// dx (N, in) = dy (N, out) * W (out, in), overwritten or (accumulate_dx) added to; dW (out, in)
// += dy^T * x, always accumulated so that a weight used twice (a tied head) collects both
// contributions. Accumulating dx lets the q/k/v and gate/up projections of one input sum their
// input gradients inside the GEMM instead of in a separate pass.
template <class T>
void linear_backward(const T* x, const T* w, const T* dy, T* dx, T* dw, index_t rows, index_t in, index_t out,
                     bool accumulate_dx = false) {
  if (dx != nullptr)
    gemm<T>(transpose::no, transpose::no, rows, in, out, T(1), dy, out, w, in, accumulate_dx ? T(1) : T(0), dx, in);
  if (dw != nullptr) gemm<T>(transpose::yes, transpose::no, out, in, rows, T(1), dy, out, x, in, T(1), dw, in);
}

}  // namespace cpu_impl

// linear_forward / linear_backward (kernels/linear.hpp) on the host: BLAS or Eigen GEMMs.
template <>
struct linear_kernels<cpu> {
  template <class T>
  static void forward(const cpu&, const tensor_view<const T, cpu>& x, const tensor_view<const T, cpu>& w,
                      const tensor_view<T, cpu>& y) {
    cpu_impl::linear_forward(x.data(), w.data(), y.data(), x.size(0), x.size(1), w.size(0));
  }
  // dx: empty to skip it.
  template <class T, class G>
  static void backward(const cpu&, const tensor_view<const T, cpu>& x, const tensor_view<const T, cpu>& w,
                       const tensor_view<const T, cpu>& dy, const tensor_view<T, cpu>& dx, const tensor_view<G, cpu>& dw,
                       gradient_write dx_mode) {
    static_assert(std::is_same_v<G, T>, "meap::cpu computes parameter gradients in the compute type");
    cpu_impl::linear_backward(x.data(), w.data(), dy.data(), dx.rank() != 0 ? dx.data() : nullptr, dw.data(),
                              x.size(0), x.size(1), w.size(0), dx_mode == gradient_write::accumulate);
  }
};

}  // namespace meap::detail
