// bench/support/bench_model.hpp: the model bench_train_step and bench_dist train (5.26M parameters,
// fp32 on the CPU), so that their figures are about the same step.
#pragma once

#include <meap/nn/config.hpp>

namespace meap_bench {

inline constexpr meap::index_t bench_batch = 8, bench_seq = 256;

inline meap::nn::llama_config bench_config() {
  meap::nn::llama_config c;
  c.vocab = 4096;
  c.d_model = 256;
  c.layers = 4;
  c.heads = 8;
  c.kv_heads = 8;
  c.ffn = 688;
  c.max_seq = bench_seq;
  c.tied_head = false;
  return c;
}

}  // namespace meap_bench
