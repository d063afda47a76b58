// The LLaMA model on the CPU: whole-model gradients (with the selective loss and a tied head)
// against finite differences (float64), GQA and packed segments, a user-built stack from the same
// modules, the parameter store's layout, initialization, and config checks. The per-module
// conformance on every device and precision is in conformance.hpp.
#include <meap/kernels/cross_entropy.hpp>
#include <meap/nn/nn.hpp>

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "support/gradient_check.hpp"

#include "support/tiny_model.hpp"

namespace {

const meap::cpu host;

meap::nn::llama_config tiny_config() { return meap_test::tiny_llama(13, 16, 8, 12); }

std::vector<std::int32_t> random_ids(std::size_t n, std::int32_t vocab, unsigned seed) {
  std::mt19937 engine(seed);
  std::uniform_int_distribution<std::int32_t> pick(0, vocab - 1);
  std::vector<std::int32_t> ids(n);
  for (auto& id : ids) id = pick(engine);
  return ids;
}

template <class P>
double model_loss(meap::nn::llama_model<P>& model, const meap::tensor_view<const std::int32_t, meap::cpu>& tokens,
                  const meap::tensor_view<const std::int32_t, meap::cpu>& labels,
                  const meap::tensor_view<const std::int32_t, meap::cpu>& segments, bool backward) {
  using T = typename P::compute_t;
  auto ctx = model.forward(host, tokens, {}, segments);
  if (!backward) return meap::linear_cross_entropy(host, ctx.hidden.view().as_const(), model.head_weight(), labels).loss;
  meap::tensor<T, meap::cpu> d_hidden(host, ctx.hidden.shape());
  // The head gradient adds onto what the embedding collects when the two are tied.
  const auto result = meap::linear_cross_entropy<T>(host, ctx.hidden.view(), model.head_weight(), labels, d_hidden.view(),
                                                    model.head_grad(), {.d_weight_write = meap::gradient_write::accumulate});
  model.backward(host, ctx, d_hidden.view());
  return result.loss;
}

void check_whole_model_gradient(bool tied, bool packed) {
  auto config = tiny_config();
  config.tied_head = tied;
  meap::nn::llama_model<meap::fp64> model(config);
  model.initialize(7);
  const int B = 2, T = 5;
  const auto ids = random_ids(B * T, static_cast<std::int32_t>(config.vocab), 3);
  auto label_ids = random_ids(B * T, static_cast<std::int32_t>(config.vocab), 4);
  label_ids[3] = meap::ignore_index;
  const std::vector<std::int32_t> segment_ids = {0, 0, 1, 1, 1, 5, 5, 5, 6, 6};
  const auto tokens = meap::make_view(std::span<const std::int32_t>(ids), {B, T});
  const auto labels = meap::make_view(std::span<const std::int32_t>(label_ids), {B * T});
  const auto segments =
      packed ? meap::make_view(std::span<const std::int32_t>(segment_ids), {B, T}) : meap::tensor_view<const std::int32_t, meap::cpu>{};
  model.zero_grad(host);
  model_loss(model, tokens, labels, segments, true);
  const double h = 1e-6;
  int tensors_checked = 0;
  for (auto& p : model.parameters()) {
    // Up to 24 coordinates per tensor, spread evenly, the first and the last always included.
    const meap::index_t n = p.value.numel();
    const meap::index_t stride = n > 24 ? (n + 22) / 23 : 1;
    for (meap::index_t i = 0; i < n; i = (i + stride < n || i == n - 1) ? i + stride : n - 1) {
      const double numeric = meap_test::central_difference(
          p.value.data()[i], [&] { return model_loss(model, tokens, labels, segments, false); }, h);
      BOOST_TEST_REQUIRE(std::fabs(numeric - p.grad.data()[i]) <= 1e-6 * (1 + std::fabs(numeric)),
                         p.name << "[" << i << "]: analytic " << p.grad.data()[i] << " vs numeric " << numeric);
    }
    ++tensors_checked;
  }
  BOOST_TEST(tensors_checked == 2 + 9 * config.layers + (tied ? 0 : 1));
}

}  // namespace

BOOST_AUTO_TEST_SUITE(nn)

BOOST_AUTO_TEST_CASE(whole_model_gradient_matches_finite_differences_untied_gqa) { check_whole_model_gradient(false, false); }

BOOST_AUTO_TEST_CASE(whole_model_gradient_matches_finite_differences_tied_packed) { check_whole_model_gradient(true, true); }

