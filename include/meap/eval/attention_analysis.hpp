// meap/eval/attention_analysis.hpp: the MEAP paper's attention analysis (ICML 2025) of
// a model on a batch, for every device and precision: how much attention the masked positions lose
// when they hold [MASK], and how the attention over the other positions changes.
//
//   auto report = meap::eval::analyze_attention(device, model, clean, masked, options);
//   report.overall.pooled_decay, report.at(layer, head).variance_change, ...
//
// Inputs: clean tokens (B, T) and the same tokens with a MEAP mask (B, T), both int32 on the host.
// The masked set M = {(b, j) : masked[b, j] != clean[b, j]}; there masked must hold the mask id
// (options.mask_id, or inferred: the token at the first differing position, row-major). Elsewhere
// the two must be equal, and the clean batch must not contain the mask id (a masked position
// could not be told from an unmasked one). A position a policy chose but left equal to its clean
// token is not in M (MEAP's masking always writes the mask id, so this cannot happen with it).
//
// The model runs forward once on each input as at inference (no masking inside, positions t,
// one document per row). P_X[b, h, i, j] is layer l's attention probability of query i on key
// j <= i for input X (0 for j > i), read after RoPE from the forward context. Per (layer, head):
//
//   masked mass   Att_X(M) = sum_{(b, j) in M} sum_{i >= j} P_X[b, h, i, j]   (summed over rows)
//   decay         (Att_clean(M) - Att_masked(M)) / Att_clean(M); NaN when Att_clean(M) = 0, which
//                 is always the case when M is empty (report.masked_positions == 0); the other
//                 metrics are still computed then.
//   variance      for each chosen query row (b, i) that has at least 2 unmasked keys j <= i: the
//                 population variance over those keys of P_X[b, h, i, j]; the mean over all such
//                 (b, i) of the batch (each row weighs the same; report.variance_rows counts
//                 them, the same set for both inputs). A masked query row counts like any other:
//                 only its keys are restricted. NaN when no row qualifies.
//   variance_change  (variance_masked - variance_clean) / variance_clean; NaN when the clean
//                 variance is 0 (e.g. uniform attention) or NaN.
//   answer share  for each chosen query row (b, i) with i >= answer_spans[b].begin (rows that see
//                 at least one span token; earlier rows are skipped, not counted as 0):
//                 sum_{j in span, j <= i} P_X[b, h, i, j]; the mean over those rows
//                 (report.answer_rows). NaN without answer spans or when no row qualifies.
//
// Chosen query rows: options.query_rows[b] (strictly increasing positions in [0, T)), or every
// position when query_rows is empty. Spans and query rows may cover masked positions.
//
// Averages (attention_averages): per layer over its heads and overall over every (layer, head):
// each field is the plain mean of the heads' values (a NaN head makes the mean NaN), except the
// masked masses, which are sums, and pooled_decay = (sum Att_clean(M) - sum Att_masked(M)) /
// sum Att_clean(M) over the heads averaged.
//
// Cost and memory: two forward passes (one context alive at a time); per layer one
// attention_key_mass call (O(B H T) memory), and, when some query row is chosen for the variance
// or the answer share, one attention_probabilities call per (batch row, head) into a reused
// (1, 1, T, T) buffer: no T x T matrix is held for more than one head. The probabilities are in
// accumulate_t of the compute type (float for float, half and bfloat16); every statistic is
// computed on the host in double.
//
// Argument errors (meap::error, function "meap::eval::analyze_attention", naming 'clean',
// 'masked', 'mask_id', 'answer_spans' or 'query_rows') are raised on the host before any device
// work.
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/error.hpp>
#include <meap/core/tensor.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/eval/token_span.hpp>
#include <meap/kernels/attention.hpp>
#include <meap/kernels/linear.hpp>
#include <meap/nn/llama.hpp>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace meap::eval {

