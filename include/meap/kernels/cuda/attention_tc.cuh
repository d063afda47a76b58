// meap/kernels/cuda/attention_tc.cuh: the tensor-core (half / bfloat16, sm_80+) attention kernels,
// FlashAttention-2 style: forward, dQ, and dK/dV. Tiles, layouts and block visiting come from
// attention_plan.hpp; the instructions from attention_mma.cuh. Internal to
// <meap/kernels/cuda/attention.hpp>; nvcc only.
//
// Every warp owns 16 rows of its CTA's block (queries, or keys in the dK/dV kernel) and computes
// its score tile with mma.sync m16n8k16 (fp32 accumulators). Scores never leave registers: the
// accumulators of S (or P, dS) are re-packed as the A operand of the following product
// (repack_* in the plan). Shared tiles are filled by cp.async (zero-fill for rows past T and
// columns past D) and read by ldmatrix; `stages` = 2 prefetches the next streamed tile while the
// current one is computed.
//
// Shapes (contiguous): q, out, d_out, d_q: (B, T, Hq, D); k, v, d_k, d_v: (B, T, Hkv, D);
// lse, delta: (B, Hq, T) float; segment ids (B, T) int32; segment chunks (B, ceil(T / 16)).
#pragma once
#if !defined(__CUDACC__)
#error "meap/kernels/cuda/*.cuh must be compiled by nvcc: include <meap/cuda.hpp> from a .cu file"
#endif

#include <meap/kernels/cuda/attention_mma.cuh>
#include <meap/kernels/cuda/attention_plan.hpp>

#include <cmath>
#include <cstdint>

namespace meap::detail::cuda_attention {

inline constexpr float log2_e = 1.4426950408889634f;
inline constexpr float ln_2 = 0.6931471805599453f;

// Everything a kernel needs; one struct for all of them, passed by value. Unused members are null.
struct attention_params {
  const void* q = nullptr;                        // (B, T, Hq, D)
  const void* k = nullptr;                        // (B, T, Hkv, D)
  const void* v = nullptr;                        // (B, T, Hkv, D)
  const void* out = nullptr;                      // (B, T, Hq, D): forward output, read by delta
  const void* d_out = nullptr;                    // (B, T, Hq, D)
  const float* lse = nullptr;                     // (B, Hq, T): forward's log-sum-exp (backward, probe)
  const float* delta = nullptr;                   // (B, Hq, T): rowsum(dO o O) (backward)
  const std::int32_t* segments = nullptr;         // (B, T) or null
  const segment_range* segment_chunks = nullptr;  // (B, chunks) or null
  void* out_write = nullptr;                      // forward output
  float* lse_write = nullptr;                     // forward / lse-only output
  float* delta_write = nullptr;                   // delta kernel output
  void* d_q = nullptr;
  void* d_k = nullptr;
  void* d_v = nullptr;
  float* probabilities = nullptr;                 // (B, Hq, T, T)
  float* key_mass = nullptr;                      // (B, Hq, T)
  int batch = 0, length = 0, q_heads = 0, kv_heads = 0, head_dim = 0, group = 1, chunks = 0;
  float scale = 1;       // multiplies q . k
  float scale_log2 = 1;  // scale * log2(e): softmax via exp2
};

// The per-batch-row views of the segment data (null when there are no segment ids).
struct row_segments {
  const std::int32_t* ids;
  const segment_range* chunks;
};
__device__ __forceinline__ row_segments segments_of(const attention_params& p, int b) {
  if (p.segments == nullptr) return {nullptr, nullptr};
  return {p.segments + static_cast<long long>(b) * p.length, p.segment_chunks + static_cast<long long>(b) * p.chunks};
}

// Enqueues cp.async copies of rows [row0, row0 + Rows) of one head (rows `row_stride` elements
// apart, starting at `head`) into a [Rows][tc_stride(D)] shared tile. Rows >= length and columns
// >= head_dim are zero-filled: padded rows then contribute exact zeros, padded columns add 0 to
// every dot product.
template <int Rows, int D, int Threads, class E>
__device__ __forceinline__ void load_tile_async(E* tile, const E* head, long long row_stride, int row0, int length,
                                                int head_dim) {
  constexpr int chunks = Rows * D / 8;
#pragma unroll
  for (int c = static_cast<int>(threadIdx.x); c < chunks; c += Threads) {
    const int r = chunk_row(c, D), col = chunk_col(c, D);
    const bool valid = row0 + r < length && col < head_dim;
    const E* source = valid ? head + static_cast<long long>(row0 + r) * row_stride + col : head;
    cp_async_16(tile + r * tc_stride(D) + col, source, valid);
  }
}

// acc (16 x N) += A (16 x K) B^T, A = 16 rows of a row-major shared tile (stride S), B = N rows of
// an [n][k] shared tile: S = Q K^T, dP = dO V^T, and their transposes in the dK/dV kernel.
template <class E, int K, int N, int S>
__device__ __forceinline__ void gemm_nt_ss(float (&acc)[N / 8][4], const E* a, const E* b, int lane) {
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) {
    std::uint32_t af[4];
    ldmatrix_x4(af, a + ldmatrix_x4::a_row(lane) * S + kk * 16 + ldmatrix_x4::a_col(lane));
#pragma unroll
    for (int np = 0; np < N / 16; ++np) {
      std::uint32_t bf[4];
      ldmatrix_x4(bf, b + (np * 16 + ldmatrix_x4::bn_row(lane)) * S + kk * 16 + ldmatrix_x4::bn_col(lane));
      mma_16816<E>(acc[2 * np], af, bf[0], bf[1]);
      mma_16816<E>(acc[2 * np + 1], af, bf[2], bf[3]);
    }
  }
}

