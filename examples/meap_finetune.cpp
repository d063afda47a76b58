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
#include "cli_options.hpp"
#include "finetune_run.hpp"
#include "dist_launch.hpp"
#include "program_main.hpp"

#if defined(MEAP_HAS_SENTENCEPIECE)
#include <meap/text/sentencepiece.hpp>
#endif

#include <CLI/CLI.hpp>

#include <string>

namespace {

using meap_examples::at_least_one;
using meap_examples::at_least_zero;
using meap_examples::unsigned_64;

meap_finetune::arguments parse(int argc, char** argv, int& exit_code) {
  meap_finetune::arguments a;
  CLI::App app{"meap_finetune: MEAP (or NTP) fine-tuning of a Hugging Face LLaMA, on the CPU or a CUDA GPU"};
  app.add_option("--model", a.model_dir, "Hugging Face LLaMA directory (config.json, model.safetensors or shards)")
      ->required();
  app.add_option("--data", a.data, "JSONL: {\"prompt\", \"answer\"} or {\"messages\"} records, text or token ids")->required();
  app.add_option("--tokenizer", a.tokenizer, "SentencePiece model for text records");
  app.add_option("--policy", a.policy, "meap (masked copy of long answers) or ntp")
      ->check(CLI::IsMember({"meap", "ntp"}))
      ->capture_default_str();
  app.add_option("--mask-ratio", a.mask_ratio, "fraction of a long answer's tokens masked in its copy")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--min-answer-tokens", a.min_answer_tokens, "answers of at most this many tokens get plain NTP")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{1} << 30))
      ->capture_default_str();
  app.add_option("--layout", a.layout, "concatenated ([P, A, P, A'], the paper) or separate (two rows, the official code)")
      ->check(CLI::IsMember({"concatenated", "separate"}))
      ->capture_default_str();
  app.add_option("--filling", a.filling, "packed (several examples per row) or padded (one per row)")
      ->check(CLI::IsMember({"packed", "padded"}))
      ->capture_default_str();
  app.add_option("--epochs", a.epochs, "passes over the data")->check(CLI::Range(std::int64_t{1}, std::int64_t{1000000}))
      ->capture_default_str();
  app.add_option("--batch", a.batch, "rows per step")->check(at_least_one)->capture_default_str();
  app.add_option("--micro-batches", a.micro_batches, "split each step's rows into this many micro-batches")
      ->check(at_least_one)
      ->capture_default_str();
  app.add_option("--seq-len", a.length, "row length (0: the model's max_position_embeddings, at most 2048)")
      ->check(at_least_zero)
      ->capture_default_str();
  app.add_option("--seed", a.seed, "masks and example order (0 to 2^64 - 1)")->check(unsigned_64)->capture_default_str();
  app.add_option("--lr", a.lr, "peak learning rate (warmup, then cosine to lr / 10)")->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--weight-decay", a.weight_decay, "AdamW's decoupled weight decay")->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--warmup", a.warmup, "warmup steps")->check(at_least_zero)->capture_default_str();
  app.add_option("--mask-id", a.mask_id, "the [MASK] id (default: the tokenizer's [MASK] piece, else a new token)")
      ->check(at_least_zero);
  app.add_option("--pad-id", a.pad_id, "the id of padding inputs (default: the tokenizer's pad, else EOS, else 0)")
      ->check(at_least_zero);
  app.add_option("--special-ids", a.special_ids, "answer ids never masked (the tokenizer's EOS is added)")
      ->check(at_least_zero);
  app.add_option("--checkpoint-every", a.checkpoint_every, "steps between checkpoints (0: only at the end)")
      ->check(at_least_zero)
      ->capture_default_str();
  app.add_option("--keep-checkpoints", a.keep_checkpoints, "complete checkpoints kept in <out>/checkpoints")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1000000}))
      ->capture_default_str();
  app.add_option("--out", a.out, "output directory")->capture_default_str();
  app.add_flag("--resume", a.resume, "continue from the newest checkpoint in <out>/checkpoints");
  app.add_flag("--zero1", a.zero1, "under mpirun: shard AdamW's state over the ranks (ZeRO-1)");
  app.add_option("--dist-timeout", a.dist_timeout,
                 "under mpirun: seconds a rank waits for the others before the run is ended")
      ->check(CLI::Range(1.0, 86400.0))
      ->capture_default_str();
  app.add_flag("--allow-changes", a.allow_changes, "with --resume: continue even where the settings differ")
      ->needs("--resume");
  app.add_option("--device", a.device, "cpu, cuda or cuda:N")->capture_default_str();
  app.add_option("--dtype", a.dtype, "fp32 (CPU default), bf16 (CUDA default) or fp16")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  app.add_option("--save-dtype", a.save_dtype, "the fine-tuned model's dtype (default: the input model's)")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  app.add_option("--shard-gib", a.shard_gib, "shard the fine-tuned model above this many GiB (0: one file)")
      ->check(CLI::Range(0.0, 1e6))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    exit_code = app.exit(e);
    return a;
  }
  if (a.batch % a.micro_batches != 0)
    meap_finetune::bad_argument("--micro-batches", std::to_string(a.micro_batches),
                                "a divisor of --batch = " + std::to_string(a.batch));
  if (a.policy == "meap" && (a.mask_ratio <= 0.0 || a.mask_ratio >= 1.0))
    meap_finetune::bad_argument("--mask-ratio", std::to_string(a.mask_ratio), "a ratio in the open interval (0, 1)");
  a.cuda_ordinal = meap_examples::cuda_ordinal_of("meap_finetune", a.device);
  if (a.cuda_ordinal >= 0) {
    if (a.dtype.empty()) a.dtype = "bf16";
  } else {
    if (a.dtype.empty()) a.dtype = "fp32";
    if (a.dtype != "fp32")
      meap_finetune::bad_argument("--dtype", a.dtype, "fp32 on the CPU (bfloat16 and half need --device cuda)");
  }
  return a;
}

}  // namespace

