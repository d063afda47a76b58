// eval/ on CUDA against the CPU: the cached attention kernel (ragged starts, several chunks of a
// long cache, float and bfloat16), llama_model::forward_cached, generate(), target scores and
// perplexity, and the attention analysis. Label `gpu`: skipped (exit 77) without a device.
#define BOOST_TEST_MODULE meap eval cuda
#define BOOST_TEST_NO_MAIN
#define BOOST_TEST_ALTERNATIVE_INIT_API
#include <boost/test/unit_test.hpp>

#include <meap/cuda.hpp>
#include <meap/eval/attention_analysis.hpp>
#include <meap/eval/generate.hpp>
#include <meap/eval/likelihood.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <unistd.h>
#include <vector>

#include "support/cuda.hpp"
#include "support/errors.hpp"
#include "support/gpu_main.hpp"

namespace {

using meap::dims;
using meap::index_t;
using meap_test::values_of;
const meap::cpu host;

meap::nn::llama_config tiny_config() {
  return {.vocab = 29, .d_model = 32, .layers = 2, .heads = 4, .kv_heads = 2, .ffn = 48, .max_seq = 40};
}

// The same weights on both devices (the init scaled up so that greedy choices have clear margins).
template <class P>
meap::nn::llama_model<meap::fp32, meap::cpu> cpu_model() {
  meap::nn::llama_model<meap::fp32, meap::cpu> model(tiny_config());
  model.initialize(5);
  auto master = model.store().master_flat();
  for (index_t i = 0; i < master.numel(); ++i) master.data()[i] *= 4;
  model.store().refresh_compute(host);
  return model;
}
template <class P>
meap::nn::llama_model<P, meap::cuda> cuda_model(const meap::cuda& device,
                                                const meap::nn::llama_model<meap::fp32, meap::cpu>& reference) {
  meap::nn::llama_model<P, meap::cuda> model(tiny_config(), device);
  meap::copy(device, reference.store().master_flat().as_const(), model.store().master_flat());
  model.store().refresh_compute(device);
  meap::synchronize(device);
  return model;
}

std::vector<std::int32_t> random_ids(index_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<std::int32_t> id(0, 28);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
  for (auto& v : ids) v = id(rng);
  return ids;
}

template <class T>
meap::tensor<T, meap::cpu> random_tensor(const dims& shape, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  auto t = meap::zeros<T>(host, shape);
  for (index_t i = 0; i < t.numel(); ++i) t.data()[i] = static_cast<T>(normal(rng));
  return t;
}

double max_difference(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(double(a[i]) - double(b[i])));
  return worst;
}

}  // namespace

BOOST_FIXTURE_TEST_SUITE(eval_cuda, meap_test::stream_fixture)

template <class T>
void check_cached_attention(const meap::cuda& device, index_t B, index_t S, index_t Tq, index_t Hq, index_t Hkv,
                            index_t D, std::vector<index_t> starts, double tolerance) {
  const auto q = random_tensor<T>({B, Tq, Hq, D}, 1), k = random_tensor<T>({B, S, Hkv, D}, 2),
             v = random_tensor<T>({B, S, Hkv, D}, 3);
  auto expected = meap::zeros<T>(host, q.shape());
  meap::attention_forward_cached<T>(host, q.view().as_const(), k.view().as_const(), v.view().as_const(), starts,
                                    expected.view());
  const auto q_d = meap::to_device(device, q.view().as_const()), k_d = meap::to_device(device, k.view().as_const()),
             v_d = meap::to_device(device, v.view().as_const());
  meap::tensor<T, meap::cuda> out(device, q.shape());
  meap::attention_forward_cached<T>(device, q_d.view().as_const(), k_d.view().as_const(), v_d.view().as_const(), starts,
                                    out.view());
  const double worst = max_difference(values_of(device, out.view()), values_of(device, expected.view()));
  BOOST_TEST(worst < tolerance, "B " << B << " S " << S << " Tq " << Tq << " D " << D << ": " << worst);
}

BOOST_AUTO_TEST_CASE(cached_attention_matches_cpu) {
  check_cached_attention<float>(device, 3, 21, 4, 4, 2, 8, {0, 9, 17}, 2e-5);
  check_cached_attention<float>(device, 2, 40, 1, 8, 8, 64, {39, 12}, 2e-5);
  check_cached_attention<float>(device, 1, 2 * 2048 + 300, 1, 2, 1, 256, {2 * 2048 + 299}, 2e-5);  // three chunks
  check_cached_attention<float>(device, 1, 2500, 70, 2, 2, 6, {2400}, 2e-5);
  check_cached_attention<meap::bfloat16>(device, 2, 33, 3, 4, 1, 16, {0, 30}, 2e-2);
  check_cached_attention<meap::half>(device, 2, 33, 1, 4, 2, 128, {5, 32}, 4e-3);
}

