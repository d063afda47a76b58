// meap::cross_entropy and meap::linear_cross_entropy against the float64 reference, finite
// differences, ignored labels, every dtype, and the argument checks.
#include "kernels/reference.hpp"
#include "support/gradient_check.hpp"

#include <meap/meap.hpp>

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <tuple>
#include <vector>

using meap::cpu;
using meap::dims;
using meap::index_t;
using namespace meap_test;

namespace cross_entropy {

// Tolerances: loss relative to max(1, |loss|); gradients relative to max(1, max |reference|) of
// each gradient (see relative_error). half / bfloat16 round the gradient once on output; their
// loss is computed in float from exactly representable inputs.
template <class T>
struct tolerance;
template <>
struct tolerance<double> {
  static constexpr double loss = 1e-12, grad = 1e-12;
};
template <>
struct tolerance<float> {
  static constexpr double loss = 1e-5, grad = 1e-6;
};
template <>
struct tolerance<meap::half> {
  static constexpr double loss = 1e-5, grad = 1e-3;
};
template <>
struct tolerance<meap::bfloat16> {
  static constexpr double loss = 1e-5, grad = 8e-3;
};

std::vector<std::int32_t> random_labels(std::mt19937& rng, index_t N, index_t V, double ignored_fraction) {
  std::uniform_int_distribution<std::int32_t> label(0, static_cast<std::int32_t>(V - 1));
  std::bernoulli_distribution ignore(ignored_fraction);
  std::vector<std::int32_t> labels(static_cast<std::size_t>(N));
  for (auto& y : labels) y = ignore(rng) ? meap::ignore_index : label(rng);
  return labels;
}

// The gradients scaled by N so their size does not shrink with the row count.
std::vector<double> scaled(std::vector<double> x, double factor) {
  for (auto& v : x) v *= factor;
  return x;
}

template <class T>
void check_plain(std::mt19937& rng, index_t N, index_t V, double eps, double lambda) {
  const auto z = random_values<T>(rng, N * V, 3.0);
  const auto labels = random_labels(rng, N, V, 0.3);
  const auto ref = naive_cross_entropy(z, labels, N, V, eps, lambda);
  const auto logits = make_tensor<T>(dims{N, V}, z);
  meap::tensor<T, cpu> grad(cpu{}, dims{N, V});
  const auto result = meap::cross_entropy(cpu{}, logits.view(), meap::cpu_view<const std::int32_t>(labels.data(), dims{N}),
                                          grad.view(), {eps, lambda});
  BOOST_TEST_CONTEXT("plain N=" << N << " V=" << V << " eps=" << eps << " lambda=" << lambda
                                << " dtype=" << meap::to_string(meap::dtype_of<T>)) {
    BOOST_TEST(result.selected == ref.selected);
    BOOST_TEST(std::abs(result.loss - ref.loss) <= tolerance<T>::loss * std::max(1.0, std::abs(ref.loss)));
    const double n = double(ref.selected);
    BOOST_TEST(relative_error(scaled(to_double(grad.data(), grad.numel()), n), scaled(ref.d_logits, n)) <= tolerance<T>::grad);
  }
}

template <class T>
void check_fused(std::mt19937& rng, index_t N, index_t d, index_t V, double eps, double lambda, double ignored = 0.3) {
  const auto h = random_values<T>(rng, N * d);
  const auto w = random_values<T>(rng, V * d, 0.5);
  const auto labels = random_labels(rng, N, V, ignored);
  const auto logits = matmul_nt(h, w, N, V, d);
  const auto ref = naive_cross_entropy(logits, labels, N, V, eps, lambda);
  // dH = G W, dW = G^T H from the reference dL/dz.
  std::vector<double> dh(static_cast<std::size_t>(N * d), 0.0), dw(static_cast<std::size_t>(V * d), 0.0);
  for (index_t n = 0; n < N; ++n)
    for (index_t j = 0; j < V; ++j) {
      const double g = ref.d_logits[n * V + j];
      if (g == 0.0) continue;
      for (index_t c = 0; c < d; ++c) {
        dh[n * d + c] += g * w[j * d + c];
        dw[j * d + c] += g * h[n * d + c];
      }
    }
  const auto hidden = make_tensor<T>(dims{N, d}, h);
  const auto weight = make_tensor<T>(dims{V, d}, w);
  meap::tensor<T, cpu> d_hidden(cpu{}, dims{N, d}), d_weight(cpu{}, dims{V, d});
  const meap::cpu_view<const std::int32_t> label_view(labels.data(), dims{N});
  const auto result = meap::linear_cross_entropy<T>(cpu{}, hidden.view(), weight.view(), label_view, d_hidden.view(),
                                                    d_weight.view(), {eps, lambda});
  const auto loss_only = meap::linear_cross_entropy(cpu{}, hidden.view(), weight.view(), label_view, {eps, lambda});
  BOOST_TEST_CONTEXT("fused N=" << N << " d=" << d << " V=" << V << " eps=" << eps << " lambda=" << lambda
                                << " dtype=" << meap::to_string(meap::dtype_of<T>)) {
    BOOST_TEST(result.selected == ref.selected);
    BOOST_TEST(std::abs(result.loss - ref.loss) <= tolerance<T>::loss * std::max(1.0, std::abs(ref.loss)));
    BOOST_TEST(loss_only.loss == result.loss);
    const double n = double(ref.selected);
    BOOST_TEST(relative_error(scaled(to_double(d_hidden.data(), d_hidden.numel()), n), scaled(dh, n)) <= tolerance<T>::grad);
    BOOST_TEST(relative_error(scaled(to_double(d_weight.data(), d_weight.numel()), n), scaled(dw, n)) <= tolerance<T>::grad);
    for (index_t r = 0; r < N; ++r)  // ignored rows get exactly zero gradient
      if (labels[static_cast<std::size_t>(r)] == meap::ignore_index)
        for (index_t c = 0; c < d; ++c) BOOST_TEST(static_cast<double>(d_hidden.data()[r * d + c]) == 0.0);
  }
}

template <class T>
void run_cross_entropy(unsigned seed) {
  std::mt19937 rng(seed);
  for (const auto& [N, V] : {std::tuple<index_t, index_t>{1, 1}, {5, 2}, {33, 101}, {17, 1001}})
    for (const auto& [eps, lambda] : {std::tuple{0.0, 0.0}, {0.1, 0.0}, {0.0, 1e-3}, {0.2, 1e-2}}) check_plain<T>(rng, N, V, eps, lambda);
  // (N, d, V): odd sizes, V across several 256-wide chunks, N across two 512-row blocks.
  for (const auto& [N, d, V] : {std::tuple<index_t, index_t, index_t>{1, 1, 1}, {9, 7, 3}, {37, 19, 601}, {700, 5, 300}})
    check_fused<T>(rng, N, d, V, 0.0, 0.0);
  check_fused<T>(rng, 45, 11, 513, 0.1, 1e-3);
}

}  // namespace cross_entropy