struct attention_analysis_options {
  // The [MASK] id; unset: inferred from the first position where masked differs from clean.
  std::optional<std::int32_t> mask_id{};
  // Empty (no answer-share metric) or one non-empty span inside [0, T) per batch row.
  std::vector<token_span> answer_spans{};
  // Empty (every query row) or one list per batch row of strictly increasing positions in
  // [0, T): the query rows the variance and answer-share metrics read.
  std::vector<std::vector<index_t>> query_rows{};
};

// The metrics of one (layer, head); see the header comment for the definitions.
struct head_attention {
  index_t layer = 0;
  index_t head = 0;
  double masked_mass_clean = 0;   // Att_clean(M), summed over the batch
  double masked_mass_masked = 0;  // Att_masked(M)
  double decay = 0;               // (clean - masked) / clean; NaN when masked_mass_clean == 0
  double variance_clean = 0;      // mean over the counted query rows
  double variance_masked = 0;
  double variance_change = 0;  // (masked - clean) / clean
  double answer_share_clean = 0;
  double answer_share_masked = 0;
};

// Means over a set of heads (a layer, or the model); masses are sums.
struct attention_averages {
  double decay = 0;         // mean of the heads' decays
  double pooled_decay = 0;  // from the summed masses
  double masked_mass_clean = 0;
  double masked_mass_masked = 0;
  double variance_clean = 0;
  double variance_masked = 0;
  double variance_change = 0;  // mean of the heads' relative changes
  double answer_share_clean = 0;
  double answer_share_masked = 0;
};

struct attention_report {
  std::optional<std::int32_t> mask_id{};  // given or inferred; unset when M is empty and none was given
  index_t masked_positions = 0;           // |M| over the batch; 0 makes every decay NaN
  index_t variance_rows = 0;              // query rows (b, i) the variances average over
  index_t answer_rows = 0;                // query rows (b, i) the answer shares average over
  index_t layer_count = 0;
  index_t head_count = 0;                    // query heads per layer
  std::vector<head_attention> heads;         // layer-major: heads[layer * head_count + head]
  std::vector<attention_averages> layers;    // one per layer, over its heads
  attention_averages overall;                // over every (layer, head)

  const head_attention& at(index_t layer, index_t head) const {
    check_argument(0 <= layer && layer < layer_count && 0 <= head && head < head_count,
                   "meap::eval::attention_report::at", "layer, head",
                   "(" + std::to_string(layer) + ", " + std::to_string(head) + ")",
                   "a layer in [0, " + std::to_string(layer_count) + ") and a head in [0, " +
                       std::to_string(head_count) + ")");
    return heads[static_cast<std::size_t>(layer * head_count + head)];
  }
};

namespace detail {

inline constexpr std::string_view analyze_attention_function = "meap::eval::analyze_attention";

inline std::string token_at(std::int32_t token, index_t b, index_t t) {
  return "token " + std::to_string(token) + " at (" + std::to_string(b) + ", " + std::to_string(t) + ")";
}

// What the arguments say about the batch, validated; every later step trusts it.
struct analysis_plan {
  index_t batch = 0;
  index_t length = 0;
  std::optional<std::int32_t> mask_id{};
  std::vector<std::uint8_t> masked;               // (B * T): 1 where (b, t) is in M
  index_t masked_positions = 0;
  std::vector<std::vector<index_t>> query_rows;   // one list per batch row (resolved default)
  std::vector<token_span> answer_spans;           // empty or one per batch row
  std::vector<std::uint8_t> variance_row;         // (B * T): 1 where row (b, i) counts for the variance
  index_t variance_rows = 0;
  index_t answer_rows = 0;

