// meap/nn/modules.hpp: the modules a LLaMA block is built from (embedding, linear, RMSNorm,
// causal self-attention with RoPE and GQA, SwiGLU MLP) on the CPU, float or double.
//
// Every module owns its parameters (value and gradient) and has
//   forward(inputs..., context&) -> output    saves in the context what backward needs
//   backward(context, d_output)  -> d_input   accumulates into the parameter gradients
//   collect(list, prefix)                      appends its named parameters (Hugging Face names)
// A context holds views of forward's inputs: keep the inputs alive until backward. Activations a
// module creates itself are owned by its context. Shapes: N = B * T tokens, flattened row-major.
#pragma once

#include <meap/core/tensor.hpp>
#include <meap/kernels/attention.hpp>
#include <meap/kernels/embedding.hpp>
#include <meap/kernels/linear.hpp>
#include <meap/kernels/rmsnorm.hpp>
#include <meap/kernels/rope.hpp>
#include <meap/kernels/swiglu.hpp>
#include <meap/optim/parameter.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace meap::nn {

// A trainable tensor and its gradient, same shape, zero-initialized.
template <host_compute_type T>
struct parameter {
  tensor<T, cpu> value;
  tensor<T, cpu> grad;

  parameter() = default;
  explicit parameter(const dims& shape) : value(zeros<T>(cpu{}, shape)), grad(zeros<T>(cpu{}, shape)) {}

  void append_to(std::vector<named_parameter<T, cpu>>& list, std::string name, bool decay) {
    list.push_back({std::move(name), value.view(), grad.view(), decay});
  }
};

// Per-sequence inputs shared by every attention layer of a forward pass.
struct sequence_info {
  index_t batch = 0;
  index_t length = 0;
  tensor_view<const std::int32_t, cpu> positions{};    // (B, T) RoPE positions; default: t
  tensor_view<const std::int32_t, cpu> segment_ids{};  // (B, T) packed documents; default: one per row
};

namespace detail {
// target += addend, element-wise; same shapes, contiguous (the residual and gradient sums).
template <class T>
void add_into(tensor<T, cpu>& target, std::type_identity_t<tensor_view<const T, cpu>> addend) {
  T* a = target.data();
  const T* b = addend.data();
  for (index_t i = 0, n = target.numel(); i < n; ++i) a[i] += b[i];
}
}  // namespace detail

// Token embedding: (N) int32 -> (N, d).
template <host_compute_type T>
class embedding {
 public:
  struct context {
    tensor_view<const std::int32_t, cpu> tokens;
  };

  embedding(index_t vocab, index_t width) : weight(dims{vocab, width}) {}

  tensor<T, cpu> forward(const tensor_view<const std::int32_t, cpu>& tokens, context& ctx) const {
    tensor<T, cpu> y(cpu{}, dims{tokens.numel(), weight.value.size(1)});
    embedding_forward<T>(cpu{}, tokens, weight.value.view(), y.view());
    ctx.tokens = tokens;
    return y;
  }
  void backward(const context& ctx, const tensor_view<const T, cpu>& dy) {
    embedding_backward<T>(cpu{}, ctx.tokens, dy, weight.grad.view());
  }
  void collect(std::vector<named_parameter<T, cpu>>& list, const std::string& prefix) {
    weight.append_to(list, prefix + ".weight", true);
  }

  parameter<T> weight;  // (V, d)
};

// Bias-free linear layer: (N, in) -> (N, out), weight (out, in).
template <host_compute_type T>
class linear {
 public:
  struct context {
    tensor_view<const T, cpu> x;
  };

  linear(index_t in, index_t out) : weight(dims{out, in}) {}

  tensor<T, cpu> forward(const tensor_view<const T, cpu>& x, context& ctx) const {
    tensor<T, cpu> y(cpu{}, dims{x.size(0), weight.value.size(0)});
    linear_forward<T>(cpu{}, x, weight.value.view(), y.view());
    ctx.x = x;
    return y;
  }
  // Returns dx (N, in); an empty tensor when input_gradient is false.
  tensor<T, cpu> backward(const context& ctx, const tensor_view<const T, cpu>& dy, bool input_gradient = true) {
    tensor<T, cpu> dx;
    if (input_gradient) dx = tensor<T, cpu>(cpu{}, ctx.x.shape());
    backward_into(ctx, dy, input_gradient ? dx.view() : tensor_view<T, cpu>{}, gradient_write::overwrite);
    return dx;
  }
  // Writes dx (N, in) into a caller's buffer, or adds to it: layers sharing an input sum there.
  void backward_into(const context& ctx, const tensor_view<const T, cpu>& dy, const tensor_view<T, cpu>& dx,
                     gradient_write mode) {
    linear_backward<T>(cpu{}, ctx.x, weight.value.view(), dy, dx, weight.grad.view(), mode);
  }
  void collect(std::vector<named_parameter<T, cpu>>& list, const std::string& prefix) {
    weight.append_to(list, prefix + ".weight", true);
  }

