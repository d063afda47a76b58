// meap/kernels/cuda/attention_simt.cuh: the float (FMA) attention kernels and the small helper
// kernels. Internal to <meap/kernels/cuda/attention.hpp>; nvcc only.
//
// The SIMT kernels run float32 attention, the generic path for 16-bit inputs the tensor cores
// cannot take (head dims not a multiple of 8, views not 16-byte aligned), and the probe. Inputs
// are widened to float in shared memory and every sum is a float sum, so they match the CPU
// kernel (which also computes in float) to float rounding; exp and log are the accurate expf and
// logf. Tiles (simt_config in the plan): a CTA owns `rows` rows and steps over `cols` columns;
// thread (r, c4) = (tid / 4, tid % 4) computes the scores of columns c4, c4 + 4, ... of row r and
// owns the output columns d = c4, c4 + 4, ... of that row. The 4 threads of a row are 4
// consecutive lanes of one warp, so row reductions are two shuffles and the score row they write
// to shared memory needs only __syncwarp.
//
// Row kernels (one CTA per (b, h, row block), grid (B * Hq, row blocks), heaviest first):
//   forward: O, lse;  lse_only: lse (the probe's first pass);  dq: dQ;  probabilities: P.
// Column kernels (one CTA per (b, head, key block), grid (B * heads * d_split, key blocks)):
//   dkdv: dK, dV summed over the GQA group (heads = Hkv);  key_mass: sum_i P_ij (heads = Hq).
#pragma once
#if !defined(__CUDACC__)
#error "meap/kernels/cuda/*.cuh must be compiled by nvcc: include <meap/cuda.hpp> from a .cu file"
#endif

#include <meap/kernels/cuda/attention_mma.cuh>
#include <meap/kernels/cuda/attention_plan.hpp>
#include <meap/kernels/cuda/attention_tc.cuh>

#include <cmath>
#include <cstdint>

