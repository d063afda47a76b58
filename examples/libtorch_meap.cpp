// libtorch_meap: MEAP added to a LibTorch trainer. The model, the optimizer and the loop are
// LibTorch's; meap contributes two calls (meap/interop/torch.hpp):
//   meap::interop::mask_batch(policy, tokens, options)       the MEAP inputs and labels
//   meap::interop::linear_cross_entropy(hidden, head, labels)  the loss, without the logits
// Both work on the tensors' own memory through DLPack.
//
//   libtorch_meap                         train 100 steps and print the loss
//   libtorch_meap --compare               first compare, on the first batch, meap's fused loss with
//                                         LibTorch's full-logits cross_entropy: the loss, every
//                                         parameter's gradient, and the peak memory of a step
//   libtorch_meap --policy ntp            plain next-token prediction (no [MASK])
//
// The model is a small GPT-style decoder written with LibTorch's C++ frontend (token and position
// embeddings, pre-norm blocks of causal self-attention and a GELU MLP, a final LayerNorm and an
// untied head). The data are rows of a random Markov chain in which every token has 4 possible
// successors: the loss can fall from log(V) to about log(4) = 1.39.
#include <meap/interop/torch.hpp>
#include <meap/masking/fixed_ratio.hpp>

#include "cli_options.hpp"
#include <meap/run/program.hpp>
#include <meap/run/progress.hpp>

#include <CLI/CLI.hpp>
#include <malloc.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace {

struct settings {
  std::int64_t vocab = 4096;  // the last id is [MASK]
  std::int64_t d_model = 128;
  std::int64_t layers = 2;
  std::int64_t heads = 4;
  std::int64_t seq_len = 128;
  std::int64_t batch = 16;
  std::int64_t steps = 100;
  std::int64_t log_every = 20;
  double lr = 3e-3;
  double ratio = 0.15;
  std::string policy = "meap";
  std::uint64_t seed = 0;
  int threads = 0;
  bool compare = false;
  double tolerance = 1e-5;
};

struct blockImpl : torch::nn::Module {
  blockImpl(std::int64_t d, std::int64_t head_count)
      : heads(head_count),
        norm1(register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})))),
        norm2(register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})))),
        qkv(register_module("qkv", torch::nn::Linear(torch::nn::LinearOptions(d, 3 * d).bias(false)))),
        out(register_module("out", torch::nn::Linear(torch::nn::LinearOptions(d, d).bias(false)))),
        up(register_module("up", torch::nn::Linear(d, 4 * d))),
        down(register_module("down", torch::nn::Linear(4 * d, d))) {}

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& future) {
    const auto B = x.size(0), T = x.size(1), d = x.size(2), hd = d / heads;
    const auto parts = qkv->forward(norm1->forward(x)).view({B, T, 3, heads, hd}).permute({2, 0, 3, 1, 4});
    auto scores = torch::matmul(parts[0], parts[1].transpose(-2, -1)) / std::sqrt(static_cast<double>(hd));
    scores = scores.masked_fill(future, -std::numeric_limits<float>::infinity());
    const auto attended = torch::matmul(torch::softmax(scores, -1), parts[2]).transpose(1, 2).reshape({B, T, d});
    const auto y = x + out->forward(attended);
    return y + down->forward(torch::gelu(up->forward(norm2->forward(y))));
  }

  std::int64_t heads;
  torch::nn::LayerNorm norm1, norm2;
  torch::nn::Linear qkv, out, up, down;
};
TORCH_MODULE(block);

