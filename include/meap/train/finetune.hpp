// meap/train/finetune.hpp: MEAP (or plain NTP) supervised fine-tuning on any device. The
// fine-tuner is a batch builder in front of the pretrainer's step (pretrain.hpp): it turns
// (prompt, answer) pairs into rows with masking::duplicated_copy, packs them, and runs
// pretrainer::step(prepared_batch) on them.
//
//   auto data = meap::data::read_instruction_jsonl("train.jsonl", {.tokenizer = &spm, .max_length = 1024});
//   meap::train::finetune_options options{.mask_id = mask_id, .row_length = 1024, .rows_per_step = 8, .epochs = 3};
//   meap::train::finetuner tuner(model, std::move(data.examples), options);
//   while (!tuner.done()) auto report = tuner.step();
//
// finetune_plan holds the data side alone (rows, steps, batches; no model needed), finetuner
// adds the pretrainer that runs the steps and writes the checkpoints.
//
// Rows. Each example becomes the sequences masking::apply(duplicated_copy) builds with
// max_length = row_length (docs/finetune.md): objective meap: [P, A, P, A'] (layout concatenated,
// the paper) or [P, A] and [P, A'] (layout separate_rows, the official code) when the answer has
// more than copy.min_answer_tokens tokens, else [P, A]; objective ntp: always [P, A]. Labels sit
// on the answer of [P, A] (U_q) and on the masked tokens of the copy (U_m); positions restart at
// 0 in every sequence. A prompt is never truncated (an example whose prompt does not leave room
// for one answer token is refused at construction); answers are cut to fit.
//
// Epochs and steps. Epoch e visits every example once, in an order drawn from
// philox_stream(seed ^ finetune_order_salt, e) (or in file order without shuffling). Its
// sequences fill rows of row_length tokens in that order: packed, a sequence goes into the
// current row when it fits and starts a new row otherwise (each sequence is a segment: attention
// stays inside it, its positions start at 0, the tail of the row is padding with a segment of its
// own); padded, every sequence has a row of its own. Rows are taken rows_per_step at a time; the
// last step of an epoch is filled up with padding rows. Every step is a pure function of (data,
// options, step), so a resumed run builds the same batches and, through the pretrainer's
// checkpoints, takes the same steps bit for bit.
//
// Masks. The copy's mask of example i in epoch e is drawn from philox_stream(seed, i, e): a new
// mask every epoch, the same after a resume. (The official code draws each example's mask once
// for the whole run.)
//
// Loss. The mean cross-entropy over every labelled position of the step's rows (U_q and U_m
// alike), as the pretrainer normalizes: each labelled token weighs the same, so an example with
// a long answer weighs more than a short one, and packing does not change the loss (a packed
// row's loss is the sum of its sequences' losses).
#pragma once

#include <meap/data/instruction.hpp>
#include <meap/masking/duplicated_copy.hpp>
#include <meap/train/pretrain.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <numeric>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace meap::train {

// What the answers are trained with: MEAP's duplicated, partly masked copy, or plain next-token
// prediction on [P, A] (the baseline).
enum class finetune_objective : std::uint8_t { ntp, meap };

// Packed: several sequences share a row (segments); padded: one sequence per row.
enum class row_filling : std::uint8_t { packed, padded };

inline std::string_view objective_name(finetune_objective objective) {
  return objective == finetune_objective::meap ? "meap" : "ntp";
}
inline std::string_view filling_name(row_filling filling) { return filling == row_filling::packed ? "packed" : "padded"; }

// Mixed into the seed of each epoch's example order, so that the order and the masks (seed,
// example, epoch) never share a Philox key.
inline constexpr std::uint64_t finetune_order_salt = 0x6d6561702d6f7264ULL;  // "meap-ord"

