// meap/train/pretrain.hpp: one MEAP (or plain NTP) pretraining step on any device, so that a
// trainer is a short loop:
//
//   meap::nn::llama_model<meap::bf16_mixed, meap::cuda> model(config, meap::cuda{stream});
//   model.initialize(seed);
//   meap::train::pretrainer trainer(model, meap::masking::fixed_ratio{}, options);
//   for (...) { dataset.sample_batch(cpu, seed, trainer.next_step(), tokens); auto r = trainer.step(tokens); }
//
// A step takes a global batch of host tokens (G, T + 1) as options.micro_batches micro-batches of
// B = G / micro_batches rows (gradient accumulation). For each micro-batch: mask the inputs on the
// host with the policy (keyed by seed, step, micro-batch and row), upload them (pinned, without
// waiting, on CUDA), forward, selective fused cross-entropy, backward, adding to the gradients.
// Then the global gradient norm, its clip factor and the AdamW update, which the device skips when
// the loss or a gradient is not finite or a token id was invalid. The loss is the mean over every
// labelled position of the global batch: each micro-batch's cross-entropy divides its summed row
// losses, and their gradients, by the global batch's count of labelled positions (docs/optim.md).
//
// On meap::cuda nothing in a step waits for the GPU except the one copy of the step's status
// (loss, gradient norm, update decision, deferred checks) that builds the report; token ids are
// checked on the device and reported there. A skipped update (non-finite values) names the first
// offending parameter in the report and still advances the step; an invalid token id throws
// meap::error after the step, with nothing updated and the step not advanced. fp16 training scales
// the loss dynamically (options.loss_scaling).
//
// step(prepared_batch) runs the same step on rows whose inputs, labels, positions and segments
// the caller built (no masking policy): the fine-tuner (finetune.hpp) is such a batch builder.
//
// Data parallel (docs/distributed.md): after distribute(group), every rank is handed the same
// global batch and trains its rows [r G / N, (r + 1) G / N), masked by their global row index,
// so N ranks see exactly the batch and the masks one rank would; the loss is divided by the
// global count of labelled positions, the gradients summed over the ranks (all-reduce, or
// reduce-scatter under ZeRO-1, which then all-gathers the updated parameters), and every rank
// reports the same numbers. Checkpoints hold the whole state and are written by rank 0; any
// number of ranks resumes from them.
#pragma once

#include <meap/core/deferred_checks.hpp>
#include <meap/core/precision.hpp>
#include <meap/core/tensor.hpp>
#include <meap/dist/agreement.hpp>
#include <meap/dist/process_group.hpp>
#include <meap/kernels/cross_entropy.hpp>
#include <meap/masking/apply.hpp>
#include <meap/masking/fixed_ratio.hpp>
#include <meap/nn/llama.hpp>
#include <meap/optim/adamw.hpp>
#include <meap/optim/clip.hpp>
#include <meap/optim/schedule.hpp>
#include <meap/optim/status.hpp>
#include <meap/train/checkpoint.hpp>
#include <meap/train/checkpoint_series.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace meap::train {

// Dynamic loss scaling for fp16 (as torch.cuda.amp.GradScaler): the loss gradient is multiplied
// by `scale` so that small gradients survive half's range; a step whose gradients overflow is
// skipped and the scale multiplied by `backoff`; after `growth_interval` clean steps in a row it
// is multiplied by `growth`. Powers of two keep the unscaling exact. Ignored unless the compute
// type is half.
struct loss_scaling_config {
  double initial = 65536.0;
  double growth = 2.0;
  double backoff = 0.5;
  std::int64_t growth_interval = 2000;
  double min_scale = 1.0;

  void validate() const {
    constexpr std::string_view function = "meap::train::loss_scaling_config";
    const auto power_of_two = [](double x) {
      int exponent = 0;
      return std::isfinite(x) && x > 0 && std::frexp(x, &exponent) == 0.5;
    };
    check_argument(power_of_two(initial), function, "initial", initial, "a power of two");
    check_argument(power_of_two(growth) && growth > 1, function, "growth", growth, "a power of two above 1");
    check_argument(power_of_two(backoff) && backoff < 1, function, "backoff", backoff, "a power of two below 1");
    check_argument(growth_interval >= 1, function, "growth_interval", growth_interval, "at least one step");
    check_argument(power_of_two(min_scale) && min_scale <= initial, function, "min_scale", min_scale,
                   "a power of two no larger than initial");
  }
};

struct pretrain_options {
  adamw_config optimizer{};
  warmup_cosine_config schedule{3e-4, 3e-5, 0, 1000};
  double clip_norm = 1.0;  // max global gradient norm; <= 0 is rejected (use infinity for none)
  // Seed, mask id and exclusions for the masking policy; `step` and `micro_batch` are filled in by
  // the trainer.
  masking::pretraining_options masking{};
  // Micro-batches per step: the global batch's rows are split into this many equal parts, run one
  // after the other, their gradients summed (gradient accumulation).
  index_t micro_batches = 1;
  loss_scaling_config loss_scaling{};
  // The caller's own settings that decide the run (data file, batch size, sequence length, ...):
  // stored with every checkpoint beside the trainer's and compared on resume.
  std::map<std::string, std::string> run_metadata{};

