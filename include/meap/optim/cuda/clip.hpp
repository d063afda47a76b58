// meap/optim/cuda/clip.hpp: the global gradient norm on CUDA, behind optim/clip.hpp (its CPU twin
// is optim/cpu/clip.hpp): over a list of parameters (clip_grad_norm, grad_norm,
// first_nonfinite_gradient), and over a flat buffer into a step status (clip_factor).
//
// Gradients are float, half or bfloat16 on the device; squares are summed in double. The sum is
// deterministic without atomics (kernels/cuda/plan.hpp): every gradient is cut into chunks of
// 16384 elements, one block reduces each chunk in a fixed tree into a double partial, and one
// block adds the partials in chunk order. The norm depends on the gradient sizes and values
// only, so it is the same bits on every run, whatever the grid. It can differ from the CPU's in
// the last bits (a different order of the same double additions). Squares of float, half or
// bfloat16 values (at most 1.2e77) cannot overflow a double sum, so the CPU's rescaled second
// pass for huge double gradients has no counterpart here.
//
// grad_norm and clip_grad_norm return the norm to the host, so they wait for the stream; the
// scaling itself is enqueued and not waited for. clip_factor waits for nothing: one kernel sums the
// chunks' partials in order and decides the step in device memory. Part of <meap/cuda.hpp>;
// compiled by nvcc only.
#pragma once
#if !defined(__CUDACC__)
#error "meap/optim/cuda/*.hpp (and <meap/cuda.hpp>) must be compiled by nvcc: put this code in a .cu file"
#endif

#include <meap/core/cuda/runtime.hpp>
#include <meap/core/cuda/tensor.hpp>
#include <meap/core/device.hpp>
#include <meap/core/error.hpp>
#include <meap/core/tensor.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/cuda/plan.hpp>
#include <meap/kernels/cuda/support.hpp>
#include <meap/optim/clip.hpp>
#include <meap/kernels/backend.hpp>
#include <meap/optim/cpu/clip.hpp>
#include <meap/optim/status.hpp>
#include <meap/optim/parameter.hpp>

#include <cub/block/block_reduce.cuh>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace meap {

namespace detail::cuda_impl {

// The gradients as the kernels see them: one int64 table of 4 x count words,
//   [0, count)           first chunk of each tensor (increasing; see cuda_plan::owner_of_chunk)
//   [count, 2 count)     element count
//   [2 count, 3 count)   flat offset of its first element in the concatenation of all tensors
//   [3 count, 4 count)   data pointer
struct gradient_table {
  tensor<std::int64_t, cuda> words;
  int count = 0;
  index_t chunks = 0;
  std::vector<index_t> flat_begin;  // host copy of the third block
};

template <class T>
gradient_table make_gradient_table(const cuda& device, std::span<const named_parameter<T, cuda>> params) {
  gradient_table table;
  table.count = static_cast<int>(params.size());
  std::vector<std::int64_t> words(4 * params.size());
  index_t chunk = 0, flat = 0;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const index_t n = params[i].grad.numel();
    words[i] = chunk;
    words[params.size() + i] = n;
    words[2 * params.size() + i] = flat;
    words[3 * params.size() + i] = static_cast<std::int64_t>(reinterpret_cast<std::uintptr_t>(params[i].grad.data()));
    table.flat_begin.push_back(flat);
    chunk += cuda_plan::norm_chunks(n);
    flat += n;
  }
  table.chunks = chunk;
  if (!words.empty())
    table.words =
        to_device(device, tensor_view<const std::int64_t, cpu>(words.data(), dims{static_cast<index_t>(words.size())}));
  return table;
}

// partial[chunk] = sum over g[begin, end) of double(g)^2, a fixed tree per block (the block's
// threads stride the range; cub reduces). Every thread of the block calls it.
template <class T, int Threads>
__device__ void chunk_sum_of_squares(const T* g, index_t begin, index_t end,
                                     typename cub::BlockReduce<double, Threads>::TempStorage& storage, double* partial) {
  double sum = 0.0;
  for (index_t i = begin + threadIdx.x; i < end; i += Threads) {
    const auto x = static_cast<double>(to_float(g[i]));
    sum += x * x;
  }
  const double total = cub::BlockReduce<double, Threads>(storage).Sum(sum);
  if (threadIdx.x == 0) *partial = total;
  __syncthreads();  // storage is reused by the next chunk
}

// partial: (chunks). partial[c] = the sum of squares of chunk c of the tensor list. Chunks stride
// by gridDim.x.
template <class T, int Threads>
__global__ void __launch_bounds__(Threads)
    norm_partial_kernel(const std::int64_t* table, int count, index_t chunks, double* partial) {
  __shared__ typename cub::BlockReduce<double, Threads>::TempStorage storage;
  const std::int64_t* first_chunk = table;
  const std::int64_t* numel = table + count;
  const std::int64_t* pointers = table + 3 * count;
  for (index_t chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
    const int p = cuda_plan::owner_of_chunk(first_chunk, count, chunk);
    const T* g = reinterpret_cast<const T*>(static_cast<std::uintptr_t>(pointers[p]));
    const index_t begin = (chunk - first_chunk[p]) * cuda_plan::norm_chunk;
    const index_t end = begin + cuda_plan::norm_chunk < numel[p] ? begin + cuda_plan::norm_chunk : numel[p];
    chunk_sum_of_squares<T, Threads>(g, begin, end, storage, partial + chunk);
  }
}

