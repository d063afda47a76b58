// meap/kernels/cuda/rmsnorm.hpp: the meap::cuda implementation behind <meap/kernels/rmsnorm.hpp>.
// Its CPU twin is kernels/cpu/rmsnorm.hpp.
//
//   x, y: (N, d)   w: (d)   inv_rms: (N) float, saved by the forward for the backward
//   y = x / sqrt(mean(x^2) + eps) * w
//
// T is float, half or bfloat16, computed in float; inv_rms is float (accumulate_t<T>) for every T
// (a 16-bit copy would cost the backward its precision). Backward
// overwrites dx and accumulates dw (T, or float for 16-bit T). dw is summed over fixed chunks of
// 64 rows and then over the chunks in order, as on the CPU: no atomics, the same bits every run.
// Part of <meap/cuda.hpp>; compiled by nvcc only.
#pragma once
#if !defined(__CUDACC__)
#error "meap/kernels/cuda/*.hpp (and <meap/cuda.hpp>) must be compiled by nvcc: put this code in a .cu file"
#endif

#include <meap/core/device.hpp>
#include <meap/core/error.hpp>
#include <meap/core/tensor.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/backend.hpp>
#include <meap/kernels/cuda/plan.hpp>
#include <meap/kernels/cuda/support.hpp>
#include <meap/kernels/rmsnorm.hpp>

#include <cub/block/block_reduce.cuh>
#include <cuda_runtime.h>

#include <cmath>
#include <string>
#include <string_view>
#include <type_traits>

namespace meap {

namespace detail::cuda_impl {

// x, y: (N, d); w: (d); inv_rms: (N). One block per row (rows stride by gridDim.x).
template <class T, int Threads>
__global__ void __launch_bounds__(Threads) rmsnorm_forward_kernel(const T* x, const T* w, T* y, float* inv_rms,
                                                                  index_t rows, index_t d, float eps) {
  using reduce = cub::BlockReduce<float, Threads>;
  __shared__ typename reduce::TempStorage storage;
  __shared__ float row_inv;
  for (index_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * d;
    float sum = 0.0f;
    for (index_t i = threadIdx.x; i < d; i += Threads) {
      const float v = to_float(xr[i]);
      sum += v * v;
    }
    const float total = reduce(storage).Sum(sum);
    if (threadIdx.x == 0) {
      const float inv = 1.0f / sqrtf(total / static_cast<float>(d) + eps);
      row_inv = inv;
      inv_rms[row] = inv;
    }
    __syncthreads();
    const float inv = row_inv;
    T* yr = y + row * d;
    for (index_t i = threadIdx.x; i < d; i += Threads) yr[i] = from_float<T>(to_float(xr[i]) * inv * to_float(w[i]));
    __syncthreads();  // storage and row_inv are reused by the next row
  }
}

// With xhat = x r and g = dy w: dx = r (g - xhat mean(g xhat)), i.e. with dot = sum dy w x,
// dx = r (dy w - x r (dot r / d)). x, dy, dx: (N, d); w: (d); r: (N). One block per row.
template <class T, int Threads>
__global__ void __launch_bounds__(Threads) rmsnorm_dx_kernel(const T* x, const T* w, const float* r, const T* dy, T* dx,
                                                             index_t rows, index_t d) {
  using reduce = cub::BlockReduce<float, Threads>;
  __shared__ typename reduce::TempStorage storage;
  __shared__ float row_mean;
  for (index_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * d;
    const T* dyr = dy + row * d;
    float dot = 0.0f;
    for (index_t i = threadIdx.x; i < d; i += Threads) dot += to_float(dyr[i]) * to_float(w[i]) * to_float(xr[i]);
    const float total = reduce(storage).Sum(dot);
    const float inv = r[row];
    if (threadIdx.x == 0) row_mean = total * inv / static_cast<float>(d);  // mean(g * xhat)
    __syncthreads();
    const float mean = row_mean;
    T* dxr = dx + row * d;
    for (index_t i = threadIdx.x; i < d; i += Threads)
      dxr[i] = from_float<T>(inv * (to_float(dyr[i]) * to_float(w[i]) - to_float(xr[i]) * inv * mean));
    __syncthreads();
  }
}

// partial (chunks, d): partial[c][i] = sum over the rows n of chunk c, in order, of dy x r.
// Grid: (ceil(d / Threads), min(chunks, 65535)); one thread per (chunk, column), coalesced along
// columns; chunks stride by gridDim.y, so any row count fits the grid.
template <class T, int Threads>
__global__ void __launch_bounds__(Threads) rmsnorm_dw_partial_kernel(const T* x, const float* r, const T* dy,
                                                                     float* partial, index_t rows, index_t d,
                                                                     index_t chunks) {
  const index_t i = blockIdx.x * static_cast<index_t>(Threads) + threadIdx.x;
  if (i >= d) return;
  for (index_t chunk = blockIdx.y; chunk < chunks; chunk += gridDim.y) {
    const index_t begin = chunk * cuda_plan::rmsnorm_chunk_rows;
    const index_t end = begin + cuda_plan::rmsnorm_chunk_rows < rows ? begin + cuda_plan::rmsnorm_chunk_rows : rows;
    float sum = 0.0f;
    for (index_t n = begin; n < end; ++n) sum += to_float(dy[n * d + i]) * to_float(x[n * d + i]) * r[n];
    partial[chunk * d + i] = sum;
  }
}

// dw[i] += sum over chunks, in chunk order, of partial[c][i]. One thread per column.
template <class G>
__global__ void rmsnorm_dw_sum_kernel(const float* partial, G* dw, index_t chunks, index_t d) {
  const index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x;
  if (i >= d) return;
  float sum = 0.0f;
  for (index_t c = 0; c < chunks; ++c) sum += partial[c * d + i];
  dw[i] = from_float<G>(to_float(dw[i]) + sum);
}

// Calls f(std::integral_constant<int, threads>) with the block size plan.hpp picks for d columns.
template <class F>
void with_row_threads(index_t columns, F&& f) {
  switch (cuda_plan::row_threads(columns)) {
    case 64: f(std::integral_constant<int, 64>{}); break;
    case 128: f(std::integral_constant<int, 128>{}); break;
    case 256: f(std::integral_constant<int, 256>{}); break;
    case 512: f(std::integral_constant<int, 512>{}); break;
    default: f(std::integral_constant<int, 1024>{}); break;
  }
}

}  // namespace detail::cuda_impl

template <>
struct detail::rmsnorm_kernels<cuda> {
  template <class T>
  static void forward(const cuda& device, const tensor_view<const T, cuda>& x, const tensor_view<const T, cuda>& w,
                      const tensor_view<T, cuda>& y, const tensor_view<float, cuda>& inv_rms, double eps) {
    namespace impl = cuda_impl;
    const index_t rows = x.size(0), d = x.size(1);
    if (rows == 0) return;
    impl::with_row_threads(d, [&](auto threads) {
      constexpr int Threads = decltype(threads)::value;
      impl::rmsnorm_forward_kernel<T, Threads><<<cuda_plan::grid_size(rows, 1), Threads, 0, device.stream>>>(
          x.data(), w.data(), y.data(), inv_rms.data(), rows, d, static_cast<float>(eps));
    });
    impl::check_launch();
  }