  void validate() const {
    optimizer.validate();
    schedule.validate();
    loss_scaling.validate();
    check_argument(clip_norm > 0 && !std::isnan(clip_norm), "meap::train::pretrain_options", "clip_norm", clip_norm,
                   "a positive gradient norm bound (infinity to disable clipping)");
    check_argument(micro_batches >= 1 && micro_batches <= static_cast<index_t>(masking::max_micro_batches),
                   "meap::train::pretrain_options", "micro_batches", micro_batches,
                   "between 1 and " + std::to_string(masking::max_micro_batches));
  }
};

struct step_report {
  std::uint64_t step = 0;     // the step this report is about
  double loss = 0.0;          // mean cross-entropy over the positions with a label
  double grad_norm = 0.0;     // global gradient norm before clipping
  double lr = 0.0;
  index_t tokens = 0;         // G * T input positions
  index_t loss_tokens = 0;    // positions whose label is not ignore_index
  index_t masked = 0;         // input positions replaced by mask_id
  index_t micro_batches = 1;
  double loss_scale = 1.0;    // fp16: the scale this step ran with
  double seconds = 0.0;
  double tokens_per_second = 0.0;
  bool skipped = false;       // true: non-finite loss or gradient, no update made
  std::string skip_reason;    // which value was not finite, and where
};

// A batch whose inputs and labels the caller built: fine-tuning rows (finetune.hpp), packed
// documents, any objective that is a selective next-token loss. No masking policy runs.
//   input_ids    (G, L) token ids, G a multiple of options().micro_batches, L <= max_seq
//   labels       (G, L) the target of the logits at each position, or ignore_index
//   position_ids (G, L) optional RoPE positions (default 0 .. L - 1 in every row)
//   segment_ids  (G, L) optional document ids: attention stays within equal ids
//   masked       how many inputs hold [MASK] (reported only)
struct prepared_batch {
  tensor_view<const std::int32_t, cpu> input_ids;
  tensor_view<const std::int32_t, cpu> labels;
  tensor_view<const std::int32_t, cpu> position_ids{};
  tensor_view<const std::int32_t, cpu> segment_ids{};
  index_t masked = 0;
};

// What pretrainer::resume does when the checkpoint's run differs from the resuming one (other
// learning rate, policy, seed, RoPE base, ...; see pretrainer::run_settings).
enum class resume_changes {
  refuse,  // throw meap::error listing every difference (the default)
  allow,   // continue with the new settings; resume() returns the differences
};

// P: the model's precision; Device: meap::cpu or meap::cuda (the model's device and stream);
// Policy: a masking::pretraining_policy (a pretrainer built with std::nullopt trains plain NTP).
template <class P, device Device, class Policy = masking::fixed_ratio>
class pretrainer {
 public:
  using model_type = nn::llama_model<P, Device>;
  using T = typename P::compute_t;
  using G = typename P::grad_t;

  pretrainer(model_type& model, std::optional<Policy> policy, const pretrain_options& options,
             std::uint64_t first_step = 0)
      : model_(model),
        device_(model.device()),
        policy_(policy),
        options_((options.validate(), options)),
        optimizer_(options.optimizer),
        schedule_(options.schedule),
        step_(first_step),
        loss_scale_(P::loss_scaling ? options.loss_scaling.initial : 1.0) {
    if (policy_) policy_->validate();
    status_values_ = tensor<double, Device>(device_, dims{status_value_count});
    status_checks_ = tensor<std::uint64_t, Device>(device_, dims{options_.micro_batches * deferred_check_count});
    report_values_ = host_staging<double, Device>(device_, dims{status_value_count});
    report_checks_ = host_staging<std::uint64_t, Device>(device_, dims{options_.micro_batches * deferred_check_count});
    optimizer_.prepare(device_, model_.store());
    synchronize(device_);  // the segment table's upload; no step waits for it
  }

  std::uint64_t next_step() const { return step_; }
  adamw<P, Device>& optimizer() { return optimizer_; }

  // Trains as one rank of `group` from now on (see the top of this file); before the first step,
  // and before resume(). Rank 0's parameters are copied to every rank first, so the ranks start
  // equal even if their initializations differed. `group` must outlive the trainer.
  //
  // Replicated, on a group that overlaps (NCCL), the last micro-batch's backward pass starts the
  // sums of finished gradients in buckets of at least `bucket_bytes` (as PyTorch DDP's 25 MiB)
  // while the earlier layers still run.
  void distribute(dist::process_group<Device>& group, dist::sharding sharding = dist::sharding::replicated,
                  std::size_t bucket_bytes = std::size_t{25} << 20) {
    constexpr std::string_view function = "meap::train::pretrainer::distribute";
    check_argument(group_ == nullptr, function, "group", "a second group", "one call per trainer");
    check_argument(steps_run_ == 0, function, "this", "a trainer that has run " + std::to_string(steps_run_) + " step(s)",
                   "a call before the first step");
    const int ranks = group.size();
    check_argument(static_cast<std::uint64_t>(ranks) * static_cast<std::uint64_t>(options_.micro_batches) <=
                       masking::max_micro_batches,
                   function, "group", std::to_string(ranks) + " ranks x " + std::to_string(options_.micro_batches) +
                                          " micro-batches",
                   "at most " + std::to_string(masking::max_micro_batches) + " micro-batches over all ranks");
    check_argument(bucket_bytes >= 1, function, "bucket_bytes", "0", "a positive bucket size");
    group_ = &group;
    sharding_ = sharding;
    bucket_bytes_ = bucket_bytes;
    auto& store = model_.store();
    const index_t n = store.flat_size();
    bounds_ = dist::shard_bounds(n, ranks);
    // Rank 0's parameters everywhere: an all-gather in which rank 0 owns every element.
    std::vector<index_t> from_rank0(static_cast<std::size_t>(ranks) + 1, n);
    from_rank0[0] = 0;
    group.all_gather(device_, to_any(store.master_flat()), from_rank0);
    store.refresh_compute(device_);
    if (sharding == dist::sharding::zero1) {
      optimizer_.reset();
      optimizer_.shard(bounds_[static_cast<std::size_t>(group.rank())], bounds_[static_cast<std::size_t>(group.rank()) + 1]);
      optimizer_.prepare(device_, store);
      shard_sums_ = zeros<double>(device_, dims{ranks});
    }
    group.synchronize(device_);
  }
  // The group of distribute(), or nullptr.
  dist::process_group<Device>* group() const noexcept { return group_; }
  dist::sharding sharding() const noexcept { return sharding_; }
  const pretrain_options& options() const { return options_; }
  double loss_scale() const { return loss_scale_; }