BOOST_AUTO_TEST_SUITE(cross_entropy)

BOOST_AUTO_TEST_CASE(double_matches_reference) { run_cross_entropy<double>(11); }
BOOST_AUTO_TEST_CASE(float_matches_reference) { run_cross_entropy<float>(12); }
BOOST_AUTO_TEST_CASE(half_matches_reference) { run_cross_entropy<meap::half>(13); }
BOOST_AUTO_TEST_CASE(bfloat16_matches_reference) { run_cross_entropy<meap::bfloat16>(14); }

// Central differences of the fused loss with respect to every hidden and weight entry.
BOOST_AUTO_TEST_CASE(gradients_match_finite_differences) {
  std::mt19937 rng(15);
  const index_t N = 6, d = 4, V = 300;
  auto hidden = make_tensor<double>(dims{N, d}, random_values<double>(rng, N * d));
  auto weight = make_tensor<double>(dims{V, d}, random_values<double>(rng, V * d));
  const std::vector<std::int32_t> labels{3, -100, 299, 0, 257, -100};
  const meap::cpu_view<const std::int32_t> label_view(labels.data(), dims{N});
  const meap::cross_entropy_options options{0.1, 1e-2};
  meap::tensor<double, cpu> dh(cpu{}, hidden.shape()), dw(cpu{}, weight.shape());
  meap::linear_cross_entropy<double>(cpu{}, hidden.view(), weight.view(), label_view, dh.view(), dw.view(), options);
  const auto f = [&] { return meap::linear_cross_entropy(cpu{}, hidden.view(), weight.view(), label_view, options).loss; };
  const double step = 1e-6;
  for (auto [input, grad, name] : {std::tuple{&hidden, &dh, "hidden"}, std::tuple{&weight, &dw, "weight"}}) {
    for (index_t i = 0; i < input->numel(); ++i) {
      if (std::string(name) == "weight" && i % 7 != 0 && i / d != 3 && i / d != 299) continue;  // a sample plus the labels' rows
      const double numeric = central_difference(input->data()[i], f, step);
      BOOST_TEST_CONTEXT(name << "[" << i << "]") { BOOST_TEST(std::abs(grad->data()[i] - numeric) <= 1e-8); }
    }
  }
}

