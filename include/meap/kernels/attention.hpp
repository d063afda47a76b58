// meap/kernels/attention.hpp: causal self-attention, forward and backward, with grouped kv heads
// (GQA / MQA) and optional segment ids for packed documents, on every device. See
// docs/kernels.md for the maths and both implementations (kernels/cpu/attention.hpp,
// kernels/cuda/attention.hpp).
//
//   q: (B, T, Hq, D)   k, v: (B, T, Hkv, D)   Hq = G * Hkv; query head h reads kv head h / G
//   out: (B, T, Hq, D) lse: (B, Hq, T)        segment_ids: (B, T) int32, optional
//
// out[b, i, h] = sum_{j <= i, seg_j = seg_i} softmax_j(scale * q_i . k_j) v_j, and lse is the
// natural log of that softmax's denominator, which attention_backward uses to recompute the
// probabilities block by block (no T x T matrix is kept). The scale defaults to 1 / sqrt(D).
//
// Element types: double and float compute in their own type on the CPU; half and bfloat16 are
// widened to float, computed in float and rounded once. meap::cuda takes float, half and
// bfloat16 (double is rejected with a meap::error). lse and the probe's outputs are
// accumulate_t<T> (double for double, else float). Every view must be contiguous (row-major) and
// on one device. Outputs are overwritten, never accumulated into.
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/dtype.hpp>
#include <meap/core/error.hpp>
#include <meap/core/tensor.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/backend.hpp>
#include <meap/kernels/options.hpp>
#include <meap/kernels/cpu/attention.hpp>

#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