  // tokens: (G, T + 1) int32 host memory, G a multiple of options().micro_batches, T <= max_seq.
  // segment_ids (optional): (G, T + 1) or (G, T) document ids of packed rows; attention stays
  // within a document and the masking policy treats each document's last input as the row's.
  // Runs step next_step() and advances it.
  step_report step(const tensor_view<const std::int32_t, cpu>& tokens,
                   const tensor_view<const std::int32_t, cpu>& segment_ids = {}) {
    constexpr std::string_view function = "meap::train::pretrainer::step";
    check_argument(tokens.rank() == 2 && tokens.size(1) >= 2 && tokens.size(0) >= 1, function, "tokens",
                   "shape " + to_string(tokens.shape()), "(G, T + 1) token ids with G >= 1 and T >= 1");
    const index_t M = options_.micro_batches, rows = tokens.size(0), L = tokens.size(1) - 1;
    check_argument(rows % (M * ranks()) == 0, function, "tokens", "shape " + to_string(tokens.shape()),
                   "a row count that is a multiple of micro_batches = " + std::to_string(M) +
                       (ranks() > 1 ? " times the " + std::to_string(ranks()) + " ranks" : std::string()));
    check_argument(L <= model_.config().max_seq, function, "tokens", "length T = " + std::to_string(L),
                   "T <= max_seq = " + std::to_string(model_.config().max_seq));
    if (segment_ids.rank() != 0)
      check_argument(segment_ids.shape() == tokens.shape() || segment_ids.shape() == dims{rows, L}, function,
                     "segment_ids", "shape " + to_string(segment_ids.shape()),
                     "shape " + to_string(tokens.shape()) + " or " + to_string(dims{rows, L}));
    check_ids_everywhere(function, "tokens", tokens);
    const auto start = std::chrono::steady_clock::now();
    step_report report = begin_report(rows, L);
    // This rank's rows of the global batch, as M micro-batches of B rows; micro-batch m of rank r
    // is micro-batch r M + m of the step, so its masks are keyed by the rows' global indices.
    const index_t local = rows / ranks(), first = local * rank(), B = local / M;
    const auto mine = [&](const auto& view) { return view.slice(0, first, first + local); };
    const auto local_tokens = mine(tokens);
    const auto local_segments = segment_ids.rank() != 0 ? mine(segment_ids) : segment_ids;

    // 1. On the host, before any device work (so that bad batches throw with nothing changed):
    //    inputs, labels and masks of every micro-batch.
    input_ids_.reshape(dims{local, L});
    labels_.reshape(dims{local, L});
    mask_.reshape(dims{local, L});
    if (segment_ids.rank() != 0) {
      segments_.reshape(dims{local, L});
      copy(cpu{}, local_segments.slice(1, 0, L), segments_.view());
    }
    for (index_t m = 0; m < M; ++m) {
      const auto part = [&](const auto& view) { return view.slice(0, m * B, (m + 1) * B); };
      make_inputs(part(local_tokens), segment_ids.rank() != 0 ? part(local_segments) : local_segments,
                  static_cast<std::uint32_t>(rank() * M + m), part(input_ids_.view()), part(labels_.view()),
                  part(mask_.view()), report.masked);
    }
    return run_staged(report, false, segment_ids.rank() != 0, start);
  }