  template <class T, class G>
  static void backward(const cuda& device, const tensor_view<const T, cuda>& x, const tensor_view<const T, cuda>& w,
                       const tensor_view<const float, cuda>& inv_rms, const tensor_view<const T, cuda>& dy,
                       const tensor_view<T, cuda>& dx, const tensor_view<G, cuda>& dw) {
    namespace impl = cuda_impl;
    const index_t rows = x.size(0), d = x.size(1);
    if (rows == 0 || d == 0) return;
    impl::with_row_threads(d, [&](auto threads) {
      constexpr int Threads = decltype(threads)::value;
      impl::rmsnorm_dx_kernel<T, Threads><<<cuda_plan::grid_size(rows, 1), Threads, 0, device.stream>>>(
          x.data(), w.data(), inv_rms.data(), dy.data(), dx.data(), rows, d);
    });
    impl::check_launch();
    const index_t chunks = cuda_plan::rmsnorm_row_chunks(rows);
    constexpr int threads = 256;
    tensor<float, cuda> partial(device, {chunks, d});
    const dim3 grid(cuda_plan::grid_size(d, threads, index_t{1} << 30),
                    static_cast<unsigned int>(chunks < 65535 ? chunks : 65535));
    impl::rmsnorm_dw_partial_kernel<T, threads>
        <<<grid, threads, 0, device.stream>>>(x.data(), inv_rms.data(), dy.data(), partial.data(), rows, d, chunks);
    impl::check_launch();
    impl::rmsnorm_dw_sum_kernel<G><<<cuda_plan::grid_size(d, threads, index_t{1} << 30), threads, 0, device.stream>>>(
        partial.data(), dw.data(), chunks, d);
    impl::check_launch();
  }
};

}  // namespace meap
