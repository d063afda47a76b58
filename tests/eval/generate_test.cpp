// Generation with a key/value cache: the cached attention kernel against the full causal one,
// llama_model::forward_cached against forward, generate() against uncached greedy decoding, a batch
// of prompts of different lengths against its rows one by one, the sampling filters, target
// log-likelihoods and perplexity against full logits, and the argument checks.
#include "support/errors.hpp"

#include <meap/eval/generate.hpp>
#include <meap/eval/likelihood.hpp>
#include <meap/eval/scoring.hpp>
#include <meap/meap.hpp>
#include <meap/nn/llama.hpp>

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <span>
#include <string>
#include <unistd.h>
#include <vector>

using meap::cpu;
using meap::dims;
using meap::index_t;
using meap_test::error_says;

namespace {

meap::nn::llama_config tiny_config() {
  meap::nn::llama_config c;
  c.vocab = 29;
  c.d_model = 16;
  c.layers = 2;
  c.heads = 4;
  c.kv_heads = 2;  // GQA: two query heads per kv head
  c.ffn = 40;
  c.max_seq = 24;
  return c;
}

template <class P>
meap::nn::llama_model<P, cpu> tiny_model(std::uint64_t seed = 7) {
  meap::nn::llama_model<P, cpu> model(tiny_config());
  model.initialize(seed);
  // Larger weights than the training init, so that the next-token distributions are peaked
  // enough for greedy decoding to be a meaningful check (the init's logits are nearly flat).
  auto& store = model.store();
  auto master = store.master_flat();
  for (index_t i = 0; i < master.numel(); ++i) master.data()[i] *= 4;
  store.refresh_compute(cpu{});
  return model;
}

std::vector<std::int32_t> random_ids(index_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<std::int32_t> id(0, static_cast<std::int32_t>(tiny_config().vocab) - 1);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
  for (auto& v : ids) v = id(rng);
  return ids;
}

template <class T>
meap::tensor<T, cpu> random_tensor(const dims& shape, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  auto t = meap::zeros<T>(cpu{}, shape);
  for (index_t i = 0; i < t.numel(); ++i) t.data()[i] = static_cast<T>(normal(rng));
  return t;
}

// Full (uncached) logits of one sequence: (T, V) row-major as double.
template <class P>
std::vector<double> full_logits(const meap::nn::llama_model<P, cpu>& model, const std::vector<std::int32_t>& ids) {
  const auto T = static_cast<index_t>(ids.size());
  auto tokens = meap::zeros<std::int32_t>(cpu{}, dims{1, T});
  std::copy(ids.begin(), ids.end(), tokens.data());
  const auto ctx = model.forward(cpu{}, tokens.view().as_const());
  const auto logits = model.logits(cpu{}, ctx);
  return std::vector<double>(logits.data(), logits.data() + logits.numel());
}

template <class P>
std::vector<std::int32_t> uncached_greedy(const meap::nn::llama_model<P, cpu>& model, std::vector<std::int32_t> ids,
                                          index_t new_tokens) {
  const auto V = static_cast<std::size_t>(model.config().vocab);
  std::vector<std::int32_t> out;
  for (index_t n = 0; n < new_tokens; ++n) {
    const auto logits = full_logits(model, ids);
    const double* last = logits.data() + (ids.size() - 1) * V;
    const auto id = static_cast<std::int32_t>(std::max_element(last, last + V) - last);
    out.push_back(id);
    ids.push_back(id);
  }
  return out;
}

double max_abs_difference(const double* a, const double* b, std::size_t n) {
  double worst = 0;
  for (std::size_t i = 0; i < n; ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(cached_attention)

// Prefill in pieces of different sizes per call, rows at different offsets: every query's output
// equals the full causal attention's at the same position.
template <class T>
void check_against_full(double tolerance) {
  const index_t B = 2, S = 19, Hq = 4, Hkv = 2, D = 8;
  const auto q = random_tensor<T>({B, S, Hq, D}, 1), k = random_tensor<T>({B, S, Hkv, D}, 2),
             v = random_tensor<T>({B, S, Hkv, D}, 3);
  const auto full = meap::attention_forward(cpu{}, q.view().as_const(), k.view().as_const(), v.view().as_const());
  // Row 0 is fed as 5 + 1 + 13 tokens, row 1 as 5 + 1 + 13 too but the calls take a slice of each row
  // starting at different cache lengths: (start 0, Tq 5), (5, 1), (6, 13).
  const std::vector<std::pair<index_t, index_t>> pieces{{0, 5}, {5, 1}, {6, 13}};
  for (const auto& [start, Tq] : pieces) {
    auto q_piece = meap::zeros<T>(cpu{}, dims{B, Tq, Hq, D});
    for (index_t b = 0; b < B; ++b)
      std::copy(q.data() + (b * S + start) * Hq * D, q.data() + (b * S + start + Tq) * Hq * D,
                q_piece.data() + b * Tq * Hq * D);
    auto out = meap::zeros<T>(cpu{}, dims{B, Tq, Hq, D});
    const std::vector<index_t> starts{start, start};
    meap::attention_forward_cached<T>(cpu{}, q_piece.view().as_const(), k.view().as_const(), v.view().as_const(),
                                      starts, out.view());
    double worst = 0;
    for (index_t b = 0; b < B; ++b)
      for (index_t i = 0; i < Tq * Hq * D; ++i)
        worst = std::max(worst, std::abs(static_cast<double>(out.data()[b * Tq * Hq * D + i]) -
                                         static_cast<double>(full.out.data()[(b * S + start) * Hq * D + i])));
    BOOST_TEST(worst < tolerance, "piece at " << start << ": max difference " << worst);
  }
  // Different starts per row: row 0 at 3, row 1 at 11, two queries each.
  const std::vector<index_t> starts{3, 11};
  auto q_piece = meap::zeros<T>(cpu{}, dims{B, 2, Hq, D});
  for (index_t b = 0; b < B; ++b)
    std::copy(q.data() + (b * S + starts[static_cast<std::size_t>(b)]) * Hq * D,
              q.data() + (b * S + starts[static_cast<std::size_t>(b)] + 2) * Hq * D, q_piece.data() + b * 2 * Hq * D);
  auto out = meap::zeros<T>(cpu{}, dims{B, 2, Hq, D});
  meap::attention_forward_cached<T>(cpu{}, q_piece.view().as_const(), k.view().as_const(), v.view().as_const(), starts,
                                    out.view());
  for (index_t b = 0; b < B; ++b) {
    double worst = 0;
    for (index_t i = 0; i < 2 * Hq * D; ++i)
      worst = std::max(worst, std::abs(static_cast<double>(out.data()[b * 2 * Hq * D + i]) -
                                       static_cast<double>(
                                           full.out.data()[(b * S + starts[static_cast<std::size_t>(b)]) * Hq * D + i])));
    BOOST_TEST(worst < tolerance, "row " << b << ": max difference " << worst);
  }
}

BOOST_AUTO_TEST_CASE(equals_full_causal_attention_double) { check_against_full<double>(1e-12); }
BOOST_AUTO_TEST_CASE(equals_full_causal_attention_float) { check_against_full<float>(2e-5); }
BOOST_AUTO_TEST_CASE(equals_full_causal_attention_bfloat16) { check_against_full<meap::bfloat16>(2e-2); }

BOOST_AUTO_TEST_CASE(rejects_bad_arguments) {
  const auto q = random_tensor<float>({2, 3, 4, 8}, 1), k = random_tensor<float>({2, 10, 2, 8}, 2);
  auto out = meap::zeros<float>(cpu{}, dims{2, 3, 4, 8});
  const auto call = [&](std::vector<index_t> starts) {
    meap::attention_forward_cached<float>(cpu{}, q.view().as_const(), k.view().as_const(), k.view().as_const(), starts,
                                          out.view());
  };
  BOOST_CHECK_NO_THROW(call({0, 7}));
  BOOST_CHECK_EXCEPTION(call({0, 8}), meap::error,
                        error_says("meap::attention_forward_cached", "start", {"start[1] = 8", "S - Tq = 7"}));
  BOOST_CHECK_EXCEPTION(call({-1, 0}), meap::error, error_says("start", {"start[0] = -1"}));
  BOOST_CHECK_EXCEPTION(call({0}), meap::error, error_says("start", {"1 entries", "B = 2"}));
  const auto k3 = random_tensor<float>({2, 10, 3, 8}, 2);
  BOOST_CHECK_EXCEPTION(meap::attention_forward_cached<float>(cpu{}, q.view().as_const(), k3.view().as_const(),
                                                              k3.view().as_const(), std::vector<index_t>{0, 0}, out.view()),
                        meap::error, error_says("k_cache", {"Hkv = 3", "divides Hq = 4"}));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(forward_cached)

// Prefill of 5 tokens (the causal kernel: nothing cached yet), a chunk of 4 more over the cache
// (the cached kernel, Tq = 4), then one token at a time: the hidden states equal forward() on the
// whole sequence, position by position.
BOOST_AUTO_TEST_CASE(prefill_then_decode_equals_forward) {
  const auto model = tiny_model<meap::fp64>();
  const auto ids = random_ids(16, 11);
  auto all = meap::zeros<std::int32_t>(cpu{}, dims{1, 16});
  std::copy(ids.begin(), ids.end(), all.data());
  const auto reference = model.forward(cpu{}, all.view().as_const());
  auto cache = model.make_cache(cpu{}, 1, 16);
  const auto prefill = model.forward_cached(cpu{}, all.view().slice(1, 0, 5).as_const(), cache);
  const index_t d = model.config().d_model;
  BOOST_TEST(max_abs_difference(prefill.data(), reference.hidden.data(), static_cast<std::size_t>(5 * d)) < 1e-12);
  BOOST_TEST(cache.lengths()[0] == 5);
  const auto chunk = model.forward_cached(cpu{}, all.view().slice(1, 5, 9).as_const(), cache);
  BOOST_TEST(max_abs_difference(chunk.data(), reference.hidden.data() + 5 * d, static_cast<std::size_t>(4 * d)) < 1e-12);
  BOOST_TEST(cache.lengths()[0] == 9);
  for (index_t t = 9; t < 16; ++t) {
    const auto step = model.forward_cached(cpu{}, all.view().slice(1, t, t + 1).as_const(), cache);
    BOOST_TEST(max_abs_difference(step.data(), reference.hidden.data() + t * d, static_cast<std::size_t>(d)) < 1e-12,
               "position " << t);
  }
  BOOST_TEST(cache.lengths()[0] == 16);
  BOOST_CHECK_EXCEPTION(model.forward_cached(cpu{}, all.view().slice(1, 0, 1).as_const(), cache), meap::error,
                        error_says("meap::nn::llama_model::forward_cached", "tokens", {"capacity = 16"}));
}

// A right-padded prefill of rows of lengths 5, 12 and 1 with each row's own advance: every row's
// states equal that row run alone, and the padding is never attended by the decode steps after.
BOOST_AUTO_TEST_CASE(ragged_batch_equals_rows_alone) {
  const auto model = tiny_model<meap::fp64>();
  const std::vector<index_t> lengths{5, 12, 1};
  const auto ids = random_ids(3 * 12, 5);
  auto batch = meap::zeros<std::int32_t>(cpu{}, dims{3, 12});
  std::copy(ids.begin(), ids.end(), batch.data());
  auto cache = model.make_cache(cpu{}, 3, 20);
  const auto hidden = model.forward_cached(cpu{}, batch.view().as_const(), cache, lengths);
  BOOST_TEST((std::vector<index_t>(cache.lengths().begin(), cache.lengths().end()) == lengths));
  auto next = meap::zeros<std::int32_t>(cpu{}, dims{3, 1});
  next.data()[0] = 3, next.data()[1] = 4, next.data()[2] = 5;
  const auto step = model.forward_cached(cpu{}, next.view().as_const(), cache);
  const index_t d = model.config().d_model;
  for (index_t b = 0; b < 3; ++b) {
    const auto L = lengths[static_cast<std::size_t>(b)];
    auto row = meap::zeros<std::int32_t>(cpu{}, dims{1, L + 1});
    std::copy(ids.begin() + b * 12, ids.begin() + b * 12 + L, row.data());
    row.data()[L] = next.data()[b];
    const auto alone = model.forward(cpu{}, row.view().as_const());
    BOOST_TEST(max_abs_difference(hidden.data() + b * 12 * d, alone.hidden.data(), static_cast<std::size_t>(L * d)) <
               1e-12);
    BOOST_TEST(max_abs_difference(step.data() + b * d, alone.hidden.data() + L * d, static_cast<std::size_t>(d)) < 1e-12,
               "row " << b);
  }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(generate)

BOOST_AUTO_TEST_CASE(greedy_equals_uncached_decoding) {
  const auto model = tiny_model<meap::fp64>();
  const auto prompt = random_ids(6, 21);
  meap::eval::generation_options options;
  options.max_new_tokens = 10;
  const auto out = meap::eval::generate(cpu{}, model, {prompt}, options);
  BOOST_TEST(out[0].tokens == uncached_greedy(model, prompt, 10));
  BOOST_TEST((out[0].reason == meap::eval::finish_reason::max_new_tokens));
  // In float too: the same tokens (the margins between the top logits dwarf float rounding here).
  const auto model32 = tiny_model<meap::fp32>();
  BOOST_TEST(meap::eval::generate(cpu{}, model32, {prompt}, options)[0].tokens == uncached_greedy(model32, prompt, 10));
}

BOOST_AUTO_TEST_CASE(batch_equals_rows_one_by_one) {
  const auto model = tiny_model<meap::fp64>();
  const std::vector<std::vector<std::int32_t>> prompts{random_ids(3, 1), random_ids(11, 2), random_ids(1, 3),
                                                       random_ids(7, 4)};
  for (const double temperature : {0.0, 1.0}) {
    meap::eval::generation_options options;
    options.max_new_tokens = 9;
    options.sampling.temperature = temperature;
    options.sampling.top_k = temperature > 0 ? 8 : 0;
    options.sampling.top_p = temperature > 0 ? 0.9 : 1.0;
    options.seed = 99;
    const auto together = meap::eval::generate(cpu{}, model, prompts, options);
    for (std::size_t r = 0; r < prompts.size(); ++r) {
      // Alone, the row is prompt 0 of its batch: the draws are keyed by the prompt index, so give
      // it the batch's rows before it as companions and compare the last one instead.
      std::vector<std::vector<std::int32_t>> prefix(prompts.begin(), prompts.begin() + static_cast<std::ptrdiff_t>(r) + 1);
      const auto alone = meap::eval::generate(cpu{}, model, prefix, options);
      BOOST_TEST(alone.back().tokens == together[r].tokens, "prompt " << r << " at temperature " << temperature);
      if (temperature == 0.0)
        BOOST_TEST(meap::eval::generate(cpu{}, model, {prompts[r]}, options)[0].tokens == together[r].tokens);
    }
  }
}

BOOST_AUTO_TEST_CASE(stops_at_stop_ids_and_max_seq) {
  const auto model = tiny_model<meap::fp64>();
  const auto prompt = random_ids(4, 8);
  const auto free_run = uncached_greedy(model, prompt, 6);
  meap::eval::generation_options options;
  options.max_new_tokens = 6;
  options.stop_ids = {free_run[2]};
  const auto stopped = meap::eval::generate(cpu{}, model, {prompt, random_ids(2, 9)}, options);
  const auto first = std::find(free_run.begin(), free_run.end(), free_run[2]) - free_run.begin();
  BOOST_TEST(stopped[0].tokens == std::vector<std::int32_t>(free_run.begin(), free_run.begin() + first + 1));
  BOOST_TEST((stopped[0].reason == meap::eval::finish_reason::stop_id));
  // A prompt of 20 tokens in a model of max_seq 24: 4 positions left, so 5 tokens (the last one is
  // generated from position 23 and has no position of its own).
  meap::eval::generation_options long_run;
  long_run.max_new_tokens = 100;
  const auto full = meap::eval::generate(cpu{}, model, {random_ids(20, 10), random_ids(3, 11)}, long_run);
  BOOST_TEST(full[0].tokens.size() == 5u);
  BOOST_TEST((full[0].reason == meap::eval::finish_reason::max_seq));
  BOOST_TEST(full[1].tokens.size() == 22u);
  BOOST_TEST(full[0].tokens == uncached_greedy(model, random_ids(20, 10), 5));
  long_run.max_new_tokens = 0;
  BOOST_TEST(meap::eval::generate(cpu{}, model, {prompt}, long_run)[0].tokens.empty());
}

BOOST_AUTO_TEST_CASE(sampling_filters) {
  const std::vector<double> logits{1.0, 3.0, 2.0, 3.0, -1.0};
  meap::eval::sampling_options greedy;
  BOOST_TEST(meap::eval::detail::sample(logits, greedy, meap::philox_stream(1, 0, 0)) == 1);  // lowest id of the tie
  meap::eval::sampling_options top1{1.0, 1, 1.0};
  meap::eval::sampling_options nucleus{1.0, 0, 0.3};  // the first token alone holds ~0.41 of the mass
  for (std::uint32_t i = 0; i < 50; ++i) {
    BOOST_TEST(meap::eval::detail::sample(logits, top1, meap::philox_stream(1, 0, i)) == 1);
    BOOST_TEST(meap::eval::detail::sample(logits, nucleus, meap::philox_stream(2, 0, i)) == 1);
  }
  // Temperature 1, no filter: frequencies follow the softmax (20000 draws; 5 sigma bounds).
  meap::eval::sampling_options plain{1.0, 0, 1.0};
  std::vector<int> counts(logits.size(), 0);
  const int draws = 20000;
  for (std::uint32_t i = 0; i < static_cast<std::uint32_t>(draws); ++i)
    ++counts[static_cast<std::size_t>(meap::eval::detail::sample(logits, plain, meap::philox_stream(3, 0, i)))];
  double total = 0;
  for (const double z : logits) total += std::exp(z);
  for (std::size_t j = 0; j < logits.size(); ++j) {
    const double p = std::exp(logits[j]) / total;
    const double sigma = std::sqrt(draws * p * (1 - p));
    BOOST_TEST(std::abs(counts[j] - draws * p) < 5 * sigma + 1, "token " << j << ": " << counts[j] << " of " << draws);
  }
  // top-k 2 at temperature 1: only the two 3.0 logits, equally often.
  meap::eval::sampling_options top2{1.0, 2, 1.0};
  int ones = 0;
  for (std::uint32_t i = 0; i < 2000; ++i) {
    const auto id = meap::eval::detail::sample(logits, top2, meap::philox_stream(4, 0, i));
    BOOST_TEST((id == 1 || id == 3));
    ones += id == 1;
  }
  BOOST_TEST(std::abs(ones - 1000) < 5 * std::sqrt(500.0));
}

BOOST_AUTO_TEST_CASE(rejects_bad_arguments) {
  const auto model = tiny_model<meap::fp32>();
  const auto call = [&](std::vector<std::vector<std::int32_t>> prompts, meap::eval::generation_options o) {
    (void)meap::eval::generate(cpu{}, model, prompts, o);
  };
  meap::eval::generation_options ok;
  BOOST_CHECK_EXCEPTION(call({}, ok), meap::error, error_says("meap::eval::generate", "prompts", {"at least one"}));
  BOOST_CHECK_EXCEPTION(call({{}}, ok), meap::error, error_says("prompts", {"prompt 0 of 0 tokens"}));
  BOOST_CHECK_EXCEPTION(call({random_ids(25, 1)}, ok), meap::error, error_says("prompts", {"max_seq = 24"}));
  BOOST_CHECK_EXCEPTION(call({{1, 29}}, ok), meap::error, error_says("prompts", {"token 29", "vocab = 29"}));
  auto bad = ok;
  bad.sampling.temperature = -1;
  BOOST_CHECK_EXCEPTION(call({{1}}, bad), meap::error, error_says("sampling.temperature", {"-1"}));
  bad = ok;
  bad.sampling.top_p = 0;
  BOOST_CHECK_EXCEPTION(call({{1}}, bad), meap::error, error_says("sampling.top_p", {"(0, 1]"}));
  bad = ok;
  bad.stop_ids = {40};
  BOOST_CHECK_EXCEPTION(call({{1}}, bad), meap::error, error_says("options.stop_ids", {"40"}));
  BOOST_CHECK_EXCEPTION(model.make_cache(cpu{}, 1, 25), meap::error,
                        error_says("meap::nn::kv_cache", "capacity", {"max_seq = 24"}));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(likelihood)

BOOST_AUTO_TEST_CASE(target_scores_equal_log_softmax_of_full_logits) {
  const auto model = tiny_model<meap::fp64>();
  const auto V = static_cast<std::size_t>(model.config().vocab);
  std::vector<meap::eval::scored_sequence> sequences{{random_ids(10, 1), {{0, 4}, {9, 7}, {3, 0}}},
                                                     {random_ids(4, 2), {{2, 28}}},
                                                     {random_ids(17, 3), {{16, 1}, {8, 2}}}};
  const auto scores = meap::eval::score_targets(cpu{}, model, sequences, 2);  // two forward passes
  for (std::size_t s = 0; s < sequences.size(); ++s) {
    const auto logits = full_logits(model, sequences[s].tokens);
    for (std::size_t k = 0; k < sequences[s].targets.size(); ++k) {
      const auto& t = sequences[s].targets[k];
      const double* z = logits.data() + static_cast<std::size_t>(t.position) * V;
      const double top = *std::max_element(z, z + V);
      double sum = 0;
      for (std::size_t j = 0; j < V; ++j) sum += std::exp(z[j] - top);
      BOOST_TEST(std::abs(scores[s].log_likelihood[k] - (z[t.id] - top - std::log(sum))) < 1e-10);
      BOOST_TEST(scores[s].top1[k] == (std::max_element(z, z + V) - z == t.id));
    }
  }
  BOOST_CHECK_EXCEPTION(meap::eval::score_targets(cpu{}, model, {{random_ids(4, 1), {{4, 1}}}}), meap::error,
                        error_says("meap::eval::score_targets", "sequences", {"target position 4", "[0, 4)"}));
}

BOOST_AUTO_TEST_CASE(perplexity_equals_mean_cross_entropy_of_full_logits) {
  const auto model = tiny_model<meap::fp64>();
  const auto V = static_cast<std::size_t>(model.config().vocab);
  const auto ids = random_ids(3 * 10 + 4, 31);  // 3 windows of 10 (+1), 3 tokens left over
  const auto path = std::filesystem::temp_directory_path() / ("meap_eval_ppl_" + std::to_string(::getpid()) + ".bin");
  {
    std::ofstream file(path, std::ios::binary);
    for (const auto id : ids) {
      const auto v = static_cast<std::uint16_t>(id);
      file.write(reinterpret_cast<const char*>(&v), sizeof v);
    }
  }
  meap::token_dataset_options data_options;
  data_options.seq_len = 10;
  data_options.type = meap::token_type::u16;
  const meap::token_dataset data(path, data_options);
  meap::eval::perplexity_options options;
  options.batch_rows = 2;
  const auto result = meap::eval::perplexity(cpu{}, model, data, options);
  std::filesystem::remove(path);
  double nll = 0;
  for (std::size_t w = 0; w < 3; ++w) {
    const std::vector<std::int32_t> window(ids.begin() + static_cast<std::ptrdiff_t>(w * 10),
                                           ids.begin() + static_cast<std::ptrdiff_t>(w * 10 + 10));
    const auto logits = full_logits(model, window);
    for (std::size_t t = 0; t < 10; ++t) {
      const double* z = logits.data() + t * V;
      const double top = *std::max_element(z, z + V);
      double sum = 0;
      for (std::size_t j = 0; j < V; ++j) sum += std::exp(z[j] - top);
      nll -= z[ids[w * 10 + t + 1]] - top - std::log(sum);
    }
  }
  BOOST_TEST(result.windows == 3);
  BOOST_TEST(result.tokens == 30);
  BOOST_TEST(std::abs(result.mean_nll - nll / 30) < 1e-10);
  BOOST_TEST(std::abs(result.perplexity / std::exp(nll / 30) - 1) < 1e-10);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(scoring)

// Examples whose answers are (or are not) what greedy decoding writes: exact match and the
// teacher-forced top-1 rule agree with uncached decoding, and the answer's log-likelihood is the
// sum of its tokens' log-softmax values.
BOOST_AUTO_TEST_CASE(exact_match_and_log_likelihood) {
  const auto model = tiny_model<meap::fp64>();
  const auto V = static_cast<std::size_t>(model.config().vocab);
  std::vector<meap::eval::task_example> examples;
  for (std::uint32_t i = 0; i < 5; ++i) {
    meap::eval::task_example e;
    e.prompt = random_ids(3 + 2 * i, 50 + i);
    e.answer = uncached_greedy(model, e.prompt, 1 + i % 3);
    if (i % 2 == 1) e.answer.back() = (e.answer.back() + 1) % static_cast<std::int32_t>(V);  // wrong last token
    examples.push_back(e);
  }
  // An inline target that is the model's top-1 keeps example 0 correct; a wrong one breaks example 2.
  examples[0].inline_targets = {{1, uncached_greedy(model, {examples[0].prompt[0], examples[0].prompt[1]}, 1)[0]}};
  const auto wrong = (uncached_greedy(model, {examples[2].prompt[0]}, 1)[0] + 1) % static_cast<std::int32_t>(V);
  examples[2].inline_targets = {{0, wrong}};
  const auto exact = meap::eval::score_examples(cpu{}, model, examples, meap::eval::scoring::exact_match, 2);
  const auto likely = meap::eval::score_examples(cpu{}, model, examples, meap::eval::scoring::log_likelihood, 3);
  for (std::size_t i = 0; i < examples.size(); ++i) {
    BOOST_TEST(exact[i].correct == (i % 2 == 0), "example " << i);  // generation ignores inline targets
    BOOST_TEST(likely[i].correct == (i % 2 == 0 && i != 2), "example " << i);
    BOOST_TEST(std::isnan(exact[i].answer_log_likelihood));
    // The answer's log-likelihood from full logits over prompt + answer.
    auto sequence = examples[i].prompt;
    sequence.insert(sequence.end(), examples[i].answer.begin(), examples[i].answer.end() - 1);
    const auto logits = full_logits(model, sequence);
    double expected = 0;
    for (std::size_t k = 0; k < examples[i].answer.size(); ++k) {
      const double* z = logits.data() + (examples[i].prompt.size() - 1 + k) * V;
      const double top = *std::max_element(z, z + V);
      double sum = 0;
      for (std::size_t j = 0; j < V; ++j) sum += std::exp(z[j] - top);
      expected += z[examples[i].answer[k]] - top - std::log(sum);
    }
    BOOST_TEST(std::abs(likely[i].answer_log_likelihood - expected) < 1e-10);
  }
  BOOST_CHECK_EXCEPTION(meap::eval::parse_scoring("f1"), meap::error,
                        error_says("meap::eval::parse_scoring", "scoring", {"f1", "exact_match"}));
  examples[1].prompt = random_ids(22, 3);  // 22 + 3 - 1 = 24 positions: fits max_seq = 24
  examples[1].answer = {1, 2, 3};
  BOOST_CHECK_NO_THROW(meap::eval::score_examples(cpu{}, model, examples, meap::eval::scoring::log_likelihood));
  examples[1].answer = {1, 2, 3, 4};
  BOOST_CHECK_EXCEPTION(meap::eval::score_examples(cpu{}, model, examples, meap::eval::scoring::exact_match),
                        meap::error, error_says("examples", {"example 1 needing 25 positions", "max_seq = 24"}));
}

BOOST_AUTO_TEST_SUITE_END()