  // Runs step next_step() on `batch` and advances it; the loss is the mean over its labelled
  // positions, as in step(tokens).
  step_report step(const prepared_batch& batch) {
    constexpr std::string_view function = "meap::train::pretrainer::step (prepared_batch)";
    const auto& ids = batch.input_ids;
    check_argument(ids.rank() == 2 && ids.size(0) >= 1 && ids.size(1) >= 1, function, "batch.input_ids",
                   "shape " + to_string(ids.shape()), "(G, L) token ids with G >= 1 and L >= 1");
    const index_t M = options_.micro_batches, rows = ids.size(0), L = ids.size(1);
    check_argument(rows % (M * ranks()) == 0, function, "batch.input_ids", "shape " + to_string(ids.shape()),
                   "a row count that is a multiple of micro_batches = " + std::to_string(M) +
                       (ranks() > 1 ? " times the " + std::to_string(ranks()) + " ranks" : std::string()));
    check_argument(L <= model_.config().max_seq, function, "batch.input_ids", "length L = " + std::to_string(L),
                   "L <= max_seq = " + std::to_string(model_.config().max_seq));
    const auto same_shape = [&](const tensor_view<const std::int32_t, cpu>& view, const char* name, bool optional) {
      if (optional && view.rank() == 0) return;
      check_argument(view.shape() == ids.shape(), function, name, "shape " + to_string(view.shape()),
                     "the shape of batch.input_ids, " + to_string(ids.shape()));
    };
    same_shape(batch.labels, "batch.labels", false);
    same_shape(batch.position_ids, "batch.position_ids", true);
    same_shape(batch.segment_ids, "batch.segment_ids", true);
    check_argument(batch.masked >= 0, function, "batch.masked", batch.masked, "a non-negative count");
    const std::int64_t vocab = model_.config().vocab;
    for (index_t r = 0; r < rows; ++r)
      for (index_t t = 0; t < L; ++t) {
        const std::int32_t label = batch.labels(r, t);
        if (label != ignore_index && (label < 0 || label >= vocab))
          throw_argument_error(function, "batch.labels",
                               std::to_string(label) + " at (" + std::to_string(r) + ", " + std::to_string(t) + ")",
                               "ignore_index (" + std::to_string(ignore_index) + ") or a token id in [0, " +
                                   std::to_string(vocab) + ")");
        if (batch.position_ids.rank() != 0) {
          const std::int32_t position = batch.position_ids(r, t);
          if (position < 0 || position >= model_.config().max_seq)
            throw_argument_error(function, "batch.position_ids",
                                 std::to_string(position) + " at (" + std::to_string(r) + ", " + std::to_string(t) + ")",
                                 "a position in [0, max_seq = " + std::to_string(model_.config().max_seq) + ")");
        }
      }
    check_ids_everywhere(function, "batch.input_ids", ids);
    const auto start = std::chrono::steady_clock::now();
    step_report report = begin_report(rows, L);
    report.masked = rank() == 0 ? batch.masked : 0;  // the batch's count, added up over the ranks below
    // This rank's rows (all of them on one process); every rank checked the whole batch above,
    // so a bad batch throws on every rank alike, before any collective.
    const index_t local = rows / ranks(), first = local * rank();
    const auto stage = [&](auto& staging, const tensor_view<const std::int32_t, cpu>& view) {
      const auto mine = view.slice(0, first, first + local);
      staging.reshape(mine.shape());
      copy(cpu{}, mine, staging.view());
    };
    stage(input_ids_, ids);
    stage(labels_, batch.labels);
    if (batch.position_ids.rank() != 0) stage(positions_, batch.position_ids);
    if (batch.segment_ids.rank() != 0) stage(segments_, batch.segment_ids);
    return run_staged(report, batch.position_ids.rank() != 0, batch.segment_ids.rank() != 0, start);
  }

  // The settings that decide this run's trajectory, name -> value: precision, masking policy,
  // optimizer, schedule, clipping, masking seed and ids, micro-batches, loss scaling, and
  // options().run_metadata under "run.<name>". Stored with every checkpoint; resume() compares.
  nlohmann::json run_settings() const {
    nlohmann::json j = nlohmann::json::object();
    j["precision"] = std::string(precision_name<P>());
    j["policy"] = describe_policy();
    const auto& o = options_;
    j["optimizer.lr"] = o.optimizer.lr;
    j["optimizer.beta1"] = o.optimizer.beta1;
    j["optimizer.beta2"] = o.optimizer.beta2;
    j["optimizer.eps"] = o.optimizer.eps;
    j["optimizer.weight_decay"] = o.optimizer.weight_decay;
    j["schedule.peak_lr"] = o.schedule.peak_lr;
    j["schedule.min_lr"] = o.schedule.min_lr;
    j["schedule.warmup_steps"] = o.schedule.warmup_steps;
    j["schedule.total_steps"] = o.schedule.total_steps;
    j["clip_norm"] = std::isinf(o.clip_norm) ? nlohmann::json("inf") : nlohmann::json(o.clip_norm);
    j["masking.seed"] = o.masking.seed;
    j["masking.mask_id"] = o.masking.mask_id;
    j["masking.pad_id"] = o.masking.pad_id;
    j["masking.special_ids"] = o.masking.special_ids;
    j["masking.mask_last_position"] = o.masking.mask_last_position;
    j["micro_batches"] = o.micro_batches;
    if (P::loss_scaling) {
      j["loss_scaling.initial"] = o.loss_scaling.initial;
      j["loss_scaling.growth"] = o.loss_scaling.growth;
      j["loss_scaling.backoff"] = o.loss_scaling.backoff;
      j["loss_scaling.growth_interval"] = o.loss_scaling.growth_interval;
      j["loss_scaling.min_scale"] = o.loss_scaling.min_scale;
    }
    for (const auto& [name, value] : o.run_metadata) j["run." + name] = value;
    return j;
  }

