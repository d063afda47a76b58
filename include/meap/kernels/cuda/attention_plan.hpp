// meap/kernels/cuda/attention_plan.hpp: the launch plan of the CUDA attention kernels, in plain
// C++ (no CUDA header, no nvcc needed), so that the host tests check the same numbers the kernels
// are built from: tile sizes per head dim, warps, shared-memory layouts and bytes, grid shapes,
// which (query block, key block) pairs the causal and segment skipping visit, the GQA head map,
// and the register layouts of the mma.sync / ldmatrix instructions the tensor-core kernels use.
//
// Part of <meap/kernels/cuda/attention.hpp>; host code may include it alone (tests do).
#pragma once

#include <meap/core/config.hpp>

#include <cstddef>
#include <cstdint>
#include <limits>

namespace meap::detail::cuda_attention {

// ---------------------------------------------------------------------------------------------
// Head dimensions. Kernels are compiled for three padded head dims; a head dim D runs on the
// smallest bucket >= D with the columns D..bucket-1 zero-filled in shared memory (zeros change no
// dot product) and never written back. 64 and 128 are the specialized sizes (no padding);
// everything else up to 256 is the generic path.
// ---------------------------------------------------------------------------------------------
inline constexpr int max_head_dim = 256;

MEAP_HOST_DEVICE constexpr int head_dim_bucket(long long head_dim) {
  return head_dim <= 64 ? 64 : head_dim <= 128 ? 128 : 256;
}

// The smallest opt-in shared memory per block of any sm_80+ GPU (sm_86, sm_89 and sm_120 have
// 99 KiB; sm_80 163 KiB, sm_90 227 KiB). Every configuration below fits in it, so one set of
// tiles serves every supported GPU and no configuration is chosen at run time.
inline constexpr std::size_t portable_smem_limit = 101376;

// Rows of 16-bit tiles in shared memory are padded by 8 elements (16 bytes): rows of 2 * bucket
// bytes are multiples of 128 bytes, so without padding the 8 row addresses of one ldmatrix phase
// would all fall into the same 4 banks (8-way conflict); with it they hit 8 distinct 16-byte slots.
inline constexpr int tc_row_pad = 8;
MEAP_HOST_DEVICE constexpr int tc_stride(int head_dim) { return head_dim + tc_row_pad; }

// fp32 (SIMT) tiles are padded by one float: threads that read one column of several rows then
// hit distinct banks.
MEAP_HOST_DEVICE constexpr int simt_stride(int head_dim) { return head_dim + 1; }

// Segment ids are summarized per chunk of 16 positions as (min, max); a block's range is the union
// of its chunks' ranges. Every block size below is a multiple of the chunk.
inline constexpr int segment_chunk = 16;

// ---------------------------------------------------------------------------------------------
// Tensor-core tiles (half, bfloat16; sm_80+ mma.sync.m16n8k16 with fp32 accumulation).
// Every warp owns 16 rows of the block (one m16 tile): queries in the forward and dQ kernels,
// keys in the dK/dV kernel. `stages` = 2 double-buffers the streamed tiles (cp.async prefetch of
// the next block while the current one is computed); 1 loads, waits and computes.
// ---------------------------------------------------------------------------------------------
struct tc_forward_tiles {
  int head_dim;        // padded head dim (bucket)
  int block_m;         // query rows per CTA (= 16 * warps)
  int block_n;         // keys per iteration
  int warps;
  int stages;          // buffers of (K, V) tiles
  bool q_in_registers; // Q's A fragments stay in registers; its shared tile is then reused as stage 1

