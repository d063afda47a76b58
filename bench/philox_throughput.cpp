// bench_philox: random words per second from meap::philox_stream against std::mt19937 (the
// baseline), and bounded draws (what masking uses) against std::uniform_int_distribution.
// Single thread; both measured in this run. Usage: bench_philox [words, default 2^26]
#include <meap/meap.hpp>

#include "support/timing.hpp"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>

namespace {

using meap_bench::best_seconds;

volatile std::uint32_t sink;

}  // namespace

int main(int argc, char** argv) {
  const long long words = argc > 1 ? std::atoll(argv[1]) : (1ll << 26);
  if (words <= 0) {
    std::fprintf(stderr, "bench_philox: argument 'words' = %s: expected a positive count\n", argv[1]);
    return 2;
  }
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
