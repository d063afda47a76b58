// meap/kernels/cuda/attention.hpp: the meap::cuda implementation behind <meap/kernels/attention.hpp>:
// causal attention forward and backward with GQA and segment ids, and the probe
// (attention_probabilities, attention_key_mass). The front door checks the arguments for every
// device; this adds the CUDA limits (grid sizes, no float64, compute capability 8.0+, kernels
// built for sm_80+). The CPU kernel (kernels/cpu/attention.hpp) is the test oracle. See
// docs/kernels.md ("CUDA attention") for the design and the tiles.
//
//   q: (B, T, Hq, D)   k, v: (B, T, Hkv, D)   out: (B, T, Hq, D)   lse: (B, Hq, T) float
//   segment_ids: (B, T) int32 (optional), all on one CUDA device; work is enqueued on the tag's
//   stream and the functions return without synchronizing (scratch memory is freed stream-ordered).
//
// Paths (chosen per call by attention_options::path; attention_kernel_path() tells which):
//   * half / bfloat16 with D % 8 == 0 and 16-byte-aligned views, kernels compiled for sm_80+:
//     tensor cores (mma.sync),
//     FlashAttention-2 style, fp32 accumulation and softmax; D = 64 and 128 are specialized, other
//     D run on the next bucket (64, 128, 256) with the extra columns zero-filled.
//   * float, and half / bfloat16 views the tensor-core path cannot take: float FMA kernels.
//   * the probe: float FMA kernels for every element type.
// float64 is not supported on meap::cuda: every entry point throws meap::error for double (use
// meap::cpu). A GPU of compute capability 8.0 or newer is required (checked; meap::error otherwise).
// The backward pass is deterministic: dQ and dK/dV are computed by separate kernels that each own
// their outputs (no atomics), GQA groups are summed inside one CTA in head order.
// Part of <meap/cuda.hpp>; compiled by nvcc only.
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
#include <meap/kernels/attention.hpp>
#include <meap/kernels/backend.hpp>
#include <meap/kernels/options.hpp>
#include <meap/kernels/cuda/attention_plan.hpp>
#include <meap/kernels/cuda/attention_simt.cuh>
#include <meap/kernels/cuda/attention_tc.cuh>
#include <meap/kernels/cuda/support.hpp>

#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace meap {

namespace detail::cuda_attention {

// The limits of the launch grids and of float64, checked before any CUDA call (so that the
// argument test runs without a GPU).
template <class E>
void check_limits(std::string_view function, const cpu_impl::attention_shape& s) {
  if constexpr (std::is_same_v<std::remove_const_t<E>, double>)
    throw_argument_error(function, "q", std::string("dtype float64"),
                         "float32, float16 or bfloat16 (meap::cuda has no float64 attention; use meap::cpu for "
                         "double)");
  check_argument(s.length <= max_sequence_length, function, "q", "length T = " + std::to_string(s.length),
                 "T <= " + std::to_string(max_sequence_length) + " on meap::cuda (65535 row blocks of the launch grid)");
  check_argument(s.batch * s.q_heads * 2 <= max_grid_x, function, "q", "B * Hq = " + std::to_string(s.batch * s.q_heads),
                 "B * Hq <= " + std::to_string(max_grid_x / 2) + " on meap::cuda (the launch grid)");
}

// Compute capability major version of the current device, cached per ordinal.
inline void check_compute_capability(std::string_view function) {
  static std::array<std::atomic<int>, 64> majors{};  // 0: not queried yet
  int ordinal = 0;
  MEAP_CUDA_CHECK(cudaGetDevice(&ordinal));
  int major = ordinal < 64 ? majors[static_cast<std::size_t>(ordinal)].load(std::memory_order_relaxed) : 0;
  int minor = 0;
  if (major == 0) {
    MEAP_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, ordinal));
    if (ordinal < 64) majors[static_cast<std::size_t>(ordinal)].store(major, std::memory_order_relaxed);
  }
  if (major >= 8) return;
  MEAP_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, ordinal));
  throw_argument_error(function, "device",
                       "CUDA device " + std::to_string(ordinal) + " of compute capability " + std::to_string(major) +
                           "." + std::to_string(minor),
                       "a GPU of compute capability 8.0 or newer (sm_80+; the kernels use mma.sync, ldmatrix and "
                       "cp.async)");
}

