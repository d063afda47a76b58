// meap/run/finetune.hpp: a whole MEAP (or NTP) fine-tuning run of a Hugging Face LLaMA as one
// library call, the run meap_finetune makes from its command line:
//
//   meap::run::finetune_options o;
//   o.model_dir = "base/";  o.data = "train.jsonl";  o.epochs = 3;  o.out = "run/";
//   meap::text::sentencepiece_tokenizer tokenizer("spm.model");   // or nullptr for token-id data
//   return meap::run::finetune<meap::fp32>(o, &tokenizer, meap::cpu{}, {meap::train::available_host_memory()}, nullptr);
//
// The data is read before the model (a bad file stops the run before anything large is loaded);
// the token roles (train/finetune_metadata.hpp) decide [MASK], pad and the ids never masked; the
// model is loaded (grown by one row when [MASK] is new), the run directory opened (fresh or
// resumed bit for bit), the finetuner (train/finetune.hpp) trained through training_loop, and at
// the end rank 0 writes the fine-tuned model in Hugging Face layout to <out>/model with
// meap_finetune.json. Messages name meap_finetune's command-line options.
#pragma once

#include <meap/core/error.hpp>
#include <meap/core/precision.hpp>
#include <meap/data/instruction.hpp>
#include <meap/dist/agreement.hpp>
#include <meap/dist/process_group.hpp>
#include <meap/io/json_fields.hpp>
#include <meap/nn/vocabulary.hpp>
#include <meap/run/run_directory.hpp>
#include <meap/run/training_loop.hpp>
#include <meap/text/tokenizer.hpp>
#include <meap/train/checkpoint.hpp>
#include <meap/train/finetune.hpp>
#include <meap/train/finetune_metadata.hpp>
#include <meap/train/memory.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <type_traits>
#include <vector>

