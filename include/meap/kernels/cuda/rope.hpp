// meap/kernels/cuda/rope.hpp: the meap::cuda implementation behind <meap/kernels/rope.hpp>: rotary position
// embedding in the Hugging Face LLaMA layout (rotate_half: dimension i pairs with i + D/2,
// frequency theta^(-2i/D)); rope_backward applies the transposed (inverse) rotation.
//
//   x, y: (B, T, H, D), D even; positions: (B, T) int32 on the device, optional (default: t)
//
// y may alias x. A negative position is searched for on the device: the call waits for it and
// throws the CPU's message, or records it in options.checks. T is float, half or bfloat16. Its CPU
// twin is kernels/cpu/rope.hpp. Angles are
// computed in double, as on the CPU: a position of 10^6 times a frequency near 1 keeps its
// precision, which a float angle would not; cos and sin are rounded to float once per (row, i)
// and shared by the H heads.
// Part of <meap/cuda.hpp>; compiled by nvcc only.
#pragma once
#if !defined(__CUDACC__)
#error "meap/kernels/cuda/*.hpp (and <meap/cuda.hpp>) must be compiled by nvcc: put this code in a .cu file"
#endif

#include <meap/core/device.hpp>
#include <meap/core/error.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/core/deferred_checks.hpp>
#include <meap/kernels/backend.hpp>
#include <meap/kernels/cuda/plan.hpp>
#include <meap/kernels/cuda/support.hpp>
#include <meap/kernels/rope.hpp>
#include <meap/kernels/rope_frequency.hpp>

#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>

namespace meap {

namespace detail::cuda_impl {

// x, y: (B, T, H, D); positions: (B, T) or null. One thread per (b, t, i < D/2); it computes the
// angle once and rotates that pair in every head (coalesced along i for each head).
//   y[i] = x[i] cos - x[i + D/2] sin,  y[i + D/2] = x[i + D/2] cos + x[i] sin   (sin negated: inverse)
template <class T>
__global__ void rope_kernel(const T* x, T* y, const std::int32_t* positions, index_t rows, index_t length,
                            index_t heads, index_t head_dim, double theta, rope_scaling scaling, bool inverse) {
  const index_t half = head_dim / 2;
  for (index_t idx = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; idx < rows * half;
       idx += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t bt = idx / half;
    const index_t i = idx % half;
    const double position =
        positions != nullptr ? static_cast<double>(positions[bt]) : static_cast<double>(bt % length);
    const double frequency = rope_inverse_frequency(i, head_dim, theta, scaling);
    double s = 0.0;
    double c = 0.0;
    sincos(position * frequency, &s, &c);
    const float cf = static_cast<float>(c);
    const float sf = static_cast<float>(inverse ? -s : s);
    for (index_t h = 0; h < heads; ++h) {
      const index_t base = (bt * heads + h) * head_dim;
      const float a = to_float(x[base + i]);
      const float b = to_float(x[base + i + half]);
      y[base + i] = from_float<T>(a * cf - b * sf);
      y[base + i + half] = from_float<T>(b * cf + a * sf);
    }
  }
}

}  // namespace detail::cuda_impl

template <>
struct detail::rope_kernels<cuda> {
  static void check_positions(const cuda& device, std::string_view function,
                              const tensor_view<const std::int32_t, cuda>& positions,
                              const deferred_checks<cuda>& checks) {
    std::uint64_t* deferred = checks.active() ? checks.word(deferred_check::positions) : nullptr;
    if (const auto bad = cuda_impl::check_ids(device, positions.data(), positions.numel(), 0, INT32_MAX, std::nullopt,
                                              deferred))
      throw_invalid_position(function, bad->index, bad->value);
  }

  template <class T>
  static void apply(const cuda& device, const tensor_view<const T, cuda>& x, const tensor_view<T, cuda>& y,
                    const tensor_view<const std::int32_t, cuda>& positions, double theta, const rope_scaling& scaling,
                    bool inverse) {
    const index_t rows = x.size(0) * x.size(1);
    const index_t half = x.size(3) / 2;
    if (rows == 0 || x.size(2) == 0) return;
    constexpr int threads = 256;
    cuda_impl::rope_kernel<T><<<cuda_plan::grid_size(rows * half, threads), threads, 0, device.stream>>>(
        x.data(), y.data(), positions.rank() != 0 ? positions.data() : nullptr, rows, x.size(1), x.size(2), x.size(3),
        theta, scaling, inverse);
    cuda_impl::check_launch();
  }
};

}  // namespace meap