struct finetune_options {
  finetune_objective objective = finetune_objective::meap;
  masking::duplicated_copy copy{};          // ratio, min_answer_tokens, layout (objective meap)
  std::uint64_t seed = 0;                   // the masks and each epoch's order
  std::int32_t mask_id = -1;                // the [MASK] token; required for objective meap
  std::int32_t pad_id = 0;                  // input id at padding positions (which carry no label)
  std::vector<std::int32_t> special_ids{};  // answer tokens never masked (EOS, end of turn)
  index_t row_length = 0;                   // L, the length of every row (1 .. max_seq)
  index_t rows_per_step = 8;                // G, rows in a step's global batch
  row_filling filling = row_filling::packed;
  bool shuffle = true;                      // a new example order each epoch
  std::uint32_t epochs = 1;                 // the run's length: the schedule ends with the last step
  // Optimizer, schedule, clipping, micro-batches (G must be a multiple), loss scaling and the
  // caller's run_metadata. Its masking field is filled in from the fields above, and
  // schedule.total_steps from the plan (every step of `epochs` epochs; warmup_steps is capped
  // at that).
  pretrain_options training{};

  void validate(const nn::llama_config& config) const {
    constexpr std::string_view function = "meap::train::finetune_options";
    if (objective == finetune_objective::meap) copy.validate();
    check_argument(row_length >= 1 && row_length <= config.max_seq, function, "row_length", row_length,
                   "a row length in [1, max_seq = " + std::to_string(config.max_seq) + "]");
    check_argument(rows_per_step >= 1, function, "rows_per_step", rows_per_step, "at least one row");
    check_argument(epochs >= 1, function, "epochs", epochs, "at least one epoch");
    check_argument(rows_per_step % training.micro_batches == 0, function, "rows_per_step", rows_per_step,
                   "a multiple of training.micro_batches = " + std::to_string(training.micro_batches));
    const auto in_vocabulary = [&](std::int32_t id) { return id >= 0 && id < config.vocab; };
    check_argument(in_vocabulary(pad_id), function, "pad_id", pad_id,
                   "a token id in [0, vocab = " + std::to_string(config.vocab) + ")");
    if (objective == finetune_objective::meap) {
      check_argument(in_vocabulary(mask_id), function, "mask_id", mask_id,
                     "the [MASK] token's id, in [0, vocab = " + std::to_string(config.vocab) +
                         ") (a model without one gets it from meap::nn::grow_vocabulary)");
      check_argument(mask_id != pad_id, function, "mask_id", mask_id, "an id other than pad_id");
      for (const std::int32_t special : special_ids)
        check_argument(special != mask_id, function, "mask_id", mask_id, "an id that is not in special_ids");
    }
    auto checked_training = training;
    checked_training.schedule.total_steps = std::max<std::int64_t>(training.schedule.warmup_steps, 1);
    checked_training.validate();  // total_steps comes from the plan
  }
};

// One sequence of an epoch's plan: sub-row `part` (0, or 1 for the masked copy in layout
// separate_rows) of example `example`, `length` tokens.
struct finetune_piece {
  index_t example = 0;
  index_t part = 0;
  index_t length = 0;
};

// The host rows of one step, as pretrainer::step(prepared_batch) takes them: each (G, L).
struct finetune_batch {
  tensor<std::int32_t, cpu> input_ids, labels, position_ids, segment_ids;
  std::uint32_t epoch = 0;
  index_t step_in_epoch = 0;
  index_t examples = 0;    // distinct examples with a sequence in the batch
  index_t duplicated = 0;  // of which trained with a masked copy
  index_t masked = 0;      // input positions holding mask_id

  prepared_batch view() const {
    return {input_ids.view().as_const(), labels.view().as_const(), position_ids.view().as_const(),
            segment_ids.view().as_const(), masked};
  }
};

struct finetune_report : step_report {
  std::uint32_t epoch = 0;
  index_t step_in_epoch = 0;
  index_t examples = 0;
  index_t duplicated = 0;
};

