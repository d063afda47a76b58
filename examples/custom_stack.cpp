// custom_stack: a different architecture from meap's modules. A GPT-J style *parallel* block,
//   y = x + attn(norm(x)) + mlp(norm(x)),
// stacked twice under an embedding and a final norm, trained with MEAP masking and AdamW by
// hand: the modules declare their parameters in one parameter_store (Hugging Face-style names,
// flat buffers for AdamW), each module's forward fills a context, and backward consumes it and
// accumulates the parameter gradients. Written once for any device and precision (the template
// parameters below); main() runs it on the CPU in float32.
#include <meap/meap.hpp>

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

namespace {

template <class P, class Device>
struct parallel_block {
  using T = typename P::compute_t;
  using tensor = meap::tensor<T, Device>;
  using view = meap::tensor_view<const T, Device>;
  meap::nn::rmsnorm<P, Device> norm;
  meap::nn::causal_self_attention<P, Device> attn;
  meap::nn::swiglu_mlp<P, Device> mlp;

  struct context {
    typename meap::nn::rmsnorm<P, Device>::context norm_ctx;
    typename meap::nn::causal_self_attention<P, Device>::context attn_ctx;
    typename meap::nn::swiglu_mlp<P, Device>::context mlp_ctx;
    tensor normed;
  };

  parallel_block(meap::nn::parameter_store<P, Device>& store, const std::string& name, meap::index_t width,
                 meap::index_t heads, meap::index_t ffn)
      : norm(store, name + ".norm", width, 1e-5),
        attn(store, name + ".attn", width, heads, heads, 10000.0),
        mlp(store, name + ".mlp", width, ffn) {}

  tensor forward(const Device& device, const view& x, const meap::nn::sequence_info<Device>& sequence,
                 context& ctx) const {
    ctx.normed = norm.forward(device, x, ctx.norm_ctx);
    auto y = attn.forward(device, ctx.normed.view(), sequence, ctx.attn_ctx);
    meap::add_into<T>(device, y.view(), mlp.forward(device, ctx.normed.view(), ctx.mlp_ctx).view());
    meap::add_into<T>(device, y.view(), x);
    return y;
  }
  tensor backward(const Device& device, const context& ctx, const view& dy) {
    auto d_normed = attn.backward(device, ctx.attn_ctx, dy);
    meap::add_into<T>(device, d_normed.view(), mlp.backward(device, ctx.mlp_ctx, dy).view());
    auto dx = norm.backward(device, ctx.norm_ctx, d_normed.view());
    meap::add_into<T>(device, dx.view(), dy);  // the skip path
    return dx;
  }
};

}  // namespace

static int run() {
  using P = meap::fp32;
  using Device = meap::cpu;
  const Device device;
  constexpr meap::index_t vocab = 33, width = 48, heads = 4, ffn = 128, B = 8, T = 32;
  constexpr std::int32_t mask_id = 32;
  meap::nn::parameter_store<P, Device> store;
  meap::nn::embedding<P, Device> embed(store, "embed", vocab, width);
  std::vector<parallel_block<P, Device>> blocks;
  for (int i = 0; i < 2; ++i) blocks.emplace_back(store, "blocks." + std::to_string(i), width, heads, ffn);
  meap::nn::rmsnorm<P, Device> final_norm(store, "norm", width, 1e-5);
  store.allocate(device);  // every parameter in three flat buffers; gains start at 1, the rest at 0

  meap::philox_stream init(7, 0);  // small random init for the matrices
  for (auto& p : store.parameters())
    if (p.value.rank() == 2)
      for (meap::index_t i = 0; i < p.value.numel(); ++i) p.value.data()[i] = 0.08f * (init.next_float() - 0.5f);

  meap::adamw<P, Device> optimizer({.lr = 3e-3, .weight_decay = 0.0});
  auto tokens = meap::zeros<std::int32_t>(device, {B, T + 1});
  for (std::uint64_t step = 0; step < 60; ++step) {
    for (meap::index_t b = 0; b < B; ++b)  // x[t+1] = x[t] + stride (mod 32), a stride per row
      for (meap::index_t t = 0; t <= T; ++t) tokens.view()(b, t) = static_cast<std::int32_t>((step + (b + 1) * t) % 32);
    const auto batch = meap::masking::apply(device, meap::masking::fixed_ratio{}, tokens.view().as_const(),
                                            {.seed = 1, .step = step, .mask_id = mask_id});
    store.zero_grad(device);

    // Forward through the custom stack; the embedding doubles as the LM head (tied).
    const meap::nn::sequence_info<Device> sequence{B, T};
    typename meap::nn::embedding<P, Device>::context embed_ctx;
    std::vector<typename parallel_block<P, Device>::context> ctx(blocks.size());
    std::vector<meap::tensor<float, Device>> activations;
    activations.push_back(embed.forward(device, batch.input_ids.view().reshape({B * T}), embed_ctx));
    for (std::size_t i = 0; i < blocks.size(); ++i)
      activations.push_back(blocks[i].forward(device, activations.back().view(), sequence, ctx[i]));
    typename meap::nn::rmsnorm<P, Device>::context norm_ctx;
    const auto hidden = final_norm.forward(device, activations.back().view(), norm_ctx);

    // The loss adds the head's share of the tied matrix to its gradient; backward adds the rest.
    meap::tensor<float, Device> d_hidden(device, hidden.shape());
    const auto loss = meap::linear_cross_entropy<float>(device, hidden.view(), embed.weight().compute,
                                                        batch.labels.view().reshape({B * T}), d_hidden.view(),
                                                        embed.weight().grad,
                                                        {.d_weight_write = meap::gradient_write::accumulate});
    auto dx = final_norm.backward(device, norm_ctx, d_hidden.view());
    for (std::size_t i = blocks.size(); i-- > 0;) dx = blocks[i].backward(device, ctx[i], dx.view());
    embed.backward(device, embed_ctx, dx.view());

    const auto clip = meap::clip_grad_norm(device, store.parameters(), 1.0);
    if (clip.finite) optimizer.step(device, store, optimizer.config().lr);
    if (step % 10 == 9) std::printf("step %2llu  loss %.3f  |g| %.2f\n", static_cast<unsigned long long>(step + 1), loss.loss, clip.total_norm);
  }
  return 0;
}

// Anything unexpected ends the program with one line and a non-zero exit.
int main() {
  try {
    return run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", "custom_stack", e.what());
  } catch (...) {
    std::fprintf(stderr, "%s: unknown error\n", "custom_stack");
  }
  return 1;
}
