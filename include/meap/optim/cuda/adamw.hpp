// meap/optim/cuda/adamw.hpp: the element update of AdamW on CUDA, behind meap::adamw
// (optim/adamw.hpp). Its CPU twin is optim/cpu/adamw.hpp.
//
// One kernel updates the whole flat parameter buffer: each element's update is the CPU's,
// operation for operation in PyTorch's order (decay multiply, two-branch lerp, v,
// sqrt(v) / sqrt(1 - beta2^t) + eps, the step), written with the round-to-nearest intrinsics
// (__fmul_rn, __fadd_rn, __fdiv_rn, __fsqrt_rn) so that nvcc cannot fuse a multiply and an add
// into an FMA: the same bits as the CPU, whatever the compiler's contraction choices. A segment
// table says where weight decay applies; the compute copy (bfloat16 / half weights) of a
// mixed-precision model is written in the same pass. Given a step status, the kernel reads the
// update decision and the gradient factor from device memory: nothing waits for the host.
// Part of <meap/cuda.hpp>; compiled by nvcc only.
#pragma once
#if !defined(__CUDACC__)
#error "meap/optim/cuda/*.hpp (and <meap/cuda.hpp>) must be compiled by nvcc: put this code in a .cu file"
#endif

#include <meap/core/device.hpp>
#include <meap/kernels/backend.hpp>
#include <meap/kernels/cuda/plan.hpp>
#include <meap/kernels/cuda/support.hpp>
#include <meap/optim/adamw.hpp>
#include <meap/optim/cpu/adamw.hpp>
#include <meap/optim/status.hpp>

#include <cuda_runtime.h>

#include <type_traits>

namespace meap::detail {

namespace cuda_impl {

// PyTorch's lerp (aten/src/ATen/native/Lerp.h), rounding after every operation.
__device__ __forceinline__ float pytorch_lerp_rn(float self, float end, float weight) {
  return fabsf(weight) < 0.5f ? __fadd_rn(self, __fmul_rn(weight, __fsub_rn(end, self)))
                              : __fsub_rn(end, __fmul_rn(__fsub_rn(end, self), __fsub_rn(1.0f, weight)));
}

// The segment holding element i, searched from `k` onwards (i only grows in a thread's loop).
__device__ __forceinline__ int segment_of(const adamw_segments& segments, index_t i, int k) {
  while (k + 1 < segments.count && i >= segments.begin(k + 1)) ++k;
  return k;
}

// p, g, m, v: (n) float, the flat buffers; copy: (n) or null; status: (status_value_count) or null.
// Grid-stride, one element per step; the update of an element reads that element only.
template <class C>
__global__ void adamw_flat_kernel(float* p, const float* g, float* m, float* v, C* copy, index_t n,
                                  adamw_segments segments, adamw_scalars<float> s, bool decay_enabled,
                                  const double* status) {
  float factor = 1.0f;
  if (status != nullptr) {
    if (status[static_cast<int>(status_value::update)] == 0.0) return;
    factor = static_cast<float>(status[static_cast<int>(status_value::grad_factor)]);
  }
  const bool scaled = status != nullptr;
  const index_t first = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x;
  if (first >= n) return;
  // The first segment by binary search, then forward only.
  int lo = 0, hi = segments.count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (segments.begin(mid) <= first) lo = mid;
    else hi = mid - 1;
  }
  int k = lo;
  for (index_t i = first; i < n; i += static_cast<index_t>(gridDim.x) * blockDim.x) {
    k = segment_of(segments, i, k);
    float param = p[i];
    if (decay_enabled && segments.decay(k)) param = __fmul_rn(param, s.decay_factor);
    const float grad = scaled ? __fmul_rn(g[i], factor) : g[i];
    const float exp_avg = pytorch_lerp_rn(m[i], grad, s.beta1_weight);
    float exp_avg_sq = __fmul_rn(v[i], s.beta2);
    exp_avg_sq = __fadd_rn(exp_avg_sq, __fmul_rn(__fmul_rn(s.one_minus_beta2, grad), grad));
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(exp_avg_sq), s.bias_correction2_sqrt), s.eps);
    param = __fadd_rn(param, __fdiv_rn(__fmul_rn(s.neg_step_size, exp_avg), denom));
    p[i] = param;
    m[i] = exp_avg;
    v[i] = exp_avg_sq;
    if (copy != nullptr) copy[i] = from_float<C>(param);
  }
}

}  // namespace cuda_impl

template <>
struct adamw_kernels<cuda> {
  // n: elements of the flat buffers (the segment table lives on the device, so the host is told).
  template <class M, class C>
  static void update(const cuda& device, const adamw_segments& segments, index_t n, M* p, const M* g, M* m, M* v,
                     C* copy, const adamw_scalars<M>& scalars, bool decay_enabled, const double* status) {
    static_assert(std::is_same_v<M, float>, "meap::adamw on CUDA: master weights are float");
    if (segments.count == 0 || n == 0) return;
    constexpr int threads = 256;
    cuda_impl::adamw_flat_kernel<C><<<cuda_plan::grid_size(n, threads), threads, 0, device.stream>>>(
        p, g, m, v, copy, n, segments, scalars, decay_enabled, status);
    cuda_impl::check_launch();
  }
};

}  // namespace meap::detail
