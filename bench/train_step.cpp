// bench_train_step: one full CPU MEAP training step (mask, forward, selective fused cross-entropy,
// backward, clip, AdamW) through meap::train::pretrainer<float>, for one fixed config:
//   vocab 4096, d 256, 4 layers, 8 heads (8 kv heads), SwiGLU ffn 688, untied head, T 256, batch 8, fp32,
// at 1 OpenMP thread and at all the machine has. It prints tokens/s and effective GFLOP/s, a per-phase
// breakdown of the same step, and, when built with LibTorch (MEAP_BENCH_HAVE_TORCH), the same model
// and step written with LibTorch's C++ frontend (bench/train_step_libtorch.cpp) at 1 and at all
// threads, timed in the same run, interleaved with the meap steps, and the ratio best against best.
//
// Effective FLOPs per token (the usual MFU accounting, causal half of the attention matrix):
//   6 * N_matmul + 6 * layers * d * T
// N_matmul: the weights of every matmul (q, k, v, o, gate, up, down per layer, and the LM head; not
// the embedding table or the norms). 6 = 2 (multiply-add) x 3 (forward, and backward's two GEMMs).
// Attention: QK^T and PV are 2 * 2 * d * T multiply-adds per token forward over the full matrix,
// halved for causality, x 3 for forward + backward = 6 * d * T per layer.
// Every timing is the best of the measured steps (meap_bench::best_seconds with one run per call,
// so that meap and LibTorch steps can alternate).
// Usage: OMP_WAIT_POLICY=PASSIVE bench_train_step [measured steps, default 5] (see docs/performance.md:
// without it, LibTorch's OpenMP and OpenBLAS pools spin against each other at 2+ threads; --help).
#include <meap/train/pretrain.hpp>

#include "support/bench_model.hpp"
#include "support/main.hpp"
#include "support/timing.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <span>
#include <thread>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#if defined(MEAP_BENCH_HAVE_TORCH)
#include "support/torch_trainer.hpp"
#endif

namespace {

using meap::cpu;
using meap::index_t;
using meap_bench::best_seconds;
using clock_type = std::chrono::steady_clock;

constexpr index_t batch = meap_bench::bench_batch, seq = meap_bench::bench_seq;
constexpr std::int32_t mask_id = 4095;  // the data draws ids from [0, 4095), so it never holds [MASK]
using meap_bench::bench_config;

meap::tensor<std::int32_t, cpu> random_batch(std::mt19937& rng) {
  auto tokens = meap::zeros<std::int32_t>(cpu{}, {batch, seq + 1});
  std::uniform_int_distribution<std::int32_t> id(0, mask_id - 1);
  for (index_t i = 0; i < tokens.numel(); ++i) tokens.data()[i] = id(rng);
  return tokens;
}

void set_meap_threads([[maybe_unused]] int threads) {
#if defined(_OPENMP)
  omp_set_num_threads(threads);
#endif
}

// Spinning pool threads (libgomp's, OpenBLAS's) of the side that just ran go to sleep before the
// other side starts, so that neither is timed against the other's busy-waiting.
void settle() { std::this_thread::sleep_for(std::chrono::milliseconds(300)); }

// The load gauge: Eigen's float GEMM of the step's typical shape ((B T) x d times d x ffn), GFLOP/s.
double eigen_gemm_gflops(int threads) {
  set_meap_threads(threads);
  const Eigen::MatrixXf a = Eigen::MatrixXf::Random(batch * seq, 256), b = Eigen::MatrixXf::Random(256, 688);
  Eigen::MatrixXf c(batch * seq, 688);
  const double seconds = best_seconds(5, [&] { c.noalias() = a * b; });
  return 2.0 * double(batch * seq) * 256.0 * 688.0 / seconds * 1e-9;
}

// The phases of pretrainer::step, run the same way on their own model and optimizer, each timed.
struct phase_times {
  static constexpr std::array<const char*, 7> names{"mask", "zero_grad", "forward", "loss (fused CE fwd+bwd)",
                                                    "backward", "clip", "adamw"};
  std::array<double, 7> best{};
  std::array<double, 7> last{};
};

class instrumented_step {
 public:
  instrumented_step(const meap::nn::llama_config& config, const meap::train::pretrain_options& options)
      : model_(config), optimizer_(options.optimizer), options_(options),
        values_(meap::zeros<double>(cpu{}, {meap::status_value_count})) {
    model_.initialize(7);
    times_.best.fill(1e30);
  }

