// bench/train_step_libtorch.cpp: the baseline for bench_train_step, the same model and training
// step written with LibTorch's C++ frontend (built only when find_package(Torch) succeeds).
//
// Model: token embedding, `layers` pre-norm blocks (RMSNorm by hand, q/k/v/o projections without
// bias, RoPE in Hugging Face's rotate_half form, causal softmax attention as matmul + mask +
// softmax since LibTorch 1.13 has no scaled_dot_product_attention, SwiGLU MLP), final RMSNorm,
// untied LM head. Step: full-logits cross_entropy (ignore_index -100) on the labels the meap side
// made, backward, clip_grad_norm_(1.0), torch::optim::AdamW. fp32 throughout.
// Kept in its own translation unit so that no Torch header is seen by the meap side.
#include <torch/torch.h>

#include <dlfcn.h>

#include <cmath>
#include <limits>
#include <string>
#include <cstdint>
#include <memory>
#include <vector>

#include "support/torch_trainer.hpp"

namespace meap_bench_torch {
namespace {

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  return x * torch::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps) * weight;
}

torch::Tensor rotate_half(const torch::Tensor& x) {
  const auto half = x.size(-1) / 2;
  return torch::cat({-x.slice(-1, half), x.slice(-1, 0, half)}, -1);
}

struct blockImpl : torch::nn::Module {
  blockImpl(const model_config& c)
      : heads(c.heads), head_dim(c.d_model / c.heads), eps(c.norm_eps),
        attn_norm(register_parameter("attn_norm", torch::ones({c.d_model}))),
        mlp_norm(register_parameter("mlp_norm", torch::ones({c.d_model}))),
        q(register_module("q", torch::nn::Linear(torch::nn::LinearOptions(c.d_model, c.d_model).bias(false)))),
        k(register_module("k", torch::nn::Linear(torch::nn::LinearOptions(c.d_model, c.d_model).bias(false)))),
        v(register_module("v", torch::nn::Linear(torch::nn::LinearOptions(c.d_model, c.d_model).bias(false)))),
        o(register_module("o", torch::nn::Linear(torch::nn::LinearOptions(c.d_model, c.d_model).bias(false)))),
        gate(register_module("gate", torch::nn::Linear(torch::nn::LinearOptions(c.d_model, c.ffn).bias(false)))),
        up(register_module("up", torch::nn::Linear(torch::nn::LinearOptions(c.d_model, c.ffn).bias(false)))),
        down(register_module("down", torch::nn::Linear(torch::nn::LinearOptions(c.ffn, c.d_model).bias(false)))) {}

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& causal) {
    const auto B = x.size(0), T = x.size(1);
    auto h = rms_norm(x, attn_norm, eps);
    auto split = [&](const torch::Tensor& t) { return t.view({B, T, heads, head_dim}).transpose(1, 2); };
    auto qh = split(q->forward(h)), kh = split(k->forward(h)), vh = split(v->forward(h));
    qh = qh * cos + rotate_half(qh) * sin;
    kh = kh * cos + rotate_half(kh) * sin;
    auto scores = torch::matmul(qh, kh.transpose(-2, -1)) * (1.0 / std::sqrt(double(head_dim)));
    scores = scores.masked_fill(causal, -std::numeric_limits<float>::infinity());
    auto attn = torch::matmul(torch::softmax(scores, -1), vh).transpose(1, 2).reshape({B, T, heads * head_dim});
    auto y = x + o->forward(attn);
    auto m = rms_norm(y, mlp_norm, eps);
    return y + down->forward(torch::silu(gate->forward(m)) * up->forward(m));
  }

  std::int64_t heads, head_dim;
  double eps;
  torch::Tensor attn_norm, mlp_norm;
  torch::nn::Linear q, k, v, o, gate, up, down;
};
TORCH_MODULE(block);

struct llamaImpl : torch::nn::Module {
  explicit llamaImpl(const model_config& c)
      : eps(c.norm_eps), embed(register_module("embed", torch::nn::Embedding(c.vocab, c.d_model))),
        norm(register_parameter("norm", torch::ones({c.d_model}))),
        head(register_module("head", torch::nn::Linear(torch::nn::LinearOptions(c.d_model, c.vocab).bias(false)))) {
    for (std::int64_t i = 0; i < c.layers; ++i) blocks.push_back(register_module("block" + std::to_string(i), block(c)));
    // RoPE tables (T, head_dim), Hugging Face layout: cat(freqs, freqs).
    const auto hd = c.d_model / c.heads;
    auto inv_freq = 1.0 / torch::pow(c.rope_theta, torch::arange(0, hd, 2, torch::kFloat64) / double(hd));
    auto freqs = torch::outer(torch::arange(c.seq, torch::kFloat64), inv_freq);
    auto emb = torch::cat({freqs, freqs}, -1);
    cos = emb.cos().to(torch::kFloat32);
    sin = emb.sin().to(torch::kFloat32);
    causal = torch::ones({c.seq, c.seq}, torch::kBool).triu(1);
  }

  torch::Tensor forward(const torch::Tensor& ids) {
    auto x = embed->forward(ids);
    for (auto& b : blocks) x = b->forward(x, cos, sin, causal);
    return head->forward(rms_norm(x, norm, eps));
  }

  double eps;
  torch::nn::Embedding embed;
  torch::Tensor norm;
  torch::nn::Linear head;
  std::vector<block> blocks;
  torch::Tensor cos, sin, causal;
};
TORCH_MODULE(llama);

}  // namespace

struct trainer::state {
  model_config config;
  llama model;
  torch::optim::AdamW optimizer;
  state(const model_config& c)
      : config(c), model(c),
        optimizer(model->parameters(),
                  torch::optim::AdamWOptions(c.lr).betas({c.beta1, c.beta2}).eps(c.adam_eps).weight_decay(c.weight_decay)) {}
};

trainer::trainer(const model_config& config) {
  torch::manual_seed(0);
  state_ = std::make_unique<state>(config);
}
trainer::~trainer() = default;

void trainer::set_threads(int threads) {
  torch::set_num_threads(threads);
  // LibTorch 1.13 does not set OpenBLAS's own pool; do it when the BLAS in use is OpenBLAS.
  using setter = void (*)(int);
  if (auto* set = reinterpret_cast<setter>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) set(threads);
}

bool trainer::openblas_loaded() { return dlsym(RTLD_DEFAULT, "openblas_get_config") != nullptr; }

double trainer::step(const std::int32_t* input_ids, const std::int32_t* labels) {
  const auto& c = state_->config;
  const auto ids = torch::from_blob(const_cast<std::int32_t*>(input_ids), {c.batch, c.seq}, torch::kInt32).to(torch::kInt64);
  const auto target = torch::from_blob(const_cast<std::int32_t*>(labels), {c.batch * c.seq}, torch::kInt32).to(torch::kInt64);
  state_->optimizer.zero_grad();
  const auto logits = state_->model->forward(ids).view({c.batch * c.seq, c.vocab});
  auto loss = torch::nn::functional::cross_entropy(
      logits, target, torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100));
  loss.backward();
  torch::nn::utils::clip_grad_norm_(state_->model->parameters(), c.clip_norm);
  state_->optimizer.step();
  return loss.item<double>();
}

std::int64_t trainer::parameter_count() const {
  std::int64_t n = 0;
  for (const auto& p : state_->model->parameters()) n += p.numel();
  return n;
}

}  // namespace meap_bench_torch
