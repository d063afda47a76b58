// meap/kernels/cuda/attention.hpp: the meap::cuda overloads of <meap/kernels/attention.hpp>:
// causal attention forward and backward with GQA and segment ids, and the probe
// (attention_probabilities, attention_key_mass). Same signatures, semantics, argument checks and
// error messages as the meap::cpu versions; the CPU kernel is the test oracle. See
// docs/kernels.md ("CUDA attention") for the design and the tiles.
//
//   q: (B, T, Hq, D)   k, v: (B, T, Hkv, D)   out: (B, T, Hq, D)   lse: (B, Hq, T) float
//   segment_ids: (B, T) int32 (optional), all on one CUDA device; work is enqueued on the tag's
//   stream and the functions return without synchronizing (scratch memory is freed stream-ordered).
//
// Paths (chosen per call, see choose_path in attention_plan.hpp):
//   * half / bfloat16 with D % 8 == 0 and 16-byte-aligned views: tensor cores (mma.sync, sm_80+),
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
#include <meap/kernels/cuda/attention_plan.hpp>
#include <meap/kernels/cuda/attention_simt.cuh>
#include <meap/kernels/cuda/attention_tc.cuh>

#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace meap {

// What the allocating attention_forward returns on meap::cuda (device tensors).
template <class T>
struct cuda_attention_result {
  tensor<T, cuda> out;                // (B, T, Hq, D)
  tensor<accumulate_t<T>, cuda> lse;  // (B, Hq, T)
};

