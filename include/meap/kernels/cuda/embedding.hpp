// meap/kernels/cuda/embedding.hpp: the meap::cuda implementation behind <meap/kernels/embedding.hpp>:
// token embedding lookup and its deterministic backward. Its CPU twin is kernels/cpu/embedding.hpp.
//
//   tokens: (N) int32 in [0, V), on the device   table: (V, d)   y: (N, d)
//
// An out-of-range token is searched for on the device: the call waits for it and throws the CPU's
// message, or records it in `checks` (deferred); then such a token embeds as zeros and the
// backward pass leaves it out, so nothing is read or written out of bounds. T is float, half or
// bfloat16; d_table is T or float.
//
// Backward: d_table[tokens[n]] += dy[n] without atomics. The token ids, paired with their row
// numbers, are sorted by a stable radix sort (CUB), so each token's rows come out in increasing
// order; a run-length encoding gives every distinct token its segment of rows; one thread per
// (token, column) then adds that segment's dy in row order to the old value, in float. No two
// threads write one element and the order of additions is fixed: the gradient is bit-identical
// run to run, and for float it performs exactly the CPU twin's additions in the CPU's order
// (d_table + dy[n0] + dy[n1] + ...), so it equals the CPU result bit for bit.
// A token repeated r times costs its threads r sequential additions; the runs of a batch are
// short except for a padding id, whose rows all sit in one segment.
// Part of <meap/cuda.hpp>; compiled by nvcc only.
#pragma once
#if !defined(__CUDACC__)
#error "meap/kernels/cuda/*.hpp (and <meap/cuda.hpp>) must be compiled by nvcc: put this code in a .cu file"
#endif

#include <meap/core/device.hpp>
#include <meap/core/error.hpp>
#include <meap/core/tensor.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/core/deferred_checks.hpp>
#include <meap/kernels/backend.hpp>
#include <meap/kernels/cuda/plan.hpp>
#include <meap/kernels/cuda/support.hpp>
#include <meap/kernels/embedding.hpp>

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_run_length_encode.cuh>
#include <cub/device/device_scan.cuh>
#include <cuda_runtime.h>

#include <algorithm>
#include <bit>
#include <climits>
#include <cstdint>
#include <string>
#include <string_view>

namespace meap {

namespace detail::cuda_impl {

// tokens: (N); table: (V, d); y: (N, d). Grid-stride over the N x d outputs (coalesced rows). A
// token outside [0, V) (a deferred check failed) gives a row of zeros.
template <class T>
__global__ void embedding_forward_kernel(const std::int32_t* tokens, const T* table, T* y, index_t rows, index_t d,
                                         index_t vocab) {
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < rows * d;
       i += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t token = tokens[i / d];
    y[i] = token >= 0 && token < vocab ? table[token * d + i % d] : from_float<T>(0.0f);
  }
}

// rows: (N), rows[n] = n: the values the sort carries along with the token ids. (A template so
// that the header defines it once per program.)
template <class I>
__global__ void iota_kernel(I* rows, index_t count) {
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<index_t>(gridDim.x) * blockDim.x)
    rows[i] = static_cast<I>(i);
}

// unique, counts, offsets: (R) for the *runs distinct tokens; rows: (N) sorted row numbers;
// dy: (N, d); d_table: (V, d). Grid: runs along x, column tiles along y, both strided. The
// thread for (run, column) owns d_table[unique[run], column].
template <class T, class G>
__global__ void embedding_accumulate_kernel(const std::uint32_t* unique, const std::int32_t* counts,
                                            const std::int32_t* offsets, const std::int32_t* runs,
                                            const std::int32_t* rows, const T* dy, G* d_table, index_t d,
                                            index_t vocab) {
  const index_t run_count = *runs;
  for (index_t column = blockIdx.y * static_cast<index_t>(blockDim.x) + threadIdx.x; column < d;
       column += static_cast<index_t>(gridDim.y) * blockDim.x)
    for (index_t run = blockIdx.x; run < run_count; run += gridDim.x) {
      if (static_cast<index_t>(unique[run]) >= vocab) continue;  // an invalid token whose check was deferred
      G* out = d_table + static_cast<index_t>(unique[run]) * d + column;
      const std::int32_t* segment = rows + offsets[run];
      const std::int32_t length = counts[run];
      float sum = to_float(*out);
      for (std::int32_t k = 0; k < length; ++k) sum += to_float(dy[static_cast<index_t>(segment[k]) * d + column]);
      *out = from_float<G>(sum);
    }
}

}  // namespace detail::cuda_impl