inline bool aligned_16(const void* pointer) { return reinterpret_cast<std::uintptr_t>(pointer) % 16 == 0; }

// The virtual architecture (PTX version x 10, e.g. 800) the tensor-core kernels that run on the
// current device were generated for, cached per device. Below 800 their bodies are traps (the
// mma.sync / ldmatrix / cp.async wrappers in attention_mma.cuh compile to __trap() there): a
// consumer built for sm_75 only, say, gets PTX for compute_75 that the driver compiles for an
// H100. cudaFuncGetAttributes reads the attributes of the image the runtime picked for the device
// (it does not launch or wait); the front door asks before the first launch.
inline int tensor_core_architecture() {
  static std::array<std::atomic<int>, 64> cached{};  // 0: not queried yet
  int ordinal = 0;
  MEAP_CUDA_CHECK(cudaGetDevice(&ordinal));
  if (ordinal < 64) {
    const int known = cached[static_cast<std::size_t>(ordinal)].load(std::memory_order_relaxed);
    if (known != 0) return known;
  }
  cudaFuncAttributes attributes{};
  MEAP_CUDA_CHECK(cudaFuncGetAttributes(&attributes, tc_forward_kernel<__nv_bfloat16, 64>));
  const int architecture = attributes.ptxVersion * 10;
  if (ordinal < 64) cached[static_cast<std::size_t>(ordinal)].store(architecture, std::memory_order_relaxed);
  return architecture;
}

// Why the tensor-core kernels cannot take a call (empty: they can). Asks the device last.
inline std::string tensor_core_obstacle(bool sixteen_bit, index_t head_dim, bool aligned) {
  if (!sixteen_bit) return "float32 inputs (the tensor-core kernels take half or bfloat16)";
  if (head_dim % 8 != 0) return "head dim D = " + std::to_string(head_dim) + ", not a multiple of 8";
  if (!aligned) return "a view whose data is not 16-byte aligned";
  const int architecture = tensor_core_architecture();
  if (architecture < 800)
    return "kernels compiled for compute_" + std::to_string(architecture / 10) +
           " (they need sm_80 or newer: list 80 or above in CUDA_ARCHITECTURES)";
  return {};
}

// The path a call takes under options.path; throws for tensor_cores when they cannot run.
inline path decide_path(std::string_view function, attention_path wanted, bool sixteen_bit, index_t head_dim,
                        bool aligned) {
  if (wanted == attention_path::fma) return path::simt;
  const std::string obstacle = tensor_core_obstacle(sixteen_bit, head_dim, aligned);
  if (obstacle.empty()) return path::tensor_core;
  if (wanted == attention_path::tensor_cores)
    throw_argument_error(function, "options.path", "tensor_cores with " + obstacle,
                         "half or bfloat16 views, 16-byte aligned, D % 8 == 0, and kernels built for sm_80+ "
                         "(or attention_path::automatic)");
  return path::simt;
}

template <class T>
attention_params params_for(const cpu_impl::attention_shape& s, const attention_options<cuda>& options) {
  attention_params p;
  p.batch = static_cast<int>(s.batch);
  p.length = static_cast<int>(s.length);
  p.q_heads = static_cast<int>(s.q_heads);
  p.kv_heads = static_cast<int>(s.kv_heads);
  p.head_dim = static_cast<int>(s.head_dim);
  p.group = static_cast<int>(s.group());
  const double scale = options.scale ? *options.scale : 1.0 / std::sqrt(static_cast<double>(s.head_dim));
  p.scale = static_cast<float>(scale);
  p.scale_log2 = static_cast<float>(scale * 1.4426950408889634);
  return p;
}

