// The GEMM every large CPU product goes through (kernels/cpu/gemm.hpp): all four transpose
// combinations, beta 0 / 1 / other, leading dimensions wider than the matrices, float and double,
// against plain loops; both the configured backend (CBLAS when meap::meap found one) and Eigen.
// Also linear_backward's accumulate mode, which the q/k/v and gate/up projections rely on.
#include <meap/core/tensor.hpp>
#include <meap/kernels/cpu/gemm.hpp>
#include <meap/kernels/linear.hpp>

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace {

namespace impl = meap::detail::cpu_impl;
using meap::index_t;

template <class T>
std::vector<T> random_values(std::size_t n, std::mt19937& engine) {
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(uniform(engine));
  return v;
}

// C (m, n) = alpha op(A) op(B) + beta C with row-major storage and leading dimensions, in double.
template <class T>
std::vector<double> reference(impl::transpose ta, impl::transpose tb, index_t m, index_t n, index_t k, double alpha,
                              const std::vector<T>& a, index_t lda, const std::vector<T>& b, index_t ldb, double beta,
                              const std::vector<T>& c, index_t ldc) {
  std::vector<double> out(c.begin(), c.end());
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < n; ++j) {
      double sum = 0;
      for (index_t p = 0; p < k; ++p) {
        const double av = ta == impl::transpose::yes ? a[std::size_t(p * lda + i)] : a[std::size_t(i * lda + p)];
        const double bv = tb == impl::transpose::yes ? b[std::size_t(j * ldb + p)] : b[std::size_t(p * ldb + j)];
        sum += av * bv;
      }
      const double old = beta == 0.0 ? 0.0 : static_cast<double>(c[std::size_t(i * ldc + j)]);
      out[std::size_t(i * ldc + j)] = alpha * sum + beta * old;
    }
  return out;
}

template <class T, class Gemm>
void check_all_cases(Gemm&& gemm, const char* backend) {
  std::mt19937 engine(7);
  const index_t m = 37, n = 29, k = 41;
  const double tolerance = std::is_same_v<T, float> ? 2e-5 : 1e-12;
  for (const auto ta : {impl::transpose::no, impl::transpose::yes})
    for (const auto tb : {impl::transpose::no, impl::transpose::yes})
      for (const double beta : {0.0, 1.0, -0.5}) {
        // Leading dimensions 3 wider than the stored rows: strided sub-matrices.
        const index_t lda = (ta == impl::transpose::yes ? m : k) + 3, a_rows = ta == impl::transpose::yes ? k : m;
        const index_t ldb = (tb == impl::transpose::yes ? k : n) + 3, b_rows = tb == impl::transpose::yes ? n : k;
        const index_t ldc = n + 3;
        const auto a = random_values<T>(std::size_t(a_rows * lda), engine);
        const auto b = random_values<T>(std::size_t(b_rows * ldb), engine);
        auto c = random_values<T>(std::size_t(m * ldc), engine);
        if (beta == 0.0)  // beta = 0 must not read C: NaN there may not leak into the result
          for (auto& x : c) x = std::numeric_limits<T>::quiet_NaN();
        const auto expected = reference(ta, tb, m, n, k, 1.5, a, lda, b, ldb, beta, c, ldc);
        gemm(ta, tb, m, n, k, T(1.5), a.data(), lda, b.data(), ldb, T(beta), c.data(), ldc);
        double worst = 0;
        for (index_t i = 0; i < m; ++i)
          for (index_t j = 0; j < n; ++j)
            worst =
                std::max(worst, std::fabs(double(c[std::size_t(i * ldc + j)]) - expected[std::size_t(i * ldc + j)]));
        BOOST_TEST(worst <= tolerance * k, backend << " ta " << bool(ta) << " tb " << bool(tb) << " beta " << beta
                                                   << ": worst error " << worst);
        // The padding columns beyond n are never written.
        for (index_t i = 0; i < m; ++i)
          for (index_t j = n; j < ldc; ++j) {
            const T now = c[std::size_t(i * ldc + j)];
            const double before = expected[std::size_t(i * ldc + j)];
            BOOST_TEST_REQUIRE((std::isnan(now) ? std::isnan(before) : double(now) == before),
                               backend << ": padding element (" << i << ", " << j << ") was written");
          }
      }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(gemm)

BOOST_AUTO_TEST_CASE(configured_backend_matches_loops) {
  BOOST_TEST_MESSAGE("gemm backend: " << impl::gemm_backend());
  check_all_cases<float>([](auto... args) { impl::gemm<float>(args...); }, impl::gemm_backend());
  check_all_cases<double>([](auto... args) { impl::gemm<double>(args...); }, impl::gemm_backend());
}

BOOST_AUTO_TEST_CASE(eigen_fallback_matches_loops) {
  check_all_cases<float>([](auto... args) { impl::eigen_gemm<float>(args...); }, "Eigen");
  check_all_cases<double>([](auto... args) { impl::eigen_gemm<double>(args...); }, "Eigen");
}

BOOST_AUTO_TEST_CASE(empty_products) {
  // k = 0: C = beta C; m = 0 or n = 0: nothing to do.
  std::vector<double> c{1, 2, 3, 4};
  const double dummy = 0;
  impl::gemm<double>(impl::transpose::no, impl::transpose::no, 2, 2, 0, 1.0, &dummy, 1, &dummy, 2, 0.5, c.data(), 2);
  BOOST_TEST(c == (std::vector<double>{0.5, 1, 1.5, 2}), boost::test_tools::per_element());
  impl::gemm<double>(impl::transpose::no, impl::transpose::no, 0, 2, 3, 1.0, &dummy, 3, &dummy, 2, 0.0, c.data(), 2);
  BOOST_TEST(c == (std::vector<double>{0.5, 1, 1.5, 2}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(linear_backward_accumulates_dx_on_request) {
  std::mt19937 engine(3);
  const index_t rows = 6, in = 5, out = 4;
  const auto x = random_values<double>(rows * in, engine), w = random_values<double>(out * in, engine);
  const auto dy = random_values<double>(rows * out, engine), start = random_values<double>(rows * in, engine);
  const auto xv = meap::make_view(std::span<const double>(x), {rows, in});
  const auto wv = meap::make_view(std::span<const double>(w), {out, in});
  const auto dyv = meap::make_view(std::span<const double>(dy), {rows, out});
  std::vector<double> dx_over(start), dx_acc(start), dw(std::size_t(out * in), 0.0);
  meap::linear_backward<double>(meap::cpu{}, xv, wv, dyv, meap::make_view(std::span<double>(dx_over), {rows, in}),
                                meap::make_view(std::span<double>(dw), {out, in}));
  meap::linear_backward<double>(meap::cpu{}, xv, wv, dyv, meap::make_view(std::span<double>(dx_acc), {rows, in}),
                                meap::make_view(std::span<double>(dw), {out, in}), meap::gradient_write::accumulate);
  for (std::size_t i = 0; i < dx_acc.size(); ++i)
    BOOST_TEST(dx_acc[i] == start[i] + dx_over[i], boost::test_tools::tolerance(1e-12));
  // dw always accumulates: two calls give twice dy^T x.
  for (index_t o = 0; o < out; ++o)
    for (index_t i = 0; i < in; ++i) {
      double expected = 0;
      for (index_t r = 0; r < rows; ++r) expected += dy[std::size_t(r * out + o)] * x[std::size_t(r * in + i)];
      BOOST_TEST(dw[std::size_t(o * in + i)] == 2 * expected, boost::test_tools::tolerance(1e-12));
    }
}

BOOST_AUTO_TEST_SUITE_END()
