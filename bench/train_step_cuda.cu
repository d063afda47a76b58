// bench_train_step_cuda: the paper's 0.1B MEAP pretraining step on one GPU, tokens/s and MFU,
// beside PyTorch on the same shapes (bench/train_step_torch.py, run first on the same machine).
//
//   model: 12 layers, d 768, 12 heads over 2 kv heads (head dim 64), SwiGLU 2048, vocab 32064,
//          untied head; T 4096; bfloat16 weights and activations with float master weights (or
//          --dtype fp16 / fp32); MEAP masking, 15% of the inputs
//   step:  --rows R sequences of T + 1 tokens in --micro-batches M (gradient accumulation), the
//          whole meap::train::pretrainer::step: host masking, pinned upload, forward, fused
//          selective cross-entropy, backward, clip, AdamW, and the one read-back of the report
//
// Tokens/s counts the R * T input positions of a step over its wall time (the report includes the
// wait for the GPU). MFU divides tokens/s times the model's training FLOPs per token (6 per weight
// of every matrix product plus 6 L d T of causal attention: nn::llama_config::
// training_flops_per_token) by the device's peak dense FLOP/s (meap::cuda_peak_flops, or
// --peak-tflops). The PyTorch figures (eager, and torch.compile when it works) come from
// `python3 bench/train_step_torch.py --out FILE` and are read with --torch FILE; the ratio is
// meap's tokens/s over PyTorch eager's (target: at least 1.2x, and at least 50% MFU on H100/H200).
//
// Usage: bench_train_step_cuda [--rows 16] [--micro-batches 2] [--steps 5] [--warmup 2] [--seq 4096]
//                              [--dtype bf16|fp16|fp32] [--torch FILE] [--peak-tflops X] [--layers N] (--help)
#include <meap/cuda.hpp>

#include "support/figures.hpp"
#include "support/main.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace {

struct settings {
  meap::index_t rows = 16, micro_batches = 2, seq = 4096, layers = 12;
  int steps = 5, warmup = 2;
  std::string dtype = "bf16", torch_file;
  double peak_tflops = 0;
};

// The command line through CLI11; returns -1 to go on, or the exit code to return (see main.hpp).
int parse(int argc, char** argv, settings& s) {
  CLI::App app{"bench_train_step_cuda: the paper's 0.1B MEAP pretraining step on one GPU, tokens/s and MFU, beside "
               "PyTorch's figures (--torch)",
               "bench_train_step_cuda"};
  using meap::index_t;
  app.add_option("--rows", s.rows, "sequences per step")->check(CLI::Range(index_t{1}, index_t{1} << 20))->capture_default_str();
  app.add_option("--micro-batches", s.micro_batches, "gradient-accumulation micro-batches per step")
      ->check(CLI::Range(index_t{1}, index_t{1} << 16))
      ->capture_default_str();
  app.add_option("--steps", s.steps, "measured steps (the median is reported)")->check(CLI::Range(1, 100000))->capture_default_str();
  app.add_option("--warmup", s.warmup, "unmeasured steps first")->check(CLI::Range(0, 100000))->capture_default_str();
  app.add_option("--seq", s.seq, "sequence length T")->check(CLI::Range(index_t{1}, index_t{1} << 24))->capture_default_str();
  app.add_option("--layers", s.layers, "transformer layers")->check(CLI::Range(index_t{1}, index_t{1024}))->capture_default_str();
  app.add_option("--dtype", s.dtype, "precision")->check(CLI::IsMember({"bf16", "fp16", "fp32"}))->capture_default_str();
  app.add_option("--torch", s.torch_file, "PyTorch's figures, written by bench/train_step_torch.py --out FILE")
      ->check(CLI::ExistingFile);
  app.add_option("--peak-tflops", s.peak_tflops, "the device's peak dense TFLOP/s for MFU (default: meap::cuda_peak_flops)")
      ->check(meap_bench::positive_real());
  return meap_bench::parse(app, argc, argv);
}

meap::nn::llama_config paper_config(const settings& s) {
  return {.vocab = 32064, .d_model = 768, .layers = s.layers, .heads = 12, .kv_heads = 2, .ffn = 2048,
          .max_seq = s.seq, .rope_theta = 10000.0, .norm_eps = 1e-5, .tied_head = false};
}

struct result {
  double tokens_per_second = 0, seconds = 0, loss = 0;
};

