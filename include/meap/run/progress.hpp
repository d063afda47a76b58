// meap/run/progress.hpp: how a run reports itself: durations as h:mm:ss, numbers in logs with
// enough digits that two runs' rows are equal only if their values are, and an ETA from the work
// done so far.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>

namespace meap::run {

// 3725.4 s -> "1:02:05".
inline std::string format_duration(double seconds) {
  const auto s = static_cast<long long>(seconds + 0.5);
  char text[32];
  std::snprintf(text, sizeof text, "%lld:%02lld:%02lld", s / 3600, (s / 60) % 60, s % 60);
  return text;
}

// A number in a step log or CSV: 9 significant digits, the same text for the same double on every
// machine.
inline std::string log_number(double x) {
  char text[40];
  std::snprintf(text, sizeof text, "%.9g", x);
  return text;
}

// Seconds since `start` on the steady clock.
inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The time left when `done` of `total` units took `elapsed` seconds (0 before any is done).
inline double eta_seconds(double elapsed, double done, double total) {
  return done > 0 ? elapsed / done * (total - done) : 0.0;
}

}  // namespace meap::run
