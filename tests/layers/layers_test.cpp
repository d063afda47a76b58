// The per-token layers (linear, RMSNorm, RoPE, SwiGLU, embedding): forward against plain loops,
// backward against central finite differences in double, and their argument checks.
#include <meap/core/tensor.hpp>
#include <meap/kernels/embedding.hpp>
#include <meap/kernels/linear.hpp>
#include <meap/kernels/rmsnorm.hpp>
#include <meap/kernels/rope.hpp>
#include <meap/kernels/swiglu.hpp>

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "support/gradient_check.hpp"

namespace {

using tensor_d = meap::tensor<double, meap::cpu>;
const meap::cpu host;

tensor_d random_tensor(const meap::dims& shape, std::mt19937& engine, double scale = 1.0) {
  tensor_d t(host, shape);
  std::normal_distribution<double> normal(0.0, scale);
  for (meap::index_t i = 0; i < t.numel(); ++i) t.data()[i] = normal(engine);
  return t;
}

// Checks analytic gradient `grad` of scalar `loss()` with respect to `param` by central differences.
void check_gradient(tensor_d& param, const tensor_d& grad, const std::function<double()>& loss, const char* what) {
  for (meap::index_t i = 0; i < param.numel(); ++i) {
    const double numeric = meap_test::central_difference(param.data()[i], loss);
    BOOST_TEST_REQUIRE(std::fabs(numeric - grad.data()[i]) <= 1e-6 * (1.0 + std::fabs(numeric)),
                       what << "[" << i << "]: analytic " << grad.data()[i] << " vs numeric " << numeric);
  }
}

// loss = sum(y * probe): its gradient with respect to y is `probe`.
double weighted_sum(const tensor_d& y, const tensor_d& probe) {
  double sum = 0;
  for (meap::index_t i = 0; i < y.numel(); ++i) sum += y.data()[i] * probe.data()[i];
  return sum;
}

bool names(const meap::error& e, const char* argument) { return e.argument() == argument; }

}  // namespace

BOOST_AUTO_TEST_SUITE(layers)

BOOST_AUTO_TEST_CASE(linear_matches_loops_and_gradients) {
  std::mt19937 engine(1);
  auto x = random_tensor({5, 7}, engine), w = random_tensor({3, 7}, engine), probe = random_tensor({5, 3}, engine);
  tensor_d y(host, {5, 3});
  meap::linear_forward<double>(host, x.view(), w.view(), y.view());
  for (int n = 0; n < 5; ++n)
    for (int o = 0; o < 3; ++o) {
      double expected = 0;
      for (int i = 0; i < 7; ++i) expected += x.view()(n, i) * w.view()(o, i);
      BOOST_TEST_REQUIRE(std::fabs(y.view()(n, o) - expected) < 1e-12);
    }
  auto dx = meap::zeros<double>(host, {5, 7});
  auto dw = meap::full<double>(host, {3, 7}, 0.5);  // accumulates onto what is there
  meap::linear_backward<double>(host, x.view(), w.view(), probe.view(), dx.view(), dw.view());
  for (meap::index_t i = 0; i < dw.numel(); ++i) dw.data()[i] -= 0.5;
  const auto loss = [&] {
    meap::linear_forward<double>(host, x.view(), w.view(), y.view());
    return weighted_sum(y, probe);
  };
  check_gradient(x, dx, loss, "dx");
  check_gradient(w, dw, loss, "dw");
  BOOST_CHECK_EXCEPTION(meap::linear_forward<double>(host, x.view(), dx.view().reshape({7, 5}), y.view()), meap::error,
                        [](const meap::error& e) { return names(e, "w"); });
  auto wide = random_tensor({5, 14}, engine);  // its first 7 columns: the right shape, not contiguous
  BOOST_CHECK_EXCEPTION(meap::linear_forward<double>(host, wide.view().slice(1, 0, 7), w.view(), y.view()), meap::error,
                        [](const meap::error& e) { return names(e, "x"); });
}

BOOST_AUTO_TEST_CASE(rmsnorm_matches_loops_and_gradients) {
  std::mt19937 engine(2);
  auto x = random_tensor({4, 9}, engine), w = random_tensor({9}, engine), probe = random_tensor({4, 9}, engine);
  tensor_d y(host, {4, 9}), r(host, {4});
  const double eps = 1e-5;
  meap::rmsnorm_forward<double>(host, x.view(), w.view(), y.view(), r.view(), eps);
  for (int n = 0; n < 4; ++n) {
    double ms = 0;
    for (int i = 0; i < 9; ++i) ms += x.view()(n, i) * x.view()(n, i) / 9;
    for (int i = 0; i < 9; ++i)
      BOOST_TEST_REQUIRE(std::fabs(y.view()(n, i) - x.view()(n, i) / std::sqrt(ms + eps) * w.view()(i)) < 1e-12);
  }
  auto dx = meap::zeros<double>(host, {4, 9});
  auto dw = meap::zeros<double>(host, {9});
  meap::rmsnorm_backward<double>(host, x.view(), w.view(), r.view(), probe.view(), dx.view(), dw.view());
  const auto loss = [&] {
    meap::rmsnorm_forward<double>(host, x.view(), w.view(), y.view(), r.view(), eps);
    return weighted_sum(y, probe);
  };
  check_gradient(x, dx, loss, "dx");
  check_gradient(w, dw, loss, "dw");
  BOOST_CHECK_EXCEPTION(meap::rmsnorm_forward<double>(host, x.view(), w.view(), y.view(), r.view(), 0.0), meap::error,
                        [](const meap::error& e) { return names(e, "eps"); });
  BOOST_CHECK_EXCEPTION(meap::rmsnorm_forward<double>(host, x.view(), probe.view().select(0, 0).slice(0, 0, 8), y.view(), r.view(), eps),
                        meap::error, [](const meap::error& e) { return names(e, "w"); });
}

