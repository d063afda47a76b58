// meap/nn/modules.hpp: the modules a LLaMA block is built from (embedding, linear, RMSNorm,
// causal self-attention with RoPE and GQA, SwiGLU MLP), written once for every device and
// precision: template <class P, device Device>, P a meap::precision (core/precision.hpp).
//
// A module declares its parameters in a parameter_store (nn/parameter_store.hpp) under Hugging
// Face names when it is built, and reads them from there once the store is allocated:
//   forward(device, inputs..., context&) -> output   saves in the context what backward needs
//   backward(device, context, d_output)  -> d_input  accumulates into the parameter gradients
// Forward reads the compute weights (P::compute_t) and computes activations in that type;
// backward writes activation gradients in compute_t and parameter gradients in P::grad_t. A
// context holds views of forward's inputs (keep the inputs alive until backward) and owns what it
// computes. Shapes: N = B * T tokens, flattened row-major. `device` is the tag the work runs on
// (meap::cpu{} or meap::cuda{stream}); every view must live on it.
#pragma once

#include <meap/core/deferred_checks.hpp>
#include <meap/core/device.hpp>
#include <meap/core/precision.hpp>
#include <meap/core/tensor.hpp>
#include <meap/kernels/attention.hpp>
#include <meap/kernels/elementwise.hpp>
#include <meap/kernels/embedding.hpp>
#include <meap/kernels/linear.hpp>
#include <meap/kernels/rmsnorm.hpp>
#include <meap/kernels/rope.hpp>
#include <meap/kernels/swiglu.hpp>
#include <meap/nn/parameter_store.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>

namespace meap::nn {

// Per-sequence inputs shared by every attention layer of a forward pass.
template <class Device>
struct sequence_info {
  index_t batch = 0;
  index_t length = 0;
  tensor_view<const std::int32_t, Device> positions{};    // (B, T) RoPE positions; default: t
  tensor_view<const std::int32_t, Device> segment_ids{};  // (B, T) packed documents; default: one per row
  deferred_checks<Device> checks{};                       // where meap::cuda records bad ids (optional)
};

// Token embedding: (N) int32 -> (N, d). Weight (V, d), decayed.
template <class P, device Device>
class embedding {
 public:
  using T = typename P::compute_t;
  using G = typename P::grad_t;
  struct context {
    tensor_view<const std::int32_t, Device> tokens;
    deferred_checks<Device> checks;
  };

  embedding(parameter_store<P, Device>& store, const std::string& name, index_t vocab, index_t width)
      : store_(&store), weight_(store.declare(name + ".weight", dims{vocab, width}, true)) {}

  tensor<T, Device> forward(const Device& device, const tensor_view<const std::int32_t, Device>& tokens, context& ctx,
                            const deferred_checks<Device>& checks = {}) const {
    const auto table = store_->compute(weight_);
    tensor<T, Device> y(device, dims{tokens.numel(), table.size(1)});
    embedding_forward<T>(device, tokens, table, y.view(), checks);
    ctx.tokens = tokens;
    ctx.checks = checks;
    return y;
  }
  void backward(const Device& device, const context& ctx, const tensor_view<const T, Device>& dy) {
    embedding_backward<T, G>(device, ctx.tokens, dy, store_->grad(weight_), ctx.checks);
  }

  index_t weight_id() const noexcept { return weight_; }
  parameter_views<P, Device> weight() const { return store_->views(weight_); }

 private:
  parameter_store<P, Device>* store_;
  index_t weight_;
};

// Bias-free linear layer: (N, in) -> (N, out), weight (out, in), decayed.
template <class P, device Device>
class linear {
 public:
  using T = typename P::compute_t;
  using G = typename P::grad_t;
  struct context {
    tensor_view<const T, Device> x;
  };

  linear(parameter_store<P, Device>& store, const std::string& name, index_t in, index_t out)
      : store_(&store), weight_(store.declare(name + ".weight", dims{out, in}, true)) {}

