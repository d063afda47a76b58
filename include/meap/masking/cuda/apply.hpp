// meap/masking/cuda/apply.hpp: the meap::cuda backend of meap::masking::apply(). It runs the
// CPU's per-row algorithm (policy.mask_row with the same Philox stream) in one thread per row, so
// masks agree bit for bit with meap::cpu; the surrounding work is parallel:
//   1. eligibility_kernel: flags, labels, per-row counts and mask-id collisions, one thread per position;
//   2. common_kernel (per_batch only): the positions eligible in every row;
//   3. one copy of the counts to the host (the stream is synchronized here, once per call), so that
//      bad rows throw meap::error before anything is drawn, exactly as on the CPU;
//   4. compact_kernel: one block per row, a CUB BlockScan turns flags into increasing positions;
//   5. draw_kernel: one thread per row (one in all for per_batch) calls policy.mask_row;
//   6. write_kernel: input_ids and mask, one thread per position.
// Part of <meap/cuda.hpp>; compiled by nvcc only.
#pragma once
#if !defined(__CUDACC__)
#error "meap/masking/cuda/*.hpp (and <meap/cuda.hpp>) must be compiled by nvcc: put this code in a .cu file"
#endif

#include <meap/core/device.hpp>
#include <meap/core/cuda/runtime.hpp>
#include <meap/core/cuda/tensor.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/philox.hpp>
#include <meap/core/tensor.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/masking/apply.hpp>
#include <meap/masking/policy.hpp>

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cuda_runtime.h>

#include <cstdint>
#include <limits>
#include <span>
#include <type_traits>

