// examples/finetune_run.hpp: the fine-tuning run of meap_finetune, written once for every device
// and precision. meap_finetune.cpp parses the command line and runs it on the CPU; on CUDA,
// meap_finetune_cuda.cu instantiates the same run for meap::cuda (bf16, fp16 or fp32).
#pragma once

#include "run_support.hpp"

#include <meap/dist/process_group.hpp>

#include <meap/data/instruction.hpp>
#include <meap/io/atomic_file.hpp>
#include <meap/nn/vocabulary.hpp>
#include <meap/text/tokenizer.hpp>
#include <meap/train/checkpoint.hpp>
#include <meap/train/finetune.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace meap_finetune {

struct arguments {
  std::string model_dir;           // a Hugging Face LLaMA directory (config.json, model.safetensors or shards)
  std::string data;                // JSONL (docs/finetune.md)
  std::string tokenizer;           // a SentencePiece model; optional for ids data
  std::string policy = "meap";     // meap or ntp
  double mask_ratio = 0.10;
  std::int64_t min_answer_tokens = 50;
  std::string layout = "concatenated";  // or separate
  std::string filling = "packed";       // or padded
  std::int64_t epochs = 1;
  std::int64_t batch = 8;          // rows per step
  std::int64_t micro_batches = 1;
  std::int64_t length = 0;         // row length; 0: the model's max_seq, at most 2048
  std::uint64_t seed = 1234;
  double lr = 2e-5;
  double weight_decay = 0.0;
  std::int64_t warmup = 0;
  std::int64_t mask_id = -1;       // -1: the tokenizer's [MASK], else a new token
  std::int64_t pad_id = -1;        // -1: the tokenizer's pad, else its EOS, else 0
  std::vector<std::int64_t> special_ids;
  std::int64_t checkpoint_every = 0;
  std::int64_t keep_checkpoints = 2;
  std::string out = "meap_finetune_out";
  bool resume = false;
  bool allow_changes = false;
  std::string device = "cpu";
  std::string dtype;               // fp32 (CPU default), bf16 (CUDA default), fp16
  std::string save_dtype;          // the fine-tuned model's dtype; default: the input model's
  double shard_gib = 5.0;          // shards of the fine-tuned model above this size (0: one file)
  int cuda_ordinal = -1;
  bool zero1 = false;           // under mpirun: shard AdamW's state over the ranks (ZeRO-1)
  double dist_timeout = 300;    // under mpirun: seconds a rank waits for the others
};

[[noreturn]] inline void bad_argument(const std::string& name, const std::string& value, const std::string& expected) {
  meap::throw_argument_error("meap_finetune", name, value, expected);
}

// The tokenizer (nullptr without --tokenizer); defined in meap_finetune.cpp, which knows whether
// SentencePiece was found.
std::unique_ptr<meap::text::tokenizer> open_tokenizer(const arguments& a);

// The dtype the input model's config.json names (torch_dtype), for saving the result alike.
inline meap::dtype stored_dtype(const arguments& a) {
  std::string name = a.save_dtype;
  if (name.empty()) {
    const auto path = std::filesystem::path(a.model_dir) / "config.json";
    const auto j = meap::parse_json(meap::detail::read_small_file("meap_finetune", path, 16 << 20, "config.json"),
                                    "meap_finetune", path.string());
    name = j.is_object() && j.contains("torch_dtype") && j.at("torch_dtype").is_string()
               ? j.at("torch_dtype").get<std::string>()
               : "float32";
  }
  if (name == "float32" || name == "fp32") return meap::dtype::f32;
  if (name == "bfloat16" || name == "bf16") return meap::dtype::bf16;
  if (name == "float16" || name == "fp16") return meap::dtype::f16;
  bad_argument("--save-dtype", name, "fp32, bf16 or fp16 (or a model whose config.json names one of them)");
}

// What the run trains with: the [MASK] id (and whether the vocabulary grows for it), the pad id
// and the ids never masked.
struct token_roles {
  std::int32_t mask_id = -1;
  bool grow = false;
  std::int32_t pad_id = 0;
  std::vector<std::int32_t> special_ids;
};

