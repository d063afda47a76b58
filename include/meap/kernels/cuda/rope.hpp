// meap/kernels/cuda/rope.hpp: the meap::cuda twin of <meap/kernels/rope.hpp>: rotary position
// embedding in the Hugging Face LLaMA layout (rotate_half: dimension i pairs with i + D/2,
// frequency theta^(-2i/D)); rope_backward applies the transposed (inverse) rotation.
//
//   x, y: (B, T, H, D), D even; positions: (B, T) int32 on the device, optional (default: t)
//
// y may alias x. Same checks and messages as the CPU, including the search for a negative
// position (on the device; the call waits for it). T is float, half or bfloat16. Angles are
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
#include <meap/kernels/cuda/plan.hpp>
#include <meap/kernels/cuda/support.hpp>

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>

namespace meap {

// rope_options for meap::cuda: the positions live on the device.
struct cuda_rope_options {
  double theta = 10000.0;
  // (B, T) positions; a default view means position t for token t of every row.
  tensor_view<const std::int32_t, cuda> positions{};
};

namespace detail::cuda_impl {

// x, y: (B, T, H, D); positions: (B, T) or null. One thread per (b, t, i < D/2); it computes the
// angle once and rotates that pair in every head (coalesced along i for each head).
//   y[i] = x[i] cos - x[i + D/2] sin,  y[i + D/2] = x[i + D/2] cos + x[i] sin   (sin negated: inverse)
template <class T>
__global__ void rope_kernel(const T* x, T* y, const std::int32_t* positions, index_t rows, index_t length,
                            index_t heads, index_t head_dim, double theta, bool inverse) {
  const index_t half = head_dim / 2;
  for (index_t idx = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; idx < rows * half;
       idx += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t bt = idx / half;
    const index_t i = idx % half;
    const double position =
        positions != nullptr ? static_cast<double>(positions[bt]) : static_cast<double>(bt % length);
    const double frequency = pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
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

template <class T>
void check_rope(const cuda& device, std::string_view function, const tensor_view<const T, cuda>& x,
                const tensor_view<T, cuda>& y, const cuda_rope_options& options) {
  check_argument(x.rank() == 4, function, "x", "shape " + to_string(x.shape()), "a rank-4 shape (B, T, H, D)");
  check_argument(x.size(3) % 2 == 0 && x.size(3) > 0, function, "x", "head dim D = " + std::to_string(x.size(3)),
                 "an even head dim (rotate_half pairs i with i + D/2)");
  check_contiguous(function, "x", x);
  check_shape(function, "y", y, x.shape());
  check_contiguous(function, "y", y);
  check_argument(std::isfinite(options.theta) && options.theta > 1.0, function, "theta", options.theta,
                 "a finite base above 1");
  check_colocated(function, "x", x, "y", y);
  if (options.positions.rank() != 0) {
    check_shape(function, "positions", options.positions, dims{x.size(0), x.size(1)});
    check_contiguous(function, "positions", options.positions);
    check_colocated(function, "x", x, "positions", options.positions);
    if (const auto bad = find_first_invalid(device, options.positions.data(), options.positions.numel(), 0, INT32_MAX))
      throw_argument_error(function, "positions",
                           "position " + std::to_string(bad->value) + " at flat index " + std::to_string(bad->index),
                           "non-negative positions");
  }
}

template <class T>
void rope_apply(const cuda& device, const tensor_view<const T, cuda>& x, const tensor_view<T, cuda>& y,
                const cuda_rope_options& options, bool inverse) {
  const index_t rows = x.size(0) * x.size(1);
  const index_t half = x.size(3) / 2;
  if (rows == 0 || x.size(2) == 0) return;
  constexpr int threads = 256;
  rope_kernel<T><<<cuda_plan::grid_size(rows * half, threads), threads, 0, device.stream>>>(
      x.data(), y.data(), options.positions.rank() != 0 ? options.positions.data() : nullptr, rows, x.size(1),
      x.size(2), x.size(3), options.theta, inverse);
  check_launch();
}

}  // namespace detail::cuda_impl

template <cuda_compute_type T>
void rope_forward(const cuda& device, std::type_identity_t<tensor_view<const T, cuda>> x, const tensor_view<T, cuda>& y,
                  const cuda_rope_options& options = {}) {
  detail::cuda_impl::check_rope(device, "meap::rope_forward", x, y, options);
  detail::cuda_impl::rope_apply(device, x, y, options, false);
}

template <cuda_compute_type T>
void rope_backward(const cuda& device, std::type_identity_t<tensor_view<const T, cuda>> dy,
                   const tensor_view<T, cuda>& dx, const cuda_rope_options& options = {}) {
  detail::cuda_impl::check_rope(device, "meap::rope_backward", dy, dx, options);
  detail::cuda_impl::rope_apply(device, dy, dx, options, true);
}

}  // namespace meap