struct decoderImpl : torch::nn::Module {
  explicit decoderImpl(const settings& s)
      : tokens(register_module("tokens", torch::nn::Embedding(s.vocab, s.d_model))),
        positions(register_module("positions", torch::nn::Embedding(s.seq_len, s.d_model))),
        norm(register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({s.d_model})))),
        head(register_parameter("head", torch::randn({s.vocab, s.d_model}) * 0.02)) {
    for (std::int64_t i = 0; i < s.layers; ++i)
      blocks.push_back(register_module("block" + std::to_string(i), block(s.d_model, s.heads)));
    future = torch::ones({s.seq_len, s.seq_len}, torch::kBool).triu(1);
  }

  // The final hidden states (B, T, d); the head is applied by the loss.
  torch::Tensor hidden(const torch::Tensor& ids) {
    const auto T = ids.size(1);
    auto x = tokens->forward(ids) + positions->forward(torch::arange(T, torch::kLong));
    const auto mask = future.slice(0, 0, T).slice(1, 0, T);
    for (auto& b : blocks) x = b->forward(x, mask);
    return norm->forward(x);
  }

  torch::nn::Embedding tokens, positions;
  torch::nn::LayerNorm norm;
  torch::Tensor head;  // (V, d), the LM head's weight
  std::vector<block> blocks;
  torch::Tensor future;
};
TORCH_MODULE(decoder);

// Rows (B, T + 1) of the Markov chain: successor k of token t is successors[t][k], one of 4 drawn
// uniformly per position. Ids stay below vocab - 1 ([MASK]).
class markov_rows {
 public:
  markov_rows(const settings& s) : s_(s), successors_(static_cast<std::size_t>(s.vocab - 1)) {
    std::mt19937_64 random(s.seed);
    std::uniform_int_distribution<std::int64_t> token(0, s.vocab - 2);
    for (auto& next : successors_)
      for (auto& id : next) id = token(random);
  }
  torch::Tensor batch(std::int64_t step) const {
    std::mt19937_64 random(s_.seed * 1000003 + static_cast<std::uint64_t>(step) + 1);
    std::uniform_int_distribution<std::int64_t> token(0, s_.vocab - 2);
    std::uniform_int_distribution<int> choice(0, 3);
    auto rows = torch::empty({s_.batch, s_.seq_len + 1}, torch::kLong);
    auto* ids = rows.data_ptr<std::int64_t>();
    for (std::int64_t r = 0; r < s_.batch; ++r) {
      std::int64_t current = token(random);
      for (std::int64_t t = 0; t <= s_.seq_len; ++t) {
        ids[r * (s_.seq_len + 1) + t] = current;
        current = successors_[static_cast<std::size_t>(current)][static_cast<std::size_t>(choice(random))];
      }
    }
    return rows;
  }

 private:
  settings s_;
  std::vector<std::array<std::int64_t, 4>> successors_;
};

// The batch the loss sees: MEAP's masked inputs and labels, or plain shifted tokens (NTP).
struct step_batch {
  torch::Tensor input_ids, labels;  // (B, T) int64, (B, T) int32
  std::int64_t masked = 0;
};

step_batch make_batch(const settings& s, const torch::Tensor& tokens, std::int64_t step) {
  if (s.policy == "ntp") {
    const auto T = tokens.size(1) - 1;
    return {tokens.slice(1, 0, T).contiguous(), tokens.slice(1, 1, T + 1).to(torch::kInt).contiguous(), 0};
  }
  meap::masking::pretraining_options options;
  options.seed = s.seed;
  options.step = static_cast<std::uint64_t>(step);
  options.mask_id = static_cast<std::int32_t>(s.vocab - 1);
  const auto batch = meap::interop::mask_batch(meap::masking::fixed_ratio{s.ratio}, tokens, options);
  return {batch.input_ids.to(torch::kLong), batch.labels, batch.mask.sum().item<std::int64_t>()};
}

// The loss of one batch, by meap's fused kernel or by LibTorch over the full logits.
torch::Tensor loss_of(decoder& model, const step_batch& batch, bool full_logits) {
  const auto hidden = model->hidden(batch.input_ids);
  const auto flat = hidden.view({-1, hidden.size(2)});
  const auto labels = batch.labels.view({-1});
  if (!full_logits) return meap::interop::linear_cross_entropy(flat, model->head, labels);
  namespace F = torch::nn::functional;
  return F::cross_entropy(torch::matmul(flat, model->head.t()), labels.to(torch::kLong),
                          F::CrossEntropyFuncOptions().ignore_index(-100));
}

