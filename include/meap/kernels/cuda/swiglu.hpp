// meap/kernels/cuda/swiglu.hpp: the meap::cuda twin of <meap/kernels/swiglu.hpp>: the SwiGLU
// gate h = silu(gate) * up, forward and backward, element-wise in float.
//
//   gate, up, h: (N, F)      (any shape, as long as all views share it and are contiguous)
//
// Same checks and messages as the CPU. T is float, half or bfloat16. expf, not __expf: the fast
// intrinsic's error (2 ulp plus a range-dependent term) would show against the CPU twin.
// Part of <meap/cuda.hpp>; compiled by nvcc only.
#pragma once
#if !defined(__CUDACC__)
#error "meap/kernels/cuda/*.hpp (and <meap/cuda.hpp>) must be compiled by nvcc: put this code in a .cu file"
#endif

#include <meap/core/device.hpp>
#include <meap/core/error.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/cuda/plan.hpp>
#include <meap/kernels/cuda/support.hpp>

#include <cuda_runtime.h>

#include <string_view>
#include <utility>

namespace meap {

namespace detail::cuda_impl {

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

}  // namespace detail::cuda_impl

template <cuda_compute_type T>
void swiglu_forward(const cuda& device, std::type_identity_t<tensor_view<const T, cuda>> gate,
                    std::type_identity_t<tensor_view<const T, cuda>> up, const tensor_view<T, cuda>& h) {
  namespace impl = detail::cuda_impl;
  constexpr std::string_view function = "meap::swiglu_forward";
  check_contiguous(function, "gate", gate);
  check_shape(function, "up", up, gate.shape());
  check_contiguous(function, "up", up);
  check_shape(function, "h", h, gate.shape());
  check_contiguous(function, "h", h);
  impl::check_colocated(function, "gate", gate, "up", up);
  impl::check_colocated(function, "gate", gate, "h", h);
  const index_t count = gate.numel();
  if (count == 0) return;
  constexpr int threads = 256;
  impl::swiglu_forward_kernel<T><<<detail::cuda_plan::grid_size(count, threads), threads, 0, device.stream>>>(
      gate.data(), up.data(), h.data(), count);
  impl::check_launch();
}

template <cuda_compute_type T>
void swiglu_backward(const cuda& device, std::type_identity_t<tensor_view<const T, cuda>> gate,
                     std::type_identity_t<tensor_view<const T, cuda>> up,
                     std::type_identity_t<tensor_view<const T, cuda>> dh, const tensor_view<T, cuda>& d_gate,
                     std::type_identity_t<tensor_view<T, cuda>> d_up) {
  namespace impl = detail::cuda_impl;
  constexpr std::string_view function = "meap::swiglu_backward";
  check_contiguous(function, "gate", gate);
  for (const auto& [name, view] : {std::pair<const char*, tensor_view<const T, cuda>>{"up", up}, {"dh", dh}}) {
    check_shape(function, name, view, gate.shape());
    check_contiguous(function, name, view);
    impl::check_colocated(function, "gate", gate, name, view);
  }
  for (const auto& [name, view] : {std::pair<const char*, tensor_view<T, cuda>>{"d_gate", d_gate}, {"d_up", d_up}}) {
    check_shape(function, name, view, gate.shape());
    check_contiguous(function, name, view);
    impl::check_colocated(function, "gate", gate, name, view);
  }
  const index_t count = gate.numel();
  if (count == 0) return;
  constexpr int threads = 256;
  impl::swiglu_backward_kernel<T><<<detail::cuda_plan::grid_size(count, threads), threads, 0, device.stream>>>(
      gate.data(), up.data(), dh.data(), d_gate.data(), d_up.data(), count);
  impl::check_launch();
}

}  // namespace meap
