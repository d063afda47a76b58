// bench_masking: rows per second for masking a [64, 4096] pretraining batch on the CPU, on one
// thread and on every OpenMP thread, against a baseline measured in the same run on one thread:
// the textbook sampler, which shuffles each row's positions with std::shuffle over std::mt19937,
// keeps the first k and writes the same outputs (it checks no exclusion but the last position).
// A plain copy of the batch into input_ids and labels (the least any masking must do) is printed
// as a memory-bandwidth floor.
// Usage: bench_masking [rows, default 64] [T, default 4096] (--help)
#include <meap/meap.hpp>

#include "support/main.hpp"
#include "support/timing.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <span>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace {

namespace mm = meap::masking;

using meap_bench::best_seconds;

volatile std::int32_t sink;

int available_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

void use_threads([[maybe_unused]] int threads) {
#if defined(_OPENMP)
  omp_set_num_threads(threads);
#endif
}

int run_bench(int argc, char** argv) {
  long long rows = 64;
  long long length = 4096;
  CLI::App app{"bench_masking: rows per second for masking a [rows, T] pretraining batch on the CPU, against "
               "std::shuffle over std::mt19937 per row",
               "bench_masking"};
  app.add_option("rows", rows, "sequences in the batch")->check(CLI::Range(1ll, 1ll << 24))->capture_default_str();
  // T is at most INT32_MAX: masked_count takes a row length as std::int32_t.
  app.add_option("T", length, "input positions per sequence")
      ->check(CLI::Range(2ll, static_cast<long long>(INT32_MAX)))
      ->capture_default_str();
  if (const int code = meap_bench::parse(app, argc, argv); code >= 0) return code;
  constexpr std::int32_t mask_id = 3;
  const long long columns = length + 1;
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(rows * columns));
  meap::philox_stream words(1, 2);
  for (auto& token : tokens) token = 10 + static_cast<std::int32_t>(words.next_below(32000));
  const auto batch = meap::make_view(std::span<const std::int32_t>(tokens), {rows, columns});
  auto out = mm::masked_batch<meap::cpu>{meap::tensor<std::int32_t, meap::cpu>(meap::cpu{}, {rows, length}),
                                         meap::tensor<std::int32_t, meap::cpu>(meap::cpu{}, {rows, length}),
                                         meap::tensor<std::uint8_t, meap::cpu>(meap::cpu{}, {rows, length})};
  const auto views = out.view();
  mm::pretraining_options options{.seed = 7, .mask_id = mask_id};
  constexpr int repeats = 7;

  const int threads = available_threads();
  const auto time_policy = [&](const auto& policy, int use) {
    use_threads(use);
    const double seconds = best_seconds(repeats, [&] {
      ++options.step;
      mm::apply(meap::cpu{}, policy, batch, options, views);
      sink = views.input_ids(0, 0);
    });
    use_threads(threads);
    return seconds;
  };
  struct measured {
    const char* name;
    double one;
    double all;
  };
  const measured results[] = {
      {"fixed_ratio 0.15, per_row", time_policy(mm::fixed_ratio{}, 1), time_policy(mm::fixed_ratio{}, threads)},
      {"fixed_ratio 0.15, per_batch", time_policy(mm::fixed_ratio{.sharing = mm::sharing::per_batch}, 1),
       time_policy(mm::fixed_ratio{.sharing = mm::sharing::per_batch}, threads)},
      {"span 0.15 (mean 3, max 10), per_row", time_policy(mm::span{}, 1), time_policy(mm::span{}, threads)},
  };

  // Baseline: the same exclusion (last position) and outputs, positions from std::shuffle.
  std::mt19937 engine(7);
  std::vector<std::int32_t> positions(static_cast<std::size_t>(length));
  const double shuffled = best_seconds(repeats, [&] {
    for (long long b = 0; b < rows; ++b) {
      const std::int32_t* in = tokens.data() + b * columns;
      std::int32_t* ids = views.input_ids.data() + b * length;
      std::int32_t* labels = views.labels.data() + b * length;
      std::uint8_t* flags = views.mask.data() + b * length;
      const auto n = static_cast<std::size_t>(length - 1);  // the last input is never masked
      std::iota(positions.begin(), positions.begin() + static_cast<std::ptrdiff_t>(n), 0);
      std::shuffle(positions.begin(), positions.begin() + static_cast<std::ptrdiff_t>(n), engine);
      const auto k = static_cast<std::size_t>(mm::masked_count(0.15, static_cast<std::int32_t>(n)));
      std::memcpy(ids, in, static_cast<std::size_t>(length) * sizeof(std::int32_t));
      std::memcpy(labels, in + 1, static_cast<std::size_t>(length) * sizeof(std::int32_t));
      std::memset(flags, 0, static_cast<std::size_t>(length));
      for (std::size_t i = 0; i < k; ++i) {
        ids[positions[i]] = mask_id;
        flags[positions[i]] = 1;
      }
    }
    sink = views.input_ids(0, 0);
  });
  const double copied = best_seconds(repeats, [&] {
    for (long long b = 0; b < rows; ++b) {
      std::memcpy(views.input_ids.data() + b * length, tokens.data() + b * columns, static_cast<std::size_t>(length) * 4);
      std::memcpy(views.labels.data() + b * length, tokens.data() + b * columns + 1, static_cast<std::size_t>(length) * 4);
    }
    sink = views.labels(0, 0);
  });

  std::printf("masking a [%lld, %lld] batch on the CPU; baseline: std::shuffle + std::mt19937 per row, one thread\n",
              rows, length);
  char all_threads[32];
  char all_ratio[32];
  std::snprintf(all_threads, sizeof all_threads, "%d threads", threads);
  std::snprintf(all_ratio, sizeof all_ratio, "ratio %dt", threads);
  std::printf("%-36s %12s %12s %12s %9s %9s\n", "rows/s", "1 thread", all_threads, "baseline", "ratio 1t", all_ratio);
  for (const measured& m : results)
    std::printf("%-36s %12.0f %12.0f %12.0f %9.2f %9.2f\n", m.name, static_cast<double>(rows) / m.one,
                static_cast<double>(rows) / m.all, static_cast<double>(rows) / shuffled, shuffled / m.one,
                shuffled / m.all);
  std::printf("%-36s %12.0f %12s %12s %9.2f %9s  (copy only: the floor)\n", "memcpy of tokens to ids + labels",
              static_cast<double>(rows) / copied, "", "", shuffled / copied, "");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return meap_bench::guarded_main("bench_masking", [&] { return run_bench(argc, argv); });
}
