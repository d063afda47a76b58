// meap/eval/likelihood.hpp: what a model's next-token distributions say about given text, on every
// device: the log-likelihood of chosen targets inside sequences (how retrieval answers are scored
// without generating), and perplexity on a token file. Inputs are clean, as at inference: no
// masking. Both run the cached inference path (llama_model::forward_cached, one prefill), which
// keeps nothing for backward.
//
//   sequence_targets: the prediction at input position p (made from tokens[0..p]) should be `id`.
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/error.hpp>
#include <meap/core/labels.hpp>
#include <meap/core/tensor.hpp>
#include <meap/eval/generate.hpp>
#include <meap/io/token_dataset.hpp>
#include <meap/kernels/cross_entropy.hpp>
#include <meap/nn/llama.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace meap::eval {

struct target {
  index_t position = 0;   // input position whose prediction is scored
  std::int32_t id = 0;    // the token it should predict
};

struct scored_sequence {
  std::vector<std::int32_t> tokens;  // the model's input
  std::vector<target> targets;
};

struct target_scores {
  std::vector<double> log_likelihood;  // natural log p(id | tokens[0..position]) per target
  std::vector<bool> top1;              // whether id is the argmax there (the lowest id among ties)
  double total() const {
    double sum = 0.0;
    for (const double v : log_likelihood) sum += v;
    return sum;
  }
  bool all_top1() const { return std::all_of(top1.begin(), top1.end(), [](bool b) { return b; }); }
};

// Scores every sequence's targets; sequences of any lengths (<= max_seq) run `batch_rows` at a time.
template <class P, device Device>
std::vector<target_scores> score_targets(const Device& device, const nn::llama_model<P, Device>& model,
                                         const std::vector<scored_sequence>& sequences, index_t batch_rows = 8) {
  constexpr std::string_view function = "meap::eval::score_targets";
  const auto& config = model.config();
  check_argument(batch_rows >= 1, function, "batch_rows", batch_rows, "at least one row per forward pass");
  for (std::size_t s = 0; s < sequences.size(); ++s) {
    const auto length = static_cast<index_t>(sequences[s].tokens.size());
    check_argument(length >= 1 && length <= config.max_seq, function, "sequences",
                   "sequence " + std::to_string(s) + " of " + std::to_string(length) + " tokens",
                   "1 to max_seq = " + std::to_string(config.max_seq) + " tokens");
    for (const std::int32_t id : sequences[s].tokens)
      check_argument(id >= 0 && id < config.vocab, function, "sequences",
                     "token " + std::to_string(id) + " in sequence " + std::to_string(s),
                     "ids in [0, vocab = " + std::to_string(config.vocab) + ")");
    for (const auto& t : sequences[s].targets) {
      check_argument(t.position >= 0 && t.position < length, function, "sequences",
                     "target position " + std::to_string(t.position) + " in sequence " + std::to_string(s),
                     "a position in [0, " + std::to_string(length) + ")");
      check_argument(t.id >= 0 && t.id < config.vocab, function, "sequences",
                     "target id " + std::to_string(t.id) + " in sequence " + std::to_string(s),
                     "ids in [0, vocab = " + std::to_string(config.vocab) + ")");
    }
  }
  std::vector<target_scores> result(sequences.size());
  const auto V = static_cast<std::size_t>(config.vocab);
  for (std::size_t first = 0; first < sequences.size(); first += static_cast<std::size_t>(batch_rows)) {
    const std::size_t count = std::min(sequences.size() - first, static_cast<std::size_t>(batch_rows));
    index_t longest = 0;
    for (std::size_t r = 0; r < count; ++r)
      longest = std::max(longest, static_cast<index_t>(sequences[first + r].tokens.size()));
    const auto B = static_cast<index_t>(count);
    // Right-padded: a position only sees earlier ones, so the padding changes no scored row.
    auto host = zeros<std::int32_t>(cpu{}, dims{B, longest});
    std::vector<index_t> rows;
    for (std::size_t r = 0; r < count; ++r) {
      const auto& tokens = sequences[first + r].tokens;
      for (index_t t = 0; t < longest; ++t)
        host.data()[static_cast<index_t>(r) * longest + t] =
            tokens[static_cast<std::size_t>(std::min<index_t>(t, static_cast<index_t>(tokens.size()) - 1))];
      for (const auto& t : sequences[first + r].targets) rows.push_back(static_cast<index_t>(r) * longest + t.position);
    }
    tensor<std::int32_t, Device> tokens(device, dims{B, longest});
    copy(device, host.view().as_const(), tokens.view());
    auto cache = model.make_cache(device, B, longest);
    const auto hidden = model.forward_cached(device, tokens.view(), cache);
    const auto logits = detail::logits_of_rows(device, model, hidden, rows);
    std::size_t at = 0;
    for (std::size_t r = 0; r < count; ++r) {
      auto& out = result[first + r];
      for (const auto& t : sequences[first + r].targets) {
        const double* z = logits.data() + at * V;
        ++at;
        const double top = *std::max_element(z, z + V);
        double sum = 0.0;
        for (std::size_t j = 0; j < V; ++j) sum += std::exp(z[j] - top);
        out.log_likelihood.push_back(z[t.id] - top - std::log(sum));
        out.top1.push_back(detail::argmax(std::span<const double>(z, V)) == t.id);
      }
    }
  }
  return result;
}