template <>
struct detail::embedding_kernels<cuda> {
  static void check_tokens(const cuda& device, std::string_view function,
                           const tensor_view<const std::int32_t, cuda>& tokens, index_t vocab,
                           const deferred_checks<cuda>& checks) {
    const auto hi = static_cast<std::int32_t>(std::min<index_t>(vocab, INT32_MAX) - 1);
    std::uint64_t* deferred = checks.active() ? checks.word(deferred_check::token_ids) : nullptr;
    if (const auto bad = cuda_impl::check_ids(device, tokens.data(), tokens.numel(), 0, hi, std::nullopt, deferred))
      throw_invalid_token(function, bad->index, bad->value, vocab);
  }

  template <class T>
  static void forward(const cuda& device, const tensor_view<const std::int32_t, cuda>& tokens,
                      const tensor_view<const T, cuda>& table, const tensor_view<T, cuda>& y,
                      const deferred_checks<cuda>&) {
    const index_t rows = tokens.size(0), d = table.size(1);
    if (rows == 0 || d == 0) return;
    constexpr int threads = 256;
    cuda_impl::embedding_forward_kernel<T><<<cuda_plan::grid_size(rows * d, threads), threads, 0, device.stream>>>(
        tokens.data(), table.data(), y.data(), rows, d, table.size(0));
    cuda_impl::check_launch();
  }

  // d_table (V, d) += the rows of dy (N, d) at their tokens.
  template <class T, class G>
  static void backward(const cuda& device, const tensor_view<const std::int32_t, cuda>& tokens,
                       const tensor_view<const T, cuda>& dy, const tensor_view<G, cuda>& d_table,
                       const deferred_checks<cuda>&) {
    namespace impl = cuda_impl;
    impl::check_int_count("meap::embedding_backward", "tokens", tokens.size(0));
    const index_t rows = tokens.size(0), d = d_table.size(1), vocab = d_table.size(0);
    if (rows == 0 || d == 0) return;
    const int count = static_cast<int>(rows);
    constexpr int threads = 256;

    // 1. (token, row) pairs sorted by token, stably: rows of one token stay in increasing order.
    //    Valid tokens are in [0, V), so they sort as unsigned keys on their low bit_width(V - 1)
    //    bits. An invalid token (a deferred check failed) keeps its full value as its key: step 3
    //    skips its run (key >= V), and the gradients of that step are discarded anyway.
    const auto* keys_in = reinterpret_cast<const std::uint32_t*>(tokens.data());
    const int end_bit = std::max(1, static_cast<int>(std::bit_width(static_cast<std::uint64_t>(vocab - 1))));
    tensor<std::uint32_t, cuda> keys_out(device, {rows}), unique(device, {rows});
    tensor<std::int32_t, cuda> rows_in(device, {rows}), rows_out(device, {rows});
    auto counts = zeros<std::int32_t>(device, {rows});  // RunLengthEncode fills only the first `runs`
    tensor<std::int32_t, cuda> offsets(device, {rows});
    tensor<std::int32_t, cuda> runs(device, {1});
    impl::iota_kernel<std::int32_t>
        <<<cuda_plan::grid_size(rows, threads), threads, 0, device.stream>>>(rows_in.data(), rows);
    impl::check_launch();
    std::size_t sort_bytes = 0, encode_bytes = 0, scan_bytes = 0;
    MEAP_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, keys_in, keys_out.data(), rows_in.data(),
                                                    rows_out.data(), count, 0, end_bit, device.stream));
    MEAP_CUDA_CHECK(cub::DeviceRunLengthEncode::Encode(nullptr, encode_bytes, keys_out.data(), unique.data(),
                                                       counts.data(), runs.data(), count, device.stream));
    MEAP_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, scan_bytes, counts.data(), offsets.data(), count,
                                                  device.stream));
    auto temporary = impl::scratch_bytes(device, std::max({sort_bytes, encode_bytes, scan_bytes}));
    MEAP_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temporary.data(), sort_bytes, keys_in, keys_out.data(),
                                                    rows_in.data(), rows_out.data(), count, 0, end_bit, device.stream));
    // 2. One run per distinct token: its id, its row count, and (scan) where its rows start.
    MEAP_CUDA_CHECK(cub::DeviceRunLengthEncode::Encode(temporary.data(), encode_bytes, keys_out.data(), unique.data(),
                                                       counts.data(), runs.data(), count, device.stream));
    MEAP_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(temporary.data(), scan_bytes, counts.data(), offsets.data(), count,
                                                  device.stream));
    // 3. Each (run, column) thread adds its run's rows in order. The run count stays on the device:
    //    blocks beyond it return at once, so no host round trip is needed.
    const dim3 grid(cuda_plan::grid_size(rows, 1), cuda_plan::grid_size(d, threads, 65535));
    impl::embedding_accumulate_kernel<T, G><<<grid, threads, 0, device.stream>>>(
        unique.data(), counts.data(), offsets.data(), runs.data(), rows_out.data(), dy.data(), d_table.data(), d, vocab);
    impl::check_launch();
  }
};

}  // namespace meap
