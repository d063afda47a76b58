// custom_stack: a different architecture from meap's modules. A GPT-J style *parallel* block,
//   y = x + attn(norm(x)) + mlp(norm(x)),
// stacked twice under an embedding and a final norm, trained with MEAP masking and AdamW by
// hand: each module's forward fills a context, backward consumes it and accumulates the
// parameter gradients, collect() names the parameters for the optimizer and checkpoints.
#include <meap/meap.hpp>

#include <cstdio>
#include <vector>

namespace {

using meap::cpu;
using tensor = meap::tensor<float, cpu>;
using view = meap::tensor_view<const float, cpu>;

struct parallel_block {
  meap::nn::rmsnorm<float> norm;
  meap::nn::causal_self_attention<float> attn;
  meap::nn::swiglu_mlp<float> mlp;

  struct context {
    meap::nn::rmsnorm<float>::context norm_ctx;
    meap::nn::causal_self_attention<float>::context attn_ctx;
    meap::nn::swiglu_mlp<float>::context mlp_ctx;
    tensor normed;
  };

  parallel_block(meap::index_t width, meap::index_t heads, meap::index_t ffn)
      : norm(width, 1e-5), attn(width, heads, heads, 10000.0), mlp(width, ffn) {}

  tensor forward(const view& x, const meap::nn::sequence_info& sequence, context& ctx) const {
    ctx.normed = norm.forward(x, ctx.norm_ctx);
    auto y = attn.forward(ctx.normed.view(), sequence, ctx.attn_ctx);
    const auto m = mlp.forward(ctx.normed.view(), ctx.mlp_ctx);
    for (meap::index_t i = 0; i < y.numel(); ++i) y.data()[i] += m.data()[i] + x.data()[i];
    return y;
  }
  tensor backward(const context& ctx, const view& dy) {
    auto d_normed = attn.backward(ctx.attn_ctx, dy);
    const auto d_mlp = mlp.backward(ctx.mlp_ctx, dy);
    for (meap::index_t i = 0; i < d_normed.numel(); ++i) d_normed.data()[i] += d_mlp.data()[i];
    auto dx = norm.backward(ctx.norm_ctx, d_normed.view());
    for (meap::index_t i = 0; i < dx.numel(); ++i) dx.data()[i] += dy.data()[i];  // the skip path
    return dx;
  }
  void collect(std::vector<meap::named_parameter<float, cpu>>& list, const std::string& prefix) {
    norm.collect(list, prefix + ".norm");
    attn.collect(list, prefix + ".attn");
    mlp.collect(list, prefix + ".mlp");
  }
};

}  // namespace

int main() {
  constexpr meap::index_t vocab = 33, width = 48, heads = 4, ffn = 128, B = 8, T = 32;
  constexpr std::int32_t mask_id = 32;
  meap::nn::embedding<float> embed(vocab, width);
  std::vector<parallel_block> blocks;
  for (int i = 0; i < 2; ++i) blocks.emplace_back(width, heads, ffn);
  meap::nn::rmsnorm<float> final_norm(width, 1e-5);

  std::vector<meap::named_parameter<float, cpu>> params;
  embed.collect(params, "embed");
  for (std::size_t i = 0; i < blocks.size(); ++i) blocks[i].collect(params, "blocks." + std::to_string(i));
  final_norm.collect(params, "norm");
  meap::philox_stream init(7, 0);  // small random init for the matrices; gains stay 1
  for (auto& p : params)
    if (p.value.rank() == 2)
      for (meap::index_t i = 0; i < p.value.numel(); ++i) p.value.data()[i] = 0.08f * (init.next_float() - 0.5f);

  meap::adamw<float> optimizer({.lr = 3e-3, .weight_decay = 0.0});
  auto tokens = meap::zeros<std::int32_t>(cpu{}, {B, T + 1});
  for (std::uint64_t step = 0; step < 60; ++step) {
    for (meap::index_t b = 0; b < B; ++b)  // x[t+1] = x[t] + stride (mod 32), a stride per row
      for (meap::index_t t = 0; t <= T; ++t) tokens.view()(b, t) = static_cast<std::int32_t>((step + (b + 1) * t) % 32);
    const auto batch = meap::masking::apply(cpu{}, meap::masking::fixed_ratio{}, tokens.view().as_const(),
                                            {.seed = 1, .step = step, .mask_id = mask_id});
    for (auto& p : params) meap::fill(cpu{}, p.grad, 0.0f);

    // Forward through the custom stack; the embedding doubles as the LM head (tied).
    const meap::nn::sequence_info sequence{B, T};
    meap::nn::embedding<float>::context embed_ctx;
    std::vector<parallel_block::context> ctx(blocks.size());
    std::vector<tensor> activations;
    activations.push_back(embed.forward(batch.input_ids.view().reshape({B * T}), embed_ctx));
    for (std::size_t i = 0; i < blocks.size(); ++i)
      activations.push_back(blocks[i].forward(activations.back().view(), sequence, ctx[i]));
    meap::nn::rmsnorm<float>::context norm_ctx;
    const auto hidden = final_norm.forward(activations.back().view(), norm_ctx);

    tensor d_hidden(cpu{}, hidden.shape()), d_head(cpu{}, embed.weight.value.shape());
    const auto loss = meap::linear_cross_entropy<float>(cpu{}, hidden.view(), embed.weight.value.view(),
                                                        batch.labels.view().reshape({B * T}), d_hidden.view(), d_head.view());
    // Backward in reverse order, then the head's share of the tied matrix.
    auto dx = final_norm.backward(norm_ctx, d_hidden.view());
    for (std::size_t i = blocks.size(); i-- > 0;) dx = blocks[i].backward(ctx[i], dx.view());
    embed.backward(embed_ctx, dx.view());
    for (meap::index_t i = 0; i < d_head.numel(); ++i) embed.weight.grad.data()[i] += d_head.data()[i];

    const auto clip = meap::clip_grad_norm(cpu{}, params, 1.0);
    if (clip.finite) optimizer.step(cpu{}, params);
    if (step % 10 == 9) std::printf("step %2llu  loss %.3f  |g| %.2f\n", static_cast<unsigned long long>(step + 1), loss.loss, clip.total_norm);
  }
  return 0;
}
