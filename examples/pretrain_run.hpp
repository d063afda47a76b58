// examples/pretrain_run.hpp: the training loop of meap_pretrain, written once for every device
// and precision. meap_pretrain.cpp parses the command line and runs it on the CPU; on CUDA,
// meap_pretrain_cuda.cu instantiates the same loop for meap::cuda (bf16, fp16 or fp32).
#pragma once

#include "run_support.hpp"

#include <meap/dist/process_group.hpp>
#include <meap/io/json_fields.hpp>
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
  bool zero1 = false;           // under mpirun: shard AdamW's state over the ranks (ZeRO-1)
  double dist_timeout = 300;    // under mpirun: seconds a rank waits for the others before it gives up
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

using meap_examples::memory_budget;

// Trains with precision P on `device`; `peak_flops` > 0 adds MFU to the progress line. With a
// group (mpirun), as one rank of a data-parallel run: every rank samples the same global batch
// and trains its rows; rank 0 writes the outputs and prints.
template <class P, class Device, class Policy>
int run(const arguments& a, std::optional<Policy> policy, const Device& device, double peak_flops,
        const memory_budget& budget, meap::dist::process_group<Device>* group = nullptr) {
  const std::int64_t ranks = group != nullptr ? group->size() : 1;
  if (a.batch % (a.micro_batches * ranks) != 0)
    bad_argument("--batch", std::to_string(a.batch),
                 "a multiple of --micro-batches (" + std::to_string(a.micro_batches) + ") times the " +
                     std::to_string(ranks) + " ranks");
  std::optional<meap::token_dataset> dataset;
  const std::int64_t data_vocab = data_vocabulary(a, dataset);
  const auto config = read_config(a, data_vocab);
  meap_examples::check_training_memory<P>("meap_pretrain", config, a.batch / a.micro_batches / ranks, a.length, budget,
                                         "--batch/--seq-len/--config");
  const std::int32_t mask_id = static_cast<std::int32_t>(config.vocab - 1);
  meap_examples::rank_role role;
  if (group != nullptr) {
    role.lead = group->rank() == 0;
    role.share = [group](std::string& text) { group->broadcast_host(text, 0); };
  }
  meap_examples::training_output output("meap_pretrain", a.out, a.keep_checkpoints, role);

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
  if (group != nullptr) trainer.distribute(*group, a.zero1 ? meap::dist::sharding::zero1 : meap::dist::sharding::replicated);
  output.start(trainer, a.resume, a.allow_changes);
  if (group != nullptr && output.lead())
    std::fprintf(stderr, "data parallel: %lld ranks of %lld rows each%s\n", static_cast<long long>(ranks),
                 static_cast<long long>(a.batch / ranks), a.zero1 ? ", AdamW state sharded (ZeRO-1)" : "");
  if (output.lead()) std::fprintf(stderr,
               "model: %lld parameters (vocab %lld, d %lld, %lld layers); %s on %s; policy %s; %lld steps of %lld x %lld"
               " in %lld micro-batch(es)\n",
               static_cast<long long>(config.parameter_count()), static_cast<long long>(config.vocab),
               static_cast<long long>(config.d_model), static_cast<long long>(config.layers),
               std::string(meap::precision_name<P>()).c_str(), a.device.c_str(), a.policy.c_str(),
               static_cast<long long>(a.steps), static_cast<long long>(a.batch), static_cast<long long>(a.length),
               static_cast<long long>(a.micro_batches));
  const double flops_per_token = config.training_flops_per_token(a.length);

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
    if (r.skipped && output.lead())
      std::fprintf(stderr, "\nstep %llu skipped: %s\n", static_cast<unsigned long long>(step), r.skip_reason.c_str());
    output.log(r);
    smoothed = step == first ? r.loss : 0.9 * smoothed + 0.1 * r.loss;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double done = static_cast<double>(step + 1 - first);
    const double eta = elapsed / done * static_cast<double>(static_cast<std::uint64_t>(a.steps) - step - 1);
    char mfu[32] = "";
    if (peak_flops > 0)
      std::snprintf(mfu, sizeof mfu, "  MFU %4.1f%%",
                    100.0 * r.tokens_per_second * flops_per_token / (peak_flops * static_cast<double>(ranks)));
    if (output.lead())
      std::fprintf(stderr, "\rstep %6llu/%lld  loss %.4f (avg %.4f)  lr %.2e  |g| %.3f  %8.0f tok/s%s  ETA %s ",
                   static_cast<unsigned long long>(step + 1), static_cast<long long>(a.steps), r.loss, smoothed, r.lr,
                   r.grad_norm, r.tokens_per_second, mfu, meap_examples::format_duration(eta).c_str());
    if (a.checkpoint_every > 0 && (step + 1) % static_cast<std::uint64_t>(a.checkpoint_every) == 0) (void)output.checkpoint(trainer);
  }
  const auto final_checkpoint = output.checkpoint(trainer);
  if (output.lead())
    std::fprintf(stderr, "\ndone: final loss (avg) %.4f, %d skipped steps; loss curve %s, checkpoint %s\n", smoothed,
                 skipped, output.loss_log().path().c_str(), final_checkpoint.path.c_str());
  return 0;
}

// The policy the arguments name, then run<P, Device, Policy>.
template <class P, class Device>
int run_with_policy(const arguments& a, const Device& device, double peak_flops, const memory_budget& budget,
                    meap::dist::process_group<Device>* group = nullptr) {
  if (a.policy == "ntp")
    return run<P, Device, meap::masking::fixed_ratio>(a, std::nullopt, device, peak_flops, budget, group);
  if (a.policy == "span")
    return run<P, Device, meap::masking::span>(a, meap::masking::span{.ratio = a.mask_ratio}, device, peak_flops, budget,
                                               group);
  return run<P, Device, meap::masking::fixed_ratio>(a, meap::masking::fixed_ratio{.ratio = a.mask_ratio}, device,
                                                    peak_flops, budget, group);
}

// Defined in meap_pretrain_cuda.cu when meap is built with CUDA. `host`: the MPI group under
// mpirun (the GPU run then goes over NCCL), or nullptr.
int run_cuda(const arguments& a, meap::dist::process_group<meap::cpu>* host);

}  // namespace meap_pretrain