// What a fine-tuning run trains on, step by step: the examples, their row shapes, each epoch's
// order and rows, and each step's batch. Needs no model (the config only checks ids and
// lengths), so a caller can count steps or inspect batches before allocating anything.
class finetune_plan {
 public:
  // examples: the training set (prompt and answer ids each non-empty and in [0, vocab)).
  finetune_plan(std::vector<data::instruction_example> examples, const finetune_options& options,
                const nn::llama_config& config)
      : options_(checked(options, config)),
        examples_(std::move(examples)),
        shapes_(plan_shapes(examples_, options_, config)) {}

  const finetune_options& options() const { return options_; }
  const std::vector<data::instruction_example>& examples() const { return examples_; }

  // Whether example i is trained with a masked copy (objective meap and a long enough answer).
  bool duplicated(index_t example) const { return shapes_.at(static_cast<std::size_t>(example)).duplicated; }

  // The rows of epoch `epoch`, in order, each a list of pieces.
  std::vector<std::vector<finetune_piece>> rows_of_epoch(std::uint32_t epoch) const {
    std::vector<std::vector<finetune_piece>> rows;
    index_t used = 0;
    for (const index_t example : order(epoch)) {
      const auto& shape = shapes_[static_cast<std::size_t>(example)];
      for (index_t part = 0; part < shape.rows; ++part) {
        if (rows.empty() || options_.filling == row_filling::padded || used + shape.length > options_.row_length) {
          rows.emplace_back();
          used = 0;
        }
        rows.back().push_back({example, part, shape.length});
        used += shape.length;
      }
    }
    return rows;
  }

  index_t steps_in_epoch(std::uint32_t epoch) const {
    while (steps_per_epoch_.size() <= epoch) {
      const auto rows = static_cast<index_t>(rows_of_epoch(static_cast<std::uint32_t>(steps_per_epoch_.size())).size());
      steps_per_epoch_.push_back((rows + options_.rows_per_step - 1) / options_.rows_per_step);
    }
    return steps_per_epoch_[epoch];
  }

  // Steps in the first `epochs` epochs; total_steps(): in options().epochs, the whole run.
  std::uint64_t total_steps(std::uint32_t epochs) const {
    std::uint64_t total = 0;
    for (std::uint32_t e = 0; e < epochs; ++e) total += static_cast<std::uint64_t>(steps_in_epoch(e));
    return total;
  }
  std::uint64_t total_steps() const { return total_steps(options_.epochs); }

  // The epoch a step belongs to and its index within that epoch.
  std::pair<std::uint32_t, index_t> locate(std::uint64_t step) const {
    std::uint32_t epoch = 0;
    for (;;) {
      const auto steps = static_cast<std::uint64_t>(steps_in_epoch(epoch));
      if (step < steps) return {epoch, static_cast<index_t>(step)};
      step -= steps;
      check_argument(epoch < std::numeric_limits<std::uint32_t>::max(), "meap::train::finetune_plan::locate", "step",
                     step, "a step within 2^32 epochs");
      ++epoch;
    }
  }

