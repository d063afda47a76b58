// bench/support/torch_trainer.hpp: the LibTorch twin of the benchmarked training step, as the
// meap side sees it. No Torch header here, so bench/train_step.cpp never compiles Torch; the
// definition is in bench/train_step_libtorch.cpp.
#pragma once

#include <cstdint>
#include <memory>

namespace meap_bench_torch {

struct model_config {
  std::int64_t vocab, d_model, layers, heads, ffn, seq, batch;
  double rope_theta, norm_eps, lr, beta1, beta2, adam_eps, weight_decay, clip_norm;
};

class trainer {
 public:
  explicit trainer(const model_config& config);
  ~trainer();
  trainer(const trainer&) = delete;
  trainer& operator=(const trainer&) = delete;
  static void set_threads(int threads);  // torch::set_num_threads, and OpenBLAS's pool when loaded
  static bool openblas_loaded();
  double step(const std::int32_t* input_ids, const std::int32_t* labels);  // (batch, seq) each; returns the loss
  std::int64_t parameter_count() const;

 private:
  struct state;
  std::unique_ptr<state> state_;
};

}  // namespace meap_bench_torch