BOOST_AUTO_TEST_CASE(parameters_have_hugging_face_names_and_initialization) {
  auto config = tiny_config();
  config.d_model = 32;
  config.ffn = 64;
  config.vocab = 500;
  meap::nn::llama_model<meap::fp32> model(config);
  model.initialize(1);
  const auto list = model.parameters();
  BOOST_TEST(list.front().name == "model.embed_tokens.weight");
  BOOST_TEST(list[1].name == "model.layers.0.input_layernorm.weight");
  BOOST_TEST(list[2].name == "model.layers.0.self_attn.q_proj.weight");
  BOOST_TEST(list[3].value.size(0) == config.kv_heads * config.head_dim());  // k_proj: (Hkv * D, d)
  BOOST_TEST(list[6].name == "model.layers.0.post_attention_layernorm.weight");
  BOOST_TEST(list[9].name == "model.layers.0.mlp.down_proj.weight");
  BOOST_TEST(list[list.size() - 2].name == "model.norm.weight");
  BOOST_TEST(list.back().name == "lm_head.weight");
  BOOST_TEST(!list[1].decay);
  BOOST_TEST(list[2].decay);
  // Empirical std of the embedding and of an output projection against the documented formulas.
  const auto stddev = [](const meap::tensor_view<float, meap::cpu>& v) {
    double sum = 0, sq = 0;
    for (meap::index_t i = 0; i < v.numel(); ++i) {
      sum += v.data()[i];
      sq += double(v.data()[i]) * v.data()[i];
    }
    const double n = static_cast<double>(v.numel());
    return std::sqrt(sq / n - (sum / n) * (sum / n));
  };
  BOOST_TEST(stddev(list[0].value) == std::sqrt(2.0 / (5.0 * 32)), boost::test_tools::tolerance(0.03));
  BOOST_TEST(stddev(list[9].value) == 1.0 / (std::sqrt(32.0) * 2), boost::test_tools::tolerance(0.08));
  BOOST_TEST(list[1].value.data()[5] == 1.0f);
  // Same seed, same weights; another seed, other weights.
  meap::nn::llama_model<meap::fp32> again(config), other(config);
  again.initialize(1);
  other.initialize(2);
  BOOST_TEST(again.parameters()[4].value.data()[17] == list[4].value.data()[17]);
  BOOST_TEST(other.parameters()[4].value.data()[17] != list[4].value.data()[17]);
}

BOOST_AUTO_TEST_CASE(a_user_built_stack_from_the_same_modules) {
  // A post-norm MLP-only stack: y = norm(x + mlp(x)), trained one step by hand.
  std::mt19937 engine(9);
  std::normal_distribution<float> normal;
  meap::nn::parameter_store<meap::fp32, meap::cpu> store;
  meap::nn::swiglu_mlp<meap::fp32, meap::cpu> mlp(store, "mlp", 6, 10);
  meap::nn::rmsnorm<meap::fp32, meap::cpu> norm(store, "norm", 6, 1e-5);
  store.allocate(host);
  BOOST_TEST(norm.weight().master.data()[3] == 1.0f);  // gains start at 1
  for (const auto* w : {&mlp.gate_proj, &mlp.up_proj, &mlp.down_proj}) {
    const auto value = w->weight().master;
    for (meap::index_t i = 0; i < value.numel(); ++i) value.data()[i] = 0.3f * normal(engine);
  }
  auto x = meap::zeros<float>(host, {4, 6});
  for (meap::index_t i = 0; i < x.numel(); ++i) x.data()[i] = normal(engine);
  const auto run = [&](bool train) {
    meap::nn::swiglu_mlp<meap::fp32, meap::cpu>::context mlp_ctx;
    meap::nn::rmsnorm<meap::fp32, meap::cpu>::context norm_ctx;
    auto h = mlp.forward(host, x.view(), mlp_ctx);
    meap::add_into<float>(host, h.view(), x.view());
    auto y = norm.forward(host, h.view(), norm_ctx);
    double loss = 0;  // pull every output toward 0.5
    auto dy = meap::zeros<float>(host, y.shape());
    for (meap::index_t i = 0; i < y.numel(); ++i) {
      loss += 0.5 * (y.data()[i] - 0.5) * (y.data()[i] - 0.5);
      dy.data()[i] = y.data()[i] - 0.5f;
    }
    if (train) {
      store.zero_grad(host);
      const auto dh = norm.backward(host, norm_ctx, dy.view());
      (void)mlp.backward(host, mlp_ctx, dh.view());
      for (auto& p : store.parameters())
        for (meap::index_t i = 0; i < p.value.numel(); ++i) p.value.data()[i] -= 0.05f * p.grad.data()[i];
    }
    return loss;
  };
  const double before = run(true);
  BOOST_TEST(run(false) < before);
  // The store lists the parameters under the names they were declared with, in order.
  const auto list = store.parameters();
  BOOST_TEST(list.size() == 4u);
  BOOST_TEST(list[0].name == "mlp.gate_proj.weight");
  BOOST_TEST(list[3].name == "norm.weight");
  BOOST_TEST(!list[3].decay);
}