  MEAP_HOST_DEVICE constexpr int threads() const { return warps * 32; }
  MEAP_HOST_DEVICE constexpr int stride() const { return tc_stride(head_dim); }
  // Element offsets of the tiles in shared memory.
  MEAP_HOST_DEVICE constexpr int q_offset() const { return 0; }
  MEAP_HOST_DEVICE constexpr int kv_stage_elements() const { return 2 * block_n * stride(); }
  MEAP_HOST_DEVICE constexpr int k_offset(int stage) const {
    // With Q in registers, stage 1 lives where Q was (Q's tile is dead once its fragments are loaded).
    return (q_in_registers && stage == 1) ? 0 : block_m * stride() + (q_in_registers ? 0 : stage) * kv_stage_elements();
  }
  MEAP_HOST_DEVICE constexpr int v_offset(int stage) const { return k_offset(stage) + block_n * stride(); }
  MEAP_HOST_DEVICE constexpr std::size_t smem_bytes(int element_bytes) const {
    const int stage_count = q_in_registers ? 1 : stages;  // stage 1 aliases Q's tile
    return static_cast<std::size_t>(block_m * stride() + stage_count * kv_stage_elements()) *
           static_cast<std::size_t>(element_bytes);
  }
};

MEAP_HOST_DEVICE constexpr tc_forward_tiles tc_forward_config(int bucket) {
  // 8 warps x 16 query rows, 64 keys per step. Q's fragments (D/16 x 4 registers) stay in registers
  // for D <= 128; for D = 256 (O alone takes 128 accumulator registers) they are re-read from
  // shared memory, and 32-key steps keep the tiles inside 99 KiB.
  if (bucket == 64) return {64, 128, 64, 8, 2, true};
  if (bucket == 128) return {128, 128, 64, 8, 2, true};
  return {256, 64, 32, 4, 1, false};
}

// dK, dV: one CTA per (batch, kv head, key block, column split). It loops over the query heads of
// its kv head's group and over the query blocks at or after its key block, accumulating dK and dV
// in registers, so GQA needs no atomics and no scratch, and the result is deterministic.
struct tc_dkdv_tiles {
  int head_dim;   // padded head dim (bucket)
  int block_n;    // keys per CTA (= 16 * warps)
  int block_m;    // queries per iteration
  int warps;
  int stages;     // buffers of (Q, dO, lse, delta)
  int d_split;    // the dK / dV columns are split over this many CTAs (register budget for D = 256)

  MEAP_HOST_DEVICE constexpr int threads() const { return warps * 32; }
  MEAP_HOST_DEVICE constexpr int stride() const { return tc_stride(head_dim); }
  MEAP_HOST_DEVICE constexpr int d_out() const { return head_dim / d_split; }  // columns per CTA
  MEAP_HOST_DEVICE constexpr int k_offset() const { return 0; }
  MEAP_HOST_DEVICE constexpr int v_offset() const { return block_n * stride(); }
  MEAP_HOST_DEVICE constexpr int q_offset(int stage) const { return 2 * block_n * stride() + stage * 2 * block_m * stride(); }
  MEAP_HOST_DEVICE constexpr int do_offset(int stage) const { return q_offset(stage) + block_m * stride(); }
  // lse and delta (float) follow the 16-bit tiles: byte offset of stage s.
  MEAP_HOST_DEVICE constexpr std::size_t tiles_bytes(int element_bytes) const {
    return static_cast<std::size_t>(2 * block_n * stride() + stages * 2 * block_m * stride()) *
           static_cast<std::size_t>(element_bytes);
  }
  MEAP_HOST_DEVICE constexpr std::size_t lse_byte_offset(int stage, int element_bytes) const {
    return tiles_bytes(element_bytes) + static_cast<std::size_t>(stage * 2 * block_m) * sizeof(float);
  }
  MEAP_HOST_DEVICE constexpr std::size_t delta_byte_offset(int stage, int element_bytes) const {
    return lse_byte_offset(stage, element_bytes) + static_cast<std::size_t>(block_m) * sizeof(float);
  }
  MEAP_HOST_DEVICE constexpr std::size_t smem_bytes(int element_bytes) const {
    return tiles_bytes(element_bytes) + static_cast<std::size_t>(stages * 2 * block_m) * sizeof(float);
  }
};

MEAP_HOST_DEVICE constexpr tc_dkdv_tiles tc_dkdv_config(int bucket) {
  // Per thread: dK and dV accumulators (16 x d_out each: d_out / 2 registers apiece) plus S^T and
  // dP^T (16 x block_m: block_m / 2 registers apiece).
  if (bucket == 64) return {64, 128, 64, 8, 2, 1};   // 32 + 32 + 32 + 32 accumulator registers
  if (bucket == 128) return {128, 64, 32, 4, 2, 1};  // 64 + 64 + 16 + 16
  return {256, 64, 16, 4, 1, 2};                     // 64 + 64 + 8 + 8, two column halves
}

// dQ: one CTA per (batch, query head, query block, column split), looping over the key blocks at
// or before its query block; dQ accumulates in registers (no atomics, deterministic).
struct tc_dq_tiles {
  int head_dim;
  int block_m;   // query rows per CTA (= 16 * warps)
  int block_n;   // keys per iteration
  int warps;
  int stages;    // buffers of (K, V)
  int d_split;

