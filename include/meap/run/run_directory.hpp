// meap/run/run_directory.hpp: a training run's output directory, the piece every trainer program
// needs (torchtitan's CheckpointManager plays this part there):
//   <out>/checkpoints/   a checkpoint_series: step-NNNNNNNN/ committed as one unit each, the
//                        newest `keep` kept, `latest` linking the newest
//   <out>/loss.csv       step, loss, lr, grad_norm, loss_tokens, masked, skipped: the same bytes
//                        on every machine and after any kill and resume
//   <out>/throughput.csv step, seconds, tokens_per_second (timings, which vary from run to run)
//
//   meap::run::run_directory out("my_trainer", "run/", 3);
//   out.start(trainer, resume, allow_changes);   // fresh (refuses old checkpoints) or resumed
//   ... out.log(trainer.step(batch)); ... out.checkpoint(trainer);
//
// Opened before any work, so that a run that cannot write its checkpoints or its loss curve stops
// at once; opening the series takes its lock and removes what a killed run left. Distributed (an
// agreement over the ranks), rank 0 owns the directory; the other ranks touch no file and follow
// rank 0's decisions. Messages name the program's options (--out, --resume, --allow-changes).
#pragma once

#include <meap/core/error.hpp>
#include <meap/dist/agreement.hpp>
#include <meap/io/step_log.hpp>
#include <meap/run/progress.hpp>
#include <meap/train/checkpoint_series.hpp>
#include <meap/train/pretrain.hpp>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace meap::run {

// The columns of loss.csv and throughput.csv.
inline constexpr const char* loss_header = "step,loss,lr,grad_norm,loss_tokens,masked,skipped";
inline constexpr const char* throughput_header = "step,seconds,tokens_per_second";

class run_directory {
 public:
  // `program` names the errors; `keep`: complete checkpoints kept (the newest).
  run_directory(const char* program, const std::string& out, std::int64_t keep, dist::rank0_agreement ranks = {})
      : program_(program), out_(out), ranks_(std::move(ranks)) {
    check_argument(keep >= 1, program, "--keep-checkpoints", std::to_string(keep), "at least 1");
    (void)ranks_.agree([&] {
      checkpoints_.emplace(open(program, out) / "checkpoints", static_cast<std::size_t>(keep));
      if (checkpoints_->orphans_removed() > 0)
        std::fprintf(stderr, "removed %zu unfinished checkpoint file(s) of an interrupted run\n",
                     checkpoints_->orphans_removed());
      return std::string();
    });
  }

  const std::filesystem::path& directory() const { return out_; }
  // Rank 0's logs (the other ranks have none).
  step_log& loss_log() { return *loss_log_; }
  step_log& throughput_log() { return *throughput_log_; }
  bool lead() const noexcept { return ranks_.lead(); }
  const dist::rank0_agreement& ranks() const noexcept { return ranks_; }

  // resume: restores `trainer` (anything with resume(path, changes) and next_step()) from the
  // newest checkpoint, after comparing the run's settings (allow_changes: continue anyway, listing
  // the differences on stderr), and continues the logs from its step. Otherwise a fresh run, which
  // refuses a directory that already holds checkpoints.
  template <class Trainer>
  void start(Trainer& trainer, bool resume, bool allow_changes) {
    // Rank 0 looks at the directory; every rank resumes from what it found.
    const std::filesystem::path newest = ranks_.agree([&] {
      const auto found = checkpoints_->newest();
      if (!resume) {
        if (found)
          throw_argument_error(program_, "--out", out_.string(),
                               "a directory without checkpoints (it holds " + found->path.string() +
                                   "): continue that run with --resume, or choose another --out");
        loss_log_.emplace(step_log::create(out_ / "loss.csv", loss_header));
        throughput_log_.emplace(step_log::create(out_ / "throughput.csv", throughput_header));
        return std::string();
      }
      if (!found)
        throw_argument_error(program_, "--resume", (out_ / "checkpoints").string(),
                             "a directory holding a checkpoint (step-*) to resume from");
      return found->path.string();
    });
    if (!resume) return;
    std::vector<std::string> changes;
    try {
      changes = trainer.resume(newest, allow_changes ? train::resume_changes::allow : train::resume_changes::refuse);
    } catch (const error& e) {
      if (allow_changes || std::string_view(e.what()).find("this run's settings") == std::string_view::npos) throw;
      throw error(e.function(), e.argument(), std::string(e.what()) + "; --allow-changes continues with this run's settings");
    }
    if (!ranks_.lead()) return;
    for (const auto& change : changes) std::fprintf(stderr, "warning: --allow-changes: %s\n", change.c_str());
    const auto next = trainer.next_step();
    loss_log_.emplace(step_log::resume(out_ / "loss.csv", loss_header, next));
    throughput_log_.emplace(step_log::resume(out_ / "throughput.csv", throughput_header, next));
    std::fprintf(stderr, "resumed from %s at step %llu\n", newest.c_str(), static_cast<unsigned long long>(next));
    if (loss_log_->missing_rows() > 0)
      std::fprintf(stderr, "warning: %s lacks %llu of the rows before step %llu (edited or deleted by hand?)\n",
                   loss_log_->path().c_str(), static_cast<unsigned long long>(loss_log_->missing_rows()),
                   static_cast<unsigned long long>(next));
  }

  // One step's rows in both logs (rank 0's job; the other ranks do nothing).
  void log(const train::step_report& r) {
    if (!ranks_.lead()) return;
    loss_log_->append(r.step, log_number(r.loss) + ',' + log_number(r.lr) + ',' + log_number(r.grad_norm) + ',' +
                                  std::to_string(r.loss_tokens) + ',' + std::to_string(r.masked) + ',' +
                                  std::to_string(r.skipped ? 1 : 0));
    throughput_log_->append(r.step, log_number(r.seconds) + ',' + log_number(r.tokens_per_second));
  }

  // A checkpoint: every logged row of the steps it covers on disk first, then the checkpoint as
  // one unit (trainer.save(series)). Distributed: every rank calls it (the state is gathered);
  // rank 0 writes and returns the entry, the others an empty one.
  template <class Trainer>
  train::checkpoint_entry checkpoint(Trainer& trainer) {
    if (ranks_.lead()) {
      loss_log_->sync();
      throughput_log_->sync();
    }
    if (!ranks_.distributed()) return trainer.save(*checkpoints_);
    return trainer.save(ranks_.lead() ? &*checkpoints_ : nullptr).value_or(train::checkpoint_entry{});
  }

 private:
  static std::filesystem::path open(const char* program, const std::string& out) {
    const std::filesystem::path path(out);
    std::error_code ec;
    std::filesystem::create_directories(path, ec);
    if (ec || !std::filesystem::is_directory(path))
      throw_argument_error(program, "--out", out,
                           "a directory that exists or can be created" + (ec ? " (" + ec.message() + ")" : std::string()));
    return path;
  }

  const char* program_;
  std::filesystem::path out_;
  dist::rank0_agreement ranks_;
  std::optional<train::checkpoint_series> checkpoints_;  // rank 0's
  std::optional<step_log> loss_log_, throughput_log_;
};

}  // namespace meap::run
