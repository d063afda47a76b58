// bench/support/figures.hpp: the figures a benchmark prints, also as JSON for tools/gpu_check.sh.
// With MEAP_BENCH_FIGURES=<file> set, every record goes to that file as one JSON object per line
// ({"bench": <name>, ...}); without it nothing is written. Each record is appended and flushed at
// once, so a benchmark stopped by its time budget keeps the figures it had.
#pragma once

#include <cstdlib>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

namespace meap_bench {

class figures {
 public:
  explicit figures(std::string bench) : bench_(std::move(bench)) {
    if (const char* path = std::getenv("MEAP_BENCH_FIGURES"); path != nullptr && *path != '\0') path_ = path;
  }

  void add(nlohmann::json record) const {
    if (path_.empty()) return;
    record["bench"] = bench_;
    std::ofstream out(path_, std::ios::app);
    out << record.dump() << '\n';
    out.flush();
    if (!out) throw std::runtime_error("cannot append to MEAP_BENCH_FIGURES file '" + path_ + "'");
  }

  // A figure that may be missing (a baseline that was skipped): null in the JSON.
  static nlohmann::json maybe(const std::optional<double>& value) { return value ? nlohmann::json(*value) : nlohmann::json(); }

 private:
  std::string bench_, path_;
};

}  // namespace meap_bench