inline token_roles choose_token_roles(const arguments& a, const meap::nn::llama_config& config,
                                      const meap::text::tokenizer* tokenizer) {
  token_roles roles;
  if (tokenizer != nullptr && tokenizer->vocab_size() > config.vocab)
    bad_argument("--tokenizer", a.tokenizer + " (" + std::to_string(tokenizer->vocab_size()) + " pieces)",
                 "a tokenizer whose ids fit the model's vocabulary of " + std::to_string(config.vocab));
  if (a.policy == "meap") {
    if (a.mask_id >= 0) {
      if (a.mask_id >= config.vocab)
        bad_argument("--mask-id", std::to_string(a.mask_id),
                     "an id below the model's vocabulary of " + std::to_string(config.vocab) +
                         " (leave it out to add a [MASK] token)");
      roles.mask_id = static_cast<std::int32_t>(a.mask_id);
    } else if (const std::int32_t piece = tokenizer != nullptr ? tokenizer->piece_id("[MASK]") : -1; piece >= 0) {
      roles.mask_id = piece;
    } else {
      roles.mask_id = static_cast<std::int32_t>(config.vocab);  // a new row
      roles.grow = true;
    }
  }
  if (a.pad_id >= 0) {
    roles.pad_id = static_cast<std::int32_t>(a.pad_id);
  } else if (tokenizer != nullptr) {
    roles.pad_id = tokenizer->pad_id() >= 0 ? tokenizer->pad_id() : std::max(tokenizer->eos_id(), 0);
  }
  for (const auto id : a.special_ids) {
    if (id < 0 || id >= config.vocab)
      bad_argument("--special-ids", std::to_string(id), "ids in [0, " + std::to_string(config.vocab) + ")");
    roles.special_ids.push_back(static_cast<std::int32_t>(id));
  }
  if (tokenizer != nullptr && tokenizer->eos_id() >= 0) roles.special_ids.push_back(tokenizer->eos_id());
  if (roles.mask_id >= 0 && roles.mask_id == roles.pad_id)
    bad_argument("--pad-id", std::to_string(roles.pad_id), "an id other than the [MASK] id " + std::to_string(roles.mask_id));
  return roles;
}

