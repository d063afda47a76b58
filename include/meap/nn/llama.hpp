// meap/nn/llama.hpp: the pre-norm LLaMA block and the decoder-only model built from it, for every
// device and precision (llama_model<P, Device>, e.g. <fp32, cpu> or <bf16_mixed, cuda>).
//
//   block:  h = x + attn(norm1(x));  y = h + mlp(norm2(h))
//   model:  tokens (B, T) -> embed -> blocks -> final norm -> hidden (B*T, d)
//
// The LM head and the loss are not part of forward: the selective fused cross-entropy
// (meap::linear_cross_entropy) takes the final hidden states and head_weight() directly, so the
// (B*T, V) logits are never materialized in training. logits() exists for evaluation.
// Parameter names follow Hugging Face's LlamaForCausalLM, so checkpoints load there and back.
// The model owns its parameter_store: master weights, compute weights and gradients in three
// flat buffers on its device (nn/parameter_store.hpp).
#pragma once

#include <meap/core/philox.hpp>
#include <meap/core/precision.hpp>
#include <meap/nn/config.hpp>
#include <meap/nn/kv_cache.hpp>
#include <meap/nn/modules.hpp>
#include <meap/nn/parameter_store.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <numbers>
#include <span>
#include <string>
#include <vector>

namespace meap::nn {

template <class P, device Device>
class llama_block {
 public:
  using T = typename P::compute_t;
  struct context {
    typename rmsnorm<P, Device>::context norm1_ctx, norm2_ctx;
    typename causal_self_attention<P, Device>::context attn_ctx;
    typename swiglu_mlp<P, Device>::context mlp_ctx;
    tensor<T, Device> normed1, residual, normed2;  // (N, d)
  };

  llama_block(parameter_store<P, Device>& store, const std::string& name, const llama_config& config)
      : input_layernorm(store, name + ".input_layernorm", config.d_model, config.norm_eps),
        self_attn(store, name + ".self_attn", config.d_model, config.heads, config.kv_heads, config.rope_theta,
                  config.rope_scaling),
        post_attention_layernorm(store, name + ".post_attention_layernorm", config.d_model, config.norm_eps),
        mlp(store, name + ".mlp", config.d_model, config.ffn) {}

  // x: (N, d), kept alive by the caller until backward.
  tensor<T, Device> forward(const Device& device, const tensor_view<const T, Device>& x,
                            const sequence_info<Device>& sequence, context& ctx) const {
    ctx.normed1 = input_layernorm.forward(device, x, ctx.norm1_ctx);
    ctx.residual = self_attn.forward(device, ctx.normed1.view(), sequence, ctx.attn_ctx);
    add_into<T>(device, ctx.residual.view(), x);
    ctx.normed2 = post_attention_layernorm.forward(device, ctx.residual.view(), ctx.norm2_ctx);
    auto y = mlp.forward(device, ctx.normed2.view(), ctx.mlp_ctx);
    add_into<T>(device, y.view(), ctx.residual.view());
    return y;
  }

  // Inference over the layer's key/value cache (causal_self_attention::forward_cached).
  tensor<T, Device> forward_cached(const Device& device, const tensor_view<const T, Device>& x, index_t B, index_t Tq,
                                   const tensor_view<const std::int32_t, Device>& positions,
                                   std::span<const index_t> start, const tensor_view<T, Device>& key_cache,
                                   const tensor_view<T, Device>& value_cache) const {
    context ctx;
    auto h = self_attn.forward_cached(device, input_layernorm.forward(device, x, ctx.norm1_ctx).view(), B, Tq,
                                      positions, start, key_cache, value_cache);
    add_into<T>(device, h.view(), x);
    auto y = mlp.forward(device, post_attention_layernorm.forward(device, h.view(), ctx.norm2_ctx).view(), ctx.mlp_ctx);
    add_into<T>(device, y.view(), h.view());
    return y;
  }

  tensor<T, Device> backward(const Device& device, const context& ctx, const tensor_view<const T, Device>& dy) {
    // d residual = dy (skip) + norm2'(mlp'(dy)); dx = d residual (skip) + norm1'(attn'(d residual)).
    auto d_residual =
        post_attention_layernorm.backward(device, ctx.norm2_ctx, mlp.backward(device, ctx.mlp_ctx, dy).view());
    add_into<T>(device, d_residual.view(), dy);
    auto dx = input_layernorm.backward(device, ctx.norm1_ctx,
                                       self_attn.backward(device, ctx.attn_ctx, d_residual.view()).view());
    add_into<T>(device, dx.view(), d_residual.view());
    return dx;
  }