// Launches `kernel` (grid x: tasks, y: blocks) after raising its shared-memory limit when needed.
inline void launch(void (*kernel)(attention_params), grid_shape grid, int threads, std::size_t smem_bytes,
                   const cuda& device, const attention_params& p) {
  if (smem_bytes > 48 * 1024)
    MEAP_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem_bytes)));
  kernel<<<dim3(static_cast<unsigned>(grid.x), static_cast<unsigned>(grid.y)), static_cast<unsigned>(threads),
           smem_bytes, device.stream>>>(p);
  MEAP_CUDA_CHECK(cudaGetLastError());
}

// The (min, max) segment id of every 16-position chunk, (B, chunks) pairs, on the stream; the
// returned tensor owns them (freed stream-ordered). No segment ids: an empty tensor.
inline tensor<std::int32_t, cuda> segment_table(const cuda& device, const attention_options<cuda>& options,
                                                attention_params& p) {
  if (options.segment_ids.rank() == 0) return {};
  p.chunks = static_cast<int>(blocks_of(p.length, segment_chunk));
  tensor<std::int32_t, cuda> table(device, dims{p.batch, p.chunks, 2});
  static_assert(sizeof(segment_range) == 2 * sizeof(std::int32_t) && alignof(segment_range) == alignof(std::int32_t));
  p.segments = options.segment_ids.data();
  p.segment_chunks = reinterpret_cast<const segment_range*>(table.data());
  const long long total = static_cast<long long>(p.batch) * p.chunks;
  const auto blocks = static_cast<unsigned>(total / 256 + 1 < 4096 ? total / 256 + 1 : 4096);
  segment_chunks_kernel<><<<blocks, 256, 0, device.stream>>>(
      p.segments, reinterpret_cast<segment_range*>(table.data()), p.batch, p.length, p.chunks);
  MEAP_CUDA_CHECK(cudaGetLastError());
  return table;
}

// Calls f(std::integral_constant<int, bucket>) for the head-dim bucket of D.
template <class F>
void with_bucket(int head_dim, F&& f) {
  switch (head_dim_bucket(head_dim)) {
    case 64: f(std::integral_constant<int, 64>{}); break;
    case 128: f(std::integral_constant<int, 128>{}); break;
    default: f(std::integral_constant<int, 256>{}); break;
  }
}

template <class T>
void forward(const cuda& device, const cpu_impl::attention_shape& s, const T* q, const T* k, const T* v, T* out,
             float* lse, const attention_options<cuda>& options) {
  using E = native_t<T>;
  attention_params p = params_for<T>(s, options);
  p.q = q;
  p.k = k;
  p.v = v;
  p.out_write = out;
  p.lse_write = lse;
  const auto table = segment_table(device, options, p);
  const bool tensor_cores =
      decide_path("meap::attention_forward", options.path, sizeof(T) == 2, s.head_dim,
                  aligned_16(q) && aligned_16(k) && aligned_16(v) && aligned_16(out)) == path::tensor_core;
  with_bucket(p.head_dim, [&](auto bucket) {
    constexpr int Bucket = decltype(bucket)::value;
    if constexpr (sizeof(T) == 2) {
      if (tensor_cores) {
        constexpr tc_forward_tiles cfg = tc_forward_config(Bucket);
        launch(tc_forward_kernel<E, Bucket>, row_grid(s.batch, s.q_heads, 1, s.length, cfg.block_m), cfg.threads(),
               cfg.smem_bytes(2), device, p);
        return;
      }
    }
    constexpr simt_tiles cfg = simt_config(Bucket);
    launch(simt_row_kernel<E, Bucket, row_mode::forward>, row_grid(s.batch, s.q_heads, 1, s.length, cfg.rows),
           cfg.threads(), cfg.row_kernel_smem_bytes(), device, p);
  });
}