  bool needs_probabilities(index_t b) const {
    for (const index_t i : query_rows[static_cast<std::size_t>(b)])
      if (variance_row[static_cast<std::size_t>(b * length + i)] != 0 ||
          (!answer_spans.empty() && i >= answer_spans[static_cast<std::size_t>(b)].begin))
        return true;
    return false;
  }
};

inline analysis_plan plan_analysis(const tensor_view<const std::int32_t, cpu>& clean,
                                   const tensor_view<const std::int32_t, cpu>& masked, index_t vocab,
                                   index_t max_seq, const attention_analysis_options& options) {
  constexpr std::string_view function = analyze_attention_function;
  check_argument(clean.rank() == 2 && clean.size(0) >= 1 && clean.size(1) >= 1, function, "clean",
                 "shape " + to_string(clean.shape()), "a non-empty (B, T) batch of token ids");
  const index_t B = clean.size(0), T = clean.size(1);
  check_argument(T <= max_seq, function, "clean", "length T = " + std::to_string(T),
                 "T <= the model's max_seq = " + std::to_string(max_seq));
  check_shape(function, "masked", masked, clean.shape());
  if (options.mask_id)
    check_argument(0 <= *options.mask_id && *options.mask_id < vocab, function, "mask_id", *options.mask_id,
                   "a token id in [0, vocab = " + std::to_string(vocab) + ")");

  analysis_plan plan;
  plan.batch = B;
  plan.length = T;
  plan.mask_id = options.mask_id;
  plan.masked.assign(static_cast<std::size_t>(B * T), 0);
  index_t first_b = -1, first_t = -1;  // where an inferred mask id came from, for the messages
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t) {
      const std::int32_t c = clean(b, t), m = masked(b, t);
      check_argument(0 <= c && c < vocab, function, "clean", token_at(c, b, t),
                     "token ids in [0, vocab = " + std::to_string(vocab) + ")");
      check_argument(0 <= m && m < vocab, function, "masked", token_at(m, b, t),
                     "token ids in [0, vocab = " + std::to_string(vocab) + ")");
      if (c == m) continue;
      if (!plan.mask_id) {
        plan.mask_id = m;
        first_b = b;
        first_t = t;
      }
      if (m != *plan.mask_id)
        throw_argument_error(function, "masked", token_at(m, b, t),
                             "the clean token " + std::to_string(c) + " or the mask id " +
                                 std::to_string(*plan.mask_id) +
                                 (first_b >= 0 ? " (inferred from the first differing position (" +
                                                     std::to_string(first_b) + ", " + std::to_string(first_t) + "))"
                                               : std::string(" (options.mask_id)")));
      plan.masked[static_cast<std::size_t>(b * T + t)] = 1;
      ++plan.masked_positions;
    }
  if (plan.mask_id)
    for (index_t b = 0; b < B; ++b)
      for (index_t t = 0; t < T; ++t)
        check_argument(clean(b, t) != *plan.mask_id, function, "clean", token_at(clean(b, t), b, t),
                       "no mask id " + std::to_string(*plan.mask_id) +
                           " in the clean batch (masked positions are where 'masked' differs from it)");

  const auto rows = static_cast<std::size_t>(B);
  check_argument(options.answer_spans.empty() || options.answer_spans.size() == rows, function, "answer_spans",
                 std::to_string(options.answer_spans.size()) + " spans",
                 "none, or one per batch row (B = " + std::to_string(B) + ")");
  for (std::size_t b = 0; b < options.answer_spans.size(); ++b) {
    const auto [begin, end] = options.answer_spans[b];
    check_argument(0 <= begin && begin < end && end <= T, function, "answer_spans",
                   "[" + std::to_string(begin) + ", " + std::to_string(end) + ") for row " + std::to_string(b),
                   "a non-empty span [begin, end) inside [0, T = " + std::to_string(T) + ")");
  }
  plan.answer_spans = options.answer_spans;

