// The CUDA layer kernels against their CPU twins on fresh random inputs: RMSNorm, RoPE, SwiGLU,
// embedding (the backward bit-identical across runs, and bit-identical to the CPU in float),
// linear and the raw GEMM (cuBLASLt), the plain and the fused selective cross-entropy (single
// tile and chunked vocabulary, label smoothing, z-loss, no selected row), for float, half and
// bfloat16. Every output is poisoned (NaN) before each run; errors carry the CPU's messages.
// Label `gpu`: skipped (exit 77) without a device.
// GCC 12 at -O3 reports a -Wmaybe-uninitialized inside Boost.Test's own runtime_config (a
// boost::function copy) in this large translation unit; nvcc hands the pragma to the host compiler.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define BOOST_TEST_MODULE meap layers cuda
#define BOOST_TEST_NO_MAIN
#define BOOST_TEST_ALTERNATIVE_INIT_API
#include <boost/test/unit_test.hpp>

#include <boost/mpl/list.hpp>

#include <meap/cuda.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "support/cuda.hpp"
#include "support/errors.hpp"
#include "support/gpu_main.hpp"

namespace {

using meap::dims;
using meap::index_t;
using host_view_f = meap::tensor_view<float, meap::cpu>;
const meap::cpu host;

template <class T>
const char* type_name() {
  if constexpr (std::is_same_v<T, float>) return "float";
  else if constexpr (std::is_same_v<T, meap::half>) return "half";
  else return "bfloat16";
}

// Tolerances on max |got - ref| / max(1, max |ref|) against the CPU twin computed in float from the
// same inputs: float differs by the order of operations; 16-bit outputs are rounded once.
template <class T>
double tolerance() {
  if constexpr (std::is_same_v<T, float>) return 2e-5;
  else if constexpr (std::is_same_v<T, meap::half>) return 2e-3;
  else return 1.2e-2;
}

using meap_test::stream_fixture;

// n values ~ N(0, scale^2), each exactly representable in T (so both sides see the same inputs).
template <class T>
std::vector<float> random_values(std::mt19937& rng, index_t n, double scale = 1.0) {
  std::normal_distribution<float> normal(0.0f, static_cast<float>(scale));
  std::vector<float> values(static_cast<std::size_t>(n));
  for (auto& v : values) v = static_cast<float>(T(normal(rng)));
  return values;
}

template <class T>
meap::tensor<T, meap::cuda> upload(const meap::cuda& device, const std::vector<float>& values, const dims& shape) {
  std::vector<T> converted(values.begin(), values.end());
  return meap::to_device(device, meap::make_view(std::span<const T>(converted), shape));
}

inline meap::tensor<std::int32_t, meap::cuda> upload_ids(const meap::cuda& device, const std::vector<std::int32_t>& ids) {
  return meap::to_device(device, meap::make_view(std::span<const std::int32_t>(ids), {static_cast<index_t>(ids.size())}));
}

template <class T>
std::vector<float> download(const meap::cuda& device, const meap::tensor_view<T, meap::cuda>& view) {
  const auto copy = meap::to_host(device, view);
  std::vector<float> out(static_cast<std::size_t>(copy.numel()));
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(copy.data()[i]);
  return out;
}

template <class T>
void poison(const meap::cuda& device, const meap::tensor_view<T, meap::cuda>& view) {
  meap::fill(device, view, std::numeric_limits<T>::quiet_NaN());
}

// A host float tensor holding `values`.
meap::tensor<float, meap::cpu> host_tensor(const std::vector<float>& values, const dims& shape) {
  meap::tensor<float, meap::cpu> t(host, shape);
  std::copy(values.begin(), values.end(), t.data());
  return t;
}

std::vector<float> as_vector(const meap::tensor<float, meap::cpu>& t) { return {t.data(), t.data() + t.numel()}; }

template <class T>
std::vector<float> as_vector_of(const meap::tensor<T, meap::cpu>& t) {
  std::vector<float> out(static_cast<std::size_t>(t.numel()));
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(t.data()[i]);
  return out;
}

// max |got - ref| / max(1, max |ref|); infinite when got has a NaN (a poisoned output left behind).
double relative_error(const std::vector<float>& got, const std::vector<float>& ref) {
  BOOST_TEST_REQUIRE(got.size() == ref.size());
  double worst = 0, scale = 1;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i]) && std::isfinite(ref[i])) return std::numeric_limits<double>::infinity();
    worst = std::max(worst, std::abs(static_cast<double>(got[i]) - ref[i]));
    scale = std::max(scale, std::abs(static_cast<double>(ref[i])));
  }
  return worst / scale;
}

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

using meap_test::error_of;

#define CHECK_TYPE_CLOSE(got, ref, tol, what) \
  BOOST_TEST(relative_error((got), (ref)) <= (tol), what << ": error " << relative_error((got), (ref)))
#define CHECK_CLOSE(got, ref, tol, what) \
  BOOST_TEST(relative_error((got), (ref)) <= (tol), what << " (" << type_name<T>() << "): error " << relative_error((got), (ref)))

// ---------------------------------------------------------------------------------------------

template <class T, class G>
void check_rmsnorm(const meap::cuda& device, std::mt19937& rng, index_t N, index_t d) {
  const double eps = 1e-5;
  const auto x = random_values<T>(rng, N * d), w = random_values<T>(rng, d), dy = random_values<T>(rng, N * d);
  const auto dw0 = random_values<G>(rng, d);
  // CPU reference in float.
  auto hx = host_tensor(x, {N, d}), hw = host_tensor(w, {d}), hdy = host_tensor(dy, {N, d});
  meap::tensor<float, meap::cpu> hy(host, {N, d}), hr(host, {N}), hdx(host, {N, d});
  auto hdw = host_tensor(dw0, {d});
  meap::rmsnorm_forward<float>(host, hx.view(), hw.view(), hy.view(), hr.view(), eps);
  meap::rmsnorm_backward<float>(host, hx.view(), hw.view(), hr.view(), hdy.view(), hdx.view(), hdw.view());

  const auto gx = upload<T>(device, x, {N, d}), gw = upload<T>(device, w, {d}), gdy = upload<T>(device, dy, {N, d});
  meap::tensor<T, meap::cuda> gy(device, {N, d}), gdx(device, {N, d});
  meap::tensor<float, meap::cuda> gr(device, {N});
  auto gdw = upload<G>(device, dw0, {d});
  poison(device, gy.view());
  poison(device, gr.view());
  poison(device, gdx.view());
  meap::rmsnorm_forward<T>(device, gx.view(), gw.view(), gy.view(), gr.view(), eps);
  meap::rmsnorm_backward<T>(device, gx.view(), gw.view(), gr.view(), gdy.view(), gdx.view(), gdw.view());
  const std::string shape = "rmsnorm N=" + std::to_string(N) + " d=" + std::to_string(d);
  CHECK_CLOSE(download(device, gy.view()), as_vector(hy), tolerance<T>(), shape << " y");
  CHECK_CLOSE(download(device, gr.view()), as_vector(hr), 2e-6, shape << " inv_rms");
  CHECK_CLOSE(download(device, gdx.view()), as_vector(hdx), tolerance<T>(), shape << " dx");
  CHECK_CLOSE(download(device, gdw.view()), as_vector(hdw), (std::is_same_v<G, float> ? 2e-5 : tolerance<T>()),
              shape << " dw");
}