template <class P>
result run(const settings& s, const meap::cuda& device) {
  const auto config = paper_config(s);
  meap::nn::llama_model<P, meap::cuda> model(config, device);
  model.initialize(1);
  meap::train::pretrain_options options;
  options.masking.seed = 1;
  options.masking.mask_id = static_cast<std::int32_t>(config.vocab - 1);
  options.micro_batches = s.micro_batches;
  options.schedule = {3e-4, 3e-5, 0, 1000};
  meap::train::pretrainer trainer(model, meap::masking::fixed_ratio{.ratio = 0.15}, options);
  auto tokens = meap::zeros<std::int32_t>(meap::cpu{}, {s.rows, s.seq + 1});
  std::vector<double> seconds;
  result r;
  for (int i = 0; i < s.warmup + s.steps; ++i) {
    meap::philox_stream rng(7, static_cast<std::uint64_t>(i));
    for (meap::index_t j = 0; j < tokens.numel(); ++j)
      tokens.data()[j] = static_cast<std::int32_t>(rng.next_below(static_cast<std::uint32_t>(config.vocab - 1)));
    const auto report = trainer.step(tokens.view());
    if (report.skipped) std::fprintf(stderr, "  step %d skipped: %s\n", i, report.skip_reason.c_str());
    if (i >= s.warmup) seconds.push_back(report.seconds);
    r.loss = report.loss;
  }
  std::sort(seconds.begin(), seconds.end());
  r.seconds = seconds[seconds.size() / 2];  // the median step
  r.tokens_per_second = static_cast<double>(s.rows * s.seq) / r.seconds;
  return r;
}

int run_bench(int argc, char** argv) {
  settings s;
  if (const int code = parse(argc, argv, s); code >= 0) return code;
  if (!meap::has_cuda_device()) {
    std::printf("bench_train_step_cuda: SKIPPED: no CUDA device\n");
    return 0;
  }
  int ordinal = 0;
  MEAP_CUDA_CHECK(cudaGetDevice(&ordinal));
  meap::cuda_stream stream;
  const meap::cuda device = stream.device();
  const auto config = paper_config(s);
  const double flops_per_token = config.training_flops_per_token(s.seq);
  const double peak = s.peak_tflops > 0 ? s.peak_tflops * 1e12 : meap::cuda_peak_flops(ordinal, s.dtype != "fp32");
  std::printf("bench_train_step_cuda: %s; %lld parameters (12 layers, d 768, 12 heads / 2 kv, ffn 2048, vocab 32064)\n",
              meap::cuda_device_name(ordinal).c_str(), static_cast<long long>(config.parameter_count()));
  std::printf("  T %lld, %lld rows per step in %lld micro-batch(es), %s, MEAP 15%%; %.3f GFLOP per token; peak %.0f TFLOP/s (%s)\n",
              static_cast<long long>(s.seq), static_cast<long long>(s.rows), static_cast<long long>(s.micro_batches),
              s.dtype.c_str(), flops_per_token * 1e-9, peak * 1e-12, s.peak_tflops > 0 ? "given" : "estimated");
  result r;
  if (s.dtype == "fp16") r = run<meap::fp16_mixed>(s, device);
  else if (s.dtype == "fp32") r = run<meap::fp32>(s, device);
  else r = run<meap::bf16_mixed>(s, device);
  const double mfu = r.tokens_per_second * flops_per_token / peak;
  std::printf("  meap: median step %.3f s, %.0f tokens/s, MFU %.1f%%, last loss %.4f\n", r.seconds, r.tokens_per_second,
              100.0 * mfu, r.loss);
  nlohmann::json out{{"device", meap::cuda_device_name(ordinal)}, {"dtype", s.dtype},       {"rows", s.rows},
                     {"micro_batches", s.micro_batches},             {"seq", s.seq},          {"layers", s.layers},
                     {"meap_tokens_per_second", r.tokens_per_second}, {"meap_mfu", mfu},      {"meap_step_seconds", r.seconds}};
  if (!s.torch_file.empty()) {
    std::ifstream in(s.torch_file);
    if (!in) meap::throw_argument_error("bench_train_step_cuda", "--torch", s.torch_file, "a readable JSON file");
    const auto torch = nlohmann::json::parse(in);
    for (const char* mode : {"eager", "compile"}) {
      const std::string key = std::string(mode) + "_tokens_per_second";
      if (!torch.contains(key) || torch.at(key).is_null()) {
        std::printf("  PyTorch %s: not measured (%s)\n", mode,
                    torch.value(std::string(mode) + "_error", std::string("absent from the file")).c_str());
        continue;
      }
      const double theirs = torch.at(key).get<double>();
      std::printf("  PyTorch %-8s %.0f tokens/s, MFU %.1f%%; meap / PyTorch %s = %.2fx\n", mode, theirs,
                  100.0 * theirs * flops_per_token / peak, mode, r.tokens_per_second / theirs);
      out["torch_" + key] = theirs;
      out["ratio_" + std::string(mode)] = r.tokens_per_second / theirs;
    }
  } else {
    std::printf("  PyTorch: not measured (run bench/train_step_torch.py --out FILE, then pass --torch FILE)\n");
  }
  std::printf("JSON %s\n", out.dump().c_str());
  meap_bench::figures("train_step").add(out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return meap_bench::guarded_main("bench_train_step_cuda", [&] { return run_bench(argc, argv); });
}