  check_argument(options.query_rows.empty() || options.query_rows.size() == rows, function, "query_rows",
                 std::to_string(options.query_rows.size()) + " lists",
                 "none (every query row), or one list per batch row (B = " + std::to_string(B) + ")");
  plan.query_rows.resize(rows);
  for (std::size_t b = 0; b < rows; ++b) {
    auto& list = plan.query_rows[b];
    if (options.query_rows.empty()) {
      list.resize(static_cast<std::size_t>(T));
      for (index_t i = 0; i < T; ++i) list[static_cast<std::size_t>(i)] = i;
      continue;
    }
    list = options.query_rows[b];
    for (std::size_t n = 0; n < list.size(); ++n)
      check_argument(0 <= list[n] && list[n] < T && (n == 0 || list[n - 1] < list[n]), function, "query_rows",
                     "position " + std::to_string(list[n]) + " (entry " + std::to_string(n) + " of row " +
                         std::to_string(b) + ")",
                     "strictly increasing positions in [0, T = " + std::to_string(T) + ")");
  }

  // Which rows count depends only on the tokens, so it is the same for both inputs and every head.
  plan.variance_row.assign(static_cast<std::size_t>(B * T), 0);
  for (index_t b = 0; b < B; ++b) {
    std::vector<index_t> unmasked_up_to(static_cast<std::size_t>(T));  // unmasked keys j <= i
    index_t count = 0;
    for (index_t t = 0; t < T; ++t) {
      count += plan.masked[static_cast<std::size_t>(b * T + t)] == 0 ? 1 : 0;
      unmasked_up_to[static_cast<std::size_t>(t)] = count;
    }
    for (const index_t i : plan.query_rows[static_cast<std::size_t>(b)]) {
      if (unmasked_up_to[static_cast<std::size_t>(i)] >= 2) {
        plan.variance_row[static_cast<std::size_t>(b * T + i)] = 1;
        ++plan.variance_rows;
      }
      if (!plan.answer_spans.empty() && i >= plan.answer_spans[static_cast<std::size_t>(b)].begin) ++plan.answer_rows;
    }
  }
  return plan;
}

// Population variance of row[j] over the unmasked keys j <= i (at least two). Shifted by the
// first such value: a row of equal probabilities (uniform attention) then gives exactly 0, and
// the two passes keep the precision of the probabilities.
template <class A>
double unmasked_variance(const A* row, const std::uint8_t* masked, index_t i) {
  double shift = 0, sum = 0;
  index_t n = 0;
  for (index_t j = 0; j <= i; ++j) {
    if (masked[j] != 0) continue;
    if (n == 0) shift = static_cast<double>(row[j]);
    sum += static_cast<double>(row[j]) - shift;
    ++n;
  }
  const double mean = sum / static_cast<double>(n);
  double squares = 0;
  for (index_t j = 0; j <= i; ++j) {
    if (masked[j] != 0) continue;
    const double d = static_cast<double>(row[j]) - shift - mean;
    squares += d * d;
  }
  return squares / static_cast<double>(n);
}

// One input's sums per (layer, head), layer-major: the numerators of the metrics.
struct input_sums {
  std::vector<double> masked_mass, variance, answer_share;
};

template <class T>
tensor<T, cpu> identity_matrix(index_t size) {
  auto host = zeros<T>(cpu{}, dims{size, size});
  for (index_t i = 0; i < size; ++i) host.data()[i * size + i] = T(1);
  return host;
}

