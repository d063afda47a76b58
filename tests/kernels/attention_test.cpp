// meap::attention_*: forward, backward and the probe against the float64 reference, finite
// differences, GQA / MQA, segment ids, every dtype, and the argument checks.
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

namespace {

// Tolerances on relative_error (max abs error / max(1, max |reference|)). half and bfloat16 are
// rounded once on output (2^-11, 2^-8 relative) after float accumulation; the gradients chain
// more roundings of the inputs' products, hence the margin.
template <class T>
struct tolerance;
template <>
struct tolerance<double> {
  static constexpr double value = 1e-11, lse = 1e-11;
};
template <>
struct tolerance<float> {
  static constexpr double value = 2e-5, lse = 2e-5;
};
template <>
struct tolerance<meap::half> {
  static constexpr double value = 4e-3, lse = 2e-5;
};
template <>
struct tolerance<meap::bfloat16> {
  static constexpr double value = 2e-2, lse = 2e-5;
};

attention_problem random_problem(std::mt19937& rng, index_t B, index_t T, index_t Hq, index_t Hkv, index_t D,
                                 bool with_segments, double scale_override = 0) {
  attention_problem p{B, T, Hq, Hkv, D, scale_override > 0 ? scale_override : 1.0 / std::sqrt(double(D)), {}, {}, {}, {}};
  if (with_segments) {
    // Packed documents of random lengths (1 .. T/2 + 1), ids increasing along each row.
    std::uniform_int_distribution<index_t> length(1, T / 2 + 1);
    for (index_t b = 0; b < B; ++b) {
      std::int32_t id = 0;
      for (index_t t = 0; t < T;) {
        const index_t n = std::min(length(rng), T - t);
        for (index_t u = 0; u < n; ++u) p.segments.push_back(id);
        t += n;
        ++id;
      }
    }
  }
  return p;
}

template <class T>
void fill_problem(std::mt19937& rng, attention_problem& p) {
  // Larger q and k than N(0, 1) make the softmax peaked, which stresses the online max.
  p.q = random_values<T>(rng, p.B * p.T * p.Hq * p.D, 1.5);
  p.k = random_values<T>(rng, p.B * p.T * p.Hkv * p.D, 1.5);
  p.v = random_values<T>(rng, p.B * p.T * p.Hkv * p.D);
}

template <class T>
meap::attention_options<cpu> options_for(const attention_problem& p, bool explicit_scale) {
  meap::attention_options<cpu> o;
  if (explicit_scale) o.scale = p.scale;
  if (!p.segments.empty()) o.segment_ids = meap::cpu_view<const std::int32_t>(p.segments.data(), dims{p.B, p.T});
  return o;
}

template <class T>
void check_against_reference(std::mt19937& rng, index_t B, index_t L, index_t Hq, index_t Hkv, index_t D,
                             bool with_segments, double scale = 0) {
  using A = meap::accumulate_t<T>;
  auto p = random_problem(rng, B, L, Hq, Hkv, D, with_segments, scale);
  fill_problem<T>(rng, p);
  const auto d_out_values = random_values<T>(rng, B * L * Hq * D);
  const auto ref = naive_attention(p, &d_out_values);
  const auto q = make_tensor<T>(dims{B, L, Hq, D}, p.q);
  const auto k = make_tensor<T>(dims{B, L, Hkv, D}, p.k);
  const auto v = make_tensor<T>(dims{B, L, Hkv, D}, p.v);
  const auto d_out = make_tensor<T>(dims{B, L, Hq, D}, d_out_values);
  const auto options = options_for<T>(p, scale > 0);

  auto result = meap::attention_forward(cpu{}, q.view(), k.view(), v.view(), options);
  const std::string what = "B=" + std::to_string(B) + " T=" + std::to_string(L) + " Hq=" + std::to_string(Hq) +
                           " Hkv=" + std::to_string(Hkv) + " D=" + std::to_string(D) +
                           (with_segments ? " segments" : "") + " dtype=" + std::string(meap::to_string(meap::dtype_of<T>));
  BOOST_TEST_CONTEXT(what) {
    BOOST_TEST(relative_error(to_double(result.out.data(), result.out.numel()), ref.out) <= tolerance<T>::value);
    BOOST_TEST(relative_error(to_double(result.lse.data(), result.lse.numel()), ref.lse) <= tolerance<T>::lse);

    meap::tensor<T, cpu> dq(cpu{}, dims{B, L, Hq, D}), dk(cpu{}, dims{B, L, Hkv, D}), dv(cpu{}, dims{B, L, Hkv, D});
    meap::attention_backward<T>(cpu{}, q.view(), k.view(), v.view(), result.out.view(),
                                meap::cpu_view<const A>(result.lse.view()), d_out.view(), dq.view(), dk.view(),
                                dv.view(), options);
    // Gradients scale with T (dk, dv sum over queries); compare relative to their size.
    BOOST_TEST(relative_error(to_double(dq.data(), dq.numel()), ref.dq) <= tolerance<T>::value);
    BOOST_TEST(relative_error(to_double(dk.data(), dk.numel()), ref.dk) <= tolerance<T>::value);
    BOOST_TEST(relative_error(to_double(dv.data(), dv.numel()), ref.dv) <= tolerance<T>::value);
  }
}

template <class T>
void run_shapes(unsigned seed) {
  std::mt19937 rng(seed);
  // (B, T, Hq, Hkv, D, segments): odd T and D, T across several 64-row blocks, MHA / GQA / MQA,
  // the extreme head dims 1 and 256.
  const std::tuple<index_t, index_t, index_t, index_t, index_t, bool> shapes[] = {
      {1, 1, 1, 1, 1, false},   {2, 7, 2, 2, 5, false},    {1, 67, 4, 2, 13, false}, {2, 97, 3, 1, 8, true},
      {1, 80, 4, 4, 37, true},  {1, 66, 2, 1, 256, false}, {3, 64, 2, 1, 16, true},  {1, 129, 6, 3, 1, false},
  };
  for (const auto& [B, L, Hq, Hkv, D, segments] : shapes) check_against_reference<T>(rng, B, L, Hq, Hkv, D, segments);
  check_against_reference<T>(rng, 1, 90, 2, 1, 12, true, 0.37);  // explicit scale
}

// Sum of out * w: a scalar whose gradient with respect to out is w.
double weighted_sum(const meap::tensor<double, cpu>& out, const std::vector<double>& w) {
  double s = 0;
  for (index_t i = 0; i < out.numel(); ++i) s += out.data()[i] * w[static_cast<std::size_t>(i)];
  return s;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(attention)

BOOST_AUTO_TEST_CASE(double_matches_reference) { run_shapes<double>(1); }
BOOST_AUTO_TEST_CASE(float_matches_reference) { run_shapes<float>(2); }
BOOST_AUTO_TEST_CASE(half_matches_reference) { run_shapes<meap::half>(3); }
BOOST_AUTO_TEST_CASE(bfloat16_matches_reference) { run_shapes<meap::bfloat16>(4); }

// Central differences on every input coordinate of a small GQA problem with two documents.
BOOST_AUTO_TEST_CASE(gradients_match_finite_differences) {
  std::mt19937 rng(5);
  const index_t B = 2, T = 6, Hq = 4, Hkv = 2, D = 3;
  attention_problem p = random_problem(rng, B, T, Hq, Hkv, D, false);
  p.segments = {0, 0, 0, 1, 1, 1, 5, 5, 5, 5, 5, 7};
  fill_problem<double>(rng, p);
  const auto w = random_values<double>(rng, B * T * Hq * D);
  const auto options = options_for<double>(p, false);
  auto q = make_tensor<double>(dims{B, T, Hq, D}, p.q);
  auto k = make_tensor<double>(dims{B, T, Hkv, D}, p.k);
  auto v = make_tensor<double>(dims{B, T, Hkv, D}, p.v);
  const auto f = [&] { return weighted_sum(meap::attention_forward(cpu{}, q.view(), k.view(), v.view(), options).out, w); };

  auto fwd = meap::attention_forward(cpu{}, q.view(), k.view(), v.view(), options);
  const auto d_out = make_tensor<double>(dims{B, T, Hq, D}, w);
  meap::tensor<double, cpu> dq(cpu{}, q.shape()), dk(cpu{}, k.shape()), dv(cpu{}, v.shape());
  meap::attention_backward<double>(cpu{}, q.view(), k.view(), v.view(), fwd.out.view(), fwd.lse.view(), d_out.view(),
                                   dq.view(), dk.view(), dv.view(), options);
  const double h = 1e-6;
  for (auto [input, grad, name] : {std::tuple{&q, &dq, "q"}, std::tuple{&k, &dk, "k"}, std::tuple{&v, &dv, "v"}}) {
    for (index_t i = 0; i < input->numel(); ++i) {
      const double numeric = central_difference(input->data()[i], f, h);
      BOOST_TEST_CONTEXT(name << "[" << i << "]") { BOOST_TEST(std::abs(grad->data()[i] - numeric) <= 1e-7); }
    }
  }
}

// Packing documents into one row gives exactly the attention of each document on its own.
BOOST_AUTO_TEST_CASE(segments_never_attend_across_documents) {
  std::mt19937 rng(6);
  const index_t T = 97, H = 2, D = 8, first = 41;  // documents [0, 41) and [41, 97)
  auto values = [&](index_t n) { return random_values<float>(rng, n); };
  const auto qv = values(T * H * D), kv = values(T * H * D), vv = values(T * H * D);
  std::vector<std::int32_t> segments(T, 3);
  for (index_t t = first; t < T; ++t) segments[static_cast<std::size_t>(t)] = 9;
  const auto q = make_tensor<float>(dims{1, T, H, D}, qv), k = make_tensor<float>(dims{1, T, H, D}, kv),
             v = make_tensor<float>(dims{1, T, H, D}, vv);
  meap::attention_options<cpu> packed;
  packed.segment_ids = meap::cpu_view<const std::int32_t>(segments.data(), dims{1, T});
  const auto whole = meap::attention_forward(cpu{}, q.view(), k.view(), v.view(), packed);
  // The second document alone: rows [first, T) of q, k, v.
  const index_t n = T - first;
  auto part = [&](const std::vector<double>& x) {
    return make_tensor<float>(dims{1, n, H, D}, std::vector<double>(x.begin() + first * H * D, x.end()));
  };
  const auto q2 = part(qv), k2 = part(kv), v2 = part(vv);
  const auto alone = meap::attention_forward(cpu{}, q2.view(), k2.view(), v2.view());
  double err = 0;
  for (index_t i = 0; i < n * H * D; ++i) err = std::max(err, double(std::abs(whole.out.data()[first * H * D + i] - alone.out.data()[i])));
  BOOST_TEST(err <= 1e-6);
  // The first query of the second document attends only to itself: out = v.
  for (index_t h = 0; h < H; ++h)
    for (index_t d = 0; d < D; ++d) BOOST_TEST(whole.out.view()(0, first, h, d) == v.view()(0, first, h, d));
}

BOOST_AUTO_TEST_CASE(probe_returns_probabilities_and_key_mass) {
  std::mt19937 rng(7);
  for (const bool segments : {false, true}) {
    auto p = random_problem(rng, 2, 75, 4, 2, 9, segments);
    fill_problem<float>(rng, p);
    const auto ref = naive_attention(p);
    const auto q = make_tensor<float>(dims{p.B, p.T, p.Hq, p.D}, p.q);
    const auto k = make_tensor<float>(dims{p.B, p.T, p.Hkv, p.D}, p.k);
    const auto options = options_for<float>(p, false);
    meap::tensor<float, cpu> probs(cpu{}, dims{p.B, p.Hq, p.T, p.T}), mass(cpu{}, dims{p.B, p.Hq, p.T});
    meap::attention_probabilities(cpu{}, q.view(), k.view(), probs.view(), options);
    meap::attention_key_mass(cpu{}, q.view(), k.view(), mass.view(), options);
    BOOST_TEST(relative_error(to_double(probs.data(), probs.numel()), ref.probabilities) <= 1e-5);
    std::vector<double> column_sums(static_cast<std::size_t>(p.B * p.Hq * p.T), 0.0);
    for (index_t bh = 0; bh < p.B * p.Hq; ++bh)
      for (index_t i = 0; i < p.T; ++i) {
        double row = 0;
        for (index_t j = 0; j < p.T; ++j) {
          const double x = probs.data()[(bh * p.T + i) * p.T + j];
          row += x;
          column_sums[bh * p.T + j] += ref.probabilities[(bh * p.T + i) * p.T + j];
          if (!allowed(p, bh / p.Hq, i, j)) BOOST_TEST(x == 0.0);  // masked exactly, not approximately
        }
        BOOST_TEST(std::abs(row - 1.0) <= 1e-5);
      }
    BOOST_TEST(relative_error(to_double(mass.data(), mass.numel()), column_sums) <= 1e-5);
  }
}

BOOST_AUTO_TEST_CASE(rejects_bad_input) {
  const auto q = meap::zeros<float>(cpu{}, dims{2, 5, 4, 8});
  const auto k = meap::zeros<float>(cpu{}, dims{2, 5, 2, 8});
  const auto v = meap::zeros<float>(cpu{}, dims{2, 5, 2, 8});
  auto out = meap::zeros<float>(cpu{}, dims{2, 5, 4, 8});
  auto lse = meap::zeros<float>(cpu{}, dims{2, 4, 5});
  const auto fails_on = [](const char* argument) {
    return [argument](const meap::error& e) {
      BOOST_TEST_MESSAGE(e.what());
      return e.argument() == argument && e.function().rfind("meap::attention", 0) == 0;
    };
  };
  BOOST_CHECK_NO_THROW(meap::attention_forward<float>(cpu{}, q.view(), k.view(), v.view(), out.view(), lse.view()));

  // Mismatched shapes: k's T, v against k, out, lse.
  const auto k_short = meap::zeros<float>(cpu{}, dims{2, 4, 2, 8});
  BOOST_CHECK_EXCEPTION(meap::attention_forward<float>(cpu{}, q.view(), k_short.view(), v.view(), out.view(), lse.view()),
                        meap::error, fails_on("k"));
  const auto v_wide = meap::zeros<float>(cpu{}, dims{2, 5, 2, 9});
  BOOST_CHECK_EXCEPTION(meap::attention_forward<float>(cpu{}, q.view(), k.view(), v_wide.view(), out.view(), lse.view()),
                        meap::error, fails_on("v"));
  auto out_bad = meap::zeros<float>(cpu{}, dims{2, 5, 4, 7});
  BOOST_CHECK_EXCEPTION(meap::attention_forward<float>(cpu{}, q.view(), k.view(), v.view(), out_bad.view(), lse.view()),
                        meap::error, fails_on("out"));
  auto lse_bad = meap::zeros<float>(cpu{}, dims{2, 5, 4});
  BOOST_CHECK_EXCEPTION(meap::attention_forward<float>(cpu{}, q.view(), k.view(), v.view(), out.view(), lse_bad.view()),
                        meap::error, fails_on("lse"));
  const auto q3 = meap::zeros<float>(cpu{}, dims{2, 5, 8});
  BOOST_CHECK_EXCEPTION(meap::attention_forward(cpu{}, q3.view(), k.view(), v.view()), meap::error, fails_on("q"));

  // Hq not a multiple of Hkv.
  const auto k3 = meap::zeros<float>(cpu{}, dims{2, 5, 3, 8});
  BOOST_CHECK_EXCEPTION(meap::attention_forward<float>(cpu{}, q.view(), k3.view(), k3.view(), out.view(), lse.view()),
                        meap::error, fails_on("k"));

  // Unsupported head dims: 0 and 257.
  for (const index_t D : {index_t{0}, index_t{257}}) {
    const auto qd = meap::zeros<float>(cpu{}, dims{1, 2, 1, D});
    BOOST_CHECK_EXCEPTION(meap::attention_forward(cpu{}, qd.view(), qd.view(), qd.view()), meap::error, fails_on("q"));
  }

  // Non-contiguous q (a transposed view) and non-contiguous gradient output.
  const auto q_t = meap::zeros<float>(cpu{}, dims{2, 4, 5, 8});
  BOOST_CHECK_EXCEPTION(meap::attention_forward<float>(cpu{}, q_t.view().transpose(1, 2), k.view(), v.view(), out.view(), lse.view()),
                        meap::error, fails_on("q"));
  auto dq_t = meap::zeros<float>(cpu{}, dims{2, 4, 5, 8});
  auto dk = meap::zeros<float>(cpu{}, dims{2, 5, 2, 8}), dv = meap::zeros<float>(cpu{}, dims{2, 5, 2, 8});
  BOOST_CHECK_EXCEPTION(meap::attention_backward<float>(cpu{}, q.view(), k.view(), v.view(), out.view(), lse.view(), out.view(),
                                                        dq_t.view().transpose(1, 2), dk.view(), dv.view()),
                        meap::error, fails_on("d_q"));
  BOOST_CHECK_EXCEPTION(meap::attention_backward<float>(cpu{}, q.view(), k.view(), v.view(), out.view(), lse.view(), out.view(),
                                                        out.view(), dk.view(), out.view()),
                        meap::error, fails_on("d_v"));

  // Segment ids of the wrong shape, and a bad scale.
  std::vector<std::int32_t> ids(10, 0);
  meap::attention_options<cpu> bad_segments;
  bad_segments.segment_ids = meap::cpu_view<const std::int32_t>(ids.data(), dims{5, 2});
  BOOST_CHECK_EXCEPTION(meap::attention_forward(cpu{}, q.view(), k.view(), v.view(), bad_segments), meap::error,
                        fails_on("segment_ids"));
  meap::attention_options<cpu> bad_scale;
  bad_scale.scale = -1.0;
  BOOST_CHECK_EXCEPTION(meap::attention_forward(cpu{}, q.view(), k.view(), v.view(), bad_scale), meap::error,
                        fails_on("scale"));
  auto probs_bad = meap::zeros<float>(cpu{}, dims{2, 4, 5, 4});
  BOOST_CHECK_EXCEPTION(meap::attention_probabilities(cpu{}, q.view(), k.view(), probs_bad.view()), meap::error,
                        fails_on("probabilities"));
}

BOOST_AUTO_TEST_SUITE_END()