// With a group (mpirun): one rank of a data-parallel run; every rank builds the same global batch
// from the plan and trains its rows, rank 0 writes the outputs and prints.
template <class P, class Device>
int run(const arguments& a, const Device& device, const meap_examples::memory_budget& budget,
        meap::dist::process_group<Device>* group = nullptr) {
  const std::int64_t ranks = group != nullptr ? group->size() : 1;
  if (a.batch % (a.micro_batches * ranks) != 0)
    bad_argument("--batch", std::to_string(a.batch),
                 "a multiple of --micro-batches (" + std::to_string(a.micro_batches) + ") times the " +
                     std::to_string(ranks) + " ranks");
  const std::filesystem::path model_dir(a.model_dir);
  const auto base_config = meap::train::read_hugging_face_config(model_dir / "config.json");
  const auto save_as = stored_dtype(a);
  const auto tokenizer = open_tokenizer(a);
  const auto roles = choose_token_roles(a, base_config, tokenizer.get());
  const std::int64_t length = a.length > 0 ? a.length : std::min<std::int64_t>(base_config.max_seq, 2048);
  if (length > base_config.max_seq)
    bad_argument("--seq-len", std::to_string(length), "at most the model's max_position_embeddings = " +
                                                          std::to_string(base_config.max_seq));

  // The data, before the model: a bad file stops the run before anything large is loaded.
  meap::data::instruction_read_options read;
  read.tokenizer = tokenizer.get();
  read.vocab = base_config.vocab;
  read.max_length = length;
  auto data = meap::data::read_instruction_jsonl(a.data, read);
  if (data.examples.empty())
    bad_argument("--data", a.data + " (" + std::to_string(data.skipped_overlong_prompt) + " of its examples have prompts of "
                                        "--seq-len tokens or more)",
                 "at least one example whose prompt leaves room for an answer");

  auto config = base_config;
  if (roles.grow) config.vocab += 1;
  meap_examples::check_training_memory<P>("meap_finetune", config, a.batch / a.micro_batches / ranks, length, budget,
                                          "--batch/--seq-len/--model");
  meap_examples::rank_role role;
  if (group != nullptr) {
    role.lead = group->rank() == 0;
    role.share = [group](std::string& text) { group->broadcast_host(text, 0); };
  }
  meap_examples::training_output output("meap_finetune", a.out, a.keep_checkpoints, role);

  meap::train::finetune_options options;
  options.objective = a.policy == "meap" ? meap::train::finetune_objective::meap : meap::train::finetune_objective::ntp;
  options.copy.ratio = a.mask_ratio;
  options.copy.min_answer_tokens = static_cast<std::int32_t>(a.min_answer_tokens);
  options.copy.layout = a.layout == "separate" ? meap::masking::layout::separate_rows : meap::masking::layout::concatenated;
  options.seed = a.seed;
  options.mask_id = roles.mask_id;
  options.pad_id = roles.pad_id;
  options.special_ids = roles.special_ids;
  options.row_length = length;
  options.rows_per_step = a.batch;
  options.filling = a.filling == "padded" ? meap::train::row_filling::padded : meap::train::row_filling::packed;
  options.epochs = static_cast<std::uint32_t>(a.epochs);
  options.training.optimizer.lr = a.lr;
  options.training.optimizer.weight_decay = a.weight_decay;
  options.training.schedule = {a.lr, a.lr / 10, a.warmup, 0};
  options.training.micro_batches = a.micro_batches;
  options.training.run_metadata = {{"model", model_dir.string()}, {"data", a.data}, {"tokenizer", a.tokenizer}};

  auto model = [&] {
    auto base = meap::train::load_pretrained<P>(model_dir, device);
    return roles.grow ? meap::nn::grow_vocabulary(base, 1) : std::move(base);
  }();
  meap::train::finetuner tuner(model, std::move(data.examples), options);
  if (group != nullptr) tuner.distribute(*group, a.zero1 ? meap::dist::sharding::zero1 : meap::dist::sharding::replicated);
  output.start(tuner, a.resume, a.allow_changes);
  if (group != nullptr && output.lead())
    std::fprintf(stderr, "data parallel: %lld ranks of %lld rows each%s\n", static_cast<long long>(ranks),
                 static_cast<long long>(a.batch / ranks), a.zero1 ? ", AdamW state sharded (ZeRO-1)" : "");
  const auto total = tuner.total_steps();
  const auto& plan = tuner.plan();
  std::int64_t duplicated = 0;
  for (std::size_t i = 0; i < plan.examples().size(); ++i) duplicated += plan.duplicated(static_cast<meap::index_t>(i));
  if (output.lead())
    std::fprintf(stderr,
               "model: %lld parameters (vocab %lld%s); %s on %s; policy %s%s\n"
               "data: %zu examples (%lld with a masked copy; %llu skipped: prompt of --seq-len tokens or more); "
               "%lld epoch(s) of %lld steps of %lld x %lld\n",
               static_cast<long long>(config.parameter_count()), static_cast<long long>(config.vocab),
               roles.grow ? ", one row added for [MASK]" : "", std::string(meap::precision_name<P>()).c_str(),
               a.device.c_str(), a.policy.c_str(),
               roles.mask_id >= 0 ? (", [MASK] = " + std::to_string(roles.mask_id)).c_str() : "",
               plan.examples().size(), static_cast<long long>(duplicated),
               static_cast<unsigned long long>(data.skipped_overlong_prompt), static_cast<long long>(a.epochs),
               static_cast<long long>(plan.steps_in_epoch(0)), static_cast<long long>(a.batch), static_cast<long long>(length));

  const auto start = std::chrono::steady_clock::now();
  const std::uint64_t first = tuner.next_step();
  double smoothed = 0;
  int skipped = 0;
  while (!tuner.done()) {
    const std::uint64_t step = tuner.next_step();
    const auto r = tuner.step();
    skipped += r.skipped;
    if (r.skipped && output.lead())
      std::fprintf(stderr, "\nstep %llu skipped: %s\n", static_cast<unsigned long long>(step), r.skip_reason.c_str());
    output.log(r);
    smoothed = step == first ? r.loss : 0.9 * smoothed + 0.1 * r.loss;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double eta = elapsed / static_cast<double>(step + 1 - first) * static_cast<double>(total - step - 1);
    if (output.lead())
      std::fprintf(stderr, "\repoch %u/%lld  step %6llu/%llu  loss %.4f (avg %.4f)  lr %.2e  |g| %.3f  %8.0f tok/s  ETA %s ",
                 r.epoch + 1, static_cast<long long>(a.epochs), static_cast<unsigned long long>(step + 1),
                 static_cast<unsigned long long>(total), r.loss, smoothed, r.lr, r.grad_norm, r.tokens_per_second,
                 meap_examples::format_duration(eta).c_str());
    if (a.checkpoint_every > 0 && (step + 1) % static_cast<std::uint64_t>(a.checkpoint_every) == 0)
      (void)output.checkpoint(tuner);
  }
  const auto final_checkpoint = output.checkpoint(tuner);
  if (!output.lead()) return 0;  // rank 0 writes the model (every rank holds the same weights)
  // The fine-tuned model in Hugging Face layout, and what a user of it must know (the [MASK] id).
  const auto model_out = output.directory() / "model";
  const auto shard_bytes = static_cast<std::uint64_t>(a.shard_gib * 1024.0 * 1024.0 * 1024.0);
  meap::train::save_model(model_out, model, save_as, tuner.next_step(), shard_bytes);
  const nlohmann::json roles_json = {{"objective", a.policy},      {"mask_id", roles.mask_id},
                                     {"vocab_grown", roles.grow},  {"pad_id", roles.pad_id},
                                     {"special_ids", roles.special_ids}, {"tokenizer", a.tokenizer}};
  const std::string text = roles_json.dump(2) + "\n";
  meap::write_file_atomically(model_out / "meap_finetune.json",
                              std::span<const std::byte>(reinterpret_cast<const std::byte*>(text.data()), text.size()));
  std::fprintf(stderr, "\ndone: final loss (avg) %.4f, %d skipped steps; loss curve %s, checkpoint %s, model %s\n",
               smoothed, skipped, output.loss_log().path().c_str(), final_checkpoint.path.c_str(), model_out.c_str());
  return 0;
}

// Defined in meap_finetune_cuda.cu when meap is built with CUDA. `host`: the MPI group under
// mpirun, or nullptr.
int run_cuda(const arguments& a, meap::dist::process_group<meap::cpu>* host);

}  // namespace meap_finetune