  rmsnorm<P, Device> input_layernorm;
  causal_self_attention<P, Device> self_attn;
  rmsnorm<P, Device> post_attention_layernorm;
  swiglu_mlp<P, Device> mlp;
};

template <class P = fp32, device Device = cpu>
  requires device_precision<P, Device>
class llama_model {
  llama_config config_;  // first: validated before any parameter is declared
  std::unique_ptr<parameter_store<P, Device>> store_;  // on the heap: modules point to it, the model moves

 public:
  using precision_type = P;
  using device_type = Device;
  using T = typename P::compute_t;
  using G = typename P::grad_t;
  using master_t = typename P::master_t;

  struct context {
    sequence_info<Device> sequence;
    tensor<std::int32_t, Device> tokens;  // (N) copy of the input ids
    typename embedding<P, Device>::context embed_ctx;
    std::vector<tensor<T, Device>> layer_inputs;  // layers + 1 entries; the last feeds the final norm
    std::vector<typename llama_block<P, Device>::context> block_ctx;
    typename rmsnorm<P, Device>::context norm_ctx;
    tensor<T, Device> hidden;  // (N, d) after the final norm
  };

  // Declares every parameter and allocates them on `device` (zeros; norm gains 1). Call
  // initialize() or load a checkpoint next.
  explicit llama_model(const llama_config& config, const Device& device = {})
      : config_((config.validate(), config)),
        store_(std::make_unique<parameter_store<P, Device>>()),
        embed_tokens(*store_, "model.embed_tokens", config.vocab, config.d_model),
        blocks(make_blocks(*store_, config)),
        norm(*store_, "model.norm", config.d_model, config.norm_eps) {
    if (!config.tied_head) lm_head_ = store_->declare("lm_head.weight", dims{config.vocab, config.d_model}, true);
    store_->allocate(device);
  }

  const llama_config& config() const noexcept { return config_; }
  parameter_store<P, Device>& store() noexcept { return *store_; }
  const parameter_store<P, Device>& store() const noexcept { return *store_; }
  // The device (and, on CUDA, the stream) the parameters were allocated on.
  const Device& device() const noexcept { return store_->device(); }

  // tokens: (B, T) int32 in [0, vocab), T <= max_seq, on `device`. positions / segment_ids
  // optional (B, T); checks optional (core/deferred_checks.hpp: meap::cuda then records bad ids
  // instead of waiting to throw).
  context forward(const Device& device, const tensor_view<const std::int32_t, Device>& tokens,
                  const tensor_view<const std::int32_t, Device>& positions = {},
                  const tensor_view<const std::int32_t, Device>& segment_ids = {},
                  const deferred_checks<Device>& checks = {}) const {
    constexpr std::string_view function = "meap::nn::llama_model::forward";
    check_argument(tokens.rank() == 2 && tokens.size(0) >= 1 && tokens.size(1) >= 1, function, "tokens",
                   "shape " + to_string(tokens.shape()), "a non-empty (B, T) batch of token ids");
    check_argument(tokens.size(1) <= config_.max_seq, function, "tokens", "length T = " + std::to_string(tokens.size(1)),
                   "T <= max_seq = " + std::to_string(config_.max_seq));
    context ctx;
    ctx.sequence = {tokens.size(0), tokens.size(1), positions, segment_ids, checks};
    ctx.tokens = tensor<std::int32_t, Device>(device, dims{tokens.numel()});
    copy(device, tokens.reshape({tokens.numel()}), ctx.tokens.view());
    ctx.layer_inputs.reserve(blocks.size() + 1);
    ctx.layer_inputs.push_back(embed_tokens.forward(device, ctx.tokens.view(), ctx.embed_ctx, checks));
    ctx.block_ctx.resize(blocks.size());
    for (std::size_t i = 0; i < blocks.size(); ++i)
      ctx.layer_inputs.push_back(
          blocks[i].forward(device, ctx.layer_inputs[i].view(), ctx.sequence, ctx.block_ctx[i]));
    ctx.hidden = norm.forward(device, ctx.layer_inputs.back().view(), ctx.norm_ctx);
    return ctx;
  }

  // A key/value cache for `batch` rows of up to `capacity` positions (default max_seq), on `device`.
  kv_cache<T, Device> make_cache(const Device& device, index_t batch, index_t capacity = 0) const {
    return kv_cache<T, Device>(device, config_, batch, capacity > 0 ? capacity : config_.max_seq);
  }

