// meap_pretrain: a command-line MEAP (or NTP) pretraining run, on the CPU or a CUDA GPU.
//
//   meap_pretrain --data synthetic --policy meap --steps 200 --out run/
//   meap_pretrain --data tokens.u16 --config model.json --policy meap --mask-ratio 0.15
//                 --steps 10000 --checkpoint-every 500 --out run/ [--resume]
//   meap_pretrain --device cuda:0 --dtype bf16 --batch 64 --micro-batches 4 ...
//
// Data: a flat binary token file (.u16 / .u32, see docs/io.md) sampled in random windows keyed by
// (seed, step), or `synthetic`: the built-in affine-recurrence task, documents where
// x[t+1] = (a x[t] + c) mod n with (a, c) drawn per document, so a model must read the context to
// predict. Writes into --out:
//   loss.csv          step, loss, lr, grad_norm, loss_tokens, masked, skipped: the same bytes on
//                     every rerun and after any kill and --resume
//   throughput.csv    step, seconds, tokens_per_second
//   checkpoints/      step-NNNNNNNN/ every --checkpoint-every steps and at the end, each committed
//                     as one unit (Hugging Face layout + trainer state), the newest
//                     --keep-checkpoints kept, `latest` linking the newest
// --resume continues from the newest checkpoint bit for bit (same device and dtype), after
// checking that the run's settings match the checkpoint's (--allow-changes to continue anyway).
// Progress with tokens/s, MFU on CUDA, and an ETA goes to stderr. The model config is a JSON file
// with the fields of meap::nn::llama_config (vocab, d_model, layers, heads, kv_heads, ffn, max_seq,
// rope_theta, norm_eps, tied_head); missing fields keep their defaults, unknown ones are refused.
// A run whose estimated memory exceeds what the device has free is refused before it allocates.
// The command line is parsed with CLI11; any error ends the program with one line on stderr and
// a non-zero exit.
//
// Data parallel: `mpirun -np N meap_pretrain ...` (built with MPI: meap::dist) runs N ranks that
// each train --batch / N rows of every step (the same global batch and masks as one process);
// rank 0 writes --out and prints. --zero1 shards AdamW's state over the ranks; --device cuda puts
// each rank on GPU <local rank> and reduces over NCCL. docs/distributed.md.
#include "cli_options.hpp"
#include "dist_launch.hpp"
#include "pretrain_run.hpp"
#include "program_main.hpp"

#include <CLI/CLI.hpp>


#include <cstdio>
#include <exception>
#include <new>
#include <optional>
#include <string>