  // Checkpoint / resume (see checkpoint.hpp): after resume(), the next step is the one an
  // uninterrupted run would take, bit for bit, on the same device.
  //
  // save(directory) writes the checkpoint's files into `directory` one after the other;
  // save(series) commits them as one unit (checkpoint_series.hpp) and is what a run that must
  // survive a kill uses.
  //
  // Distributed (distribute()): every rank calls save (ZeRO-1 gathers the moments), rank 0
  // writes; the others learn whether that worked, so a failed write throws on every rank and no
  // rank waits for one that stopped. save(series) is for one process; a distributed trainer calls
  // save(&series) on rank 0 and save(nullptr) on the others.
  void save(const std::filesystem::path& directory) {
    if (group_ == nullptr) {
      save_training_checkpoint(directory, model_, optimizer_, state_to_save());
      return;
    }
    (void)save_distributed([&] {
      write_checkpoint(directory);
      return checkpoint_entry{step_, directory};
    });
  }
  checkpoint_entry save(checkpoint_series& series) {
    if (group_ != nullptr) return save(&series).value();
    return series.commit(step_, [&](const std::filesystem::path& directory) { save(directory); });
  }
  std::optional<checkpoint_entry> save(checkpoint_series* series) {
    constexpr std::string_view function = "meap::train::pretrainer::save";
    if (group_ == nullptr) {
      check_argument(series != nullptr, function, "series", "nullptr", "the run's checkpoint series");
      return save(*series);
    }
    check_argument((series != nullptr) == (rank() == 0), function, "series",
                   series != nullptr ? "a series on rank " + std::to_string(rank()) : std::string("nullptr on rank 0"),
                   "the run's series on rank 0 and nullptr on the other ranks (rank 0 writes)");
    return save_distributed([&] {
      return series->commit(step_, [&](const std::filesystem::path& directory) { write_checkpoint(directory); });
    });
  }

  // Restores the checkpoint in `directory`, after comparing its run with this one: a model of
  // another shape is always refused; other differences (run_settings(), and config fields such
  // as rope_theta) throw meap::error listing each of them, unless `changes` is
  // resume_changes::allow. Returns the differences ("name: checkpoint X, now Y").
  std::vector<std::string> resume(const std::filesystem::path& directory,
                                  resume_changes changes = resume_changes::refuse) {
    constexpr std::string_view function = "meap::train::pretrainer::resume";
    std::vector<std::string> differences;
    const auto compare = [&](const trainer_state& state) {
      differences = state.changes;
      if (state.run_settings.empty()) {  // a checkpoint from before run settings were recorded
        if (state.seed != options_.masking.seed)
          differences.push_back("masking.seed: checkpoint " + std::to_string(state.seed) + ", now " +
                                std::to_string(options_.masking.seed));
      } else {
        const auto stored = nlohmann::json::parse(state.run_settings, nullptr, false);
        if (!stored.is_object())
          throw_argument_error(function, "directory", directory.string(),
                               "a trainer file whose meap.run metadata is a JSON object");
        const auto now = run_settings();
        for (const auto& [name, value] : stored.items())
          if (!now.contains(name) || now.at(name) != value)
            differences.push_back(name + ": checkpoint " + value.dump() + ", now " +
                                  (now.contains(name) ? now.at(name).dump() : std::string("(not set)")));
        for (const auto& [name, value] : now.items())
          if (!stored.contains(name)) differences.push_back(name + ": checkpoint (not set), now " + value.dump());
      }
      if (!differences.empty() && changes == resume_changes::refuse) {
        std::string list;
        for (const auto& d : differences) list += (list.empty() ? "" : "; ") + d;
        throw_argument_error(function, "directory", directory.string() + " (" + list + ")",
                             "a checkpoint of a run with this run's settings (or resume_changes::allow)");
      }
    };
    const auto state = load_training_checkpoint(directory, model_, optimizer_, compare);
    if (group_ != nullptr) {  // every rank must have read the same checkpoint
      std::int64_t steps[2] = {static_cast<std::int64_t>(state.next_step), 1};
      group_->all_reduce_host(steps);
      if (steps[0] != static_cast<std::int64_t>(state.next_step) * steps[1])
        throw_argument_error(function, "directory", directory.string() + " (step " + std::to_string(state.next_step) +
                                                        " on rank " + std::to_string(rank()) + ")",
                             "the same checkpoint on every rank (a directory every rank reads)");
    }
    step_ = state.next_step;
    if (P::loss_scaling && state.loss_scale > 0) loss_scale_ = state.loss_scale;
    clean_steps_ = 0;
    return differences;
  }

  // Resumes from the newest complete checkpoint of `series`; throws meap::error when it has none.
  std::vector<std::string> resume(const checkpoint_series& series, resume_changes changes = resume_changes::refuse) {
    const auto newest = series.newest();
    if (!newest)
      throw_argument_error("meap::train::pretrainer::resume", "series", series.root().string(),
                           "a checkpoint directory holding at least one complete checkpoint (step-*)");
    return resume(newest->path, changes);
  }

 private:
  trainer_state state_to_save() const {
    return {step_, options_.masking.seed, loss_scale_, run_settings().dump(), {}};
  }

  // Rank 0's part of a distributed save: the checkpoint's files from the gathered state.
  void write_checkpoint(const std::filesystem::path& directory) {
    save_training_checkpoint(directory, model_, pending_moments_.first.view().as_const(),
                             pending_moments_.second.view().as_const(), optimizer_.steps(), state_to_save());
  }

  // Gathers the state, lets rank 0 run `write`, and tells every rank how it went.
  template <class Write>
  std::optional<checkpoint_entry> save_distributed(Write&& write) {
    pending_moments_ = whole_moments();
    std::optional<checkpoint_entry> entry;
    try {
      (void)dist::rank0_agreement(group_).agree(
          [&] {
            entry = write();
            return std::string();
          },
          "meap::train::pretrainer::save: rank 0 could not write the checkpoint");
    } catch (...) {
      pending_moments_ = {};
      throw;
    }
    pending_moments_ = {};
    return entry;
  }