  void run(const meap::tensor<std::int32_t, cpu>& tokens, std::uint64_t step) {
    auto phase = clock_type::now();
    auto lap = [&](std::size_t i) {
      const auto now = clock_type::now();
      times_.last[i] = std::chrono::duration<double>(now - phase).count();
      times_.best[i] = std::min(times_.best[i], times_.last[i]);
      phase = now;
    };
    auto masking_options = options_.masking;
    masking_options.step = step;
    auto batch_ids = meap::masking::apply(cpu{}, meap::masking::fixed_ratio{}, tokens.view().as_const(), masking_options);
    lap(0);
    model_.zero_grad(cpu{});
    meap::fill(cpu{}, values_.view(), 0.0);
    lap(1);
    const auto ctx = model_.forward(cpu{}, batch_ids.input_ids.view().as_const());
    lap(2);
    const meap::step_status<cpu> status{values_.view()};
    meap::tensor<float, cpu> d_hidden(cpu{}, ctx.hidden.shape());
    const auto labels = batch_ids.labels.view().as_const().reshape({batch * seq});
    meap::cross_entropy_options<cpu> loss_options;
    loss_options.d_weight_write = meap::gradient_write::accumulate;
    loss_options.loss_sum = status.loss_sum();
    (void)meap::linear_cross_entropy<float>(cpu{}, ctx.hidden.view(), model_.head_weight(), labels, d_hidden.view(),
                                            model_.head_grad(), loss_options);
    lap(3);
    model_.backward(cpu{}, ctx, d_hidden.view());
    lap(4);
    meap::clip_factor(cpu{}, model_.store().grad_flat(), options_.clip_norm, status);
    lap(5);
    optimizer_.step(cpu{}, model_.store(), options_.optimizer.lr, status);
    optimizer_.finish_step(values_.data()[static_cast<int>(meap::status_value::update)] != 0.0);
    lap(6);
  }

  const phase_times& times() const { return times_; }

