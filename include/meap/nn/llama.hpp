// meap/nn/llama.hpp: the pre-norm LLaMA block and the decoder-only model built from it.
//
//   block:  h = x + attn(norm1(x));  y = h + mlp(norm2(h))
//   model:  tokens (B, T) -> embed -> blocks -> final norm -> hidden (B*T, d)
//
// The LM head and the loss are not part of forward: the selective fused cross-entropy
// (meap::linear_cross_entropy) takes the final hidden states and head_weight() directly, so the
// (B*T, V) logits are never materialized in training. logits() exists for evaluation.
// Parameter names follow Hugging Face's LlamaForCausalLM, so checkpoints load there and back.
#pragma once

#include <meap/core/philox.hpp>
#include <meap/nn/config.hpp>
#include <meap/nn/modules.hpp>

#include <cmath>
#include <cstdint>
#include <numbers>
#include <string>
#include <vector>

namespace meap::nn {

template <host_compute_type T>
class llama_block {
 public:
  struct context {
    typename rmsnorm<T>::context norm1_ctx, norm2_ctx;
    typename causal_self_attention<T>::context attn_ctx;
    typename swiglu_mlp<T>::context mlp_ctx;
    tensor<T, cpu> normed1, residual, normed2;  // (N, d)
  };

  explicit llama_block(const llama_config& config)
      : input_layernorm(config.d_model, config.norm_eps),
        self_attn(config.d_model, config.heads, config.kv_heads, config.rope_theta),
        post_attention_layernorm(config.d_model, config.norm_eps),
        mlp(config.d_model, config.ffn) {}

  // x: (N, d), kept alive by the caller until backward.
  tensor<T, cpu> forward(const tensor_view<const T, cpu>& x, const sequence_info& sequence, context& ctx) const {
    ctx.normed1 = input_layernorm.forward(x, ctx.norm1_ctx);
    ctx.residual = self_attn.forward(ctx.normed1.view(), sequence, ctx.attn_ctx);
    detail::add_into(ctx.residual, x);
    ctx.normed2 = post_attention_layernorm.forward(ctx.residual.view(), ctx.norm2_ctx);
    auto y = mlp.forward(ctx.normed2.view(), ctx.mlp_ctx);
    detail::add_into(y, ctx.residual.view());
    return y;
  }

  tensor<T, cpu> backward(const context& ctx, const tensor_view<const T, cpu>& dy) {
    // d residual = dy (skip) + norm2'(mlp'(dy)); dx = d residual (skip) + norm1'(attn'(d residual)).
    auto d_residual = post_attention_layernorm.backward(ctx.norm2_ctx, mlp.backward(ctx.mlp_ctx, dy).view());
    detail::add_into(d_residual, dy);
    auto dx = input_layernorm.backward(ctx.norm1_ctx, self_attn.backward(ctx.attn_ctx, d_residual.view()).view());
    detail::add_into(dx, d_residual.view());
    return dx;
  }

  void collect(std::vector<named_parameter<T, cpu>>& list, const std::string& prefix) {
    input_layernorm.collect(list, prefix + ".input_layernorm");
    self_attn.collect(list, prefix + ".self_attn");
    post_attention_layernorm.collect(list, prefix + ".post_attention_layernorm");
    mlp.collect(list, prefix + ".mlp");
  }

  rmsnorm<T> input_layernorm;
  causal_self_attention<T> self_attn;
  rmsnorm<T> post_attention_layernorm;
  swiglu_mlp<T> mlp;
};

template <host_compute_type T>
class llama_model {
  llama_config config_;  // first: validated before any parameter is allocated

 public:
  struct context {
    sequence_info sequence;
    tensor<std::int32_t, cpu> tokens;  // (N) copy of the input ids
    typename embedding<T>::context embed_ctx;
    std::vector<tensor<T, cpu>> layer_inputs;  // layers + 1 entries; the last feeds the final norm
    std::vector<typename llama_block<T>::context> block_ctx;
    typename rmsnorm<T>::context norm_ctx;
    tensor<T, cpu> hidden;  // (N, d) after the final norm
  };

  explicit llama_model(const llama_config& config) : config_((config.validate(), config)),
        embed_tokens(config.vocab, config.d_model), norm(config.d_model, config.norm_eps) {
    blocks.reserve(static_cast<std::size_t>(config.layers));
    for (index_t i = 0; i < config.layers; ++i) blocks.emplace_back(config);
    if (!config.tied_head) lm_head = parameter<T>(dims{config.vocab, config.d_model});
  }

  const llama_config& config() const { return config_; }