  step_report begin_report(index_t rows, index_t L) const {
    step_report report;
    report.step = step_;
    report.lr = schedule_(static_cast<std::int64_t>(step_));
    report.tokens = rows * L;
    report.micro_batches = options_.micro_batches;
    report.loss_scale = loss_scale_;
    return report;
  }

  // The device part of a step over the staged rows (input_ids_, labels_ and, when flagged,
  // positions_ and segments_), from the loss counts to the report.
  step_report run_staged(step_report& report, bool with_positions, bool with_segments,
                         std::chrono::steady_clock::time_point start) {
    const index_t M = options_.micro_batches, rows = input_ids_.view().size(0), L = input_ids_.view().size(1);
    const index_t B = rows / M;
    // The counts the loss divides by: labelled positions per micro-batch and in the whole batch.
    std::vector<index_t> selected(static_cast<std::size_t>(M), 0);
    index_t selected_total = 0;
    for (index_t m = 0; m < M; ++m) {
      const std::int32_t* labels = labels_.view().slice(0, m * B, (m + 1) * B).data();
      for (index_t i = 0; i < B * L; ++i) selected[static_cast<std::size_t>(m)] += labels[i] != ignore_index;
      selected_total += selected[static_cast<std::size_t>(m)];
    }
    if (group_ != nullptr) {  // the global counts: the loss is the mean over the global batch
      std::int64_t counts[2] = {selected_total, report.masked};
      group_->all_reduce_host(counts);
      selected_total = counts[0];
      report.masked = counts[1];
    }
    report.loss_tokens = selected_total;

    // 2. On the device: zero the gradients and the status, then every micro-batch.
    auto& store = model_.store();
    store.zero_grad(device_);
    fill(device_, status_values_.view(), 0.0);
    fill(device_, status_checks_.view(), deferred_none);
    const step_status<Device> status{status_values_.view(), status_checks_.view()};
    for (index_t m = 0; m < M; ++m) {
      const auto rows_of = [&](const auto& staged) { return staged.view().slice(0, m * B, (m + 1) * B).as_const(); };
      const staged_ids inputs(device_, rows_of(input_ids_));
      const staged_ids labels(device_, rows_of(labels_));
      std::optional<staged_ids> positions, segments;
      if (with_positions) positions.emplace(device_, rows_of(positions_));
      if (with_segments) segments.emplace(device_, rows_of(segments_));
      const auto checks = status.checks_of(m);
      const auto ctx = model_.forward(device_, inputs.view(),
                                      positions ? positions->view() : tensor_view<const std::int32_t, Device>{},
                                      segments ? segments->view() : tensor_view<const std::int32_t, Device>{}, checks);
      tensor<T, Device> d_hidden(device_, ctx.hidden.shape());
      cross_entropy_options<Device> loss_options;
      loss_options.normalizer = static_cast<double>(selected_total);
      loss_options.gradient_scale = loss_scale_;
      loss_options.d_weight_write = gradient_write::accumulate;
      loss_options.selected_rows = selected[static_cast<std::size_t>(m)];
      loss_options.loss_sum = status.loss_sum();
      loss_options.checks = checks;
      (void)linear_cross_entropy<T, G>(device_, ctx.hidden.view(), model_.head_weight(), inputs_flat(labels, B * L),
                                       d_hidden.view(), model_.head_grad(), loss_options);
      if (m + 1 == M && overlapped()) model_.backward(device_, ctx, d_hidden.view(), bucket_starter());
      else model_.backward(device_, ctx, d_hidden.view());
    }
    if (group_ == nullptr) {
      clip_factor(device_, store.grad_flat().as_const(), options_.clip_norm, status, loss_scale_);
      optimizer_.step(device_, store, report.lr, status);
    } else {
      reduce_and_update(report.lr, status);
    }

    // 3. The step's one wait: its status comes back.
    copy(device_, status_values_.view().as_const(), report_values_.view());
    copy(device_, status_checks_.view().as_const(), report_checks_.view());
    if (group_ != nullptr) group_->synchronize(device_);
    else synchronize(device_);
    const double* values = report_values_.data();
    const bool applied = values[static_cast<int>(status_value::update)] != 0.0;
    optimizer_.finish_step(applied);
    for (index_t m = 0; m < M; ++m)
      raise_deferred_checks(std::span<const std::uint64_t>(report_checks_.data() + m * deferred_check_count,
                                                           deferred_check_count),
                            model_.config().vocab, M > 1 ? " (micro-batch " + std::to_string(m) + ")" : std::string());
    report.loss = values[static_cast<int>(status_value::loss)];
    report.grad_norm = values[static_cast<int>(status_value::grad_norm)];
    if (!applied) {
      report.skipped = true;
      report.skip_reason = skip_reason(report);
    }
    update_loss_scale(applied, report.loss);
    ++step_;
    ++steps_run_;
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    report.tokens_per_second = report.seconds > 0 ? static_cast<double>(report.tokens) / report.seconds : 0.0;
    return report;
  }

  // Distributed: every rank checks the token ids of the whole global batch before the step's
  // first collective, so that a bad id throws on every rank alike (one process leaves the check
  // to the embedding, which throws before any update too).
  void check_ids_everywhere(std::string_view function, std::string_view name,
                            const tensor_view<const std::int32_t, cpu>& ids) const {
    if (group_ == nullptr) return;
    const std::int64_t vocab = model_.config().vocab;
    for (index_t r = 0; r < ids.size(0); ++r)
      for (index_t t = 0; t < ids.size(1); ++t)
        if (ids(r, t) < 0 || ids(r, t) >= vocab)
          throw_argument_error(function, name,
                               "token " + std::to_string(ids(r, t)) + " at (" + std::to_string(r) + ", " +
                                   std::to_string(t) + ")",
                               "token ids in [0, " + std::to_string(vocab) + ")");
  }