  MEAP_HOST_DEVICE constexpr int threads() const { return warps * 32; }
  MEAP_HOST_DEVICE constexpr int stride() const { return tc_stride(head_dim); }
  MEAP_HOST_DEVICE constexpr int d_out() const { return head_dim / d_split; }
  MEAP_HOST_DEVICE constexpr int q_offset() const { return 0; }
  MEAP_HOST_DEVICE constexpr int do_offset() const { return block_m * stride(); }
  MEAP_HOST_DEVICE constexpr int k_offset(int stage) const { return 2 * block_m * stride() + stage * 2 * block_n * stride(); }
  MEAP_HOST_DEVICE constexpr int v_offset(int stage) const { return k_offset(stage) + block_n * stride(); }
  MEAP_HOST_DEVICE constexpr std::size_t smem_bytes(int element_bytes) const {
    return static_cast<std::size_t>(2 * block_m * stride() + stages * 2 * block_n * stride()) *
           static_cast<std::size_t>(element_bytes);
  }
};

MEAP_HOST_DEVICE constexpr tc_dq_tiles tc_dq_config(int bucket) {
  // Per thread: dQ (d_out / 2), S and dP (block_n / 2 each) accumulator registers.
  if (bucket == 64) return {64, 128, 64, 8, 2, 1};   // 32 + 32 + 32
  if (bucket == 128) return {128, 64, 32, 4, 2, 1};  // 64 + 16 + 16
  return {256, 32, 32, 2, 1, 2};                     // 64 + 16 + 16, two column halves
}

// ---------------------------------------------------------------------------------------------
// SIMT tiles (float FMA): float32 inputs, head dims that are not a multiple of 8 or views that are
// not 16-byte aligned (any element type), and the probe. Inputs are widened to float in shared
// memory. A CTA owns `rows` rows (queries, or keys in the dK/dV kernel) and steps over `cols`
// columns at a time; 4 threads share a row: thread (r, c4) computes the scores of columns
// c4, c4 + 4, ... and owns the output columns d = c4, c4 + 4, ... of its row.
// ---------------------------------------------------------------------------------------------
struct simt_tiles {
  int head_dim;  // padded head dim (bucket); loops run to the true D
  int rows;
  int cols;
  int d_split;   // dK / dV column split (the dK/dV kernel only)