  parameter<T> weight;  // (out, in)
};

// RMSNorm with a learned gain: (N, d) -> (N, d). The gain starts at 1.
template <host_compute_type T>
class rmsnorm {
 public:
  struct context {
    tensor_view<const T, cpu> x;
    tensor<T, cpu> inv_rms;  // (N)
  };

  rmsnorm(index_t width, double eps) : weight(dims{width}), eps_(eps) { fill(cpu{}, weight.value.view(), T(1)); }

  tensor<T, cpu> forward(const tensor_view<const T, cpu>& x, context& ctx) const {
    tensor<T, cpu> y(cpu{}, x.shape());
    ctx.inv_rms = tensor<T, cpu>(cpu{}, dims{x.size(0)});
    rmsnorm_forward<T>(cpu{}, x, weight.value.view(), y.view(), ctx.inv_rms.view(), eps_);
    ctx.x = x;
    return y;
  }
  tensor<T, cpu> backward(const context& ctx, const tensor_view<const T, cpu>& dy) {
    tensor<T, cpu> dx(cpu{}, ctx.x.shape());
    rmsnorm_backward<T>(cpu{}, ctx.x, weight.value.view(), ctx.inv_rms.view(), dy, dx.view(), weight.grad.view());
    return dx;
  }
  void collect(std::vector<named_parameter<T, cpu>>& list, const std::string& prefix) {
    weight.append_to(list, prefix + ".weight", false);
  }

  parameter<T> weight;  // (d)

 private:
  double eps_;
};

// Causal self-attention: q/k/v projections, RoPE on q and k, flash-style attention with GQA and
// segment ids, output projection. (N, d) -> (N, d).
template <host_compute_type T>
class causal_self_attention {
 public:
  struct context {
    typename linear<T>::context q_ctx, k_ctx, v_ctx, o_ctx;
    tensor<T, cpu> q, k, v;  // after RoPE: (B, T, Hq, D), (B, T, Hkv, D)
    tensor<T, cpu> out;      // (B, T, Hq, D), the input of o_proj
    tensor<T, cpu> lse;      // (B, Hq, T)
    sequence_info sequence;
  };

  causal_self_attention(index_t width, index_t heads, index_t kv_heads, double rope_theta)
      : q_proj(width, heads * (width / heads)),
        k_proj(width, kv_heads * (width / heads)),
        v_proj(width, kv_heads * (width / heads)),
        o_proj(heads * (width / heads), width),
        heads_(heads),
        kv_heads_(kv_heads),
        head_dim_(width / heads),
        rope_theta_(rope_theta) {}

  tensor<T, cpu> forward(const tensor_view<const T, cpu>& x, const sequence_info& sequence, context& ctx) const {
    const index_t B = sequence.batch, L = sequence.length;
    check_argument(x.rank() == 2 && x.size(0) == B * L, "meap::nn::causal_self_attention::forward", "x",
                   "shape " + to_string(x.shape()),
                   "(B * T, d) rows for B = " + std::to_string(B) + ", T = " + std::to_string(L));
    ctx.sequence = sequence;
    const rope_options rope{rope_theta_, sequence.positions};
    ctx.q = q_proj.forward(x, ctx.q_ctx);
    ctx.k = k_proj.forward(x, ctx.k_ctx);
    ctx.v = v_proj.forward(x, ctx.v_ctx);
    const auto q4 = ctx.q.view().reshape({B, L, heads_, head_dim_});
    const auto k4 = ctx.k.view().reshape({B, L, kv_heads_, head_dim_});
    rope_forward<T>(cpu{}, q4, q4, rope);
    rope_forward<T>(cpu{}, k4, k4, rope);
    ctx.out = tensor<T, cpu>(cpu{}, dims{B, L, heads_, head_dim_});
    ctx.lse = tensor<T, cpu>(cpu{}, dims{B, heads_, L});
    attention_forward<T>(cpu{}, q4, k4, ctx.v.view().reshape({B, L, kv_heads_, head_dim_}), ctx.out.view(),
                         ctx.lse.view(), attention_options<cpu>{{}, sequence.segment_ids});
    return o_proj.forward(ctx.out.view().reshape({B * L, heads_ * head_dim_}), ctx.o_ctx);
  }

