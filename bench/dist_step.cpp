// bench_dist: data-parallel training over MPI on the CPU, run as `mpirun -np 2 bench_dist`.
//
// 1. The communication share of a step: bench_train_step's model (vocab 4096, d 256, 4 layers,
//    T 256, fp32) trained on a global batch of 8 rows over the ranks, replicated and ZeRO-1; the
//    group is wrapped in a timer that adds up the wall time spent inside its collectives (the
//    transfers and the wait for the slower rank), reported as a share of the step.
// 2. The all-reduce itself against its named baseline, raw MPI: meap's mpi_group::all_reduce of
//    the model's gradient buffer (MPI_Allreduce under the group's watchdog, after its argument
//    checks) against a plain MPI_Allreduce of the same bytes in the same run; the ratio of their
//    bandwidths (bytes per second of buffer) should be about 1.
// Prints one line per figure; timings are the best of the measured repeats.
#include <meap/dist/mpi.hpp>
#include <meap/masking/fixed_ratio.hpp>
#include <meap/train/pretrain.hpp>

#include "support/bench_model.hpp"
#include "support/main.hpp"
#include "support/timing.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace {

using meap::cpu;
using meap::index_t;
using clock_type = std::chrono::steady_clock;

constexpr index_t global_batch = meap_bench::bench_batch, seq = meap_bench::bench_seq;
using meap_bench::bench_config;

// A process group that forwards to another and adds up the time spent in every collective.
class timed_group final : public meap::dist::process_group<cpu> {
 public:
  explicit timed_group(meap::dist::process_group<cpu>& inner) : inner_(inner) {}
  int rank() const noexcept override { return inner_.rank(); }
  int size() const noexcept override { return inner_.size(); }
  std::chrono::milliseconds timeout() const noexcept override { return inner_.timeout(); }
  void all_reduce(const cpu& d, const meap::any_view& data, meap::dist::reduce_op op) override {
    timed([&] { inner_.all_reduce(d, data, op); });
  }
  void reduce_scatter(const cpu& d, const meap::any_view& data, std::span<const index_t> bounds) override {
    timed([&] { inner_.reduce_scatter(d, data, bounds); });
  }
  void all_gather(const cpu& d, const meap::any_view& data, std::span<const index_t> bounds) override {
    timed([&] { inner_.all_gather(d, data, bounds); });
  }
  void synchronize(const cpu& d) override { inner_.synchronize(d); }
  void all_reduce_host(std::span<std::int64_t> values) override { timed([&] { inner_.all_reduce_host(values); }); }
  void broadcast_host(std::string& bytes, int root) override { timed([&] { inner_.broadcast_host(bytes, root); }); }
  void barrier() override { timed([&] { inner_.barrier(); }); }
  double seconds = 0;

 private:
  template <class F>
  void timed(F&& f) {
    const auto start = clock_type::now();
    f();
    seconds += std::chrono::duration<double>(clock_type::now() - start).count();
  }
  meap::dist::process_group<cpu>& inner_;
};

struct step_figures {
  double step_seconds = 1e30, communication_seconds = 0;
};

step_figures measure_steps(meap::dist::mpi_group& group, meap::dist::sharding sharding, int repeats) {
  meap::nn::llama_model<meap::fp32, cpu> model(bench_config());
  model.initialize(1);
  meap::train::pretrain_options options;
  options.masking.mask_id = 4095;
  timed_group timer(group);
  meap::train::pretrainer trainer(model, meap::masking::fixed_ratio{}, options);
  trainer.distribute(timer, sharding);
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::int32_t> id(0, 4094);
  auto tokens = meap::zeros<std::int32_t>(cpu{}, {global_batch, seq + 1});
  step_figures best;
  for (int r = 0; r <= repeats; ++r) {  // the first step warms up
    for (index_t i = 0; i < tokens.numel(); ++i) tokens.data()[i] = id(rng);
    group.barrier();
    timer.seconds = 0;
    const auto start = clock_type::now();
    (void)trainer.step(tokens.view().as_const());
    const double seconds = std::chrono::duration<double>(clock_type::now() - start).count();
    if (r > 0 && seconds < best.step_seconds) best = {seconds, timer.seconds};
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  std::optional<meap::dist::mpi_environment> mpi;
  const int code = meap_bench::guarded_main("bench_dist", [&] {
    int repeats = 5;
    CLI::App app{"bench_dist: data-parallel steps over MPI and the all-reduce against raw MPI (run under mpirun)",
                 "bench_dist"};
    app.add_option("repeats", repeats, "measured steps and all-reduces (the best is reported)")
        ->check(CLI::Range(1, 1000))
        ->capture_default_str();
    if (const int parsed = meap_bench::parse(app, argc, argv); parsed >= 0) return parsed;
    mpi.emplace(argc, argv);
    meap::dist::mpi_group group;
    const bool lead = group.rank() == 0;
    const auto config = bench_config();
    if (lead)
      std::printf("bench_dist: %d ranks, %lld parameters, global batch %lld x %lld (%lld rows per rank), fp32\n",
                  group.size(), static_cast<long long>(config.parameter_count()), static_cast<long long>(global_batch),
                  static_cast<long long>(seq), static_cast<long long>(global_batch / group.size()));
    for (const auto sharding : {meap::dist::sharding::replicated, meap::dist::sharding::zero1}) {
      const auto f = measure_steps(group, sharding, repeats);
      if (lead)
        std::printf("step (%s): %.3f s, in collectives %.3f s = %.1f%% of the step, %.0f tokens/s\n",
                    sharding == meap::dist::sharding::zero1 ? "ZeRO-1" : "replicated", f.step_seconds,
                    f.communication_seconds, 100.0 * f.communication_seconds / f.step_seconds,
                    static_cast<double>(global_batch * seq) / f.step_seconds);
    }

    // The gradient buffer's all-reduce: meap's group against a blocking MPI_Allreduce, same bytes.
    meap::nn::llama_model<meap::fp32, cpu> model(config);
    const index_t n = model.store().flat_size();
    std::vector<float> buffer(static_cast<std::size_t>(n), 1.0f);
    const auto view = meap::to_any(meap::make_view(std::span<float>(buffer), {n}));
    const double bytes = static_cast<double>(n) * sizeof(float);
    double ours = 1e30, raw = 1e30;
    for (int r = 0; r <= repeats; ++r) {  // alternating, the first of each a warm-up
      group.barrier();
      auto start = clock_type::now();
      group.all_reduce(cpu{}, view, meap::dist::reduce_op::sum);
      const double a = std::chrono::duration<double>(clock_type::now() - start).count();
      group.barrier();
      start = clock_type::now();
      MPI_Allreduce(MPI_IN_PLACE, buffer.data(), static_cast<int>(n), MPI_FLOAT, MPI_SUM, group.communicator());
      const double b = std::chrono::duration<double>(clock_type::now() - start).count();
      if (r > 0) {
        ours = std::min(ours, a);
        raw = std::min(raw, b);
      }
    }
    if (lead)
      std::printf("all-reduce of %.1f MiB: meap mpi_group %.2f ms (%.2f GB/s), raw MPI_Allreduce %.2f ms (%.2f GB/s), "
                  "ratio %.2f\n",
                  bytes / 1048576.0, ours * 1e3, bytes / ours * 1e-9, raw * 1e3, bytes / raw * 1e-9, raw / ours);
    return 0;
  });
  if (code != 0) return meap::dist::abort_if_running(code);
  return code;
}
