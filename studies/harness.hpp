// studies/harness.hpp: what meap's seed studies (meap_demo, meap_finetune_study) share, so that
// each program holds only its task, its models and its tables:
//
//   - the process and the output directory: the heap kept between training steps
//     (keep_freed_memory), the directory checked before any training (prepare_output_directory),
//     the model named in the header (describe_model);
//   - the seed loop: one function per seed over seeds S, S + 1, ..., with progress and an ETA of
//     the remaining seeds on stderr, and a callback after every seed that prints its table and
//     rewrites the CSV files, so that a stopped study keeps what it measured (run_seeds);
//   - the progress line of a training loop (step_progress);
//   - paired statistics over the seeds: baseline against treatment, seed by seed
//     (compare_over_seeds, tally_over_seeds, summarize_over_seeds; the tests themselves are in
//     statistics.hpp);
//   - CSV files, written atomically (csv_table);
//   - a gnuplot figure rendered to a PNG, which is written to a temporary and renamed so that the
//     name only ever holds a whole plot, and skipped with a message when gnuplot is missing
//     (plot_png).
//
//   const auto study = meap_studies::run_seeds<seed_result>(
//       first_seed, seeds,
//       [&](const meap_studies::seed_context& seed, seed_result& r) { seed.say("training"); r.accuracy = ...; },
//       [&](const std::vector<seed_result>& so_far) { print_table(so_far.back()); write_csvs(so_far); });
//   print_summary(study.results);
//
// A study's per-seed result is any struct with `std::uint64_t seed` and `double seconds`, which
// run_seeds fills in.
#pragma once

#include "statistics.hpp"

#include <meap/core/error.hpp>
#include <meap/io/atomic_file.hpp>
#include <meap/nn/config.hpp>
#include <meap/run/progress.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace meap_studies {

// ---------------------------------------------------------------------------------------------
// The process.

// A study runs thousands of small training steps, each of which allocates and frees the same
// activation and gradient buffers (megabytes). glibc hands the freed top of its heap back to the
// system, and the next step faults every page of it in again: a 200-step `meap_demo --quick` run
// through meap::train::pretrainer took 1.5 million page faults (0.8 million with the hand-written
// step it replaced) and lost about a quarter of its training throughput to them on 2 cores.
// Keeping 64 MiB of slack at the top of the heap (M_TOP_PAD) keeps those pages: 33 thousand
// faults. The studies' models need far less memory than that. Other C libraries: nothing to do.
inline void keep_freed_memory() {
#if defined(__GLIBC__)
  mallopt(M_TOP_PAD, 64 << 20);
#endif
}

// ---------------------------------------------------------------------------------------------
// Files.

// Written atomically: the name holds the previous file or the whole new one, never a part, even
// when the study is stopped while it writes.
inline void write_text(const std::filesystem::path& path, std::string_view text) {
  meap::write_file_atomically(path, std::span<const std::byte>(reinterpret_cast<const std::byte*>(text.data()), text.size()));
}

// Creates `directory` (and its parents) and writes and removes a probe file in it: a study that
// cannot save what it measured finds out now, not after an hour of training. The error names
// `program` and `option` (the command-line option that gave the directory).
inline void prepare_output_directory(std::string_view program, std::string_view option,
                                     const std::filesystem::path& directory) {
  if (directory.empty()) meap::throw_argument_error(program, option, "\"\"", "a directory");
  std::error_code ec;
  std::filesystem::create_directories(directory, ec);
  if (ec || !std::filesystem::is_directory(directory))
    meap::throw_argument_error(program, option, directory.string(),
                               "a directory that exists or can be created" +
                                   (ec ? " (" + ec.message() + ")" : std::string()));
  const auto probe = directory / ("." + std::string(program) + ".write_test");
  write_text(probe, "probe\n");
  std::filesystem::remove(probe, ec);
}

// A CSV file built row by row and written atomically. A row's values are written with the
// stream's default formatting (6 significant digits); a `summary` stands for two columns (mean,
// sd) and a `paired_result` for nine (both models' mean and sd, the difference's mean and sd, t,
// its p, the sign-flip p), in the order the studies' summary files have always had. Every row must
// have as many values as the header has columns: a study that adds a column to one and not the
// other fails at its first row, not in someone's spreadsheet.
class csv_table {
 public:
  explicit csv_table(std::string header) : columns_(1) {
    for (const char c : header) columns_ += c == ',' ? 1 : 0;
    text_ << header << '\n';
  }

  template <class... Values>
  void row(const Values&... values) {
    std::size_t fields = 0;
    (put(values, fields), ...);
    if (fields != columns_)
      throw meap::error("meap_studies::csv_table::row: internal error: " + std::to_string(fields) +
                        " values for a header of " + std::to_string(columns_) + " columns");
    text_ << '\n';
  }

  void write(const std::filesystem::path& path) const { write_text(path, text_.str()); }