template <class T>
void backward(const cuda& device, const cpu_impl::attention_shape& s, const T* q, const T* k, const T* v, const T* out,
              const float* lse, const T* d_out, T* d_q, T* d_k, T* d_v, const attention_options<cuda>& options) {
  using E = native_t<T>;
  attention_params p = params_for<T>(s, options);
  p.q = q;
  p.k = k;
  p.v = v;
  p.out = out;
  p.d_out = d_out;
  p.lse = lse;
  p.d_q = d_q;
  p.d_k = d_k;
  p.d_v = d_v;
  const auto table = segment_table(device, options, p);

  // delta = rowsum(dO o O), (B, Hq, T) float, one warp per row.
  tensor<float, cuda> delta(device, dims{s.batch, s.q_heads, s.length});
  p.delta = delta.data();
  p.delta_write = delta.data();
  const long long rows = s.batch * s.length * s.q_heads;
  const auto delta_blocks = static_cast<unsigned>(rows / 8 + 1 < 65535 ? rows / 8 + 1 : 65535);
  delta_kernel<E><<<delta_blocks, 256, 0, device.stream>>>(p);
  MEAP_CUDA_CHECK(cudaGetLastError());

  const bool tensor_cores =
      decide_path("meap::attention_backward", options.path, sizeof(T) == 2, s.head_dim,
                  aligned_16(q) && aligned_16(k) && aligned_16(v) && aligned_16(d_out) && aligned_16(d_q) &&
                      aligned_16(d_k) && aligned_16(d_v)) == path::tensor_core;
  with_bucket(p.head_dim, [&](auto bucket) {
    constexpr int Bucket = decltype(bucket)::value;
    if constexpr (sizeof(T) == 2) {
      if (tensor_cores) {
        constexpr tc_dq_tiles dq = tc_dq_config(Bucket);
        constexpr tc_dkdv_tiles dkdv = tc_dkdv_config(Bucket);
        launch(tc_dq_kernel<E, Bucket>, row_grid(s.batch, s.q_heads, dq.d_split, s.length, dq.block_m), dq.threads(),
               dq.smem_bytes(2), device, p);
        launch(tc_dkdv_kernel<E, Bucket>, key_grid(s.batch, s.kv_heads, dkdv.d_split, s.length, dkdv.block_n),
               dkdv.threads(), dkdv.smem_bytes(2), device, p);
        return;
      }
    }
    constexpr simt_tiles cfg = simt_config(Bucket);
    launch(simt_row_kernel<E, Bucket, row_mode::dq>, row_grid(s.batch, s.q_heads, 1, s.length, cfg.rows), cfg.threads(),
           cfg.row_kernel_smem_bytes(), device, p);
    launch(simt_col_kernel<E, Bucket, col_mode::dkdv>, key_grid(s.batch, s.kv_heads, cfg.d_split, s.length, cfg.rows),
           cfg.threads(), cfg.col_kernel_smem_bytes(), device, p);
  });
}

// The probe: lse by the float forward (no values), then P or the key mass from it.
template <class T>
void probe(const cuda& device, const cpu_impl::attention_shape& s, const T* q, const T* k, float* probabilities,
           float* key_mass, const attention_options<cuda>& options) {
  using E = native_t<T>;
  attention_params p = params_for<T>(s, options);
  p.q = q;
  p.k = k;
  const auto table = segment_table(device, options, p);
  tensor<float, cuda> lse(device, dims{s.batch, s.q_heads, s.length});
  p.lse_write = lse.data();
  p.lse = lse.data();
  p.probabilities = probabilities;
  p.key_mass = key_mass;
  with_bucket(p.head_dim, [&](auto bucket) {
    constexpr int Bucket = decltype(bucket)::value;
    constexpr simt_tiles cfg = simt_config(Bucket);
    const grid_shape rows = row_grid(s.batch, s.q_heads, 1, s.length, cfg.rows);
    launch(simt_row_kernel<E, Bucket, row_mode::lse_only>, rows, cfg.threads(), cfg.row_kernel_smem_bytes(), device, p);
    if (probabilities != nullptr)
      launch(simt_row_kernel<E, Bucket, row_mode::probabilities>, rows, cfg.threads(), cfg.row_kernel_smem_bytes(),
             device, p);
    if (key_mass != nullptr)
      launch(simt_col_kernel<E, Bucket, col_mode::key_mass>, key_grid(s.batch, s.q_heads, 1, s.length, cfg.rows),
             cfg.threads(), cfg.col_kernel_smem_bytes(), device, p);
  });
}