struct perplexity_options {
  index_t batch_rows = 8;   // windows per forward pass
  index_t max_windows = 0;  // 0: every window of the file
};

struct perplexity_result {
  double mean_nll = 0.0;    // nats per predicted token
  double perplexity = 0.0;  // exp(mean_nll)
  index_t tokens = 0;       // predicted tokens
  index_t windows = 0;
};

// Perplexity on a token file: its non-overlapping windows of seq_len + 1 tokens in file order
// (window w holds tokens [w T, w T + T]; the first T are inputs, each predicts the next), every
// position counted once, clean input. The dataset's seq_len must fit the model (<= max_seq).
template <class P, device Device>
perplexity_result perplexity(const Device& device, const nn::llama_model<P, Device>& model, const token_dataset& data,
                             const perplexity_options& options = {}) {
  constexpr std::string_view function = "meap::eval::perplexity";
  const auto& config = model.config();
  const index_t L = data.seq_len();
  check_argument(L <= config.max_seq, function, "data", "windows of seq_len = " + std::to_string(L),
                 "seq_len <= the model's max_seq = " + std::to_string(config.max_seq));
  check_argument(options.batch_rows >= 1, function, "options.batch_rows", options.batch_rows, "at least one window");
  check_argument(options.max_windows >= 0, function, "options.max_windows", options.max_windows,
                 "a count >= 0 (0: every window)");
  const index_t windows = options.max_windows > 0 ? std::min(options.max_windows, data.windows()) : data.windows();
  double nll_sum = 0.0;
  index_t predicted = 0;
  for (index_t first = 0; first < windows; first += options.batch_rows) {
    const index_t B = std::min(options.batch_rows, windows - first);
    auto inputs = zeros<std::int32_t>(cpu{}, dims{B, L});
    auto labels = zeros<std::int32_t>(cpu{}, dims{B * L});
    for (index_t b = 0; b < B; ++b)
      for (index_t t = 0; t < L; ++t) {
        const index_t at = (first + b) * L + t;
        const auto input = data.token(at), next = data.token(at + 1);
        check_argument(static_cast<std::int64_t>(std::max(input, next)) < config.vocab, function, "data",
                       "token " + std::to_string(std::max(input, next)) + " at index " +
                           std::to_string(input >= next ? at : at + 1) + " of " + data.path().string(),
                       "ids below the model's vocab = " + std::to_string(config.vocab));
        inputs.data()[b * L + t] = static_cast<std::int32_t>(input);
        labels.data()[b * L + t] = static_cast<std::int32_t>(next);
      }
    tensor<std::int32_t, Device> tokens(device, dims{B, L}), targets(device, dims{B * L});
    copy(device, inputs.view().as_const(), tokens.view());
    copy(device, labels.view().as_const(), targets.view());
    auto cache = model.make_cache(device, B, L);
    const auto hidden = model.forward_cached(device, tokens.view(), cache);
    const auto loss = linear_cross_entropy(device, hidden.view().as_const(), model.head_weight(), targets.view().as_const());
    nll_sum += loss.loss * static_cast<double>(loss.selected);
    predicted += loss.selected;
    synchronize(device);  // the host batches die here
  }
  perplexity_result result;
  result.tokens = predicted;
  result.windows = windows;
  result.mean_nll = predicted > 0 ? nll_sum / static_cast<double>(predicted) : 0.0;
  result.perplexity = std::exp(result.mean_nll);
  return result;
}

}  // namespace meap::eval
