// meap/kernels/cuda/swiglu.hpp: the meap::cuda implementation behind <meap/kernels/swiglu.hpp>:
// the SwiGLU gate h = silu(gate) * up, forward and backward, element-wise in float.
//
//   gate, up, h: (N, F)      (any shape, as long as all views share it and are contiguous)
//
// T is float, half or bfloat16. expf, not __expf: the fast intrinsic's error (2 ulp plus a
// range-dependent term) would show against the CPU twin (kernels/cpu/swiglu.hpp).
// Part of <meap/cuda.hpp>; compiled by nvcc only.
#pragma once
#if !defined(__CUDACC__)
#error "meap/kernels/cuda/*.hpp (and <meap/cuda.hpp>) must be compiled by nvcc: put this code in a .cu file"
#endif

#include <meap/core/device.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/backend.hpp>
#include <meap/kernels/cuda/plan.hpp>
#include <meap/kernels/cuda/support.hpp>
#include <meap/kernels/swiglu.hpp>

#include <cuda_runtime.h>

namespace meap::detail {

namespace cuda_impl {

// gate, up, h: (count). h = gate / (1 + exp(-gate)) * up. Grid-stride, one element per step.
template <class T>
__global__ void swiglu_forward_kernel(const T* gate, const T* up, T* h, index_t count) {
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const float g = to_float(gate[i]);
    h[i] = from_float<T>(g / (1.0f + expf(-g)) * to_float(up[i]));
  }
}

// s = sigmoid(gate): d_gate = dh up s (1 + gate (1 - s)), d_up = dh gate s. All (count).
template <class T>
__global__ void swiglu_backward_kernel(const T* gate, const T* up, const T* dh, T* d_gate, T* d_up, index_t count) {
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const float g = to_float(gate[i]);
    const float u = to_float(up[i]);
    const float dy = to_float(dh[i]);
    const float s = 1.0f / (1.0f + expf(-g));
    d_gate[i] = from_float<T>(dy * u * s * (1.0f + g * (1.0f - s)));
    d_up[i] = from_float<T>(dy * g * s);
  }
}

}  // namespace cuda_impl

template <>
struct swiglu_kernels<cuda> {
  template <class T>
  static void forward(const cuda& device, const tensor_view<const T, cuda>& gate, const tensor_view<const T, cuda>& up,
                      const tensor_view<T, cuda>& h) {
    const index_t count = gate.numel();
    if (count == 0) return;
    constexpr int threads = 256;
    cuda_impl::swiglu_forward_kernel<T><<<cuda_plan::grid_size(count, threads), threads, 0, device.stream>>>(
        gate.data(), up.data(), h.data(), count);
    cuda_impl::check_launch();
  }

  template <class T>
  static void backward(const cuda& device, const tensor_view<const T, cuda>& gate, const tensor_view<const T, cuda>& up,
                       const tensor_view<const T, cuda>& dh, const tensor_view<T, cuda>& d_gate,
                       const tensor_view<T, cuda>& d_up) {
    const index_t count = gate.numel();
    if (count == 0) return;
    constexpr int threads = 256;
    cuda_impl::swiglu_backward_kernel<T><<<cuda_plan::grid_size(count, threads), threads, 0, device.stream>>>(
        gate.data(), up.data(), dh.data(), d_gate.data(), d_up.data(), count);
    cuda_impl::check_launch();
  }
};

}  // namespace meap::detail