template <class T>
void check_rope(const meap::cuda& device, std::mt19937& rng, index_t B, index_t Tn, index_t H, index_t D, double theta,
                bool with_positions, const meap::rope_scaling& scaling = {}) {
  const auto x = random_values<T>(rng, B * Tn * H * D);
  std::vector<std::int32_t> positions;
  std::uniform_int_distribution<std::int32_t> position(0, 100000);
  for (index_t i = 0; i < B * Tn; ++i) positions.push_back(position(rng));
  const dims shape{B, Tn, H, D};
  auto hx = host_tensor(x, shape);
  meap::tensor<float, meap::cpu> hy(host, shape), hback(host, shape);
  meap::rope_options host_options{.theta = theta, .scaling = scaling};
  if (with_positions) host_options.positions = meap::make_view(std::span<const std::int32_t>(positions), {B, Tn});
  meap::rope_forward<float>(host, hx.view(), hy.view(), host_options);
  meap::rope_backward<float>(host, hx.view(), hback.view(), host_options);

  const auto gpos = upload_ids(device, positions);
  meap::rope_options<meap::cuda> options{.theta = theta, .scaling = scaling};
  if (with_positions) options.positions = gpos.view().reshape({B, Tn});
  const auto gx = upload<T>(device, x, shape);
  meap::tensor<T, meap::cuda> gy(device, shape), gback(device, shape);
  poison(device, gy.view());
  poison(device, gback.view());
  meap::rope_forward<T>(device, gx.view(), gy.view(), options);
  meap::rope_backward<T>(device, gx.view(), gback.view(), options);
  const std::string what = "rope " + meap::to_string(shape) + (with_positions ? " positions" : "");
  const auto y = download(device, gy.view());
  CHECK_CLOSE(y, as_vector(hy), tolerance<T>(), what << " forward");
  CHECK_CLOSE(download(device, gback.view()), as_vector(hback), tolerance<T>(), what << " backward");
  // In place (y aliases x) gives the same bits as out of place.
  auto inplace = upload<T>(device, x, shape);
  meap::rope_forward<T>(device, inplace.view(), inplace.view(), options);
  BOOST_TEST(bitwise_equal(download(device, inplace.view()), y), what << " in place");
  // The backward undoes the forward (up to rounding).
  if constexpr (std::is_same_v<T, float>) {
    meap::rope_backward<T>(device, inplace.view(), inplace.view(), options);
    CHECK_CLOSE(download(device, inplace.view()), x, 1e-5, what << " round trip");
  }
}

template <class T>
void check_swiglu(const meap::cuda& device, std::mt19937& rng, index_t N, index_t F) {
  const auto gate = random_values<T>(rng, N * F, 3.0), up = random_values<T>(rng, N * F), dh = random_values<T>(rng, N * F);
  const dims shape{N, F};
  auto hg = host_tensor(gate, shape), hu = host_tensor(up, shape), hdh = host_tensor(dh, shape);
  meap::tensor<float, meap::cpu> hh(host, shape), hdg(host, shape), hdu(host, shape);
  meap::swiglu_forward<float>(host, hg.view(), hu.view(), hh.view());
  meap::swiglu_backward<float>(host, hg.view(), hu.view(), hdh.view(), hdg.view(), hdu.view());
  const auto gg = upload<T>(device, gate, shape), gu = upload<T>(device, up, shape), gdh = upload<T>(device, dh, shape);
  meap::tensor<T, meap::cuda> gh(device, shape), gdg(device, shape), gdu(device, shape);
  poison(device, gh.view());
  poison(device, gdg.view());
  poison(device, gdu.view());
  meap::swiglu_forward<T>(device, gg.view(), gu.view(), gh.view());
  meap::swiglu_backward<T>(device, gg.view(), gu.view(), gdh.view(), gdg.view(), gdu.view());
  const std::string what = "swiglu " + meap::to_string(shape);
  CHECK_CLOSE(download(device, gh.view()), as_vector(hh), tolerance<T>(), what << " h");
  CHECK_CLOSE(download(device, gdg.view()), as_vector(hdg), tolerance<T>(), what << " d_gate");
  CHECK_CLOSE(download(device, gdu.view()), as_vector(hdu), tolerance<T>(), what << " d_up");
}

// Tokens with heavy repetition: a "padding" id on a third of the rows, the rest from a small range.
std::vector<std::int32_t> repetitive_tokens(std::mt19937& rng, index_t N, std::int32_t V) {
  std::uniform_int_distribution<std::int32_t> id(0, V - 1);
  std::bernoulli_distribution pad(1.0 / 3.0);
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(N));
  for (auto& t : tokens) t = pad(rng) ? V / 2 : id(rng);
  return tokens;
}

template <class T, class G>
void check_embedding(const meap::cuda& device, std::mt19937& rng, index_t N, std::int32_t V, index_t d) {
  const auto tokens = repetitive_tokens(rng, N, V);
  const auto table = random_values<T>(rng, V * d), dy = random_values<T>(rng, N * d);
  const auto start = random_values<G>(rng, V * d);
  const auto tokens_view = meap::make_view(std::span<const std::int32_t>(tokens), {N});
  auto htable = host_tensor(table, {V, d}), hdy = host_tensor(dy, {N, d});
  meap::tensor<float, meap::cpu> hy(host, {N, d});
  auto hgrad = host_tensor(start, {V, d});
  meap::embedding_forward<float>(host, tokens_view, htable.view(), hy.view());
  meap::embedding_backward<float>(host, tokens_view, hdy.view(), hgrad.view());

  const auto gtokens = upload_ids(device, tokens);
  const auto gtable = upload<T>(device, table, {V, d}), gdy = upload<T>(device, dy, {N, d});
  meap::tensor<T, meap::cuda> gy(device, {N, d});
  poison(device, gy.view());
  meap::embedding_forward<T>(device, gtokens.view(), gtable.view(), gy.view());
  const std::string what = "embedding N=" + std::to_string(N) + " V=" + std::to_string(V) + " d=" + std::to_string(d);
  BOOST_TEST(bitwise_equal(download(device, gy.view()), as_vector(hy)), what << " forward is a copy");
  std::vector<float> first;
  for (int run = 0; run < 2; ++run) {
    auto grad = upload<G>(device, start, {V, d});
    meap::embedding_backward<T>(device, gtokens.view(), gdy.view(), grad.view());
    const auto got = download(device, grad.view());
    if (run == 0) {
      first = got;
      // Float accumulation performs the CPU's additions in the CPU's order: the same bits.
      if constexpr (std::is_same_v<G, float>)
        BOOST_TEST(bitwise_equal(got, as_vector(hgrad)), what << ": backward into float equals the CPU bit for bit");
      else
        CHECK_CLOSE(got, as_vector(hgrad), tolerance<T>(), what << " backward");
    } else {
      BOOST_TEST(bitwise_equal(got, first), what << ": backward is bit-identical across runs");
    }
  }
}