// ---------------------------------------------------------------------------------------------
// Attention over a key/value cache (generation). One CTA per query row (b, t, h): the scores of a
// chunk of keys go to shared memory (one warp per key, lanes over D), the chunk's softmax is merged
// into the running max and sum (flash-decoding without the split), and each thread accumulates
// the values of one or two of the D output columns. Decode steps have B * Hq rows of Tq = 1: small
// work whose cost is reading the cache once, which this does with coalesced rows.
//   q, out: (B, Tq, Hq, D)   k, v: (B, S, Hkv, D)   start: (B) int32 on the device
inline constexpr int cached_threads = 128;  // D <= 256: at most two output columns per thread
inline constexpr int cached_chunk = 2048;   // keys per pass: 8 KiB of scores in shared memory

struct float_max {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

template <class T>
__global__ void __launch_bounds__(cached_threads)
    cached_attention_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                            const std::int32_t* __restrict__ start, T* __restrict__ out, int queries, int capacity,
                            int q_heads, int kv_heads, int head_dim, float scale) {
  using block_reduce = cub::BlockReduce<float, cached_threads>;
  __shared__ typename block_reduce::TempStorage reduce_storage;
  __shared__ float q_row[max_attention_head_dim];
  __shared__ float scores[cached_chunk];
  __shared__ float broadcast;
  const long long row = blockIdx.x;  // ((b * Tq) + t) * Hq + h, the row of q and out
  const int h = static_cast<int>(row % q_heads);
  const int t = static_cast<int>((row / q_heads) % queries);
  const long long b = row / (static_cast<long long>(q_heads) * queries);
  const int hk = h / (q_heads / kv_heads);
  const int seen = start[b] + t + 1;  // keys [0, seen)
  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
  constexpr int warps = cached_threads / 32;
  for (int d = static_cast<int>(threadIdx.x); d < head_dim; d += cached_threads)
    q_row[d] = cuda_impl::to_float(q[row * head_dim + d]) * scale;
  const long long key_stride = static_cast<long long>(kv_heads) * head_dim;
  const T* keys = k + (b * capacity * kv_heads + hk) * head_dim;
  const T* values = v + (b * capacity * kv_heads + hk) * head_dim;
  float running_max = -INFINITY, running_sum = 0.f, acc0 = 0.f, acc1 = 0.f;
  const int d0 = static_cast<int>(threadIdx.x), d1 = d0 + cached_threads;
  __syncthreads();
  for (int c0 = 0; c0 < seen; c0 += cached_chunk) {
    const int n = min(cached_chunk, seen - c0);
    for (int j = warp; j < n; j += warps) {
      const T* key = keys + (c0 + j) * key_stride;
      float dot = 0.f;
      for (int d = lane; d < head_dim; d += 32) dot = fmaf(q_row[d], cuda_impl::to_float(key[d]), dot);
      for (int offset = 16; offset > 0; offset /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
      if (lane == 0) scores[j] = dot;
    }
    __syncthreads();
    float local_max = -INFINITY;
    for (int j = static_cast<int>(threadIdx.x); j < n; j += cached_threads) local_max = fmaxf(local_max, scores[j]);
    const float chunk_max = block_reduce(reduce_storage).Reduce(local_max, float_max{});
    if (threadIdx.x == 0) broadcast = fmaxf(running_max, chunk_max);
    __syncthreads();
    const float new_max = broadcast;
    float local_sum = 0.f;
    for (int j = static_cast<int>(threadIdx.x); j < n; j += cached_threads) {
      const float e = expf(scores[j] - new_max);
      scores[j] = e;
      local_sum += e;
    }
    __syncthreads();  // reduce_storage is reused, and every exp is written before the values pass
    const float chunk_sum = block_reduce(reduce_storage).Sum(local_sum);
    if (threadIdx.x == 0) broadcast = chunk_sum;
    const float correction = running_max == -INFINITY ? 0.f : expf(running_max - new_max);
    acc0 *= correction;
    acc1 *= correction;
    for (int j = 0; j < n; ++j) {
      const float p = scores[j];
      const T* value = values + (c0 + j) * key_stride;
      if (d0 < head_dim) acc0 = fmaf(p, cuda_impl::to_float(value[d0]), acc0);
      if (d1 < head_dim) acc1 = fmaf(p, cuda_impl::to_float(value[d1]), acc1);
    }
    __syncthreads();
    running_sum = running_sum * correction + broadcast;
    running_max = new_max;
    __syncthreads();  // the next chunk overwrites scores and broadcast
  }
  const float inverse = 1.f / running_sum;
  if (d0 < head_dim) out[row * head_dim + d0] = cuda_impl::from_float<T>(acc0 * inverse);
  if (d1 < head_dim) out[row * head_dim + d1] = cuda_impl::from_float<T>(acc1 * inverse);
}

template <class T>
void forward_cached(const cuda& device, const cpu_impl::cached_attention_shape& s, const T* q, const T* k, const T* v,
                    std::span<const index_t> start, T* out, std::optional<double> scale) {
  // The start positions travel as a small device array. cudaMemcpyAsync from pageable memory
  // stages the source before it returns (CUDA's "API synchronization behavior"), so the host
  // vector may die at the end of this function; the device copy is freed stream-ordered.
  std::vector<std::int32_t> host(start.begin(), start.end());
  tensor<std::int32_t, cuda> positions(device, dims{s.batch});
  MEAP_CUDA_CHECK(cudaMemcpyAsync(positions.data(), host.data(), host.size() * sizeof(std::int32_t),
                                  cudaMemcpyHostToDevice, device.stream));
  const double scale_value = scale ? *scale : 1.0 / std::sqrt(static_cast<double>(s.head_dim));
  const long long rows = static_cast<long long>(s.batch) * s.queries * s.q_heads;
  cached_attention_kernel<T><<<static_cast<unsigned>(rows), cached_threads, 0, device.stream>>>(
      q, k, v, positions.data(), out, static_cast<int>(s.queries), static_cast<int>(s.capacity),
      static_cast<int>(s.q_heads), static_cast<int>(s.kv_heads), static_cast<int>(s.head_dim),
      static_cast<float>(scale_value));
  MEAP_CUDA_CHECK(cudaGetLastError());
}

}  // namespace detail::cuda_attention