 private:
  template <class T>
  void put(const T& value, std::size_t& fields) {
    if constexpr (std::is_same_v<T, summary>) {
      put(value.mean, fields);
      put(value.sd, fields);
    } else if constexpr (std::is_same_v<T, paired_result>) {
      put(value.a, fields);
      put(value.b, fields);
      put(value.difference, fields);
      put(value.t, fields);
      put(value.t_p, fields);
      put(value.sign_flip_p, fields);
    } else {
      if (fields > 0) text_ << ',';
      text_ << value;
      ++fields;
    }
  }

  std::size_t columns_;
  std::ostringstream text_;
};

// How a study's header names its model: "139968-parameter LLaMA (d_model 64, 2 layers, 4 heads,
// vocab 307)".
inline std::string describe_model(const meap::nn::llama_config& c) {
  return std::to_string(c.parameter_count()) + "-parameter LLaMA (d_model " + std::to_string(c.d_model) + ", " +
         std::to_string(c.layers) + " layers, " + std::to_string(c.heads) + " heads, vocab " + std::to_string(c.vocab) +
         ")";
}

// ---------------------------------------------------------------------------------------------
// Plots.

// A gnuplot figure: `data` (inline data blocks, `$name << EOD ... EOD`, so that the script stands
// alone) comes before the terminal and output lines, `commands` (set ..., plot ...) after them.
struct gnuplot_figure {
  std::string data;
  std::string commands;
  int width = 1100, height = 450;  // pixels
};

// Writes directory/<name>.gp and runs gnuplot on it, which draws directory/<name>.png (through
// a temporary renamed over it once complete, so that the name never holds half a PNG). Without
// gnuplot, or when gnuplot fails, it says so on stdout and returns false: a plot is a convenience,
// the CSV files hold the numbers.
inline bool plot_png(const std::filesystem::path& directory, const std::string& name, const gnuplot_figure& figure) {
  if (std::system("command -v gnuplot > /dev/null 2>&1") != 0) {
    std::printf("gnuplot not found: skipping the plot (install it with: apt-get install gnuplot-nox)\n");
    return false;
  }
  const auto script_path = directory / (name + ".gp");
  const auto png_path = directory / (name + ".png");
  const auto png_temporary = directory / ("." + name + ".png.tmp");
  std::ostringstream script;
  script << figure.data << "set terminal pngcairo size " << figure.width << ',' << figure.height
         << " font 'sans,11'\n"
         << "set output '" << png_temporary.string() << "'\n"
         << figure.commands;
  write_text(script_path, script.str());
  const std::string command = "gnuplot '" + script_path.string() + "'";
  std::error_code ec;
  if (std::system(command.c_str()) != 0 || (std::filesystem::rename(png_temporary, png_path, ec), ec)) {
    std::filesystem::remove(png_temporary, ec);
    std::printf("gnuplot failed on %s: no plot written\n", script_path.string().c_str());
    return false;
  }
  std::printf("wrote %s\n", png_path.string().c_str());
  return true;
}

// ---------------------------------------------------------------------------------------------
// The seed loop.

// The seed a per-seed function runs, and its place in the study. say() writes a stage of the
// seed's work to stderr: "seed 3 (2 of 8): <stage>" the first time, "seed 3: <stage>" after.
struct seed_context {
  std::uint64_t seed = 0;
  int index = 0;  // 0-based
  int count = 1;

  seed_context(std::uint64_t seed_, int index_, int count_) : seed(seed_), index(index_), count(count_) {}

  void say(std::string_view stage) const {
    if (!announced_)
      std::fprintf(stderr, "seed %llu (%d of %d): %.*s\n", static_cast<unsigned long long>(seed), index + 1, count,
                   static_cast<int>(stage.size()), stage.data());
    else
      std::fprintf(stderr, "seed %llu: %.*s\n", static_cast<unsigned long long>(seed), static_cast<int>(stage.size()),
                   stage.data());
    announced_ = true;
  }

 private:
  mutable bool announced_ = false;
};

template <class R>
concept seed_record = std::default_initializable<R> && requires(R r) {
  { r.seed } -> std::same_as<std::uint64_t&>;
  { r.seconds } -> std::same_as<double&>;
};

// What run_seeds returns: every seed's result, in seed order, and the time they all took.
template <class Result>
struct seed_results {
  std::vector<Result> results;
  double seconds = 0;
};