  // tokens: (B, T) int32 in [0, vocab), T <= max_seq. sequence.positions / segment_ids optional.
  context forward(const tensor_view<const std::int32_t, cpu>& tokens,
                  const tensor_view<const std::int32_t, cpu>& positions = {},
                  const tensor_view<const std::int32_t, cpu>& segment_ids = {}) const {
    constexpr std::string_view function = "meap::nn::llama_model::forward";
    check_argument(tokens.rank() == 2 && tokens.size(0) >= 1 && tokens.size(1) >= 1, function, "tokens",
                   "shape " + to_string(tokens.shape()), "a non-empty (B, T) batch of token ids");
    check_argument(tokens.size(1) <= config_.max_seq, function, "tokens", "length T = " + std::to_string(tokens.size(1)),
                   "T <= max_seq = " + std::to_string(config_.max_seq));
    context ctx;
    ctx.sequence = {tokens.size(0), tokens.size(1), positions, segment_ids};
    ctx.tokens = clone(cpu{}, tokens.reshape({tokens.numel()}));
    ctx.layer_inputs.reserve(blocks.size() + 1);
    ctx.layer_inputs.push_back(embed_tokens.forward(ctx.tokens.view(), ctx.embed_ctx));
    ctx.block_ctx.resize(blocks.size());
    for (std::size_t i = 0; i < blocks.size(); ++i)
      ctx.layer_inputs.push_back(blocks[i].forward(ctx.layer_inputs[i].view(), ctx.sequence, ctx.block_ctx[i]));
    ctx.hidden = norm.forward(ctx.layer_inputs.back().view(), ctx.norm_ctx);
    return ctx;
  }

  // Accumulates every parameter gradient from d_hidden = dL/d(hidden), (N, d).
  void backward(const context& ctx, const tensor_view<const T, cpu>& d_hidden) {
    check_shape("meap::nn::llama_model::backward", "d_hidden", d_hidden, ctx.hidden.shape());
    auto dx = norm.backward(ctx.norm_ctx, d_hidden);
    for (std::size_t i = blocks.size(); i-- > 0;) dx = blocks[i].backward(ctx.block_ctx[i], dx.view());
    embed_tokens.backward(ctx.embed_ctx, dx.view());
  }

  // The LM head (V, d) and its gradient: the embedding's when tied.
  tensor_view<T, cpu> head_weight() { return config_.tied_head ? embed_tokens.weight.value.view() : lm_head.value.view(); }
  tensor_view<const T, cpu> head_weight() const {
    return config_.tied_head ? embed_tokens.weight.value.view() : lm_head.value.view();
  }
  tensor_view<T, cpu> head_grad() { return config_.tied_head ? embed_tokens.weight.grad.view() : lm_head.grad.view(); }

  // Full logits (N, V) for evaluation; O(N V) memory.
  tensor<T, cpu> logits(const context& ctx) const {
    tensor<T, cpu> result(cpu{}, dims{ctx.hidden.size(0), config_.vocab});
    linear_forward<T>(cpu{}, ctx.hidden.view(), head_weight(), result.view());
    return result;
  }

  // Every trainable parameter with its Hugging Face name, in a fixed order.
  std::vector<named_parameter<T, cpu>> parameters() {
    std::vector<named_parameter<T, cpu>> list;
    embed_tokens.collect(list, "model.embed_tokens");
    for (std::size_t i = 0; i < blocks.size(); ++i) blocks[i].collect(list, "model.layers." + std::to_string(i));
    norm.collect(list, "model.norm");
    if (!config_.tied_head) lm_head.append_to(list, "lm_head.weight", true);
    return list;
  }

  void zero_grad() {
    for (auto& p : parameters()) fill(cpu{}, p.grad, T(0));
  }

  // The official MEAP initialization: every matrix ~ N(0, sqrt(2 / (5 d))) ("small init"), except
  // the output projections (o_proj, down_proj), ~ N(0, 1 / (sqrt(d) * layers)); norm gains = 1.
  // Draws come from philox_stream(seed, parameter index), so the result depends only on the seed.
  void initialize(std::uint64_t seed) {
    const double d = static_cast<double>(config_.d_model);
    const double base = std::sqrt(2.0 / (5.0 * d));
    const double output = 1.0 / (std::sqrt(d) * static_cast<double>(config_.layers));
    auto list = parameters();
    for (std::size_t i = 0; i < list.size(); ++i) {
      auto& p = list[i];
      if (p.value.rank() == 1) {
        fill(cpu{}, p.value, T(1));
        continue;
      }
      const bool is_output = p.name.ends_with("o_proj.weight") || p.name.ends_with("down_proj.weight");
      fill_normal(p.value, is_output ? output : base, philox_stream(seed, i));
    }
  }

  embedding<T> embed_tokens;
  std::vector<llama_block<T>> blocks;
  rmsnorm<T> norm;
  parameter<T> lm_head;  // (V, d); empty when tied

 private:
  // Box-Muller on 24-bit uniforms: deterministic from the stream.
  static void fill_normal(const tensor_view<T, cpu>& view, double std_dev, philox_stream rng) {
    T* p = view.data();
    const index_t n = view.numel();
    for (index_t i = 0; i < n; i += 2) {
      const double u1 = (rng.next_u32() >> 8) * (1.0 / 16777216.0) + (0.5 / 16777216.0);  // (0, 1)
      const double u2 = (rng.next_u32() >> 8) * (1.0 / 16777216.0);
      const double radius = std_dev * std::sqrt(-2.0 * std::log(u1));
      p[i] = static_cast<T>(radius * std::cos(2.0 * std::numbers::pi * u2));
      if (i + 1 < n) p[i + 1] = static_cast<T>(radius * std::sin(2.0 * std::numbers::pi * u2));
    }
  }
};

}  // namespace meap::nn