  // Inference with a key/value cache (generation): tokens (B, Tq) on `device` are the next Tq
  // tokens of each row; row b's take positions cache.lengths()[b] onwards. Returns the final
  // hidden states (B * Tq, d) after the final norm (logits: linear_forward with head_weight()).
  // Each row's length then grows by advance[b] (default: Tq for every row; a right-padded prefill
  // passes each prompt's own length, so the padding is overwritten by that row's next tokens).
  // Saves nothing for backward. The result equals forward() on the whole sequence up to rounding.
  tensor<T, Device> forward_cached(const Device& device, const tensor_view<const std::int32_t, Device>& tokens,
                                   kv_cache<T, Device>& cache, std::span<const index_t> advance = {}) const {
    constexpr std::string_view function = "meap::nn::llama_model::forward_cached";
    check_argument(tokens.rank() == 2 && tokens.size(0) >= 1 && tokens.size(1) >= 1, function, "tokens",
                   "shape " + to_string(tokens.shape()), "a non-empty (B, Tq) batch of token ids");
    const index_t B = tokens.size(0), Tq = tokens.size(1);
    check_argument(cache.batch() == B && cache.layers() == config_.layers, function, "cache",
                   std::to_string(cache.batch()) + " rows of " + std::to_string(cache.layers()) + " layers",
                   "a cache from make_cache for B = " + std::to_string(B) + " rows (one per token row)");
    const auto start = cache.lengths();
    for (std::size_t b = 0; b < start.size(); ++b)
      check_argument(start[b] + Tq <= cache.capacity(), function, "tokens",
                     std::to_string(Tq) + " new tokens after the " + std::to_string(start[b]) + " of row " +
                         std::to_string(b),
                     "at most capacity = " + std::to_string(cache.capacity()) + " positions per row");
    std::vector<index_t> grown(start.begin(), start.end());
    if (!advance.empty()) {
      check_argument(static_cast<index_t>(advance.size()) == B, function, "advance",
                     std::to_string(advance.size()) + " entries", "one per row (B = " + std::to_string(B) + ")");
      for (std::size_t b = 0; b < advance.size(); ++b) {
        check_argument(advance[b] >= 0 && advance[b] <= Tq, function, "advance",
                       "advance[" + std::to_string(b) + "] = " + std::to_string(advance[b]),
                       "0 <= advance <= Tq = " + std::to_string(Tq));
        grown[b] += advance[b];
      }
    } else {
      for (auto& length : grown) length += Tq;
    }
    auto host_positions = zeros<std::int32_t>(cpu{}, dims{B, Tq});
    for (index_t b = 0; b < B; ++b)
      for (index_t t = 0; t < Tq; ++t)
        host_positions.data()[b * Tq + t] = static_cast<std::int32_t>(start[static_cast<std::size_t>(b)] + t);
    tensor<std::int32_t, Device> positions(device, dims{B, Tq});
    copy(device, host_positions.view().as_const(), positions.view());
    tensor<std::int32_t, Device> flat(device, dims{B * Tq});
    copy(device, tokens.reshape({B * Tq}), flat.view());
    typename embedding<P, Device>::context embed_ctx;
    auto x = embed_tokens.forward(device, flat.view(), embed_ctx);
    for (std::size_t i = 0; i < blocks.size(); ++i) {
      const auto layer = static_cast<index_t>(i);
      x = blocks[i].forward_cached(device, x.view(), B, Tq, positions.view(), start, cache.keys(layer),
                                   cache.values(layer));
    }
    typename rmsnorm<P, Device>::context norm_ctx;
    auto hidden = norm.forward(device, x.view(), norm_ctx);
    finish_host_copy(device);  // host_positions dies here
    cache.set_lengths(grown);
    return hidden;
  }

  // Accumulates every parameter gradient from d_hidden = dL/d(hidden), (N, d).
  //
  // `done` (optional) is told, as the pass goes, from which offset of the store's flat gradient
  // buffer on every gradient is final: after the final norm, after each block (last to first),
  // then 0 after the embedding. Parameters are laid out embedding, blocks, norm, head, and the
  // head's gradient is complete before backward starts (the loss wrote it), so what lies above
  // the offset is untouched for the rest of the pass: a data-parallel trainer starts reducing it
  // while the earlier layers still run (train/pretrain.hpp).
  void backward(const Device& device, const context& ctx, const tensor_view<const T, Device>& d_hidden,
                const std::function<void(index_t)>& done = {}) {
    check_shape("meap::nn::llama_model::backward", "d_hidden", d_hidden, ctx.hidden.shape());
    auto dx = norm.backward(device, ctx.norm_ctx, d_hidden);
    if (done) done(store_->entry(norm.weight_id()).offset);
    for (std::size_t i = blocks.size(); i-- > 0;) {
      dx = blocks[i].backward(device, ctx.block_ctx[i], dx.view());
      if (done) done(block_start(i));
    }
    embed_tokens.backward(device, ctx.embed_ctx, dx.view());
    if (done) done(0);
  }