BOOST_AUTO_TEST_CASE(rope_follows_hugging_face_rotate_half) {
  std::mt19937 engine(3);
  const int B = 2, T = 5, H = 3, D = 8;
  auto x = random_tensor({B, T, H, D}, engine), probe = random_tensor({B, T, H, D}, engine);
  std::vector<std::int32_t> positions = {0, 3, 7, 100, 4, 1, 2, 3, 4, 5};
  meap::rope_options options{.theta = 500000.0,
                             .positions = meap::make_view(std::span<const std::int32_t>(positions), {B, T})};
  tensor_d y(host, {B, T, H, D});
  meap::rope_forward<double>(host, x.view(), y.view(), options);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int h = 0; h < H; ++h)
        for (int i = 0; i < D; ++i) {
          // HF: q * cos + rotate_half(q) * sin, cos/sin = concat(freqs, freqs).
          const int j = i % (D / 2);
          const double angle = positions[b * T + t] / std::pow(500000.0, 2.0 * j / D);
          const double rotated = i < D / 2 ? -x.view()(b, t, h, i + D / 2) : x.view()(b, t, h, i - D / 2);
          const double expected = x.view()(b, t, h, i) * std::cos(angle) + rotated * std::sin(angle);
          BOOST_TEST_REQUIRE(std::fabs(y.view()(b, t, h, i) - expected) < 1e-12);
        }
  auto dx = meap::zeros<double>(host, {B, T, H, D});
  meap::rope_backward<double>(host, probe.view(), dx.view(), options);
  check_gradient(x, dx, [&] {
    meap::rope_forward<double>(host, x.view(), y.view(), options);
    return weighted_sum(y, probe);
  }, "dx");
  // In place, and position defaults to t.
  auto z = meap::clone(host, x.view());
  meap::rope_forward<double>(host, z.view(), z.view());
  BOOST_TEST(z.view()(0, 0, 1, 3) == x.view()(0, 0, 1, 3));  // position 0: identity
  BOOST_CHECK_EXCEPTION(meap::rope_forward<double>(host, x.view().reshape({B, T, 6, 4}).slice(3, 0, 3), y.view()),
                        meap::error, [](const meap::error& e) { return names(e, "x"); });
  positions[3] = -1;
  BOOST_CHECK_EXCEPTION(meap::rope_forward<double>(host, x.view(), y.view(), options), meap::error,
                        [](const meap::error& e) { return names(e, "positions"); });
}

