// meap_finetune: MEAP (or NTP) supervised fine-tuning of a Hugging Face LLaMA, on the CPU or a
// CUDA GPU.
//
//   meap_finetune --model base/ --data train.jsonl --tokenizer spm.model --policy meap --epochs 3
//                 --lr 2e-5 --out run/ [--resume]
//   meap_finetune --model base/ --data ids.jsonl --policy ntp ...      (token ids: no tokenizer)
//
// The model is read as transformers writes it (config.json plus model.safetensors or shards). With
// --policy meap the run needs a [MASK] token: --mask-id, else the tokenizer's "[MASK]" piece, else
// a new token, the vocabulary grown by one row initialized at the mean embedding. The data is JSONL
// of {"prompt", "answer"} or {"messages"} records (docs/finetune.md), text through the tokenizer or
// token ids. Writes into --out:
//   loss.csv, throughput.csv   one row per step (loss.csv: the same bytes after any kill and --resume)
//   checkpoints/               step-NNNNNNNN/ every --checkpoint-every steps and at the end
//   model/                     the fine-tuned model in Hugging Face layout (sharded above --shard-gib),
//                              with meap_finetune.json naming the [MASK], pad and special ids
// --resume continues from the newest checkpoint bit for bit after checking that the run's
// settings, data included, match the checkpoint's (--allow-changes to continue anyway). Any error
// ends the program with one line on stderr and a non-zero exit.
//
// The run itself is one library call, meap::run::finetune (meap/run/finetune.hpp); this file is
// its command line.
#include "cli_options.hpp"
#include "runs.hpp"

#include <meap/dist/launch.hpp>
#include <meap/run/program.hpp>

#if defined(MEAP_HAS_SENTENCEPIECE)
#include <meap/text/sentencepiece.hpp>
#endif

#include <CLI/CLI.hpp>

#include <cstdint>
#include <memory>
#include <string>

