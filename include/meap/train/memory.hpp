// meap/train/memory.hpp: how much memory a training run will need, estimated before anything is
// allocated, and how much the machine has, so that a run too large for it is refused with the
// figures (instead of a std::bad_alloc, the OOM killer or minutes of swapping).
//
//   const auto need = meap::train::estimate_training_memory<meap::fp32>(config, rows, length);
//   if (const auto have = meap::train::available_host_memory(); have && need.total > *have) ...
//
// The estimate counts what meap's model and trainer hold: the flat master, compute and gradient
// buffers, AdamW's two moments, and per token of a micro-batch the activations one layer keeps for
// backward (the normed inputs, residual, q, k, v, attention output, log-sum-exp, SwiGLU's gate,
// up and hidden) times the layer count, plus the transient buffers of backward. Allocator slack
// and the CUDA context come on top: it is a lower bound, which is what a refusal needs.
#pragma once

#include <meap/core/dims.hpp>
#include <meap/core/error.hpp>
#include <meap/core/precision.hpp>
#include <meap/nn/config.hpp>

#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>

namespace meap::train {

struct memory_estimate {
  double parameters = 0;   // master + compute copy + gradients (bytes)
  double optimizer = 0;    // AdamW's exp_avg and exp_avg_sq
  double activations = 0;  // one micro-batch's saved activations and backward's transients
  double total() const { return parameters + optimizer + activations; }
};

// "12.3 GiB"
inline std::string format_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int unit = 0;
  while (bytes >= 1024.0 && unit < 6) {
    bytes /= 1024.0;
    ++unit;
  }
  char text[48];
  std::snprintf(text, sizeof text, unit == 0 ? "%.0f %s" : "%.1f %s", bytes, units[unit]);
  return text;
}

// The estimate for precision P (fp32, fp64, bf16_mixed, fp16_mixed), `rows` rows of `length`
// tokens per micro-batch. Computed in floating point: any config and size give a finite figure.
template <class P>
memory_estimate estimate_training_memory(const nn::llama_config& config, index_t rows, index_t length) {
  using M = typename P::master_t;
  using T = typename P::compute_t;
  using G = typename P::grad_t;
  const double parameters = static_cast<double>(config.vocab) * static_cast<double>(config.d_model) *
                                (config.tied_head ? 1.0 : 2.0) +
                            static_cast<double>(config.layers) *
                                (2.0 * static_cast<double>(config.d_model) * static_cast<double>(config.d_model) +
                                 2.0 * static_cast<double>(config.d_model) * static_cast<double>(config.kv_heads) *
                                     static_cast<double>(config.heads > 0 ? config.d_model / config.heads : 0) +
                                 3.0 * static_cast<double>(config.d_model) * static_cast<double>(config.ffn));
  memory_estimate e;
  const double compute_copy = std::is_same_v<M, T> ? 0.0 : sizeof(T);
  e.parameters = parameters * (sizeof(M) + compute_copy + sizeof(G));
  e.optimizer = parameters * 2.0 * sizeof(M);
  const double d = static_cast<double>(config.d_model), f = static_cast<double>(config.ffn);
  const double kv = static_cast<double>(config.kv_heads) * static_cast<double>(config.heads > 0 ? config.d_model / config.heads : 0);
  const double per_token_layer = (7.0 * d + 2.0 * kv + 3.0 * f) * sizeof(T) + static_cast<double>(config.heads) * 4.0 + 8.0;
  const double tokens = static_cast<double>(rows) * static_cast<double>(length);
  e.activations = tokens * (static_cast<double>(config.layers) * per_token_layer + 4.0 * (d + f) * sizeof(T));
  return e;
}

// Bytes this process can still allocate on the host: MemAvailable from /proc/meminfo, lowered to
// the cgroup (v2) limit minus usage when the process runs in a limited container. nullopt where
// neither can be read (not Linux).
inline std::optional<double> available_host_memory() {
  std::optional<double> available;
  if (std::ifstream meminfo("/proc/meminfo"); meminfo) {
    std::string key;
    double kib = 0;
    std::string unit;
    while (meminfo >> key >> kib) {
      std::getline(meminfo, unit);
      if (key == "MemAvailable:") {
        available = kib * 1024.0;
        break;
      }
    }
  }
  std::ifstream limit_file("/sys/fs/cgroup/memory.max"), usage_file("/sys/fs/cgroup/memory.current");
  std::string limit_text;
  double usage = 0;
  if (limit_file >> limit_text && limit_text != "max" && usage_file >> usage) {
    const double room = std::strtod(limit_text.c_str(), nullptr) - usage;
    if (!available || room < *available) available = room > 0 ? room : 0.0;
  }
  return available;
}

// Where a run must fit: the bytes free on its device (nullopt: unknown, nothing is refused) and
// where that is, for the message ("on this machine", "on the GPU").
struct memory_budget {
  std::optional<double> available;
  const char* where = "on this machine";
};

// Refuses, before anything is allocated, a run of precision P whose estimated memory exceeds the
// budget: meap::error from `program` naming `options` (what the user can change) with the
// estimate's parts and what is available. `rows`: the rows of one micro-batch on this process.
template <class P>
void check_training_memory(const char* program, const nn::llama_config& config, index_t rows, index_t length,
                           const memory_budget& budget, const char* options) {
  const auto need = estimate_training_memory<P>(config, rows, length);
  if (!budget.available || need.total() <= *budget.available) return;
  throw_argument_error(
      program, options,
      "a run needing at least " + format_bytes(need.total()) + " (parameters and gradients " +
          format_bytes(need.parameters) + ", AdamW " + format_bytes(need.optimizer) + ", activations of a micro-batch " +
          format_bytes(need.activations) + ")",
      std::string("a run that fits in the ") + format_bytes(*budget.available) + " available " + budget.where +
          " (fewer rows per micro-batch with --micro-batches, a shorter --seq-len or a smaller model)");
}

}  // namespace meap::train
