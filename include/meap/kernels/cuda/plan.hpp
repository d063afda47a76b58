// meap/kernels/cuda/plan.hpp: the index and size arithmetic of the CUDA kernels, in plain C++ so
// that it is tested on a machine without a GPU (tests/kernels/cuda_plan_test.cpp): launch grids,
// the row-major -> column-major mapping of a cuBLASLt GEMM, the row-block x vocabulary-chunk
// tiling of the fused cross-entropy, the chunking of the deterministic gradient-norm reduction
// and the row chunks of the RMSNorm weight gradient. No CUDA header is needed; the CUDA kernels in
// kernels/cuda/ and optim/cuda/ include it. MEAP_HOST_DEVICE functions run on both sides.
#pragma once

#include <meap/core/config.hpp>
#include <meap/core/dims.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace meap::detail::cuda_plan {

// Blocks are capped where a kernel strides (grid-stride loops): enough to fill any current GPU
// (132 SMs x 16 resident blocks) many times over, and far below the 2^31 - 1 limit of gridDim.x.
inline constexpr index_t max_grid_blocks = index_t{1} << 16;

// Blocks of `per_block` items that cover `count` items, at least 1 and at most `cap`.
constexpr unsigned int grid_size(index_t count, index_t per_block, index_t cap = max_grid_blocks) {
  const index_t wanted = count <= 0 ? 1 : (count + per_block - 1) / per_block;
  return static_cast<unsigned int>(std::clamp<index_t>(wanted, 1, cap));
}

// ---------------------------------------------------------------------------------------------
// Row kernels (RMSNorm, the cross-entropy row statistics): one block per row. Threads: a power of
// two in [64, 1024] giving each thread about 8 elements, so a row of d = 2048 gets 256 threads and
// d = 8192 gets 1024; the reductions are CUB block reductions instantiated for those sizes.
constexpr int row_threads(index_t columns) {
  int threads = 64;
  while (threads < 1024 && static_cast<index_t>(threads) * 8 < columns) threads *= 2;
  return threads;
}

// RMSNorm backward sums dw over fixed chunks of rows (one partial per chunk and column), then
// over the chunks in order: the result depends on the shape only, never on the launch.
inline constexpr index_t rmsnorm_chunk_rows = 64;
constexpr index_t rmsnorm_row_chunks(index_t rows) { return (rows + rmsnorm_chunk_rows - 1) / rmsnorm_chunk_rows; }

// ---------------------------------------------------------------------------------------------
// cuBLASLt is column-major; meap's matrices are row-major. A row-major X (r, c) with row stride
// ld is the column-major X^T (c, r) with leading dimension ld, so the row-major product
//   C (m, n) = op(A) (m, k) op(B) (k, n)
// is the column-major product C^T (n, m) = op(B)^T (n, k) op(A)^T (k, m): cuBLASLt's "A" is
// meap's B and its "B" is meap's A, with the same transpose flags, and m and n swap.
struct column_major_operand {
  bool transposed;     // CUBLAS_OP_T
  std::uint64_t rows;  // of the matrix as stored, column-major
  std::uint64_t columns;
  std::int64_t ld;
};

struct column_major_gemm {
  std::uint64_t m, n, k;  // cuBLASLt's: D (m, n) = op(A) (m, k) op(B) (k, n)
  column_major_operand a, b, c;
};

// The cuBLASLt call for row-major C (m, n) = op(A) op(B) with A stored (m, k) or, transposed,
// (k, m), and B stored (k, n) or (n, k); ld* are row strides.
constexpr column_major_gemm to_column_major(bool trans_a, bool trans_b, index_t m, index_t n, index_t k, index_t lda,
                                            index_t ldb, index_t ldc) {
  const auto u = [](index_t x) { return static_cast<std::uint64_t>(x); };
  column_major_gemm g{};
  g.m = u(n);
  g.n = u(m);
  g.k = u(k);
  // cuBLASLt's A is meap's B: stored row-major (k, n) = column-major (n, k), or (n, k) -> (k, n).
  g.a = {trans_b, trans_b ? u(k) : u(n), trans_b ? u(n) : u(k), static_cast<std::int64_t>(ldb)};
  // cuBLASLt's B is meap's A: row-major (m, k) = column-major (k, m), or (k, m) -> (m, k).
  g.b = {trans_a, trans_a ? u(m) : u(k), trans_a ? u(k) : u(m), static_cast<std::int64_t>(lda)};
  g.c = {false, u(n), u(m), static_cast<std::int64_t>(ldc)};
  return g;
}

// The largest power of two (at most 256) that divides a byte address: what cuBLASLt's
// MIN_ALIGNMENT preferences are told, so the heuristic only offers kernels the pointers allow.
constexpr std::uint32_t pointer_alignment(std::uintptr_t address) {
  std::uint32_t alignment = 256;
  while (alignment > 1 && address % alignment != 0) alignment /= 2;
  return alignment;
}

