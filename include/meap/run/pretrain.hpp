// meap/run/pretrain.hpp: a whole MEAP (or NTP) pretraining run as one library call, the run
// meap_pretrain makes from its command line:
//
//   meap::run::pretrain_options o;            // data, model config, policy, steps, batch, out, ...
//   o.data = "tokens.u16";  o.steps = 10000;  o.checkpoint_every = 500;  o.out = "run/";
//   return meap::run::pretrain<meap::fp32>(o, meap::cpu{}, {meap::train::available_host_memory()});
//
// It reads the data (a token file sampled in windows keyed by (seed, step), the built-in
// affine-recurrence task, or the caller's own batches: pretrain_options::batches), sizes the model
// (the data's vocabulary plus one id for [MASK]; meap's JSON model file, nn/config_json.hpp),
// refuses a run that does not fit the memory budget, opens the run directory
// (run/run_directory.hpp: checkpoints, loss.csv, throughput.csv, fresh or resumed bit for bit),
// and runs training_loop (run/training_loop.hpp) with progress, tokens/s, MFU and an ETA on
// stderr. With a process group (mpirun), as one rank of a data-parallel run: every rank samples
// the same global batch and trains its rows; rank 0 writes and prints. Messages name the
// command-line options of meap_pretrain (--batch, --config, ...), the settings' spelling here.
#pragma once

#include <meap/core/error.hpp>
#include <meap/core/precision.hpp>
#include <meap/core/tensor.hpp>
#include <meap/data/synthetic.hpp>
#include <meap/dist/agreement.hpp>
#include <meap/dist/process_group.hpp>
#include <meap/io/token_dataset.hpp>
#include <meap/masking/fixed_ratio.hpp>
#include <meap/masking/span.hpp>
#include <meap/nn/config_json.hpp>
#include <meap/nn/llama.hpp>
#include <meap/run/run_directory.hpp>
#include <meap/run/training_loop.hpp>
#include <meap/train/memory.hpp>
#include <meap/train/pretrain.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <type_traits>