 private:
  meap::nn::llama_model<meap::fp32, cpu> model_;
  meap::adamw<meap::fp32, cpu> optimizer_;
  meap::train::pretrain_options options_;
  meap::tensor<double, cpu> values_;  // the step status
  phase_times times_;
};

void print_row(const char* name, double seconds, double flops_token) {
  const double tokens = double(batch * seq) / seconds;
  std::printf("  %-30s %9.4f s %11.0f tokens/s %9.1f GFLOP/s\n", name, seconds, tokens, tokens * flops_token * 1e-9);
}

int run_bench(int argc, char** argv) {
  int steps = 5;
  CLI::App app{"bench_train_step: one full CPU MEAP training step (tokens/s, GFLOP/s, per-phase breakdown), "
               "beside LibTorch when built with it",
               "bench_train_step"};
  app.add_option("steps", steps, "measured steps (after 2 warm-up steps); every figure is the best of them")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  if (const int code = meap_bench::parse(app, argc, argv); code >= 0) return code;
  constexpr int warmup = 2;
  const auto config = bench_config();
  const double flops_token = config.training_flops_per_token(seq);
#if defined(_OPENMP)
  const int threads = omp_get_max_threads();
#else
  const int threads = 1;
#endif

  meap::train::pretrain_options options;
  options.masking.seed = 1;
  options.masking.mask_id = mask_id;

  std::mt19937 rng(2024);
  std::vector<meap::tensor<std::int32_t, cpu>> batches;
  for (int i = 0; i < warmup + steps; ++i) batches.push_back(random_batch(rng));

  std::printf("bench_train_step: vocab %lld, d %lld, %lld layers, %lld heads (%lld kv), ffn %lld, untied head, "
              "T %lld, batch %lld, fp32\n",
              static_cast<long long>(config.vocab), static_cast<long long>(config.d_model),
              static_cast<long long>(config.layers), static_cast<long long>(config.heads),
              static_cast<long long>(config.kv_heads), static_cast<long long>(config.ffn),
              static_cast<long long>(seq), static_cast<long long>(batch));
  std::printf("  parameters %lld; effective FLOPs per token %.2f M (6 N_matmul + 6 layers d T); meap threads %d; "
              "best of %d steps after %d warm-up\n",
              static_cast<long long>(config.parameter_count()), flops_token * 1e-6, threads, steps, warmup);

  // One meap model per thread setting (1, and all the machine has), each its own pretrainer.
  std::vector<int> meap_threads{1};
  if (threads > 1) meap_threads.push_back(threads);
  using trainer_type = meap::train::pretrainer<meap::fp32, cpu>;
  std::vector<std::unique_ptr<meap::nn::llama_model<meap::fp32, cpu>>> models;
  std::vector<std::unique_ptr<trainer_type>> trainers;
  for (std::size_t s = 0; s < meap_threads.size(); ++s) {
    models.push_back(std::make_unique<meap::nn::llama_model<meap::fp32, cpu>>(config));
    models.back()->initialize(1);
    trainers.push_back(std::make_unique<trainer_type>(*models.back(), meap::masking::fixed_ratio{0.15}, options));
  }
  std::vector<double> meap_best(meap_threads.size(), 1e30);
  meap::train::step_report meap_report;
  auto meap_step = [&](std::size_t s, int i) {
    set_meap_threads(meap_threads[s]);
    const double seconds = best_seconds(1, [&] { meap_report = trainers[s]->step(batches[std::size_t(i)].view()); });
    if (i >= warmup) meap_best[s] = std::min(meap_best[s], seconds);
  };

#if defined(MEAP_BENCH_HAVE_TORCH)
  const meap_bench_torch::model_config torch_config{config.vocab, config.d_model, config.layers, config.heads,
                                                    config.ffn, seq, batch, config.rope_theta, config.norm_eps,
                                                    options.optimizer.lr, options.optimizer.beta1,
                                                    options.optimizer.beta2, options.optimizer.eps,
                                                    options.optimizer.weight_decay, options.clip_norm};
  // One LibTorch model per thread setting; each step masks with meap's policy (as the meap step does).
  std::vector<int> torch_threads{1};
  if (threads > 1) torch_threads.push_back(threads);
  std::vector<std::unique_ptr<meap_bench_torch::trainer>> torch_trainers;
  for (std::size_t s = 0; s < torch_threads.size(); ++s)
    torch_trainers.push_back(std::make_unique<meap_bench_torch::trainer>(torch_config));
  std::vector<double> torch_best(torch_threads.size(), 1e30), torch_loss(torch_threads.size(), 0.0);
  auto torch_step = [&](std::size_t s, int i) {
    meap_bench_torch::trainer::set_threads(torch_threads[s]);
    const double seconds = best_seconds(1, [&] {
      auto masking_options = options.masking;
      masking_options.step = static_cast<std::uint64_t>(i);
      const auto masked = meap::masking::apply(cpu{}, meap::masking::fixed_ratio{0.15},
                                               batches[std::size_t(i)].view().as_const(), masking_options);
      torch_loss[s] = torch_trainers[s]->step(masked.input_ids.data(), masked.labels.data());
    });
    if (i >= warmup) torch_best[s] = std::min(torch_best[s], seconds);
  };
  if (std::getenv("OMP_WAIT_POLICY") == nullptr)
    std::printf("  note: OMP_WAIT_POLICY is unset; LibTorch at 2+ threads (libgomp and OpenBLAS pools spinning against\n"
                "  each other) is then far from its best: run with OMP_WAIT_POLICY=PASSIVE for the fair baseline\n");
  std::printf("  LibTorch %s, BLAS: %s\n", "C++ frontend",
              meap_bench_torch::trainer::openblas_loaded() ? "OpenBLAS" : "not OpenBLAS (reference or other)");
#endif

  std::printf("load gauge, Eigen float GEMM %lldx256 * 256x688 now:", static_cast<long long>(batch * seq));
  for (const int t : meap_threads) std::printf(" %.1f GFLOP/s at %d thread%s;", eigen_gemm_gflops(t), t, t == 1 ? "" : "s");
  std::printf("\n");
  // Where a meap step's time goes: the same phases, on their own model, timed one by one, at all
  // threads. Run before any LibTorch step, so that no pool thread of LibTorch's is still spinning.
  set_meap_threads(threads);
  instrumented_step probe(config, options);
  for (int i = 0; i < warmup + steps; ++i) probe.run(batches[std::size_t(i)], static_cast<std::uint64_t>(i));
  const auto& t = probe.times();
  double total = 0;
  for (const double s : t.best) total += s;
  std::printf("\nmeap step breakdown, %d thread%s (best of %d per phase; sum %.4f s):\n", threads,
              threads == 1 ? "" : "s", steps + warmup, total);
  for (std::size_t i = 0; i < t.best.size(); ++i)
    std::printf("  %-26s %9.4f s %5.1f%%\n", phase_times::names[i], t.best[i], 100.0 * t.best[i] / total);

  // Alternate: one meap step, then one LibTorch step per thread setting, each after a pause.
  for (int i = 0; i < warmup + steps; ++i) {
    for (std::size_t s = 0; s < meap_threads.size(); ++s) {
      meap_step(s, i);
      settle();
    }
#if defined(MEAP_BENCH_HAVE_TORCH)
    for (std::size_t s = 0; s < torch_threads.size(); ++s) {
      torch_step(s, i);
      settle();
    }
#endif
  }

  std::printf("\nfull step (mask, forward, selective CE, backward, clip, AdamW):\n");
  std::printf("  meap: last loss %.4f over %lld labelled positions, %lld inputs masked\n", meap_report.loss,
              static_cast<long long>(meap_report.loss_tokens), static_cast<long long>(meap_report.masked));
  std::size_t meap_setting = 0;
  for (std::size_t s = 0; s < meap_threads.size(); ++s) {
    char name[64];
    std::snprintf(name, sizeof name, "meap, %d thread%s", meap_threads[s], meap_threads[s] == 1 ? "" : "s");
    print_row(name, meap_best[s], flops_token);
    if (meap_best[s] < meap_best[meap_setting]) meap_setting = s;
  }
#if defined(MEAP_BENCH_HAVE_TORCH)
  std::size_t best_setting = 0;
  for (std::size_t s = 0; s < torch_threads.size(); ++s) {
    char name[64];
    std::snprintf(name, sizeof name, "LibTorch, %d thread%s", torch_threads[s], torch_threads[s] == 1 ? "" : "s");
    print_row(name, torch_best[s], flops_token);
    if (torch_best[s] < torch_best[best_setting]) best_setting = s;
  }
  std::printf("  LibTorch last losses:");
  for (const double l : torch_loss) std::printf(" %.4f", l);
  std::printf("\n  ratio meap (best, %d thread%s) / LibTorch (best, %d thread%s): %.2fx (target >= 1.5x)\n",
              meap_threads[meap_setting], meap_threads[meap_setting] == 1 ? "" : "s", torch_threads[best_setting],
              torch_threads[best_setting] == 1 ? "" : "s", torch_best[best_setting] / meap_best[meap_setting]);
  std::printf("  ratio meap / LibTorch, both at %d thread%s: %.2fx\n", threads, threads == 1 ? "" : "s",
              torch_best.back() / meap_best.back());
#else
  std::printf("  LibTorch not found: ratio not measured\n");
#endif

  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return meap_bench::guarded_main("bench_train_step", [&] { return run_bench(argc, argv); });
}
