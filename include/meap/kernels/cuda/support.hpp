// meap/kernels/cuda/support.hpp: what the CUDA kernels share: the element types they take,
// float <-> storage conversions in device code, the on-device search for an invalid id (token,
// label, position) that lets the CUDA twins throw the CPU's messages (now, or deferred), sums of
// doubles in a fixed order, and scratch buffers. Part of <meap/cuda.hpp>; compiled by nvcc only.
#pragma once
#if !defined(__CUDACC__)
#error "meap/kernels/cuda/*.hpp (and <meap/cuda.hpp>) must be compiled by nvcc: put this code in a .cu file"
#endif

#include <meap/core/cuda/runtime.hpp>
#include <meap/core/cuda/tensor.hpp>
#include <meap/core/deferred_checks.hpp>
#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/dtype.hpp>
#include <meap/core/error.hpp>
#include <meap/core/precision.hpp>
#include <meap/core/tensor.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/cuda/plan.hpp>

#include <cub/block/block_reduce.cuh>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

namespace meap {

// The element types the CUDA layer kernels store (they compute in float, one rounding on
// output): layer_element<T, cuda> of core/precision.hpp, under the name the CUDA code uses.
template <class T>
concept cuda_compute_type = layer_element<T, cuda>;

// Where a CUDA backward writes a parameter gradient: the compute type itself, or float (the
// master-weight precision AdamW reads) for half / bfloat16 compute.
template <class G, class T>
concept cuda_gradient_type = gradient_element<G, T, cuda>;

namespace detail::cuda_impl {

// ---------------------------------------------------------------------------------------------
// Device-side conversions through the native types (one cvt instruction each, round to nearest
// even, the same result as meap's host conversions).
template <class T>
__device__ __forceinline__ float to_float(T value) {
  if constexpr (std::is_same_v<T, float>) return value;
  else if constexpr (std::is_same_v<T, half>) return __half2float(to_native(value));
  else return __bfloat162float(to_native(value));
}

template <class T>
__device__ __forceinline__ T from_float(float value) {
  if constexpr (std::is_same_v<T, float>) return value;
  else if constexpr (std::is_same_v<T, half>) return from_native(__float2half_rn(value));
  else return from_native(__float2bfloat16_rn(value));
}

inline void check_launch() { MEAP_CUDA_CHECK(cudaGetLastError()); }

// CUB's device algorithms count items in int; the kernels that call them check the count here.
inline void check_int_count(std::string_view function, std::string_view argument, index_t count) {
  check_argument(count <= INT_MAX, function, argument, "a count of " + std::to_string(count) + " rows",
                 "at most " + std::to_string(INT_MAX) + " rows");
}

// ---------------------------------------------------------------------------------------------
// The first invalid id of a device array (token ids, labels, positions). The CPU twins scan their
// ids on the host and name the first bad one; here a kernel takes the minimum of
// deferred_failure(index, value) over the bad ones (an integer atomicMin: the result does not
// depend on the order threads arrive), into a word of deferred_checks (core/deferred_checks.hpp)
// when the caller defers the check, or into a scratch word that one small copy brings back, which
// waits for the stream, as the CPU twin's scan would have waited for the data.

// data: (n). *word = min over i with data[i] outside [lo, hi] (and != except when has_except) of
// deferred_failure(i, data[i]). A template only so that the header defines it once per program.
template <class I>
__global__ void find_invalid_kernel(const I* data, index_t n, I lo, I hi, bool has_except, I except,
                                    unsigned long long* word) {
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const I value = data[i];
    const bool valid = (value >= lo && value <= hi) || (has_except && value == except);
    if (!valid) {
      atomicMin(word, static_cast<unsigned long long>(deferred_failure(static_cast<std::uint64_t>(i), value)));
      return;  // later elements of this thread have larger indices
    }
  }
}

struct invalid_id {
  index_t index;
  std::int32_t value;
};

inline unsigned long long* as_atomic_word(std::uint64_t* word) {
  static_assert(sizeof(unsigned long long) == sizeof(std::uint64_t));
  return reinterpret_cast<unsigned long long*>(word);
}

// Reads back a failure word (waits for the stream).
inline std::optional<invalid_id> read_failure(const cuda& device, const std::uint64_t* word) {
  std::uint64_t value = deferred_none;
  MEAP_CUDA_CHECK(cudaMemcpyAsync(&value, word, sizeof value, cudaMemcpyDeviceToHost, device.stream));
  synchronize(device);
  if (value == deferred_none) return std::nullopt;
  return invalid_id{static_cast<index_t>(value >> 32), static_cast<std::int32_t>(static_cast<std::uint32_t>(value))};
}

// Checks data (n) against [lo, hi] (and `except`): into `deferred` when given (returns nullopt at
// once, nothing waited for), else now (waits; returns the first failure).
inline std::optional<invalid_id> check_ids(const cuda& device, const std::int32_t* data, index_t n, std::int32_t lo,
                                           std::int32_t hi, std::optional<std::int32_t> except,
                                           std::uint64_t* deferred) {
  if (n == 0) return std::nullopt;
  tensor<std::uint64_t, cuda> scratch;
  std::uint64_t* word = deferred;
  if (word == nullptr) {
    scratch = tensor<std::uint64_t, cuda>(device, {1});
    word = scratch.data();
    MEAP_CUDA_CHECK(cudaMemsetAsync(word, 0xff, sizeof(std::uint64_t), device.stream));
  }
  constexpr int threads = 256;
  find_invalid_kernel<std::int32_t><<<cuda_plan::grid_size(n, threads), threads, 0, device.stream>>>(
      data, n, lo, hi, except.has_value(), except.value_or(0), as_atomic_word(word));
  check_launch();
  if (deferred != nullptr) return std::nullopt;
  return read_failure(device, word);
}

// ---------------------------------------------------------------------------------------------
// Deterministic sums of doubles (row losses, the gradient-norm partials).

// total = sum of values[0..n) in one block: thread t adds entries t, t + Threads, ... in order,
// then a block reduction in a fixed tree. No atomics: the same bits every run.
template <int Threads>
__global__ void __launch_bounds__(Threads) sum_doubles_kernel(const double* values, index_t n, double* total) {
  using reduce = cub::BlockReduce<double, Threads>;
  __shared__ typename reduce::TempStorage storage;
  double sum = 0.0;
  for (index_t i = threadIdx.x; i < n; i += Threads) sum += values[i];
  const double all = reduce(storage).Sum(sum);
  if (threadIdx.x == 0) *total = all;
}

// total[0] (+)= the sum of values[0..n) in one block (the same fixed order as sum_doubles_kernel);
// total[1] += count when `count` >= 0. What a loss adds to a step status without a read-back.
template <int Threads>
__global__ void __launch_bounds__(Threads)
    add_doubles_kernel(const double* values, index_t n, double scale, double* total, double count) {
  using reduce = cub::BlockReduce<double, Threads>;
  __shared__ typename reduce::TempStorage storage;
  double sum = 0.0;
  for (index_t i = threadIdx.x; i < n; i += Threads) sum += values[i];
  const double all = reduce(storage).Sum(sum);
  if (threadIdx.x == 0) {
    total[0] += all * scale;
    if (count >= 0) total[1] += count;
  }
}

// The sum of n device doubles, brought back to the host (waits for the stream).
inline double sum_doubles(const cuda& device, const double* values, index_t n) {
  tensor<double, cuda> total(device, {1});
  constexpr int threads = 512;
  sum_doubles_kernel<threads><<<1, threads, 0, device.stream>>>(values, n, total.data());
  check_launch();
  double host_total = 0;
  MEAP_CUDA_CHECK(cudaMemcpyAsync(&host_total, total.data(), sizeof host_total, cudaMemcpyDeviceToHost, device.stream));
  synchronize(device);
  return host_total;
}

// total[0] += scale * sum of n device doubles, total[1] += count; nothing waits.
inline void add_doubles(const cuda& device, const double* values, index_t n, double scale, double* total,
                        double count) {
  constexpr int threads = 512;
  add_doubles_kernel<threads><<<1, threads, 0, device.stream>>>(values, n, scale, total, count);
  check_launch();
}

// ---------------------------------------------------------------------------------------------
// Scratch memory for CUB's temporary storage and the kernels' intermediates: stream-ordered,
// freed (after the work that uses it) when it goes out of scope.
inline tensor<std::uint8_t, cuda> scratch_bytes(const cuda& device, std::size_t bytes) {
  return tensor<std::uint8_t, cuda>(device, {static_cast<index_t>(bytes == 0 ? 1 : bytes)});
}

}  // namespace detail::cuda_impl

}  // namespace meap