namespace detail::cuda_attention {

template <class E>
void reject_double(std::string_view function) {
  if constexpr (std::is_same_v<std::remove_const_t<E>, double>)
    throw_argument_error(function, "q", std::string("dtype float64"),
                         "float32, float16 or bfloat16 (meap::cuda has no float64 attention; use meap::cpu for "
                         "double)");
}

// "cuda:1": built with append (GCC 12 at -O3 reports a bogus -Wrestrict in the inlined
// `"literal" + std::string&&` of meap::to_string(device_location), and nvcc's host pass gets no
// -Wno-restrict from meap's build).
inline std::string location_text(const device_location& where) {
  std::string text(where.kind == device_kind::cpu ? "cpu" : "cuda");
  if (where.kind != device_kind::cpu) {
    text.append(":");
    text.append(std::to_string(where.ordinal));
  }
  return text;
}

// check_same_device's check and message.
template <class A, class B>
void check_same_location(std::string_view function, std::string_view name_a, const tensor_view<A, cuda>& a,
                         std::string_view name_b, const tensor_view<B, cuda>& b) {
  if (a.location() == b.location()) return;
  std::string got("memory on ");
  got.append(location_text(b.location()));
  std::string expected("memory on ");
  expected.append(location_text(a.location())).append(", where '").append(name_a).append("' lives (device mismatch)");
  throw_argument_error(function, name_b, got, expected);
}

// The CUDA twin of detail::check_attention_inputs: the same checks and messages, plus every view
// on q's device and the grid limits.
template <class E>
cpu_impl::attention_shape check_inputs(std::string_view function, const tensor_view<const E, cuda>& q,
                                       const tensor_view<const E, cuda>& k, const tensor_view<const E, cuda>* v,
                                       const attention_options<cuda>& options) {
  reject_double<E>(function);
  check_argument(q.rank() == 4, function, "q", "shape " + to_string(q.shape()), "a rank-4 shape (B, T, Hq, D)");
  const index_t B = q.size(0), T = q.size(1), Hq = q.size(2), D = q.size(3);
  check_argument(1 <= D && D <= max_attention_head_dim, function, "q", "head dim D = " + std::to_string(D),
                 "1 <= D <= " + std::to_string(max_attention_head_dim) + " (the last axis of q)");
  check_argument(k.rank() == 4 && k.size(0) == B && k.size(1) == T && k.size(3) == D, function, "k",
                 "shape " + to_string(k.shape()),
                 "shape (B, T, Hkv, D) = (" + std::to_string(B) + ", " + std::to_string(T) + ", Hkv, " +
                     std::to_string(D) + "), matching q " + to_string(q.shape()));
  const index_t Hkv = k.size(2);
  check_argument(Hkv >= 1 && Hq >= 1 && Hq % Hkv == 0, function, "k", "Hkv = " + std::to_string(Hkv),
                 "a kv head count that divides Hq = " + std::to_string(Hq) + " (GQA groups of equal size)");
  if (v != nullptr) check_shape(function, "v", *v, k.shape());
  check_contiguous(function, "q", q);
  check_contiguous(function, "k", k);
  if (v != nullptr) check_contiguous(function, "v", *v);
  if (options.segment_ids.rank() != 0) {
    check_shape(function, "segment_ids", options.segment_ids, dims{B, T});
    check_contiguous(function, "segment_ids", options.segment_ids);
  }
  if (options.scale)
    check_argument(std::isfinite(*options.scale) && *options.scale > 0, function, "scale", *options.scale,
                   "a finite positive scale (or none, for 1 / sqrt(D))");
  check_same_location(function, "q", q, "k", k);
  if (v != nullptr) check_same_location(function, "q", q, "v", *v);
  if (options.segment_ids.rank() != 0) check_same_location(function, "q", q, "segment_ids", options.segment_ids);
  check_argument(T <= max_sequence_length, function, "q", "length T = " + std::to_string(T),
                 "T <= " + std::to_string(max_sequence_length) + " on meap::cuda (65535 row blocks of the launch grid)");
  check_argument(B * Hq * 2 <= max_grid_x, function, "q", "B * Hq = " + std::to_string(B * Hq),
                 "B * Hq <= " + std::to_string(max_grid_x / 2) + " on meap::cuda (the launch grid)");
  return {B, T, Hq, Hkv, D};
}

template <class T, class U>
void check_output_on(std::string_view function, const tensor_view<const T, cuda>& q, std::string_view argument,
                     const tensor_view<U, cuda>& view, const dims& expected) {
  detail::check_output(function, argument, view, expected);
  check_same_location(function, "q", q, argument, view);
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
  const bool tensor_cores = choose_path(sizeof(T) == 2, s.head_dim, aligned_16(q) && aligned_16(k) && aligned_16(v) &&
                                                                        aligned_16(out)) == path::tensor_core;
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

  const bool tensor_cores = choose_path(sizeof(T) == 2, s.head_dim,
                                        aligned_16(q) && aligned_16(k) && aligned_16(v) && aligned_16(d_out) &&
                                            aligned_16(d_q) && aligned_16(d_k) && aligned_16(d_v)) == path::tensor_core;
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

}  // namespace detail::cuda_attention

// Forward pass into caller memory. out: (B, T, Hq, D), lse: (B, Hq, T).
template <floating_element T>
void attention_forward(const cuda& device, std::type_identity_t<tensor_view<const T, cuda>> q,
                       std::type_identity_t<tensor_view<const T, cuda>> k,
                       std::type_identity_t<tensor_view<const T, cuda>> v, const tensor_view<T, cuda>& out,
                       const tensor_view<accumulate_t<T>, cuda>& lse, const attention_options<cuda>& options = {}) {
  namespace impl = detail::cuda_attention;
  constexpr std::string_view function = "meap::attention_forward";
  const auto s = impl::check_inputs<T>(function, q, k, &v, options);
  impl::check_output_on(function, q, "out", out, q.shape());
  impl::check_output_on(function, q, "lse", lse, dims{s.batch, s.q_heads, s.length});
  if (q.empty()) return;
  if constexpr (!std::is_same_v<T, double>) {
    impl::check_compute_capability(function);
    impl::forward<T>(device, s, q.data(), k.data(), v.data(), out.data(), lse.data(), options);
  }
}

// Forward pass into new device tensors. T is taken from q (const or not); k and v must match it.
template <class T>
  requires floating_element<std::remove_const_t<T>>
cuda_attention_result<std::remove_const_t<T>> attention_forward(const cuda& device, const tensor_view<T, cuda>& q,
                                                                std::type_identity_t<tensor_view<T, cuda>> k,
                                                                std::type_identity_t<tensor_view<T, cuda>> v,
                                                                const attention_options<cuda>& options = {}) {
  using U = std::remove_const_t<T>;
  detail::cuda_attention::reject_double<U>("meap::attention_forward");
  check_argument(q.rank() == 4, "meap::attention_forward", "q", "shape " + to_string(q.shape()),
                 "a rank-4 shape (B, T, Hq, D)");
  cuda_attention_result<U> result{tensor<U, cuda>(device, q.shape()),
                                  tensor<accumulate_t<U>, cuda>(device, dims{q.size(0), q.size(2), q.size(1)})};
  attention_forward<U>(device, q, k, v, result.out.view(), result.lse.view(), options);
  return result;
}

// Backward pass. Given the forward's inputs, its out and lse, and d_out = dL/d(out), writes
// d_q (B, T, Hq, D) and d_k, d_v (B, T, Hkv, D). Use the same options as the forward pass.
template <floating_element T>
void attention_backward(const cuda& device, std::type_identity_t<tensor_view<const T, cuda>> q,
                        std::type_identity_t<tensor_view<const T, cuda>> k,
                        std::type_identity_t<tensor_view<const T, cuda>> v,
                        std::type_identity_t<tensor_view<const T, cuda>> out,
                        std::type_identity_t<tensor_view<const accumulate_t<T>, cuda>> lse,
                        std::type_identity_t<tensor_view<const T, cuda>> d_out, const tensor_view<T, cuda>& d_q,
                        std::type_identity_t<tensor_view<T, cuda>> d_k, std::type_identity_t<tensor_view<T, cuda>> d_v,
                        const attention_options<cuda>& options = {}) {
  namespace impl = detail::cuda_attention;
  constexpr std::string_view function = "meap::attention_backward";
  const auto s = impl::check_inputs<T>(function, q, k, &v, options);
  impl::check_output_on(function, q, "out", out, q.shape());
  impl::check_output_on(function, q, "lse", lse, dims{s.batch, s.q_heads, s.length});
  impl::check_output_on(function, q, "d_out", d_out, q.shape());
  impl::check_output_on(function, q, "d_q", d_q, q.shape());
  impl::check_output_on(function, q, "d_k", d_k, k.shape());
  impl::check_output_on(function, q, "d_v", d_v, k.shape());
  if (q.empty()) return;
  if constexpr (!std::is_same_v<T, double>) {
    impl::check_compute_capability(function);
    impl::backward<T>(device, s, q.data(), k.data(), v.data(), out.data(), lse.data(), d_out.data(), d_q.data(),
                      d_k.data(), d_v.data(), options);
  }
}

// Probe for analysis (O(T^2) memory): P[b, h, i, j] (B, Hq, T, T), 0 where masked. Float for
// every element type (the CPU gives accumulate_t<T>, the same except for double).
template <class T>
  requires floating_element<std::remove_const_t<T>>
void attention_probabilities(const cuda& device, const tensor_view<T, cuda>& q, std::type_identity_t<tensor_view<T, cuda>> k,
                             const tensor_view<accumulate_t<std::remove_const_t<T>>, cuda>& probabilities,
                             const attention_options<cuda>& options = {}) {
  using U = std::remove_const_t<T>;
  namespace impl = detail::cuda_attention;
  constexpr std::string_view function = "meap::attention_probabilities";
  const auto s = impl::check_inputs<U>(function, q, k, nullptr, options);
  impl::check_output_on<U>(function, q, "probabilities", probabilities, dims{s.batch, s.q_heads, s.length, s.length});
  if (q.empty()) return;
  if constexpr (!std::is_same_v<U, double>) {
    impl::check_compute_capability(function);
    impl::probe<U>(device, s, q.data(), k.data(), probabilities.data(), nullptr, options);
  }
}

// Probe: key_mass[b, h, j] = sum_i P[b, h, i, j] (B, Hq, T), in O(T) memory, deterministic (one
// CTA owns each key block and sums its query blocks in order).
template <class T>
  requires floating_element<std::remove_const_t<T>>
void attention_key_mass(const cuda& device, const tensor_view<T, cuda>& q, std::type_identity_t<tensor_view<T, cuda>> k,
                        const tensor_view<accumulate_t<std::remove_const_t<T>>, cuda>& key_mass,
                        const attention_options<cuda>& options = {}) {
  using U = std::remove_const_t<T>;
  namespace impl = detail::cuda_attention;
  constexpr std::string_view function = "meap::attention_key_mass";
  const auto s = impl::check_inputs<U>(function, q, k, nullptr, options);
  impl::check_output_on<U>(function, q, "key_mass", key_mass, dims{s.batch, s.q_heads, s.length});
  if (q.empty()) return;
  if constexpr (!std::is_same_v<U, double>) {
    impl::check_compute_capability(function);
    impl::probe<U>(device, s, q.data(), k.data(), nullptr, key_mass.data(), options);
  }
}

}  // namespace meap
