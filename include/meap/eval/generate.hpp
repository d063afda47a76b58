// meap/eval/generate.hpp: text generation with a key/value cache, on every device the model runs
// on (llama_model<P, cpu> or <P, cuda>), and the next-token distributions it samples from.
//
//   meap::eval::generation_options options{.max_new_tokens = 16, .stop_ids = {eos}};
//   auto out = meap::eval::generate(device, model, {{bos, 5, 6, 7}, {bos, 9}}, options);
//   // out[r].tokens: the new tokens of prompt r; out[r].reason: why it stopped
//
// How it runs: the prompts are prefilled together, right-padded to the longest (one forward pass
// through llama_model::forward_cached, each row's cache then set to its own length, so padding is
// never attended); then one decode step per new token for the whole batch. A row stops after it
// emits a stop id, after max_new_tokens, or when it fills the model's max_seq positions; a
// finished row keeps riding along in the batch (its outputs ignored) until every row is done. The
// next-token logits are read back to the host each step and sampled there:
//   temperature 0: greedy (the lowest id among equal maxima);
//   else: logits / temperature, then top-k (k > 0: keep the k largest), then top-p (keep the
//   smallest set of most likely tokens whose probability reaches p), renormalized, one draw from
//   philox_stream(seed, prompt index, step): the same prompt index and seed give the same text
//   whatever else is in the batch.
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/error.hpp>
#include <meap/core/philox.hpp>
#include <meap/core/tensor.hpp>
#include <meap/kernels/linear.hpp>
#include <meap/nn/llama.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace meap::eval {

struct sampling_options {
  double temperature = 0.0;  // 0: greedy
  index_t top_k = 0;         // 0: no top-k filter
  double top_p = 1.0;        // 1: no nucleus filter
};

struct generation_options {
  index_t max_new_tokens = 32;
  sampling_options sampling{};
  std::vector<std::int32_t> stop_ids{};  // a row stops after emitting one (it is kept in the output)
  std::uint64_t seed = 0;                // sampling draws (unused when greedy)
};

enum class finish_reason { max_new_tokens, stop_id, max_seq };

inline std::string_view to_string(finish_reason reason) {
  switch (reason) {
    case finish_reason::max_new_tokens: return "max_new_tokens";
    case finish_reason::stop_id: return "stop_id";
    case finish_reason::max_seq: return "max_seq";
  }
  return "unknown";
}

struct generation {
  std::vector<std::int32_t> tokens;  // the new tokens, without the prompt
  finish_reason reason = finish_reason::max_new_tokens;
};

namespace detail {

inline void check_sampling(std::string_view function, const sampling_options& s) {
  check_argument(std::isfinite(s.temperature) && s.temperature >= 0.0, function, "sampling.temperature", s.temperature,
                 "a finite temperature >= 0 (0: greedy)");
  check_argument(s.top_k >= 0, function, "sampling.top_k", s.top_k, "k >= 0 (0: no top-k filter)");
  check_argument(s.top_p > 0.0 && s.top_p <= 1.0, function, "sampling.top_p", s.top_p, "p in (0, 1] (1: no filter)");
}

// The largest logit's id (the lowest among equal maxima).
inline std::int32_t argmax(std::span<const double> logits) {
  std::size_t best = 0;
  for (std::size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[best]) best = i;
  return static_cast<std::int32_t>(best);
}

// One draw from the filtered, renormalized distribution of `logits` (see the top of the file).
inline std::int32_t sample(std::span<const double> logits, const sampling_options& s, philox_stream random) {
  if (s.temperature == 0.0) return argmax(logits);
  const std::size_t V = logits.size();
  std::vector<std::int32_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  // Most likely first; equal logits in id order, so the filters below are deterministic.
  std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) {
    return logits[static_cast<std::size_t>(a)] > logits[static_cast<std::size_t>(b)];
  });
  std::size_t keep = s.top_k > 0 ? std::min(V, static_cast<std::size_t>(s.top_k)) : V;
  const double top = logits[static_cast<std::size_t>(order[0])] / s.temperature;
  std::vector<double> p(keep);
  double total = 0.0;
  for (std::size_t i = 0; i < keep; ++i)
    total += (p[i] = std::exp(logits[static_cast<std::size_t>(order[i])] / s.temperature - top));
  if (s.top_p < 1.0) {
    double mass = 0.0;
    std::size_t nucleus = 0;
    while (nucleus < keep && mass < s.top_p * total) mass += p[nucleus++];
    keep = std::max<std::size_t>(1, nucleus);
    total = mass > 0.0 ? mass : p[0];
  }
  // A uniform double in [0, 1) from 53 random bits.
  const std::uint64_t bits = (static_cast<std::uint64_t>(random.next_u32()) << 21) ^ (random.next_u32() >> 11);
  const double target = static_cast<double>(bits) * 0x1.0p-53 * total;
  double cumulative = 0.0;
  for (std::size_t i = 0; i < keep; ++i) {
    cumulative += p[i];
    if (target < cumulative) return order[i];
  }
  return order[keep - 1];  // rounding left the target at the very end
}