// first = the smallest flat offset of a non-finite element (integer atomicMin: order-free).
template <class T>
__global__ void nonfinite_kernel(const std::int64_t* table, int count, index_t chunks, unsigned long long* first) {
  const std::int64_t* first_chunk = table;
  const std::int64_t* numel = table + count;
  const std::int64_t* flat_begin = table + 2 * count;
  const std::int64_t* pointers = table + 3 * count;
  for (index_t chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
    const int p = cuda_plan::owner_of_chunk(first_chunk, count, chunk);
    const T* g = reinterpret_cast<const T*>(static_cast<std::uintptr_t>(pointers[p]));
    const index_t begin = (chunk - first_chunk[p]) * cuda_plan::norm_chunk;
    const index_t end = begin + cuda_plan::norm_chunk < numel[p] ? begin + cuda_plan::norm_chunk : numel[p];
    for (index_t i = begin + threadIdx.x; i < end; i += blockDim.x)
      if (!isfinite(to_float(g[i]))) {
        atomicMin(first, static_cast<unsigned long long>(flat_begin[p] + i));
        break;  // this thread's later elements come after
      }
  }
}

// g (n) *= factor, in T (the CPU's g *= T(scale)).
template <class T>
__global__ void scale_kernel(T* g, index_t n, float factor) {
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<index_t>(gridDim.x) * blockDim.x)
    g[i] = from_float<T>(to_float(g[i]) * factor);
}

template <class T>
double global_norm(const cuda& device, std::span<const named_parameter<T, cuda>> params) {
  const gradient_table table = make_gradient_table(device, params);
  if (table.chunks == 0) return 0.0;
  tensor<double, cuda> partial(device, {table.chunks});
  constexpr int threads = 256;
  norm_partial_kernel<T, threads><<<cuda_plan::grid_size(table.chunks, 1), threads, 0, device.stream>>>(
      table.words.data(), table.count, table.chunks, partial.data());
  check_launch();
  return std::sqrt(sum_doubles(device, partial.data(), table.chunks));
}

template <class T>
std::optional<nonfinite_gradient> find_nonfinite(const cuda& device, std::span<const named_parameter<T, cuda>> params) {
  const gradient_table table = make_gradient_table(device, params);
  if (table.chunks == 0) return std::nullopt;
  tensor<std::uint64_t, cuda> first(device, {1});
  MEAP_CUDA_CHECK(cudaMemsetAsync(first.data(), 0xff, sizeof(std::uint64_t), device.stream));
  constexpr int threads = 256;
  nonfinite_kernel<T><<<cuda_plan::grid_size(table.chunks, 1), threads, 0, device.stream>>>(
      table.words.data(), table.count, table.chunks, reinterpret_cast<unsigned long long*>(first.data()));
  check_launch();
  std::uint64_t flat = 0;
  MEAP_CUDA_CHECK(cudaMemcpyAsync(&flat, first.data(), sizeof flat, cudaMemcpyDeviceToHost, device.stream));
  synchronize(device);
  if (flat == deferred_none) return std::nullopt;
  // The owner: the last tensor whose flat range starts at or before `flat` and is not empty.
  std::size_t k = 0;
  for (std::size_t i = 0; i < params.size(); ++i)
    if (params[i].grad.numel() > 0 && table.flat_begin[i] <= static_cast<index_t>(flat)) k = i;
  const index_t index = static_cast<index_t>(flat) - table.flat_begin[k];
  T value{};
  MEAP_CUDA_CHECK(cudaMemcpyAsync(&value, params[k].grad.data() + index, sizeof value, cudaMemcpyDeviceToHost,
                                  device.stream));
  synchronize(device);
  return nonfinite_gradient{params[k].name, k, index, static_cast<double>(static_cast<float>(value))};
}

// The flat form. partial (chunks): sum of squares of each chunk of g (n), as norm_partial_kernel.
template <class T, int Threads>
__global__ void __launch_bounds__(Threads) flat_partial_kernel(const T* g, index_t n, index_t chunks, double* partial) {
  __shared__ typename cub::BlockReduce<double, Threads>::TempStorage storage;
  for (index_t chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
    const index_t begin = chunk * cuda_plan::norm_chunk;
    const index_t end = begin + cuda_plan::norm_chunk < n ? begin + cuda_plan::norm_chunk : n;
    chunk_sum_of_squares<T, Threads>(g, begin, end, storage, partial + chunk);
  }
}