namespace {

using meap_apps::at_least_one;
using meap_apps::at_least_zero;
using meap_apps::unsigned_64;

// The run's settings plus what only the command line decides: the device, the precision, MPI.
struct arguments {
  meap::run::finetune_options run;
  std::string device = "cpu";  // cpu, cuda or cuda:N
  std::string dtype;           // fp32 (CPU default), bf16 (CUDA default), fp16
  int cuda_ordinal = -1;
  double dist_timeout = 300;   // under mpirun: seconds a rank waits for the others
};

[[noreturn]] void bad_argument(const std::string& name, const std::string& value, const std::string& expected) {
  meap::throw_argument_error("meap_finetune", name, value, expected);
}

arguments parse(int argc, char** argv, int& exit_code) {
  arguments a;
  auto& o = a.run;
  CLI::App app{"meap_finetune: MEAP (or NTP) fine-tuning of a Hugging Face LLaMA, on the CPU or a CUDA GPU"};
  app.add_option("--model", o.model_dir, "Hugging Face LLaMA directory (config.json, model.safetensors or shards)")
      ->required();
  app.add_option("--data", o.data, "JSONL: {\"prompt\", \"answer\"} or {\"messages\"} records, text or token ids")->required();
  app.add_option("--tokenizer", o.tokenizer, "SentencePiece model for text records");
  app.add_option("--policy", o.policy, "meap (masked copy of long answers) or ntp")
      ->check(CLI::IsMember({"meap", "ntp"}))
      ->capture_default_str();
  app.add_option("--mask-ratio", o.mask_ratio, "fraction of a long answer's tokens masked in its copy")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--min-answer-tokens", o.min_answer_tokens, "answers of at most this many tokens get plain NTP")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{1} << 30))
      ->capture_default_str();
  app.add_option("--layout", o.layout, "concatenated ([P, A, P, A'], the paper) or separate (two rows, the official code)")
      ->check(CLI::IsMember({"concatenated", "separate"}))
      ->capture_default_str();
  app.add_option("--filling", o.filling, "packed (several examples per row) or padded (one per row)")
      ->check(CLI::IsMember({"packed", "padded"}))
      ->capture_default_str();
  app.add_option("--epochs", o.epochs, "passes over the data")->check(CLI::Range(std::int64_t{1}, std::int64_t{1000000}))
      ->capture_default_str();
  app.add_option("--batch", o.batch, "rows per step")->check(at_least_one)->capture_default_str();
  app.add_option("--micro-batches", o.micro_batches, "split each step's rows into this many micro-batches")
      ->check(at_least_one)
      ->capture_default_str();
  app.add_option("--seq-len", o.length, "row length (0: the model's max_position_embeddings, at most 2048)")
      ->check(at_least_zero)
      ->capture_default_str();
  app.add_option("--seed", o.seed, "masks and example order (0 to 2^64 - 1)")->check(unsigned_64)->capture_default_str();
  app.add_option("--lr", o.lr, "peak learning rate (warmup, then cosine to lr / 10)")->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--weight-decay", o.weight_decay, "AdamW's decoupled weight decay")->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--warmup", o.warmup, "warmup steps")->check(at_least_zero)->capture_default_str();
  app.add_option("--mask-id", o.mask_id, "the [MASK] id (default: the tokenizer's [MASK] piece, else a new token)")
      ->check(at_least_zero);
  app.add_option("--pad-id", o.pad_id, "the id of padding inputs (default: the tokenizer's pad, else EOS, else 0)")
      ->check(at_least_zero);
  app.add_option("--special-ids", o.special_ids, "answer ids never masked (the tokenizer's EOS is added)")
      ->check(at_least_zero);
  app.add_option("--checkpoint-every", o.checkpoint_every, "steps between checkpoints (0: only at the end)")
      ->check(at_least_zero)
      ->capture_default_str();
  app.add_option("--keep-checkpoints", o.keep_checkpoints, "complete checkpoints kept in <out>/checkpoints")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1000000}))
      ->capture_default_str();
  app.add_option("--out", o.out, "output directory")->capture_default_str();
  app.add_flag("--resume", o.resume, "continue from the newest checkpoint in <out>/checkpoints");
  app.add_flag("--zero1", o.zero1, "under mpirun: shard AdamW's state over the ranks (ZeRO-1)");
  app.add_option("--dist-timeout", a.dist_timeout,
                 "under mpirun: seconds a rank waits for the others before the run is ended")
      ->check(CLI::Range(1.0, 86400.0))
      ->capture_default_str();
  app.add_flag("--allow-changes", o.allow_changes, "with --resume: continue even where the settings differ")
      ->needs("--resume");
  app.add_option("--device", a.device, "cpu, cuda or cuda:N")->capture_default_str();
  app.add_option("--dtype", a.dtype, "fp32 (CPU default), bf16 (CUDA default) or fp16")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  app.add_option("--save-dtype", o.save_dtype, "the fine-tuned model's dtype (default: the input model's)")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  app.add_option("--shard-gib", o.shard_gib, "shard the fine-tuned model above this many GiB (0: one file)")
      ->check(CLI::Range(0.0, 1e6))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    exit_code = app.exit(e);
    return a;
  }
  if (o.batch % o.micro_batches != 0)
    bad_argument("--micro-batches", std::to_string(o.micro_batches), "a divisor of --batch = " + std::to_string(o.batch));
  if (o.policy == "meap" && (o.mask_ratio <= 0.0 || o.mask_ratio >= 1.0))
    bad_argument("--mask-ratio", std::to_string(o.mask_ratio), "a ratio in the open interval (0, 1)");
  // NTP masks nothing: a ratio given with it would be dropped without a word.
  if (o.policy == "ntp" && app.count("--mask-ratio") > 0)
    bad_argument("--mask-ratio", std::to_string(o.mask_ratio), "no --mask-ratio with --policy ntp (NTP masks nothing)");
  a.cuda_ordinal = meap::run::parse_device("meap_finetune", a.device);
  o.device_name = a.device;
  if (a.cuda_ordinal >= 0) {
    if (a.dtype.empty()) a.dtype = "bf16";
  } else {
    if (a.dtype.empty()) a.dtype = "fp32";
    if (a.dtype != "fp32")
      bad_argument("--dtype", a.dtype, "fp32 on the CPU (bfloat16 and half need --device cuda)");
  }
  return a;
}

// The tokenizer of --tokenizer (nullptr without it): SentencePiece when this build found it.
std::unique_ptr<meap::text::tokenizer> open_tokenizer(const std::string& path) {
  if (path.empty()) return nullptr;
#if defined(MEAP_HAS_SENTENCEPIECE)
  return std::make_unique<meap::text::sentencepiece_tokenizer>(path);
#else
  bad_argument("--tokenizer", path, "no tokenizer: this meap_finetune was built without SentencePiece "
                                    "(install libsentencepiece-dev and reconfigure), so only token-id data works");
#endif
}

}  // namespace

int main(int argc, char** argv) {
  meap::dist::launch ranks;
  return ranks.finish(meap::run::guarded_main(
      "meap_finetune", "try a smaller --batch or --seq-len, or more --micro-batches", [&] {
        int exit_code = -1;
        const auto a = parse(argc, argv, exit_code);
        if (exit_code >= 0) return exit_code;
        auto* host = ranks.start("meap_finetune", argc, argv, a.dist_timeout);
        if (a.run.zero1 && host == nullptr) bad_argument("--zero1", "set", "a run started by mpirun with several ranks");
        const auto tokenizer = open_tokenizer(a.run.tokenizer);
        if (a.cuda_ordinal >= 0)
          return meap_apps::finetune_on_cuda(a.run, tokenizer.get(), a.dtype, a.device, a.cuda_ordinal, host);
        const meap::train::memory_budget budget{meap::train::available_host_memory(), "on this machine"};
        return meap::run::finetune<meap::fp32>(a.run, tokenizer.get(), meap::cpu{}, budget, host);
      }));
}