namespace meap::run {

// The caller's own training rows: `fill(step, tokens)` writes step's (batch, seq_len + 1) token
// ids, each below `vocab` (the model gets vocab + 1 ids: the last is [MASK]).
struct batch_source {
  std::int64_t vocab = 0;
  std::function<void(std::uint64_t step, const tensor_view<std::int32_t, cpu>& tokens)> fill;
};

struct pretrain_options {
  const char* program = "meap_pretrain";  // names messages
  std::string data = "synthetic";         // "synthetic" or a token file (.u16 / .u32); see batches
  std::optional<batch_source> batches;    // set: the caller's rows instead of `data`
  std::string config_path;                // meap's JSON model file (nn/config_json.hpp); empty: a small default
  std::string policy = "meap";            // ntp, meap (fixed ratio) or span
  double mask_ratio = 0.15;
  std::int64_t steps = 200;
  std::int64_t batch = 8;                 // rows per step (the global batch)
  std::int64_t length = 128;              // tokens per row
  std::int64_t micro_batches = 1;
  std::uint64_t seed = 1234;              // initialization, masking and data
  double lr = 1e-3;                       // peak; warmup, then cosine to lr / 10
  std::int64_t warmup = 20;
  std::int64_t checkpoint_every = 0;      // 0: only at the end
  std::int64_t keep_checkpoints = 3;
  std::string out = "meap_pretrain_out";
  bool resume = false;
  bool allow_changes = false;             // resume even where the settings differ from the checkpoint's
  bool zero1 = false;                     // with a group: shard AdamW's state over the ranks
  std::string device_name = "cpu";        // for the summary line
  double peak_flops = 0;                  // > 0: MFU on the progress line
};

[[noreturn]] inline void pretrain_argument_error(const pretrain_options& o, const std::string& name,
                                                 const std::string& value, const std::string& expected) {
  throw_argument_error(o.program, name, value, expected);
}

// The model shape: the small default (or the --config file) with the data's vocabulary plus one
// id for [MASK], checked against the data and the row length.
inline nn::llama_config pretrain_model_config(const pretrain_options& o, std::int64_t data_vocab) {
  nn::llama_config c;
  c.vocab = data_vocab + 1;  // one more id for [MASK]
  c.d_model = 128;
  c.layers = 2;
  c.heads = 4;
  c.kv_heads = 2;
  c.ffn = 344;
  c.max_seq = o.length;
  if (!o.config_path.empty())
    c = nn::parse_llama_config(meap::detail::read_small_file(o.program, o.config_path, 1 << 20, "config file"), o.program,
                               "--config", o.config_path, c);
  c.validate();
  if (c.vocab <= data_vocab)
    pretrain_argument_error(o, "--config", "vocab = " + std::to_string(c.vocab),
                            "a vocabulary of at least " + std::to_string(data_vocab + 1) +
                                " (the data's ids plus one for [MASK])");
  if (c.max_seq < o.length)
    pretrain_argument_error(o, "--seq-len", std::to_string(o.length),
                            "at most the config's max_seq = " + std::to_string(c.max_seq));
  return c;
}

// The vocabulary the data needs: the largest id in a token file plus one, read once (the dataset
// is opened into `dataset`). Ids must leave room for [MASK] within int32.
inline std::int64_t pretrain_data_vocabulary(const pretrain_options& o, std::optional<token_dataset>& dataset) {
  if (o.batches) {
    check_argument(o.batches->vocab >= 1 && o.batches->vocab < (std::int64_t{1} << 31) - 2 && o.batches->fill,
                   o.program, "batches", "vocab " + std::to_string(o.batches->vocab),
                   "a vocabulary in [1, 2^31 - 2) and a fill function");
    return o.batches->vocab;
  }
  if (o.data == "synthetic") return data::affine_vocab;
  dataset.emplace(o.data, token_dataset_options{o.length});
  const auto largest = dataset->largest_token();
  constexpr std::int64_t largest_allowed = (std::int64_t{1} << 31) - 3;  // id + 1 for [MASK] + 1 for the size
  if (static_cast<std::int64_t>(largest.id) > largest_allowed)
    pretrain_argument_error(o, "--data",
                            o.data + " (token " + std::to_string(largest.id) + " at index " + std::to_string(largest.index) + ")",
                            "token ids of at most " + std::to_string(largest_allowed) +
                                " (ids are int32 and one more id is needed for [MASK]); wrong width (.u16 / .u32) or not a "
                                "token file?");
  return static_cast<std::int64_t>(largest.id) + 1;
}

// Trains with precision P and masking policy Policy (std::nullopt: NTP) on `device`.
template <class P, class Device, class Policy>
int pretrain_with(const pretrain_options& o, std::optional<Policy> policy, const Device& device,
                  const train::memory_budget& budget, std::type_identity_t<dist::process_group<Device>>* group) {
  const std::int64_t ranks = group != nullptr ? group->size() : 1;
  if (o.batch % (o.micro_batches * ranks) != 0)
    pretrain_argument_error(o, "--batch", std::to_string(o.batch),
                            "a multiple of --micro-batches (" + std::to_string(o.micro_batches) + ") times the " +
                                std::to_string(ranks) + " ranks");
  std::optional<token_dataset> dataset;
  const std::int64_t data_vocab = pretrain_data_vocabulary(o, dataset);
  const auto config = pretrain_model_config(o, data_vocab);
  train::check_training_memory<P>(o.program, config, o.batch / o.micro_batches / ranks, o.length, budget,
                                  "--batch/--seq-len/--config");
  run_directory output(o.program, o.out, o.keep_checkpoints, dist::rank0_agreement(group));

  nn::llama_model<P, Device> model(config, device);
  model.initialize(o.seed);
  train::pretrain_options options;
  options.optimizer.lr = o.lr;
  options.schedule = {o.lr, o.lr / 10, std::min(o.warmup, o.steps), o.steps};
  options.masking.seed = o.seed;
  options.masking.mask_id = static_cast<std::int32_t>(config.vocab - 1);
  options.micro_batches = o.micro_batches;
  options.run_metadata = {{"data", o.batches ? std::string("(the caller's batches)") : o.data},
                          {"batch", std::to_string(o.batch)},
                          {"seq_len", std::to_string(o.length)}};
  train::pretrainer<P, Device, Policy> trainer(model, policy, options);
  if (group != nullptr) trainer.distribute(*group, o.zero1 ? dist::sharding::zero1 : dist::sharding::replicated);
  output.start(trainer, o.resume, o.allow_changes);
  if (output.lead()) {
    if (group != nullptr)
      std::fprintf(stderr, "data parallel: %lld ranks of %lld rows each%s\n", static_cast<long long>(ranks),
                   static_cast<long long>(o.batch / ranks), o.zero1 ? ", AdamW state sharded (ZeRO-1)" : "");
    std::fprintf(stderr,
                 "model: %lld parameters (vocab %lld, d %lld, %lld layers); %s on %s; policy %s; %lld steps of %lld x %lld"
                 " in %lld micro-batch(es)\n",
                 static_cast<long long>(config.parameter_count()), static_cast<long long>(config.vocab),
                 static_cast<long long>(config.d_model), static_cast<long long>(config.layers),
                 std::string(precision_name<P>()).c_str(), o.device_name.c_str(), o.policy.c_str(),
                 static_cast<long long>(o.steps), static_cast<long long>(o.batch), static_cast<long long>(o.length),
                 static_cast<long long>(o.micro_batches));
  }
  const double flops_per_token = config.training_flops_per_token(o.length);

  auto tokens = zeros<std::int32_t>(cpu{}, {o.batch, o.length + 1});
  const auto result = training_loop(
      trainer, output, {static_cast<std::uint64_t>(o.steps), static_cast<std::uint64_t>(o.checkpoint_every)},
      [&](std::uint64_t step) {
        if (o.batches) o.batches->fill(step, tokens.view());
        else if (dataset) dataset->sample_batch(cpu{}, o.seed, step, tokens.view());
        else data::affine_recurrence_batch(o.seed, step, tokens.view());
        return trainer.step(tokens.view());
      },
      [&](const loop_progress& p) {
        char mfu[32] = "";
        if (o.peak_flops > 0)
          std::snprintf(mfu, sizeof mfu, "  MFU %4.1f%%",
                        100.0 * p.report->tokens_per_second * flops_per_token / (o.peak_flops * static_cast<double>(ranks)));
        std::fprintf(stderr, "\r%s", format_progress(p, mfu).c_str());
      });
  if (output.lead())
    std::fprintf(stderr, "\ndone: final loss (avg) %.4f, %llu skipped steps; loss curve %s, checkpoint %s\n",
                 result.average_loss, static_cast<unsigned long long>(result.skipped_steps),
                 output.loss_log().path().c_str(), result.final_checkpoint.path.c_str());
  return 0;
}

// The run pretrain_options describe, with precision P on `device`: the policy it names, then
// pretrain_with. Returns the program's exit code (0); failures throw meap::error. Not inline:
// a program may declare it `extern template` and link one explicit instantiation (meap's apps do).
template <class P, class Device>
int pretrain(const pretrain_options& o, const Device& device, const train::memory_budget& budget,
             std::type_identity_t<dist::process_group<Device>>* group) {
  if (o.policy == "ntp") return pretrain_with<P, Device, masking::fixed_ratio>(o, std::nullopt, device, budget, group);
  if (o.policy == "span")
    return pretrain_with<P, Device, masking::span>(o, masking::span{.ratio = o.mask_ratio}, device, budget, group);
  if (o.policy != "meap")
    pretrain_argument_error(o, "--policy", o.policy, "ntp, meap (fixed ratio) or span");
  return pretrain_with<P, Device, masking::fixed_ratio>(o, masking::fixed_ratio{.ratio = o.mask_ratio}, device, budget,
                                                        group);
}

}  // namespace meap::run
