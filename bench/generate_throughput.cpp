// bench_generate: greedy generation on the CPU, meap::eval::generate (a key/value cache: one
// prefill, then one token per step) against the baseline every model without a cache pays:
// recomputing the whole sequence for each new token (llama_model::forward + the last row's
// logits). Both produce the same tokens (checked); figures are new tokens per second and their
// ratio, measured in this run. Usage: bench_generate [--batch B] [--prompt P] [--new N] (--help)
#include <meap/eval/generate.hpp>
#include <meap/meap.hpp>

#include "support/main.hpp"
#include "support/timing.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

namespace {

using meap_bench::best_seconds;

// Greedy decoding by recomputation: the uncached baseline.
std::vector<std::vector<std::int32_t>> recompute(const meap::nn::llama_model<meap::fp32, meap::cpu>& model,
                                                 std::vector<std::vector<std::int32_t>> rows, long long new_tokens) {
  const auto V = model.config().vocab;
  const auto B = static_cast<meap::index_t>(rows.size());
  std::vector<std::vector<std::int32_t>> out(rows.size());
  for (long long n = 0; n < new_tokens; ++n) {
    const auto T = static_cast<meap::index_t>(rows[0].size());
    auto tokens = meap::zeros<std::int32_t>(meap::cpu{}, {B, T});
    for (meap::index_t b = 0; b < B; ++b) std::copy(rows[b].begin(), rows[b].end(), tokens.data() + b * T);
    const auto ctx = model.forward(meap::cpu{}, tokens.view().as_const());
    auto last = meap::zeros<float>(meap::cpu{}, {B, model.config().d_model});
    for (meap::index_t b = 0; b < B; ++b)
      std::copy(ctx.hidden.data() + ((b + 1) * T - 1) * last.size(1), ctx.hidden.data() + (b + 1) * T * last.size(1),
                last.data() + b * last.size(1));
    auto logits = meap::zeros<float>(meap::cpu{}, {B, V});
    meap::linear_forward<float>(meap::cpu{}, last.view().as_const(), model.head_weight(), logits.view());
    for (meap::index_t b = 0; b < B; ++b) {
      const float* z = logits.data() + b * V;
      const auto id = static_cast<std::int32_t>(std::max_element(z, z + V) - z);
      rows[b].push_back(id);
      out[b].push_back(id);
    }
  }
  return out;
}

int run_bench(int argc, char** argv) {
  long long batch = 4, prompt = 256, new_tokens = 64, d_model = 256, layers = 4;
  CLI::App app{"bench_generate: greedy generation with a KV cache against recomputing the sequence per token (CPU)",
               "bench_generate"};
  app.add_option("--batch", batch, "prompts generated together")->check(CLI::Range(1ll, 256ll))->capture_default_str();
  app.add_option("--prompt", prompt, "prompt tokens")->check(CLI::Range(1ll, 4096ll))->capture_default_str();
  app.add_option("--new", new_tokens, "new tokens per prompt")->check(CLI::Range(1ll, 4096ll))->capture_default_str();
  app.add_option("--d-model", d_model, "model width (heads of 64)")->check(CLI::Range(64ll, 4096ll))->capture_default_str();
  app.add_option("--layers", layers, "blocks")->check(CLI::Range(1ll, 64ll))->capture_default_str();
  if (const int code = meap_bench::parse(app, argc, argv); code >= 0) return code;

  meap::nn::llama_config config;
  config.vocab = 4096;
  config.d_model = d_model;
  config.layers = layers;
  config.heads = d_model / 64;
  config.kv_heads = config.heads;
  config.ffn = d_model * 8 / 3 / 64 * 64;
  config.max_seq = prompt + new_tokens;
  meap::nn::llama_model<meap::fp32, meap::cpu> model(config);
  model.initialize(1);
  std::vector<std::vector<std::int32_t>> prompts(static_cast<std::size_t>(batch));
  meap::philox_stream random(7, 0);
  for (auto& p : prompts)
    for (long long t = 0; t < prompt; ++t) p.push_back(static_cast<std::int32_t>(random.next_below(4096)));

  meap::eval::generation_options options;
  options.max_new_tokens = new_tokens;
  std::vector<meap::eval::generation> cached;
  std::vector<std::vector<std::int32_t>> baseline;
  const double cached_seconds = best_seconds(3, [&] { cached = meap::eval::generate(meap::cpu{}, model, prompts, options); });
  const double baseline_seconds = best_seconds(1, [&] { baseline = recompute(model, prompts, new_tokens); });
  long long same = 0;
  for (std::size_t r = 0; r < prompts.size(); ++r) same += cached[r].tokens == baseline[r];
  const double tokens = static_cast<double>(batch * new_tokens);
  std::printf("bench_generate: %lld-parameter LLaMA (d %lld, %lld layers), batch %lld, prompt %lld, %lld new tokens\n",
              static_cast<long long>(config.parameter_count()), d_model, layers, batch, prompt, new_tokens);
  std::printf("%-48s %12s %12s %8s\n", "greedy generation (CPU)", "tokens/s", "baseline", "ratio");
  std::printf("%-48s %12.1f %12.1f %8.2f\n", "generate (KV cache) vs recompute the sequence", tokens / cached_seconds,
              tokens / baseline_seconds, baseline_seconds / cached_seconds);
  std::printf("same tokens: %lld of %lld prompts\n", same, batch);
  return same == batch ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  return meap_bench::guarded_main("bench_generate", [&] { return run_bench(argc, argv); });
}