  tensor<T, Device> forward(const Device& device, const tensor_view<const T, Device>& x, context& ctx) const {
    const auto w = store_->compute(weight_);
    tensor<T, Device> y(device, dims{x.size(0), w.size(0)});
    linear_forward<T>(device, x, w, y.view());
    ctx.x = x;
    return y;
  }
  // Returns dx (N, in); an empty tensor when input_gradient is false.
  tensor<T, Device> backward(const Device& device, const context& ctx, const tensor_view<const T, Device>& dy,
                             bool input_gradient = true) {
    tensor<T, Device> dx;
    if (input_gradient) dx = tensor<T, Device>(device, ctx.x.shape());
    backward_into(device, ctx, dy, input_gradient ? dx.view() : tensor_view<T, Device>{}, gradient_write::overwrite);
    return dx;
  }
  // Writes dx (N, in) into a caller's buffer, or adds to it: layers sharing an input sum there.
  void backward_into(const Device& device, const context& ctx, const tensor_view<const T, Device>& dy,
                     const tensor_view<T, Device>& dx, gradient_write mode) {
    linear_backward<T, G>(device, ctx.x, store_->compute(weight_), dy, dx, store_->grad(weight_), mode);
  }

  index_t weight_id() const noexcept { return weight_; }
  parameter_views<P, Device> weight() const { return store_->views(weight_); }

 private:
  parameter_store<P, Device>* store_;
  index_t weight_;
};

// RMSNorm with a learned gain: (N, d) -> (N, d). The gain starts at 1 and is not decayed.
template <class P, device Device>
class rmsnorm {
 public:
  using T = typename P::compute_t;
  using G = typename P::grad_t;
  using A = accumulate_t<T>;
  struct context {
    tensor_view<const T, Device> x;
    tensor<A, Device> inv_rms;  // (N)
  };

  rmsnorm(parameter_store<P, Device>& store, const std::string& name, index_t width, double eps)
      : store_(&store), weight_(store.declare(name + ".weight", dims{width}, false, initial_value::ones)), eps_(eps) {
    check_argument(std::isfinite(eps) && eps > 0, "meap::nn::rmsnorm", "eps", eps, "a finite positive epsilon");
  }

  tensor<T, Device> forward(const Device& device, const tensor_view<const T, Device>& x, context& ctx) const {
    tensor<T, Device> y(device, x.shape());
    ctx.inv_rms = tensor<A, Device>(device, dims{x.size(0)});
    rmsnorm_forward<T>(device, x, store_->compute(weight_), y.view(), ctx.inv_rms.view(), eps_);
    ctx.x = x;
    return y;
  }
  tensor<T, Device> backward(const Device& device, const context& ctx, const tensor_view<const T, Device>& dy) {
    tensor<T, Device> dx(device, ctx.x.shape());
    rmsnorm_backward<T, G>(device, ctx.x, store_->compute(weight_), ctx.inv_rms.view(), dy, dx.view(),
                           store_->grad(weight_));
    return dx;
  }

  index_t weight_id() const noexcept { return weight_; }
  parameter_views<P, Device> weight() const { return store_->views(weight_); }

 private:
  parameter_store<P, Device>* store_;
  index_t weight_;
  double eps_;
};

// Causal self-attention: q/k/v projections, RoPE on q and k, flash-style attention with GQA and
// segment ids, output projection. (N, d) -> (N, d).
template <class P, device Device>
class causal_self_attention {
 public:
  using T = typename P::compute_t;
  using A = accumulate_t<T>;
  struct context {
    typename linear<P, Device>::context q_ctx, k_ctx, v_ctx, o_ctx;
    tensor<T, Device> q, k, v;  // after RoPE: (B, T, Hq, D), (B, T, Hkv, D)
    tensor<T, Device> out;      // (B, T, Hq, D), the input of o_proj
    tensor<A, Device> lse;      // (B, Hq, T)
    sequence_info<Device> sequence;
  };

  causal_self_attention(parameter_store<P, Device>& store, const std::string& name, index_t width, index_t heads,
                        index_t kv_heads, double rope_theta, const rope_scaling& scaling = {})
      : q_proj(store, name + ".q_proj", width, heads * (width / heads)),
        k_proj(store, name + ".k_proj", width, kv_heads * (width / heads)),
        v_proj(store, name + ".v_proj", width, kv_heads * (width / heads)),
        o_proj(store, name + ".o_proj", heads * (width / heads), width),
        heads_(heads),
        kv_heads_(kv_heads),
        head_dim_(width / heads),
        rope_theta_(rope_theta),
        rope_scaling_(scaling) {}