// Peak resident memory (bytes) above the level at the start, while fn runs: Linux's VmHWM after
// resetting it through /proc/self/clear_refs; nullopt where that is not allowed.
std::optional<double> peak_memory_of(const std::function<void()>& fn) {
  const auto status_kib = [](const char* field) {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line))
      if (line.rfind(field, 0) == 0) return std::stod(line.substr(std::string(field).size()));
    return -1.0;
  };
  {
    std::ofstream reset("/proc/self/clear_refs");
    reset << "5";
    reset.flush();
    if (!reset) return std::nullopt;
  }
  const double before = status_kib("VmRSS:");
  fn();
  const double peak = status_kib("VmHWM:");
  if (before < 0 || peak < 0) return std::nullopt;
  return (peak - before) * 1024.0;
}

// --compare: meap's loss and gradients against LibTorch's own on the first batch; then the peak
// memory of one forward + backward with each. Returns false when a difference exceeds tolerance.
bool compare(const settings& s, decoder& model, const step_batch& batch) {
  const auto gradients = [&](bool full_logits) {
    model->zero_grad();
    const auto loss = loss_of(model, batch, full_logits);
    loss.backward();
    std::vector<torch::Tensor> grads;
    for (const auto& p : model->parameters()) grads.push_back(p.grad().clone());
    return std::pair{loss.item<double>(), grads};
  };
  const auto [meap_loss, meap_grads] = gradients(false);
  const auto [torch_loss, torch_grads] = gradients(true);
  double worst = 0.0;
  std::string worst_name;
  const auto names = model->named_parameters();
  for (std::size_t i = 0; i < meap_grads.size(); ++i) {
    const double scale = std::max(torch_grads[i].abs().max().item<double>(), 1e-30);
    const double error = (meap_grads[i] - torch_grads[i]).abs().max().item<double>() / scale;
    if (error > worst) {
      worst = error;
      worst_name = names[i].key();
    }
  }
  const double loss_error = std::abs(meap_loss - torch_loss) / std::abs(torch_loss);
  std::printf("compare: loss meap %.8f, LibTorch full logits %.8f (relative difference %.2e)\n", meap_loss, torch_loss,
              loss_error);
  std::printf("compare: largest relative gradient difference %.2e (%s) over %zu parameters\n", worst,
              worst_name.c_str(), meap_grads.size());

  const double N = static_cast<double>(batch.labels.numel());
  std::printf("compare: logits (N, V) = (%.0f, %lld) float32 = %.1f MiB\n", N, static_cast<long long>(s.vocab),
              N * static_cast<double>(s.vocab) * 4 / 1048576.0);
  const auto step_memory = [&](bool full_logits) {
    return peak_memory_of([&] {
      model->zero_grad();
      loss_of(model, batch, full_logits).backward();
    });
  };
  (void)step_memory(false);  // once each before measuring: first-touch allocations
  (void)step_memory(true);
  const auto meap_peak = step_memory(false), torch_peak = step_memory(true);
  if (meap_peak && torch_peak)
    std::printf("compare: peak memory of a forward + backward above the start: meap %.1f MiB, LibTorch full logits "
                "%.1f MiB (%.2fx)\n",
                *meap_peak / 1048576.0, *torch_peak / 1048576.0, *torch_peak / std::max(*meap_peak, 1.0));
  else
    std::printf("compare: peak memory not measured (/proc/self/clear_refs cannot be written here)\n");
  const bool ok = loss_error <= s.tolerance && worst <= s.tolerance;
  std::printf("compare: %s (tolerance %.0e)\n", ok ? "equal within tolerance" : "DIFFERENT", s.tolerance);
  return ok;
}

