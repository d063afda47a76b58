// bench_philox: random words per second from meap::philox_stream against std::mt19937 (the
// baseline), and bounded draws (what masking uses) against std::uniform_int_distribution.
// Single thread; both measured in this run. Usage: bench_philox [words, default 2^26] (--help)
#include <meap/meap.hpp>

#include "support/main.hpp"
#include "support/timing.hpp"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>

namespace {

using meap_bench::best_seconds;

volatile std::uint32_t sink;

int run_bench(int argc, char** argv) {
  long long words = 1ll << 26;
  CLI::App app{"bench_philox: random words per second, meap::philox_stream against std::mt19937 (one thread)",
               "bench_philox"};
  app.add_option("words", words, "words drawn per measurement")
      ->check(CLI::Range(1ll, 1ll << 40))
      ->capture_default_str();
  if (const int code = meap_bench::parse(app, argc, argv); code >= 0) return code;
  const double philox = best_seconds(3, [&] {
    meap::philox_stream s(1, 2, 3);
    std::uint32_t acc = 0;
    for (long long i = 0; i < words; ++i) acc ^= s.next_u32();
    sink = acc;
  });
  const double mt = best_seconds(3, [&] {
    std::mt19937 engine(1);
    std::uint32_t acc = 0;
    for (long long i = 0; i < words; ++i) acc ^= static_cast<std::uint32_t>(engine());
    sink = acc;
  });
  const double philox_bounded = best_seconds(3, [&] {
    meap::philox_stream s(1, 2, 3);
    std::uint32_t acc = 0;
    for (long long i = 0; i < words; ++i) acc ^= s.next_below(4093);
    sink = acc;
  });
  const double mt_bounded = best_seconds(3, [&] {
    std::mt19937 engine(1);
    std::uniform_int_distribution<std::uint32_t> below(0, 4092);
    std::uint32_t acc = 0;
    for (long long i = 0; i < words; ++i) acc ^= below(engine);
    sink = acc;
  });
  std::printf("%-40s %14s %14s %8s\n", "draw (one thread)", "meap Mword/s", "baseline", "ratio");
  std::printf("%-40s %14.1f %14.1f %8.2f\n", "u32: philox_stream vs std::mt19937", words / philox / 1e6,
              words / mt / 1e6, mt / philox);
  std::printf("%-40s %14.1f %14.1f %8.2f\n", "[0,4093): next_below vs uniform_int", words / philox_bounded / 1e6,
              words / mt_bounded / 1e6, mt_bounded / philox_bounded);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return meap_bench::guarded_main("bench_philox", [&] { return run_bench(argc, argv); });
}
