// tests/dist/failure_program.cpp: a 2-rank training run in which one rank fails, for
// run_failure.cmake. Rank `--rank` dies (SIGKILL) or hangs (stops answering) at step `--at`;
// the other ranks must exit non-zero within the group's timeout, and the checkpoints rank 0
// committed before must resume.
//   failure_program <dir> <kill|hang|none> <at> <timeout-seconds> [resume]
#include <meap/dist/mpi.hpp>
#include <meap/masking/fixed_ratio.hpp>
#include <meap/train/pretrain.hpp>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>

int main(int argc, char** argv) {
  int code = 0;
  try {
    meap::dist::mpi_environment mpi(argc, argv);
    if (argc < 5) throw meap::error("usage: failure_program <dir> <kill|hang|none> <at> <timeout-seconds> [resume]");
    const std::string directory = argv[1], how = argv[2];
    const long at = std::stol(argv[3]);
    const bool resume = argc > 5 && std::string(argv[5]) == "resume";
    meap::dist::mpi_group group(MPI_COMM_WORLD, std::chrono::seconds(std::stol(argv[4])));

    meap::nn::llama_config config;
    config.vocab = 24;
    config.d_model = 32;
    config.layers = 2;
    config.heads = 2;
    config.kv_heads = 1;
    config.ffn = 64;
    config.max_seq = 32;
    meap::nn::llama_model<meap::fp32, meap::cpu> model(config);
    model.initialize(1);
    meap::train::pretrain_options options;
    options.masking.mask_id = 23;
    options.schedule = {1e-2, 1e-3, 2, 12};
    meap::train::pretrainer trainer(model, meap::masking::fixed_ratio{0.2}, options);
    trainer.distribute(group, meap::dist::sharding::zero1);
    std::optional<meap::train::checkpoint_series> series;
    std::string from;
    if (group.rank() == 0) {
      series.emplace(directory);
      if (resume && series->newest()) from = series->newest()->path.string();
    }
    group.broadcast_host(from, 0);
    if (!from.empty()) trainer.resume(from);
    if (group.rank() == 0 && !from.empty()) std::printf("resumed at step %llu\n", static_cast<unsigned long long>(trainer.next_step()));
    while (trainer.next_step() < 12) {
      const auto step = trainer.next_step();
      if (group.rank() == 1 && static_cast<long>(step) == at) {
        if (how == "kill") std::raise(SIGKILL);
        if (how == "hang") std::this_thread::sleep_for(std::chrono::hours(1));
      }
      auto tokens = meap::zeros<std::int32_t>(meap::cpu{}, {4, 17});
      meap::philox_stream rng(3, step);
      for (int b = 0; b < 4; ++b)
        for (int t = 0; t < 17; ++t) tokens.view()(b, t) = static_cast<std::int32_t>(rng.next_below(23));
      const auto report = trainer.step(tokens.view().as_const());
      if (group.rank() == 0) std::printf("step %llu loss %.6f\n", static_cast<unsigned long long>(report.step), report.loss);
      if (trainer.next_step() % 2 == 0) (void)trainer.save(series ? &*series : nullptr);
    }
    if (group.rank() == 0) std::printf("finished at step %llu\n", static_cast<unsigned long long>(trainer.next_step()));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    std::fflush(stderr);
    code = meap::dist::abort_if_running(1);
  }
  return code;
}