template <class P, class Device>
input_sums measure_input(const Device& device, const nn::llama_model<P, Device>& model,
                         const tensor_view<const std::int32_t, cpu>& tokens, const analysis_plan& plan,
                         const tensor_view<const typename P::compute_t, Device>& q_identity,
                         const tensor_view<const typename P::compute_t, Device>& k_identity) {
  using T = typename P::compute_t;
  using A = accumulate_t<T>;
  const auto& config = model.config();
  const index_t B = plan.batch, L = plan.length, Hq = config.heads, Hkv = config.kv_heads, D = config.head_dim();
  const index_t group = Hq / Hkv, layers = config.layers;

  const auto device_tokens = to_device(device, tokens);
  const auto ctx = model.forward(device, device_tokens.view());

  input_sums sums;
  const auto cells = static_cast<std::size_t>(layers * Hq);
  sums.masked_mass.assign(cells, 0.0);
  sums.variance.assign(cells, 0.0);
  sums.answer_share.assign(cells, 0.0);

  tensor<A, Device> key_mass(device, dims{B, Hq, L});
  host_staging<A, Device> key_mass_host(device, dims{B, Hq, L});
  // One head at a time: its q and k copied out contiguous (the attention doors take contiguous
  // views only), and its probabilities in a buffer reused for every (batch row, head).
  tensor<T, Device> q_head(device, dims{L, D}), k_head(device, dims{L, D});
  tensor<A, Device> probabilities(device, dims{1, 1, L, L});
  host_staging<A, Device> probabilities_host(device, dims{1, 1, L, L});

  for (index_t l = 0; l < layers; ++l) {
    const auto& attn = ctx.block_ctx[static_cast<std::size_t>(l)].attn_ctx;
    const auto q = attn.q.view();  // (B * T, Hq * D), after RoPE
    const auto k = attn.k.view();  // (B * T, Hkv * D)
    double* mass = sums.masked_mass.data() + l * Hq;
    double* variance = sums.variance.data() + l * Hq;
    double* share = sums.answer_share.data() + l * Hq;

    attention_key_mass(device, q.reshape({B, L, Hq, D}), k.reshape({B, L, Hkv, D}), key_mass.view());
    copy(device, key_mass.view().as_const(), key_mass_host.view());
    synchronize(device);
    for (index_t b = 0; b < B; ++b)
      for (index_t h = 0; h < Hq; ++h) {
        const A* row_mass = key_mass_host.data() + (b * Hq + h) * L;
        for (index_t j = 0; j < L; ++j)
          if (plan.masked[static_cast<std::size_t>(b * L + j)] != 0) mass[h] += static_cast<double>(row_mass[j]);
      }

    for (index_t b = 0; b < B; ++b) {
      if (!plan.needs_probabilities(b)) continue;
      const auto q_row = q.slice(0, b * L, (b + 1) * L);
      const auto k_row = k.slice(0, b * L, (b + 1) * L);
      const std::uint8_t* row_masked = plan.masked.data() + b * L;
      const std::uint8_t* row_counts = plan.variance_row.data() + b * L;
      for (index_t hk = 0; hk < Hkv; ++hk) {
        // head = x E^T with E rows of an identity: a copy of the head's columns that every
        // device can do through its GEMM (no strided copy is needed). Exact for finite values.
        linear_forward<T>(device, k_row, k_identity.slice(0, hk * D, (hk + 1) * D), k_head.view());
        for (index_t h = hk * group; h < (hk + 1) * group; ++h) {
          linear_forward<T>(device, q_row, q_identity.slice(0, h * D, (h + 1) * D), q_head.view());
          attention_probabilities(device, q_head.view().as_const().reshape({1, L, 1, D}),
                                  k_head.view().as_const().reshape({1, L, 1, D}), probabilities.view());
          copy(device, probabilities.view().as_const(), probabilities_host.view());
          synchronize(device);
          const A* p = probabilities_host.data();
          for (const index_t i : plan.query_rows[static_cast<std::size_t>(b)]) {
            const A* row = p + i * L;
            if (row_counts[i] != 0) variance[h] += unmasked_variance(row, row_masked, i);
            if (plan.answer_spans.empty()) continue;
            const auto span = plan.answer_spans[static_cast<std::size_t>(b)];
            if (i < span.begin) continue;
            double seen = 0;
            for (index_t j = span.begin; j < span.end && j <= i; ++j) seen += static_cast<double>(row[j]);
            share[h] += seen;
          }
        }
      }
    }
  }
  return sums;
}

inline double ratio(double numerator, double denominator) {
  return denominator != 0 ? numerator / denominator : std::numeric_limits<double>::quiet_NaN();
}

