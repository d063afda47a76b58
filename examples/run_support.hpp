// examples/run_support.hpp: what the training programs (meap_pretrain, meap_finetune) share: the
// output directory with its checkpoint series and step logs, starting or resuming a run, the
// memory check before anything is allocated, and the formats of the progress line.
#pragma once

#include <meap/core/error.hpp>
#include <meap/io/step_log.hpp>
#include <meap/nn/config.hpp>
#include <meap/train/checkpoint_series.hpp>
#include <meap/train/memory.hpp>
#include <meap/train/pretrain.hpp>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace meap_examples {

inline std::string format_duration(double seconds) {
  const auto s = static_cast<long long>(seconds + 0.5);
  char text[32];
  std::snprintf(text, sizeof text, "%lld:%02lld:%02lld", s / 3600, (s / 60) % 60, s % 60);
  return text;
}

// Numbers in the step logs: enough digits that two runs' rows are equal only if their values are.
inline std::string log_number(double x) {
  char text[40];
  std::snprintf(text, sizeof text, "%.9g", x);
  return text;
}

// Where a run must fit: the bytes free on its device (nullopt: unknown) and the device's name.
struct memory_budget {
  std::optional<double> available;
  const char* where = "on this machine";
};

// Refuses a run whose estimated memory exceeds the budget, before anything is allocated, with
// the figures. `rows` is the rows of one micro-batch.
template <class P>
void check_training_memory(const char* program, const meap::nn::llama_config& config, std::int64_t rows,
                           std::int64_t length, const memory_budget& budget, const char* options) {
  const auto need = meap::train::estimate_training_memory<P>(config, rows, length);
  if (!budget.available || need.total() <= *budget.available) return;
  meap::throw_argument_error(
      program, options,
      "a run needing at least " + meap::train::format_bytes(need.total()) + " (parameters and gradients " +
          meap::train::format_bytes(need.parameters) + ", AdamW " + meap::train::format_bytes(need.optimizer) +
          ", activations of a micro-batch " + meap::train::format_bytes(need.activations) + ")",
      std::string("a run that fits in the ") + meap::train::format_bytes(*budget.available) + " available " +
          budget.where + " (fewer rows per micro-batch with --micro-batches, a shorter --seq-len or a smaller model)");
}

// The columns of <out>/loss.csv (the same on every machine and after any resume) and of
// <out>/throughput.csv (timings, which vary from run to run).
inline constexpr const char* loss_header = "step,loss,lr,grad_norm,loss_tokens,masked,skipped";
inline constexpr const char* throughput_header = "step,seconds,tokens_per_second";

// Under mpirun (docs/distributed.md): how the ranks of a run agree on what only rank 0 decides.
// share(text) hands rank 0's text to every rank (a process_group's broadcast_host); lead is rank 0.
// Without a group (one process): lead, and share does nothing.
struct rank_role {
  bool lead = true;
  std::function<void(std::string&)> share{};

  // Runs `decide` on rank 0 and gives its result to every rank; when it throws there, every rank
  // throws (rank 0 its own error, the others one that quotes it), so no rank waits for one that
  // stopped.
  std::string agree(const std::function<std::string()>& decide) const {
    if (!share) return decide();
    std::string text;
    std::exception_ptr failure;
    if (lead) {
      try {
        text = "ok:" + decide();
      } catch (const std::exception& e) {
        failure = std::current_exception();
        text = std::string("error:") + e.what();
      }
    }
    share(text);
    if (failure) std::rethrow_exception(failure);
    if (text.rfind("error:", 0) == 0) throw meap::error("rank 0 stopped the run: " + text.substr(6));
    return text.substr(3);
  }
};

// A training run's output directory: checkpoints/ (a series, newest `keep` kept), loss.csv and
// throughput.csv. Opened before any work, so that a run that cannot write its checkpoints or its
// loss curve stops at once; opening the series takes its lock and removes what a killed run left.
// Distributed, rank 0 owns the directory; the other ranks' training_output touches no file and
// follows rank 0's decisions (role).
class training_output {
 public:
  training_output(const char* program, const std::string& out, std::int64_t keep, rank_role role = {})
      : program_(program), out_(out), role_(std::move(role)) {
    (void)role_.agree([&] {
      checkpoints_.emplace(open(program, out) / "checkpoints", static_cast<std::size_t>(keep));
      if (checkpoints_->orphans_removed() > 0)
        std::fprintf(stderr, "removed %zu unfinished checkpoint file(s) of an interrupted run\n",
                     checkpoints_->orphans_removed());
      return std::string();
    });
  }

