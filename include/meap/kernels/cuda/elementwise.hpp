// meap/kernels/cuda/elementwise.hpp: the meap::cuda implementation behind
// <meap/kernels/elementwise.hpp>: target += addend, and dst = To(src) (round to nearest even),
// element-wise in float. Its CPU twin is kernels/cpu/elementwise.hpp.
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
#include <meap/kernels/elementwise.hpp>

#include <cuda_runtime.h>

namespace meap::detail {

namespace cuda_impl {

// target, addend: (count). target = T(float(target) + float(addend)): float adds exactly the CPU's.
template <class T>
__global__ void add_kernel(T* target, const T* addend, index_t count) {
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<index_t>(gridDim.x) * blockDim.x)
    target[i] = from_float<T>(to_float(target[i]) + to_float(addend[i]));
}

// src, dst: (count). dst = To(src), through float (exact for every pair of the three types).
template <class From, class To>
__global__ void convert_kernel(const From* src, To* dst, index_t count) {
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<index_t>(gridDim.x) * blockDim.x)
    dst[i] = from_float<To>(to_float(src[i]));
}

}  // namespace cuda_impl

template <>
struct elementwise_kernels<cuda> {
  template <class T>
  static void add(const cuda& device, const tensor_view<T, cuda>& target, const tensor_view<const T, cuda>& addend) {
    const index_t count = target.numel();
    if (count == 0) return;
    constexpr int threads = 256;
    cuda_impl::add_kernel<T><<<cuda_plan::grid_size(count, threads), threads, 0, device.stream>>>(
        target.data(), addend.data(), count);
    cuda_impl::check_launch();
  }
  template <class From, class To>
  static void convert(const cuda& device, const tensor_view<const From, cuda>& src, const tensor_view<To, cuda>& dst) {
    const index_t count = src.numel();
    if (count == 0) return;
    constexpr int threads = 256;
    cuda_impl::convert_kernel<From, To><<<cuda_plan::grid_size(count, threads), threads, 0, device.stream>>>(
        src.data(), dst.data(), count);
    cuda_impl::check_launch();
  }
};

}  // namespace meap::detail