inline attention_averages average_heads(const head_attention* heads, index_t count) {
  attention_averages a;
  for (index_t h = 0; h < count; ++h) {
    const auto& x = heads[h];
    a.decay += x.decay;
    a.masked_mass_clean += x.masked_mass_clean;
    a.masked_mass_masked += x.masked_mass_masked;
    a.variance_clean += x.variance_clean;
    a.variance_masked += x.variance_masked;
    a.variance_change += x.variance_change;
    a.answer_share_clean += x.answer_share_clean;
    a.answer_share_masked += x.answer_share_masked;
  }
  const auto n = static_cast<double>(count);
  a.decay /= n;
  a.variance_clean /= n;
  a.variance_masked /= n;
  a.variance_change /= n;
  a.answer_share_clean /= n;
  a.answer_share_masked /= n;
  a.pooled_decay = ratio(a.masked_mass_clean - a.masked_mass_masked, a.masked_mass_clean);
  return a;
}

}  // namespace detail

// The attention analysis of `model` on one batch; see the header comment for every definition.
// clean, masked: (B, T) int32 token ids on the host, T <= the model's max_seq. Runs on `device`
// (the model's device; the probes' results are copied to the host for the statistics).
template <class P, device Device>
  requires device_precision<P, Device>
attention_report analyze_attention(const Device& device, const nn::llama_model<P, Device>& model,
                                   const tensor_view<const std::int32_t, cpu>& clean,
                                   const tensor_view<const std::int32_t, cpu>& masked,
                                   const attention_analysis_options& options = {}) {
  using T = typename P::compute_t;
  const auto& config = model.config();
  const auto plan = detail::plan_analysis(clean, masked, config.vocab, config.max_seq, options);

  const index_t D = config.head_dim(), Hq = config.heads, layers = config.layers;
  const auto q_identity_host = detail::identity_matrix<T>(Hq * D);
  const auto k_identity_host = detail::identity_matrix<T>(config.kv_heads * D);
  const auto q_identity = to_device(device, q_identity_host.view());
  const auto k_identity = to_device(device, k_identity_host.view());
  synchronize(device);  // the host copies die with this scope; a device copy may still read them

  const auto sums_clean = detail::measure_input(device, model, clean, plan, q_identity.view(), k_identity.view());
  const auto sums_masked = detail::measure_input(device, model, masked, plan, q_identity.view(), k_identity.view());

  attention_report report;
  report.mask_id = plan.mask_id;
  report.masked_positions = plan.masked_positions;
  report.variance_rows = plan.variance_rows;
  report.answer_rows = plan.answer_rows;
  report.layer_count = layers;
  report.head_count = Hq;
  const auto variance_rows = static_cast<double>(plan.variance_rows);
  const auto answer_rows = static_cast<double>(plan.answer_rows);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (index_t l = 0; l < layers; ++l)
    for (index_t h = 0; h < Hq; ++h) {
      const auto c = static_cast<std::size_t>(l * Hq + h);
      head_attention x;
      x.layer = l;
      x.head = h;
      x.masked_mass_clean = sums_clean.masked_mass[c];
      x.masked_mass_masked = sums_masked.masked_mass[c];
      x.decay = detail::ratio(x.masked_mass_clean - x.masked_mass_masked, x.masked_mass_clean);
      x.variance_clean = plan.variance_rows > 0 ? sums_clean.variance[c] / variance_rows : nan;
      x.variance_masked = plan.variance_rows > 0 ? sums_masked.variance[c] / variance_rows : nan;
      x.variance_change = detail::ratio(x.variance_masked - x.variance_clean, x.variance_clean);
      x.answer_share_clean = plan.answer_rows > 0 ? sums_clean.answer_share[c] / answer_rows : nan;
      x.answer_share_masked = plan.answer_rows > 0 ? sums_masked.answer_share[c] / answer_rows : nan;
      report.heads.push_back(x);
    }
  for (index_t l = 0; l < layers; ++l) report.layers.push_back(detail::average_heads(report.heads.data() + l * Hq, Hq));
  report.overall = detail::average_heads(report.heads.data(), layers * Hq);
  return report;
}

}  // namespace meap::eval
