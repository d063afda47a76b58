// meap/kernels/attention.hpp: causal self-attention, forward and backward, with grouped kv heads
// (GQA / MQA) and optional segment ids for packed documents. See docs/kernels.md for the maths.
//
//   q: (B, T, Hq, D)   k, v: (B, T, Hkv, D)   Hq = G * Hkv; query head h reads kv head h / G
//   out: (B, T, Hq, D) lse: (B, Hq, T)        segment_ids: (B, T) int32, optional
//
// out[b, i, h] = sum_{j <= i, seg_j = seg_i} softmax_j(scale * q_i . k_j) v_j, and lse is the
// natural log of that softmax's denominator, which attention_backward uses to recompute the
// probabilities block by block (no T x T matrix is kept). The scale defaults to 1 / sqrt(D).
//
// Element types: double and float compute in their own type; half and bfloat16 are widened to
// float, computed in float and rounded once. lse and the probe's outputs are accumulate_t<T>
// (double for double, else float). Every view must be contiguous (row-major). Outputs are
// overwritten, never accumulated into.
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/dtype.hpp>
#include <meap/core/error.hpp>
#include <meap/core/tensor.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/cpu/attention.hpp>
#include <meap/kernels/cpu/convert.hpp>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

namespace meap {

// Head dimensions the kernels accept: 1 ..= max_attention_head_dim.
inline constexpr index_t max_attention_head_dim = 256;

template <class Device>
struct attention_options {
  // Multiplies q . k before the softmax; unset means 1 / sqrt(D).
  std::optional<double> scale;
  // (B, T) document ids; a query attends only to earlier keys with the same id. A default
  // (rank-0) view means one document per batch row.
  tensor_view<const std::int32_t, Device> segment_ids{};
};

template <class T>
struct attention_result {
  tensor<T, cpu> out;                 // (B, T, Hq, D)
  tensor<accumulate_t<T>, cpu> lse;   // (B, Hq, T)
};

namespace detail {

// Validates q, k, v and the options; returns the shape. `function` names the caller in errors.
template <class E>
cpu_impl::attention_shape check_attention_inputs(std::string_view function, const tensor_view<const E, cpu>& q,
                                                 const tensor_view<const E, cpu>& k,
                                                 const tensor_view<const E, cpu>* v,
                                                 const attention_options<cpu>& options) {
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

inline const std::int32_t* segment_data(const attention_options<cpu>& options) {
  return options.segment_ids.rank() != 0 ? options.segment_ids.data() : nullptr;
}

template <class A>
A attention_scale(const attention_options<cpu>& options, index_t head_dim) {
  return static_cast<A>(options.scale ? *options.scale : 1.0 / std::sqrt(static_cast<double>(head_dim)));
}

}  // namespace detail

// Forward pass into caller memory. out: (B, T, Hq, D), lse: (B, Hq, T).
template <floating_element T>
void attention_forward(const cpu&, std::type_identity_t<tensor_view<const T, cpu>> q,
                       std::type_identity_t<tensor_view<const T, cpu>> k,
                       std::type_identity_t<tensor_view<const T, cpu>> v, const tensor_view<T, cpu>& out,
                       const tensor_view<accumulate_t<T>, cpu>& lse, const attention_options<cpu>& options = {}) {
  using A = accumulate_t<T>;
  constexpr std::string_view function = "meap::attention_forward";
  const auto s = detail::check_attention_inputs<T>(function, q, k, &v, options);
  detail::check_output(function, "out", out, q.shape());
  detail::check_output(function, "lse", lse, dims{s.batch, s.q_heads, s.length});
  if (q.empty()) return;
  const detail::cpu_impl::widened<A, T> q_a(q), k_a(k), v_a(v);
  const detail::cpu_impl::narrowed<A, T> out_a(out);
  detail::cpu_impl::attention_forward<A>(s, q_a.data(), k_a.data(), v_a.data(), detail::segment_data(options),
                                         detail::attention_scale<A>(options, s.head_dim), out_a.data(), lse.data());
  out_a.store();
}

// Forward pass into new tensors. T is taken from q (const or not); k and v must match it.
template <class T>
  requires floating_element<std::remove_const_t<T>>
attention_result<std::remove_const_t<T>> attention_forward(const cpu& device, const tensor_view<T, cpu>& q,
                                                           std::type_identity_t<tensor_view<T, cpu>> k,
                                                           std::type_identity_t<tensor_view<T, cpu>> v,
                                                           const attention_options<cpu>& options = {}) {
  using U = std::remove_const_t<T>;
  check_argument(q.rank() == 4, "meap::attention_forward", "q", "shape " + to_string(q.shape()),
                 "a rank-4 shape (B, T, Hq, D)");
  attention_result<U> result{tensor<U, cpu>(device, q.shape()),
                             tensor<accumulate_t<U>, cpu>(device, dims{q.size(0), q.size(2), q.size(1)})};
  attention_forward<U>(device, q, k, v, result.out.view(), result.lse.view(), options);
  return result;
}

// Backward pass. Given the forward's inputs, its out and lse, and d_out = dL/d(out), writes
// d_q (B, T, Hq, D) and d_k, d_v (B, T, Hkv, D). Use the same options as the forward pass.
template <floating_element T>
void attention_backward(const cpu&, std::type_identity_t<tensor_view<const T, cpu>> q,
                        std::type_identity_t<tensor_view<const T, cpu>> k,
                        std::type_identity_t<tensor_view<const T, cpu>> v,
                        std::type_identity_t<tensor_view<const T, cpu>> out,
                        std::type_identity_t<tensor_view<const accumulate_t<T>, cpu>> lse,
                        std::type_identity_t<tensor_view<const T, cpu>> d_out, const tensor_view<T, cpu>& d_q,
                        std::type_identity_t<tensor_view<T, cpu>> d_k, std::type_identity_t<tensor_view<T, cpu>> d_v,
                        const attention_options<cpu>& options = {}) {
  using A = accumulate_t<T>;
  constexpr std::string_view function = "meap::attention_backward";
  const auto s = detail::check_attention_inputs<T>(function, q, k, &v, options);
  detail::check_output(function, "out", out, q.shape());
  detail::check_output(function, "lse", lse, dims{s.batch, s.q_heads, s.length});
  detail::check_output(function, "d_out", d_out, q.shape());
  detail::check_output(function, "d_q", d_q, q.shape());
  detail::check_output(function, "d_k", d_k, k.shape());
  detail::check_output(function, "d_v", d_v, k.shape());
  if (q.empty()) return;
  const detail::cpu_impl::widened<A, T> q_a(q), k_a(k), v_a(v), out_a(out), d_out_a(d_out);
  const detail::cpu_impl::narrowed<A, T> d_q_a(d_q), d_k_a(d_k), d_v_a(d_v);
  detail::cpu_impl::attention_backward<A>(s, q_a.data(), k_a.data(), v_a.data(), out_a.data(), lse.data(),
                                          d_out_a.data(), detail::segment_data(options),
                                          detail::attention_scale<A>(options, s.head_dim), d_q_a.data(),
                                          d_k_a.data(), d_v_a.data());
  d_q_a.store();
  d_k_a.store();
  d_v_a.store();
}

// Probe for analysis (not for training: it is O(T^2) in memory). Writes the attention
// probabilities P[b, h, i, j] (B, Hq, T, T), 0 where masked. T is taken from q.
template <class T>
  requires floating_element<std::remove_const_t<T>>
void attention_probabilities(const cpu&, const tensor_view<T, cpu>& q, std::type_identity_t<tensor_view<T, cpu>> k,
                             const tensor_view<accumulate_t<std::remove_const_t<T>>, cpu>& probabilities,
                             const attention_options<cpu>& options = {}) {
  using U = std::remove_const_t<T>;
  using A = accumulate_t<U>;
  constexpr std::string_view function = "meap::attention_probabilities";
  const auto s = detail::check_attention_inputs<U>(function, q, k, nullptr, options);
  detail::check_output(function, "probabilities", probabilities, dims{s.batch, s.q_heads, s.length, s.length});
  if (q.empty()) return;
  const detail::cpu_impl::widened<A, U> q_a(q), k_a(k);
  detail::cpu_impl::attention_probe<A>(s, q_a.data(), k_a.data(), detail::segment_data(options),
                                       detail::attention_scale<A>(options, s.head_dim), probabilities.data(), nullptr);
}

// Probe for analysis: the attention mass each key receives, key_mass[b, h, j] = sum_i P[b, h, i, j]
// (B, Hq, T), computed blockwise in O(T) memory. The paper's attention-decay metric compares
// this at masked and unmasked positions.
template <class T>
  requires floating_element<std::remove_const_t<T>>
void attention_key_mass(const cpu&, const tensor_view<T, cpu>& q, std::type_identity_t<tensor_view<T, cpu>> k,
                        const tensor_view<accumulate_t<std::remove_const_t<T>>, cpu>& key_mass,
                        const attention_options<cpu>& options = {}) {
  using U = std::remove_const_t<T>;
  using A = accumulate_t<U>;
  constexpr std::string_view function = "meap::attention_key_mass";
  const auto s = detail::check_attention_inputs<U>(function, q, k, nullptr, options);
  detail::check_output(function, "key_mass", key_mass, dims{s.batch, s.q_heads, s.length});
  if (q.empty()) return;
  const detail::cpu_impl::widened<A, U> q_a(q), k_a(k);
  detail::cpu_impl::attention_probe<A>(s, q_a.data(), k_a.data(), detail::segment_data(options),
                                       detail::attention_scale<A>(options, s.head_dim), nullptr, key_mass.data());
}

}  // namespace meap
