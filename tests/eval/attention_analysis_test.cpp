// meap::eval::analyze_attention on the CPU: against a naive float64 recomputation of every
// layer's attention (from the layer inputs the forward context keeps, and the model's weights),
// against cases worked out on paper (uniform attention; a one-head model whose scores are
// cos(i - j)), the empty mask, and every argument it rejects.
#include <meap/eval/attention_analysis.hpp>
#include <meap/nn/nn.hpp>

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "support/errors.hpp"

namespace {

using meap::index_t;
using meap::eval::analyze_attention;
using meap::eval::attention_analysis_options;
using meap::eval::attention_averages;
using meap::eval::token_span;

const meap::cpu host;
constexpr std::int32_t mask_token = 19;

meap::nn::llama_config small_config() {
  meap::nn::llama_config c;
  c.vocab = 20;
  c.d_model = 16;
  c.layers = 2;
  c.heads = 4;
  c.kv_heads = 2;  // GQA: query head h reads kv head h / 2
  c.ffn = 24;
  c.max_seq = 16;
  return c;
}

template <class P>
void scale_parameter(meap::nn::llama_model<P>& model, const std::string& suffix, double factor) {
  for (auto& p : model.parameters())
    if (p.name.ends_with(suffix))
      for (index_t i = 0; i < p.value.numel(); ++i) p.value.data()[i] = static_cast<typename P::master_t>(p.value.data()[i] * factor);
  model.store().refresh_compute(host);
}

// Random weights with q and k projections scaled up, so that attention is far from uniform and
// the masked and clean rows differ visibly.
template <class P>
meap::nn::llama_model<P> small_model() {
  meap::nn::llama_model<P> model(small_config());
  model.initialize(11);
  scale_parameter(model, "q_proj.weight", 4.0);
  scale_parameter(model, "k_proj.weight", 4.0);
  return model;
}

template <class P>
std::vector<double> parameter_values(const meap::nn::llama_model<P>& model, const std::string& name) {
  for (const auto& p : model.parameters())
    if (p.name == name) return {p.value.data(), p.value.data() + p.value.numel()};
  BOOST_FAIL("no parameter " << name);
  return {};
}

struct batch {
  index_t rows = 0, length = 0;
  std::vector<std::int32_t> clean, masked;
  meap::tensor_view<const std::int32_t, meap::cpu> clean_view() const {
    return meap::make_view(std::span<const std::int32_t>(clean), {rows, length});
  }
  meap::tensor_view<const std::int32_t, meap::cpu> masked_view() const {
    return meap::make_view(std::span<const std::int32_t>(masked), {rows, length});
  }
};

// Clean tokens in [0, 19); every position with (b * T + t) % 4 == 1 (and t = 0 of row 1) masked.
batch random_batch(index_t rows, index_t length) {
  batch x{rows, length, {}, {}};
  std::mt19937 engine(5);
  std::uniform_int_distribution<std::int32_t> pick(0, mask_token - 1);
  for (index_t n = 0; n < rows * length; ++n) x.clean.push_back(pick(engine));
  x.masked = x.clean;
  for (index_t n = 0; n < rows * length; ++n)
    if (n % 4 == 1 || n == length) x.masked[static_cast<std::size_t>(n)] = mask_token;
  return x;
}

// ---------------------------------------------------------------------------------------------
// The naive reference: every layer's attention probabilities recomputed in double from the layer
// input the model's context holds, then the metrics by their definitions.

// P[((b * Hq + h) * T + i) * T + j] of layer l.
template <class P>
std::vector<double> naive_probabilities(const meap::nn::llama_model<P>& model, const std::vector<std::int32_t>& tokens,
                                        index_t B, index_t T, index_t l) {
  const auto& config = model.config();
  const index_t d = config.d_model, Hq = config.heads, Hkv = config.kv_heads, D = config.head_dim();
  const auto ctx = model.forward(host, meap::make_view(std::span<const std::int32_t>(tokens), {B, T}));
  const auto& input = ctx.layer_inputs[static_cast<std::size_t>(l)];
  const std::string prefix = "model.layers." + std::to_string(l);
  const auto gain = parameter_values(model, prefix + ".input_layernorm.weight");
  const auto wq = parameter_values(model, prefix + ".self_attn.q_proj.weight");
  const auto wk = parameter_values(model, prefix + ".self_attn.k_proj.weight");

  const index_t N = B * T;
  std::vector<double> q(static_cast<std::size_t>(N * Hq * D)), k(static_cast<std::size_t>(N * Hkv * D));
  for (index_t n = 0; n < N; ++n) {
    std::vector<double> x(static_cast<std::size_t>(d));
    double squares = 0;
    for (index_t c = 0; c < d; ++c) {
      x[static_cast<std::size_t>(c)] = static_cast<double>(input.data()[n * d + c]);
      squares += x[static_cast<std::size_t>(c)] * x[static_cast<std::size_t>(c)];
    }
    const double inv_rms = 1.0 / std::sqrt(squares / static_cast<double>(d) + config.norm_eps);
    for (index_t c = 0; c < d; ++c) x[static_cast<std::size_t>(c)] *= inv_rms * gain[static_cast<std::size_t>(c)];
    const auto project = [&](const std::vector<double>& w, index_t outputs, std::vector<double>& y) {
      for (index_t o = 0; o < outputs; ++o) {
        double sum = 0;
        for (index_t c = 0; c < d; ++c) sum += w[static_cast<std::size_t>(o * d + c)] * x[static_cast<std::size_t>(c)];
        y[static_cast<std::size_t>(n * outputs + o)] = sum;
      }
    };
    project(wq, Hq * D, q);
    project(wk, Hkv * D, k);
  }
  // RoPE, Hugging Face rotate_half: dimension i pairs with i + D/2, frequency theta^(-2i/D).
  const auto rotate = [&](std::vector<double>& x, index_t heads) {
    for (index_t n = 0; n < N; ++n)
      for (index_t h = 0; h < heads; ++h)
        for (index_t i = 0; i < D / 2; ++i) {
          const double angle = static_cast<double>(n % T) * std::pow(config.rope_theta, -2.0 * static_cast<double>(i) / static_cast<double>(D));
          double& a = x[static_cast<std::size_t>((n * heads + h) * D + i)];
          double& b = x[static_cast<std::size_t>((n * heads + h) * D + i + D / 2)];
          const double a0 = a, b0 = b;
          a = a0 * std::cos(angle) - b0 * std::sin(angle);
          b = b0 * std::cos(angle) + a0 * std::sin(angle);
        }
  };
  rotate(q, Hq);
  rotate(k, Hkv);

  std::vector<double> p(static_cast<std::size_t>(B * Hq * T * T), 0.0);
  for (index_t b = 0; b < B; ++b)
    for (index_t h = 0; h < Hq; ++h)
      for (index_t i = 0; i < T; ++i) {
        std::vector<double> scores(static_cast<std::size_t>(i + 1));
        for (index_t j = 0; j <= i; ++j) {
          double dot = 0;
          for (index_t c = 0; c < D; ++c)
            dot += q[static_cast<std::size_t>(((b * T + i) * Hq + h) * D + c)] *
                   k[static_cast<std::size_t>(((b * T + j) * Hkv + h / (Hq / Hkv)) * D + c)];
          scores[static_cast<std::size_t>(j)] = dot / std::sqrt(static_cast<double>(D));
        }
        const double top = *std::max_element(scores.begin(), scores.end());
        double total = 0;
        for (auto& s : scores) total += (s = std::exp(s - top));
        for (index_t j = 0; j <= i; ++j)
          p[static_cast<std::size_t>(((b * Hq + h) * T + i) * T + j)] = scores[static_cast<std::size_t>(j)] / total;
      }
  return p;
}

struct naive_head {
  double mass_clean = 0, mass_masked = 0, variance_clean = 0, variance_masked = 0, share_clean = 0, share_masked = 0;
};

struct naive_result {
  std::vector<naive_head> heads;  // layer-major
  index_t variance_rows = 0, answer_rows = 0;
};

template <class P>
naive_result naive_analysis(const meap::nn::llama_model<P>& model, const batch& x,
                            const std::vector<std::vector<index_t>>& query_rows, const std::vector<token_span>& spans) {
  const auto& config = model.config();
  const index_t B = x.rows, T = x.length, Hq = config.heads;
  const auto masked_at = [&](index_t b, index_t j) {
    return x.clean[static_cast<std::size_t>(b * T + j)] != x.masked[static_cast<std::size_t>(b * T + j)];
  };
  const auto chosen = [&](index_t b, index_t i) {
    if (query_rows.empty()) return true;
    const auto& list = query_rows[static_cast<std::size_t>(b)];
    return std::find(list.begin(), list.end(), i) != list.end();
  };
  naive_result result;
  for (index_t l = 0; l < config.layers; ++l) {
    const auto pc = naive_probabilities(model, x.clean, B, T, l);
    const auto pm = naive_probabilities(model, x.masked, B, T, l);
    for (index_t h = 0; h < Hq; ++h) {
      naive_head r;
      index_t variance_rows = 0, answer_rows = 0;
      for (index_t b = 0; b < B; ++b) {
        const auto at = [&](const std::vector<double>& p, index_t i, index_t j) {
          return p[static_cast<std::size_t>(((b * Hq + h) * T + i) * T + j)];
        };
        for (index_t j = 0; j < T; ++j)
          if (masked_at(b, j))
            for (index_t i = j; i < T; ++i) {
              r.mass_clean += at(pc, i, j);
              r.mass_masked += at(pm, i, j);
            }
        for (index_t i = 0; i < T; ++i) {
          if (!chosen(b, i)) continue;
          std::vector<index_t> keys;
          for (index_t j = 0; j <= i; ++j)
            if (!masked_at(b, j)) keys.push_back(j);
          if (keys.size() >= 2) {
            ++variance_rows;
            for (const auto* p : {&pc, &pm}) {
              double mean = 0, variance = 0;
              for (const index_t j : keys) mean += at(*p, i, j);
              mean /= static_cast<double>(keys.size());
              for (const index_t j : keys) variance += (at(*p, i, j) - mean) * (at(*p, i, j) - mean);
              (p == &pc ? r.variance_clean : r.variance_masked) += variance / static_cast<double>(keys.size());
            }
          }
          if (!spans.empty() && i >= spans[static_cast<std::size_t>(b)].begin) {
            ++answer_rows;
            for (index_t j = spans[static_cast<std::size_t>(b)].begin; j < spans[static_cast<std::size_t>(b)].end; ++j) {
              r.share_clean += at(pc, i, j);  // 0 where j > i
              r.share_masked += at(pm, i, j);
            }
          }
        }
      }
      r.variance_clean /= static_cast<double>(variance_rows);
      r.variance_masked /= static_cast<double>(variance_rows);
      r.share_clean /= static_cast<double>(answer_rows);
      r.share_masked /= static_cast<double>(answer_rows);
      result.variance_rows = variance_rows;
      result.answer_rows = answer_rows;
      result.heads.push_back(r);
    }
  }
  return result;
}

bool close(double actual, double expected, double tolerance) {
  if (std::isnan(expected)) return std::isnan(actual);
  return std::fabs(actual - expected) <= tolerance * std::max(std::fabs(expected), 1e-3);
}

#define CHECK_CLOSE(actual, expected, tolerance)                                                              \
  BOOST_TEST(close((actual), (expected), (tolerance)), #actual " = " << (actual) << ", expected " << (expected))

void check_averages(const attention_averages& actual, const std::vector<const meap::eval::head_attention*>& heads,
                    double tolerance) {
  attention_averages expected;
  double n = 0;
  for (const auto* h : heads) {
    expected.decay += h->decay;
    expected.masked_mass_clean += h->masked_mass_clean;
    expected.masked_mass_masked += h->masked_mass_masked;
    expected.variance_clean += h->variance_clean;
    expected.variance_masked += h->variance_masked;
    expected.variance_change += h->variance_change;
    expected.answer_share_clean += h->answer_share_clean;
    expected.answer_share_masked += h->answer_share_masked;
    n += 1;
  }
  CHECK_CLOSE(actual.decay, expected.decay / n, tolerance);
  CHECK_CLOSE(actual.masked_mass_clean, expected.masked_mass_clean, tolerance);
  CHECK_CLOSE(actual.masked_mass_masked, expected.masked_mass_masked, tolerance);
  CHECK_CLOSE(actual.pooled_decay,
              (expected.masked_mass_clean - expected.masked_mass_masked) / expected.masked_mass_clean, tolerance);
  CHECK_CLOSE(actual.variance_clean, expected.variance_clean / n, tolerance);
  CHECK_CLOSE(actual.variance_masked, expected.variance_masked / n, tolerance);
  CHECK_CLOSE(actual.variance_change, expected.variance_change / n, tolerance);
  CHECK_CLOSE(actual.answer_share_clean, expected.answer_share_clean / n, tolerance);
  CHECK_CLOSE(actual.answer_share_masked, expected.answer_share_masked / n, tolerance);
}

template <class P>
void check_against_naive(const attention_analysis_options& options, double tolerance) {
  const auto model = small_model<P>();
  const auto x = random_batch(2, 12);
  const auto report = analyze_attention(host, model, x.clean_view(), x.masked_view(), options);
  const auto naive = naive_analysis(model, x, options.query_rows, options.answer_spans);

  BOOST_TEST(report.mask_id.value_or(-1) == mask_token);
  BOOST_TEST(report.masked_positions == 7);  // positions 1, 5, 9 of each row and row 1's t = 0
  BOOST_TEST(report.variance_rows == naive.variance_rows);
  BOOST_TEST(report.answer_rows == naive.answer_rows);
  BOOST_TEST_REQUIRE(report.heads.size() == naive.heads.size());
  for (std::size_t c = 0; c < naive.heads.size(); ++c) {
    const auto& a = report.heads[c];
    const auto& e = naive.heads[c];
    BOOST_TEST_CONTEXT("layer " << a.layer << ", head " << a.head) {
      BOOST_TEST(static_cast<std::size_t>(a.layer * report.head_count + a.head) == c);
      CHECK_CLOSE(a.masked_mass_clean, e.mass_clean, tolerance);
      CHECK_CLOSE(a.masked_mass_masked, e.mass_masked, tolerance);
      CHECK_CLOSE(a.decay, (e.mass_clean - e.mass_masked) / e.mass_clean, tolerance);
      CHECK_CLOSE(a.variance_clean, e.variance_clean, tolerance);
      CHECK_CLOSE(a.variance_masked, e.variance_masked, tolerance);
      CHECK_CLOSE(a.variance_change, (e.variance_masked - e.variance_clean) / e.variance_clean, tolerance);
      CHECK_CLOSE(a.answer_share_clean, e.share_clean, tolerance);
      CHECK_CLOSE(a.answer_share_masked, e.share_masked, tolerance);
    }
  }
  for (index_t l = 0; l < report.layer_count; ++l) {
    std::vector<const meap::eval::head_attention*> heads;
    for (index_t h = 0; h < report.head_count; ++h) heads.push_back(&report.at(l, h));
    check_averages(report.layers[static_cast<std::size_t>(l)], heads, 1e-12);
  }
  std::vector<const meap::eval::head_attention*> all;
  for (const auto& h : report.heads) all.push_back(&h);
  check_averages(report.overall, all, 1e-12);
}

// Spans and query rows chosen so that some rows come before the span (skipped) and row 1's list
// includes a masked query row (t = 0, too early for the variance) and a late one.
attention_analysis_options chosen_rows_options() {
  attention_analysis_options options;
  options.mask_id = mask_token;
  options.answer_spans = {{3, 6}, {0, 2}};
  options.query_rows = {{2, 4, 7, 8, 11}, {0, 1, 3, 6, 10}};
  return options;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(attention_analysis)

BOOST_AUTO_TEST_CASE(fp64_matches_a_naive_recomputation) {
  check_against_naive<meap::fp64>(chosen_rows_options(), 1e-9);
  // Defaults: the mask id inferred, every query row, no answer span (the shares are NaN).
  check_against_naive<meap::fp64>({}, 1e-9);
}

BOOST_AUTO_TEST_CASE(fp32_matches_a_naive_recomputation) {
  check_against_naive<meap::fp32>(chosen_rows_options(), 1e-5);
}

// Zero q and k projections: every score is 0 for both inputs, so P[i, j] = 1 / (i + 1).
// Masked keys {2, 4} of T = 6 receive sum_{i >= 2} 1/(i+1) + sum_{i >= 4} 1/(i+1) = 79/60 on both
// inputs (decay exactly 0); every row's unmasked probabilities are equal (variance exactly 0, so
// the relative change is NaN by definition); the span [1, 3) gets 1/2, 2/3, 2/4, 2/5, 2/6 from
// rows 1..5 (row 0 is before the span): mean 0.48.
BOOST_AUTO_TEST_CASE(uniform_attention_has_no_decay) {
  auto model = small_model<meap::fp64>();
  for (auto& p : model.parameters())
    if (p.name.ends_with("q_proj.weight") || p.name.ends_with("k_proj.weight")) meap::fill(host, p.value, 0.0);
  model.store().refresh_compute(host);
  const std::vector<std::int32_t> clean = {3, 1, 4, 1, 5, 9}, masked = {3, 1, mask_token, 1, mask_token, 9};
  attention_analysis_options options;
  options.answer_spans = {{1, 3}};
  const auto report = analyze_attention(host, model, meap::make_view(std::span<const std::int32_t>(clean), {1, 6}),
                                        meap::make_view(std::span<const std::int32_t>(masked), {1, 6}), options);
  BOOST_TEST(report.masked_positions == 2);
  BOOST_TEST(report.variance_rows == 5);  // rows 1..5 see at least two unmasked keys
  BOOST_TEST(report.answer_rows == 5);
  for (const auto& h : report.heads) {
    BOOST_TEST(h.masked_mass_clean == 79.0 / 60.0, boost::test_tools::tolerance(1e-14));
    BOOST_TEST(h.masked_mass_masked == h.masked_mass_clean);
    BOOST_TEST(h.decay == 0.0);
    BOOST_TEST(h.variance_clean == 0.0);
    BOOST_TEST(h.variance_masked == 0.0);
    BOOST_TEST(std::isnan(h.variance_change));
    BOOST_TEST(h.answer_share_clean == 0.48, boost::test_tools::tolerance(1e-14));
    BOOST_TEST(h.answer_share_masked == 0.48, boost::test_tools::tolerance(1e-14));
  }
  BOOST_TEST(report.overall.pooled_decay == 0.0);
  BOOST_TEST(report.overall.masked_mass_clean == 8 * 79.0 / 60.0, boost::test_tools::tolerance(1e-14));
}

// One layer, one head, d = D = 2. Token 1 embeds as (1, 0), the mask token 2 as (0, 0); RMSNorm
// (eps 1e-300) makes token 1 (sqrt 2, 0); W_q = [[1, 0], [0, 0]] and W_k = [[1/sqrt 2, 0], [0, 0]]
// give q = (sqrt 2, 0), k = (1, 0). RoPE with D = 2 rotates the pair by t radians, so with scale
// 1/sqrt 2 the score of query i on key j is cos(i - j) between two 1-tokens, 0 with a mask token.
// Row 0: clean [1 1 1], masked [1 M 1] (M = {(0, 1)}); row 1: clean = masked = [1 1 1].
// With e1 = exp(cos 1), e2 = exp(cos 2), e = exp(1): Z1 = e1 + e, Z2 = e2 + e1 + e, Z2m = e2 + 1 + e.
//   Att_clean(M) = P[1,1] + P[2,1] = e / Z1 + e1 / Z2;  Att_masked(M) = 1/2 (query M is zero) + 1 / Z2m
//   variance rows: (0, 2) over keys {0, 2}; (1, 1) over {0, 1}; (1, 2) over {0, 1, 2}
//   answer spans [0, 1) and [2, 3): rows (0, 0), (0, 1), (0, 2), (1, 2).
BOOST_AUTO_TEST_CASE(cosine_scores_worked_out_on_paper) {
  meap::nn::llama_config config;
  config.vocab = 3;
  config.d_model = 2;
  config.layers = 1;
  config.heads = 1;
  config.kv_heads = 1;
  config.ffn = 1;
  config.max_seq = 4;
  config.norm_eps = 1e-300;
  meap::nn::llama_model<meap::fp64> model(config);  // zeros; norm gains 1
  for (auto& p : model.parameters()) {
    if (p.name == "model.embed_tokens.weight") p.value(1, 0) = 1.0;
    if (p.name.ends_with("q_proj.weight")) p.value(0, 0) = 1.0;
    if (p.name.ends_with("k_proj.weight")) p.value(0, 0) = 1.0 / std::sqrt(2.0);
  }
  model.store().refresh_compute(host);
  const std::vector<std::int32_t> clean = {1, 1, 1, 1, 1, 1}, masked = {1, 2, 1, 1, 1, 1};
  attention_analysis_options options;
  options.answer_spans = {{0, 1}, {2, 3}};
  const auto report = analyze_attention(host, model, meap::make_view(std::span<const std::int32_t>(clean), {2, 3}),
                                        meap::make_view(std::span<const std::int32_t>(masked), {2, 3}), options);

  const double e1 = std::exp(std::cos(1.0)), e2 = std::exp(std::cos(2.0)), e = std::exp(1.0);
  const double Z1 = e1 + e, Z2 = e2 + e1 + e, Z2m = e2 + 1 + e;
  const auto variance = [](std::vector<double> v) {
    double mean = 0, sum = 0;
    for (double x : v) mean += x / static_cast<double>(v.size());
    for (double x : v) sum += (x - mean) * (x - mean);
    return sum / static_cast<double>(v.size());
  };
  const double mass_clean = e / Z1 + e1 / Z2, mass_masked = 0.5 + 1 / Z2m;
  const double shared_rows = variance({e1 / Z1, e / Z1}) + variance({e2 / Z2, e1 / Z2, e / Z2});
  const double variance_clean = (variance({e2 / Z2, e / Z2}) + shared_rows) / 3;
  const double variance_masked = (variance({e2 / Z2m, e / Z2m}) + shared_rows) / 3;

  BOOST_TEST(report.mask_id.value_or(-1) == 2);  // inferred
  BOOST_TEST(report.masked_positions == 1);
  BOOST_TEST(report.variance_rows == 3);
  BOOST_TEST(report.answer_rows == 4);
  const auto& h = report.at(0, 0);
  const auto tolerance = boost::test_tools::tolerance(1e-12);
  BOOST_TEST(h.masked_mass_clean == mass_clean, tolerance);
  BOOST_TEST(h.masked_mass_masked == mass_masked, tolerance);
  BOOST_TEST(h.decay == (mass_clean - mass_masked) / mass_clean, tolerance);
  BOOST_TEST(h.variance_clean == variance_clean, tolerance);
  BOOST_TEST(h.variance_masked == variance_masked, tolerance);
  BOOST_TEST(h.variance_change == (variance_masked - variance_clean) / variance_clean, tolerance);
  BOOST_TEST(h.answer_share_clean == (1 + e1 / Z1 + e2 / Z2 + e / Z2) / 4, tolerance);
  BOOST_TEST(h.answer_share_masked == (1 + 0.5 + e2 / Z2m + e / Z2) / 4, tolerance);
  BOOST_TEST(report.overall.pooled_decay == h.decay, tolerance);
  BOOST_TEST_MESSAGE("worked case: mass " << h.masked_mass_clean << " -> " << h.masked_mass_masked << ", decay "
                                          << h.decay << ", variance " << h.variance_clean << " -> " << h.variance_masked
                                          << " (" << h.variance_change << "), share " << h.answer_share_clean << " -> "
                                          << h.answer_share_masked);
}

// M empty: every decay is NaN (documented), mask_id stays unset, and the other metrics are
// still computed; both inputs being equal, their variances agree exactly.
BOOST_AUTO_TEST_CASE(empty_mask_gives_nan_decay) {
  const auto model = small_model<meap::fp64>();
  const auto x = random_batch(2, 8);
  const auto report = analyze_attention(host, model, x.clean_view(), x.clean_view());
  BOOST_TEST(report.masked_positions == 0);
  BOOST_TEST(!report.mask_id.has_value());
  BOOST_TEST(report.variance_rows == 14);  // rows 1..7 of both batch rows
  for (const auto& h : report.heads) {
    BOOST_TEST(h.masked_mass_clean == 0.0);
    BOOST_TEST(std::isnan(h.decay));
    BOOST_TEST(h.variance_clean > 0.0);
    BOOST_TEST(h.variance_change == 0.0);
    BOOST_TEST(std::isnan(h.answer_share_clean));
  }
  BOOST_TEST(std::isnan(report.overall.decay));
  BOOST_TEST(std::isnan(report.overall.pooled_decay));
  BOOST_TEST(report.overall.variance_change == 0.0);
}

BOOST_AUTO_TEST_CASE(rejects_bad_arguments) {
  const auto model = small_model<meap::fp32>();
  const auto x = random_batch(2, 6);
  const std::string f = "meap::eval::analyze_attention";
  using meap_test::error_says;
  const auto analyze = [&](const std::vector<std::int32_t>& clean, const std::vector<std::int32_t>& masked,
                           const attention_analysis_options& options = {}, index_t rows = 2) {
    const index_t length = static_cast<index_t>(clean.size()) / rows;
    return analyze_attention(host, model, meap::make_view(std::span<const std::int32_t>(clean), {rows, length}),
                             meap::make_view(std::span<const std::int32_t>(masked), {rows, static_cast<index_t>(masked.size()) / rows}),
                             options);
  };

  // Shapes.
  BOOST_CHECK_EXCEPTION(analyze(x.clean, std::vector<std::int32_t>(x.masked.begin(), x.masked.end() - 2)), meap::error,
                        error_says(f, "masked", {"shape (2, 5)", "(2, 6)"}));
  BOOST_CHECK_EXCEPTION(analyze_attention(host, model, meap::tensor_view<const std::int32_t, meap::cpu>(x.clean.data(), {12}),
                                          x.masked_view()),
                        meap::error, error_says(f, "clean", {"shape (12)", "(B, T)"}));
  const std::vector<std::int32_t> long_row(17, 0);
  BOOST_CHECK_EXCEPTION(analyze(long_row, long_row, {}, 1), meap::error, error_says(f, "clean", {"T = 17", "max_seq = 16"}));

  // Token ids and the mask.
  auto bad = x.clean;
  bad[3] = 20;
  BOOST_CHECK_EXCEPTION(analyze(bad, x.masked), meap::error, error_says(f, "clean", {"token 20 at (0, 3)", "vocab = 20"}));
  bad = x.masked;
  bad[7] = -1;
  BOOST_CHECK_EXCEPTION(analyze(x.clean, bad), meap::error, error_says(f, "masked", {"token -1 at (1, 1)"}));
  attention_analysis_options options;
  options.mask_id = 20;
  BOOST_CHECK_EXCEPTION(analyze(x.clean, x.masked, options), meap::error, error_says(f, "mask_id", {"= 20", "vocab = 20"}));
  // A non-mask position that differs: with the mask id given, and with it inferred.
  bad = x.masked;
  bad[4] = (x.clean[4] + 1) % mask_token;
  options.mask_id = mask_token;
  BOOST_CHECK_EXCEPTION(analyze(x.clean, bad, options), meap::error,
                        error_says(f, "masked", {"at (0, 4)", "the clean token " + std::to_string(x.clean[4]), "mask id 19"}));
  BOOST_CHECK_EXCEPTION(analyze(x.clean, bad), meap::error,
                        error_says(f, "masked", {"at (0, 4)", "inferred from the first differing position (0, 1)"}));
  // The clean batch holding the mask id (at a position left unmasked, so both inputs agree there).
  bad = x.clean;
  auto bad_masked = x.masked;
  bad[2] = bad_masked[2] = mask_token;
  BOOST_CHECK_EXCEPTION(analyze(bad, bad_masked), meap::error,
                        error_says(f, "clean", {"token 19 at (0, 2)", "no mask id 19"}));

  // Answer spans.
  options = {};
  options.answer_spans = {{0, 2}};
  BOOST_CHECK_EXCEPTION(analyze(x.clean, x.masked, options), meap::error, error_says(f, "answer_spans", {"1 spans", "B = 2"}));
  for (const token_span span : {token_span{4, 7}, token_span{3, 3}, token_span{-1, 2}}) {
    options.answer_spans = {{0, 2}, span};
    BOOST_CHECK_EXCEPTION(analyze(x.clean, x.masked, options), meap::error,
                          error_says(f, "answer_spans",
                                     {"[" + std::to_string(span.begin) + ", " + std::to_string(span.end) + ") for row 1",
                                      "T = 6"}));
  }

  // Query rows.
  options = {};
  options.query_rows = {{1, 2}};
  BOOST_CHECK_EXCEPTION(analyze(x.clean, x.masked, options), meap::error, error_says(f, "query_rows", {"1 lists", "B = 2"}));
  options.query_rows = {{1, 2}, {0, 6}};
  BOOST_CHECK_EXCEPTION(analyze(x.clean, x.masked, options), meap::error,
                        error_says(f, "query_rows", {"position 6 (entry 1 of row 1)", "[0, T = 6)"}));
  options.query_rows = {{-1}, {}};
  BOOST_CHECK_EXCEPTION(analyze(x.clean, x.masked, options), meap::error,
                        error_says(f, "query_rows", {"position -1 (entry 0 of row 0)"}));
  options.query_rows = {{3, 3}, {}};
  BOOST_CHECK_EXCEPTION(analyze(x.clean, x.masked, options), meap::error,
                        error_says(f, "query_rows", {"position 3 (entry 1 of row 0)", "strictly increasing"}));

  // The report's accessor.
  const auto report = analyze(x.clean, x.masked);
  BOOST_CHECK_EXCEPTION(report.at(2, 0), meap::error, error_says("meap::eval::attention_report::at", "layer, head", {"(2, 0)"}));
  BOOST_CHECK_EXCEPTION(report.at(0, 4), meap::error, error_says("layer, head", {"head in [0, 4)"}));
}

BOOST_AUTO_TEST_SUITE_END()