// The same with A's fragments already in registers (Q in the forward pass).
template <class E, int K, int N, int S>
__device__ __forceinline__ void gemm_nt_rs(float (&acc)[N / 8][4], const std::uint32_t (&af)[K / 16][4], const E* b,
                                           int lane) {
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) {
#pragma unroll
    for (int np = 0; np < N / 16; ++np) {
      std::uint32_t bf[4];
      ldmatrix_x4(bf, b + (np * 16 + ldmatrix_x4::bn_row(lane)) * S + kk * 16 + ldmatrix_x4::bn_col(lane));
      mma_16816<E>(acc[2 * np], af[kk], bf[0], bf[1]);
      mma_16816<E>(acc[2 * np + 1], af[kk], bf[2], bf[3]);
    }
  }
}

// acc (16 x N) += P (16 x K) B, P = the fp32 accumulators of an earlier product (K / 8 n8 tiles),
// rounded to E; B = a [k][n] shared tile (K rows, N columns from `b`), read with ldmatrix.trans:
// O += P V, dQ += dS K, dV += P^T dO, dK += dS^T Q.
template <class E, int K, int N, int S>
__device__ __forceinline__ void gemm_pn_rs(float (&acc)[N / 8][4], const float (&pf)[K / 8][4], const E* b, int lane) {
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) {
    std::uint32_t af[4];
#pragma unroll
    for (int r = 0; r < 4; ++r)
      af[r] = pack2<E>(pf[repack_tile(kk, r)][repack_element(r, 0)], pf[repack_tile(kk, r)][repack_element(r, 1)]);
#pragma unroll
    for (int np = 0; np < N / 16; ++np) {
      std::uint32_t bf[4];
      ldmatrix_x4_trans(bf, b + (kk * 16 + ldmatrix_x4::bt_row(lane)) * S + np * 16 + ldmatrix_x4::bt_col(lane));
      mma_16816<E>(acc[2 * np], af, bf[0], bf[1]);
      mma_16816<E>(acc[2 * np + 1], af, bf[2], bf[3]);
    }
  }
}

// Writes 16 rows x N columns of fp32 accumulators (times `factor`) as E to rows `row_base`,
// `row_base + 8` (this lane's two rows) of a (row_stride)-strided head, columns col0 + ..., only
// rows < length and columns < head_dim (head_dim % 8 == 0 on this path: n8 tiles are all in or out).
template <class E, int N>
__device__ __forceinline__ void store_rows(E* head, long long row_stride, const float (&acc)[N / 8][4], int row_base,
                                           int col0, int length, int head_dim, float factor0, float factor1,
                                           int lane) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = row_base + 8 * half;
    if (row >= length) continue;
    const float factor = half == 0 ? factor0 : factor1;
    E* out = head + static_cast<long long>(row) * row_stride;