  bool overlapped() const noexcept {
    return group_ != nullptr && sharding_ == dist::sharding::replicated && group_->overlaps_backward();
  }

  // The backward pass's `done` callback: the gradients above `final_from` are final; once they
  // make a bucket (or the pass is over), their sum over the ranks starts.
  std::function<void(index_t)> bucket_starter() {
    started_below_ = model_.store().flat_size();
    return [this](index_t final_from) {
      const index_t elements = started_below_ - final_from;
      if (elements <= 0) return;
      if (final_from > 0 && static_cast<std::size_t>(elements) * sizeof(G) < bucket_bytes_) return;
      group_->start_all_reduce(device_, to_any(model_.store().grad_flat().slice(0, final_from, started_below_)));
      started_below_ = final_from;
    };
  }

  int ranks() const noexcept { return group_ != nullptr ? group_->size() : 1; }
  int rank() const noexcept { return group_ != nullptr ? group_->rank() : 0; }

  // Data parallel, after every micro-batch's backward: the loss sums and the deferred checks
  // combined over the ranks (so that every rank decides the same), the gradients summed, the
  // norm and the decision made, AdamW run: over every parameter after an all-reduce, or over this
  // rank's shard after a reduce-scatter (ZeRO-1), whose updated parameters are then all-gathered.
  void reduce_and_update(double lr, const step_status<Device>& status) {
    auto& store = model_.store();
    group_->all_reduce(device_, to_any(status_values_.view().slice(0, 0, 2)), dist::reduce_op::sum);
    group_->all_reduce(device_, to_any(status_checks_.view()), dist::reduce_op::min);
    if (sharding_ == dist::sharding::replicated) {
      if (overlapped()) group_->finish_started(device_);  // the sums started during the backward pass
      else group_->all_reduce(device_, to_any(store.grad_flat()), dist::reduce_op::sum);
      clip_factor(device_, store.grad_flat().as_const(), options_.clip_norm, status, loss_scale_);
      optimizer_.step(device_, store, lr, status);
      return;
    }
    const auto r = static_cast<std::size_t>(rank());
    group_->reduce_scatter(device_, to_any(store.grad_flat()), bounds_);
    sum_of_squares(device_, store.grad_flat().slice(0, bounds_[r], bounds_[r + 1]).as_const(),
                   shard_sums_.view().slice(0, rank(), rank() + 1));
    std::vector<index_t> one_each(static_cast<std::size_t>(ranks()) + 1);
    for (std::size_t k = 0; k < one_each.size(); ++k) one_each[k] = static_cast<index_t>(k);
    group_->all_gather(device_, to_any(shard_sums_.view()), one_each);
    clip_factor_from_sums(device_, shard_sums_.view().as_const(), options_.clip_norm, status, loss_scale_);
    optimizer_.step(device_, store, lr, status);
    group_->all_gather(device_, to_any(store.master_flat()), bounds_);
    if constexpr (P::mixed) group_->all_gather(device_, to_any(store.compute_copy()), bounds_);
  }

  // AdamW's moments as whole flat host buffers, for a checkpoint: gathered from every rank's
  // shard under ZeRO-1 (a collective: every rank calls it), copied from this rank's optimizer
  // otherwise. Empty before the first update.
  std::pair<tensor<typename P::master_t, cpu>, tensor<typename P::master_t, cpu>> whole_moments() {
    using M = typename P::master_t;
    std::pair<tensor<M, cpu>, tensor<M, cpu>> out;
    const auto& store = model_.store();
    if (!optimizer_.sharded()) {
      if (optimizer_.exp_avg().numel() != 0) {
        out.first = to_host(device_, optimizer_.exp_avg());
        out.second = to_host(device_, optimizer_.exp_avg_sq());
        if constexpr (!std::is_same_v<Device, cpu>) synchronize(device_);
      }
      return out;
    }
    const auto r = static_cast<std::size_t>(rank());
    for (auto* moment : {&out.first, &out.second}) {
      tensor<M, Device> whole = zeros<M>(device_, dims{store.flat_size()});
      const auto& shard = moment == &out.first ? optimizer_.exp_avg() : optimizer_.exp_avg_sq();
      if (shard.numel() != 0) copy(device_, shard, whole.view().slice(0, bounds_[r], bounds_[r + 1]));
      group_->all_gather(device_, to_any(whole.view()), bounds_);
      *moment = to_host(device_, whole.view().as_const());
      group_->synchronize(device_);
    }
    return out;
  }

  // Token ids of one micro-batch where the device reads them: the staged host rows themselves on
  // the CPU; a device copy (asynchronous: the staging memory is pinned) on CUDA.
  class staged_ids {
   public:
    staged_ids(const Device& device, const tensor_view<const std::int32_t, cpu>& host) {
      if constexpr (std::is_same_v<Device, cpu>) {
        (void)device;
        view_ = host;
      } else {
        copy_ = tensor<std::int32_t, Device>(device, host.shape());
        copy(device, host, copy_.view());
        view_ = copy_.view();
      }
    }
    tensor_view<const std::int32_t, Device> view() const { return view_; }

