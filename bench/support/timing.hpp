// bench/support/timing.hpp: the one timing rule every benchmark uses: best of n wall-clock runs.
#pragma once

#include <chrono>

namespace meap_bench {

// The fastest of `repeats` runs of f, in seconds (the minimum is the least disturbed by other load).
template <class F>
double best_seconds(int repeats, F&& f) {
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    f();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (seconds < best) best = seconds;
  }
  return best;
}

}  // namespace meap_bench