  tensor<T, Device> forward(const Device& device, const tensor_view<const T, Device>& x,
                            const sequence_info<Device>& sequence, context& ctx) const {
    const index_t B = sequence.batch, L = sequence.length;
    check_argument(x.rank() == 2 && x.size(0) == B * L, "meap::nn::causal_self_attention::forward", "x",
                   "shape " + to_string(x.shape()),
                   "(B * T, d) rows for B = " + std::to_string(B) + ", T = " + std::to_string(L));
    ctx.sequence = sequence;
    const rope_options<Device> rope{rope_theta_, sequence.positions, sequence.checks, rope_scaling_};
    ctx.q = q_proj.forward(device, x, ctx.q_ctx);
    ctx.k = k_proj.forward(device, x, ctx.k_ctx);
    ctx.v = v_proj.forward(device, x, ctx.v_ctx);
    const auto q4 = ctx.q.view().reshape({B, L, heads_, head_dim_});
    const auto k4 = ctx.k.view().reshape({B, L, kv_heads_, head_dim_});
    rope_forward<T>(device, q4, q4, rope);
    rope_forward<T>(device, k4, k4, rope);
    ctx.out = tensor<T, Device>(device, dims{B, L, heads_, head_dim_});
    ctx.lse = tensor<A, Device>(device, dims{B, heads_, L});
    attention_forward<T>(device, q4, k4, ctx.v.view().reshape({B, L, kv_heads_, head_dim_}), ctx.out.view(),
                         ctx.lse.view(), attention_options<Device>{{}, sequence.segment_ids});
    return o_proj.forward(device, ctx.out.view().reshape({B * L, heads_ * head_dim_}), ctx.o_ctx);
  }

  // Inference over a key/value cache (nn/kv_cache.hpp): x (B * Tq, d) holds Tq new tokens per row;
  // row b's tokens take positions start[b] .. start[b] + Tq - 1 (`positions`, (B, Tq) on the
  // device, holds the same numbers for RoPE). Their keys and values are written into the layer's
  // cache, (B, S, Hkv, D), and the queries attend every cached key up to their own position.
  // Saves nothing for backward.
  tensor<T, Device> forward_cached(const Device& device, const tensor_view<const T, Device>& x, index_t B, index_t Tq,
                                   const tensor_view<const std::int32_t, Device>& positions,
                                   std::span<const index_t> start, const tensor_view<T, Device>& key_cache,
                                   const tensor_view<T, Device>& value_cache) const {
    typename linear<P, Device>::context unused;
    auto q = q_proj.forward(device, x, unused);
    auto k = k_proj.forward(device, x, unused);
    auto v = v_proj.forward(device, x, unused);
    const auto q4 = q.view().reshape({B, Tq, heads_, head_dim_});
    const auto k4 = k.view().reshape({B, Tq, kv_heads_, head_dim_});
    const rope_options<Device> rope{rope_theta_, positions, {}, rope_scaling_};
    rope_forward<T>(device, q4, q4, rope);
    rope_forward<T>(device, k4, k4, rope);
    const index_t S = key_cache.size(1), row = kv_heads_ * head_dim_;
    for (index_t b = 0; b < B; ++b) {  // each row's new keys go after its own cached ones
      const index_t at = (b * S + start[static_cast<std::size_t>(b)]) * row;
      const dims block{Tq * row};
      copy(device, tensor_view<const T, Device>(k.data() + b * Tq * row, block, k.view().location()),
           tensor_view<T, Device>(key_cache.data() + at, block, key_cache.location()));
      copy(device, tensor_view<const T, Device>(v.data() + b * Tq * row, block, v.view().location()),
           tensor_view<T, Device>(value_cache.data() + at, block, value_cache.location()));
    }
    tensor<T, Device> out(device, dims{B, Tq, heads_, head_dim_});
    const bool prefill = std::all_of(start.begin(), start.end(), [](index_t s) { return s == 0; });
    if (prefill) {
      // Nothing cached before these tokens: plain causal attention over them, which runs the
      // training kernels (flash-style blocks; tensor cores on CUDA for 16-bit types).
      tensor<A, Device> lse(device, dims{B, heads_, Tq});
      attention_forward<T>(device, q4, k4, v.view().reshape({B, Tq, kv_heads_, head_dim_}), out.view(), lse.view());
    } else {
      attention_forward_cached<T>(device, q4, key_cache, value_cache, start, out.view());
    }
    return o_proj.forward(device, out.view().reshape({B * Tq, heads_ * head_dim_}), unused);
  }