  const std::filesystem::path& directory() const { return out_; }
  meap::step_log& loss_log() { return *loss_log_; }
  meap::step_log& throughput_log() { return *throughput_log_; }

  // resume: restores `trainer` (anything with resume(path, changes) and next_step()) from the
  // newest checkpoint, after comparing the run's settings (allow_changes: continue anyway, listing
  // the differences), and continues the logs from its step. Otherwise: a fresh run, which refuses
  // a directory that already holds checkpoints.
  template <class Trainer>
  void start(Trainer& trainer, bool resume, bool allow_changes) {
    // Rank 0 looks at the directory; every rank resumes from what it found.
    const std::filesystem::path newest = role_.agree([&] {
      const auto found = checkpoints_->newest();
      if (!resume) {
        if (found)
          meap::throw_argument_error(program_, "--out", out_.string(),
                                     "a directory without checkpoints (it holds " + found->path.string() +
                                         "): continue that run with --resume, or choose another --out");
        loss_log_.emplace(meap::step_log::create(out_ / "loss.csv", loss_header));
        throughput_log_.emplace(meap::step_log::create(out_ / "throughput.csv", throughput_header));
        return std::string();
      }
      if (!found)
        meap::throw_argument_error(program_, "--resume", (out_ / "checkpoints").string(),
                                   "a directory holding a checkpoint (step-*) to resume from");
      return found->path.string();
    });
    if (!resume) return;
    std::vector<std::string> changes;
    try {
      changes = trainer.resume(newest, allow_changes ? meap::train::resume_changes::allow
                                                     : meap::train::resume_changes::refuse);
    } catch (const meap::error& e) {
      if (allow_changes || std::string_view(e.what()).find("this run's settings") == std::string_view::npos) throw;
      throw meap::error(e.function(), e.argument(), std::string(e.what()) + "; --allow-changes continues with this run's settings");
    }
    if (!role_.lead) return;
    for (const auto& change : changes) std::fprintf(stderr, "warning: --allow-changes: %s\n", change.c_str());
    const auto next = trainer.next_step();
    loss_log_.emplace(meap::step_log::resume(out_ / "loss.csv", loss_header, next));
    throughput_log_.emplace(meap::step_log::resume(out_ / "throughput.csv", throughput_header, next));
    std::fprintf(stderr, "resumed from %s at step %llu\n", newest.c_str(), static_cast<unsigned long long>(next));
    if (loss_log_->missing_rows() > 0)
      std::fprintf(stderr, "warning: %s lacks %llu of the rows before step %llu (edited or deleted by hand?)\n",
                   loss_log_->path().c_str(), static_cast<unsigned long long>(loss_log_->missing_rows()),
                   static_cast<unsigned long long>(next));
  }

  bool lead() const noexcept { return role_.lead; }

  // One step's rows in both logs (rank 0's job).
  void log(const meap::train::step_report& r) {
    if (!role_.lead) return;
    loss_log_->append(r.step, log_number(r.loss) + ',' + log_number(r.lr) + ',' + log_number(r.grad_norm) + ',' +
                                  std::to_string(r.loss_tokens) + ',' + std::to_string(r.masked) + ',' +
                                  std::to_string(r.skipped ? 1 : 0));
    throughput_log_->append(r.step, log_number(r.seconds) + ',' + log_number(r.tokens_per_second));
  }

  // A checkpoint: every logged row of the steps it covers on disk first, then the checkpoint as
  // one unit (trainer.save(series)).
  // Distributed: every rank calls it (the state is gathered); rank 0 writes and returns the entry.
  template <class Trainer>
  meap::train::checkpoint_entry checkpoint(Trainer& trainer) {
    if (!role_.share) {
      loss_log_->sync();
      throughput_log_->sync();
      return trainer.save(*checkpoints_);
    }
    if (role_.lead) {
      loss_log_->sync();
      throughput_log_->sync();
    }
    return trainer.save(role_.lead ? &*checkpoints_ : nullptr).value_or(meap::train::checkpoint_entry{});
  }

 private:
  static std::filesystem::path open(const char* program, const std::string& out) {
    const std::filesystem::path path(out);
    std::error_code ec;
    std::filesystem::create_directories(path, ec);
    if (ec || !std::filesystem::is_directory(path))
      meap::throw_argument_error(program, "--out", out,
                                 "a directory that exists or can be created" + (ec ? " (" + ec.message() + ")" : std::string()));
    return path;
  }

  const char* program_;
  std::filesystem::path out_;
  rank_role role_;
  std::optional<meap::train::checkpoint_series> checkpoints_;  // rank 0's
  std::optional<meap::step_log> loss_log_, throughput_log_;
};

}  // namespace meap_examples