// Row-major (rows, cols) with row stride ld >= cols: a view into a padded device buffer.
template <class T>
struct padded_matrix {
  meap::tensor<T, meap::cuda> storage;
  meap::tensor_view<T, meap::cuda> view;
  std::vector<float> values;  // (rows, cols), dense
};

template <class T>
padded_matrix<T> padded(const meap::cuda& device, std::mt19937& rng, index_t rows, index_t cols, index_t ld) {
  padded_matrix<T> m;
  m.values = random_values<T>(rng, rows * cols);
  std::vector<float> filled(static_cast<std::size_t>(rows * ld), std::numeric_limits<float>::quiet_NaN());
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c)
      filled[static_cast<std::size_t>(r * ld + c)] = m.values[static_cast<std::size_t>(r * cols + c)];
  m.storage = upload<T>(device, filled, {rows, ld});
  m.view = m.storage.view().slice(1, 0, cols);
  return m;
}

template <class T, class C>
void check_gemm(const meap::cuda& device, std::mt19937& rng, index_t m, index_t n, index_t k, bool ta, bool tb,
                float alpha, float beta, bool nan_c) {
  const auto a = padded<T>(device, rng, ta ? k : m, ta ? m : k, (ta ? m : k) + 3);
  const auto b = padded<T>(device, rng, tb ? n : k, tb ? k : n, (tb ? k : n) + 5);
  auto c = padded<C>(device, rng, m, n, n + 2);
  if (nan_c) poison(device, c.view);
  meap::gemm<T>(device, a.view.as_const(), ta ? meap::gemm_transpose::yes : meap::gemm_transpose::no,
                b.view.as_const(), tb ? meap::gemm_transpose::yes : meap::gemm_transpose::no, c.view,
                {.alpha = alpha, .beta = beta});
  std::vector<float> expected(static_cast<std::size_t>(m * n));
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < n; ++j) {
      double sum = 0;
      for (index_t p = 0; p < k; ++p) {
        const double av = ta ? a.values[static_cast<std::size_t>(p * m + i)] : a.values[static_cast<std::size_t>(i * k + p)];
        const double bv = tb ? b.values[static_cast<std::size_t>(j * k + p)] : b.values[static_cast<std::size_t>(p * n + j)];
        sum += av * bv;
      }
      const double old = nan_c ? 0.0 : c.values[static_cast<std::size_t>(i * n + j)];
      expected[static_cast<std::size_t>(i * n + j)] = static_cast<float>(alpha * sum + beta * old);
    }
  const auto whole = download(device, c.storage.view());  // (m, n + 2): the padding must stay as it was
  std::vector<float> got;
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < n + 2; ++j) {
      const float value = whole[static_cast<std::size_t>(i * (n + 2) + j)];
      if (j < n) got.push_back(value);
      else BOOST_TEST_REQUIRE(std::isnan(value), "gemm wrote outside C at (" << i << ", " << j << ")");
    }
  const double tol = std::is_same_v<C, float> ? 2e-5 * std::max<double>(1.0, std::sqrt(static_cast<double>(k)))
                                              : tolerance<C>();
  BOOST_TEST(relative_error(got, expected) <= tol,
             "gemm " << type_name<T>() << " -> " << type_name<C>() << " m " << m << " n " << n << " k " << k << " ta "
                     << ta << " tb " << tb << " alpha " << alpha << " beta " << beta << ": error "
                     << relative_error(got, expected));
}

template <class T, class G>
void check_linear(const meap::cuda& device, std::mt19937& rng, index_t N, index_t in, index_t out) {
  const auto x = random_values<T>(rng, N * in), w = random_values<T>(rng, out * in), dy = random_values<T>(rng, N * out);
  const auto dx0 = random_values<T>(rng, N * in);
  const auto dw0 = random_values<G>(rng, out * in);
  auto hx = host_tensor(x, {N, in}), hw = host_tensor(w, {out, in}), hdy = host_tensor(dy, {N, out});
  meap::tensor<float, meap::cpu> hy(host, {N, out}), hdx(host, {N, in});
  auto hdx_acc = host_tensor(dx0, {N, in});
  auto hdw = host_tensor(dw0, {out, in});
  meap::linear_forward<float>(host, hx.view(), hw.view(), hy.view());
  meap::linear_backward<float>(host, hx.view(), hw.view(), hdy.view(), hdx.view(), hdw.view());
  meap::linear_backward<float>(host, hx.view(), hw.view(), hdy.view(), hdx_acc.view(), hdw.view(),
                               meap::gradient_write::accumulate);

  const auto gx = upload<T>(device, x, {N, in}), gw = upload<T>(device, w, {out, in}), gdy = upload<T>(device, dy, {N, out});
  meap::tensor<T, meap::cuda> gy(device, {N, out}), gdx(device, {N, in});
  auto gdx_acc = upload<T>(device, dx0, {N, in});
  auto gdw = upload<G>(device, dw0, {out, in});
  poison(device, gy.view());
  poison(device, gdx.view());
  meap::linear_forward<T>(device, gx.view(), gw.view(), gy.view());
  meap::linear_backward<T>(device, gx.view(), gw.view(), gdy.view(), gdx.view(), gdw.view());
  meap::linear_backward<T>(device, gx.view(), gw.view(), gdy.view(), gdx_acc.view(), gdw.view(),
                           meap::gradient_write::accumulate);
  const std::string what = "linear N=" + std::to_string(N) + " in=" + std::to_string(in) + " out=" + std::to_string(out);
  const double scale = std::max(1.0, std::sqrt(static_cast<double>(std::max(in, std::max(out, N)))) / 4);
  CHECK_CLOSE(download(device, gy.view()), as_vector(hy), tolerance<T>() * scale, what << " y");
  CHECK_CLOSE(download(device, gdx.view()), as_vector(hdx), tolerance<T>() * scale, what << " dx");
  CHECK_CLOSE(download(device, gdx_acc.view()), as_vector(hdx_acc), tolerance<T>() * scale, what << " dx accumulated");
  CHECK_CLOSE(download(device, gdw.view()), as_vector(hdw), (std::is_same_v<G, float> ? 2e-5 : tolerance<T>()) * scale,
              what << " dw (accumulated twice)");
}

// Labels with a fraction ignored.
std::vector<std::int32_t> random_labels(std::mt19937& rng, index_t N, index_t V, double ignored) {
  std::uniform_int_distribution<std::int32_t> label(0, static_cast<std::int32_t>(V - 1));
  std::bernoulli_distribution skip(ignored);
  std::vector<std::int32_t> labels(static_cast<std::size_t>(N));
  for (auto& y : labels) y = skip(rng) ? meap::ignore_index : label(rng);
  return labels;
}

