// meap_pretrain: a command-line MEAP (or NTP) pretraining run, on the CPU or a CUDA GPU.
//
//   meap_pretrain --data synthetic --policy meap --steps 200 --out run/
//   meap_pretrain --data tokens.u16 --config model.json --policy meap --mask-ratio 0.15
//                 --steps 10000 --checkpoint-every 500 --out run/ [--resume]
//   meap_pretrain --device cuda:0 --dtype bf16 --batch 64 --micro-batches 4 ...
//
// The run itself is one library call, meap::run::pretrain (meap/run/pretrain.hpp); this file is
// its command line.
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
#include "runs.hpp"

#include <meap/dist/launch.hpp>
#include <meap/run/program.hpp>

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>

namespace {

using meap_apps::at_least_one;
using meap_apps::at_least_zero;
using meap_apps::unsigned_64;

// The run's settings plus what only the command line decides: the device, the precision, MPI.
struct arguments {
  meap::run::pretrain_options run;
  std::string device = "cpu";  // cpu, cuda or cuda:N
  std::string dtype;           // fp32 (CPU default; also fp64), bf16 (CUDA default), fp16
  double peak_tflops = 0;      // MFU's denominator on CUDA; 0: estimated from the device
  int cuda_ordinal = -1;       // parsed from device
  double dist_timeout = 300;   // under mpirun: seconds a rank waits for the others before it gives up
};

[[noreturn]] void bad_argument(const std::string& name, const std::string& value, const std::string& expected) {
  meap::throw_argument_error("meap_pretrain", name, value, expected);
}

arguments parse(int argc, char** argv, int& exit_code) {
  arguments a;
  auto& o = a.run;
  CLI::App app{"meap_pretrain: MEAP (or NTP) pretraining of a LLaMA-style model, on the CPU or a CUDA GPU"};
  app.add_option("--data", o.data, "synthetic, or a token file (.u16 / .u32)")->capture_default_str();
  app.add_option("--config", o.config_path, "model config JSON (meap::nn::llama_config fields)");
  app.add_option("--policy", o.policy, "ntp, meap (fixed ratio) or span")
      ->check(CLI::IsMember({"ntp", "meap", "span"}))
      ->capture_default_str();
  app.add_option("--mask-ratio", o.mask_ratio, "fraction of inputs masked")->check(CLI::Range(0.0, 1.0))->capture_default_str();
  app.add_option("--steps", o.steps, "optimizer steps")->check(at_least_one)->capture_default_str();
  app.add_option("--batch", o.batch, "rows per step (the global batch)")->check(at_least_one)->capture_default_str();
  app.add_option("--seq-len", o.length, "tokens per row")->check(CLI::Range(std::int64_t{2}, std::int64_t{1} << 30))
      ->capture_default_str();
  app.add_option("--micro-batches", o.micro_batches, "split each step's rows into this many micro-batches (gradient accumulation)")
      ->check(at_least_one)
      ->capture_default_str();
  app.add_option("--seed", o.seed, "initialization, masking and data seed (0 to 2^64 - 1)")
      ->check(unsigned_64)
      ->capture_default_str();
  app.add_option("--lr", o.lr, "peak learning rate (warmup, then cosine to lr / 10)")->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--warmup", o.warmup, "warmup steps")->check(at_least_zero)->capture_default_str();
  app.add_option("--checkpoint-every", o.checkpoint_every, "steps between checkpoints (0: only at the end)")
      ->check(at_least_zero)
      ->capture_default_str();
  app.add_option("--out", o.out, "output directory")->capture_default_str();
  app.add_option("--keep-checkpoints", o.keep_checkpoints, "complete checkpoints kept in <out>/checkpoints (the newest)")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1000000}))
      ->capture_default_str();
  app.add_flag("--resume", o.resume, "continue from the newest checkpoint in <out>/checkpoints");
  app.add_flag("--allow-changes", o.allow_changes,
               "with --resume: continue even where this run's settings (lr, policy, seed, ...) differ from the "
               "checkpoint's, listing the differences")
      ->needs("--resume");
  app.add_option("--device", a.device, "cpu, cuda or cuda:N")->capture_default_str();
  app.add_option("--dtype", a.dtype, "fp32 (CPU default; also fp64 on the CPU), bf16 (CUDA default) or fp16")
      ->check(CLI::IsMember({"fp64", "fp32", "bf16", "fp16"}));
  app.add_option("--peak-tflops", a.peak_tflops, "the GPU's peak TFLOP/s for MFU (default: estimated from the device)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--zero1", o.zero1, "under mpirun: shard AdamW's state over the ranks (ZeRO-1)");
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
  if (o.batch % o.micro_batches != 0)
    bad_argument("--micro-batches", std::to_string(o.micro_batches), "a divisor of --batch = " + std::to_string(o.batch));
  // NTP masks nothing: a ratio given with it would be dropped without a word.
  if (o.policy == "ntp" && app.count("--mask-ratio") > 0)
    bad_argument("--mask-ratio", std::to_string(o.mask_ratio), "no --mask-ratio with --policy ntp (NTP masks nothing)");
  a.cuda_ordinal = meap::run::parse_device("meap_pretrain", a.device);
  o.device_name = a.device;
  if (a.cuda_ordinal >= 0) {
    if (a.dtype.empty()) a.dtype = "bf16";
    if (a.dtype == "fp64") bad_argument("--dtype", a.dtype, "bf16, fp16 or fp32 on CUDA");
  } else {
    if (a.dtype.empty()) a.dtype = "fp32";
    if (a.dtype != "fp32" && a.dtype != "fp64")
      bad_argument("--dtype", a.dtype, "fp32 or fp64 on the CPU (bfloat16 and half need --device cuda)");
  }
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  meap::dist::launch ranks;
  return ranks.finish(meap::run::guarded_main("meap_pretrain", "try a smaller --batch, --seq-len or model", [&] {
    int exit_code = -1;
    const auto a = parse(argc, argv, exit_code);
    if (exit_code >= 0) return exit_code;
    auto* host = ranks.start("meap_pretrain", argc, argv, a.dist_timeout);
    if (a.run.zero1 && host == nullptr) bad_argument("--zero1", "set", "a run started by mpirun with several ranks");
    if (a.cuda_ordinal >= 0) return meap_apps::pretrain_on_cuda(a.run, a.dtype, a.device, a.cuda_ordinal, a.peak_tflops, host);
    const meap::train::memory_budget budget{meap::train::available_host_memory(), "on this machine"};
    if (a.dtype == "fp64") return meap::run::pretrain<meap::fp64>(a.run, meap::cpu{}, budget, host);
    return meap::run::pretrain<meap::fp32>(a.run, meap::cpu{}, budget, host);
  }));
}