#pragma unroll
    for (int nt = 0; nt < N / 8; ++nt) {
      const int col = col0 + nt * 8 + mma_m16n8k16::c_col(lane, 2 * half);
      if (col < head_dim)
        *reinterpret_cast<std::uint32_t*>(out + col) =
            pack2<E>(acc[nt][2 * half] * factor, acc[nt][2 * half + 1] * factor);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Forward. Grid (B * Hq, query blocks), heaviest block first; block_m / 16 warps.
// O = softmax(scale Q K^T) V with the online softmax (running max m and sum l per row, in raw
// score units; probabilities via exp2 with scale * log2 e folded in). lse = scale m + log l.
// ---------------------------------------------------------------------------------------------
template <class E, int Bucket>
__global__ void __launch_bounds__(tc_forward_config(Bucket).threads()) tc_forward_kernel(attention_params p) {
  constexpr tc_forward_tiles cfg = tc_forward_config(Bucket);
  constexpr int D = cfg.head_dim, BM = cfg.block_m, BN = cfg.block_n, S = cfg.stride(), Threads = cfg.threads();
  constexpr int stages = cfg.q_in_registers ? 2 : cfg.stages;
  static_assert(BM == 16 * cfg.warps && BN % 16 == 0 && D % 16 == 0);
  static_assert(!cfg.q_in_registers || BM >= 2 * BN, "Q's tile must hold a (K, V) stage to be reused as one");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  E* smem = reinterpret_cast<E*>(smem_raw);

  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
  const head_task task = head_task_of(blockIdx.x, p.q_heads, 1);
  const int b = task.batch, h = task.head, hk = kv_head_of(h, p.group), T = p.length;
  const int i0 = row_block_of(static_cast<int>(blockIdx.y), static_cast<int>(gridDim.y)) * BM;
  const long long q_stride = static_cast<long long>(p.q_heads) * p.head_dim;
  const long long kv_stride = static_cast<long long>(p.kv_heads) * p.head_dim;
  const E* q = static_cast<const E*>(p.q) + bthd_offset(b, 0, h, T, p.q_heads, p.head_dim);
  const E* k = static_cast<const E*>(p.k) + bthd_offset(b, 0, hk, T, p.kv_heads, p.head_dim);
  const E* v = static_cast<const E*>(p.v) + bthd_offset(b, 0, hk, T, p.kv_heads, p.head_dim);
  const row_segments seg = segments_of(p, b);

  E* sq = smem + cfg.q_offset();
  int j = next_key_block(seg.chunks, -1, i0, BM, BN, T);  // never -1: the diagonal block is always visited
  load_tile_async<BM, D, Threads>(sq, q, q_stride, i0, T, p.head_dim);
  load_tile_async<BN, D, Threads>(smem + cfg.k_offset(0), k, kv_stride, j * BN, T, p.head_dim);
  load_tile_async<BN, D, Threads>(smem + cfg.v_offset(0), v, kv_stride, j * BN, T, p.head_dim);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  std::uint32_t qf[cfg.q_in_registers ? D / 16 : 1][4];
  if constexpr (cfg.q_in_registers) {
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
      ldmatrix_x4(qf[kk], sq + (warp * 16 + ldmatrix_x4::a_row(lane)) * S + kk * 16 + ldmatrix_x4::a_col(lane));
    __syncthreads();  // Q's tile becomes (K, V) stage 1 below
  }

  float o[D / 8][4] = {};
  float m[2] = {-INFINITY, -INFINITY};  // rows row_base, row_base + 8
  float l[2] = {0.f, 0.f};              // this lane's partial sums (its quad holds the rest)
  const int row_base = i0 + warp * 16 + lane / 4;

  for (int it = 0; j >= 0; ++it) {
    const int next = next_key_block(seg.chunks, j, i0, BM, BN, T);
    const int stage = stages == 2 ? it % 2 : 0;
    if constexpr (stages == 2) {
      if (next >= 0) {
        load_tile_async<BN, D, Threads>(smem + cfg.k_offset(1 - stage), k, kv_stride, next * BN, T, p.head_dim);
        load_tile_async<BN, D, Threads>(smem + cfg.v_offset(1 - stage), v, kv_stride, next * BN, T, p.head_dim);
      }
      cp_async_commit();
      cp_async_wait<1>();  // this iteration's tiles (committed one iteration ago) have landed
      __syncthreads();
    }
    const E* sk = smem + cfg.k_offset(stage);
    const E* sv = smem + cfg.v_offset(stage);
    const int j0 = j * BN;

    float s[BN / 8][4] = {};
    if constexpr (cfg.q_in_registers)
      gemm_nt_rs<E, D, BN, S>(s, qf, sk, lane);
    else
      gemm_nt_ss<E, D, BN, S>(s, sq + warp * 16 * S, sk, lane);

    if (tile_relation(seg.chunks, i0, BM, j0, BN, T) != relation::full) {
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (!allowed(row_base + 8 * (e / 2), j0 + nt * 8 + mma_m16n8k16::c_col(lane, e), T, seg.ids))
            s[nt][e] = -INFINITY;
    }

#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float block_max = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt) block_max = fmaxf(block_max, fmaxf(s[nt][2 * half], s[nt][2 * half + 1]));
      const float m_new = fmaxf(m[half], quad_max(block_max));
      // A row with nothing allowed so far keeps m = -inf; base 0 then makes every exp2 exactly 0.
      const float base = m_new == -INFINITY ? 0.f : m_new * p.scale_log2;
      const float alpha = exp2f(m[half] * p.scale_log2 - base);  // 0 while m was -inf
      m[half] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt)
#pragma unroll
        for (int e = 2 * half; e < 2 * half + 2; ++e) {
          s[nt][e] = exp2f(fmaf(s[nt][e], p.scale_log2, -base));
          sum += s[nt][e];
        }
      l[half] = l[half] * alpha + sum;
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
        o[dt][2 * half] *= alpha;
        o[dt][2 * half + 1] *= alpha;
      }
    }
    gemm_pn_rs<E, BN, D, S>(o, s, sv, lane);

    __syncthreads();  // every warp is done with this stage before it is refilled
    if constexpr (stages == 1) {
      if (next >= 0) {
        load_tile_async<BN, D, Threads>(smem + cfg.k_offset(0), k, kv_stride, next * BN, T, p.head_dim);
        load_tile_async<BN, D, Threads>(smem + cfg.v_offset(0), v, kv_stride, next * BN, T, p.head_dim);
        cp_async_commit();
        cp_async_wait<0>();
        __syncthreads();
      }
    }
    j = next;
  }

  // Every real row attends at least itself, so l > 0 there; padded rows are not written.
  l[0] = quad_sum(l[0]);
  l[1] = quad_sum(l[1]);
  E* out = static_cast<E*>(p.out_write) + bthd_offset(b, 0, h, T, p.q_heads, p.head_dim);
  store_rows<E, D>(out, q_stride, o, row_base, 0, T, p.head_dim, 1.f / l[0], 1.f / l[1], lane);
  if (lane % 4 == 0) {
    float* lse = p.lse_write + (static_cast<long long>(b) * p.q_heads + h) * T;
#pragma unroll
    for (int half = 0; half < 2; ++half)
      // In the units the probabilities were computed in (base = m scale log2 e): exactly log sum exp.
      if (row_base + 8 * half < T) lse[row_base + 8 * half] = m[half] * p.scale_log2 * ln_2 + logf(l[half]);
  }
}