   private:
    tensor<std::int32_t, Device> copy_;
    tensor_view<const std::int32_t, Device> view_;
  };

  static tensor_view<const std::int32_t, Device> inputs_flat(const staged_ids& ids, index_t n) {
    return ids.view().reshape({n});
  }

  // input_ids, labels and mask (B, T) of one micro-batch, from tokens (B, T + 1).
  void make_inputs(const tensor_view<const std::int32_t, cpu>& tokens, const tensor_view<const std::int32_t, cpu>& segments,
                   std::uint32_t micro_batch, const tensor_view<std::int32_t, cpu>& input_ids,
                   const tensor_view<std::int32_t, cpu>& labels, const tensor_view<std::uint8_t, cpu>& mask,
                   index_t& masked) const {
    const index_t L = tokens.size(1) - 1;
    if (policy_) {
      auto masking_options = options_.masking;
      masking_options.step = step_;
      masking_options.micro_batch = micro_batch;
      masking::apply(cpu{}, *policy_, tokens, masking_options, masking::masked_batch_view<cpu>{input_ids, labels, mask},
                     segments);
      const std::uint8_t* flags = mask.data();
      for (index_t i = 0, n = mask.numel(); i < n; ++i) masked += flags[i];
      return;
    }
    copy(cpu{}, tokens.slice(1, 0, L), input_ids);
    copy(cpu{}, tokens.slice(1, 1, L + 1), labels);
    fill(cpu{}, mask, std::uint8_t{0});
    if (options_.masking.pad_id >= 0)
      for (index_t i = 0, n = labels.numel(); i < n; ++i)
        if (labels.data()[i] == options_.masking.pad_id) labels.data()[i] = ignore_index;
  }

  std::string describe_policy() const {
    if (!policy_) return "ntp";
    if constexpr (requires(const Policy& p) { p.describe(); }) return policy_->describe();
    else return "custom";
  }

  std::string skip_reason(const step_report& report) {
    if (!std::isfinite(report.loss)) return "loss is " + meap::detail::value_to_string(report.loss);
    const auto params = model_.parameters();
    const auto bad = first_nonfinite_gradient(device_, params);
    std::string reason = bad ? "gradient of '" + bad->parameter + "' is " + meap::detail::value_to_string(bad->value) +
                                   " at element " + std::to_string(bad->index)
                             : "gradient norm is " + meap::detail::value_to_string(report.grad_norm);
    if (P::loss_scaling)
      reason += " at loss scale " + meap::detail::value_to_string(loss_scale_) + " (lowered to " +
                meap::detail::value_to_string(std::max(loss_scale_ * options_.loss_scaling.backoff,
                                                       options_.loss_scaling.min_scale)) +
                ")";
    return reason;
  }

  void update_loss_scale(bool applied, double loss) {
    if constexpr (P::loss_scaling) {
      const auto& c = options_.loss_scaling;
      if (!applied && std::isfinite(loss)) {  // the gradients overflowed at this scale
        loss_scale_ = std::max(loss_scale_ * c.backoff, c.min_scale);
        clean_steps_ = 0;
      } else if (applied && ++clean_steps_ >= c.growth_interval) {
        loss_scale_ *= c.growth;
        clean_steps_ = 0;
      }
    } else {
      (void)applied;
      (void)loss;
    }
  }

  model_type& model_;
  Device device_;
  dist::process_group<Device>* group_ = nullptr;
  dist::sharding sharding_ = dist::sharding::replicated;
  std::vector<index_t> bounds_;       // the ranks' shards of the flat buffers (ZeRO-1 and parameter gathers)
  std::size_t bucket_bytes_ = 0;      // the smallest overlapped sum (replicated, overlapping groups)
  index_t started_below_ = 0;         // the backward pass's buckets: what lies above is being summed
  tensor<double, Device> shard_sums_;  // ZeRO-1: each rank's sum of squared gradients
  std::uint64_t steps_run_ = 0;
  std::pair<tensor<typename P::master_t, cpu>, tensor<typename P::master_t, cpu>> pending_moments_;
  std::optional<Policy> policy_;
  pretrain_options options_;
  adamw<P, Device> optimizer_;
  warmup_cosine schedule_;
  std::uint64_t step_;
  double loss_scale_;
  std::int64_t clean_steps_ = 0;
  // The step's inputs on the host (pinned on CUDA), its status on the device, and the report's copy.
  host_staging<std::int32_t, Device> input_ids_, labels_, positions_, segments_;
  host_staging<std::uint8_t, Device> mask_;
  tensor<double, Device> status_values_;
  tensor<std::uint64_t, Device> status_checks_;
  host_staging<double, Device> report_values_;
  host_staging<std::uint64_t, Device> report_checks_;
};

template <class P, class Device, class Policy>
pretrainer(nn::llama_model<P, Device>&, std::optional<Policy>, const pretrain_options&, std::uint64_t = 0)
    -> pretrainer<P, Device, Policy>;
template <class P, class Device, class Policy>
pretrainer(nn::llama_model<P, Device>&, Policy, const pretrain_options&, std::uint64_t = 0)
    -> pretrainer<P, Device, Policy>;
// pretrainer(model, std::nullopt, options): plain next-token prediction.
template <class P, class Device>
pretrainer(nn::llama_model<P, Device>&, std::nullopt_t, const pretrain_options&, std::uint64_t = 0)
    -> pretrainer<P, Device, masking::fixed_ratio>;

}  // namespace meap::train