// ---------------------------------------------------------------------------------------------
// Fused cross-entropy tiling. The selected rows are processed in row blocks; per block the
// vocabulary in chunks. Per (block, chunk) the logits Z (rows x chunk, float) exist, plus (for the
// gradients of 16-bit types) the gradient G (rows x chunk, T): `bytes_per_logit` is 4 or 4 +
// sizeof(T). Never the N x V logits: rows x chunk x bytes_per_logit <= budget whenever the
// minimums (one row, one chunk granule) allow it.
//
// Preference order:
//  1. one chunk (chunk = V) and all rows, when they fit;
//  2. one chunk and row blocks of at least min_rows: the block's logits are computed once and
//     reused by the gradient, so the three GEMMs per block are the least work possible;
//  3. vocabulary chunks (a multiple of the granule) with up to max_rows rows per block and an
//     online log-sum-exp over the chunks; the gradient pass then recomputes each chunk's logits
//     (a fourth GEMM), the price of a large vocabulary in a small budget.
// Row blocks are balanced (every block but the last has ceil(selected / blocks) rows), so the
// last block is never a sliver.
struct cross_entropy_tiling {
  index_t row_block = 0;     // rows per block (the last may have fewer)
  index_t vocab_chunk = 0;   // vocabulary entries per chunk (the last may have fewer)
  index_t row_blocks = 0;
  index_t vocab_chunks = 0;
  bool recompute() const { return vocab_chunks > 1; }
};

inline constexpr index_t cross_entropy_chunk_granule = 256;  // keeps chunk offsets and ld 16-byte aligned
inline constexpr index_t cross_entropy_min_rows = 128;       // below this a GEMM is mostly overhead
inline constexpr index_t cross_entropy_max_rows = 2048;      // rows per block when chunking the vocabulary
inline constexpr std::size_t cross_entropy_default_budget = std::size_t{256} << 20;

constexpr cross_entropy_tiling plan_cross_entropy(index_t selected, index_t vocab, std::size_t budget_bytes,
                                                  std::size_t bytes_per_logit) {
  cross_entropy_tiling t{};
  if (selected <= 0 || vocab <= 0) return t;
  const auto per_logit = static_cast<index_t>(bytes_per_logit < 1 ? 1 : bytes_per_logit);
  const auto budget = static_cast<index_t>(budget_bytes > static_cast<std::size_t>(INT64_MAX / 2)
                                               ? static_cast<std::size_t>(INT64_MAX / 2)
                                               : budget_bytes);
  const index_t logits_per_row = vocab * per_logit;  // bytes of one full row
  const index_t rows_fit = budget / logits_per_row;
  index_t rows = 0;
  index_t chunk = 0;
  if (rows_fit >= selected) {
    rows = selected;
    chunk = vocab;
  } else if (rows_fit >= cross_entropy_min_rows) {
    rows = rows_fit;
    chunk = vocab;
  } else {
    rows = std::min(selected, cross_entropy_max_rows);
    chunk = budget / (rows * per_logit) / cross_entropy_chunk_granule * cross_entropy_chunk_granule;
    if (chunk < cross_entropy_chunk_granule) {
      // Tiny budgets (tests force the chunked path this way): one granule, fewer rows.
      chunk = cross_entropy_chunk_granule;
      rows = std::clamp<index_t>(budget / (chunk * per_logit), 1, rows);
    }
    chunk = std::min(chunk, vocab);
  }
  t.row_blocks = (selected + rows - 1) / rows;
  t.row_block = (selected + t.row_blocks - 1) / t.row_blocks;  // balanced
  t.vocab_chunk = chunk;
  t.vocab_chunks = (vocab + chunk - 1) / chunk;
  return t;
}

// ---------------------------------------------------------------------------------------------
// Deterministic global norm over a list of tensors: every tensor is cut into chunks of norm_chunk
// elements (the last chunk of a tensor may be shorter; an empty tensor has none); each chunk's
// sum of squares is one partial (a block reduction in a fixed tree), and the partials are summed
// in chunk order by one block. The result depends on the tensor sizes only, not on the grid.
inline constexpr index_t norm_chunk = index_t{1} << 14;

constexpr index_t norm_chunks(index_t numel) { return (numel + norm_chunk - 1) / norm_chunk; }

// first_chunk: (count) increasing, first_chunk[0] = 0; chunk c belongs to the last tensor whose
// first chunk is <= c (empty tensors share their first chunk with the next one, and lose).
MEAP_HOST_DEVICE constexpr int owner_of_chunk(const index_t* first_chunk, int count, index_t chunk) {
  int lo = 0;
  int hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (first_chunk[mid] <= chunk) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

}  // namespace meap::detail::cuda_plan