// logits (R, V) of the chosen hidden rows (R rows of `hidden`, by index), read back to the host
// (as double, so that a float64 model's scores keep their precision).
template <class P, device Device>
std::vector<double> logits_of_rows(const Device& device, const nn::llama_model<P, Device>& model,
                                  const tensor<typename P::compute_t, Device>& hidden, std::span<const index_t> rows) {
  using T = typename P::compute_t;
  const index_t d = hidden.size(1), V = model.config().vocab, R = static_cast<index_t>(rows.size());
  tensor<T, Device> chosen(device, dims{R, d});
  for (index_t r = 0; r < R; ++r)
    copy(device, hidden.view().slice(0, rows[static_cast<std::size_t>(r)], rows[static_cast<std::size_t>(r)] + 1).as_const(),
         chosen.view().slice(0, r, r + 1));
  tensor<T, Device> logits(device, dims{R, V});
  linear_forward<T>(device, chosen.view(), model.head_weight(), logits.view());
  auto host = zeros<T>(cpu{}, dims{R, V});
  copy(device, logits.view().as_const(), host.view());
  synchronize(device);
  std::vector<double> result(static_cast<std::size_t>(R * V));
  for (std::size_t i = 0; i < result.size(); ++i) result[i] = static_cast<double>(host.data()[i]);
  return result;
}

}  // namespace detail

