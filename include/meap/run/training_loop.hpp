// meap/run/training_loop.hpp: the loop every trainer program runs, as a library call with a
// progress callback (the shape of mlx-lm's train(..., training_callback)):
//
//   meap::run::run_directory out("my_trainer", "run/", 3);
//   out.start(trainer, resume, allow_changes);
//   const auto result = meap::run::training_loop(trainer, out, {.total_steps = 1000, .checkpoint_every = 100},
//       [&](std::uint64_t step) { fill(step, tokens); return trainer.step(tokens.view()); },
//       [&](const meap::run::loop_progress& p) { std::fprintf(stderr, "\r%s", meap::run::format_progress(p).c_str()); });
//
// From trainer.next_step() (0, or the resumed step) to total_steps: one step, its rows in the
// logs, a line on stderr when a step was skipped (non-finite loss or gradient), the callback (rank
// 0 only), a checkpoint every checkpoint_every steps; then the final checkpoint.
#pragma once

#include <meap/run/progress.hpp>
#include <meap/run/run_directory.hpp>
#include <meap/train/pretrain.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace meap::run {

struct loop_options {
  std::uint64_t total_steps = 0;       // the loop ends when trainer.next_step() reaches it
  std::uint64_t checkpoint_every = 0;  // 0: only the final checkpoint
};

// What the callback sees after each step.
struct loop_progress {
  std::uint64_t step = 0;         // the step just taken (from 0)
  std::uint64_t total_steps = 0;
  const train::step_report* report = nullptr;
  double average_loss = 0;        // exponential moving average (weight 0.1) since this start
  double elapsed_seconds = 0;     // since this start (a resumed run counts from its resume)
  double eta_seconds = 0;
};

struct loop_result {
  double average_loss = 0;
  std::uint64_t skipped_steps = 0;       // steps without an update (non-finite loss or gradient)
  std::uint64_t steps_taken = 0;         // by this call (a resumed run took the rest before)
  train::checkpoint_entry final_checkpoint;  // rank 0's; empty on the others
};

// "step    12/200  loss 3.1416 (avg 3.2000)  lr 1.00e-03  |g| 0.512     6861 tok/s<extra>  ETA 0:00:04 "
inline std::string format_progress(const loop_progress& p, const std::string& extra = "") {
  char line[256];
  const auto& r = *p.report;
  std::snprintf(line, sizeof line, "step %6llu/%llu  loss %.4f (avg %.4f)  lr %.2e  |g| %.3f  %8.0f tok/s%s  ETA %s ",
                static_cast<unsigned long long>(p.step + 1), static_cast<unsigned long long>(p.total_steps), r.loss,
                p.average_loss, r.lr, r.grad_norm, r.tokens_per_second, extra.c_str(),
                format_duration(p.eta_seconds).c_str());
  return line;
}

// `step(index)` runs optimizer step `index` on `trainer` and returns its report; `on_step` gets a
// loop_progress on rank 0. Every rank of a distributed run calls it alike.
template <class Trainer, class Step, class OnStep>
loop_result training_loop(Trainer& trainer, run_directory& out, const loop_options& options, Step&& step,
                          OnStep&& on_step) {
  loop_result result;
  const auto start = std::chrono::steady_clock::now();
  const std::uint64_t first = trainer.next_step();
  while (trainer.next_step() < options.total_steps) {
    const std::uint64_t index = trainer.next_step();
    const train::step_report r = step(index);
    result.skipped_steps += r.skipped ? 1 : 0;
    ++result.steps_taken;
    if (r.skipped && out.lead())
      std::fprintf(stderr, "\nstep %llu skipped: %s\n", static_cast<unsigned long long>(index), r.skip_reason.c_str());
    out.log(r);
    result.average_loss = index == first ? r.loss : 0.9 * result.average_loss + 0.1 * r.loss;
    if (out.lead()) {
      loop_progress p;
      p.step = index;
      p.total_steps = options.total_steps;
      p.report = &r;
      p.average_loss = result.average_loss;
      p.elapsed_seconds = seconds_since(start);
      p.eta_seconds = p.elapsed_seconds / static_cast<double>(index + 1 - first) *
                      static_cast<double>(options.total_steps - index - 1);
      on_step(p);
    }
    if (options.checkpoint_every > 0 && (index + 1) % options.checkpoint_every == 0) (void)out.checkpoint(trainer);
  }
  result.final_checkpoint = out.checkpoint(trainer);
  return result;
}

}  // namespace meap::run