// Runs run_seed(context, result) for the seeds first_seed .. first_seed + seeds - 1 in order, on a
// default-constructed Result whose seed it sets first and whose seconds it sets after; then calls
// after_seed(results so far) (print the seed's table, rewrite the CSV files) and, unless it was
// the last seed, writes the seed's time and the remaining seeds' ETA to stderr. stdout is flushed
// before the first seed (the study's header comes before any progress) and after every seed.
template <seed_record Result, class RunSeed, class AfterSeed>
seed_results<Result> run_seeds(std::uint64_t first_seed, int seeds, RunSeed&& run_seed, AfterSeed&& after_seed) {
  seed_results<Result> out;
  out.results.reserve(static_cast<std::size_t>(std::max(seeds, 0)));
  std::fflush(stdout);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < seeds; ++i) {
    const seed_context context{first_seed + static_cast<std::uint64_t>(i), i, seeds};
    const auto seed_start = std::chrono::steady_clock::now();
    Result& r = out.results.emplace_back();
    r.seed = context.seed;
    run_seed(context, r);
    r.seconds = meap::run::seconds_since(seed_start);
    const std::vector<Result>& so_far = out.results;
    after_seed(so_far);
    std::fflush(stdout);
    if (i + 1 < seeds)
      std::fprintf(stderr, "seed %llu done in %.0f s; ETA %s\n", static_cast<unsigned long long>(context.seed),
                   out.results.back().seconds,
                   meap::run::format_duration(meap::run::eta_seconds(meap::run::seconds_since(start), i + 1, seeds))
                       .c_str());
  }
  out.seconds = meap::run::seconds_since(start);
  return out;
}

// One training loop's progress line on stderr:
//   "  NTP      step  1200/4000  loss 2.913  lr 2.61e-03  61032 tokens/s  ETA 0:00:46"
// `unit` names what the rate counts ("tokens", "steps"); the clock starts at construction.
class step_progress {
 public:
  step_progress(std::string what, std::uint64_t total, std::string unit)
      : what_(std::move(what)), unit_(std::move(unit)), total_(total), start_(std::chrono::steady_clock::now()) {}

  // `done` of the total steps are finished, `amount` units processed so far; lr when there is one.
  void print(std::uint64_t done, double loss, double amount, std::optional<double> lr = std::nullopt) const {
    const double elapsed = meap::run::seconds_since(start_);
    char lr_text[32] = "";
    if (lr) std::snprintf(lr_text, sizeof lr_text, "  lr %.2e", *lr);
    std::fprintf(stderr, "  %-8s step %5llu/%llu  loss %.3f%s  %5.0f %s/s  ETA %s\n", what_.c_str(),
                 static_cast<unsigned long long>(done), static_cast<unsigned long long>(total_), loss, lr_text,
                 elapsed > 0 ? amount / elapsed : 0.0, unit_.c_str(),
                 meap::run::format_duration(
                     meap::run::eta_seconds(elapsed, static_cast<double>(done), static_cast<double>(total_)))
                     .c_str());
  }

  double seconds() const { return meap::run::seconds_since(start_); }

 private:
  std::string what_, unit_;
  std::uint64_t total_;
  std::chrono::steady_clock::time_point start_;
};

// ---------------------------------------------------------------------------------------------
// Statistics over the seeds. Each seed trained a baseline and a treatment model (NTP and MEAP)
// from the same initialization on the same data: `baseline` and `treatment` name their members of
// the study's result struct, and `measure` turns one model's member into a number (an accuracy,
// an attention metric).

template <class Result, class Model, class Measure>
paired_result compare_over_seeds(const std::vector<Result>& results, Model Result::*baseline, Model Result::*treatment,
                                 Measure&& measure) {
  std::vector<double> a, b;
  for (const auto& r : results) {
    a.push_back(static_cast<double>(measure(r.*baseline)));
    b.push_back(static_cast<double>(measure(r.*treatment)));
  }
  return paired_comparison(a, b);
}

// How many seeds have the treatment ahead of, behind and level with the baseline.
struct seed_tally {
  int ahead = 0, behind = 0, level = 0;
};

template <class Result, class Model, class Measure>
seed_tally tally_over_seeds(const std::vector<Result>& results, Model Result::*baseline, Model Result::*treatment,
                            Measure&& measure) {
  seed_tally tally;
  for (const auto& r : results) {
    const double d = static_cast<double>(measure(r.*treatment)) - static_cast<double>(measure(r.*baseline));
    ++(d > 0 ? tally.ahead : d < 0 ? tally.behind : tally.level);
  }
  return tally;
}

// Mean and sd over the seeds of value(result).
template <class Result, class Value>
summary summarize_over_seeds(const std::vector<Result>& results, Value&& value) {
  std::vector<double> values;
  for (const auto& r : results) values.push_back(static_cast<double>(value(r)));
  return summarize(values);
}

// The smallest two-sided p the sign-flip test can give with `seeds` seeds: 2 / 2^n (0 past 24
// seeds, where the test is not run).
inline double smallest_sign_flip_p(std::size_t seeds) {
  return seeds >= 1 && seeds <= 24 ? 2.0 / static_cast<double>(std::uint64_t{1} << seeds) : 0.0;
}

// A statistic in a table: "-" when it is undefined (t when every seed gives the same difference).
inline std::string format_statistic(double value, const char* format) {
  if (std::isnan(value)) return "-";
  char text[32];
  std::snprintf(text, sizeof text, format, value);
  return text;
}

}  // namespace meap_studies