namespace meap::detail::cuda_attention {

enum class row_mode { forward, lse_only, dq, probabilities };
enum class col_mode { dkdv, key_mass };

// rows [row0, row0 + Rows) of one head (rows `row_stride` apart) -> [Rows][stride] floats, columns
// < head_dim only (the loops below never read further); rows >= length become zeros.
template <int Rows, int Threads, class E>
__device__ __forceinline__ void load_rows_float(float* tile, int stride, const E* head, long long row_stride, int row0,
                                                int length, int head_dim) {
  const int count = Rows * head_dim;
  for (int i = static_cast<int>(threadIdx.x); i < count; i += Threads) {
    const int r = i / head_dim, d = i - r * head_dim;
    tile[r * stride + d] = row0 + r < length ? to_float(head[static_cast<long long>(row0 + r) * row_stride + d]) : 0.f;
  }
}

// s[e] = sum_{d < n} a[d] b[(c4 + 4 e) stride + d] for e < NS: one row against this thread's
// columns; d outermost so that a[d] is loaded once for NS products.
template <int NS>
__device__ __forceinline__ void dot_columns(float (&s)[NS], const float* a, const float* b, int stride, int c4, int n) {
#pragma unroll
  for (int e = 0; e < NS; ++e) s[e] = 0.f;
  for (int d = 0; d < n; ++d) {
    const float x = a[d];
#pragma unroll
    for (int e = 0; e < NS; ++e) s[e] = fmaf(x, b[(c4 + 4 * e) * stride + d], s[e]);
  }
}

template <class E, int Bucket, row_mode Mode>
__global__ void __launch_bounds__(simt_config(Bucket).threads()) simt_row_kernel(attention_params p) {
  constexpr simt_tiles cfg = simt_config(Bucket);
  constexpr int R = cfg.rows, C = cfg.cols, SD = cfg.stride(), Threads = cfg.threads();
  constexpr int NS = cfg.scores_per_thread(), NO = Bucket / 4;
  constexpr bool values = Mode == row_mode::forward || Mode == row_mode::dq;
  extern __shared__ float smem_f[];
  float* sa = smem_f;          // [R][SD] Q
  float* sb = sa + R * SD;     // [R][SD] dO (dq)
  float* sc = sb + R * SD;     // [C][SD] K
  float* sd = sc + C * SD;     // [C][SD] V (forward, dq)
  float* sp = sd + C * SD;     // [R][C + 1] P (forward) or dS (dq)

  const int tid = static_cast<int>(threadIdx.x), r = tid / 4, c4 = tid % 4;
  const head_task task = head_task_of(blockIdx.x, p.q_heads, 1);
  const int b = task.batch, h = task.head, hk = kv_head_of(h, p.group), T = p.length, D = p.head_dim;
  const int i0 = row_block_of(static_cast<int>(blockIdx.y), static_cast<int>(gridDim.y)) * R, row = i0 + r;
  const long long q_stride = static_cast<long long>(p.q_heads) * D, kv_stride = static_cast<long long>(p.kv_heads) * D;
  const long long q_head = bthd_offset(b, 0, h, T, p.q_heads, D);
  const long long kv_head = bthd_offset(b, 0, hk, T, p.kv_heads, D);
  const E* k = static_cast<const E*>(p.k) + kv_head;
  const E* v = static_cast<const E*>(p.v) + kv_head;
  const row_segments seg = segments_of(p, b);
  const long long lse_row = (static_cast<long long>(b) * p.q_heads + h) * T + row;

  load_rows_float<R, Threads>(sa, SD, static_cast<const E*>(p.q) + q_head, q_stride, i0, T, D);
  if constexpr (Mode == row_mode::dq) load_rows_float<R, Threads>(sb, SD, static_cast<const E*>(p.d_out) + q_head, q_stride, i0, T, D);
  float lse = 0.f, delta = 0.f;
  if constexpr (Mode == row_mode::dq || Mode == row_mode::probabilities) lse = row < T ? p.lse[lse_row] : 0.f;
  if constexpr (Mode == row_mode::dq) delta = row < T ? p.delta[lse_row] : 0.f;

  float acc[values ? NO : 1] = {};
  float m = -INFINITY, l = 0.f;
  const int key_blocks = static_cast<int>(blocks_of(T, C));
  // The probabilities visit every key block (zeros included); the others only the visited ones.
  int j = Mode == row_mode::probabilities ? 0 : next_key_block(seg.chunks, -1, i0, R, C, T);
  while (j >= 0 && j < key_blocks) {
    const int j0 = j * C;
    const relation rel = tile_relation(seg.chunks, i0, R, j0, C, T);
    const int next = Mode == row_mode::probabilities ? j + 1 : next_key_block(seg.chunks, j, i0, R, C, T);
    if (Mode == row_mode::probabilities && rel == relation::skip) {
      if (row < T)
        for (int e = 0; e < NS; ++e) {
          const int col = j0 + c4 + 4 * e;
          if (col < T) p.probabilities[lse_row * T + col] = 0.f;
        }
      j = next;
      continue;
    }
    __syncthreads();  // the previous block's tiles are no longer read
    load_rows_float<C, Threads>(sc, SD, k, kv_stride, j0, T, D);
    if constexpr (values) load_rows_float<C, Threads>(sd, SD, v, kv_stride, j0, T, D);
    __syncthreads();

    float s[NS];
    dot_columns(s, sa + r * SD, sc, SD, c4, D);
#pragma unroll
    for (int e = 0; e < NS; ++e) {
      s[e] *= p.scale;
      if (rel != relation::full && !allowed(row, j0 + c4 + 4 * e, T, seg.ids)) s[e] = -INFINITY;
    }
    if constexpr (Mode == row_mode::forward || Mode == row_mode::lse_only) {
      float block_max = -INFINITY;
#pragma unroll
      for (int e = 0; e < NS; ++e) block_max = fmaxf(block_max, s[e]);
      const float m_new = fmaxf(m, quad_max(block_max));
      const float base = m_new == -INFINITY ? 0.f : m_new;
      const float alpha = expf(m - base);
      m = m_new;
      float sum = 0.f;
#pragma unroll
      for (int e = 0; e < NS; ++e) {
        s[e] = expf(s[e] - base);
        sum += s[e];
      }
      l = l * alpha + quad_sum(sum);
      if constexpr (Mode == row_mode::forward) {
#pragma unroll
        for (int e = 0; e < NS; ++e) sp[r * (C + 1) + c4 + 4 * e] = s[e];
#pragma unroll
        for (int o = 0; o < NO; ++o) acc[o] *= alpha;
        __syncwarp();
        for (int c = 0; c < C; ++c) {
          const float prob = sp[r * (C + 1) + c];
          const float* vc = sd + c * SD;
#pragma unroll
          for (int o = 0; o < NO; ++o)
            if (c4 + 4 * o < D) acc[o] = fmaf(prob, vc[c4 + 4 * o], acc[o]);
        }
      }
    } else if constexpr (Mode == row_mode::dq) {
      float dp[NS];
      dot_columns(dp, sb + r * SD, sd, SD, c4, D);
#pragma unroll
      for (int e = 0; e < NS; ++e) {
        const float prob = s[e] == -INFINITY ? 0.f : expf(s[e] - lse);
        sp[r * (C + 1) + c4 + 4 * e] = prob * (dp[e] - delta);
      }
      __syncwarp();
      for (int c = 0; c < C; ++c) {
        const float ds = sp[r * (C + 1) + c];
        const float* kc = sc + c * SD;
#pragma unroll
        for (int o = 0; o < NO; ++o)
          if (c4 + 4 * o < D) acc[o] = fmaf(ds, kc[c4 + 4 * o], acc[o]);
      }
    } else {  // probabilities
      if (row < T)
#pragma unroll
        for (int e = 0; e < NS; ++e) {
          const int col = j0 + c4 + 4 * e;
          if (col < T) p.probabilities[lse_row * T + col] = s[e] == -INFINITY ? 0.f : expf(s[e] - lse);
        }
    }
    j = next;
  }
  if (row >= T) return;
  if constexpr (Mode == row_mode::forward || Mode == row_mode::lse_only) {
    if (c4 == 0) p.lse_write[lse_row] = m + logf(l);
  }
  if constexpr (Mode == row_mode::forward) {
    E* out = static_cast<E*>(p.out_write) + q_head + static_cast<long long>(row) * q_stride;
    const float inv = 1.f / l;
#pragma unroll
    for (int o = 0; o < NO; ++o)
      if (c4 + 4 * o < D) out[c4 + 4 * o] = from_float<E>(acc[o] * inv);
  }
  if constexpr (Mode == row_mode::dq) {
    E* d_q = static_cast<E*>(p.d_q) + q_head + static_cast<long long>(row) * q_stride;
#pragma unroll
    for (int o = 0; o < NO; ++o)
      if (c4 + 4 * o < D) d_q[c4 + 4 * o] = from_float<E>(acc[o] * p.scale);
  }
}

template <class E, int Bucket, col_mode Mode>
__global__ void __launch_bounds__(simt_config(Bucket).threads()) simt_col_kernel(attention_params p) {
  constexpr simt_tiles cfg = simt_config(Bucket);
  constexpr int R = cfg.rows, C = cfg.cols, SD = cfg.stride(), Threads = cfg.threads();
  constexpr int NS = cfg.scores_per_thread(), split = Mode == col_mode::dkdv ? cfg.d_split : 1;
  constexpr int NO = Mode == col_mode::dkdv ? cfg.outputs_per_thread() : 1;
  constexpr bool grads = Mode == col_mode::dkdv;
  extern __shared__ float smem_f[];
  float* sk = smem_f;            // [R][SD] K
  float* sv = sk + R * SD;       // [R][SD] V
  float* sq = sv + R * SD;       // [C][SD] Q
  float* sdo = sq + C * SD;      // [C][SD] dO
  float* spt = sdo + C * SD;     // [R][C + 1] P^T
  float* sdst = spt + R * (C + 1);  // [R][C + 1] dS^T
  float* s_lse = sdst + R * (C + 1);  // [C]
  float* s_delta = s_lse + C;         // [C]

  const int tid = static_cast<int>(threadIdx.x), r = tid / 4, c4 = tid % 4;
  const int T = p.length, D = p.head_dim, G = grads ? p.group : 1;
  // dkdv: (b, kv head, split); key_mass: (b, query head).
  const head_task task = head_task_of(blockIdx.x, grads ? p.kv_heads : p.q_heads, split);
  const int b = task.batch, c0 = task.split * cfg.d_out();
  if (c0 >= D) return;
  const int hk = grads ? task.head : kv_head_of(task.head, p.group);
  const int first_head = grads ? first_q_head_of(hk, G) : task.head;
  const int j0 = static_cast<int>(blockIdx.y) * R, key = j0 + r;
  const int q_blocks = static_cast<int>(blocks_of(T, C));
  const long long q_stride = static_cast<long long>(p.q_heads) * D, kv_stride = static_cast<long long>(p.kv_heads) * D;
  const long long kv_head = bthd_offset(b, 0, hk, T, p.kv_heads, D);
  const row_segments seg = segments_of(p, b);

  load_rows_float<R, Threads>(sk, SD, static_cast<const E*>(p.k) + kv_head, kv_stride, j0, T, D);
  if constexpr (grads) load_rows_float<R, Threads>(sv, SD, static_cast<const E*>(p.v) + kv_head, kv_stride, j0, T, D);

  float dk[NO] = {}, dv[NO] = {};
  float mass = 0.f;
  for (int step = next_query_step(seg.chunks, -1, G, j0, R, C, T); step >= 0;
       step = next_query_step(seg.chunks, step, G, j0, R, C, T)) {
    const int h = first_head + step / q_blocks, i0 = (step % q_blocks) * C;
    const long long q_head = bthd_offset(b, 0, h, T, p.q_heads, D);
    const long long rows = (static_cast<long long>(b) * p.q_heads + h) * T;
    __syncthreads();  // the previous step's tiles are no longer read
    load_rows_float<C, Threads>(sq, SD, static_cast<const E*>(p.q) + q_head, q_stride, i0, T, D);
    if constexpr (grads) load_rows_float<C, Threads>(sdo, SD, static_cast<const E*>(p.d_out) + q_head, q_stride, i0, T, D);
    for (int t = tid; t < C; t += Threads) {
      s_lse[t] = i0 + t < T ? p.lse[rows + i0 + t] : 0.f;
      if constexpr (grads) s_delta[t] = i0 + t < T ? p.delta[rows + i0 + t] : 0.f;
    }
    __syncthreads();

    const bool masked = tile_relation(seg.chunks, i0, C, j0, R, T) != relation::full || i0 + C > T;
    float st[NS], dpt[NS];
    dot_columns(st, sk + r * SD, sq, SD, c4, D);
    if constexpr (grads) dot_columns(dpt, sv + r * SD, sdo, SD, c4, D);
#pragma unroll
    for (int e = 0; e < NS; ++e) {
      const int col = c4 + 4 * e;
      float prob = expf(st[e] * p.scale - s_lse[col]);
      if (masked && !allowed(i0 + col, key, T, seg.ids)) prob = 0.f;
      if constexpr (grads) {
        spt[r * (C + 1) + col] = prob;
        sdst[r * (C + 1) + col] = prob * (dpt[e] - s_delta[col]);
      } else {
        mass += prob;
      }
    }
    if constexpr (grads) {
      __syncwarp();
      for (int c = 0; c < C; ++c) {
        const float pt = spt[r * (C + 1) + c], dst = sdst[r * (C + 1) + c];
        const float* qc = sq + c * SD + c0;
        const float* doc = sdo + c * SD + c0;
#pragma unroll
        for (int o = 0; o < NO; ++o)
          if (c0 + c4 + 4 * o < D) {
            dv[o] = fmaf(pt, doc[c4 + 4 * o], dv[o]);
            dk[o] = fmaf(dst, qc[c4 + 4 * o], dk[o]);
          }
      }
    }
  }
  if constexpr (!grads) {
    mass = quad_sum(mass);
    if (key < T && c4 == 0) p.key_mass[(static_cast<long long>(b) * p.q_heads + task.head) * T + key] = mass;
  } else {
    if (key >= T) return;
    const long long at = kv_head + static_cast<long long>(key) * kv_stride + c0;
    E* d_k = static_cast<E*>(p.d_k) + at;
    E* d_v = static_cast<E*>(p.d_v) + at;
#pragma unroll
    for (int o = 0; o < NO; ++o)
      if (c0 + c4 + 4 * o < D) {
        d_k[c4 + 4 * o] = from_float<E>(dk[o] * p.scale);
        d_v[c4 + 4 * o] = from_float<E>(dv[o]);
      }
  }
}

// delta[b, h, t] = sum_d dO[b, t, h, d] O[b, t, h, d] (float): one warp per (b, t, h) row.
template <class E>
__global__ void delta_kernel(attention_params p) {
  const long long rows = static_cast<long long>(p.batch) * p.length * p.q_heads;
  const long long warps = static_cast<long long>(gridDim.x) * blockDim.x / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const E* out = static_cast<const E*>(p.out);
  const E* d_out = static_cast<const E*>(p.d_out);
  for (long long row = (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; row < rows; row += warps) {
    float sum = 0.f;
    for (int d = lane; d < p.head_dim; d += 32)
      sum = fmaf(to_float(d_out[row * p.head_dim + d]), to_float(out[row * p.head_dim + d]), sum);
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (lane == 0) {
      const long long h = row % p.q_heads, t = (row / p.q_heads) % p.length, b = row / (static_cast<long long>(p.q_heads) * p.length);
      p.delta_write[(b * p.q_heads + h) * p.length + t] = sum;
    }
  }
}

// chunks[b, c] = (min, max) of segments[b, 16 c .. 16 c + 15] (clipped at T): one thread per chunk.
template <int Chunk = segment_chunk>
__global__ void segment_chunks_kernel(const std::int32_t* segments, segment_range* chunks, int batch, int length,
                                             int chunk_count) {
  const long long total = static_cast<long long>(batch) * chunk_count;
  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long b = i / chunk_count;
    const int c = static_cast<int>(i % chunk_count);
    const std::int32_t* ids = segments + b * length;
    const int t0 = c * Chunk, t1 = t0 + Chunk < length ? t0 + Chunk : length;
    segment_range range{ids[t0], ids[t0]};
    for (int t = t0 + 1; t < t1; ++t) {
      range.lo = ids[t] < range.lo ? ids[t] : range.lo;
      range.hi = ids[t] > range.hi ? ids[t] : range.hi;
    }
    chunks[i] = range;
  }
}

}  // namespace meap::detail::cuda_attention