  // The LM head (V, d) in the compute type, and its gradient: the embedding's when tied.
  tensor_view<const T, Device> head_weight() const { return store_->compute(head_id()); }
  tensor_view<G, Device> head_grad() const { return store_->grad(head_id()); }
  index_t head_id() const noexcept { return config_.tied_head ? embed_tokens.weight_id() : lm_head_; }

  // Full logits (N, V) for evaluation; O(N V) memory.
  tensor<T, Device> logits(const Device& device, const context& ctx) const {
    tensor<T, Device> result(device, dims{ctx.hidden.size(0), config_.vocab});
    linear_forward<T>(device, ctx.hidden.view(), head_weight(), result.view());
    return result;
  }

  // Every trainable parameter (master values and gradients) with its Hugging Face name, in a
  // fixed order. After editing master values of a mixed-precision model, call
  // store().refresh_compute(device).
  std::vector<named_parameter<master_t, Device>> parameters() const { return store_->parameters(); }

  void zero_grad(const Device& device) { store_->zero_grad(device); }

  // The official MEAP initialization: every matrix ~ N(0, sqrt(2 / (5 d))) ("small init"), except
  // the output projections (o_proj, down_proj), ~ N(0, 1 / (sqrt(d) * layers)); norm gains = 1.
  // Draws come from philox_stream(seed, parameter index) on the host, in double, rounded to the
  // master type: the weights depend only on the seed, on every device.
  void initialize(std::uint64_t seed) {
    const double d = static_cast<double>(config_.d_model);
    const double base = std::sqrt(2.0 / (5.0 * d));
    const double output = 1.0 / (std::sqrt(d) * static_cast<double>(config_.layers));
    auto host = zeros<master_t>(cpu{}, dims{store_->flat_size()});
    const auto& entries = store_->entries();
    for (std::size_t i = 0; i < entries.size(); ++i) {
      const auto& e = entries[i];
      master_t* values = host.data() + e.offset;
      if (e.shape.rank() == 1) {
        for (index_t k = 0; k < e.numel; ++k) values[k] = master_t(1);
        continue;
      }
      const bool is_output = e.name.ends_with("o_proj.weight") || e.name.ends_with("down_proj.weight");
      fill_normal(values, e.numel, is_output ? output : base, philox_stream(seed, i));
    }
    const Device& device = store_->device();
    copy(device, host.view().as_const(), store_->master_flat());
    store_->refresh_compute(device);
    finish_host_copy(device);
  }

  embedding<P, Device> embed_tokens;
  std::vector<llama_block<P, Device>> blocks;
  rmsnorm<P, Device> norm;

  // The layers, declared in order (a helper so that `norm` can be declared after them).
  // The flat-buffer offset of block i's first parameter.
  index_t block_start(std::size_t i) const {
    const std::string prefix = "model.layers." + std::to_string(i) + ".";
    index_t start = store_->flat_size();
    for (const auto& e : store_->entries())
      if (e.name.compare(0, prefix.size(), prefix) == 0) start = std::min(start, e.offset);
    return start;
  }

  static std::vector<llama_block<P, Device>> make_blocks(parameter_store<P, Device>& store, const llama_config& config) {
    std::vector<llama_block<P, Device>> list;
    list.reserve(static_cast<std::size_t>(config.layers));
    for (index_t i = 0; i < config.layers; ++i) list.emplace_back(store, "model.layers." + std::to_string(i), config);
    return list;
  }

 private:
  // A copy from pageable host memory may still be reading it when copy() returns on CUDA; wait
  // before the host buffer is freed.
  static void finish_host_copy(const Device& device) {
    if constexpr (!std::is_same_v<Device, cpu>) synchronize(device);
  }

  // Box-Muller on 24-bit uniforms: deterministic from the stream.
  static void fill_normal(master_t* p, index_t n, double std_dev, philox_stream rng) {
    for (index_t i = 0; i < n; i += 2) {
      const double u1 = (rng.next_u32() >> 8) * (1.0 / 16777216.0) + (0.5 / 16777216.0);  // (0, 1)
      const double u2 = (rng.next_u32() >> 8) * (1.0 / 16777216.0);
      const double radius = std_dev * std::sqrt(-2.0 * std::log(u1));
      p[i] = static_cast<master_t>(radius * std::cos(2.0 * std::numbers::pi * u2));
      if (i + 1 < n) p[i + 1] = static_cast<master_t>(radius * std::sin(2.0 * std::numbers::pi * u2));
    }
  }

  index_t lm_head_ = -1;  // the head's id in the store; -1 when tied
};

}  // namespace meap::nn