// The fused version equals the plain one on materialized logits.
BOOST_AUTO_TEST_CASE(fused_matches_plain_on_logits) {
  std::mt19937 rng(16);
  const index_t N = 20, d = 8, V = 777;
  const auto h = random_values<float>(rng, N * d), w = random_values<float>(rng, V * d);
  const auto labels = random_labels(rng, N, V, 0.5);
  const auto hidden = make_tensor<float>(dims{N, d}, h), weight = make_tensor<float>(dims{V, d}, w);
  const auto logits = make_tensor<float>(dims{N, V}, matmul_nt(h, w, N, V, d));
  const meap::cpu_view<const std::int32_t> label_view(labels.data(), dims{N});
  const auto fused = meap::linear_cross_entropy(cpu{}, hidden.view(), weight.view(), label_view);
  const auto plain = meap::cross_entropy(cpu{}, logits.view(), label_view);
  BOOST_TEST(fused.selected == plain.selected);
  BOOST_TEST(std::abs(fused.loss - plain.loss) <= 1e-5 * std::max(1.0, plain.loss));
}

// No selected row: the loss is defined as 0, gradients are exactly 0, nothing is NaN.
BOOST_AUTO_TEST_CASE(all_labels_ignored) {
  const index_t N = 4, d = 3, V = 5;
  const std::vector<std::int32_t> labels(N, meap::ignore_index);
  const meap::cpu_view<const std::int32_t> label_view(labels.data(), dims{N});
  const auto hidden = meap::full<float>(cpu{}, dims{N, d}, 1.0f), weight = meap::full<float>(cpu{}, dims{V, d}, 2.0f);
  auto dh = meap::full<float>(cpu{}, dims{N, d}, NAN), dw = meap::full<float>(cpu{}, dims{V, d}, NAN);
  const auto fused = meap::linear_cross_entropy<float>(cpu{}, hidden.view(), weight.view(), label_view, dh.view(), dw.view());
  BOOST_TEST(fused.loss == 0.0);
  BOOST_TEST(fused.selected == 0);
  for (index_t i = 0; i < dh.numel(); ++i) BOOST_TEST(dh.data()[i] == 0.0f);
  for (index_t i = 0; i < dw.numel(); ++i) BOOST_TEST(dw.data()[i] == 0.0f);
  const auto logits = meap::full<float>(cpu{}, dims{N, V}, 0.5f);
  auto dz = meap::full<float>(cpu{}, dims{N, V}, NAN);
  const auto plain = meap::cross_entropy(cpu{}, logits.view(), label_view, dz.view());
  BOOST_TEST(plain.loss == 0.0);
  BOOST_TEST(plain.selected == 0);
  for (index_t i = 0; i < dz.numel(); ++i) BOOST_TEST(dz.data()[i] == 0.0f);
  // Empty batch (N = 0): also loss 0.
  const auto empty = meap::zeros<float>(cpu{}, dims{0, d});
  BOOST_TEST(meap::linear_cross_entropy(cpu{}, empty.view(), weight.view(), meap::cpu_view<const std::int32_t>(nullptr, dims{0})).loss == 0.0);
}

