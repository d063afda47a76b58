// meap/train/pretrain.hpp: one MEAP (or plain NTP) pretraining step on the CPU, so that a trainer
// is a short loop:
//
//   meap::nn::llama_model<float> model(config);
//   model.initialize(seed);
//   meap::train::pretrainer<float> trainer(model, meap::masking::fixed_ratio{}, options);
//   for (...) { dataset.sample_batch(cpu, seed, trainer.next_step(), tokens); auto r = trainer.step(tokens); }
//
// A step: mask the inputs with the policy (keyed by seed and step), forward, selective fused
// cross-entropy on the labels, backward, clip the global gradient norm, AdamW at the scheduled
// learning rate. A non-finite loss or gradient skips the update (parameters and optimizer state
// untouched), names the first offending parameter in the report, and still advances the step.
#pragma once

#include <meap/kernels/cross_entropy.hpp>
#include <meap/masking/apply.hpp>
#include <meap/masking/fixed_ratio.hpp>
#include <meap/nn/llama.hpp>
#include <meap/optim/adamw.hpp>
#include <meap/optim/clip.hpp>
#include <meap/optim/schedule.hpp>
#include <meap/train/checkpoint.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

namespace meap::train {

struct pretrain_options {
  adamw_config optimizer{};
  warmup_cosine_config schedule{3e-4, 3e-5, 0, 1000};
  double clip_norm = 1.0;  // max global gradient norm; <= 0 is rejected (use infinity for none)
  // Seed, mask id and exclusions for the masking policy; `step` is filled in by the trainer.
  masking::pretraining_options masking{};

  void validate() const {
    optimizer.validate();
    schedule.validate();
    check_argument(clip_norm > 0 && !std::isnan(clip_norm), "meap::train::pretrain_options", "clip_norm", clip_norm,
                   "a positive gradient norm bound (infinity to disable clipping)");
  }
};

struct step_report {
  std::uint64_t step = 0;     // the step this report is about
  double loss = 0.0;          // mean cross-entropy over the positions with a label
  double grad_norm = 0.0;     // global gradient norm before clipping
  double lr = 0.0;
  index_t tokens = 0;         // B * T input positions
  index_t loss_tokens = 0;    // positions whose label is not ignore_index
  index_t masked = 0;         // input positions replaced by mask_id
  double seconds = 0.0;
  double tokens_per_second = 0.0;
  bool skipped = false;       // true: non-finite loss or gradient, no update made
  std::string skip_reason;    // which value was not finite, and where
};

// Policy: a masking::pretraining_policy; a pretrainer built with std::nullopt trains plain NTP.
template <host_compute_type T, class Policy = masking::fixed_ratio>
class pretrainer {
 public:
  pretrainer(nn::llama_model<T>& model, std::optional<Policy> policy, const pretrain_options& options,
             std::uint64_t first_step = 0)
      : model_(model), policy_(policy), options_((options.validate(), options)), optimizer_(options.optimizer),
        schedule_(options.schedule), step_(first_step) {
    if (policy_) policy_->validate();
  }

  std::uint64_t next_step() const { return step_; }
  adamw<T>& optimizer() { return optimizer_; }
  const pretrain_options& options() const { return options_; }

  // tokens: (B, T + 1) int32, T <= max_seq. Runs step next_step() and advances it.
  step_report step(const tensor_view<const std::int32_t, cpu>& tokens) {
    constexpr std::string_view function = "meap::train::pretrainer::step";
    check_argument(tokens.rank() == 2 && tokens.size(1) >= 2, function, "tokens", "shape " + to_string(tokens.shape()),
                   "(B, T + 1) token ids with T >= 1");
    const auto start = std::chrono::steady_clock::now();
    step_report report;
    report.step = step_;
    report.lr = schedule_(static_cast<std::int64_t>(step_));
    const index_t B = tokens.size(0), L = tokens.size(1) - 1;

    // 1. Inputs and labels: masked by the policy, or the plain shifted pair.
    tensor<std::int32_t, cpu> input_ids, labels;
    if (policy_) {
      auto masking_options = options_.masking;
      masking_options.step = step_;
      auto batch = masking::apply(cpu{}, *policy_, tokens, masking_options);
      for (index_t i = 0; i < batch.mask.numel(); ++i) report.masked += batch.mask.data()[i];
      input_ids = std::move(batch.input_ids);
      labels = std::move(batch.labels);
    } else {
      input_ids = clone(cpu{}, tokens.slice(1, 0, L));
      labels = clone(cpu{}, tokens.slice(1, 1, L + 1));
      if (options_.masking.pad_id >= 0)
        for (index_t i = 0; i < labels.numel(); ++i)
          if (labels.data()[i] == options_.masking.pad_id) labels.data()[i] = ignore_index;
    }

    // 2. Forward, selective loss, backward.
    model_.zero_grad();
    const auto ctx = model_.forward(input_ids.view());
    tensor<T, cpu> d_hidden(cpu{}, ctx.hidden.shape());
    tensor<T, cpu> d_head(cpu{}, model_.head_weight().shape());
    const auto flat_labels = labels.view().reshape({B * L});
    const auto loss = linear_cross_entropy<T>(cpu{}, ctx.hidden.view(), model_.head_weight(), flat_labels,
                                              d_hidden.view(), d_head.view());
    report.loss = loss.loss;
    report.loss_tokens = loss.selected;
    report.tokens = B * L;
    if (!std::isfinite(loss.loss)) {
      report.skipped = true;
      report.skip_reason = "loss is " + meap::detail::value_to_string(loss.loss);
    } else {
      auto head_grad = model_.head_grad();
      for (index_t i = 0; i < head_grad.numel(); ++i) head_grad.data()[i] += d_head.data()[i];
      model_.backward(ctx, d_hidden.view());

      // 3. Clip, then update unless something is not finite.
      const auto params = model_.parameters();
      const std::span<const named_parameter<T, cpu>> param_span(params);
      const auto clip = clip_grad_norm(cpu{}, param_span, options_.clip_norm);
      report.grad_norm = clip.total_norm;
      if (!clip.finite) {
        report.skipped = true;
        const auto bad = first_nonfinite_gradient(cpu{}, param_span);
        report.skip_reason = bad ? "gradient of '" + bad->parameter + "' is " + meap::detail::value_to_string(bad->value) +
                                       " at element " + std::to_string(bad->index)
                                 : "gradient norm is " + meap::detail::value_to_string(clip.total_norm);
      } else {
        optimizer_.step(cpu{}, param_span, report.lr);
      }
    }
    ++step_;
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    report.tokens_per_second = report.seconds > 0 ? static_cast<double>(report.tokens) / report.seconds : 0.0;
    return report;
  }

  // Checkpoint / resume (see checkpoint.hpp): after resume(), the next step is the one an
  // uninterrupted run would take, bit for bit.
  void save(const std::filesystem::path& directory) {
    save_training_checkpoint(directory, model_, optimizer_, {step_, options_.masking.seed});
  }
  void resume(const std::filesystem::path& directory) {
    const auto state = load_training_checkpoint(directory, model_, optimizer_);
    if (state.seed != options_.masking.seed)
      throw_argument_error("meap::train::pretrainer::resume", "directory",
                           directory.string() + " (seed " + std::to_string(state.seed) + ")",
                           "a checkpoint of a run with this trainer's seed " + std::to_string(options_.masking.seed));
    step_ = state.next_step;
  }

 private:
  nn::llama_model<T>& model_;
  std::optional<Policy> policy_;
  pretrain_options options_;
  adamw<T> optimizer_;
  warmup_cosine schedule_;
  std::uint64_t step_;
};

}  // namespace meap::train