// Generates up to options.max_new_tokens tokens after each prompt (ids in [0, vocab), 1 <= length
// <= max_seq). Prompts may differ in length. See the top of this file.
template <class P, device Device>
std::vector<generation> generate(const Device& device, const nn::llama_model<P, Device>& model,
                                 const std::vector<std::vector<std::int32_t>>& prompts,
                                 const generation_options& options = {}) {
  constexpr std::string_view function = "meap::eval::generate";
  const auto& config = model.config();
  check_argument(!prompts.empty(), function, "prompts", "an empty list", "at least one prompt");
  check_argument(options.max_new_tokens >= 0, function, "options.max_new_tokens", options.max_new_tokens,
                 "a count >= 0");
  detail::check_sampling(function, options.sampling);
  for (const std::int32_t id : options.stop_ids)
    check_argument(id >= 0 && id < config.vocab, function, "options.stop_ids", id,
                   "ids in [0, vocab = " + std::to_string(config.vocab) + ")");
  index_t longest = 0;
  for (std::size_t r = 0; r < prompts.size(); ++r) {
    const auto length = static_cast<index_t>(prompts[r].size());
    check_argument(length >= 1 && length <= config.max_seq, function, "prompts",
                   "prompt " + std::to_string(r) + " of " + std::to_string(length) + " tokens",
                   "1 to max_seq = " + std::to_string(config.max_seq) + " tokens");
    for (const std::int32_t id : prompts[r])
      check_argument(id >= 0 && id < config.vocab, function, "prompts",
                     "token " + std::to_string(id) + " in prompt " + std::to_string(r),
                     "ids in [0, vocab = " + std::to_string(config.vocab) + ")");
    longest = std::max(longest, length);
  }
  const auto B = static_cast<index_t>(prompts.size());
  std::vector<generation> result(prompts.size());
  if (options.max_new_tokens == 0) return result;
  const index_t capacity = std::min(config.max_seq, longest + options.max_new_tokens);
  auto cache = model.make_cache(device, B, capacity);

  // Prefill: right-padded with each row's last token (any valid id would do: never attended).
  auto host_tokens = zeros<std::int32_t>(cpu{}, dims{B, longest});
  std::vector<index_t> lengths(prompts.size());
  for (index_t b = 0; b < B; ++b) {
    const auto& prompt = prompts[static_cast<std::size_t>(b)];
    lengths[static_cast<std::size_t>(b)] = static_cast<index_t>(prompt.size());
    for (index_t t = 0; t < longest; ++t)
      host_tokens.data()[b * longest + t] = prompt[static_cast<std::size_t>(std::min<index_t>(t, static_cast<index_t>(prompt.size()) - 1))];
  }
  tensor<std::int32_t, Device> tokens(device, dims{B, longest});
  copy(device, host_tokens.view().as_const(), tokens.view());
  auto hidden = model.forward_cached(device, tokens.view(), cache, lengths);
  std::vector<index_t> rows(prompts.size());
  for (index_t b = 0; b < B; ++b) rows[static_cast<std::size_t>(b)] = b * longest + lengths[static_cast<std::size_t>(b)] - 1;

  const auto V = static_cast<std::size_t>(config.vocab);
  std::vector<bool> done(prompts.size(), false);
  auto step_tokens = zeros<std::int32_t>(cpu{}, dims{B, 1});
  tensor<std::int32_t, Device> next(device, dims{B, 1});
  for (index_t step = 0;; ++step) {
    const auto logits = detail::logits_of_rows(device, model, hidden, rows);
    bool all_done = true;
    for (index_t b = 0; b < B; ++b) {
      const auto r = static_cast<std::size_t>(b);
      if (done[r]) continue;
      const std::int32_t id = detail::sample(std::span<const double>(logits.data() + r * V, V), options.sampling,
                                             philox_stream(options.seed, static_cast<std::uint64_t>(b),
                                                           static_cast<std::uint32_t>(step)));
      result[r].tokens.push_back(id);
      step_tokens.data()[b] = id;
      const bool stopped = std::find(options.stop_ids.begin(), options.stop_ids.end(), id) != options.stop_ids.end();
      if (stopped) {
        result[r].reason = finish_reason::stop_id;
      } else if (static_cast<index_t>(result[r].tokens.size()) >= options.max_new_tokens) {
        result[r].reason = finish_reason::max_new_tokens;
      } else if (cache.lengths()[r] >= capacity) {  // max_seq reached: the token just drawn has no position
        result[r].reason = finish_reason::max_seq;
      } else {
        all_done = false;
        continue;
      }
      done[r] = true;
    }
    if (all_done) break;
    // Finished rows ride along without growing: their slot may be reused, never read for output.
    std::vector<index_t> advance(prompts.size()), held(cache.lengths().begin(), cache.lengths().end());
    for (std::size_t r = 0; r < prompts.size(); ++r) {
      advance[r] = done[r] ? 0 : 1;
      if (done[r]) held[r] = std::min(held[r], capacity - 1);
    }
    cache.set_lengths(held);
    copy(device, step_tokens.view().as_const(), next.view());
    hidden = model.forward_cached(device, next.view(), cache, advance);
    for (index_t b = 0; b < B; ++b) rows[static_cast<std::size_t>(b)] = b;
  }
  return result;
}

}  // namespace meap::eval