BOOST_AUTO_TEST_CASE(the_parameter_store_lays_parameters_out_flat_and_aligned) {
  meap::nn::parameter_store<meap::fp32, meap::cpu> store;
  const auto a = store.declare("a", {3, 5}, true);
  const auto b = store.declare("b", {7}, false, meap::nn::initial_value::ones);
  BOOST_CHECK_EXCEPTION(store.declare("a", {2}, true), meap::error,
                        [](const meap::error& e) { return e.argument() == "name"; });
  BOOST_CHECK_EXCEPTION((void)store.master(a), meap::error, [](const meap::error& e) {
    return std::string(e.what()).find("allocate") != std::string::npos;
  });
  store.allocate(host);
  BOOST_TEST(store.entry(a).offset == 0);
  BOOST_TEST(store.entry(b).offset == 64);  // aligned to 64 elements
  BOOST_TEST(store.flat_size() == 128);
  BOOST_TEST(store.parameter_count() == 22);
  BOOST_TEST(store.master(b).data()[6] == 1.0f);
  BOOST_TEST(store.master(a).data()[14] == 0.0f);
  BOOST_TEST((store.compute(a).data() == store.master(a).data()));  // fp32: compute is master
  BOOST_TEST((store.compute_copy().data() == nullptr));
  BOOST_TEST(store.find("b").value() == b);
  BOOST_TEST(!store.find("c").has_value());
  BOOST_CHECK_THROW(store.declare("c", {2}, true), meap::error);  // after allocate
  store.grad(a).data()[4] = 3.0f;
  store.zero_grad(host);
  BOOST_TEST(store.grad(a).data()[4] == 0.0f);
}

BOOST_AUTO_TEST_CASE(invalid_configs_and_inputs_are_rejected) {
  const auto rejects = [](auto change, const char* field) {
    auto c = tiny_config();
    change(c);
    try {
      c.validate();
    } catch (const meap::error& e) {
      return e.argument() == field;
    }
    return false;
  };
  BOOST_TEST(rejects([](auto& c) { c.vocab = 1; }, "vocab"));
  BOOST_TEST(rejects([](auto& c) { c.d_model = 0; }, "d_model"));
  BOOST_TEST(rejects([](auto& c) { c.layers = 0; }, "layers"));
  BOOST_TEST(rejects([](auto& c) { c.heads = 3; }, "heads"));
  BOOST_TEST(rejects([](auto& c) { c.kv_heads = 3; }, "kv_heads"));
  BOOST_TEST(rejects([](auto& c) { c.heads = 8; c.kv_heads = 1; }, "heads"));  // head dim 1: odd
  BOOST_TEST(rejects([](auto& c) { c.d_model = 1024; c.heads = 2; c.kv_heads = 1; }, "heads"));  // head dim 512
  BOOST_TEST(rejects([](auto& c) { c.ffn = 0; }, "ffn"));
  BOOST_TEST(rejects([](auto& c) { c.max_seq = 0; }, "max_seq"));
  BOOST_TEST(rejects([](auto& c) { c.rope_theta = 1.0; }, "rope_theta"));
  BOOST_TEST(rejects([](auto& c) { c.norm_eps = 0.0; }, "norm_eps"));
  BOOST_TEST(rejects([](auto& c) { c.norm_eps = std::nan(""); }, "norm_eps"));
  auto bad = tiny_config();
  bad.layers = -1;
  BOOST_CHECK_THROW(meap::nn::llama_model<meap::fp32>{bad}, meap::error);
  meap::nn::llama_model<meap::fp32> model(tiny_config());
  std::vector<std::int32_t> ids(2 * 17, 1);
  BOOST_CHECK_EXCEPTION(model.forward(host, meap::make_view(std::span<const std::int32_t>(ids), {2, 17})), meap::error,
                        [](const meap::error& e) { return e.argument() == "tokens"; });
  ids[3] = 13;
  BOOST_CHECK_EXCEPTION(model.forward(host, meap::make_view(std::span<const std::int32_t>(ids).first(6), {2, 3})), meap::error,
                        [](const meap::error& e) { return std::string(e.what()).find("token 13 at index 3") != std::string::npos; });
}

BOOST_AUTO_TEST_SUITE_END()