// One block: the partials summed in a fixed order, the deferred checks scanned, and the step
// decided into values (detail::decide_update: the CPU's rule, in the same function).
template <int Threads>
__global__ void __launch_bounds__(Threads)
    decide_kernel(const double* partial, index_t chunks, const std::uint64_t* checks, index_t words, double max_norm,
                  double loss_scale, double* values) {
  using reduce = cub::BlockReduce<double, Threads>;
  __shared__ typename reduce::TempStorage storage;
  __shared__ int failed;
  if (threadIdx.x == 0) failed = 0;
  __syncthreads();
  double sum = 0.0;
  for (index_t i = threadIdx.x; i < chunks; i += Threads) sum += partial[i];
  for (index_t i = threadIdx.x; i < words; i += Threads)
    if (checks[i] != deferred_none) atomicOr(&failed, 1);
  const double total = reduce(storage).Sum(sum);
  __syncthreads();
  if (threadIdx.x == 0) decide_update(values, sqrt(total) / loss_scale, max_norm, loss_scale, failed == 0);
}

// One block: sum = the partials added in a fixed order (the sum of squares of one rank's shard).
template <int Threads>
__global__ void __launch_bounds__(Threads) sum_partials_kernel(const double* partial, index_t chunks, double* sum) {
  using reduce = cub::BlockReduce<double, Threads>;
  __shared__ typename reduce::TempStorage storage;
  double part = 0.0;
  for (index_t i = threadIdx.x; i < chunks; i += Threads) part += partial[i];
  const double total = reduce(storage).Sum(part);
  if (threadIdx.x == 0) *sum = total;
}

}  // namespace detail::cuda_impl

template <>
struct detail::clip_kernels<cuda> {
  template <class T>
  static double norm(const cuda& device, std::span<const named_parameter<T, cuda>> params) {
    return cuda_impl::global_norm(device, params);
  }

  // Every gradient *= T(scale), as the CPU does.
  template <class T>
  static void scale(const cuda& device, std::span<const named_parameter<T, cuda>> params, double scale) {
    const auto factor = static_cast<float>(static_cast<T>(scale));
    for (const auto& p : params) {
      const index_t n = p.grad.numel();
      if (n == 0) continue;
      constexpr int threads = 256;
      cuda_impl::scale_kernel<T><<<cuda_plan::grid_size(n, threads), threads, 0, device.stream>>>(p.grad.data(), n, factor);
      cuda_impl::check_launch();
    }
  }

  template <class T>
  static std::optional<nonfinite_gradient> first_nonfinite(const cuda& device,
                                                           std::span<const named_parameter<T, cuda>> params) {
    return cuda_impl::find_nonfinite(device, params);
  }

  // The sums of squares of grads' chunks (at least one element, 0 when grads is empty).
  template <class T>
  static tensor<double, cuda> chunk_partials(const cuda& device, const tensor_view<const T, cuda>& grads) {
    const index_t n = grads.numel();
    const index_t chunks = cuda_plan::norm_chunks(n);
    tensor<double, cuda> partial(device, {chunks > 0 ? chunks : 1});
    constexpr int threads = 256;
    if (chunks > 0) {
      cuda_impl::flat_partial_kernel<T, threads><<<cuda_plan::grid_size(chunks, 1), threads, 0, device.stream>>>(
          grads.data(), n, chunks, partial.data());
      cuda_impl::check_launch();
    }
    return partial;
  }

  template <class T>
  static void factor(const cuda& device, const tensor_view<const T, cuda>& grads, double max_norm, double loss_scale,
                     const step_status<cuda>& status) {
    const index_t chunks = cuda_plan::norm_chunks(grads.numel());
    const auto partial = chunk_partials(device, grads);
    const index_t words = status.checks.rank() != 0 ? status.checks.numel() : 0;
    constexpr int decide_threads = 512;
    cuda_impl::decide_kernel<decide_threads><<<1, decide_threads, 0, device.stream>>>(
        partial.data(), chunks, words > 0 ? status.checks.data() : nullptr, words, max_norm, loss_scale,
        status.values.data());
    cuda_impl::check_launch();
  }

  // The sum of squares of grads into *sum (device memory), without waiting.
  template <class T>
  static void sum_of_squares(const cuda& device, const tensor_view<const T, cuda>& grads, double* sum) {
    const index_t chunks = cuda_plan::norm_chunks(grads.numel());
    const auto partial = chunk_partials(device, grads);
    constexpr int sum_threads = 512;
    cuda_impl::sum_partials_kernel<sum_threads><<<1, sum_threads, 0, device.stream>>>(partial.data(), chunks, sum);
    cuda_impl::check_launch();
  }

  // The ranks' sums (count, rank order) added and the step decided, as factor() does.
  static void factor_from_sums(const cuda& device, const double* sums, index_t count, double max_norm,
                               double loss_scale, const step_status<cuda>& status) {
    const index_t words = status.checks.rank() != 0 ? status.checks.numel() : 0;
    constexpr int decide_threads = 512;
    cuda_impl::decide_kernel<decide_threads><<<1, decide_threads, 0, device.stream>>>(
        sums, count, words > 0 ? status.checks.data() : nullptr, words, max_norm, loss_scale, status.values.data());
    cuda_impl::check_launch();
  }
};

}  // namespace meap
