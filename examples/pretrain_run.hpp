// examples/pretrain_run.hpp: the training loop of meap_pretrain, written once for every device
// and precision. meap_pretrain.cpp parses the command line and runs it on the CPU; on CUDA,
// meap_pretrain_cuda.cu instantiates the same loop for meap::cuda (bf16, fp16 or fp32).
#pragma once

#include <meap/io/json_fields.hpp>
#include <meap/io/step_log.hpp>
#include <meap/io/token_dataset.hpp>
#include <meap/masking/span.hpp>
#include <meap/train/checkpoint_series.hpp>
#include <meap/train/memory.hpp>
#include <meap/train/pretrain.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

namespace meap_pretrain {

struct arguments {
  std::string data = "synthetic";
  std::string config_path;
  std::string policy = "meap";
  double mask_ratio = 0.15;
  std::int64_t steps = 200;
  std::int64_t batch = 8;
  std::int64_t length = 128;
  std::int64_t micro_batches = 1;
  std::uint64_t seed = 1234;
  double lr = 1e-3;
  std::int64_t warmup = 20;
  std::int64_t checkpoint_every = 0;
  std::int64_t keep_checkpoints = 3;
  std::string out = "meap_pretrain_out";
  bool resume = false;
  bool allow_changes = false;   // --resume with settings that differ from the checkpoint's run
  std::string device = "cpu";   // cpu, cuda or cuda:N
  std::string dtype;            // fp32 (CPU default), bf16 (CUDA default), fp16
  double peak_tflops = 0;       // MFU's denominator on CUDA; 0: estimated from the device
  int cuda_ordinal = -1;        // parsed from device
};

[[noreturn]] inline void bad_argument(const std::string& name, const std::string& value, const std::string& expected) {
  meap::throw_argument_error("meap_pretrain", name, value, expected);
}

inline meap::nn::llama_config read_config(const arguments& a, std::int64_t data_vocab) {
  meap::nn::llama_config c;
  c.vocab = data_vocab + 1;  // one more id for [MASK]
  c.d_model = 128;
  c.layers = 2;
  c.heads = 4;
  c.kv_heads = 2;
  c.ffn = 344;
  c.max_seq = a.length;
  if (!a.config_path.empty()) {
    // The reader refuses what would otherwise convert silently: 64.9 or 1e30 for a count, a
    // string, a document that is not an object.
    const std::string text = meap::detail::read_small_file("meap_pretrain", a.config_path, 1 << 20, "config file");
    const auto j = meap::parse_json(text, "meap_pretrain", "--config " + a.config_path);
    const meap::json_fields fields(j, "meap_pretrain", "--config " + a.config_path);
    constexpr std::int64_t limit = std::int64_t{1} << 40;
    c.vocab = fields.integer_or("vocab", c.vocab, 1, limit);
    c.d_model = fields.integer_or("d_model", c.d_model, 1, limit);
    c.layers = fields.integer_or("layers", c.layers, 1, limit);
    c.heads = fields.integer_or("heads", c.heads, 1, limit);
    c.kv_heads = fields.integer_or("kv_heads", c.kv_heads, 1, limit);
    c.ffn = fields.integer_or("ffn", c.ffn, 1, limit);
    c.max_seq = fields.integer_or("max_seq", c.max_seq, 1, limit);
    c.rope_theta = fields.number_or("rope_theta", c.rope_theta);
    c.norm_eps = fields.number_or("norm_eps", c.norm_eps);
    c.tied_head = fields.boolean_or("tied_head", c.tied_head);
    for (const auto& [key, value] : j.items())
      if (key != "vocab" && key != "d_model" && key != "layers" && key != "heads" && key != "kv_heads" && key != "ffn" &&
          key != "max_seq" && key != "rope_theta" && key != "norm_eps" && key != "tied_head")
        bad_argument("--config", a.config_path + " with the field '" + key + "'",
                     "the fields vocab, d_model, layers, heads, kv_heads, ffn, max_seq, rope_theta, norm_eps, tied_head");
  }
  c.validate();
  if (c.vocab <= data_vocab)
    bad_argument("--config", "vocab = " + std::to_string(c.vocab),
                 "a vocabulary of at least " + std::to_string(data_vocab + 1) + " (the data's ids plus one for [MASK])");
  if (c.max_seq < a.length)
    bad_argument("--seq-len", std::to_string(a.length), "at most the config's max_seq = " + std::to_string(c.max_seq));
  return c;
}

// The built-in task: documents of the affine recurrence x[t+1] = (a x[t] + c) mod n.
inline constexpr std::int32_t synthetic_vocab = 64;

inline void synthetic_batch(std::uint64_t seed, std::uint64_t step, const meap::tensor_view<std::int32_t, meap::cpu>& out) {
  for (meap::index_t b = 0; b < out.size(0); ++b) {
    meap::philox_stream rng(seed ^ 0x73796e7468ull, step, static_cast<std::uint32_t>(b));
    meap::index_t t = 0;
    while (t < out.size(1)) {  // documents of 16..48 tokens back to back
      const std::int32_t a = 1 + 2 * static_cast<std::int32_t>(rng.next_below(synthetic_vocab / 2));  // odd: a bijection
      const std::int32_t c = static_cast<std::int32_t>(rng.next_below(synthetic_vocab));
      std::int32_t x = static_cast<std::int32_t>(rng.next_below(synthetic_vocab));
      const meap::index_t end = std::min<meap::index_t>(out.size(1), t + 16 + rng.next_below(33));
      for (; t < end; ++t) {
        out(b, t) = x;
        x = (a * x + c) % synthetic_vocab;
      }
    }
  }
}

inline std::string format_duration(double seconds) {
  const auto s = static_cast<long long>(seconds + 0.5);
  char text[32];
  std::snprintf(text, sizeof text, "%lld:%02lld:%02lld", s / 3600, (s / 60) % 60, s % 60);
  return text;
}

// The vocabulary the data needs: the largest id in a token file plus one, read once. Ids must
// leave room for [MASK] within int32 (the model's ids are int32).
inline std::int64_t data_vocabulary(const arguments& a, std::optional<meap::token_dataset>& dataset) {
  if (a.data == "synthetic") return synthetic_vocab;
  dataset.emplace(a.data, meap::token_dataset_options{a.length});
  const auto largest = dataset->largest_token();
  constexpr std::int64_t largest_allowed = (std::int64_t{1} << 31) - 3;  // id + 1 for [MASK] + 1 for the size
  if (static_cast<std::int64_t>(largest.id) > largest_allowed)
    bad_argument("--data", a.data + " (token " + std::to_string(largest.id) + " at index " + std::to_string(largest.index) + ")",
                 "token ids of at most " + std::to_string(largest_allowed) +
                     " (ids are int32 and one more id is needed for [MASK]); wrong width (.u16 / .u32) or not a token file?");
  return static_cast<std::int64_t>(largest.id) + 1;
}

// Refuses a run whose estimated memory exceeds what `available` (bytes; nullopt: unknown) offers,
// before anything is allocated, with the figures.
template <class P>
void check_memory(const arguments& a, const meap::nn::llama_config& config, std::optional<double> available,
                  const char* where) {
  const auto need = meap::train::estimate_training_memory<P>(config, a.batch / a.micro_batches, a.length);
  if (!available || need.total() <= *available) return;
  bad_argument("--batch/--seq-len/--config", "a run needing at least " + meap::train::format_bytes(need.total()) +
                                                 " (parameters and gradients " + meap::train::format_bytes(need.parameters) +
                                                 ", AdamW " + meap::train::format_bytes(need.optimizer) +
                                                 ", activations of a micro-batch " +
                                                 meap::train::format_bytes(need.activations) + ")",
               std::string("a run that fits in the ") + meap::train::format_bytes(*available) + " available " + where +
                   " (fewer rows per micro-batch with --micro-batches, a shorter --seq-len or a smaller model)");
}

// Where the run must fit: the bytes free on its device (nullopt: unknown) and the device's name.
struct memory_budget {
  std::optional<double> available;
  const char* where = "on this machine";
};

// The columns of <out>/loss.csv (the same on every machine and after any resume) and of
// <out>/throughput.csv (timings, which vary from run to run).
inline constexpr const char* loss_header = "step,loss,lr,grad_norm,loss_tokens,masked,skipped";
inline constexpr const char* throughput_header = "step,seconds,tokens_per_second";

inline std::string format_number(double x) {
  char text[40];
  std::snprintf(text, sizeof text, "%.9g", x);
  return text;
}

// Trains with precision P on `device`; `peak_flops` > 0 adds MFU to the progress line.
template <class P, class Device, class Policy>
int run(const arguments& a, std::optional<Policy> policy, const Device& device, double peak_flops,
        const memory_budget& budget) {
  std::optional<meap::token_dataset> dataset;
  const std::int64_t data_vocab = data_vocabulary(a, dataset);
  const auto config = read_config(a, data_vocab);
  check_memory<P>(a, config, budget.available, budget.where);
  const std::int32_t mask_id = static_cast<std::int32_t>(config.vocab - 1);

  // The output directory before any work: a run that cannot write its checkpoints or its loss
  // curve stops here, not after training. Opening the series takes its lock and removes what a
  // killed run left behind.
  const std::filesystem::path out(a.out);
  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (ec || !std::filesystem::is_directory(out))
    bad_argument("--out", a.out, "a directory that exists or can be created" + (ec ? " (" + ec.message() + ")" : std::string()));
  meap::train::checkpoint_series checkpoints(out / "checkpoints", static_cast<std::size_t>(a.keep_checkpoints));
  if (checkpoints.orphans_removed() > 0)
    std::fprintf(stderr, "removed %zu unfinished checkpoint file(s) of an interrupted run\n", checkpoints.orphans_removed());

  meap::nn::llama_model<P, Device> model(config, device);
  model.initialize(a.seed);
  meap::train::pretrain_options options;
  options.optimizer.lr = a.lr;
  options.schedule = {a.lr, a.lr / 10, std::min(a.warmup, a.steps), a.steps};
  options.masking.seed = a.seed;
  options.masking.mask_id = mask_id;
  options.micro_batches = a.micro_batches;
  options.run_metadata = {{"data", a.data}, {"batch", std::to_string(a.batch)}, {"seq_len", std::to_string(a.length)}};
  meap::train::pretrainer<P, Device, Policy> trainer(model, policy, options);

  std::optional<meap::step_log> loss_log, throughput_log;
  if (a.resume) {
    const auto newest = checkpoints.newest();
    if (!newest)
      bad_argument("--resume", (out / "checkpoints").string(), "a directory holding a checkpoint (step-*) to resume from");
    std::vector<std::string> changes;
    try {
      changes = trainer.resume(newest->path, a.allow_changes ? meap::train::resume_changes::allow
                                                             : meap::train::resume_changes::refuse);
    } catch (const meap::error& e) {
      if (a.allow_changes || std::string_view(e.what()).find("this run's settings") == std::string_view::npos) throw;
      throw meap::error(e.function(), e.argument(),
                        std::string(e.what()) + "; --allow-changes continues with this run's settings");
    }
    for (const auto& change : changes) std::fprintf(stderr, "warning: --allow-changes: %s\n", change.c_str());
    loss_log.emplace(meap::step_log::resume(out / "loss.csv", loss_header, trainer.next_step()));
    throughput_log.emplace(meap::step_log::resume(out / "throughput.csv", throughput_header, trainer.next_step()));
    std::fprintf(stderr, "resumed from %s at step %llu\n", newest->path.c_str(),
                 static_cast<unsigned long long>(trainer.next_step()));
    if (loss_log->missing_rows() > 0)
      std::fprintf(stderr, "warning: %s lacks %llu of the rows before step %llu (edited or deleted by hand?)\n",
                   loss_log->path().c_str(), static_cast<unsigned long long>(loss_log->missing_rows()),
                   static_cast<unsigned long long>(trainer.next_step()));
  } else {
    if (const auto newest = checkpoints.newest())
      bad_argument("--out", a.out, "a directory without checkpoints (it holds " + newest->path.string() +
                                       "): continue that run with --resume, or choose another --out");
    loss_log.emplace(meap::step_log::create(out / "loss.csv", loss_header));
    throughput_log.emplace(meap::step_log::create(out / "throughput.csv", throughput_header));
  }
  std::fprintf(stderr,
               "model: %lld parameters (vocab %lld, d %lld, %lld layers); %s on %s; policy %s; %lld steps of %lld x %lld"
               " in %lld micro-batch(es)\n",
               static_cast<long long>(config.parameter_count()), static_cast<long long>(config.vocab),
               static_cast<long long>(config.d_model), static_cast<long long>(config.layers),
               std::string(meap::precision_name<P>()).c_str(), a.device.c_str(), a.policy.c_str(),
               static_cast<long long>(a.steps), static_cast<long long>(a.batch), static_cast<long long>(a.length),
               static_cast<long long>(a.micro_batches));
  const double flops_per_token = config.training_flops_per_token(a.length);

  // A checkpoint: every row of the steps it covers on disk first, then the checkpoint as one unit.
  const auto save = [&] {
    loss_log->sync();
    throughput_log->sync();
    return trainer.save(checkpoints);
  };

  auto tokens = meap::zeros<std::int32_t>(meap::cpu{}, {a.batch, a.length + 1});
  const auto start = std::chrono::steady_clock::now();
  const std::uint64_t first = trainer.next_step();
  double smoothed = 0;
  int skipped = 0;
  while (trainer.next_step() < static_cast<std::uint64_t>(a.steps)) {
    const std::uint64_t step = trainer.next_step();
    if (dataset) dataset->sample_batch(meap::cpu{}, a.seed, step, tokens.view());
    else synthetic_batch(a.seed, step, tokens.view());
    const auto r = trainer.step(tokens.view());
    skipped += r.skipped;
    if (r.skipped) std::fprintf(stderr, "\nstep %llu skipped: %s\n", static_cast<unsigned long long>(step), r.skip_reason.c_str());
    loss_log->append(step, format_number(r.loss) + ',' + format_number(r.lr) + ',' + format_number(r.grad_norm) + ',' +
                               std::to_string(r.loss_tokens) + ',' + std::to_string(r.masked) + ',' +
                               std::to_string(r.skipped ? 1 : 0));
    throughput_log->append(step, format_number(r.seconds) + ',' + format_number(r.tokens_per_second));
    smoothed = step == first ? r.loss : 0.9 * smoothed + 0.1 * r.loss;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double done = static_cast<double>(step + 1 - first);
    const double eta = elapsed / done * static_cast<double>(static_cast<std::uint64_t>(a.steps) - step - 1);
    char mfu[32] = "";
    if (peak_flops > 0)
      std::snprintf(mfu, sizeof mfu, "  MFU %4.1f%%", 100.0 * r.tokens_per_second * flops_per_token / peak_flops);
    std::fprintf(stderr, "\rstep %6llu/%lld  loss %.4f (avg %.4f)  lr %.2e  |g| %.3f  %8.0f tok/s%s  ETA %s ",
                 static_cast<unsigned long long>(step + 1), static_cast<long long>(a.steps), r.loss, smoothed, r.lr,
                 r.grad_norm, r.tokens_per_second, mfu, format_duration(eta).c_str());
    if (a.checkpoint_every > 0 && (step + 1) % static_cast<std::uint64_t>(a.checkpoint_every) == 0) (void)save();
  }
  const auto final_checkpoint = save();
  std::fprintf(stderr, "\ndone: final loss (avg) %.4f, %d skipped steps; loss curve %s, checkpoint %s\n", smoothed, skipped,
               loss_log->path().c_str(), final_checkpoint.path.c_str());
  return 0;
}

// The policy the arguments name, then run<P, Device, Policy>.
template <class P, class Device>
int run_with_policy(const arguments& a, const Device& device, double peak_flops, const memory_budget& budget) {
  if (a.policy == "ntp") return run<P, Device, meap::masking::fixed_ratio>(a, std::nullopt, device, peak_flops, budget);
  if (a.policy == "span")
    return run<P, Device, meap::masking::span>(a, meap::masking::span{.ratio = a.mask_ratio}, device, peak_flops, budget);
  return run<P, Device, meap::masking::fixed_ratio>(a, meap::masking::fixed_ratio{.ratio = a.mask_ratio}, device,
                                                    peak_flops, budget);
}

// Defined in meap_pretrain_cuda.cu when meap is built with CUDA.
int run_cuda(const arguments& a);

}  // namespace meap_pretrain
