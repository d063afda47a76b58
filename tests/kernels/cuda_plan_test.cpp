// The host-testable parts of the CUDA kernels, on the host: kernels/cuda/plan.hpp (launch grids,
// the row-major -> column-major mapping of a cuBLASLt GEMM, checked by running the mapped
// column-major product naively; the cross-entropy tiling; the gradient-norm chunks; the RMSNorm
// row chunks) and kernels/cuda/cross_entropy_math.hpp (the online log-sum-exp, its merge in any
// order, the row loss and the logit gradient the CUDA kernels compute, against the CPU twin).
// Label `cpu`: no GPU needed.
#define BOOST_TEST_MODULE meap cuda plan
#include <boost/test/unit_test.hpp>

#include <meap/core/labels.hpp>
#include <meap/kernels/cross_entropy.hpp>
#include <meap/kernels/cuda/cross_entropy_math.hpp>
#include <meap/kernels/cuda/plan.hpp>

#include <algorithm>
#include <span>
#include <tuple>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace plan = meap::detail::cuda_plan;
using meap::index_t;

namespace {

// D (m, n) = op(A) op(B), column-major as cuBLASLt defines it, on the mapped operands.
std::vector<double> column_major_product(const plan::column_major_gemm& g, const std::vector<double>& a,
                                         const std::vector<double>& b, std::size_t c_size) {
  std::vector<double> c(c_size, -7.0);  // untouched padding keeps its marker
  const auto at = [](const std::vector<double>& x, const plan::column_major_operand& op, std::uint64_t r,
                     std::uint64_t col) {
    // op(X)(r, col): X stored column-major (rows x columns) with leading dimension ld.
    const std::uint64_t row = op.transposed ? col : r, column = op.transposed ? r : col;
    return x[static_cast<std::size_t>(column * static_cast<std::uint64_t>(op.ld) + row)];
  };
  for (std::uint64_t i = 0; i < g.m; ++i)
    for (std::uint64_t j = 0; j < g.n; ++j) {
      double sum = 0;
      for (std::uint64_t p = 0; p < g.k; ++p) sum += at(a, g.a, i, p) * at(b, g.b, p, j);
      c[static_cast<std::size_t>(j * static_cast<std::uint64_t>(g.c.ld) + i)] = sum;
    }
  return c;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(cuda_plan)

BOOST_AUTO_TEST_CASE(grid_sizes_cover_and_cap) {
  BOOST_TEST(plan::grid_size(0, 256) == 1u);
  BOOST_TEST(plan::grid_size(1, 256) == 1u);
  BOOST_TEST(plan::grid_size(256, 256) == 1u);
  BOOST_TEST(plan::grid_size(257, 256) == 2u);
  BOOST_TEST(plan::grid_size(index_t{1} << 40, 256) == static_cast<unsigned>(plan::max_grid_blocks));
  BOOST_TEST(plan::grid_size(100000, 1, 65535) == 65535u);
}

BOOST_AUTO_TEST_CASE(row_threads_give_about_eight_elements_each) {
  BOOST_TEST(plan::row_threads(1) == 64);
  BOOST_TEST(plan::row_threads(512) == 64);
  BOOST_TEST(plan::row_threads(513) == 128);
  BOOST_TEST(plan::row_threads(2048) == 256);
  BOOST_TEST(plan::row_threads(4096) == 512);
  BOOST_TEST(plan::row_threads(8192) == 1024);
  BOOST_TEST(plan::row_threads(1 << 20) == 1024);
  for (index_t d = 1; d < 20000; d += 37) {
    const int t = plan::row_threads(d);
    BOOST_TEST_REQUIRE((t & (t - 1)) == 0);
    BOOST_TEST_REQUIRE((t == 64 || t == 1024 || (t * 8 >= d && t * 4 < d)));
  }
}

BOOST_AUTO_TEST_CASE(row_major_gemm_maps_to_the_column_major_call) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> value(-1, 1);
  for (const bool ta : {false, true})
    for (const bool tb : {false, true})
      for (const auto& [m, n, k, pad] : {std::tuple<index_t, index_t, index_t, index_t>{1, 1, 1, 0}, {3, 5, 4, 0},
                                         {7, 2, 9, 3}, {4, 6, 1, 2}, {1, 8, 5, 1}}) {
        // Row-major storage: A is (m, k) or (k, m); B is (k, n) or (n, k); C is (m, n). Rows padded.
        const index_t a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k, b_cols = tb ? k : n;
        const index_t lda = a_cols + pad, ldb = b_cols + pad, ldc = n + pad;
        std::vector<double> a(static_cast<std::size_t>(a_rows * lda)), b(static_cast<std::size_t>(b_rows * ldb));
        for (auto& x : a) x = value(rng);
        for (auto& x : b) x = value(rng);
        const auto g = plan::to_column_major(ta, tb, m, n, k, lda, ldb, ldc);
        // The column-major call reads meap's B as its A and meap's A as its B.
        const auto c = column_major_product(g, b, a, static_cast<std::size_t>(m * ldc));
        BOOST_TEST_REQUIRE(g.m == static_cast<std::uint64_t>(n));
        BOOST_TEST_REQUIRE(g.n == static_cast<std::uint64_t>(m));
        BOOST_TEST_REQUIRE(g.k == static_cast<std::uint64_t>(k));
        // Stored shapes agree with the leading dimensions (cuBLASLt requires ld >= rows) and with
        // op(A) (m, k), op(B) (k, n), C (m, n) in cuBLASLt's terms.
        for (const auto* op : {&g.a, &g.b, &g.c}) BOOST_TEST_REQUIRE(op->ld >= static_cast<std::int64_t>(op->rows));
        BOOST_TEST_REQUIRE((g.a.transposed ? g.a.columns : g.a.rows) == g.m);
        BOOST_TEST_REQUIRE((g.a.transposed ? g.a.rows : g.a.columns) == g.k);
        BOOST_TEST_REQUIRE((g.b.transposed ? g.b.columns : g.b.rows) == g.k);
        BOOST_TEST_REQUIRE((g.b.transposed ? g.b.rows : g.b.columns) == g.n);
        BOOST_TEST_REQUIRE((g.c.rows == g.m && g.c.columns == g.n));
        for (index_t i = 0; i < m; ++i)
          for (index_t j = 0; j < n; ++j) {
            double expected = 0;
            for (index_t p = 0; p < k; ++p) {
              const double av = ta ? a[static_cast<std::size_t>(p * lda + i)] : a[static_cast<std::size_t>(i * lda + p)];
              const double bv = tb ? b[static_cast<std::size_t>(j * ldb + p)] : b[static_cast<std::size_t>(p * ldb + j)];
              expected += av * bv;
            }
            BOOST_TEST_REQUIRE(std::abs(c[static_cast<std::size_t>(i * ldc + j)] - expected) < 1e-12,
                               "ta " << ta << " tb " << tb << " m " << m << " n " << n << " k " << k << " at " << i
                                     << "," << j);
          }
        // Padding columns of C are never written.
        for (index_t i = 0; i < m; ++i)
          for (index_t j = n; j < ldc; ++j) BOOST_TEST_REQUIRE(c[static_cast<std::size_t>(i * ldc + j)] == -7.0);
      }
}

BOOST_AUTO_TEST_CASE(pointer_alignment_is_the_largest_power_of_two_up_to_256) {
  BOOST_TEST(plan::pointer_alignment(0) == 256u);
  BOOST_TEST(plan::pointer_alignment(4096) == 256u);
  BOOST_TEST(plan::pointer_alignment(256 + 128) == 128u);
  BOOST_TEST(plan::pointer_alignment(2) == 2u);
  BOOST_TEST(plan::pointer_alignment(6) == 2u);
  BOOST_TEST(plan::pointer_alignment(7) == 1u);
  BOOST_TEST(plan::pointer_alignment(16 * 3) == 16u);
}

BOOST_AUTO_TEST_CASE(cross_entropy_tiling) {
  constexpr std::size_t mib = std::size_t{1} << 20;
  // The benchmark's shape: 16k tokens, 30% selected, V = 32000, bf16 (4 + 2 bytes per logit),
  // 256 MiB: the whole vocabulary per block, four balanced row blocks, no recomputation.
  const auto bench = plan::plan_cross_entropy(4915, 32000, 256 * mib, 6);
  BOOST_TEST(bench.vocab_chunk == 32000);
  BOOST_TEST(bench.vocab_chunks == 1);
  BOOST_TEST(!bench.recompute());
  BOOST_TEST(bench.row_blocks == 4);
  BOOST_TEST(bench.row_block == 1229);
  BOOST_TEST(static_cast<std::size_t>(bench.row_block * bench.vocab_chunk * 6) <= 256 * mib);
  // Everything fits: one tile.
  const auto small = plan::plan_cross_entropy(100, 1000, 256 * mib, 4);
  BOOST_TEST(small.row_block == 100);
  BOOST_TEST(small.row_blocks == 1);
  BOOST_TEST(small.vocab_chunk == 1000);
  // A vocabulary too large for min_rows full rows: chunks of a granule multiple.
  const auto large = plan::plan_cross_entropy(10000, 256000, 64 * mib, 4);
  BOOST_TEST(large.recompute());
  BOOST_TEST(large.vocab_chunk % plan::cross_entropy_chunk_granule == 0);
  BOOST_TEST(large.row_block <= plan::cross_entropy_max_rows);
  BOOST_TEST(static_cast<std::size_t>(large.row_block * large.vocab_chunk * 4) <= 64 * mib);
  // No rows: nothing to do.
  BOOST_TEST(plan::plan_cross_entropy(0, 1000, mib, 4).row_blocks == 0);

  // Properties over a sweep, including budgets smaller than one granule of one row.
  for (const index_t selected : {1, 2, 7, 127, 128, 129, 1000, 5000})
    for (const index_t vocab : {1, 5, 255, 256, 257, 1000, 32000, 152064})
      for (const std::size_t budget : {std::size_t{1}, std::size_t{4096}, 64 * std::size_t{1024}, mib, 64 * mib})
        for (const std::size_t bytes : {std::size_t{4}, std::size_t{6}}) {
          const auto t = plan::plan_cross_entropy(selected, vocab, budget, bytes);
          BOOST_TEST_REQUIRE(t.row_block >= 1);
          BOOST_TEST_REQUIRE(t.row_block <= selected);
          BOOST_TEST_REQUIRE(t.row_blocks * t.row_block >= selected);
          BOOST_TEST_REQUIRE((t.row_blocks - 1) * t.row_block < selected);  // no empty block
          BOOST_TEST_REQUIRE(t.vocab_chunk >= 1);
          BOOST_TEST_REQUIRE(t.vocab_chunk <= vocab);
          BOOST_TEST_REQUIRE(t.vocab_chunks * t.vocab_chunk >= vocab);
          BOOST_TEST_REQUIRE((t.vocab_chunks - 1) * t.vocab_chunk < vocab);
          BOOST_TEST_REQUIRE((t.vocab_chunk == vocab || t.vocab_chunk % plan::cross_entropy_chunk_granule == 0));
          // Within budget unless even one row of one granule is over it.
          const std::size_t minimum = static_cast<std::size_t>(std::min<index_t>(vocab, plan::cross_entropy_chunk_granule)) * bytes;
          if (budget >= minimum)
            BOOST_TEST_REQUIRE(static_cast<std::size_t>(t.row_block * t.vocab_chunk) * bytes <= budget,
                               selected << " " << vocab << " " << budget << " " << bytes);
          else
            BOOST_TEST_REQUIRE(t.row_block == 1);
        }
}

BOOST_AUTO_TEST_CASE(norm_chunks_and_their_owners) {
  BOOST_TEST(plan::norm_chunks(0) == 0);
  BOOST_TEST(plan::norm_chunks(1) == 1);
  BOOST_TEST(plan::norm_chunks(plan::norm_chunk) == 1);
  BOOST_TEST(plan::norm_chunks(plan::norm_chunk + 1) == 2);
  // Tensors of sizes 3 chunks, 0, 1, 0, 0, 2 chunks, 0 (empty tensors own no chunk).
  const std::vector<index_t> sizes = {3 * plan::norm_chunk - 5, 0, 17, 0, 0, plan::norm_chunk + 1, 0};
  std::vector<index_t> first;
  index_t total = 0;
  for (const index_t n : sizes) {
    first.push_back(total);
    total += plan::norm_chunks(n);
  }
  BOOST_TEST(total == 6);
  const int count = static_cast<int>(first.size());
  std::vector<int> owners;
  for (index_t c = 0; c < total; ++c) owners.push_back(plan::owner_of_chunk(first.data(), count, c));
  BOOST_TEST(owners == (std::vector<int>{0, 0, 0, 2, 5, 5}), boost::test_tools::per_element());
  // Every chunk lies inside its owner.
  for (index_t c = 0; c < total; ++c) {
    const int p = owners[static_cast<std::size_t>(c)];
    BOOST_TEST_REQUIRE((c - first[static_cast<std::size_t>(p)]) * plan::norm_chunk < sizes[static_cast<std::size_t>(p)]);
  }
}

BOOST_AUTO_TEST_CASE(rmsnorm_row_chunks) {
  BOOST_TEST(plan::rmsnorm_row_chunks(0) == 0);
  BOOST_TEST(plan::rmsnorm_row_chunks(1) == 1);
  BOOST_TEST(plan::rmsnorm_row_chunks(64) == 1);
  BOOST_TEST(plan::rmsnorm_row_chunks(65) == 2);
  BOOST_TEST(plan::rmsnorm_row_chunks(16384) == 256);
}

// The fused kernel's arithmetic for one row, as the GPU runs it: the vocabulary in chunks of
// `chunk`, each chunk strided over `threads` threads that add one logit at a time, the threads'
// partials merged by a tree (as cub::BlockReduce would, in some fixed order), the chunks merged in
// order; then the row loss and every gradient element. Against the CPU twin's plain cross_entropy
// on the same row.
BOOST_AUTO_TEST_CASE(cross_entropy_row_arithmetic_matches_cpu) {
  namespace math = meap::detail::cuda_math;
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (const index_t vocab : {1, 2, 7, 1000, 5003})
    for (const auto& [eps, lambda] : {std::pair<double, double>{0.0, 0.0}, {0.1, 1e-3}, {0.3, 0.0}})
      for (const index_t chunk : {vocab, index_t{256}, index_t{97}})
        for (const int threads : {1, 32, 256}) {
          std::vector<float> z(static_cast<std::size_t>(vocab));
          for (auto& x : z) x = normal(rng);
          const auto label = static_cast<std::int32_t>(std::uniform_int_distribution<index_t>(0, vocab - 1)(rng));
          const bool want_sum = eps != 0.0;
          math::lse_partial row = math::lse_empty();
          float target = 0.0f;
          for (index_t v0 = 0; v0 < vocab; v0 += chunk) {
            const index_t width = std::min(chunk, vocab - v0);
            std::vector<math::lse_partial> partial(static_cast<std::size_t>(threads), math::lse_empty());
            for (int t = 0; t < threads; ++t)
              for (index_t j = t; j < width; j += threads)
                math::lse_add(partial[static_cast<std::size_t>(t)], z[static_cast<std::size_t>(v0 + j)], want_sum);
            // A pairwise tree, as a block reduction merges (threads beyond the chunk stay empty).
            for (int stride = 1; stride < threads; stride *= 2)
              for (int t = 0; t + stride < threads; t += 2 * stride)
                partial[static_cast<std::size_t>(t)] =
                    math::lse_merge(partial[static_cast<std::size_t>(t)], partial[static_cast<std::size_t>(t + stride)]);
            row = v0 == 0 ? partial[0] : math::lse_merge(row, partial[0]);
            if (label >= v0 && label < v0 + width) target = z[static_cast<std::size_t>(label)];
          }
          const math::row_loss got = math::ce_row_loss(row, target, vocab, eps, lambda);

          const std::vector<std::int32_t> labels = {label};
          std::vector<float> grad(z.size());
          const auto r = meap::cross_entropy(
              meap::cpu{}, meap::make_view(std::span<const float>(z), {1, vocab}),
              meap::make_view(std::span<const std::int32_t>(labels), {1}),
              meap::make_view(std::span<float>(grad), {1, vocab}), {.label_smoothing = eps, .z_loss = lambda});
          BOOST_TEST_REQUIRE(std::abs(got.loss - r.loss) <= 2e-6 * std::max(1.0, std::abs(r.loss)),
                             "V " << vocab << " chunk " << chunk << " threads " << threads << ": loss " << got.loss
                                  << " vs CPU " << r.loss);
          const auto p_scale = static_cast<float>(1.0 + 2.0 * lambda * static_cast<double>(got.lse));
          const auto shift = static_cast<float>(eps / static_cast<double>(vocab));
          const auto target_step = static_cast<float>(1.0 - eps);
          for (index_t j = 0; j < vocab; ++j) {
            const float g =
                math::ce_gradient(z[static_cast<std::size_t>(j)], got.lse, p_scale, shift, j == label, target_step);
            BOOST_TEST_REQUIRE(std::abs(g - grad[static_cast<std::size_t>(j)]) <= 2e-6f,
                               "V " << vocab << " chunk " << chunk << " element " << j << ": " << g << " vs CPU "
                                    << grad[static_cast<std::size_t>(j)]);
          }
        }
}

BOOST_AUTO_TEST_CASE(log_sum_exp_merge_is_neutral_on_empty_partials) {
  namespace math = meap::detail::cuda_math;
  const math::lse_partial empty = math::lse_empty();
  math::lse_partial one = math::lse_empty();
  math::lse_add(one, 2.5f, true);
  for (const auto& merged : {math::lse_merge(empty, one), math::lse_merge(one, empty)}) {
    BOOST_TEST(merged.max == 2.5f);
    BOOST_TEST(merged.sum_exp == 1.0f);
    BOOST_TEST(merged.sum == 2.5f);
  }
  const math::lse_partial none = math::lse_merge(empty, empty);
  BOOST_TEST(none.sum_exp == 0.0f);
  BOOST_TEST(std::isinf(none.max));
}

BOOST_AUTO_TEST_SUITE_END()
