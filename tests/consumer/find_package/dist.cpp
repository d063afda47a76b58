// An installed meap's data-parallel training: run under mpirun -np 2, both ranks train a tiny
// model on halves of the same global batches (ZeRO-1) and must end with the same loss.
#include <meap/dist/mpi.hpp>
#include <meap/masking/fixed_ratio.hpp>
#include <meap/train/pretrain.hpp>

#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  meap::dist::mpi_environment mpi(argc, argv);
  meap::dist::mpi_group group;
  meap::nn::llama_config config;
  config.vocab = 16;
  config.d_model = 16;
  config.layers = 1;
  config.heads = 2;
  config.kv_heads = 1;
  config.ffn = 32;
  config.max_seq = 16;
  meap::nn::llama_model<meap::fp32, meap::cpu> model(config);
  model.initialize(1);
  meap::train::pretrain_options options;
  options.masking.mask_id = 15;
  meap::train::pretrainer trainer(model, meap::masking::fixed_ratio{}, options);
  trainer.distribute(group, meap::dist::sharding::zero1);
  auto tokens = meap::zeros<std::int32_t>(meap::cpu{}, {4, 9});
  double loss = 0;
  for (std::uint64_t step = 0; step < 3; ++step) {
    for (meap::index_t i = 0; i < tokens.numel(); ++i) tokens.data()[i] = static_cast<std::int32_t>((i * 7 + step) % 15);
    loss = trainer.step(tokens.view().as_const()).loss;
  }
  // Rank 0's loss, byte for byte, against this rank's.
  std::string mine(reinterpret_cast<const char*>(&loss), sizeof loss), first = mine;
  group.broadcast_host(first, 0);
  if (first != mine) {
    std::printf("consumer_dist: rank %d ended with another loss than rank 0\n", group.rank());
    return 1;
  }
  if (group.rank() == 0)
    std::printf("consumer_dist: %d ranks, 3 ZeRO-1 steps, the same loss %.6f on every rank\n", group.size(), loss);
  return 0;
}