std::unique_ptr<meap::text::tokenizer> meap_finetune::open_tokenizer(const arguments& a) {
  if (a.tokenizer.empty()) return nullptr;
#if defined(MEAP_HAS_SENTENCEPIECE)
  return std::make_unique<meap::text::sentencepiece_tokenizer>(a.tokenizer);
#else
  bad_argument("--tokenizer", a.tokenizer, "no tokenizer: this meap_finetune was built without SentencePiece "
                                           "(install libsentencepiece-dev and reconfigure), so only token-id data works");
#endif
}

int main(int argc, char** argv) {
  meap_examples::rank_group ranks;
  return ranks.finish(meap_examples::guarded_main(
      "meap_finetune", "try a smaller --batch or --seq-len, or more --micro-batches", [&] {
        int exit_code = -1;
        const auto a = parse(argc, argv, exit_code);
        if (exit_code >= 0) return exit_code;
        auto* host = ranks.start("meap_finetune", argc, argv, a.dist_timeout);
        if (a.zero1 && host == nullptr) meap_finetune::bad_argument("--zero1", "set", "a run started by mpirun with several ranks");
        if (a.cuda_ordinal >= 0) return meap_finetune::run_cuda(a, host);
        const meap_examples::memory_budget budget{meap::train::available_host_memory(), "on this machine"};
        return meap_finetune::run<meap::fp32>(a, meap::cpu{}, budget, host);
      }));
}

#if !defined(MEAP_FINETUNE_WITH_CUDA)
int meap_finetune::run_cuda(const arguments& a, meap::dist::process_group<meap::cpu>*) {
  bad_argument("--device", a.device, "cpu: this meap_finetune was built without CUDA (configure meap with a CUDA "
                                     "toolkit and MEAP_ENABLE_CUDA=ON)");
}
#endif