  tensor<T, Device> backward(const Device& device, const context& ctx, const tensor_view<const T, Device>& dy) {
    const index_t B = ctx.sequence.batch, L = ctx.sequence.length;
    const auto d_out = o_proj.backward(device, ctx.o_ctx, dy);
    tensor<T, Device> dq(device, dims{B, L, heads_, head_dim_});
    tensor<T, Device> dk(device, dims{B, L, kv_heads_, head_dim_});
    tensor<T, Device> dv(device, dims{B, L, kv_heads_, head_dim_});
    attention_backward<T>(device, ctx.q.view().reshape({B, L, heads_, head_dim_}),
                          ctx.k.view().reshape({B, L, kv_heads_, head_dim_}),
                          ctx.v.view().reshape({B, L, kv_heads_, head_dim_}), ctx.out.view(), ctx.lse.view(),
                          d_out.view().reshape({B, L, heads_, head_dim_}), dq.view(), dk.view(), dv.view(),
                          attention_options<Device>{{}, ctx.sequence.segment_ids});
    // The positions were checked by the forward pass.
    const rope_options<Device> rope{rope_theta_, ctx.sequence.positions, ctx.sequence.checks, rope_scaling_};
    rope_backward<T>(device, dq.view(), dq.view(), rope);
    rope_backward<T>(device, dk.view(), dk.view(), rope);
    tensor<T, Device> dx(device, ctx.q_ctx.x.shape());
    q_proj.backward_into(device, ctx.q_ctx, dq.view().reshape({B * L, heads_ * head_dim_}), dx.view(),
                         gradient_write::overwrite);
    k_proj.backward_into(device, ctx.k_ctx, dk.view().reshape({B * L, kv_heads_ * head_dim_}), dx.view(),
                         gradient_write::accumulate);
    v_proj.backward_into(device, ctx.v_ctx, dv.view().reshape({B * L, kv_heads_ * head_dim_}), dx.view(),
                         gradient_write::accumulate);
    return dx;
  }

  linear<P, Device> q_proj, k_proj, v_proj, o_proj;

 private:
  index_t heads_, kv_heads_, head_dim_;
  double rope_theta_;
  rope_scaling rope_scaling_;
};

// SwiGLU MLP: down(silu(gate(x)) * up(x)). (N, d) -> (N, d).
template <class P, device Device>
class swiglu_mlp {
 public:
  using T = typename P::compute_t;
  struct context {
    typename linear<P, Device>::context gate_ctx, up_ctx, down_ctx;
    tensor<T, Device> gate, up, hidden;  // (N, F)
  };

  swiglu_mlp(parameter_store<P, Device>& store, const std::string& name, index_t width, index_t ffn)
      : gate_proj(store, name + ".gate_proj", width, ffn),
        up_proj(store, name + ".up_proj", width, ffn),
        down_proj(store, name + ".down_proj", ffn, width) {}

  tensor<T, Device> forward(const Device& device, const tensor_view<const T, Device>& x, context& ctx) const {
    ctx.gate = gate_proj.forward(device, x, ctx.gate_ctx);
    ctx.up = up_proj.forward(device, x, ctx.up_ctx);
    ctx.hidden = tensor<T, Device>(device, ctx.gate.shape());
    swiglu_forward<T>(device, ctx.gate.view(), ctx.up.view(), ctx.hidden.view());
    return down_proj.forward(device, ctx.hidden.view(), ctx.down_ctx);
  }

  tensor<T, Device> backward(const Device& device, const context& ctx, const tensor_view<const T, Device>& dy) {
    const auto d_hidden = down_proj.backward(device, ctx.down_ctx, dy);
    tensor<T, Device> d_gate(device, ctx.gate.shape()), d_up(device, ctx.up.shape());
    swiglu_backward<T>(device, ctx.gate.view(), ctx.up.view(), d_hidden.view(), d_gate.view(), d_up.view());
    tensor<T, Device> dx(device, ctx.gate_ctx.x.shape());
    gate_proj.backward_into(device, ctx.gate_ctx, d_gate.view(), dx.view(), gradient_write::overwrite);
    up_proj.backward_into(device, ctx.up_ctx, d_up.view(), dx.view(), gradient_write::accumulate);
    return dx;
  }

  linear<P, Device> gate_proj, up_proj, down_proj;
};

}  // namespace meap::nn