std::vector<float> scaled(std::vector<float> x, double factor) {
  for (auto& v : x) v = static_cast<float>(v * factor);
  return x;
}

// The CPU options as meap::cuda options (the device-only fields at their defaults, or the budget).
meap::cross_entropy_options<meap::cuda> on_cuda(const meap::cross_entropy_options<meap::cpu>& options,
                                                std::size_t budget = meap::detail::cuda_plan::cross_entropy_default_budget) {
  meap::cross_entropy_options<meap::cuda> result;
  result.label_smoothing = options.label_smoothing;
  result.z_loss = options.z_loss;
  result.normalizer = options.normalizer;
  result.gradient_scale = options.gradient_scale;
  result.d_weight_write = options.d_weight_write;
  result.selected_rows = options.selected_rows;
  result.logits_budget_bytes = budget;
  return result;
}

// CE gradients are compared after scaling by n_sel (their size would shrink with the row count).
template <class T>
double ce_grad_tolerance() {
  if constexpr (std::is_same_v<T, float>) return 2e-5;
  else if constexpr (std::is_same_v<T, meap::half>) return 3e-3;
  else return 2e-2;
}

template <class T, class G>
void check_linear_cross_entropy(const meap::cuda& device, std::mt19937& rng, index_t N, index_t d, index_t V,
                                double ignored, const meap::cross_entropy_options<meap::cpu>& options, std::size_t budget) {
  const auto hidden = random_values<T>(rng, N * d), weight = random_values<T>(rng, V * d, 0.5);
  const auto labels = random_labels(rng, N, V, ignored);
  // CPU twin in T (it widens 16-bit inputs to float itself).
  std::vector<T> h16(hidden.begin(), hidden.end()), w16(weight.begin(), weight.end());
  const auto hh = meap::make_view(std::span<const T>(h16), {N, d});
  const auto hw = meap::make_view(std::span<const T>(w16), {V, d});
  const auto hl = meap::make_view(std::span<const std::int32_t>(labels), {N});
  meap::tensor<T, meap::cpu> hdh(host, {N, d}), hdw(host, {V, d});
  const auto expected = meap::linear_cross_entropy<T>(host, hh, hw, hl, hdh.view(), hdw.view(), options);
  std::vector<float> ref_dh(static_cast<std::size_t>(N * d)), ref_dw(static_cast<std::size_t>(V * d));
  for (std::size_t i = 0; i < ref_dh.size(); ++i) ref_dh[i] = static_cast<float>(hdh.data()[i]);
  for (std::size_t i = 0; i < ref_dw.size(); ++i) ref_dw[i] = static_cast<float>(hdw.data()[i]);

  const auto gh = upload<T>(device, hidden, {N, d}), gw = upload<T>(device, weight, {V, d});
  const auto gl = upload_ids(device, labels);
  const auto device_options = on_cuda(options, budget);
  std::vector<float> first_dh, first_dw;
  double first_loss = 0;
  for (int run = 0; run < 2; ++run) {
    meap::tensor<T, meap::cuda> gdh(device, {N, d});
    meap::tensor<G, meap::cuda> gdw(device, {V, d});
    poison(device, gdh.view());
    poison(device, gdw.view());
    const auto got = meap::linear_cross_entropy<T>(device, gh.view(), gw.view(), gl.view(), gdh.view(), gdw.view(),
                                                   device_options);
    const auto dh = download(device, gdh.view()), dw = download(device, gdw.view());
    const std::string what = "linear_cross_entropy N=" + std::to_string(N) + " d=" + std::to_string(d) + " V=" +
                             std::to_string(V) + " budget=" + std::to_string(budget) + " eps=" +
                             std::to_string(options.label_smoothing) + " z=" + std::to_string(options.z_loss);
    if (run == 0) {
      BOOST_TEST(got.selected == expected.selected, what);
      BOOST_TEST(std::abs(got.loss - expected.loss) <= 1e-5 * std::max(1.0, std::abs(expected.loss)),
                 what << " (" << type_name<T>() << "): loss " << got.loss << " vs CPU " << expected.loss);
      const double n_sel = static_cast<double>(std::max<index_t>(expected.selected, 1));
      CHECK_CLOSE(scaled(dh, n_sel), scaled(ref_dh, n_sel), ce_grad_tolerance<T>(), what << " d_hidden");
      constexpr bool float_dw = std::is_same_v<G, float> && !std::is_same_v<T, float>;
      CHECK_CLOSE(scaled(dw, n_sel), scaled(ref_dw, n_sel),
                  (float_dw ? ce_grad_tolerance<T>() / 2 : ce_grad_tolerance<T>()), what << " d_weight");
      // Unselected rows of d_hidden are exactly zero.
      for (index_t r = 0; r < N; ++r)
        if (labels[static_cast<std::size_t>(r)] == meap::ignore_index)
          for (index_t c = 0; c < d; ++c) BOOST_TEST_REQUIRE(dh[static_cast<std::size_t>(r * d + c)] == 0.0f, what);
      // Forward only: the same loss, bit for bit.
      const auto forward = meap::linear_cross_entropy(device, gh.view(), gw.view(), gl.view(), device_options);
      BOOST_TEST(forward.loss == got.loss, what << " forward-only loss");
      first_dh = dh;
      first_dw = dw;
      first_loss = got.loss;
    } else {
      BOOST_TEST(got.loss == first_loss, what << ": loss bit-identical across runs");
      BOOST_TEST(bitwise_equal(dh, first_dh), what << ": d_hidden bit-identical across runs");
      BOOST_TEST(bitwise_equal(dw, first_dw), what << ": d_weight bit-identical across runs");
    }
  }
}

template <class T>
void check_cross_entropy(const meap::cuda& device, std::mt19937& rng, index_t N, index_t V, double ignored,
                         const meap::cross_entropy_options<meap::cpu>& options) {
  const auto logits = random_values<T>(rng, N * V, 3.0);
  const auto labels = random_labels(rng, N, V, ignored);
  std::vector<T> l16(logits.begin(), logits.end());
  const auto hl = meap::make_view(std::span<const T>(l16), {N, V});
  const auto hy = meap::make_view(std::span<const std::int32_t>(labels), {N});
  meap::tensor<T, meap::cpu> hd(host, {N, V});
  const auto expected = meap::cross_entropy(host, hl, hy, hd.view(), options);
  std::vector<float> ref(static_cast<std::size_t>(N * V));
  for (std::size_t i = 0; i < ref.size(); ++i) ref[i] = static_cast<float>(hd.data()[i]);

  const auto gl = upload<T>(device, logits, {N, V});
  const auto gy = upload_ids(device, labels);
  meap::tensor<T, meap::cuda> gd(device, {N, V});
  poison(device, gd.view());
  const auto got = meap::cross_entropy(device, gl.view(), gy.view(), gd.view(), on_cuda(options));
  const std::string what = "cross_entropy N=" + std::to_string(N) + " V=" + std::to_string(V);
  BOOST_TEST(got.selected == expected.selected, what);
  BOOST_TEST(std::abs(got.loss - expected.loss) <= 1e-5 * std::max(1.0, std::abs(expected.loss)),
             what << " (" << type_name<T>() << "): loss " << got.loss << " vs CPU " << expected.loss);
  const double n_sel = static_cast<double>(std::max<index_t>(expected.selected, 1));
  CHECK_CLOSE(scaled(download(device, gd.view()), n_sel), scaled(ref, n_sel), ce_grad_tolerance<T>(),
              what << " d_logits");
}

}  // namespace