  // The host rows of step `step` (any step, run or not).
  finetune_batch batch(std::uint64_t step) const {
    const auto [epoch, in_epoch] = locate(step);
    if (!cached_rows_ || cached_rows_->first != epoch) cached_rows_.emplace(epoch, rows_of_epoch(epoch));
    const auto& rows = cached_rows_->second;
    const index_t G = options_.rows_per_step, L = options_.row_length;
    finetune_batch batch;
    batch.epoch = epoch;
    batch.step_in_epoch = in_epoch;
    batch.input_ids = full<std::int32_t>(cpu{}, dims{G, L}, options_.pad_id);
    batch.labels = full<std::int32_t>(cpu{}, dims{G, L}, ignore_index);
    batch.position_ids = zeros<std::int32_t>(cpu{}, dims{G, L});
    batch.segment_ids = zeros<std::int32_t>(cpu{}, dims{G, L});
    const auto input_ids = batch.input_ids.view();
    const auto labels = batch.labels.view();
    const auto position_ids = batch.position_ids.view();
    const auto segment_ids = batch.segment_ids.view();
    std::optional<masking::finetuning_example> built;  // the last example's rows (both parts of separate_rows)
    index_t built_example = -1;
    for (index_t r = 0; r < G; ++r) {
      const index_t row = in_epoch * G + r;
      std::int32_t segment = 0;
      index_t t0 = 0;
      if (row < static_cast<index_t>(rows.size())) {
        for (const auto& piece : rows[static_cast<std::size_t>(row)]) {
          if (piece.example != built_example) {
            built = build(piece.example, epoch);
            built_example = piece.example;
            ++batch.examples;
            batch.duplicated += built->duplicated ? 1 : 0;
          }
          for (index_t t = 0; t < piece.length; ++t) {
            input_ids(r, t0 + t) = built->input_ids.view()(piece.part, t);
            labels(r, t0 + t) = built->labels.view()(piece.part, t);
            position_ids(r, t0 + t) = built->position_ids.view()(piece.part, t);
            segment_ids(r, t0 + t) = segment;
            batch.masked += built->mask.view()(piece.part, t);
          }
          t0 += piece.length;
          ++segment;
        }
      }
      // The row's tail (or a whole padding row): a segment of its own, positions from 0.
      for (index_t t = t0; t < L; ++t) {
        segment_ids(r, t) = segment;
        position_ids(r, t) = static_cast<std::int32_t>(t - t0);
      }
    }
    return batch;
  }

  // "N examples, fnv1a64 X": FNV-1a over every example's lengths and ids (recorded with
  // checkpoints, so that a resume on other data is refused).
  std::string fingerprint() const {
    std::uint64_t hash = 0xcbf29ce484222325ULL;
    const auto mix = [&](std::uint64_t value) {
      for (int b = 0; b < 8; ++b) {
        hash ^= (value >> (8 * b)) & 0xff;
        hash *= 0x100000001b3ULL;
      }
    };
    for (const auto& e : examples_) {
      mix(e.prompt.size());
      for (const std::int32_t id : e.prompt) mix(static_cast<std::uint32_t>(id));
      mix(e.answer.size());
      for (const std::int32_t id : e.answer) mix(static_cast<std::uint32_t>(id));
    }
    char text[64];
    std::snprintf(text, sizeof text, "%zu examples, fnv1a64 %016llx", examples_.size(),
                  static_cast<unsigned long long>(hash));
    return text;
  }

 private:
  static const finetune_options& checked(const finetune_options& options, const nn::llama_config& config) {
    options.validate(config);
    return options;
  }

  // The policy the rows are built with: ntp is duplicated_copy that never duplicates.
  masking::duplicated_copy policy() const {
    if (options_.objective == finetune_objective::meap) return options_.copy;
    masking::duplicated_copy plain = options_.copy;
    plain.min_answer_tokens = std::numeric_limits<std::int32_t>::max();
    return plain;
  }

