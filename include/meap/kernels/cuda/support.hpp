// meap/kernels/cuda/support.hpp: what the CUDA layer kernels share: the element types they take,
// float <-> storage conversions in device code, argument checks for device views, the on-device
// search for an invalid id (token, label, position) that lets the CUDA twins throw the CPU's
// messages, and scratch buffers. Part of <meap/cuda.hpp>; compiled by nvcc only.
#pragma once
#if !defined(__CUDACC__)
#error "meap/kernels/cuda/*.hpp (and <meap/cuda.hpp>) must be compiled by nvcc: put this code in a .cu file"
#endif

#include <meap/core/cuda/runtime.hpp>
#include <meap/core/cuda/tensor.hpp>
#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/dtype.hpp>
#include <meap/core/error.hpp>
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

// The element types the CUDA layer kernels store; they compute in float (one rounding on output).
template <class T>
concept cuda_compute_type =
    std::is_same_v<T, float> || std::is_same_v<T, half> || std::is_same_v<T, bfloat16>;

// Where a CUDA backward writes a parameter gradient: the compute type itself, or float (the
// master-weight precision AdamW on CUDA reads) for half / bfloat16 compute.
template <class G, class T>
concept cuda_gradient_type = cuda_compute_type<T> && (std::is_same_v<G, T> || std::is_same_v<G, float>);

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

// ---------------------------------------------------------------------------------------------
// Argument checks for device views (the CPU front doors' detail::check_matrix takes host views).
template <class T>
void check_matrix(std::string_view function, std::string_view argument, const tensor_view<T, cuda>& view, index_t rows,
                  index_t columns) {
  check_shape(function, argument, view, dims{rows, columns});
  check_contiguous(function, argument, view);
}

// All device arguments of one call must live on one device; `first` is the reference. Default
// (rank-0, skipped) views are not checked.
template <class A, class B>
void check_colocated(std::string_view function, std::string_view first_name, const tensor_view<A, cuda>& first,
                     std::string_view name, const tensor_view<B, cuda>& view) {
  if (view.rank() == 0 && view.data() == nullptr) return;
  check_same_device(function, first_name, first, name, view);
}

// CUB's device algorithms count items in int; the kernels that call them check the count here.
inline void check_int_count(std::string_view function, std::string_view argument, index_t count) {
  check_argument(count <= INT_MAX, function, argument, "a count of " + std::to_string(count) + " rows",
                 "at most " + std::to_string(INT_MAX) + " rows");
}

// ---------------------------------------------------------------------------------------------
// The first invalid id of a device array. The CPU twins scan their ids on the host and name the
// first bad one; here a kernel takes the minimum bad index (an integer atomicMin: its result does
// not depend on the order threads arrive), and one small copy brings it back. That copy waits
// for the stream, as the CPU twin's scan would have waited for the data.
inline constexpr unsigned long long no_invalid_index = ~0ull;

// data: (n). first = min { i : data[i] not in [lo, hi] and data[i] != except (when has_except) }.
// A template only so that the header defines it once per program (kernels in headers must be).
template <class I>
__global__ void find_invalid_kernel(const I* data, index_t n, I lo, I hi, bool has_except, I except,
                                    unsigned long long* first) {
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const I value = data[i];
    const bool valid = (value >= lo && value <= hi) || (has_except && value == except);
    if (!valid) {
      atomicMin(first, static_cast<unsigned long long>(i));
      return;  // later elements of this thread have larger indices
    }
  }
}

struct invalid_id {
  index_t index;
  std::int32_t value;
};

// Reads back the index a find_invalid_kernel (or a kernel doing the same) left in `first`, and
// then the value there. Synchronizes the stream.
inline std::optional<invalid_id> read_invalid(const cuda& device, const unsigned long long* first,
                                              const std::int32_t* data) {
  unsigned long long index = no_invalid_index;
  MEAP_CUDA_CHECK(cudaMemcpyAsync(&index, first, sizeof index, cudaMemcpyDeviceToHost, device.stream));
  synchronize(device);
  if (index == no_invalid_index) return std::nullopt;
  std::int32_t value = 0;
  MEAP_CUDA_CHECK(cudaMemcpyAsync(&value, data + index, sizeof value, cudaMemcpyDeviceToHost, device.stream));
  synchronize(device);
  return invalid_id{static_cast<index_t>(index), value};
}

// The first element of data (n) outside [lo, hi] (inclusive) and != except (if given), or nullopt.
inline std::optional<invalid_id> find_first_invalid(const cuda& device, const std::int32_t* data, index_t n,
                                                    std::int32_t lo, std::int32_t hi,
                                                    std::optional<std::int32_t> except = std::nullopt) {
  if (n == 0) return std::nullopt;
  tensor<std::uint64_t, cuda> first(device, {1});
  auto* word = reinterpret_cast<unsigned long long*>(first.data());
  static_assert(sizeof(unsigned long long) == sizeof(std::uint64_t));
  MEAP_CUDA_CHECK(cudaMemsetAsync(word, 0xff, sizeof(unsigned long long), device.stream));
  constexpr int threads = 256;
  find_invalid_kernel<std::int32_t><<<cuda_plan::grid_size(n, threads), threads, 0, device.stream>>>(
      data, n, lo, hi, except.has_value(), except.value_or(0), word);
  check_launch();
  return read_invalid(device, word, data);
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

// ---------------------------------------------------------------------------------------------
// Scratch memory for CUB's temporary storage and the kernels' intermediates: stream-ordered,
// freed (after the work that uses it) when it goes out of scope.
inline tensor<std::uint8_t, cuda> scratch_bytes(const cuda& device, std::size_t bytes) {
  return tensor<std::uint8_t, cuda>(device, {static_cast<index_t>(bytes == 0 ? 1 : bytes)});
}

}  // namespace detail::cuda_impl

}  // namespace meap