// ---------------------------------------------------------------------------------------------
// Backward, dQ. Grid (B * Hq * d_split, query blocks), heaviest first. Per key block:
//   S = Q K^T, dP = dO V^T, P = exp(scale S - lse), dS = P o (dP - delta), dQ += dS K;
// at the end dQ *= scale. Columns [c0, c0 + d_out) of dQ per CTA.
// ---------------------------------------------------------------------------------------------
template <class E, int Bucket>
__global__ void __launch_bounds__(tc_dq_config(Bucket).threads()) tc_dq_kernel(attention_params p) {
  constexpr tc_dq_tiles cfg = tc_dq_config(Bucket);
  constexpr int D = cfg.head_dim, BM = cfg.block_m, BN = cfg.block_n, S = cfg.stride(), Threads = cfg.threads();
  constexpr int DO = cfg.d_out(), stages = cfg.stages;
  static_assert(BM == 16 * cfg.warps && BN % 16 == 0 && DO % 16 == 0);
  extern __shared__ __align__(16) unsigned char smem_raw[];
  E* smem = reinterpret_cast<E*>(smem_raw);

  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
  const head_task task = head_task_of(blockIdx.x, p.q_heads, cfg.d_split);
  const int b = task.batch, h = task.head, hk = kv_head_of(h, p.group), T = p.length, c0 = task.split * DO;
  if (c0 >= p.head_dim) return;  // a column split entirely in the padding (uniform per CTA)
  const int i0 = row_block_of(static_cast<int>(blockIdx.y), static_cast<int>(gridDim.y)) * BM;
  const long long q_stride = static_cast<long long>(p.q_heads) * p.head_dim;
  const long long kv_stride = static_cast<long long>(p.kv_heads) * p.head_dim;
  const long long q_head = bthd_offset(b, 0, h, T, p.q_heads, p.head_dim);
  const E* q = static_cast<const E*>(p.q) + q_head;
  const E* d_out = static_cast<const E*>(p.d_out) + q_head;
  const E* k = static_cast<const E*>(p.k) + bthd_offset(b, 0, hk, T, p.kv_heads, p.head_dim);
  const E* v = static_cast<const E*>(p.v) + bthd_offset(b, 0, hk, T, p.kv_heads, p.head_dim);
  const row_segments seg = segments_of(p, b);

  const int row_base = i0 + warp * 16 + lane / 4;
  float lse_log2[2], delta[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = row_base + 8 * half;
    const long long at = (static_cast<long long>(b) * p.q_heads + h) * T + row;
    lse_log2[half] = row < T ? p.lse[at] * log2_e : 0.f;
    delta[half] = row < T ? p.delta[at] : 0.f;
  }

  const E* sq = smem + cfg.q_offset();
  const E* sdo = smem + cfg.do_offset();
  int j = next_key_block(seg.chunks, -1, i0, BM, BN, T);
  load_tile_async<BM, D, Threads>(smem + cfg.q_offset(), q, q_stride, i0, T, p.head_dim);
  load_tile_async<BM, D, Threads>(smem + cfg.do_offset(), d_out, q_stride, i0, T, p.head_dim);
  load_tile_async<BN, D, Threads>(smem + cfg.k_offset(0), k, kv_stride, j * BN, T, p.head_dim);
  load_tile_async<BN, D, Threads>(smem + cfg.v_offset(0), v, kv_stride, j * BN, T, p.head_dim);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  float dq[DO / 8][4] = {};
  for (int it = 0; j >= 0; ++it) {
    const int next = next_key_block(seg.chunks, j, i0, BM, BN, T);
    const int stage = stages == 2 ? it % 2 : 0;
    if constexpr (stages == 2) {
      if (next >= 0) {
        load_tile_async<BN, D, Threads>(smem + cfg.k_offset(1 - stage), k, kv_stride, next * BN, T, p.head_dim);
        load_tile_async<BN, D, Threads>(smem + cfg.v_offset(1 - stage), v, kv_stride, next * BN, T, p.head_dim);
      }
      cp_async_commit();
      cp_async_wait<1>();
      __syncthreads();
    }
    const E* sk = smem + cfg.k_offset(stage);
    const E* sv = smem + cfg.v_offset(stage);
    const int j0 = j * BN;

    float s[BN / 8][4] = {};
    float dp[BN / 8][4] = {};
    gemm_nt_ss<E, D, BN, S>(s, sq + warp * 16 * S, sk, lane);
    gemm_nt_ss<E, D, BN, S>(dp, sdo + warp * 16 * S, sv, lane);
    const bool masked = tile_relation(seg.chunks, i0, BM, j0, BN, T) != relation::full;
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float prob = exp2f(fmaf(s[nt][e], p.scale_log2, -lse_log2[e / 2]));
        if (masked && !allowed(row_base + 8 * (e / 2), j0 + nt * 8 + mma_m16n8k16::c_col(lane, e), T, seg.ids))
          prob = 0.f;
        s[nt][e] = prob * (dp[nt][e] - delta[e / 2]);  // dS
      }
    gemm_pn_rs<E, BN, DO, S>(dq, s, sk + c0, lane);

    __syncthreads();
    if constexpr (stages == 1) {
      if (next >= 0) {
        load_tile_async<BN, D, Threads>(smem + cfg.k_offset(0), k, kv_stride, next * BN, T, p.head_dim);
        load_tile_async<BN, D, Threads>(smem + cfg.v_offset(0), v, kv_stride, next * BN, T, p.head_dim);
        cp_async_commit();
        cp_async_wait<0>();
        __syncthreads();
      }
    }
    j = next;
  }
  E* d_q = static_cast<E*>(p.d_q) + q_head;
  store_rows<E, DO>(d_q, q_stride, dq, row_base, c0, T, p.head_dim, p.scale, p.scale, lane);
}