BOOST_FIXTURE_TEST_SUITE(layers_cuda, stream_fixture)

using compute_types = boost::mpl::list<float, meap::half, meap::bfloat16>;

BOOST_AUTO_TEST_CASE_TEMPLATE(rmsnorm_matches_cpu, T, compute_types) {
  std::mt19937 rng(11);
  for (const auto& [N, d] : {std::pair<index_t, index_t>{1, 1}, {5, 64}, {37, 1000}, {130, 2048}, {3, 9000}}) {
    check_rmsnorm<T, T>(device, rng, N, d);
    if constexpr (!std::is_same_v<T, float>) check_rmsnorm<T, float>(device, rng, N, d);
  }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(rope_matches_cpu, T, compute_types) {
  std::mt19937 rng(12);
  for (const bool positions : {false, true}) {
    check_rope<T>(device, rng, 2, 17, 3, 64, 10000.0, positions);
    check_rope<T>(device, rng, 1, 5, 2, 2, 10000.0, positions);
    check_rope<T>(device, rng, 3, 33, 4, 128, 500000.0, positions);
    // Llama 3.1's frequency scaling: the same frequencies on both devices (rope_frequency.hpp).
    check_rope<T>(device, rng, 2, 9, 2, 128, 500000.0, positions, meap::rope_scaling{8.0, 1.0, 4.0, 8192.0});
  }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(swiglu_matches_cpu, T, compute_types) {
  std::mt19937 rng(13);
  for (const auto& [N, F] : {std::pair<index_t, index_t>{1, 1}, {7, 300}, {64, 5504}}) check_swiglu<T>(device, rng, N, F);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(embedding_matches_cpu_and_is_deterministic, T, compute_types) {
  std::mt19937 rng(14);
  for (const auto& [N, V, d] : {std::tuple<index_t, std::int32_t, index_t>{1, 1, 1}, {1000, 50, 33}, {4096, 3000, 256}}) {
    check_embedding<T, T>(device, rng, N, V, d);
    if constexpr (!std::is_same_v<T, float>) check_embedding<T, float>(device, rng, N, V, d);
  }
}

BOOST_AUTO_TEST_CASE(gemm_matches_a_double_reference) {
  std::mt19937 rng(15);
  for (const bool ta : {false, true})
    for (const bool tb : {false, true})
      for (const auto& [m, n, k] : {std::tuple<index_t, index_t, index_t>{1, 1, 1}, {33, 17, 65}, {128, 96, 256}}) {
        check_gemm<float, float>(device, rng, m, n, k, ta, tb, 1.0f, 0.0f, true);
        check_gemm<float, float>(device, rng, m, n, k, ta, tb, 0.5f, 2.0f, false);
        check_gemm<meap::bfloat16, meap::bfloat16>(device, rng, m, n, k, ta, tb, 1.0f, 0.0f, true);
        check_gemm<meap::bfloat16, float>(device, rng, m, n, k, ta, tb, -1.0f, 1.0f, false);
        check_gemm<meap::half, meap::half>(device, rng, m, n, k, ta, tb, 0.25f, 0.0f, true);
        check_gemm<meap::half, float>(device, rng, m, n, k, ta, tb, 1.0f, 1.0f, false);
      }
  // k = 0: C = beta C (and beta = 0 clears a NaN C).
  check_gemm<float, float>(device, rng, 4, 5, 0, false, false, 1.0f, 3.0f, false);
  check_gemm<meap::bfloat16, float>(device, rng, 4, 5, 0, true, true, 1.0f, 0.0f, true);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(linear_matches_cpu, T, compute_types) {
  std::mt19937 rng(16);
  for (const auto& [N, in, out] :
       {std::tuple<index_t, index_t, index_t>{1, 1, 1}, {33, 70, 50}, {128, 256, 512}, {0, 8, 4}}) {
    check_linear<T, T>(device, rng, N, in, out);
    if constexpr (!std::is_same_v<T, float>) check_linear<T, float>(device, rng, N, in, out);
  }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(linear_cross_entropy_matches_cpu, T, compute_types) {
  std::mt19937 rng(17);
  const meap::cross_entropy_options plain{}, smoothed{.label_smoothing = 0.1, .z_loss = 1e-3};
  constexpr std::size_t whole = std::size_t{256} << 20;
  for (const auto& options : {plain, smoothed}) {
    // One tile.
    check_linear_cross_entropy<T, T>(device, rng, 64, 32, 1000, 0.3, options, whole);
    // Row blocks over the whole vocabulary (V not a multiple of the chunk granule).
    check_linear_cross_entropy<T, T>(device, rng, 300, 64, 1003, 0.3, options, 1003 * 4 * 150);
    // Vocabulary chunks with an online log-sum-exp, row blocks and a partial last chunk.
    check_linear_cross_entropy<T, T>(device, rng, 300, 64, 5003, 0.3, options, 64 * 1024);
    if constexpr (!std::is_same_v<T, float>)
      check_linear_cross_entropy<T, float>(device, rng, 300, 64, 5003, 0.3, options, 64 * 1024);
  }
  // Every label selected, and a single row.
  check_linear_cross_entropy<T, T>(device, rng, 50, 16, 300, 0.0, plain, whole);
  check_linear_cross_entropy<T, T>(device, rng, 1, 8, 10, 0.0, smoothed, 4096);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(cross_entropy_matches_cpu, T, compute_types) {
  std::mt19937 rng(18);
  check_cross_entropy<T>(device, rng, 70, 1000, 0.3, {});
  check_cross_entropy<T>(device, rng, 33, 5003, 0.2, {.label_smoothing = 0.2, .z_loss = 1e-2});
  check_cross_entropy<T>(device, rng, 1, 1, 0.0, {});
}

BOOST_AUTO_TEST_CASE(no_selected_row_gives_zero_loss_and_gradients) {
  const index_t N = 9, d = 8, V = 20;
  std::mt19937 rng(19);
  const auto gh = upload<float>(device, random_values<float>(rng, N * d), {N, d});
  const auto gw = upload<float>(device, random_values<float>(rng, V * d), {V, d});
  const auto gl = upload_ids(device, std::vector<std::int32_t>(N, meap::ignore_index));
  meap::tensor<float, meap::cuda> gdh(device, {N, d}), gdw(device, {V, d}), gdl(device, {N, V});
  poison(device, gdh.view());
  poison(device, gdw.view());
  poison(device, gdl.view());
  const auto fused = meap::linear_cross_entropy<float>(device, gh.view(), gw.view(), gl.view(), gdh.view(), gdw.view());
  BOOST_TEST(fused.loss == 0.0);
  BOOST_TEST(fused.selected == 0);
  for (const float x : download(device, gdh.view())) BOOST_TEST_REQUIRE(x == 0.0f);
  for (const float x : download(device, gdw.view())) BOOST_TEST_REQUIRE(x == 0.0f);
  const auto logits = upload<float>(device, random_values<float>(rng, N * V), {N, V});
  const auto plain = meap::cross_entropy(device, logits.view(), gl.view(), gdl.view());
  BOOST_TEST(plain.loss == 0.0);
  BOOST_TEST(plain.selected == 0);
  for (const float x : download(device, gdl.view())) BOOST_TEST_REQUIRE(x == 0.0f);
}

// Every kernel once on tiny shapes: the case to run under compute-sanitizer.
// The options a training step uses: a normalizer (the global batch's count), a gradient scale
// (fp16's loss scale), d_weight added to, the count given, the loss left on the device, the checks
// deferred. Against the CPU twin given the same options.
BOOST_AUTO_TEST_CASE_TEMPLATE(training_options_match_cpu, T, compute_types) {
  std::mt19937 rng(31);
  const index_t N = 96, d = 32, V = 700;
  const auto hidden = random_values<T>(rng, N * d), weight = random_values<T>(rng, V * d, 0.5);
  const auto labels = random_labels(rng, N, V, 0.25);
  index_t selected = 0;
  for (const auto l : labels) selected += l != meap::ignore_index;
  const auto previous = random_values<float>(rng, V * d, 0.01);  // what d_weight held before
  std::vector<T> h16(hidden.begin(), hidden.end()), w16(weight.begin(), weight.end());
  meap::tensor<T, meap::cpu> hdh(host, {N, d});
  auto hdw = host_tensor(previous, {V, d});
  std::vector<double> host_sum(2, 0.0);
  meap::cross_entropy_options<meap::cpu> options;
  options.normalizer = 3.0 * static_cast<double>(selected);
  options.gradient_scale = 1024.0;
  options.d_weight_write = meap::gradient_write::accumulate;
  options.selected_rows = selected;
  options.loss_sum = meap::make_view(std::span<double>(host_sum), {2});
  const auto expected = meap::linear_cross_entropy<T, float>(
      host, meap::make_view(std::span<const T>(h16), {N, d}), meap::make_view(std::span<const T>(w16), {V, d}),
      meap::make_view(std::span<const std::int32_t>(labels), {N}), hdh.view(), hdw.view(), options);

  const auto gh = upload<T>(device, hidden, {N, d}), gw = upload<T>(device, weight, {V, d});
  const auto gl = upload_ids(device, labels);
  meap::tensor<T, meap::cuda> gdh(device, {N, d});
  auto gdw = upload<float>(device, previous, {V, d});
  auto sums = meap::zeros<double>(device, {2});
  auto words = meap::full<std::uint64_t>(host, {meap::deferred_check_count}, meap::deferred_none);
  auto gwords = meap::to_device(device, words.view().as_const());
  auto device_options = on_cuda(options);
  device_options.loss_sum = sums.view();
  device_options.checks = {gwords.view()};
  const auto got = meap::linear_cross_entropy<T, float>(device, gh.view(), gw.view(), gl.view(), gdh.view(), gdw.view(),
                                                        device_options);
  BOOST_TEST(std::isnan(got.loss));  // not read back
  BOOST_TEST(got.selected == selected);
  const auto device_sums = meap::to_host(device, sums.view());
  BOOST_TEST(std::abs(device_sums.data()[0] - expected.loss) <= 1e-5 * expected.loss);
  BOOST_TEST(device_sums.data()[1] == static_cast<double>(selected));
  BOOST_TEST(host_sum[0] == expected.loss);
  const auto scale = options.normalizer / options.gradient_scale;  // back to per-row magnitudes
  CHECK_CLOSE(scaled(download(device, gdh.view()), scale), scaled(as_vector_of(hdh), scale), ce_grad_tolerance<T>(),
              "d_hidden with training options");
  CHECK_CLOSE(download(device, gdw.view()), as_vector(hdw), ce_grad_tolerance<T>(), "accumulated d_weight");
  const auto after = meap::to_host(device, gwords.view());
  for (int i = 0; i < meap::deferred_check_count; ++i) BOOST_TEST(after.data()[i] == meap::deferred_none);
}

// A 16-bit d_weight over many row blocks is summed in float and rounded once: within one bfloat16
// rounding of the CPU's float result, where a 16-bit running sum would drift with the block count.
BOOST_AUTO_TEST_CASE(sixteen_bit_d_weight_is_rounded_once) {
  std::mt19937 rng(32);
  const index_t N = 2000, d = 16, V = 64;
  const auto hidden = random_values<meap::bfloat16>(rng, N * d), weight = random_values<meap::bfloat16>(rng, V * d, 0.5);
  const auto labels = random_labels(rng, N, V, 0.0);
  std::vector<meap::bfloat16> h16(hidden.begin(), hidden.end()), w16(weight.begin(), weight.end());
  meap::tensor<float, meap::cpu> hdw(host, {V, d});
  (void)meap::linear_cross_entropy<meap::bfloat16, float>(
      host, meap::make_view(std::span<const meap::bfloat16>(h16), {N, d}),
      meap::make_view(std::span<const meap::bfloat16>(w16), {V, d}), meap::make_view(std::span<const std::int32_t>(labels), {N}),
      meap::tensor_view<meap::bfloat16, meap::cpu>{}, hdw.view());
  const auto gh = upload<meap::bfloat16>(device, hidden, {N, d}), gw = upload<meap::bfloat16>(device, weight, {V, d});
  const auto gl = upload_ids(device, labels);
  meap::tensor<meap::bfloat16, meap::cuda> gdw(device, {V, d});
  meap::cross_entropy_options<meap::cuda> options;
  options.logits_budget_bytes = 64 * V * 6;  // 64-row blocks: 32 of them
  (void)meap::linear_cross_entropy<meap::bfloat16>(device, gh.view(), gw.view(), gl.view(), {}, gdw.view(), options);
  CHECK_TYPE_CLOSE(download(device, gdw.view()), as_vector(hdw), 1.0 / 128, "bf16 d_weight over 32 row blocks");
}

// Deferred checks: nothing throws, the words say what failed, nothing is read out of bounds.
BOOST_AUTO_TEST_CASE(deferred_checks_record_instead_of_throwing) {
  auto words = meap::to_device(device, meap::full<std::uint64_t>(host, {meap::deferred_check_count}, meap::deferred_none)
                                           .view()
                                           .as_const());
  const meap::deferred_checks<meap::cuda> checks{words.view()};
  const auto tokens = upload_ids(device, {1, 2, 77, 0, -5});
  auto table = upload<float>(device, std::vector<float>(4 * 3, 1.0f), {4, 3});
  meap::tensor<float, meap::cuda> y(device, {5, 3});
  meap::embedding_forward<float>(device, tokens.view(), table.view(), y.view(), checks);
  const auto rows = download(device, y.view());
  BOOST_TEST(rows[2 * 3] == 0.0f);  // the invalid token embeds as zeros
  BOOST_TEST(rows[0] == 1.0f);
  meap::embedding_backward<float>(device, tokens.view(), y.view(), table.view(), checks);  // skips it
  const auto labels = upload_ids(device, {0, 9, -100, 2});
  auto hidden = upload<float>(device, std::vector<float>(4 * 3, 0.5f), {4, 3});
  meap::cross_entropy_options<meap::cuda> options;
  options.checks = checks;
  options.selected_rows = 2;  // wrong: three labels are not -100
  auto sums = meap::zeros<double>(device, {2});
  options.loss_sum = sums.view();
  (void)meap::linear_cross_entropy(device, hidden.view().as_const(), table.view().as_const(), labels.view(), options);
  const auto got = meap::to_host(device, words.view());
  std::vector<std::uint64_t> host_words(got.data(), got.data() + meap::deferred_check_count);
  BOOST_TEST(host_words[0] == meap::deferred_failure(2, 77));
  BOOST_TEST(host_words[1] == meap::deferred_failure(1, 9));
  BOOST_TEST(host_words[3] == meap::deferred_failure(2, 3));
  BOOST_CHECK_EXCEPTION(meap::raise_deferred_checks(host_words, 4), meap::error,
                        meap_test::error_says("meap::embedding_forward", "tokens", {"token 77 at index 2", "[0, 4)"}));
}

// RMSNorm's weight gradient over more rows than one grid row per 64-row chunk allows (gridDim.y
// is at most 65535): the chunks stride over the grid.
BOOST_AUTO_TEST_CASE(rmsnorm_backward_takes_any_row_count) {
  std::mt19937 rng(33);
  const index_t N = 4'200'000, d = 2;  // 65625 chunks of 64 rows
  const auto x = random_values<float>(rng, N * d), dy = random_values<float>(rng, N * d), w = random_values<float>(rng, d);
  auto hx = host_tensor(x, {N, d}), hdy = host_tensor(dy, {N, d}), hw = host_tensor(w, {d});
  meap::tensor<float, meap::cpu> hy(host, {N, d}), hr(host, {N}), hdx(host, {N, d});
  auto hdw = meap::zeros<float>(host, {d});
  meap::rmsnorm_forward<float>(host, hx.view(), hw.view(), hy.view(), hr.view(), 1e-5);
  meap::rmsnorm_backward<float>(host, hx.view(), hw.view(), hr.view(), hdy.view(), hdx.view(), hdw.view());
  const auto gx = upload<float>(device, x, {N, d}), gdy = upload<float>(device, dy, {N, d}), gw = upload<float>(device, w, {d});
  meap::tensor<float, meap::cuda> gy(device, {N, d}), gr(device, {N}), gdx(device, {N, d});
  auto gdw = meap::zeros<float>(device, {d});
  meap::rmsnorm_forward<float>(device, gx.view(), gw.view(), gy.view(), gr.view(), 1e-5);
  meap::rmsnorm_backward<float>(device, gx.view(), gw.view(), gr.view(), gdy.view(), gdx.view(), gdw.view());
  CHECK_TYPE_CLOSE(download(device, gdw.view()), as_vector(hdw), 1e-4, "dw over 4.2M rows");
  CHECK_TYPE_CLOSE(download(device, gy.view()), as_vector(hy), 2e-6, "y over 4.2M rows");
  CHECK_TYPE_CLOSE(download(device, gr.view()), as_vector(hr), 2e-6, "inv_rms over 4.2M rows");
  CHECK_TYPE_CLOSE(download(device, gdx.view()), as_vector(hdx), 2e-6, "dx over 4.2M rows");
}

// The fused cross-entropy at a real vocabulary (V = 32064, the paper's 0.1B model) with bfloat16
// inputs, 30% of 4096 rows selected and a small logits budget: many row blocks, each accumulating
// into d_weight (float, and bfloat16 rounded once at the end).
BOOST_AUTO_TEST_CASE(bfloat16_head_with_a_large_vocabulary_and_many_row_blocks) {
  std::mt19937 rng(35);
  constexpr std::size_t budget = std::size_t{8} << 20;  // 8 MiB of logits per block: 65 rows of 32064
  check_linear_cross_entropy<meap::bfloat16, float>(device, rng, 4096, 128, 32064, 0.7, {}, budget);
  check_linear_cross_entropy<meap::bfloat16, meap::bfloat16>(device, rng, 4096, 128, 32064, 0.7,
                                                             {.label_smoothing = 0.1}, budget);
}

// A view of another GPU than the current one is refused at the door.
BOOST_AUTO_TEST_CASE(views_of_another_device_than_the_current_one_are_refused) {
  meap::tensor<float, meap::cuda> x(device, {4, 6}), w(device, {5, 6}), y(device, {4, 5});
  const meap::tensor_view<const float, meap::cuda> elsewhere(x.data(), x.shape(), {meap::device_kind::cuda, 7});
  const meap::tensor_view<const float, meap::cuda> w_elsewhere(w.data(), w.shape(), {meap::device_kind::cuda, 7});
  const meap::tensor_view<float, meap::cuda> y_elsewhere(y.data(), y.shape(), {meap::device_kind::cuda, 7});
  BOOST_CHECK_EXCEPTION(meap::linear_forward<float>(device, elsewhere, w_elsewhere, y_elsewhere), meap::error,
                        meap_test::error_says("meap::linear_forward", "x", {"memory on cuda:7", "current CUDA device"}));
}

// The cuBLASLt workspaces: at most 8 streams hold one, and a stream's goes when the stream does.
BOOST_AUTO_TEST_CASE(cublaslt_workspaces_are_bounded_and_released_with_their_stream) {
  meap::release_cublaslt_resources();
  std::mt19937 rng(34);
  {
    std::vector<std::unique_ptr<meap::cuda_stream>> streams;
    for (int i = 0; i < 12; ++i) {
      streams.push_back(std::make_unique<meap::cuda_stream>());
      const meap::cuda on(streams.back()->device());
      auto a = upload<float>(on, random_values<float>(rng, 64), {8, 8});
      meap::tensor<float, meap::cuda> c(on, {8, 8});
      meap::gemm<float>(on, a.view(), meap::gemm_transpose::no, a.view(), meap::gemm_transpose::no, c.view());
      meap::synchronize(on);
      BOOST_TEST(meap::cublaslt_workspace_count() <= 8u);
    }
  }  // the streams are destroyed: their workspaces with them
  BOOST_TEST(meap::cublaslt_workspace_count() == 0u);
}

BOOST_AUTO_TEST_CASE(tiny_shapes_all_kernels) {
  std::mt19937 rng(20);
  check_rmsnorm<meap::bfloat16, float>(device, rng, 3, 10);
  check_rope<meap::bfloat16>(device, rng, 1, 3, 2, 4, 10000.0, true);
  check_swiglu<meap::half>(device, rng, 2, 5);
  check_embedding<meap::bfloat16, float>(device, rng, 7, 5, 3);
  check_gemm<meap::bfloat16, float>(device, rng, 3, 4, 5, true, false, 1.0f, 1.0f, false);
  check_linear<meap::bfloat16, float>(device, rng, 3, 4, 5);
  check_linear_cross_entropy<meap::bfloat16, float>(device, rng, 6, 4, 300, 0.3, {.label_smoothing = 0.1}, 4096);
  check_cross_entropy<float>(device, rng, 4, 7, 0.25, {});
}

BOOST_AUTO_TEST_CASE(errors_match_cpu) {
  // Each bad call made on both devices must throw the same message.
  const auto same = [&](const std::string& cpu_error, const std::string& cuda_error, const char* what) {
    BOOST_TEST(cpu_error != "(no error)", what);
    BOOST_TEST(cuda_error == cpu_error, what);
  };
  meap::tensor<float, meap::cpu> hx(host, {4, 6}), hy(host, {4, 6}), hw(host, {6}), hr(host, {4}), hbad(host, {4, 5});
  meap::tensor<float, meap::cuda> gx(device, {4, 6}), gy(device, {4, 6}), gw(device, {6}), gr(device, {4}),
      gbad(device, {4, 5});
  meap::fill(host, hx.view(), 1.0f);
  meap::fill(device, gx.view(), 1.0f);
  same(error_of([&] { meap::rmsnorm_forward<float>(host, hx.view(), hw.view(), hy.view(), hr.view(), 0.0); }),
       error_of([&] { meap::rmsnorm_forward<float>(device, gx.view(), gw.view(), gy.view(), gr.view(), 0.0); }),
       "rmsnorm eps");
  same(error_of([&] { meap::rmsnorm_forward<float>(host, hx.view(), hw.view(), hbad.view(), hr.view(), 1e-5); }),
       error_of([&] { meap::rmsnorm_forward<float>(device, gx.view(), gw.view(), gbad.view(), gr.view(), 1e-5); }),
       "rmsnorm y shape");
  same(error_of([&] { meap::linear_forward<float>(host, hx.view(), hbad.view(), hy.view()); }),
       error_of([&] { meap::linear_forward<float>(device, gx.view(), gbad.view(), gy.view()); }), "linear w shape");
  same(error_of([&] { meap::swiglu_forward<float>(host, hx.view(), hbad.view(), hy.view()); }),
       error_of([&] { meap::swiglu_forward<float>(device, gx.view(), gbad.view(), gy.view()); }), "swiglu up shape");
  // RoPE: an odd head dim, and a negative position.
  meap::tensor<float, meap::cpu> h4(host, {1, 2, 1, 3}), h4e(host, {1, 2, 1, 4});
  meap::tensor<float, meap::cuda> g4(device, {1, 2, 1, 3}), g4e(device, {1, 2, 1, 4});
  same(error_of([&] { meap::rope_forward<float>(host, h4.view(), h4.view()); }),
       error_of([&] { meap::rope_forward<float>(device, g4.view(), g4.view()); }), "rope odd D");
  const std::vector<std::int32_t> positions = {3, -2};
  const auto gpos = upload_ids(device, positions);
  meap::fill(host, h4e.view(), 0.5f);
  meap::fill(device, g4e.view(), 0.5f);
  same(error_of([&] {
         meap::rope_backward<float>(host, h4e.view(), h4e.view(),
                                    {.positions = meap::make_view(std::span<const std::int32_t>(positions), {1, 2})});
       }),
       error_of([&] { meap::rope_backward<float>(device, g4e.view(), g4e.view(), {.positions = gpos.view().reshape({1, 2})}); }),
       "rope negative position");
  // Embedding: the first out-of-range token.
  const std::vector<std::int32_t> tokens = {0, 3, 9, 2, -1, 1};
  const auto gtokens = upload_ids(device, tokens);
  const auto htokens = meap::make_view(std::span<const std::int32_t>(tokens), {6});
  meap::tensor<float, meap::cpu> htable(host, {5, 2}), hout(host, {6, 2});
  meap::tensor<float, meap::cuda> gtable(device, {5, 2}), gout(device, {6, 2});
  same(error_of([&] { meap::embedding_forward<float>(host, htokens, htable.view(), hout.view()); }),
       error_of([&] { meap::embedding_forward<float>(device, gtokens.view(), gtable.view(), gout.view()); }),
       "embedding token range");
  same(error_of([&] { meap::embedding_backward<float>(host, htokens, hout.view(), htable.view()); }),
       error_of([&] { meap::embedding_backward<float>(device, gtokens.view(), gout.view(), gtable.view()); }),
       "embedding backward token range");
  // Cross-entropy: the first bad label, and an option out of range.
  const std::vector<std::int32_t> labels = {1, -100, 7, 0};
  const auto glabels = upload_ids(device, labels);
  const auto hlabels = meap::make_view(std::span<const std::int32_t>(labels), {4});
  meap::tensor<float, meap::cpu> hhead(host, {5, 6});
  meap::tensor<float, meap::cuda> ghead(device, {5, 6});
  meap::fill(host, hhead.view(), 0.1f);
  meap::fill(device, ghead.view(), 0.1f);
  same(error_of([&] { (void)meap::linear_cross_entropy(host, hx.view(), hhead.view(), hlabels); }),
       error_of([&] { (void)meap::linear_cross_entropy(device, gx.view(), ghead.view(), glabels.view()); }),
       "linear_cross_entropy label range");
  same(error_of([&] { (void)meap::linear_cross_entropy(host, hx.view(), hhead.view(), hlabels, {.label_smoothing = 1.0}); }),
       error_of([&] {
         (void)meap::linear_cross_entropy(device, gx.view(), ghead.view(), glabels.view(), {.label_smoothing = 1.0});
       }),
       "linear_cross_entropy smoothing");
  same(error_of([&] { (void)meap::cross_entropy(host, hbad.view(), hlabels); }),
       error_of([&] { (void)meap::cross_entropy(device, gbad.view(), glabels.view()); }), "cross_entropy label range");
  // gemm: inner dimensions that do not match.
  BOOST_CHECK_EXCEPTION(meap::gemm<float>(device, gx.view(), meap::gemm_transpose::no, gbad.view(),
                                          meap::gemm_transpose::no, gy.view()),
                        meap::error, meap_test::error_says("meap::gemm", "b", {"op(b) with 6 rows"}));
}

BOOST_AUTO_TEST_CASE(release_cublaslt_resources_then_gemm_again) {
  std::mt19937 rng(21);
  check_gemm<float, float>(device, rng, 8, 8, 8, false, true, 1.0f, 0.0f, true);
  meap::release_cublaslt_resources();
  check_gemm<float, float>(device, rng, 8, 8, 8, false, true, 1.0f, 0.0f, true);
  meap::release_cublaslt_resources();  // leaves nothing behind for a leak check
}

BOOST_AUTO_TEST_SUITE_END()