  MEAP_HOST_DEVICE constexpr int threads() const { return rows * 4; }
  MEAP_HOST_DEVICE constexpr int stride() const { return simt_stride(head_dim); }
  MEAP_HOST_DEVICE constexpr int scores_per_thread() const { return cols / 4; }
  MEAP_HOST_DEVICE constexpr int d_out() const { return head_dim / d_split; }
  MEAP_HOST_DEVICE constexpr int outputs_per_thread() const { return d_out() / 4; }
  // Row kernels (forward, lse, dQ, probabilities): row tiles A, B [rows][stride] (Q, dO),
  // column tiles C, D [cols][stride] (K, V), one [rows][cols + 1] score tile.
  MEAP_HOST_DEVICE constexpr std::size_t row_kernel_smem_bytes() const {
    return (static_cast<std::size_t>(2 * rows * stride() + 2 * cols * stride() + rows * (cols + 1))) * sizeof(float);
  }
  // The dK/dV kernel (rows = keys): K, V [rows][stride], Q, dO [cols][stride], P^T and dS^T
  // [rows][cols + 1], lse and delta [cols].
  MEAP_HOST_DEVICE constexpr std::size_t col_kernel_smem_bytes() const {
    return (static_cast<std::size_t>(2 * rows * stride() + 2 * cols * stride() + 2 * rows * (cols + 1) + 2 * cols)) *
           sizeof(float);
  }
};

MEAP_HOST_DEVICE constexpr simt_tiles simt_config(int bucket) {
  if (bucket == 64) return {64, 32, 32, 1};
  if (bucket == 128) return {128, 32, 32, 1};
  return {256, 16, 16, 2};
}

// ---------------------------------------------------------------------------------------------
// Which path runs. half / bfloat16 take the tensor cores when every row of every view starts on a
// 16-byte boundary (cp.async moves 16-byte chunks): D % 8 == 0 and 16-byte aligned base pointers.
// Everything else (float, odd head dims, offset views) runs the SIMT kernels.
// ---------------------------------------------------------------------------------------------
enum class path : std::uint8_t { tensor_core, simt };

constexpr path choose_path(bool sixteen_bit, long long head_dim, bool pointers_16_byte_aligned) {
  return (sixteen_bit && head_dim % 8 == 0 && pointers_16_byte_aligned) ? path::tensor_core : path::simt;
}

// ---------------------------------------------------------------------------------------------
// Grids. Row-block kernels (forward, dQ, SIMT row kernels) run grid (B * H * d_split, row blocks);
// blockIdx.y counts from the last block so that the causal-heaviest blocks (the last queries see
// the most keys) start first and the short ones fill the tail. Key-block kernels (dK/dV, key
// mass) run grid (B * Hkv * d_split, key blocks) in natural order: the first keys are the heaviest.
// ---------------------------------------------------------------------------------------------
inline constexpr long long max_grid_x = 2147483647LL;
inline constexpr long long max_grid_y = 65535;

MEAP_HOST_DEVICE constexpr long long blocks_of(long long length, int block) { return (length + block - 1) / block; }

struct grid_shape {
  long long x = 0, y = 0;
  MEAP_HOST_DEVICE constexpr bool fits() const { return x >= 1 && x <= max_grid_x && y >= 1 && y <= max_grid_y; }
};

MEAP_HOST_DEVICE constexpr grid_shape row_grid(long long batch, long long heads, int d_split, long long length, int block) {
  return {batch * heads * d_split, blocks_of(length, block)};
}

MEAP_HOST_DEVICE constexpr grid_shape key_grid(long long batch, long long heads, int d_split, long long length, int block) {
  return {batch * heads * d_split, blocks_of(length, block)};
}

// The smallest block (rows per grid.y step) of any kernel below, and so the longest sequence
// every grid can cover.
inline constexpr int smallest_grid_block = 16;
inline constexpr long long max_sequence_length = max_grid_y * smallest_grid_block;

// blockIdx.y -> the row block it computes (heaviest first).
MEAP_HOST_DEVICE constexpr int row_block_of(int block_y, int grid_y) { return grid_y - 1 - block_y; }

// blockIdx.x of a (batch, head, split) grid -> its parts.
struct head_task {
  int batch, head, split;
};
MEAP_HOST_DEVICE constexpr head_task head_task_of(long long block_x, int heads, int d_split) {
  return {static_cast<int>(block_x / (static_cast<long long>(heads) * d_split)),
          static_cast<int>((block_x / d_split) % heads), static_cast<int>(block_x % d_split)};
}

// GQA: query head h reads kv head h / G (consecutive query heads share a kv head, as Hugging
// Face's repeat_kv does); kv head g serves query heads [g * G, (g + 1) * G).
MEAP_HOST_DEVICE constexpr int kv_head_of(int q_head, int group) { return q_head / group; }
MEAP_HOST_DEVICE constexpr int first_q_head_of(int kv_head, int group) { return kv_head * group; }

// Element offset of row t of head h in a contiguous (B, T, H, D) tensor.
MEAP_HOST_DEVICE constexpr long long bthd_offset(long long b, long long t, long long h, long long T, long long H,
                                                 long long D) {
  return ((b * T + t) * H + h) * D;
}

// ---------------------------------------------------------------------------------------------
// Causal and segment skipping. A tile pairs query rows [i0, i0 + bm) with keys [j0, j0 + bn) of a
// sequence of length T (rows and keys >= T are padding). Query i may attend key j iff j <= i and
// seg[j] == seg[i].
// ---------------------------------------------------------------------------------------------
enum class relation : std::uint8_t { skip, full, masked };

// skip: no real query attends any real key of the tile. full: every real query of the tile
// attends every key of the tile (so every key is real). masked: element-wise masking needed.
MEAP_HOST_DEVICE constexpr relation causal_relation(int i0, int bm, int j0, int bn, int length) {
  const int last_query = (i0 + bm < length ? i0 + bm : length) - 1;
  if (j0 > last_query) return relation::skip;
  if (j0 + bn - 1 <= i0) return relation::full;
  return relation::masked;
}

struct segment_range {
  std::int32_t lo = 0, hi = 0;
};

// Conservative for unsorted ids: skip only when the id ranges are disjoint (then no id is
// shared); full only when both blocks carry one and the same id.
MEAP_HOST_DEVICE constexpr relation segment_relation(segment_range queries, segment_range keys) {
  if (queries.hi < keys.lo || keys.hi < queries.lo) return relation::skip;
  if (queries.lo == queries.hi && keys.lo == keys.hi && queries.lo == keys.lo) return relation::full;
  return relation::masked;
}

MEAP_HOST_DEVICE constexpr relation combine(relation a, relation b) {
  if (a == relation::skip || b == relation::skip) return relation::skip;
  if (a == relation::full && b == relation::full) return relation::full;
  return relation::masked;
}

// The range of ids over positions [p0, min(p0 + n, T)) from the per-chunk table (p0 is a multiple
// of segment_chunk). `chunks` points at this batch row's chunk ranges.
MEAP_HOST_DEVICE constexpr segment_range block_segment_range(const segment_range* chunks, int p0, int n, int length) {
  const int last = (p0 + n < length ? p0 + n : length) - 1;
  segment_range r = chunks[p0 / segment_chunk];
  for (int c = p0 / segment_chunk + 1; c <= last / segment_chunk; ++c) {
    r.lo = chunks[c].lo < r.lo ? chunks[c].lo : r.lo;
    r.hi = chunks[c].hi > r.hi ? chunks[c].hi : r.hi;
  }
  return r;
}

// The relation of a tile, segments included (chunks == nullptr: one document per row).
MEAP_HOST_DEVICE constexpr relation tile_relation(const segment_range* chunks, int i0, int bm, int j0, int bn,
                                                  int length) {
  const relation causal = causal_relation(i0, bm, j0, bn, length);
  if (causal == relation::skip || chunks == nullptr) return causal;
  return combine(causal, segment_relation(block_segment_range(chunks, i0, bm, length),
                                          block_segment_range(chunks, j0, bn, length)));
}

// Key blocks of a query block (forward, dQ): the visited ones are those in [0, last] whose
// relation is not skip, ascending. Returns -1 past the end.
MEAP_HOST_DEVICE constexpr int last_key_block(int i0, int bm, int bn, int length) {
  const int last_query = (i0 + bm < length ? i0 + bm : length) - 1;
  return last_query / bn;
}
MEAP_HOST_DEVICE constexpr int next_key_block(const segment_range* chunks, int after, int i0, int bm, int bn, int length) {
  const int last = last_key_block(i0, bm, bn, length);
  for (int j = after + 1; j <= last; ++j)
    if (tile_relation(chunks, i0, bm, j * bn, bn, length) != relation::skip) return j;
  return -1;
}

// Query blocks of a key block (dK/dV, key mass), walked head by head over the group: step
// s = head_in_group * query_blocks + query_block. Query blocks start at the one holding key j0.
MEAP_HOST_DEVICE constexpr int first_query_block(int j0, int bm) { return j0 / bm; }
MEAP_HOST_DEVICE constexpr int next_query_step(const segment_range* chunks, int after, int group, int j0, int bn,
                                               int bm, int length) {
  const int q_blocks = static_cast<int>(blocks_of(length, bm));
  const int first = first_query_block(j0, bm);
  for (int s = after + 1; s < group * q_blocks; ++s) {
    const int qb = s % q_blocks;
    if (qb < first) {
      s += first - qb - 1;  // jump to this head's first query block
      continue;
    }
    if (tile_relation(chunks, qb * bm, bm, j0, bn, length) != relation::skip) return s;
  }
  return -1;
}

// Element mask inside a masked tile: query i attends key j (padding on either side never does).
MEAP_HOST_DEVICE constexpr bool allowed(int query, int key, int length, const std::int32_t* segments) {
  return key <= query && query < length && (segments == nullptr || segments[key] == segments[query]);
}

// ---------------------------------------------------------------------------------------------
// Register layouts of mma.sync.aligned.m16n8k16.row.col (f16 / bf16 inputs, f32 accumulators),
// PTX ISA "Matrix fragments for mma.m16n8k16". lane = 0..31; group = lane / 4, quad = lane % 4.
// Element e of a lane's fragment sits in register e / 2, half e % 2 (low half first).
// ---------------------------------------------------------------------------------------------
struct mma_m16n8k16 {
  static constexpr int m = 16, n = 8, k = 16;
  // A: 16 x 16 (row, k), 8 elements per lane.
  MEAP_HOST_DEVICE static constexpr int a_row(int lane, int e) { return lane / 4 + 8 * ((e / 2) % 2); }
  MEAP_HOST_DEVICE static constexpr int a_col(int lane, int e) { return (lane % 4) * 2 + (e % 2) + 8 * (e / 4); }
  // B: 16 x 8 (k, n), 4 elements per lane.
  MEAP_HOST_DEVICE static constexpr int b_row(int lane, int e) { return (lane % 4) * 2 + (e % 2) + 8 * (e / 2); }
  MEAP_HOST_DEVICE static constexpr int b_col(int lane, int) { return lane / 4; }
  // C / D: 16 x 8 (row, n), 4 floats per lane.
  MEAP_HOST_DEVICE static constexpr int c_row(int lane, int e) { return lane / 4 + 8 * (e / 2); }
  MEAP_HOST_DEVICE static constexpr int c_col(int lane, int e) { return (lane % 4) * 2 + (e % 2); }
};

// ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16: lanes 8i .. 8i + 7 give the row addresses of
// 8 x 8 matrix i, and register i of lane t receives matrix i's elements (t / 4, 2 (t % 4) + {0, 1})
// (with .trans: (2 (t % 4) + {0, 1}, t / 4)). These give each lane's (row, column) address inside
// a 16 x 16 tile for the three uses in the kernels:
struct ldmatrix_x4 {
  // A operand of a row-major [m][k] tile: matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7),
  // (rows 0-7, k 8-15), (rows 8-15, k 8-15) are registers a0..a3.
  MEAP_HOST_DEVICE static constexpr int a_row(int lane) { return lane % 8 + 8 * ((lane / 8) % 2); }
  MEAP_HOST_DEVICE static constexpr int a_col(int lane) { return 8 * (lane / 16); }
  // B operands of two n8 tiles from an [n][k] tile (K in S = Q K^T), no .trans: matrices
  // (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15) are (b0, b1) of n tile 0,
  // then (b0, b1) of n tile 1.
  MEAP_HOST_DEVICE static constexpr int bn_row(int lane) { return lane % 8 + 8 * (lane / 16); }  // n
  MEAP_HOST_DEVICE static constexpr int bn_col(int lane) { return 8 * ((lane / 8) % 2); }        // k
  // B operands of two n8 tiles from a [k][n] tile (V in O = P V), with .trans: matrices
  // (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15).
  MEAP_HOST_DEVICE static constexpr int bt_row(int lane) { return lane % 8 + 8 * ((lane / 8) % 2); }  // k
  MEAP_HOST_DEVICE static constexpr int bt_col(int lane) { return 8 * (lane / 16); }                 // n
};

// The accumulators of two adjacent n8 tiles (columns 16 kk .. 16 kk + 15 of a score block) are,
// element for element, the A operand of the next product over those 16 columns (FlashAttention-2's
// register reuse: P never goes through shared memory). A register r of that operand packs the
// accumulator elements (tile 2 kk + r / 2, elements 2 (r % 2) and 2 (r % 2) + 1).
MEAP_HOST_DEVICE constexpr int repack_tile(int kk, int reg) { return 2 * kk + reg / 2; }
MEAP_HOST_DEVICE constexpr int repack_element(int reg, int half) { return 2 * (reg % 2) + half; }

// cp.async tile loads: chunk c (16 bytes = 8 elements) of a [rows][head_dim] tile is row
// c / (head_dim / 8), columns 8 (c % (head_dim / 8)) .. + 7; thread t moves chunks t, t + threads, ...
MEAP_HOST_DEVICE constexpr int chunk_row(int c, int head_dim) { return c / (head_dim / 8); }
MEAP_HOST_DEVICE constexpr int chunk_col(int c, int head_dim) { return 8 * (c % (head_dim / 8)); }

// ---------------------------------------------------------------------------------------------
// FLOPs as FlashAttention counts them (used by the benchmark): the forward does two GEMMs over the
// causal half, 4 B T^2 H D / 2; the backward is 2.5x the forward.
// ---------------------------------------------------------------------------------------------
constexpr double causal_forward_flops(double batch, double length, double heads, double head_dim) {
  return 4.0 * batch * length * length * heads * head_dim / 2.0;
}
constexpr double causal_backward_flops(double batch, double length, double heads, double head_dim) {
  return 2.5 * causal_forward_flops(batch, length, heads, head_dim);
}

}  // namespace meap::detail::cuda_attention