namespace {

using meap_examples::at_least_one;
using meap_examples::at_least_zero;
using meap_examples::unsigned_64;

meap_pretrain::arguments parse(int argc, char** argv, int& exit_code) {
  meap_pretrain::arguments a;
  CLI::App app{"meap_pretrain: MEAP (or NTP) pretraining of a LLaMA-style model, on the CPU or a CUDA GPU"};
  app.add_option("--data", a.data, "synthetic, or a token file (.u16 / .u32)")->capture_default_str();
  app.add_option("--config", a.config_path, "model config JSON (meap::nn::llama_config fields)");
  app.add_option("--policy", a.policy, "ntp, meap (fixed ratio) or span")
      ->check(CLI::IsMember({"ntp", "meap", "span"}))
      ->capture_default_str();
  app.add_option("--mask-ratio", a.mask_ratio, "fraction of inputs masked")->check(CLI::Range(0.0, 1.0))->capture_default_str();
  app.add_option("--steps", a.steps, "optimizer steps")->check(at_least_one)->capture_default_str();
  app.add_option("--batch", a.batch, "rows per step (the global batch)")->check(at_least_one)->capture_default_str();
  app.add_option("--seq-len", a.length, "tokens per row")->check(CLI::Range(std::int64_t{2}, std::int64_t{1} << 30))
      ->capture_default_str();
  app.add_option("--micro-batches", a.micro_batches, "split each step's rows into this many micro-batches (gradient accumulation)")
      ->check(at_least_one)
      ->capture_default_str();
  app.add_option("--seed", a.seed, "initialization, masking and data seed (0 to 2^64 - 1)")
      ->check(unsigned_64)
      ->capture_default_str();
  app.add_option("--lr", a.lr, "peak learning rate (warmup, then cosine to lr / 10)")->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--warmup", a.warmup, "warmup steps")->check(at_least_zero)->capture_default_str();
  app.add_option("--checkpoint-every", a.checkpoint_every, "steps between checkpoints (0: only at the end)")
      ->check(at_least_zero)
      ->capture_default_str();
  app.add_option("--out", a.out, "output directory")->capture_default_str();
  app.add_option("--keep-checkpoints", a.keep_checkpoints, "complete checkpoints kept in <out>/checkpoints (the newest)")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1000000}))
      ->capture_default_str();
  app.add_flag("--resume", a.resume, "continue from the newest checkpoint in <out>/checkpoints");
  app.add_flag("--allow-changes", a.allow_changes,
               "with --resume: continue even where this run's settings (lr, policy, seed, ...) differ from the "
               "checkpoint's, listing the differences")
      ->needs("--resume");
  app.add_option("--device", a.device, "cpu, cuda or cuda:N")->capture_default_str();
  app.add_option("--dtype", a.dtype, "fp32 (CPU default; also fp64 on the CPU), bf16 (CUDA default) or fp16")
      ->check(CLI::IsMember({"fp64", "fp32", "bf16", "fp16"}));
  app.add_option("--peak-tflops", a.peak_tflops, "the GPU's peak TFLOP/s for MFU (default: estimated from the device)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--zero1", a.zero1, "under mpirun: shard AdamW's state over the ranks (ZeRO-1)");
  app.add_option("--dist-timeout", a.dist_timeout,
                 "under mpirun: seconds a rank waits for the others before the run is ended")
      ->check(CLI::Range(1.0, 86400.0))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    exit_code = app.exit(e);  // --help: the usage and 0; an error: one line and non-zero
    return a;
  }
  if (a.batch % a.micro_batches != 0)
    meap_pretrain::bad_argument("--micro-batches", std::to_string(a.micro_batches),
                                "a divisor of --batch = " + std::to_string(a.batch));
  a.cuda_ordinal = meap_examples::cuda_ordinal_of("meap_pretrain", a.device);
  if (a.cuda_ordinal >= 0) {
    if (a.dtype.empty()) a.dtype = "bf16";
    if (a.dtype == "fp64") meap_pretrain::bad_argument("--dtype", a.dtype, "bf16, fp16 or fp32 on CUDA");
  } else {
    if (a.dtype.empty()) a.dtype = "fp32";
    if (a.dtype != "fp32" && a.dtype != "fp64")
      meap_pretrain::bad_argument("--dtype", a.dtype, "fp32 or fp64 on the CPU (bfloat16 and half need --device cuda)");
  }
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  meap_examples::rank_group ranks;
  return ranks.finish(meap_examples::guarded_main("meap_pretrain", "try a smaller --batch, --seq-len or model", [&] {
    int exit_code = -1;
    const auto a = parse(argc, argv, exit_code);
    if (exit_code >= 0) return exit_code;
    auto* host = ranks.start("meap_pretrain", argc, argv, a.dist_timeout);
    if (a.zero1 && host == nullptr) meap_pretrain::bad_argument("--zero1", "set", "a run started by mpirun with several ranks");
    if (a.cuda_ordinal >= 0) return meap_pretrain::run_cuda(a, host);
    const meap_pretrain::memory_budget budget{meap::train::available_host_memory(), "on this machine"};
    if (a.dtype == "fp64") return meap_pretrain::run_with_policy<meap::fp64>(a, meap::cpu{}, 0.0, budget, host);
    return meap_pretrain::run_with_policy<meap::fp32>(a, meap::cpu{}, 0.0, budget, host);
  }));
}

#if !defined(MEAP_PRETRAIN_WITH_CUDA)
// This build has no CUDA translation unit (MEAP_ENABLE_CUDA=OFF, or no CUDA toolkit found).
int meap_pretrain::run_cuda(const arguments& a, meap::dist::process_group<meap::cpu>*) {
  bad_argument("--device", a.device, "cpu: this meap_pretrain was built without CUDA (configure meap with a CUDA "
                                     "toolkit and MEAP_ENABLE_CUDA=ON)");
}
#endif