  tensor<T, cpu> backward(const context& ctx, const tensor_view<const T, cpu>& dy) {
    const index_t B = ctx.sequence.batch, L = ctx.sequence.length;
    const auto d_out = o_proj.backward(ctx.o_ctx, dy);
    tensor<T, cpu> dq(cpu{}, dims{B, L, heads_, head_dim_});
    tensor<T, cpu> dk(cpu{}, dims{B, L, kv_heads_, head_dim_});
    tensor<T, cpu> dv(cpu{}, dims{B, L, kv_heads_, head_dim_});
    attention_backward<T>(cpu{}, ctx.q.view().reshape({B, L, heads_, head_dim_}),
                          ctx.k.view().reshape({B, L, kv_heads_, head_dim_}),
                          ctx.v.view().reshape({B, L, kv_heads_, head_dim_}), ctx.out.view(), ctx.lse.view(),
                          d_out.view().reshape({B, L, heads_, head_dim_}), dq.view(), dk.view(), dv.view(),
                          attention_options<cpu>{{}, ctx.sequence.segment_ids});
    const rope_options rope{rope_theta_, ctx.sequence.positions};
    rope_backward<T>(cpu{}, dq.view(), dq.view(), rope);
    rope_backward<T>(cpu{}, dk.view(), dk.view(), rope);
    tensor<T, cpu> dx(cpu{}, ctx.q_ctx.x.shape());
    q_proj.backward_into(ctx.q_ctx, dq.view().reshape({B * L, heads_ * head_dim_}), dx.view(),
                         gradient_write::overwrite);
    k_proj.backward_into(ctx.k_ctx, dk.view().reshape({B * L, kv_heads_ * head_dim_}), dx.view(),
                         gradient_write::accumulate);
    v_proj.backward_into(ctx.v_ctx, dv.view().reshape({B * L, kv_heads_ * head_dim_}), dx.view(),
                         gradient_write::accumulate);
    return dx;
  }

  void collect(std::vector<named_parameter<T, cpu>>& list, const std::string& prefix) {
    q_proj.collect(list, prefix + ".q_proj");
    k_proj.collect(list, prefix + ".k_proj");
    v_proj.collect(list, prefix + ".v_proj");
    o_proj.collect(list, prefix + ".o_proj");
  }

  linear<T> q_proj, k_proj, v_proj, o_proj;

 private:
  index_t heads_, kv_heads_, head_dim_;
  double rope_theta_;
};

// SwiGLU MLP: down(silu(gate(x)) * up(x)). (N, d) -> (N, d).
template <host_compute_type T>
class swiglu_mlp {
 public:
  struct context {
    typename linear<T>::context gate_ctx, up_ctx, down_ctx;
    tensor<T, cpu> gate, up, hidden;  // (N, F)
  };

  swiglu_mlp(index_t width, index_t ffn) : gate_proj(width, ffn), up_proj(width, ffn), down_proj(ffn, width) {}

  tensor<T, cpu> forward(const tensor_view<const T, cpu>& x, context& ctx) const {
    ctx.gate = gate_proj.forward(x, ctx.gate_ctx);
    ctx.up = up_proj.forward(x, ctx.up_ctx);
    ctx.hidden = tensor<T, cpu>(cpu{}, ctx.gate.shape());
    swiglu_forward<T>(cpu{}, ctx.gate.view(), ctx.up.view(), ctx.hidden.view());
    return down_proj.forward(ctx.hidden.view(), ctx.down_ctx);
  }

  tensor<T, cpu> backward(const context& ctx, const tensor_view<const T, cpu>& dy) {
    const auto d_hidden = down_proj.backward(ctx.down_ctx, dy);
    tensor<T, cpu> d_gate(cpu{}, ctx.gate.shape()), d_up(cpu{}, ctx.up.shape());
    swiglu_backward<T>(cpu{}, ctx.gate.view(), ctx.up.view(), d_hidden.view(), d_gate.view(), d_up.view());
    tensor<T, cpu> dx(cpu{}, ctx.gate_ctx.x.shape());
    gate_proj.backward_into(ctx.gate_ctx, d_gate.view(), dx.view(), gradient_write::overwrite);
    up_proj.backward_into(ctx.up_ctx, d_up.view(), dx.view(), gradient_write::accumulate);
    return dx;
  }

  void collect(std::vector<named_parameter<T, cpu>>& list, const std::string& prefix) {
    gate_proj.collect(list, prefix + ".gate_proj");
    up_proj.collect(list, prefix + ".up_proj");
    down_proj.collect(list, prefix + ".down_proj");
  }

  linear<T> gate_proj, up_proj, down_proj;
};

}  // namespace meap::nn