BOOST_AUTO_TEST_CASE(rejects_bad_input) {
  const index_t N = 3, d = 4, V = 6;
  const auto hidden = meap::zeros<float>(cpu{}, dims{N, d}), weight = meap::zeros<float>(cpu{}, dims{V, d});
  auto dh = meap::zeros<float>(cpu{}, dims{N, d}), dw = meap::zeros<float>(cpu{}, dims{V, d});
  const auto fails_on = [](const char* argument) {
    return [argument](const meap::error& e) {
      BOOST_TEST_MESSAGE(e.what());
      return e.argument() == argument;
    };
  };
  const auto fused = [&](std::vector<std::int32_t> labels) {
    return meap::linear_cross_entropy<float>(cpu{}, hidden.view(), weight.view(),
                                             meap::cpu_view<const std::int32_t>(labels.data(), dims{index_t(labels.size())}),
                                             dh.view(), dw.view());
  };
  BOOST_CHECK_NO_THROW(fused({0, -100, 5}));
  // Labels outside [0, V) other than -100, for both versions.
  for (const std::int32_t bad : {6, -1, -101, 1 << 30})
    BOOST_CHECK_EXCEPTION(fused({0, bad, 1}), meap::error, fails_on("labels"));
  const auto logits = meap::zeros<float>(cpu{}, dims{N, V});
  const std::vector<std::int32_t> bad_labels{0, 1, 6};
  const meap::cpu_view<const std::int32_t> bad_view(bad_labels.data(), dims{N});
  BOOST_CHECK_EXCEPTION(meap::cross_entropy(cpu{}, logits.view(), bad_view), meap::error, fails_on("labels"));
  // Mismatched shapes: labels length, weight width, gradients.
  BOOST_CHECK_EXCEPTION(fused({0, 1}), meap::error, fails_on("labels"));
  const auto weight_bad = meap::zeros<float>(cpu{}, dims{V, d + 1});
  const std::vector<std::int32_t> good{0, 1, 2};
  const meap::cpu_view<const std::int32_t> good_view(good.data(), dims{N});
  BOOST_CHECK_EXCEPTION(meap::linear_cross_entropy(cpu{}, hidden.view(), weight_bad.view(), good_view), meap::error,
                        fails_on("weight"));
  auto dw_bad = meap::zeros<float>(cpu{}, dims{V + 1, d});
  BOOST_CHECK_EXCEPTION(meap::linear_cross_entropy<float>(cpu{}, hidden.view(), weight.view(), good_view, dh.view(), dw_bad.view()),
                        meap::error, fails_on("d_weight"));
  auto dz_bad = meap::zeros<float>(cpu{}, dims{N, V - 1});
  BOOST_CHECK_EXCEPTION(meap::cross_entropy(cpu{}, logits.view(), good_view, dz_bad.view()), meap::error, fails_on("d_logits"));
  // Non-contiguous hidden (a column slice) and logits (a transposed view).
  const auto wide = meap::zeros<float>(cpu{}, dims{N, 2 * d});
  BOOST_CHECK_EXCEPTION(meap::linear_cross_entropy(cpu{}, wide.view().slice(1, 0, d), weight.view(), good_view), meap::error,
                        fails_on("hidden"));
  const auto logits_t = meap::zeros<float>(cpu{}, dims{V, N});
  BOOST_CHECK_EXCEPTION(meap::cross_entropy(cpu{}, logits_t.view().transpose(0, 1), good_view), meap::error, fails_on("logits"));
  // Options out of range.
  BOOST_CHECK_EXCEPTION(meap::cross_entropy(cpu{}, logits.view(), good_view, {}, {1.0, 0.0}), meap::error,
                        fails_on("label_smoothing"));
  BOOST_CHECK_EXCEPTION(meap::cross_entropy(cpu{}, logits.view(), good_view, {}, {0.0, -1.0}), meap::error, fails_on("z_loss"));
}

BOOST_AUTO_TEST_SUITE_END()