template <>
struct detail::attention_kernels<cuda> {
  template <class T>
  static void check_limits(std::string_view function, const cpu_impl::attention_shape& s) {
    cuda_attention::check_limits<T>(function, s);
  }

  template <class T>
  static void forward(const cuda& device, std::string_view function, const cpu_impl::attention_shape& s,
                      const tensor_view<const T, cuda>& q, const tensor_view<const T, cuda>& k,
                      const tensor_view<const T, cuda>& v, const tensor_view<T, cuda>& out,
                      const tensor_view<accumulate_t<T>, cuda>& lse, const attention_options<cuda>& options) {
    if constexpr (!std::is_same_v<T, double>) {  // (double was rejected by check_limits)
      cuda_attention::check_compute_capability(function);
      cuda_attention::forward<T>(device, s, q.data(), k.data(), v.data(), out.data(), lse.data(), options);
    }
  }

  template <class T>
  static void backward(const cuda& device, std::string_view function, const cpu_impl::attention_shape& s,
                       const tensor_view<const T, cuda>& q, const tensor_view<const T, cuda>& k,
                       const tensor_view<const T, cuda>& v, const tensor_view<const T, cuda>& out,
                       const tensor_view<const accumulate_t<T>, cuda>& lse, const tensor_view<const T, cuda>& d_out,
                       const tensor_view<T, cuda>& d_q, const tensor_view<T, cuda>& d_k, const tensor_view<T, cuda>& d_v,
                       const attention_options<cuda>& options) {
    if constexpr (!std::is_same_v<T, double>) {
      cuda_attention::check_compute_capability(function);
      cuda_attention::backward<T>(device, s, q.data(), k.data(), v.data(), out.data(), lse.data(), d_out.data(),
                                  d_q.data(), d_k.data(), d_v.data(), options);
    }
  }