namespace meap::run {

struct finetune_options {
  const char* program = "meap_finetune";  // names messages
  std::string model_dir;                  // a Hugging Face LLaMA directory (config.json, model.safetensors or shards)
  std::string data;                       // JSONL (docs/finetune.md)
  std::string tokenizer;                  // the tokenizer file's name, recorded with the model
  std::string policy = "meap";            // meap or ntp
  double mask_ratio = 0.10;
  std::int64_t min_answer_tokens = 50;
  std::string layout = "concatenated";    // or separate
  std::string filling = "packed";         // or padded
  std::int64_t epochs = 1;
  std::int64_t batch = 8;                 // rows per step
  std::int64_t micro_batches = 1;
  std::int64_t length = 0;                // row length; 0: the model's max_seq, at most 2048
  std::uint64_t seed = 1234;
  double lr = 2e-5;
  double weight_decay = 0.0;
  std::int64_t warmup = 0;
  std::int64_t mask_id = -1;              // -1: the tokenizer's [MASK], else a new token
  std::int64_t pad_id = -1;               // -1: the tokenizer's pad, else its EOS, else 0
  std::vector<std::int64_t> special_ids;
  std::int64_t checkpoint_every = 0;
  std::int64_t keep_checkpoints = 2;
  std::string out = "meap_finetune_out";
  bool resume = false;
  bool allow_changes = false;
  bool zero1 = false;
  std::string save_dtype;                 // the fine-tuned model's dtype; empty: the input model's
  double shard_gib = 5.0;                 // shards of the fine-tuned model above this size (0: one file)
  std::string device_name = "cpu";        // for the summary line
};

[[noreturn]] inline void finetune_argument_error(const finetune_options& o, const std::string& name,
                                                 const std::string& value, const std::string& expected) {
  throw_argument_error(o.program, name, value, expected);
}

// The dtype the fine-tuned model is saved in: save_dtype, else the input model's config.json
// torch_dtype (float32 when it names none).
inline dtype finetune_save_dtype(const finetune_options& o) {
  std::string name = o.save_dtype;
  if (name.empty()) {
    const auto path = std::filesystem::path(o.model_dir) / "config.json";
    const auto j = parse_json(meap::detail::read_small_file(o.program, path, 16 << 20, "config.json"), o.program, path.string());
    name = j.is_object() && j.contains("torch_dtype") && j.at("torch_dtype").is_string()
               ? j.at("torch_dtype").get<std::string>()
               : "float32";
  }
  if (name == "float32" || name == "fp32") return dtype::f32;
  if (name == "bfloat16" || name == "bf16") return dtype::bf16;
  if (name == "float16" || name == "fp16") return dtype::f16;
  finetune_argument_error(o, "--save-dtype", name, "fp32, bf16 or fp16 (or a model whose config.json names one of them)");
}

// Runs the fine-tuning o describes with precision P on `device`; `tokenizer`: for text data
// (nullptr: token ids only). With a group (mpirun): one rank of a data-parallel run; every rank
// builds the same global batch from the plan and trains its rows, rank 0 writes and prints.
// Returns the exit code (0); failures throw meap::error. Not inline: a program may declare it
// `extern template` and link one explicit instantiation (meap's apps do).
template <class P, class Device>
int finetune(const finetune_options& o, const text::tokenizer* tokenizer, const Device& device,
             const train::memory_budget& budget, std::type_identity_t<dist::process_group<Device>>* group) {
  const std::int64_t ranks = group != nullptr ? group->size() : 1;
  if (o.batch % (o.micro_batches * ranks) != 0)
    finetune_argument_error(o, "--batch", std::to_string(o.batch),
                            "a multiple of --micro-batches (" + std::to_string(o.micro_batches) + ") times the " +
                                std::to_string(ranks) + " ranks");
  const std::filesystem::path model_dir(o.model_dir);
  const auto base_config = train::read_hugging_face_config(model_dir / "config.json");
  const auto save_as = finetune_save_dtype(o);
  train::token_role_request request;
  request.program = o.program;
  request.needs_mask = o.policy == "meap";
  request.mask_id = o.mask_id;
  request.pad_id = o.pad_id;
  request.special_ids = o.special_ids;
  request.tokenizer_name = o.tokenizer;
  const auto roles = train::choose_token_roles(request, base_config, tokenizer);
  const std::int64_t length = o.length > 0 ? o.length : std::min<std::int64_t>(base_config.max_seq, 2048);
  if (length > base_config.max_seq)
    finetune_argument_error(o, "--seq-len", std::to_string(length),
                            "at most the model's max_position_embeddings = " + std::to_string(base_config.max_seq));

  // The data, before the model: a bad file stops the run before anything large is loaded.
  data::instruction_read_options read;
  read.tokenizer = tokenizer;
  read.vocab = base_config.vocab;
  read.max_length = length;
  auto examples = data::read_instruction_jsonl(o.data, read);
  if (examples.examples.empty())
    finetune_argument_error(o, "--data",
                            o.data + " (" + std::to_string(examples.skipped_overlong_prompt) +
                                " of its examples have prompts of --seq-len tokens or more)",
                            "at least one example whose prompt leaves room for an answer");

  auto config = base_config;
  if (roles.grow) config.vocab += 1;
  train::check_training_memory<P>(o.program, config, o.batch / o.micro_batches / ranks, length, budget,
                                  "--batch/--seq-len/--model");
  run_directory output(o.program, o.out, o.keep_checkpoints, dist::rank0_agreement(group));

  train::finetune_options options;
  options.objective = o.policy == "meap" ? train::finetune_objective::meap : train::finetune_objective::ntp;
  options.copy.ratio = o.mask_ratio;
  options.copy.min_answer_tokens = static_cast<std::int32_t>(o.min_answer_tokens);
  options.copy.layout = o.layout == "separate" ? masking::layout::separate_rows : masking::layout::concatenated;
  options.seed = o.seed;
  options.mask_id = roles.mask_id;
  options.pad_id = roles.pad_id;
  options.special_ids = roles.special_ids;
  options.row_length = length;
  options.rows_per_step = o.batch;
  options.filling = o.filling == "padded" ? train::row_filling::padded : train::row_filling::packed;
  options.epochs = static_cast<std::uint32_t>(o.epochs);
  options.training.optimizer.lr = o.lr;
  options.training.optimizer.weight_decay = o.weight_decay;
  options.training.schedule = {o.lr, o.lr / 10, o.warmup, 0};
  options.training.micro_batches = o.micro_batches;
  options.training.run_metadata = {{"model", model_dir.string()}, {"data", o.data}, {"tokenizer", o.tokenizer}};

  auto model = [&] {
    auto base = train::load_pretrained<P>(model_dir, device);
    return roles.grow ? nn::grow_vocabulary(base, 1) : std::move(base);
  }();
  train::finetuner tuner(model, std::move(examples.examples), options);
  if (group != nullptr) tuner.distribute(*group, o.zero1 ? dist::sharding::zero1 : dist::sharding::replicated);
  output.start(tuner, o.resume, o.allow_changes);
  const auto total = tuner.total_steps();
  const auto& plan = tuner.plan();
  if (output.lead()) {
    if (group != nullptr)
      std::fprintf(stderr, "data parallel: %lld ranks of %lld rows each%s\n", static_cast<long long>(ranks),
                   static_cast<long long>(o.batch / ranks), o.zero1 ? ", AdamW state sharded (ZeRO-1)" : "");
    std::int64_t duplicated = 0;
    for (std::size_t i = 0; i < plan.examples().size(); ++i) duplicated += plan.duplicated(static_cast<index_t>(i));
    std::fprintf(stderr,
                 "model: %lld parameters (vocab %lld%s); %s on %s; policy %s%s\n"
                 "data: %zu examples (%lld with a masked copy; %llu skipped: prompt of --seq-len tokens or more); "
                 "%lld epoch(s) of %lld steps of %lld x %lld\n",
                 static_cast<long long>(config.parameter_count()), static_cast<long long>(config.vocab),
                 roles.grow ? ", one row added for [MASK]" : "", std::string(precision_name<P>()).c_str(),
                 o.device_name.c_str(), o.policy.c_str(),
                 roles.mask_id >= 0 ? (", [MASK] = " + std::to_string(roles.mask_id)).c_str() : "",
                 plan.examples().size(), static_cast<long long>(duplicated),
                 static_cast<unsigned long long>(examples.skipped_overlong_prompt), static_cast<long long>(o.epochs),
                 static_cast<long long>(plan.steps_in_epoch(0)), static_cast<long long>(o.batch),
                 static_cast<long long>(length));
  }

  std::uint32_t epoch = 0;
  const auto result = training_loop(
      tuner, output, {total, static_cast<std::uint64_t>(o.checkpoint_every)},
      [&](std::uint64_t) {
        const auto r = tuner.step();
        epoch = r.epoch;
        return static_cast<train::step_report>(r);
      },
      [&](const loop_progress& p) {
        std::fprintf(stderr, "\repoch %u/%lld  %s", epoch + 1, static_cast<long long>(o.epochs), format_progress(p).c_str());
      });
  if (!output.lead()) return 0;  // rank 0 writes the model (every rank holds the same weights)
  // The fine-tuned model in Hugging Face layout, and what a user of it must know (the [MASK] id).
  const auto model_out = output.directory() / "model";
  const auto shard_bytes = static_cast<std::uint64_t>(o.shard_gib * 1024.0 * 1024.0 * 1024.0);
  train::save_model(model_out, model, save_as, tuner.next_step(), shard_bytes);
  train::write_finetune_metadata(model_out, {o.policy, roles, o.tokenizer});
  std::fprintf(stderr, "\ndone: final loss (avg) %.4f, %llu skipped steps; loss curve %s, checkpoint %s, model %s\n",
               result.average_loss, static_cast<unsigned long long>(result.skipped_steps),
               output.loss_log().path().c_str(), result.final_checkpoint.path.c_str(), model_out.c_str());
  return 0;
}

}  // namespace meap::run