namespace meap::masking {

namespace detail::cuda_kernels {

inline constexpr int threads = 256;
inline constexpr int max_grid_y = 65535;

// status layout, (B + 2) words: [0, B) eligible positions per row, [B] positions eligible in
// every row (per_batch), [B + 1] the smallest row-major index b * (T + 1) + t where tokens holds
// mask_id (no_collision when none).
inline constexpr unsigned long long no_collision = ~0ull;

// tokens: (B, T + 1); segment_ids: (B, T + 1), (B, T) or rank 0 (none);
// eligible: (B, T) contiguous; labels: (B, T); status: (B + 2).
// Grid: (ceil((T + 1) / threads), min(B, max_grid_y)); rows stride by gridDim.y.
template <int Threads>
__global__ void eligibility_kernel(tensor_view<const std::int32_t, cuda> tokens,
                                   tensor_view<const std::int32_t, cuda> segment_ids, exclusion_rule rule,
                                   std::int32_t mask_id, bool check_mask_id, std::uint8_t* eligible,
                                   tensor_view<std::int32_t, cuda> labels, unsigned long long* status) {
  using block_reduce = cub::BlockReduce<int, Threads>;
  __shared__ typename block_reduce::TempStorage reduce_storage;
  const index_t rows = tokens.size(0);
  const std::int32_t length = rule.length;
  const std::int32_t t = static_cast<std::int32_t>(blockIdx.x) * Threads + static_cast<std::int32_t>(threadIdx.x);
  const bool segmented = segment_ids.rank() != 0;
  for (index_t b = blockIdx.y; b < rows; b += gridDim.y) {
    int flag = 0;
    if (t <= length) {
      const std::int32_t token = tokens(b, t);
      if (check_mask_id && token == mask_id)
        atomicMin(status + rows + 1, static_cast<unsigned long long>(b * (length + 1) + t));
      if (t < length) {
        const std::int32_t next = tokens(b, t + 1);
        const bool segment_ends = segmented && t + 1 < segment_ids.size(1) && segment_ids(b, t) != segment_ids(b, t + 1);
        flag = rule.eligible(t, token, next, segment_ends) ? 1 : 0;
        eligible[b * length + t] = static_cast<std::uint8_t>(flag);
        labels(b, t) = (rule.pad_id >= 0 && next == rule.pad_id) ? ignore_index : next;
      }
    }
    const int count = block_reduce(reduce_storage).Sum(flag);
    if (threadIdx.x == 0 && count != 0) atomicAdd(status + b, static_cast<unsigned long long>(count));
    __syncthreads();  // reduce_storage is reused by the next row
  }
}

// eligible: (B, T); common: (T) = AND over rows; status[B] += count. Grid: ceil(T / threads).
template <int Threads>
__global__ void common_kernel(const std::uint8_t* eligible, index_t rows, std::int32_t length, std::uint8_t* common,
                              unsigned long long* status) {
  using block_reduce = cub::BlockReduce<int, Threads>;
  __shared__ typename block_reduce::TempStorage reduce_storage;
  const std::int32_t t = static_cast<std::int32_t>(blockIdx.x) * Threads + static_cast<std::int32_t>(threadIdx.x);
  int flag = 0;
  if (t < length) {
    flag = 1;
    for (index_t b = 0; b < rows && flag != 0; ++b) flag = eligible[b * length + t];
    common[t] = static_cast<std::uint8_t>(flag);
  }
  const int count = block_reduce(reduce_storage).Sum(flag);
  if (threadIdx.x == 0 && count != 0) atomicAdd(status + rows, static_cast<unsigned long long>(count));
}

// flags: (R, T); positions: (R, T), the first count(r) entries of row r written in increasing
// order. One block per row.
template <int Threads>
__global__ void compact_kernel(const std::uint8_t* flags, std::int32_t length, std::int32_t* positions) {
  using block_scan = cub::BlockScan<int, Threads>;
  __shared__ typename block_scan::TempStorage scan_storage;
  const index_t r = blockIdx.x;
  const std::uint8_t* row = flags + r * length;
  std::int32_t* out = positions + r * length;
  std::int32_t base = 0;
  for (std::int32_t chunk = 0; chunk < length; chunk += Threads) {
    const std::int32_t t = chunk + static_cast<std::int32_t>(threadIdx.x);
    const int flag = t < length ? row[t] : 0;
    int offset = 0;
    int total = 0;
    block_scan(scan_storage).ExclusiveSum(flag, offset, total);
    if (flag != 0) out[base + offset] = t;
    base += total;
    __syncthreads();  // scan_storage is reused by the next chunk
  }
}

// flags, positions, mask: (R, T); status as above. One thread per drawn row: row r of a per_row
// draw is batch row r; a per_batch draw is the single row 0 with the common flags.
template <class Policy>
__global__ void draw_kernel(Policy policy, const std::uint8_t* flags, std::int32_t* positions, std::uint8_t* mask,
                            const unsigned long long* status, index_t draws, index_t rows, std::int32_t length,
                            std::uint64_t seed, std::uint64_t step, std::uint32_t micro_batch, bool shared) {
  const index_t r = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x;
  if (r >= draws) return;
  const auto count = static_cast<std::int32_t>(status[shared ? rows : r]);
  philox_stream random(seed, step, shared ? shared_substream(micro_batch) : row_substream(micro_batch, rows, r));
  policy.mask_row(row_candidates{positions + r * length, count, flags + r * length, mask + r * length, length}, random);
}

// tokens: (B, T + 1); eligible: (B, T); drawn: (R, T); out: (B, T) each.
// Grid: (ceil(T / threads), min(B, max_grid_y)).
template <int Threads>
__global__ void write_kernel(tensor_view<const std::int32_t, cuda> tokens, const std::uint8_t* eligible,
                             const std::uint8_t* drawn, bool shared, std::int32_t length, std::int32_t mask_id,
                             tensor_view<std::int32_t, cuda> input_ids, tensor_view<std::uint8_t, cuda> mask) {
  const std::int32_t t = static_cast<std::int32_t>(blockIdx.x) * Threads + static_cast<std::int32_t>(threadIdx.x);
  if (t >= length) return;
  for (index_t b = blockIdx.y; b < tokens.size(0); b += gridDim.y) {
    const std::uint8_t m = (drawn[(shared ? 0 : b) * length + t] != 0 && eligible[b * length + t] != 0) ? 1 : 0;
    mask(b, t) = m;
    input_ids(b, t) = m != 0 ? mask_id : tokens(b, t);
  }
}

inline unsigned int blocks_for(index_t count) { return static_cast<unsigned int>((count + threads - 1) / threads); }

}  // namespace detail::cuda_kernels

template <>
struct backend<cuda> {
  template <class Policy>
  static void run(const cuda& device, const Policy& policy, const tensor_view<const std::int32_t, cuda>& tokens,
                  const pretraining_options& options, const tensor_view<const std::int32_t, cuda>& segment_ids,
                  const masked_batch_view<cuda>& out) {
    static_assert(std::is_trivially_copyable_v<Policy>, "meap::masking::apply: a policy is passed by value to kernels");
    namespace k = detail::cuda_kernels;
    const index_t rows = tokens.size(0);
    const auto length = static_cast<std::int32_t>(tokens.size(1) - 1);
    if (rows == 0) return;
    const bool shared = static_cast<masking::sharing>(policy.sharing) == masking::sharing::per_batch;
    const index_t draws = shared ? 1 : rows;

    const auto specials = to_device(
        device, make_view(std::span<const std::int32_t>(options.special_ids), {static_cast<index_t>(options.special_ids.size())}));
    const detail::exclusion_rule rule{options.pad_id, specials.data(), static_cast<std::int32_t>(options.special_ids.size()),
                                      length, options.mask_last_position};
    tensor<std::uint8_t, cuda> eligible(device, {rows, length});
    auto status = zeros<std::uint64_t>(device, {rows + 2});
    fill(device, status.view().slice(0, rows + 1, rows + 2), k::no_collision);
    auto* status_words = reinterpret_cast<unsigned long long*>(status.data());
    static_assert(sizeof(unsigned long long) == sizeof(std::uint64_t));

    const dim3 position_grid(k::blocks_for(length + 1),
                             static_cast<unsigned int>(rows < k::max_grid_y ? rows : k::max_grid_y));
    k::eligibility_kernel<k::threads><<<position_grid, k::threads, 0, device.stream>>>(
        tokens, segment_ids, rule, options.mask_id, options.mask_id_must_be_unused, eligible.data(), out.labels,
        status_words);
    MEAP_CUDA_CHECK(cudaGetLastError());
    tensor<std::uint8_t, cuda> common;
    if (shared) {
      common = tensor<std::uint8_t, cuda>(device, {1, length});
      k::common_kernel<k::threads><<<k::blocks_for(length), k::threads, 0, device.stream>>>(eligible.data(), rows, length,
                                                                                  common.data(), status_words);
      MEAP_CUDA_CHECK(cudaGetLastError());
    }

    // The data-dependent checks, in the CPU's order; to_host synchronizes the stream.
    const auto counts = to_host(device, status.view());
    const auto host_counts = counts.view();
    if (host_counts(rows + 1) != k::no_collision) {
      const auto where = static_cast<index_t>(host_counts(rows + 1));
      detail::throw_mask_id_in_tokens(options.mask_id, where / (length + 1), where % (length + 1));
    }
    for (index_t b = 0; b < rows; ++b)
      if (host_counts(b) == 0) detail::throw_row_without_eligible(b);
    if (shared && host_counts(rows) == 0) detail::throw_no_common_position(rows);

    const std::uint8_t* flags = shared ? common.data() : eligible.data();
    tensor<std::int32_t, cuda> positions(device, {draws, length});
    auto drawn = zeros<std::uint8_t>(device, {draws, length});
    k::compact_kernel<k::threads><<<static_cast<unsigned int>(draws), k::threads, 0, device.stream>>>(flags, length,
                                                                                         positions.data());
    MEAP_CUDA_CHECK(cudaGetLastError());
    constexpr int draw_threads = 64;  // one row per thread; rows are few, keep several blocks busy
    k::draw_kernel<Policy><<<static_cast<unsigned int>((draws + draw_threads - 1) / draw_threads), draw_threads, 0,
                             device.stream>>>(policy, flags, positions.data(), drawn.data(), status_words, draws, rows,
                                              length, options.seed, options.step, options.micro_batch, shared);
    MEAP_CUDA_CHECK(cudaGetLastError());
    const dim3 write_grid(k::blocks_for(length), static_cast<unsigned int>(rows < k::max_grid_y ? rows : k::max_grid_y));
    k::write_kernel<k::threads><<<write_grid, k::threads, 0, device.stream>>>(tokens, eligible.data(), drawn.data(), shared,
                                                                   length, options.mask_id, out.input_ids, out.mask);
    MEAP_CUDA_CHECK(cudaGetLastError());
    // The scratch tensors are freed stream-ordered (cudaFreeAsync), after the kernels that use them.
  }
};

}  // namespace meap::masking
