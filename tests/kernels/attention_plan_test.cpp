// The launch plan of the CUDA attention kernels (meap/kernels/cuda/attention_plan.hpp), checked on
// the host: every tile configuration fits the portable shared-memory budget and divides evenly;
// ldmatrix and cp.async hit no shared-memory bank conflicts; the kernels' tile GEMMs, composed
// from the plan's ldmatrix addresses and mma.sync register layouts and run on an emulation of the
// two instructions written from the PTX ISA tables, equal plain matrix products; causal and
// segment skipping never skips a tile with an allowed pair and never leaves a "full" tile
// unmasked when it needs a mask; the GQA map and the grid linearization are bijections.
#include <meap/kernels/cuda/attention_plan.hpp>

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <random>
#include <set>
#include <vector>

namespace plan = meap::detail::cuda_attention;

namespace {

constexpr int buckets[] = {64, 128, 256};

// ---------------------------------------------------------------------------------------------
// An emulation of ldmatrix.x4 and mma.sync.m16n8k16 written from the PTX ISA's fragment tables
// (independently of the plan's functions, which the test then compares against them).
// ---------------------------------------------------------------------------------------------
struct warp_regs {
  // regs[lane][register][half]: 16-bit values as doubles (exact for the small integers used).
  std::array<std::array<std::array<double, 2>, 4>, 32> regs{};
};

// `tile` is a row-major array with `stride` elements per row; lane l supplies (row, col) of the
// first element of one 8-element row. Matrix i is rows given by lanes 8i..8i+7; register i of
// lane t gets that matrix's row t/4, columns 2(t%4), 2(t%4)+1 (transposed: row/column swapped).
template <class Address>
warp_regs emulate_ldmatrix_x4(const std::vector<double>& tile, int stride, Address address, bool trans) {
  warp_regs out;
  for (int matrix = 0; matrix < 4; ++matrix) {
    double m[8][8];
    for (int row = 0; row < 8; ++row) {
      const auto [r, c] = address(8 * matrix + row);
      for (int col = 0; col < 8; ++col) m[row][col] = tile[static_cast<std::size_t>(r * stride + c + col)];
    }
    for (int t = 0; t < 32; ++t)
      for (int half = 0; half < 2; ++half)
        out.regs[t][matrix][half] = trans ? m[2 * (t % 4) + half][t / 4] : m[t / 4][2 * (t % 4) + half];
  }
  return out;
}

// PTX ISA, "Matrix fragments for mma.m16n8k16 with floating point type": groupID = lane >> 2,
// threadID_in_group = lane % 4.
//   A (16x16): a_i, i = 0..7: row = groupID + 8 for i in {2,3,6,7}, else groupID;
//              col = 2 threadID_in_group + (i & 1) + 8 for i >= 4.
//   B (16x8):  b_i, i = 0..3: row = 2 threadID_in_group + (i & 1) + 8 for i >= 2; col = groupID.
//   C (16x8):  c_i, i = 0..3: row = groupID + 8 for i >= 2; col = 2 threadID_in_group + (i & 1).
int ptx_a_row(int lane, int i) { return (lane >> 2) + ((i == 2 || i == 3 || i == 6 || i == 7) ? 8 : 0); }
int ptx_a_col(int lane, int i) { return 2 * (lane % 4) + (i & 1) + (i >= 4 ? 8 : 0); }
int ptx_b_row(int lane, int i) { return 2 * (lane % 4) + (i & 1) + (i >= 2 ? 8 : 0); }
int ptx_b_col(int lane, int) { return lane >> 2; }
int ptx_c_row(int lane, int i) { return (lane >> 2) + (i >= 2 ? 8 : 0); }
int ptx_c_col(int lane, int i) { return 2 * (lane % 4) + (i & 1); }

using c_frags = std::array<std::array<double, 4>, 32>;  // [lane][c_i]

// d += a b: a = four registers per lane (a_0..a_7), b = two registers per lane (b_0..b_3).
void emulate_mma(c_frags& d, const std::array<std::array<std::array<double, 2>, 4>, 32>& a,
                 const std::array<std::array<std::array<double, 2>, 2>, 32>& b) {
  double A[16][16] = {}, B[16][8] = {};
  for (int lane = 0; lane < 32; ++lane) {
    for (int i = 0; i < 8; ++i) A[ptx_a_row(lane, i)][ptx_a_col(lane, i)] = a[lane][i / 2][i % 2];
    for (int i = 0; i < 4; ++i) B[ptx_b_row(lane, i)][ptx_b_col(lane, i)] = b[lane][i / 2][i % 2];
  }
  for (int lane = 0; lane < 32; ++lane)
    for (int i = 0; i < 4; ++i) {
      double sum = 0;
      for (int kk = 0; kk < 16; ++kk) sum += A[ptx_c_row(lane, i)][kk] * B[kk][ptx_c_col(lane, i)];
      d[lane][i] += sum;
    }
}

std::vector<double> random_small_ints(std::mt19937& rng, std::size_t n) {
  std::uniform_int_distribution<int> dist(-4, 4);
  std::vector<double> values(n);
  for (auto& x : values) x = dist(rng);
  return values;
}

// The kernels' gemm_nt_ss: acc (16 x N) += A (16 x K, rows of `a`) B^T (B = N rows of `b`),
// composed exactly as attention_tc.cuh composes it from the plan.
std::vector<c_frags> gemm_nt(const std::vector<double>& a, const std::vector<double>& b, int stride, int K, int N) {
  std::vector<c_frags> acc(static_cast<std::size_t>(N / 8), c_frags{});
  for (int kk = 0; kk < K / 16; ++kk) {
    const auto af = emulate_ldmatrix_x4(a, stride,
                                        [&](int lane) {
                                          return std::pair{plan::ldmatrix_x4::a_row(lane),
                                                           kk * 16 + plan::ldmatrix_x4::a_col(lane)};
                                        },
                                        false);
    for (int np = 0; np < N / 16; ++np) {
      const auto bf = emulate_ldmatrix_x4(b, stride,
                                          [&](int lane) {
                                            return std::pair{np * 16 + plan::ldmatrix_x4::bn_row(lane),
                                                             kk * 16 + plan::ldmatrix_x4::bn_col(lane)};
                                          },
                                          false);
      std::array<std::array<std::array<double, 2>, 2>, 32> b0{}, b1{};
      for (int lane = 0; lane < 32; ++lane) {
        b0[lane] = {bf.regs[lane][0], bf.regs[lane][1]};
        b1[lane] = {bf.regs[lane][2], bf.regs[lane][3]};
      }
      emulate_mma(acc[static_cast<std::size_t>(2 * np)], af.regs, b0);
      emulate_mma(acc[static_cast<std::size_t>(2 * np + 1)], af.regs, b1);
    }
  }
  return acc;
}

// The kernels' gemm_pn_rs: acc (16 x N) += P (16 x K, given as K / 8 accumulator tiles) B, B = a
// [K][N] tile read with ldmatrix.trans.
std::vector<c_frags> gemm_pn(const std::vector<c_frags>& p, const std::vector<double>& b, int stride, int K, int N) {
  std::vector<c_frags> acc(static_cast<std::size_t>(N / 8), c_frags{});
  for (int kk = 0; kk < K / 16; ++kk) {
    std::array<std::array<std::array<double, 2>, 4>, 32> af{};
    for (int lane = 0; lane < 32; ++lane)
      for (int r = 0; r < 4; ++r)
        for (int half = 0; half < 2; ++half)
          af[lane][r][half] = p[static_cast<std::size_t>(plan::repack_tile(kk, r))][lane][plan::repack_element(r, half)];
    for (int np = 0; np < N / 16; ++np) {
      const auto bf = emulate_ldmatrix_x4(b, stride,
                                          [&](int lane) {
                                            return std::pair{kk * 16 + plan::ldmatrix_x4::bt_row(lane),
                                                             np * 16 + plan::ldmatrix_x4::bt_col(lane)};
                                          },
                                          true);
      std::array<std::array<std::array<double, 2>, 2>, 32> b0{}, b1{};
      for (int lane = 0; lane < 32; ++lane) {
        b0[lane] = {bf.regs[lane][0], bf.regs[lane][1]};
        b1[lane] = {bf.regs[lane][2], bf.regs[lane][3]};
      }
      emulate_mma(acc[static_cast<std::size_t>(2 * np)], af, b0);
      emulate_mma(acc[static_cast<std::size_t>(2 * np + 1)], af, b1);
    }
  }
  return acc;
}

// Reads accumulator tiles back into a 16 x N matrix through the plan's C layout.
std::vector<double> from_c_frags(const std::vector<c_frags>& acc, int N) {
  std::vector<double> m(static_cast<std::size_t>(16 * N), 0.0);
  for (int nt = 0; nt < N / 8; ++nt)
    for (int lane = 0; lane < 32; ++lane)
      for (int e = 0; e < 4; ++e)
        m[static_cast<std::size_t>(plan::mma_m16n8k16::c_row(lane, e) * N + nt * 8 + plan::mma_m16n8k16::c_col(lane, e))] =
            acc[static_cast<std::size_t>(nt)][lane][e];
  return m;
}

// Shared-memory banks touched by a 16-byte access at byte offset `bytes` (4 banks of 4 bytes).
std::array<int, 4> banks_of(int bytes) {
  const int first = (bytes / 4) % 32;
  return {first, (first + 1) % 32, (first + 2) % 32, (first + 3) % 32};
}

// True when the 8 sixteen-byte accesses (one phase of ldmatrix or of a 128-byte store wavefront)
// touch 32 distinct banks.
bool conflict_free(const std::array<int, 8>& byte_offsets) {
  std::set<int> banks;
  for (const int offset : byte_offsets)
    for (const int bank : banks_of(offset)) banks.insert(bank);
  return banks.size() == 32;
}

// Segment chunks as the segment_chunks_kernel defines them.
std::vector<plan::segment_range> chunk_table(const std::vector<std::int32_t>& ids, int T) {
  std::vector<plan::segment_range> chunks;
  for (int t0 = 0; t0 < T; t0 += plan::segment_chunk) {
    plan::segment_range r{ids[static_cast<std::size_t>(t0)], ids[static_cast<std::size_t>(t0)]};
    for (int t = t0; t < std::min(T, t0 + plan::segment_chunk); ++t) {
      r.lo = std::min(r.lo, ids[static_cast<std::size_t>(t)]);
      r.hi = std::max(r.hi, ids[static_cast<std::size_t>(t)]);
    }
    chunks.push_back(r);
  }
  return chunks;
}

bool brute_allowed(int i, int j, int T, const std::vector<std::int32_t>& ids) {
  return i < T && j < T && j <= i && (ids.empty() || ids[static_cast<std::size_t>(i)] == ids[static_cast<std::size_t>(j)]);
}

// Any / every real query of [i0, i0 + bm) attends every key of [j0, j0 + bn).
bool tile_has_allowed(int i0, int bm, int j0, int bn, int T, const std::vector<std::int32_t>& ids) {
  for (int i = i0; i < std::min(i0 + bm, T); ++i)
    for (int j = j0; j < j0 + bn; ++j)
      if (brute_allowed(i, j, T, ids)) return true;
  return false;
}
bool tile_all_allowed(int i0, int bm, int j0, int bn, int T, const std::vector<std::int32_t>& ids) {
  for (int i = i0; i < std::min(i0 + bm, T); ++i)
    for (int j = j0; j < j0 + bn; ++j)
      if (!brute_allowed(i, j, T, ids)) return false;
  return true;
}

std::vector<std::int32_t> random_segments(std::mt19937& rng, int T, bool sorted) {
  std::vector<std::int32_t> ids(static_cast<std::size_t>(T));
  if (sorted) {
    std::uniform_int_distribution<int> length(1, std::max(1, T / 3));
    std::int32_t id = 0;
    for (int t = 0; t < T;) {
      const int n = std::min(length(rng), T - t);
      for (int u = 0; u < n; ++u) ids[static_cast<std::size_t>(t + u)] = id;
      t += n;
      ++id;
    }
  } else {
    std::uniform_int_distribution<int> id(0, 3);
    for (auto& x : ids) x = id(rng);
  }
  return ids;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(cuda_attention_plan)

BOOST_AUTO_TEST_CASE(head_dim_buckets_and_paths) {
  for (int d = 1; d <= plan::max_head_dim; ++d) {
    const int bucket = plan::head_dim_bucket(d);
    BOOST_TEST(bucket >= d);
    BOOST_TEST((bucket == 64 || bucket == 128 || bucket == 256));
    BOOST_TEST((d <= 64 || bucket > 64));
    BOOST_TEST((d <= 128 || bucket == 256));
  }
  BOOST_TEST(plan::head_dim_bucket(64) == 64);
  BOOST_TEST(plan::head_dim_bucket(128) == 128);
  using plan::path;
  BOOST_TEST((plan::choose_path(true, 64, true) == path::tensor_core));
  BOOST_TEST((plan::choose_path(true, 80, true) == path::tensor_core));
  BOOST_TEST((plan::choose_path(true, 37, true) == path::simt));   // D % 8 != 0
  BOOST_TEST((plan::choose_path(true, 128, false) == path::simt)); // an offset view
  BOOST_TEST((plan::choose_path(false, 128, true) == path::simt)); // float
}

BOOST_AUTO_TEST_CASE(tensor_core_tiles_fit_and_divide) {
  for (const int bucket : buckets) {
    BOOST_TEST_CONTEXT("bucket " << bucket) {
      const auto f = plan::tc_forward_config(bucket);
      BOOST_TEST(f.head_dim == bucket);
      BOOST_TEST(f.block_m == 16 * f.warps);
      BOOST_TEST(f.block_n % 16 == 0);
      BOOST_TEST(f.smem_bytes(2) <= plan::portable_smem_limit);
      BOOST_TEST(f.block_m % plan::segment_chunk == 0);
      BOOST_TEST(f.block_n % plan::segment_chunk == 0);
      BOOST_TEST((f.block_m * bucket / 8) % f.threads() == 0);
      BOOST_TEST((f.block_n * bucket / 8) % f.threads() == 0);
      BOOST_TEST(f.block_m >= plan::smallest_grid_block);
      // Tiles: Q [0, BM S); with Q in registers stage 1 reuses Q's tile, stage 0 follows it.
      const int S = f.stride();
      BOOST_TEST(f.k_offset(0) >= f.block_m * S);
      BOOST_TEST(f.v_offset(0) == f.k_offset(0) + f.block_n * S);
      BOOST_TEST(static_cast<std::size_t>(f.v_offset(0) + f.block_n * S) * 2 <= f.smem_bytes(2));
      if (f.q_in_registers) {
        BOOST_TEST(f.k_offset(1) == 0);
        BOOST_TEST(f.v_offset(1) + f.block_n * S <= f.block_m * S);
      } else if (f.stages == 2) {
        BOOST_TEST(f.k_offset(1) == f.v_offset(0) + f.block_n * S);
      }
      // Accumulator registers per thread (O, S, Q fragments) stay well inside 255.
      BOOST_TEST(bucket / 2 + f.block_n / 2 + (f.q_in_registers ? bucket / 4 : 0) <= 192);

      const auto kv = plan::tc_dkdv_config(bucket);
      BOOST_TEST(kv.block_n == 16 * kv.warps);
      BOOST_TEST(kv.block_m % 16 == 0);
      BOOST_TEST(kv.d_out() * kv.d_split == bucket);
      BOOST_TEST(kv.d_out() % 16 == 0);
      BOOST_TEST(kv.smem_bytes(2) <= plan::portable_smem_limit);
      BOOST_TEST(kv.block_m % plan::segment_chunk == 0);
      BOOST_TEST(kv.block_n % plan::segment_chunk == 0);
      BOOST_TEST(kv.block_n >= plan::smallest_grid_block);
      BOOST_TEST(kv.lse_byte_offset(0, 2) % 16 == 0);
      BOOST_TEST(kv.delta_byte_offset(kv.stages - 1, 2) + kv.block_m * sizeof(float) == kv.smem_bytes(2));
      BOOST_TEST(static_cast<std::size_t>(kv.do_offset(kv.stages - 1) + kv.block_m * kv.stride()) * 2 ==
                 kv.lse_byte_offset(0, 2));
      BOOST_TEST(kv.d_out() + kv.block_m / 2 <= 192);  // dK + dV + S^T + dP^T accumulators per thread

      const auto dq = plan::tc_dq_config(bucket);
      BOOST_TEST(dq.block_m == 16 * dq.warps);
      BOOST_TEST(dq.block_n % 16 == 0);
      BOOST_TEST(dq.d_out() * dq.d_split == bucket);
      BOOST_TEST(dq.smem_bytes(2) <= plan::portable_smem_limit);
      BOOST_TEST(dq.block_m % plan::segment_chunk == 0);
      BOOST_TEST(dq.block_n % plan::segment_chunk == 0);
      BOOST_TEST(dq.block_m >= plan::smallest_grid_block);
      BOOST_TEST(static_cast<std::size_t>(dq.v_offset(dq.stages - 1) + dq.block_n * dq.stride()) * 2 == dq.smem_bytes(2));
      BOOST_TEST(dq.d_out() / 2 + dq.block_n <= 192);
    }
  }
  // The exact budgets the docs quote.
  BOOST_TEST(plan::tc_forward_config(128).smem_bytes(2) == 69632u);
  BOOST_TEST(plan::tc_forward_config(64).smem_bytes(2) == 36864u);
  BOOST_TEST(plan::max_sequence_length == 65535LL * 16);
}

BOOST_AUTO_TEST_CASE(simt_tiles_fit) {
  for (const int bucket : buckets) {
    const auto s = plan::simt_config(bucket);
    BOOST_TEST(s.head_dim == bucket);
    BOOST_TEST(s.cols % 4 == 0);
    BOOST_TEST(s.threads() <= 1024);
    BOOST_TEST(s.threads() % 32 == 0);  // a row's 4 threads never straddle two warps
    BOOST_TEST(s.rows % plan::segment_chunk == 0);
    BOOST_TEST(s.cols % plan::segment_chunk == 0);
    BOOST_TEST(s.rows >= plan::smallest_grid_block);
    BOOST_TEST(s.row_kernel_smem_bytes() <= plan::portable_smem_limit);
    BOOST_TEST(s.col_kernel_smem_bytes() <= plan::portable_smem_limit);
    BOOST_TEST(s.d_out() * s.d_split == bucket);
    BOOST_TEST(2 * s.outputs_per_thread() <= 64);  // dK + dV accumulators of the column kernel
  }
}

BOOST_AUTO_TEST_CASE(fragment_layouts_match_the_ptx_tables) {
  for (int lane = 0; lane < 32; ++lane) {
    for (int e = 0; e < 8; ++e) {
      BOOST_TEST(plan::mma_m16n8k16::a_row(lane, e) == ptx_a_row(lane, e));
      BOOST_TEST(plan::mma_m16n8k16::a_col(lane, e) == ptx_a_col(lane, e));
    }
    for (int e = 0; e < 4; ++e) {
      BOOST_TEST(plan::mma_m16n8k16::b_row(lane, e) == ptx_b_row(lane, e));
      BOOST_TEST(plan::mma_m16n8k16::b_col(lane, e) == ptx_b_col(lane, e));
      BOOST_TEST(plan::mma_m16n8k16::c_row(lane, e) == ptx_c_row(lane, e));
      BOOST_TEST(plan::mma_m16n8k16::c_col(lane, e) == ptx_c_col(lane, e));
    }
  }
  // Each layout covers its matrix exactly once.
  std::set<std::pair<int, int>> a, c;
  for (int lane = 0; lane < 32; ++lane) {
    for (int e = 0; e < 8; ++e) a.insert({plan::mma_m16n8k16::a_row(lane, e), plan::mma_m16n8k16::a_col(lane, e)});
    for (int e = 0; e < 4; ++e) c.insert({plan::mma_m16n8k16::c_row(lane, e), plan::mma_m16n8k16::c_col(lane, e)});
  }
  BOOST_TEST(a.size() == 256u);
  BOOST_TEST(c.size() == 128u);
}

// S = Q K^T and then O = P V on a warp's 16 rows, for every head-dim bucket and key-block size the
// kernels use, composed from the plan's addresses and layouts on the emulated instructions.
BOOST_AUTO_TEST_CASE(warp_tile_products_equal_plain_products) {
  std::mt19937 rng(5);
  for (const int D : buckets)
    for (const int N : {16, 32, 64}) {
      BOOST_TEST_CONTEXT("D " << D << " N " << N) {
        const int S = plan::tc_stride(D);
        const auto q = random_small_ints(rng, static_cast<std::size_t>(16 * S));
        const auto k = random_small_ints(rng, static_cast<std::size_t>(N * S));
        const auto s = from_c_frags(gemm_nt(q, k, S, D, N), N);
        bool equal = true;
        for (int i = 0; i < 16; ++i)
          for (int j = 0; j < N; ++j) {
            double want = 0;
            for (int d = 0; d < D; ++d) want += q[static_cast<std::size_t>(i * S + d)] * k[static_cast<std::size_t>(j * S + d)];
            equal = equal && s[static_cast<std::size_t>(i * N + j)] == want;
          }
        BOOST_TEST(equal);

        // P: N keys as accumulator tiles (the S above); V: [N][D] with stride S.
        const auto s_frags = gemm_nt(q, k, S, D, N);
        const auto v = random_small_ints(rng, static_cast<std::size_t>(N * S));
        const auto o = from_c_frags(gemm_pn(s_frags, v, S, N, D), D);
        equal = true;
        for (int i = 0; i < 16; ++i)
          for (int d = 0; d < D; ++d) {
            double want = 0;
            for (int j = 0; j < N; ++j) want += s[static_cast<std::size_t>(i * N + j)] * v[static_cast<std::size_t>(j * S + d)];
            equal = equal && o[static_cast<std::size_t>(i * D + d)] == want;
          }
        BOOST_TEST(equal);
      }
    }
}

// The column offset the dK/dV and dQ kernels apply for a column split (B tile starting at column
// c0 of a wider tile) gives that slice of the product.
BOOST_AUTO_TEST_CASE(column_split_products) {
  std::mt19937 rng(9);
  const int D = 256, S = plan::tc_stride(D), K = 32, half = 128;
  const auto a = random_small_ints(rng, static_cast<std::size_t>(16 * S));
  const auto b = random_small_ints(rng, static_cast<std::size_t>(K * S));
  const auto p = gemm_nt(a, b, S, D, K);
  const auto pm = from_c_frags(p, K);
  for (const int c0 : {0, half}) {
    std::vector<double> shifted(b.size());
    for (int r = 0; r < K; ++r)
      for (int c = 0; c < S - c0; ++c) shifted[static_cast<std::size_t>(r * S + c)] = b[static_cast<std::size_t>(r * S + c0 + c)];
    const auto o = from_c_frags(gemm_pn(p, shifted, S, K, half), half);
    bool equal = true;
    for (int i = 0; i < 16; ++i)
      for (int d = 0; d < half; ++d) {
        double want = 0;
        for (int j = 0; j < K; ++j) want += pm[static_cast<std::size_t>(i * K + j)] * b[static_cast<std::size_t>(j * S + c0 + d)];
        equal = equal && o[static_cast<std::size_t>(i * half + d)] == want;
      }
    BOOST_TEST(equal, "c0 " << c0);
  }
}

BOOST_AUTO_TEST_CASE(shared_memory_accesses_are_conflict_free) {
  for (const int D : buckets) {
    const int row_bytes = plan::tc_stride(D) * 2;
    // ldmatrix: each of the 4 matrices is one phase of 8 row addresses.
    for (int kk = 0; kk < D / 16; ++kk)
      for (int matrix = 0; matrix < 4; ++matrix) {
        std::array<int, 8> a{}, bn{}, bt{};
        for (int row = 0; row < 8; ++row) {
          const int lane = 8 * matrix + row;
          a[static_cast<std::size_t>(row)] =
              plan::ldmatrix_x4::a_row(lane) * row_bytes + (kk * 16 + plan::ldmatrix_x4::a_col(lane)) * 2;
          bn[static_cast<std::size_t>(row)] =
              plan::ldmatrix_x4::bn_row(lane) * row_bytes + (kk * 16 + plan::ldmatrix_x4::bn_col(lane)) * 2;
          bt[static_cast<std::size_t>(row)] =
              (kk * 16 + plan::ldmatrix_x4::bt_row(lane)) * row_bytes + plan::ldmatrix_x4::bt_col(lane) * 2;
        }
        BOOST_TEST(conflict_free(a), "D " << D << " kk " << kk << " matrix " << matrix);
        BOOST_TEST(conflict_free(bn), "D " << D << " kk " << kk << " matrix " << matrix);
        BOOST_TEST(conflict_free(bt), "D " << D << " kk " << kk << " matrix " << matrix);
      }
    // cp.async: 8 consecutive threads' 16-byte chunks form one 128-byte wavefront.
    for (int first = 0; first < 64 * D / 8; first += 8) {
      std::array<int, 8> offsets{};
      for (int t = 0; t < 8; ++t)
        offsets[static_cast<std::size_t>(t)] =
            plan::chunk_row(first + t, D) * row_bytes + plan::chunk_col(first + t, D) * 2;
      BOOST_TEST(conflict_free(offsets), "D " << D << " chunk " << first);
    }
    // The chunks of a tile cover it exactly once.
    std::set<std::pair<int, int>> covered;
    for (int c = 0; c < 64 * D / 8; ++c) covered.insert({plan::chunk_row(c, D), plan::chunk_col(c, D)});
    BOOST_TEST(covered.size() == static_cast<std::size_t>(64 * D / 8));
  }
}

// Causal + segment skipping, from both sides (query blocks over key blocks, key blocks over query
// blocks), against brute force over random lengths, block sizes and segment ids.
BOOST_AUTO_TEST_CASE(block_visiting_is_exact_where_it_matters) {
  std::mt19937 rng(11);
  const std::pair<int, int> blocks[] = {{128, 64}, {64, 32}, {64, 64}, {32, 32}, {16, 16}, {128, 32}, {32, 16}, {16, 64}};
  for (int trial = 0; trial < 120; ++trial) {
    const int T = std::uniform_int_distribution<int>(1, 300)(rng);
    const int kind = trial % 3;  // none, sorted documents, unsorted ids
    const auto ids = kind == 0 ? std::vector<std::int32_t>{} : random_segments(rng, T, kind == 1);
    const auto chunks = kind == 0 ? std::vector<plan::segment_range>{} : chunk_table(ids, T);
    const plan::segment_range* table = kind == 0 ? nullptr : chunks.data();
    for (const auto& [bm, bn] : blocks) {
      BOOST_TEST_CONTEXT("T " << T << " kind " << kind << " bm " << bm << " bn " << bn) {
        // Query blocks -> key blocks (forward, dQ).
        for (int i0 = 0; i0 < T; i0 += bm) {
          std::vector<int> visited;
          for (int j = plan::next_key_block(table, -1, i0, bm, bn, T); j >= 0; j = plan::next_key_block(table, j, i0, bm, bn, T))
            visited.push_back(j);
          BOOST_TEST_REQUIRE(!visited.empty());
          BOOST_TEST(std::is_sorted(visited.begin(), visited.end()));
          BOOST_TEST(visited.back() <= plan::last_key_block(i0, bm, bn, T));
          // The block holding the query block's last real row (the diagonal) is always visited.
          BOOST_TEST(visited.back() == (std::min(i0 + bm, T) - 1) / bn);
          for (int j0 = 0; j0 < T; j0 += bn) {
            const bool is_visited = std::find(visited.begin(), visited.end(), j0 / bn) != visited.end();
            if (tile_has_allowed(i0, bm, j0, bn, T, ids)) BOOST_TEST_REQUIRE(is_visited);
            const auto rel = plan::tile_relation(table, i0, bm, j0, bn, T);
            if (rel == plan::relation::full) BOOST_TEST_REQUIRE(tile_all_allowed(i0, bm, j0, bn, T, ids));
            if (rel == plan::relation::skip) BOOST_TEST_REQUIRE(!tile_has_allowed(i0, bm, j0, bn, T, ids));
            // Without segments the relation is exact.
            if (kind == 0 && j0 <= std::min(i0 + bm, T) - 1)
              BOOST_TEST_REQUIRE((rel == plan::relation::full) == tile_all_allowed(i0, bm, j0, bn, T, ids));
          }
          // Inside a masked tile, the element mask is exactly the brute-force one.
          for (const int j : visited)
            for (int i = i0; i < i0 + bm; ++i)
              for (int jj = j * bn; jj < j * bn + bn; ++jj)
                BOOST_TEST_REQUIRE(plan::allowed(i, jj, T, kind == 0 ? nullptr : ids.data()) == brute_allowed(i, jj, T, ids));
        }
        // Key blocks -> (head, query block) steps (dK/dV, key mass), a group of 3 heads.
        const int group = 3, q_blocks = static_cast<int>(plan::blocks_of(T, bm));
        for (int j0 = 0; j0 < T; j0 += bn) {
          std::vector<int> steps;
          for (int s = plan::next_query_step(table, -1, group, j0, bn, bm, T); s >= 0;
               s = plan::next_query_step(table, s, group, j0, bn, bm, T))
            steps.push_back(s);
          BOOST_TEST(std::is_sorted(steps.begin(), steps.end()));
          BOOST_TEST((std::adjacent_find(steps.begin(), steps.end()) == steps.end()));
          for (int h = 0; h < group; ++h)
            for (int qb = 0; qb < q_blocks; ++qb) {
              const bool is_visited = std::find(steps.begin(), steps.end(), h * q_blocks + qb) != steps.end();
              if (tile_has_allowed(qb * bm, bm, j0, bn, T, ids)) BOOST_TEST_REQUIRE(is_visited);
              if (is_visited) BOOST_TEST_REQUIRE(qb >= plan::first_query_block(j0, bm));
            }
          BOOST_TEST(!steps.empty());  // every real key attends at least its own query
        }
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(causal_tiles_without_segments) {
  // Without segment ids the forward visits exactly the causal tiles: sum over query blocks of
  // (last key block + 1).
  for (const int T : {1, 15, 64, 65, 511, 512, 4097}) {
    const auto f = plan::tc_forward_config(128);
    long long visited = 0, expected = 0;
    for (int i0 = 0; i0 < T; i0 += f.block_m) {
      for (int j = plan::next_key_block(nullptr, -1, i0, f.block_m, f.block_n, T); j >= 0;
           j = plan::next_key_block(nullptr, j, i0, f.block_m, f.block_n, T))
        ++visited;
      expected += (std::min(i0 + f.block_m, T) - 1) / f.block_n + 1;
    }
    BOOST_TEST(visited == expected, "T " << T);
  }
}

BOOST_AUTO_TEST_CASE(grids_and_head_maps_are_bijections) {
  for (const int heads : {1, 3, 16})
    for (const int split : {1, 2})
      for (const int batch : {1, 5}) {
        std::set<std::tuple<int, int, int>> seen;
        const auto grid = plan::row_grid(batch, heads, split, 1000, 64);
        BOOST_TEST(grid.fits());
        BOOST_TEST(grid.y == 16);
        for (long long x = 0; x < grid.x; ++x) {
          const auto task = plan::head_task_of(x, heads, split);
          BOOST_TEST_REQUIRE((task.batch >= 0 && task.batch < batch && task.head >= 0 && task.head < heads &&
                              task.split >= 0 && task.split < split));
          seen.insert({task.batch, task.head, task.split});
        }
        BOOST_TEST(seen.size() == static_cast<std::size_t>(batch * heads * split));
      }
  // Heaviest first: blockIdx.y = 0 computes the last row block.
  for (int y = 0; y < 7; ++y) BOOST_TEST(plan::row_block_of(y, 7) == 6 - y);
  BOOST_TEST(!(plan::grid_shape{1, 65536}.fits()));
  // GQA: kv head g serves query heads [g G, (g + 1) G), consecutive heads share a kv head.
  for (const int group : {1, 2, 4, 8})
    for (int h = 0; h < 32; ++h) {
      const int g = plan::kv_head_of(h, group);
      BOOST_TEST(g == h / group);
      BOOST_TEST((plan::first_q_head_of(g, group) <= h && h < plan::first_q_head_of(g, group) + group));
    }
  BOOST_TEST(plan::bthd_offset(1, 2, 3, 10, 4, 8) == ((1 * 10 + 2) * 4 + 3) * 8);
}

BOOST_AUTO_TEST_CASE(flop_counts) {
  // FlashAttention's causal count: 4 B T^2 H D / 2 forward; backward 2.5x.
  BOOST_TEST(plan::causal_forward_flops(1, 16384, 16, 128) == 4.0 * 16384.0 * 16384.0 * 16 * 128 / 2);
  BOOST_TEST(plan::causal_backward_flops(2, 512, 32, 64) == 2.5 * plan::causal_forward_flops(2, 512, 32, 64));
}

BOOST_AUTO_TEST_SUITE_END()