int run(const settings& s) {
  if (s.threads > 0) torch::set_num_threads(s.threads);
  torch::manual_seed(s.seed);
  decoder model(s);
  const markov_rows data(s);
  if (s.compare && !compare(s, model, make_batch(s, data.batch(0), 0))) return 1;

  torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(s.lr).weight_decay(0.1));
  std::printf("libtorch_meap: %s, vocab %lld, d %lld, %lld layers, batch %lld x %lld, %lld parameters\n",
              s.policy.c_str(), static_cast<long long>(s.vocab), static_cast<long long>(s.d_model),
              static_cast<long long>(s.layers), static_cast<long long>(s.batch), static_cast<long long>(s.seq_len),
              static_cast<long long>([&] {
                std::int64_t n = 0;
                for (const auto& p : model->parameters()) n += p.numel();
                return n;
              }()));
  const auto start = std::chrono::steady_clock::now();
  double first = 0, last = 0;
  for (std::int64_t step = 0; step < s.steps; ++step) {
    const auto batch = make_batch(s, data.batch(step), step);
    optimizer.zero_grad();
    const auto loss = loss_of(model, batch, false);
    loss.backward();
    torch::nn::utils::clip_grad_norm_(model->parameters(), 1.0);
    optimizer.step();
    last = loss.item<double>();
    if (!std::isfinite(last))
      throw meap::error("libtorch_meap: the loss is " + std::to_string(last) + " at step " + std::to_string(step) +
                        "; lower --lr");
    if (step == 0) first = last;
    if (step % s.log_every == 0 || step + 1 == s.steps)
      std::printf("step %5lld  loss %.4f  masked %lld  %.1f s\n", static_cast<long long>(step), last,
                  static_cast<long long>(batch.masked),
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::printf("loss %.4f -> %.4f (log V = %.2f, the chain's entropy log 4 = 1.39)\n", first, last,
              std::log(static_cast<double>(s.vocab)));
  return 0;
}

settings parse(int argc, char** argv, int& exit_code) {
  settings s;
  CLI::App app{"MEAP in a LibTorch trainer: meap's masking and fused selective cross-entropy on LibTorch tensors"};
  using meap_apps::at_least_one;
  app.add_option("--vocab", s.vocab, "vocabulary size; the last id is [MASK]")->check(CLI::Range(8, 1 << 20))->capture_default_str();
  app.add_option("--d-model", s.d_model, "model width")->check(CLI::Range(4, 8192))->capture_default_str();
  app.add_option("--layers", s.layers, "decoder blocks")->check(CLI::Range(1, 64))->capture_default_str();
  app.add_option("--heads", s.heads, "attention heads (dividing --d-model)")->check(CLI::Range(1, 256))->capture_default_str();
  app.add_option("--seq-len", s.seq_len, "tokens per row")->check(CLI::Range(2, 1 << 16))->capture_default_str();
  app.add_option("--batch", s.batch, "rows per step")->check(CLI::Range(1, 1 << 16))->capture_default_str();
  app.add_option("--steps", s.steps, "training steps")->check(meap_apps::at_least_zero)->capture_default_str();
  app.add_option("--log-every", s.log_every, "print the loss every N steps")->check(at_least_one)->capture_default_str();
  app.add_option("--lr", s.lr, "AdamW learning rate")->check(CLI::Range(0.0, 1.0))->capture_default_str();
  app.add_option("--ratio", s.ratio, "MEAP mask ratio")->check(CLI::Range(0.0, 1.0))->capture_default_str();
  app.add_option("--policy", s.policy, "meap or ntp")->check(CLI::IsMember({"meap", "ntp"}))->capture_default_str();
  app.add_option("--seed", s.seed, "model, data and mask seed")->check(meap_apps::unsigned_64)->capture_default_str();
  app.add_option("--threads", s.threads, "LibTorch threads (0: its default)")->check(CLI::Range(0, 1024));
  app.add_flag("--compare", s.compare,
               "compare meap's loss and gradients with LibTorch's full-logits cross_entropy on the first batch, and "
               "the peak memory of a step with each; exit 1 when they differ");
  app.add_option("--tolerance", s.tolerance, "largest relative difference --compare accepts")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    exit_code = app.exit(e);
    return s;
  }
  if (s.d_model % s.heads != 0)
    meap::throw_argument_error("libtorch_meap", "--heads", std::to_string(s.heads),
                               "a divisor of --d-model = " + std::to_string(s.d_model));
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  // Large blocks straight from mmap and back on free, so that --compare's peak memory is that of
  // the step measured, not of what glibc kept from an earlier one.
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  return meap::run::guarded_main("libtorch_meap", "try a smaller --batch, --seq-len or --vocab", [&] {
    int exit_code = -1;
    const auto s = parse(argc, argv, exit_code);
    if (exit_code >= 0) return exit_code;
    return run(s);
  });
}