namespace meap {

namespace detail {

// Validates q, k, v and the options; returns the shape. `function` names the caller in errors.
template <class E, class Device>
cpu_impl::attention_shape check_attention_inputs(std::string_view function, const tensor_view<const E, Device>& q,
                                                 const tensor_view<const E, Device>& k,
                                                 const tensor_view<const E, Device>* v,
                                                 const attention_options<Device>& options) {
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
  return {B, T, Hq, Hkv, D};
}

template <class T, class Device>
void check_output(std::string_view function, std::string_view argument, const tensor_view<T, Device>& view,
                  const dims& expected) {
  check_shape(function, argument, view, expected);
  check_contiguous(function, argument, view);
}

}  // namespace detail

// Forward pass into caller memory. out: (B, T, Hq, D), lse: (B, Hq, T).
template <floating_element T, device Device>
void attention_forward(const Device& device, std::type_identity_t<tensor_view<const T, Device>> q,
                       std::type_identity_t<tensor_view<const T, Device>> k,
                       std::type_identity_t<tensor_view<const T, Device>> v, const tensor_view<T, Device>& out,
                       std::type_identity_t<tensor_view<accumulate_t<T>, Device>> lse,
                       const attention_options<Device>& options = {}) {
  using kernels = detail::attention_kernels<Device>;
  constexpr std::string_view function = "meap::attention_forward";
  const auto s = detail::check_attention_inputs<T, Device>(function, q, k, &v, options);
  detail::check_output(function, "out", out, q.shape());
  detail::check_output(function, "lse", lse, dims{s.batch, s.q_heads, s.length});
  kernels::template check_limits<T>(function, s);
  check_colocated<Device>(function, {at("q", q), at("k", k), at("v", v), at("out", out), at("lse", lse),
                                     at("segment_ids", options.segment_ids)});
  if (q.empty()) return;
  kernels::template forward<T>(device, function, s, q, k, v, out, lse, options);
}

// Forward pass into new tensors. T is taken from q (const or not); k and v must match it.
template <class T, device Device>
  requires floating_element<std::remove_const_t<T>>
attention_result<std::remove_const_t<T>, Device> attention_forward(const Device& device, const tensor_view<T, Device>& q,
                                                                   std::type_identity_t<tensor_view<T, Device>> k,
                                                                   std::type_identity_t<tensor_view<T, Device>> v,
                                                                   const attention_options<Device>& options = {}) {
  using U = std::remove_const_t<T>;
  check_argument(q.rank() == 4, "meap::attention_forward", "q", "shape " + to_string(q.shape()),
                 "a rank-4 shape (B, T, Hq, D)");
  detail::attention_kernels<Device>::template check_limits<U>("meap::attention_forward",
                                                               {q.size(0), q.size(1), q.size(2), 1, q.size(3)});
  attention_result<U, Device> result{tensor<U, Device>(device, q.shape()),
                                     tensor<accumulate_t<U>, Device>(device, dims{q.size(0), q.size(2), q.size(1)})};
  attention_forward<U>(device, q, k, v, result.out.view(), result.lse.view(), options);
  return result;
}

// Backward pass. Given the forward's inputs, its out and lse, and d_out = dL/d(out), writes
// d_q (B, T, Hq, D) and d_k, d_v (B, T, Hkv, D). Use the same options as the forward pass.
template <floating_element T, device Device>
void attention_backward(const Device& device, std::type_identity_t<tensor_view<const T, Device>> q,
                        std::type_identity_t<tensor_view<const T, Device>> k,
                        std::type_identity_t<tensor_view<const T, Device>> v,
                        std::type_identity_t<tensor_view<const T, Device>> out,
                        std::type_identity_t<tensor_view<const accumulate_t<T>, Device>> lse,
                        std::type_identity_t<tensor_view<const T, Device>> d_out, const tensor_view<T, Device>& d_q,
                        std::type_identity_t<tensor_view<T, Device>> d_k, std::type_identity_t<tensor_view<T, Device>> d_v,
                        const attention_options<Device>& options = {}) {
  using kernels = detail::attention_kernels<Device>;
  constexpr std::string_view function = "meap::attention_backward";
  const auto s = detail::check_attention_inputs<T, Device>(function, q, k, &v, options);
  detail::check_output(function, "out", out, q.shape());
  detail::check_output(function, "lse", lse, dims{s.batch, s.q_heads, s.length});
  detail::check_output(function, "d_out", d_out, q.shape());
  detail::check_output(function, "d_q", d_q, q.shape());
  detail::check_output(function, "d_k", d_k, k.shape());
  detail::check_output(function, "d_v", d_v, k.shape());
  kernels::template check_limits<T>(function, s);
  check_colocated<Device>(function, {at("q", q), at("k", k), at("v", v), at("out", out), at("lse", lse),
                                     at("d_out", d_out), at("d_q", d_q), at("d_k", d_k), at("d_v", d_v),
                                     at("segment_ids", options.segment_ids)});
  if (q.empty()) return;
  kernels::template backward<T>(device, function, s, q, k, v, out, lse, d_out, d_q, d_k, d_v, options);
}

// Attention of new queries over a key/value cache, for generation (forward only).
//   q: (B, Tq, Hq, D)   k_cache, v_cache: (B, S, Hkv, D)   out: (B, Tq, Hq, D)
//   start: (B) on the host: query t of row b sits at position start[b] + t and attends the cached
//   keys j <= start[b] + t. The caller has written the new tokens' keys and values at
//   [start[b], start[b] + Tq) before the call, so start[b] + Tq <= S. Prefill is start = 0 with the
//   whole prompt as queries; a decode step is Tq = 1. Rows may hold different lengths (a batch of
//   prompts of different lengths). The scale defaults to 1 / sqrt(D).
template <floating_element T, device Device>
void attention_forward_cached(const Device& device, std::type_identity_t<tensor_view<const T, Device>> q,
                              std::type_identity_t<tensor_view<const T, Device>> k_cache,
                              std::type_identity_t<tensor_view<const T, Device>> v_cache, std::span<const index_t> start,
                              const tensor_view<T, Device>& out, std::optional<double> scale = {}) {
  using kernels = detail::attention_kernels<Device>;
  constexpr std::string_view function = "meap::attention_forward_cached";
  check_argument(q.rank() == 4, function, "q", "shape " + to_string(q.shape()), "a rank-4 shape (B, Tq, Hq, D)");
  const index_t B = q.size(0), Tq = q.size(1), Hq = q.size(2), D = q.size(3);
  check_argument(1 <= D && D <= max_attention_head_dim, function, "q", "head dim D = " + std::to_string(D),
                 "1 <= D <= " + std::to_string(max_attention_head_dim) + " (the last axis of q)");
  check_argument(k_cache.rank() == 4 && k_cache.size(0) == B && k_cache.size(3) == D, function, "k_cache",
                 "shape " + to_string(k_cache.shape()),
                 "shape (B, S, Hkv, D) with B = " + std::to_string(B) + " and D = " + std::to_string(D) +
                     " (matching q " + to_string(q.shape()) + ")");
  const index_t S = k_cache.size(1), Hkv = k_cache.size(2);
  check_argument(Hkv >= 1 && Hq >= 1 && Hq % Hkv == 0, function, "k_cache", "Hkv = " + std::to_string(Hkv),
                 "a kv head count that divides Hq = " + std::to_string(Hq) + " (GQA groups of equal size)");
  check_shape(function, "v_cache", v_cache, k_cache.shape());
  check_contiguous(function, "q", q);
  check_contiguous(function, "k_cache", k_cache);
  check_contiguous(function, "v_cache", v_cache);
  detail::check_output(function, "out", out, q.shape());
  check_argument(static_cast<index_t>(start.size()) == B, function, "start", std::to_string(start.size()) + " entries",
                 "one start position per batch row (B = " + std::to_string(B) + ")");
  for (std::size_t b = 0; b < start.size(); ++b)
    check_argument(start[b] >= 0 && start[b] + Tq <= S, function, "start",
                   "start[" + std::to_string(b) + "] = " + std::to_string(start[b]),
                   "0 <= start <= S - Tq = " + std::to_string(S - Tq) + " (the cache holds S = " + std::to_string(S) +
                       " positions and Tq = " + std::to_string(Tq) + " new ones go after start)");
  if (scale)
    check_argument(std::isfinite(*scale) && *scale > 0, function, "scale", *scale,
                   "a finite positive scale (or none, for 1 / sqrt(D))");
  const detail::cpu_impl::cached_attention_shape s{B, Tq, S, Hq, Hkv, D};
  kernels::template check_cached_limits<T>(function, s);
  check_colocated<Device>(function, {at("q", q), at("k_cache", k_cache), at("v_cache", v_cache), at("out", out)});
  if (q.empty()) return;
  kernels::template forward_cached<T>(device, function, s, q, k_cache, v_cache, start, out, scale);
}

// Probe for analysis (not for training: it is O(T^2) in memory). Writes the attention
// probabilities P[b, h, i, j] (B, Hq, T, T), 0 where masked. T is taken from q.
template <class T, device Device>
  requires floating_element<std::remove_const_t<T>>
void attention_probabilities(const Device& device, const tensor_view<T, Device>& q,
                             std::type_identity_t<tensor_view<T, Device>> k,
                             const tensor_view<accumulate_t<std::remove_const_t<T>>, Device>& probabilities,
                             const attention_options<Device>& options = {}) {
  using U = std::remove_const_t<T>;
  using kernels = detail::attention_kernels<Device>;
  constexpr std::string_view function = "meap::attention_probabilities";
  const auto s = detail::check_attention_inputs<U, Device>(function, q, k, nullptr, options);
  detail::check_output(function, "probabilities", probabilities, dims{s.batch, s.q_heads, s.length, s.length});
  kernels::template check_limits<U>(function, s);
  check_colocated<Device>(function, {at("q", q), at("k", k), at("probabilities", probabilities),
                                     at("segment_ids", options.segment_ids)});
  if (q.empty()) return;
  kernels::template probe<U>(device, function, s, q.as_const(), k.as_const(), probabilities.data(), nullptr, options);
}

// Probe for analysis: the attention mass each key receives, key_mass[b, h, j] = sum_i P[b, h, i, j]
// (B, Hq, T), computed blockwise in O(T) memory. The paper's attention-decay metric compares
// this at masked and unmasked positions.
template <class T, device Device>
  requires floating_element<std::remove_const_t<T>>
void attention_key_mass(const Device& device, const tensor_view<T, Device>& q,
                        std::type_identity_t<tensor_view<T, Device>> k,
                        const tensor_view<accumulate_t<std::remove_const_t<T>>, Device>& key_mass,
                        const attention_options<Device>& options = {}) {
  using U = std::remove_const_t<T>;
  using kernels = detail::attention_kernels<Device>;
  constexpr std::string_view function = "meap::attention_key_mass";
  const auto s = detail::check_attention_inputs<U, Device>(function, q, k, nullptr, options);
  detail::check_output(function, "key_mass", key_mass, dims{s.batch, s.q_heads, s.length});
  kernels::template check_limits<U>(function, s);
  check_colocated<Device>(function, {at("q", q), at("k", k), at("key_mass", key_mass),
                                     at("segment_ids", options.segment_ids)});
  if (q.empty()) return;
  kernels::template probe<U>(device, function, s, q.as_const(), k.as_const(), nullptr, key_mass.data(), options);
}

}  // namespace meap