// ---------------------------------------------------------------------------------------------
// Backward, dK and dV. Grid (B * Hkv * d_split, key blocks). Warps own key rows; per (query head
// of the group, query block):
//   S^T = K Q^T, dP^T = V dO^T, P^T = exp(scale S^T - lse), dS^T = P^T o (dP^T - delta),
//   dV += P^T dO, dK += dS^T Q;   at the end dK *= scale.
// ---------------------------------------------------------------------------------------------
template <class E, int Bucket>
__global__ void __launch_bounds__(tc_dkdv_config(Bucket).threads()) tc_dkdv_kernel(attention_params p) {
  constexpr tc_dkdv_tiles cfg = tc_dkdv_config(Bucket);
  constexpr int D = cfg.head_dim, BN = cfg.block_n, BM = cfg.block_m, S = cfg.stride(), Threads = cfg.threads();
  constexpr int DO = cfg.d_out(), stages = cfg.stages, element_bytes = static_cast<int>(sizeof(E));
  static_assert(BN == 16 * cfg.warps && BM % 16 == 0 && DO % 16 == 0);
  extern __shared__ __align__(16) unsigned char smem_raw[];
  E* smem = reinterpret_cast<E*>(smem_raw);

  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
  const head_task task = head_task_of(blockIdx.x, p.kv_heads, cfg.d_split);
  const int b = task.batch, hk = task.head, T = p.length, c0 = task.split * DO, G = p.group;
  if (c0 >= p.head_dim) return;
  const int j0 = static_cast<int>(blockIdx.y) * BN;
  const int q_blocks = static_cast<int>(blocks_of(T, BM));
  const long long q_stride = static_cast<long long>(p.q_heads) * p.head_dim;
  const long long kv_stride = static_cast<long long>(p.kv_heads) * p.head_dim;
  const long long kv_head = bthd_offset(b, 0, hk, T, p.kv_heads, p.head_dim);
  const E* k = static_cast<const E*>(p.k) + kv_head;
  const E* v = static_cast<const E*>(p.v) + kv_head;
  const row_segments seg = segments_of(p, b);

  // Loads Q, dO, lse and delta of step s (query head first_q_head + s / q_blocks, query block
  // s % q_blocks) into `stage`.
  const auto issue = [&](int s, int stage) {
    const int h = first_q_head_of(hk, G) + s / q_blocks, i0 = (s % q_blocks) * BM;
    const long long q_head = bthd_offset(b, 0, h, T, p.q_heads, p.head_dim);
    load_tile_async<BM, D, Threads>(smem + cfg.q_offset(stage), static_cast<const E*>(p.q) + q_head, q_stride, i0, T,
                                    p.head_dim);
    load_tile_async<BM, D, Threads>(smem + cfg.do_offset(stage), static_cast<const E*>(p.d_out) + q_head, q_stride,
                                    i0, T, p.head_dim);
    const long long rows = (static_cast<long long>(b) * p.q_heads + h) * T;
    float* s_lse = reinterpret_cast<float*>(smem_raw + cfg.lse_byte_offset(stage, element_bytes));
    float* s_delta = reinterpret_cast<float*>(smem_raw + cfg.delta_byte_offset(stage, element_bytes));
    for (int t = static_cast<int>(threadIdx.x); t < BM; t += Threads) {
      const bool valid = i0 + t < T;
      cp_async_4(s_lse + t, valid ? p.lse + rows + i0 + t : p.lse, valid);
      cp_async_4(s_delta + t, valid ? p.delta + rows + i0 + t : p.delta, valid);
    }
  };

  int step = next_query_step(seg.chunks, -1, G, j0, BN, BM, T);
  load_tile_async<BN, D, Threads>(smem + cfg.k_offset(), k, kv_stride, j0, T, p.head_dim);
  load_tile_async<BN, D, Threads>(smem + cfg.v_offset(), v, kv_stride, j0, T, p.head_dim);
  if (step >= 0) issue(step, 0);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  const E* sk = smem + cfg.k_offset() + warp * 16 * S;
  const E* sv = smem + cfg.v_offset() + warp * 16 * S;
  const int key_base = j0 + warp * 16 + lane / 4;
  float dk[DO / 8][4] = {};
  float dv[DO / 8][4] = {};
  for (int it = 0; step >= 0; ++it) {
    const int next = next_query_step(seg.chunks, step, G, j0, BN, BM, T);
    const int stage = stages == 2 ? it % 2 : 0;
    if constexpr (stages == 2) {
      if (next >= 0) issue(next, 1 - stage);
      cp_async_commit();
      cp_async_wait<1>();
      __syncthreads();
    }
    const E* sq = smem + cfg.q_offset(stage);
    const E* sdo = smem + cfg.do_offset(stage);
    const float* s_lse = reinterpret_cast<const float*>(smem_raw + cfg.lse_byte_offset(stage, element_bytes));
    const float* s_delta = reinterpret_cast<const float*>(smem_raw + cfg.delta_byte_offset(stage, element_bytes));
    const int i0 = (step % q_blocks) * BM;

    float st[BM / 8][4] = {};   // S^T, then P^T
    float dpt[BM / 8][4] = {};  // dP^T, then dS^T
    gemm_nt_ss<E, D, BM, S>(st, sk, sq, lane);
    gemm_nt_ss<E, D, BM, S>(dpt, sv, sdo, lane);
    const bool masked = tile_relation(seg.chunks, i0, BM, j0, BN, T) != relation::full || i0 + BM > T;
#pragma unroll
    for (int nt = 0; nt < BM / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = nt * 8 + mma_m16n8k16::c_col(lane, e);  // query within the block
        float prob = exp2f(fmaf(st[nt][e], p.scale_log2, -s_lse[col] * log2_e));
        if (masked && !allowed(i0 + col, key_base + 8 * (e / 2), T, seg.ids)) prob = 0.f;
        st[nt][e] = prob;
        dpt[nt][e] = prob * (dpt[nt][e] - s_delta[col]);
      }
    gemm_pn_rs<E, BM, DO, S>(dv, st, sdo + c0, lane);
    gemm_pn_rs<E, BM, DO, S>(dk, dpt, sq + c0, lane);

    __syncthreads();
    if constexpr (stages == 1) {
      if (next >= 0) {
        issue(next, 0);
        cp_async_commit();
        cp_async_wait<0>();
        __syncthreads();
      }
    }
    step = next;
  }
  // Keys no query attends (none: every key attends itself) would keep zeros, which is right.
  store_rows<E, DO>(static_cast<E*>(p.d_k) + kv_head, kv_stride, dk, key_base, c0, T, p.head_dim, p.scale, p.scale,
                    lane);
  store_rows<E, DO>(static_cast<E*>(p.d_v) + kv_head, kv_stride, dv, key_base, c0, T, p.head_dim, 1.f, 1.f, lane);
}

}  // namespace meap::detail::cuda_attention