// Llama 3.1's scaling ("rope_type": "llama3"), against transformers' _compute_llama3_parameters
// written out: wavelen = 2 pi / inv_freq; inv_freq / factor where wavelen > low_freq_wavelen; the
// smoothed blend where neither above low_freq_wavelen nor below high_freq_wavelen.
BOOST_AUTO_TEST_CASE(rope_llama3_scaling_follows_transformers) {
  std::mt19937 engine(5);
  const int B = 1, T = 3, H = 2, D = 128;
  const double theta = 500000.0;
  const meap::rope_scaling scaling{8.0, 1.0, 4.0, 8192.0};
  auto x = random_tensor({B, T, H, D}, engine), probe = random_tensor({B, T, H, D}, engine);
  std::vector<std::int32_t> positions = {5, 9000, 131000};
  meap::rope_options options{.theta = theta,
                             .positions = meap::make_view(std::span<const std::int32_t>(positions), {B, T}),
                             .scaling = scaling};
  std::vector<double> inv_freq(D / 2);
  int scaled = 0, kept = 0, blended = 0;
  for (int j = 0; j < D / 2; ++j) {
    const double base = 1.0 / std::pow(theta, 2.0 * j / D);
    const double wavelen = 2 * 3.14159265358979323846 / base, low_freq_wavelen = 8192.0 / 1.0, high_freq_wavelen = 8192.0 / 4.0;
    double f = wavelen > low_freq_wavelen ? base / 8.0 : base;
    if (!(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen)) {
      const double smooth = (8192.0 / wavelen - 1.0) / (4.0 - 1.0);
      f = (1 - smooth) * f / 8.0 + smooth * f;
      ++blended;
    } else {
      (wavelen > low_freq_wavelen ? scaled : kept) += 1;
    }
    inv_freq[static_cast<std::size_t>(j)] = f;
  }
  BOOST_TEST_REQUIRE(scaled > 0);  // the three bands all occur at D = 128, theta = 500000
  BOOST_TEST_REQUIRE(kept > 0);
  BOOST_TEST_REQUIRE(blended > 0);
  tensor_d y(host, {B, T, H, D});
  meap::rope_forward<double>(host, x.view(), y.view(), options);
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < D; ++i) {
        const int j = i % (D / 2);
        const double angle = positions[static_cast<std::size_t>(t)] * inv_freq[static_cast<std::size_t>(j)];
        const double rotated = i < D / 2 ? -x.view()(0, t, h, i + D / 2) : x.view()(0, t, h, i - D / 2);
        const double expected = x.view()(0, t, h, i) * std::cos(angle) + rotated * std::sin(angle);
        BOOST_TEST_REQUIRE(std::fabs(y.view()(0, t, h, i) - expected) < 1e-9);
      }
  auto dx = meap::zeros<double>(host, {B, T, H, D});
  meap::rope_backward<double>(host, probe.view(), dx.view(), options);
  check_gradient(x, dx, [&] {
    meap::rope_forward<double>(host, x.view(), y.view(), options);
    return weighted_sum(y, probe);
  }, "dx");
  // Invalid scalings are refused, naming the field.
  for (const auto& [bad, field] : std::vector<std::pair<meap::rope_scaling, std::string>>{
           {{0.5, 1.0, 4.0, 8192.0}, "scaling.factor"},
           {{8.0, 4.0, 4.0, 8192.0}, "scaling.high_freq_factor"},
           {{8.0, 0.0, 4.0, 8192.0}, "scaling.low_freq_factor"},
           {{8.0, 1.0, 4.0, 0.0}, "scaling.original_max_position"}}) {
    options.scaling = bad;
    BOOST_CHECK_EXCEPTION(meap::rope_forward<double>(host, x.view(), y.view(), options), meap::error,
                          [&](const meap::error& e) { return names(e, field.c_str()); });
  }
}

BOOST_AUTO_TEST_CASE(swiglu_matches_loops_and_gradients) {
  std::mt19937 engine(4);
  auto gate = random_tensor({3, 11}, engine, 2.0), up = random_tensor({3, 11}, engine), probe = random_tensor({3, 11}, engine);
  tensor_d h(host, {3, 11});
  meap::swiglu_forward<double>(host, gate.view(), up.view(), h.view());
  for (meap::index_t i = 0; i < h.numel(); ++i) {
    const double g = gate.data()[i];
    BOOST_TEST_REQUIRE(std::fabs(h.data()[i] - g / (1 + std::exp(-g)) * up.data()[i]) < 1e-12);
  }
  tensor_d d_gate(host, {3, 11}), d_up(host, {3, 11});
  meap::swiglu_backward<double>(host, gate.view(), up.view(), probe.view(), d_gate.view(), d_up.view());
  const auto loss = [&] {
    meap::swiglu_forward<double>(host, gate.view(), up.view(), h.view());
    return weighted_sum(h, probe);
  };
  check_gradient(gate, d_gate, loss, "d_gate");
  check_gradient(up, d_up, loss, "d_up");
  BOOST_CHECK_EXCEPTION(meap::swiglu_forward<double>(host, gate.view(), up.view().slice(1, 0, 10), h.view()), meap::error,
                        [](const meap::error& e) { return names(e, "up"); });
}

BOOST_AUTO_TEST_CASE(embedding_lookup_and_deterministic_scatter) {
  std::mt19937 engine(5);
  auto table = random_tensor({6, 70}, engine), probe = random_tensor({5, 70}, engine);
  std::vector<std::int32_t> tokens = {3, 0, 3, 5, 3};
  const auto ids = meap::make_view(std::span<const std::int32_t>(tokens), {5});
  tensor_d y(host, {5, 70});
  meap::embedding_forward<double>(host, ids, table.view(), y.view());
  BOOST_TEST(y.view()(3, 69) == table.view()(5, 69));
  auto d_table = meap::zeros<double>(host, {6, 70});
  meap::embedding_backward<double>(host, ids, probe.view(), d_table.view());
  // Row 3 collects positions 0, 2 and 4 in that order; rows never looked up stay zero.
  BOOST_TEST(d_table.view()(3, 10) == (probe.view()(0, 10) + probe.view()(2, 10)) + probe.view()(4, 10));
  BOOST_TEST(d_table.view()(1, 10) == 0.0);
  check_gradient(table, d_table, [&] {
    meap::embedding_forward<double>(host, ids, table.view(), y.view());
    return weighted_sum(y, probe);
  }, "d_table");
  tokens[1] = 6;
  BOOST_CHECK_EXCEPTION(meap::embedding_forward<double>(host, ids, table.view(), y.view()), meap::error,
                        [](const meap::error& e) {
                          return names(e, "tokens") && std::string(e.what()).find("token 6 at index 1") != std::string::npos;
                        });
}

BOOST_AUTO_TEST_SUITE_END()