  static std::vector<masking::finetuning_shape> plan_shapes(const std::vector<data::instruction_example>& examples,
                                                            const finetune_options& options,
                                                            const nn::llama_config& config) {
    constexpr std::string_view function = "meap::train::finetuner";
    check_argument(!examples.empty(), function, "examples", "0 examples", "at least one (prompt, answer) example");
    check_argument(examples.size() <= std::numeric_limits<std::uint32_t>::max(), function, "examples",
                   std::to_string(examples.size()) + " examples", "at most 2^32 - 1 examples");
    masking::duplicated_copy plan_policy = options.copy;
    if (options.objective == finetune_objective::ntp)
      plan_policy.min_answer_tokens = std::numeric_limits<std::int32_t>::max();
    std::vector<masking::finetuning_shape> shapes;
    shapes.reserve(examples.size());
    for (std::size_t i = 0; i < examples.size(); ++i) {
      const auto& e = examples[i];
      const auto where = [&] {
        return "example " + std::to_string(i) + (e.line != 0 ? " (line " + std::to_string(e.line) + ")" : std::string());
      };
      check_argument(!e.prompt.empty(), function, "examples", where() + " with an empty prompt",
                     "a non-empty prompt (the first answer token is predicted from the last prompt token)");
      check_argument(!e.answer.empty(), function, "examples", where() + " with an empty answer",
                     "a non-empty answer (an empty answer has nothing to learn)");
      const auto p = static_cast<index_t>(e.prompt.size());
      check_argument(p < options.row_length, function, "examples",
                     where() + " with a " + std::to_string(p) + "-token prompt",
                     "a prompt shorter than row_length = " + std::to_string(options.row_length) +
                         " (prompts are never truncated; read the data with max_length = row_length to skip such "
                         "examples)");
      for (const auto* ids : {&e.prompt, &e.answer})
        for (const std::int32_t id : *ids) {
          check_argument(id >= 0 && id < config.vocab, function, "examples", where() + " with token id " + std::to_string(id),
                         "token ids in [0, vocab = " + std::to_string(config.vocab) + ")");
          if (options.objective == finetune_objective::meap)
            check_argument(id != options.mask_id, function, "examples", where() + " with token id " + std::to_string(id),
                           "no occurrence of mask_id = " + std::to_string(options.mask_id) +
                               " (it must be a token of its own, not a real one)");
        }
      shapes.push_back(masking::plan_rows(plan_policy, p, static_cast<index_t>(e.answer.size()), options.row_length));
    }
    return shapes;
  }

  // Epoch `epoch`'s example order.
  std::vector<index_t> order(std::uint32_t epoch) const {
    std::vector<index_t> indices(examples_.size());
    std::iota(indices.begin(), indices.end(), index_t{0});
    if (options_.shuffle) {
      philox_stream random(options_.seed ^ finetune_order_salt, epoch);
      for (std::size_t i = indices.size(); i > 1; --i)  // Fisher-Yates
        std::swap(indices[i - 1], indices[random.next_below(static_cast<std::uint32_t>(i))]);
    }
    return indices;
  }

  masking::finetuning_example build(index_t example, std::uint32_t epoch) const {
    const auto& e = examples_[static_cast<std::size_t>(example)];
    masking::finetuning_options o;
    o.seed = options_.seed;
    o.example = static_cast<std::uint64_t>(example);
    o.epoch = epoch;
    o.special_ids = options_.special_ids;
    o.max_length = options_.row_length;
    if (options_.objective == finetune_objective::meap) {
      o.mask_id = options_.mask_id;
    } else {  // never drawn: plain rows hold no mask
      o.mask_id = 0;
      o.special_ids.clear();
      o.mask_id_must_be_unused = false;
    }
    const tensor_view<const std::int32_t, cpu> prompt(e.prompt.data(), dims{static_cast<index_t>(e.prompt.size())});
    const tensor_view<const std::int32_t, cpu> answer(e.answer.data(), dims{static_cast<index_t>(e.answer.size())});
    return masking::apply(cpu{}, policy(), prompt, answer, o);
  }

  finetune_options options_;
  std::vector<data::instruction_example> examples_;
  std::vector<masking::finetuning_shape> shapes_;
  // Derived from the data and options alone: steps per epoch, and the rows of the epoch last built.
  mutable std::vector<index_t> steps_per_epoch_;
  mutable std::optional<std::pair<std::uint32_t, std::vector<std::vector<finetune_piece>>>> cached_rows_;
};

template <class P, device Device>
class finetuner {
 public:
  using model_type = nn::llama_model<P, Device>;