  template <class T>
  static void check_cached_limits(std::string_view function, const cpu_impl::cached_attention_shape& s) {
    if constexpr (std::is_same_v<std::remove_const_t<T>, double>)
      throw_argument_error(function, "q", std::string("dtype float64"),
                           "float32, float16 or bfloat16 (meap::cuda has no float64 attention; use meap::cpu for "
                           "double)");
    check_argument(s.capacity <= INT_MAX / std::max<index_t>(1, s.kv_heads * s.head_dim), function, "k_cache",
                   "S = " + std::to_string(s.capacity) + " positions",
                   "a cache whose row offsets fit in int on meap::cuda");
    check_argument(s.batch * s.queries * s.q_heads <= cuda_attention::max_grid_x, function, "q",
                   "B * Tq * Hq = " + std::to_string(s.batch * s.queries * s.q_heads),
                   "at most " + std::to_string(cuda_attention::max_grid_x) + " query rows on meap::cuda (one CTA each)");
  }

  template <class T>
  static void forward_cached(const cuda& device, std::string_view function, const cpu_impl::cached_attention_shape& s,
                             const tensor_view<const T, cuda>& q, const tensor_view<const T, cuda>& k_cache,
                             const tensor_view<const T, cuda>& v_cache, std::span<const index_t> start,
                             const tensor_view<T, cuda>& out, std::optional<double> scale) {
    if constexpr (!std::is_same_v<T, double>) {
      cuda_attention::check_compute_capability(function);
      cuda_attention::forward_cached<T>(device, s, q.data(), k_cache.data(), v_cache.data(), start, out.data(), scale);
    }
  }

  // probabilities (B, Hq, T, T) or key_mass (B, Hq, T), whichever is not null. Float for every
  // element type (the float-FMA kernels).
  template <class T>
  static void probe(const cuda& device, std::string_view function, const cpu_impl::attention_shape& s,
                    const tensor_view<const T, cuda>& q, const tensor_view<const T, cuda>& k,
                    accumulate_t<T>* probabilities, accumulate_t<T>* key_mass, const attention_options<cuda>& options) {
    if constexpr (!std::is_same_v<T, double>) {
      cuda_attention::check_compute_capability(function);
      cuda_attention::probe<T>(device, s, q.data(), k.data(), probabilities, key_mass, options);
    }
  }
};

// Which kernels attention_forward would run for these views and options on the current device:
// attention_path::tensor_cores or attention_path::fma (never automatic). Throws what
// attention_forward would throw for options.path = tensor_cores when they cannot run.
template <class T>
  requires floating_element<T>
attention_path attention_kernel_path(const tensor_view<const T, cuda>& q, const tensor_view<const T, cuda>& k,
                                     const tensor_view<const T, cuda>& v, const tensor_view<T, cuda>& out,
                                     const attention_options<cuda>& options = {}) {
  namespace impl = detail::cuda_attention;
  constexpr std::string_view function = "meap::attention_kernel_path";
  const auto s = detail::check_attention_inputs<T, cuda>(function, q, k, &v, options);
  impl::check_limits<T>(function, s);
  const bool aligned = impl::aligned_16(q.data()) && impl::aligned_16(k.data()) && impl::aligned_16(v.data()) &&
                       impl::aligned_16(out.data());
  return impl::decide_path(function, options.path, sizeof(T) == 2, s.head_dim, aligned) == detail::cuda_attention::path::tensor_core
             ? attention_path::tensor_cores
             : attention_path::fma;
}

}  // namespace meap