BOOST_AUTO_TEST_CASE(forward_cached_and_generate_match_cpu) {
  const auto reference = cpu_model<meap::fp32>();
  const auto model = cuda_model<meap::fp32>(device, reference);
  // A ragged prefill and two decode steps: the hidden states of both devices agree.
  const std::vector<index_t> lengths{7, 19, 2};
  const auto ids = random_ids(3 * 19, 4);
  auto tokens = meap::zeros<std::int32_t>(host, dims{3, 19});
  std::copy(ids.begin(), ids.end(), tokens.data());
  auto cpu_cache = reference.make_cache(host, 3, 30);
  auto cuda_cache = model.make_cache(device, 3, 30);
  const auto tokens_d = meap::to_device(device, tokens.view().as_const());
  auto a = reference.forward_cached(host, tokens.view().as_const(), cpu_cache, lengths);
  auto b = model.forward_cached(device, tokens_d.view().as_const(), cuda_cache, lengths);
  BOOST_TEST(max_difference(values_of(device, a.view()), values_of(device, b.view())) < 1e-4);
  for (int step = 0; step < 2; ++step) {
    const auto next = meap::to_device(device, tokens.view().slice(1, step, step + 1).as_const());
    a = reference.forward_cached(host, tokens.view().slice(1, step, step + 1).as_const(), cpu_cache);
    b = model.forward_cached(device, next.view().as_const(), cuda_cache);
    BOOST_TEST(max_difference(values_of(device, a.view()), values_of(device, b.view())) < 1e-4, "step " << step);
  }
  const std::vector<std::vector<std::int32_t>> prompts{random_ids(5, 1), random_ids(13, 2), random_ids(1, 3)};
  meap::eval::generation_options options;
  options.max_new_tokens = 12;
  const auto on_cpu = meap::eval::generate(host, reference, prompts, options);
  const auto on_gpu = meap::eval::generate(device, model, prompts, options);
  for (std::size_t r = 0; r < prompts.size(); ++r) BOOST_TEST(on_gpu[r].tokens == on_cpu[r].tokens, "prompt " << r);
  // bfloat16 compute runs end to end (its tokens may differ from float's by rounding).
  const auto model16 = cuda_model<meap::bf16_mixed>(device, reference);
  const auto on_gpu16 = meap::eval::generate(device, model16, prompts, options);
  BOOST_TEST(on_gpu16[1].tokens.size() == 12u);
}

BOOST_AUTO_TEST_CASE(scores_and_perplexity_match_cpu) {
  const auto reference = cpu_model<meap::fp32>();
  const auto model = cuda_model<meap::fp32>(device, reference);
  const std::vector<meap::eval::scored_sequence> sequences{{random_ids(12, 1), {{11, 3}, {2, 4}}},
                                                           {random_ids(30, 2), {{29, 0}}}};
  const auto a = meap::eval::score_targets(host, reference, sequences);
  const auto b = meap::eval::score_targets(device, model, sequences);
  for (std::size_t s = 0; s < sequences.size(); ++s)
    for (std::size_t k = 0; k < a[s].log_likelihood.size(); ++k)
      BOOST_TEST(std::abs(a[s].log_likelihood[k] - b[s].log_likelihood[k]) < 1e-3);

  const auto ids = random_ids(5 * 16 + 1, 7);
  const auto path = std::filesystem::temp_directory_path() / ("meap_eval_cuda_" + std::to_string(::getpid()) + ".u16");
  {
    std::ofstream file(path, std::ios::binary);
    for (const auto id : ids) {
      const auto value = static_cast<std::uint16_t>(id);
      file.write(reinterpret_cast<const char*>(&value), sizeof value);
    }
  }
  meap::token_dataset_options data_options;
  data_options.seq_len = 16;
  const meap::token_dataset data(path, data_options);
  const auto p_cpu = meap::eval::perplexity(host, reference, data);
  const auto p_gpu = meap::eval::perplexity(device, model, data);
  std::filesystem::remove(path);
  BOOST_TEST(p_cpu.tokens == p_gpu.tokens);
  BOOST_TEST(std::abs(p_cpu.mean_nll - p_gpu.mean_nll) < 1e-4 * std::max(1.0, p_cpu.mean_nll));
}

BOOST_AUTO_TEST_CASE(attention_analysis_matches_cpu) {
  const auto reference = cpu_model<meap::fp32>();
  const auto model = cuda_model<meap::fp32>(device, reference);
  const index_t B = 3, T = 33;
  const std::int32_t mask_id = 28;
  auto clean = meap::zeros<std::int32_t>(host, dims{B, T});
  auto masked = meap::zeros<std::int32_t>(host, dims{B, T});
  const auto ids = random_ids(B * T, 9);
  meap::eval::attention_analysis_options options;
  for (index_t i = 0; i < B * T; ++i) {
    clean.data()[i] = ids[static_cast<std::size_t>(i)] % 28;  // never the mask id
    masked.data()[i] = i % 7 == 3 ? mask_id : clean.data()[i];
  }
  for (index_t b = 0; b < B; ++b) {
    options.answer_spans.push_back({4 + b, 8 + b});
    options.query_rows.push_back({10, 20, T - 1});
  }
  options.mask_id = mask_id;
  const auto a = meap::eval::analyze_attention(host, reference, clean.view().as_const(), masked.view().as_const(), options);
  const auto b = meap::eval::analyze_attention(device, model, clean.view().as_const(), masked.view().as_const(), options);
  BOOST_TEST(a.masked_positions == b.masked_positions);
  for (std::size_t h = 0; h < a.heads.size(); ++h) {
    BOOST_TEST(std::abs(a.heads[h].decay - b.heads[h].decay) < 1e-4, "head " << h);
    BOOST_TEST(std::abs(a.heads[h].variance_change - b.heads[h].variance_change) < 1e-3 * std::max(1.0, std::abs(a.heads[h].variance_change)));
    BOOST_TEST(std::abs(a.heads[h].answer_share_masked - b.heads[h].answer_share_masked) < 1e-4);
  }
}

BOOST_AUTO_TEST_SUITE_END()