  // first_step: the step to run next (0 for a new run; resume() sets it from a checkpoint).
  finetuner(model_type& model, std::vector<data::instruction_example> examples, const finetune_options& options,
            std::uint64_t first_step = 0)
      : plan_(std::move(examples), options, model.config()),
        trainer_(model, std::nullopt, training_options(plan_), first_step) {}

  const finetune_plan& plan() const { return plan_; }
  const finetune_options& options() const { return plan_.options(); }
  pretrainer<P, Device>& trainer() { return trainer_; }
  std::uint64_t next_step() const { return trainer_.next_step(); }
  std::uint64_t total_steps() const { return plan_.total_steps(); }
  bool done() const { return next_step() >= total_steps(); }

  // Runs step next_step() and advances it.
  finetune_report step() {
    const auto rows = plan_.batch(trainer_.next_step());
    finetune_report report;
    static_cast<step_report&>(report) = trainer_.step(rows.view());
    report.epoch = rows.epoch;
    report.step_in_epoch = rows.step_in_epoch;
    report.examples = rows.examples;
    report.duplicated = rows.duplicated;
    return report;
  }

  // Checkpoints: the pretrainer's (weights, optimizer, step, run settings including the
  // fine-tuning options and a fingerprint of the data, so that resuming on other data or with
  // other options is refused unless allowed).
  // Data parallel (pretrainer::distribute): every rank builds the same global batch from the plan
  // and trains its rows of it. Before the first step and before resume().
  void distribute(dist::process_group<Device>& group, dist::sharding sharding = dist::sharding::replicated,
                  std::size_t bucket_bytes = std::size_t{25} << 20) {
    trainer_.distribute(group, sharding, bucket_bytes);
  }

  void save(const std::filesystem::path& directory) { trainer_.save(directory); }
  checkpoint_entry save(checkpoint_series& series) { return trainer_.save(series); }
  // Distributed: the series on rank 0, nullptr on the others (pretrainer::save).
  std::optional<checkpoint_entry> save(checkpoint_series* series) { return trainer_.save(series); }
  std::vector<std::string> resume(const std::filesystem::path& directory, resume_changes changes = resume_changes::refuse) {
    return trainer_.resume(directory, changes);
  }
  std::vector<std::string> resume(const checkpoint_series& series, resume_changes changes = resume_changes::refuse) {
    return trainer_.resume(series, changes);
  }

 private:
  // The pretrainer's options: the caller's training options, the schedule's length from the plan,
  // and the masking identity and fine-tuning settings recorded so that a resume compares them.
  static pretrain_options training_options(const finetune_plan& plan) {
    const auto& o = plan.options();
    pretrain_options t = o.training;
    t.schedule.total_steps = static_cast<std::int64_t>(plan.total_steps());
    t.schedule.warmup_steps = std::min(t.schedule.warmup_steps, t.schedule.total_steps);
    t.masking.seed = o.seed;
    t.masking.mask_id = o.mask_id;
    t.masking.pad_id = o.pad_id;
    t.masking.special_ids = o.special_ids;
    auto& m = t.run_metadata;
    m["finetune.objective"] = std::string(objective_name(o.objective));
    if (o.objective == finetune_objective::meap) m["finetune.copy"] = o.copy.describe();
    m["finetune.row_length"] = std::to_string(o.row_length);
    m["finetune.rows_per_step"] = std::to_string(o.rows_per_step);
    m["finetune.filling"] = std::string(filling_name(o.filling));
    m["finetune.shuffle"] = o.shuffle ? "true" : "false";
    m["finetune.epochs"] = std::to_string(o.epochs);
    m["finetune.data"] = plan.fingerprint();
    return t;
  }

  finetune_plan plan_;
  pretrainer<P, Device> trainer_;
};

template <class P, class Device>
finetuner(nn::llama_model<P, Device>&, std::vector<data::instruction_example>, const finetune_options&,
          std::uint64_t = 0) -> finetuner<P, Device>;

}  // namespace meap::train
