// meap/kernels/cpu/attention.hpp: causal attention on the host, flash-attention style.
//
// These are the implementations behind <meap/kernels/attention.hpp>; they trust their inputs
// (the front door checks them). Every array is contiguous and already in the accumulate type A
// (float or double): the front door converts half / bfloat16 tensors to float first.
//
// Work is split into query blocks of `block_q` rows and key blocks of `block_k` columns. A block
// of scores S = scale * Q_i K_j^T is one Eigen GEMM on row-major maps over the strided head
// slices; the softmax is online (running max m and sum l per row), so no T x T matrix exists.
// Parallelism: OpenMP over (batch, head, query block) for the forward pass and over (batch, head)
// for the backward pass, so no two threads ever write the same element.
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/dtype.hpp>
#include <meap/core/parallel.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/backend.hpp>
#include <meap/kernels/cpu/convert.hpp>
#include <meap/kernels/cpu/eigen.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace meap::detail::cpu_impl {

template <class A>
using row_matrix = Eigen::Matrix<A, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class A>
using const_rows = Eigen::Map<const row_matrix<A>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class A>
using mutable_rows = Eigen::Map<row_matrix<A>, Eigen::Unaligned, Eigen::OuterStride<>>;

struct attention_shape {
  index_t batch = 0;     // B
  index_t length = 0;    // T
  index_t q_heads = 0;   // Hq
  index_t kv_heads = 0;  // Hkv
  index_t head_dim = 0;  // D

  index_t group() const { return q_heads / kv_heads; }
};

// 64 x 64 score blocks: Q_i (64 x D <= 256) and the two key blocks stay in L2 and the GEMMs are
// still big enough for Eigen's packed kernels.
inline constexpr index_t attention_block_q = 64;
inline constexpr index_t attention_block_k = 64;

// Which (query, key) pairs of a block may interact: causal, and same segment when ids are given.
struct attention_mask {
  const std::int32_t* segments = nullptr;  // (T) for this batch row, or nullptr

  bool allowed(index_t query, index_t key) const {
    return key <= query && (segments == nullptr || segments[key] == segments[query]);
  }
  // True when some pair of the block [i0, i0 + nq) x [j0, j0 + nk) is allowed.
  bool any(index_t i0, index_t nq, index_t j0, index_t nk) const {
    if (j0 > i0 + nq - 1) return false;
    if (segments == nullptr) return true;
    for (index_t r = 0; r < nq; ++r)
      for (index_t c = 0; c < nk && j0 + c <= i0 + r; ++c)
        if (segments[j0 + c] == segments[i0 + r]) return true;
    return false;
  }
  // True when every pair is allowed, so the block needs no masking at all.
  bool all(index_t i0, index_t nq, index_t j0, index_t nk) const {
    if (j0 + nk - 1 > i0) return false;
    if (segments == nullptr) return true;
    const std::int32_t id = segments[i0];
    for (index_t t = j0; t < i0 + nq; ++t)
      if (segments[t] != id) return false;
    return true;
  }
};

// P = exp(S - shift_r) on the allowed pairs and exactly 0 elsewhere. Entries that are masked are
// first pushed to -inf so a caller's row max ignores them; they are zeroed again after exp()
// because Eigen's vectorized exp clamps its argument and would leave a tiny positive value.
template <class Block>
void mask_to_minus_infinity(Block& s, const attention_mask& mask, index_t i0, index_t j0) {
  using A = typename Block::Scalar;
  for (index_t r = 0; r < s.rows(); ++r)
    for (index_t c = 0; c < s.cols(); ++c)
      if (!mask.allowed(i0 + r, j0 + c)) s(r, c) = -std::numeric_limits<A>::infinity();
}
template <class Block>
void zero_masked(Block& p, const attention_mask& mask, index_t i0, index_t j0) {
  for (index_t r = 0; r < p.rows(); ++r)
    for (index_t c = 0; c < p.cols(); ++c)
      if (!mask.allowed(i0 + r, j0 + c)) p(r, c) = 0;
}

// Forward pass. With `v` and `out` null it computes only the log-sum-exp (the probe needs it).
// q: (B, T, Hq, D)  k, v: (B, T, Hkv, D)  segments: (B, T) or null
// out: (B, T, Hq, D)  lse: (B, Hq, T), natural log of sum_k exp(scale * q.k) over allowed keys
template <class A>
void attention_forward(const attention_shape& s, const A* q, const A* k, const A* v,
                       const std::int32_t* segments, A scale, A* out, A* lse) {
  const index_t T = s.length, D = s.head_dim, Hq = s.q_heads, Hkv = s.kv_heads;
  const index_t q_blocks = (T + attention_block_q - 1) / attention_block_q;
  const index_t tasks = s.batch * Hq * q_blocks;
  const bool with_values = v != nullptr;
  MEAP_OMP(omp parallel)
  {
    row_matrix<A> scores(attention_block_q, attention_block_k);
    row_matrix<A> acc(attention_block_q, with_values ? D : 1);
    std::vector<A> m(attention_block_q), l(attention_block_q);
    // Dynamic scheduling, latest (most expensive) query blocks first: causal rows cost ~ i.
    MEAP_OMP(omp for schedule(dynamic, 1))
    for (index_t task = 0; task < tasks; ++task) {
      const index_t qb = q_blocks - 1 - task % q_blocks;
      const index_t h = (task / q_blocks) % Hq;
      const index_t b = task / (q_blocks * Hq);
      const index_t hk = h / s.group();
      const index_t i0 = qb * attention_block_q;
      const index_t nq = std::min(attention_block_q, T - i0);
      const attention_mask mask{segments != nullptr ? segments + b * T : nullptr};
      const const_rows<A> qi(q + ((b * T + i0) * Hq + h) * D, nq, D, Eigen::OuterStride<>(Hq * D));
      std::fill(m.begin(), m.end(), -std::numeric_limits<A>::infinity());
      std::fill(l.begin(), l.end(), A(0));
      if (with_values) acc.topRows(nq).setZero();
      for (index_t j0 = 0; j0 < i0 + nq; j0 += attention_block_k) {
        const index_t nk = std::min(attention_block_k, i0 + nq - j0);
        if (!mask.any(i0, nq, j0, nk)) continue;
        const bool full = mask.all(i0, nq, j0, nk);
        const const_rows<A> kj(k + ((b * T + j0) * Hkv + hk) * D, nk, D, Eigen::OuterStride<>(Hkv * D));
        auto sb = scores.topLeftCorner(nq, nk);
        sb.noalias() = scale * (qi * kj.transpose());
        if (!full) mask_to_minus_infinity(sb, mask, i0, j0);
        for (index_t r = 0; r < nq; ++r) {
          const A block_max = sb.row(r).maxCoeff();
          if (block_max == -std::numeric_limits<A>::infinity()) {  // nothing allowed in this row yet
            sb.row(r).setZero();
            continue;
          }
          const A m_new = std::max(m[r], block_max);
          const A alpha = std::exp(m[r] - m_new);  // exp(-inf) = 0 on the first allowed block
          sb.row(r) = (sb.row(r).array() - m_new).exp().matrix();
          if (!full)
            for (index_t c = 0; c < nk; ++c)
              if (!mask.allowed(i0 + r, j0 + c)) sb(r, c) = 0;
          l[r] = alpha * l[r] + sb.row(r).sum();
          m[r] = m_new;
          if (with_values && alpha != A(1)) acc.row(r) *= alpha;
        }
        if (with_values) {
          const const_rows<A> vj(v + ((b * T + j0) * Hkv + hk) * D, nk, D, Eigen::OuterStride<>(Hkv * D));
          acc.topRows(nq).noalias() += sb * vj;
        }
      }
      // Every query may attend to itself, so l > 0 and m is finite for every row.
      for (index_t r = 0; r < nq; ++r) lse[(b * Hq + h) * T + i0 + r] = m[r] + std::log(l[r]);
      if (with_values) {
        mutable_rows<A> oi(out + ((b * T + i0) * Hq + h) * D, nq, D, Eigen::OuterStride<>(Hq * D));
        for (index_t r = 0; r < nq; ++r) oi.row(r) = acc.row(r) / l[r];
      }
    }
  }
}

// delta[b, h, t] = sum_d dO[b, t, h, d] * O[b, t, h, d]   (B, Hq, T)
template <class A>
void attention_delta(const attention_shape& s, const A* out, const A* d_out, A* delta) {
  const index_t T = s.length, D = s.head_dim, Hq = s.q_heads;
  const index_t rows = s.batch * T * Hq;
  MEAP_OMP(omp parallel for schedule(static))
  for (index_t row = 0; row < rows; ++row) {  // row = (b * T + t) * Hq + h
    const index_t h = row % Hq, t = (row / Hq) % T, b = row / (Hq * T);
    A sum = 0;
    for (index_t d = 0; d < D; ++d) sum += d_out[row * D + d] * out[row * D + d];
    delta[(b * Hq + h) * T + t] = sum;
  }
}

// One (query block, key block) tile of the backward pass, recomputed from lse:
//   P = exp(scale * Q K^T - lse) (masked), dP = dO V^T, dS = P o (dP - delta).
template <class A>
struct attention_tile {
  row_matrix<A> p{attention_block_q, attention_block_k};
  row_matrix<A> ds{attention_block_q, attention_block_k};

  template <class Q, class K, class V, class DO>
  void compute(const Q& qi, const K& kj, const V& vj, const DO& doi, const A* lse_i, const A* delta_i, A scale,
               const attention_mask& mask, index_t i0, index_t j0) {
    const index_t nq = qi.rows(), nk = kj.rows();
    auto pb = p.topLeftCorner(nq, nk);
    auto dsb = ds.topLeftCorner(nq, nk);
    pb.noalias() = scale * (qi * kj.transpose());
    for (index_t r = 0; r < nq; ++r) pb.row(r) = (pb.row(r).array() - lse_i[r]).exp().matrix();
    if (!mask.all(i0, nq, j0, nk)) zero_masked(pb, mask, i0, j0);
    dsb.noalias() = doi * vj.transpose();
    for (index_t r = 0; r < nq; ++r)
      dsb.row(r) = (pb.row(r).array() * (dsb.row(r).array() - delta_i[r])).matrix();
  }
};

// Backward pass: dq (B, T, Hq, D), dk and dv (B, T, Hkv, D), each overwritten. dk and dv sum over
// the Hq / Hkv query heads that share a kv head.
//   dV_j = sum_i P_ij^T dO_i      dQ_i = scale * sum_j dS_ij K_j      dK_j = scale * sum_i dS_ij^T Q_i
// One pass over the causal tiles: each tile's P and dS are computed once and feed all three
// products (five block GEMMs per tile). One task per (b, query head) owns that head's dQ and its
// own dK, dV contributions; with grouped heads (Hq > Hkv) those go to a per-head scratch summed
// over the group afterwards in head order, so the result does not depend on the thread count.
template <class A>
void attention_backward(const attention_shape& s, const A* q, const A* k, const A* v, const A* out, const A* lse,
                        const A* d_out, const std::int32_t* segments, A scale, A* dq, A* dk, A* dv) {
  const index_t B = s.batch, T = s.length, D = s.head_dim, Hq = s.q_heads, Hkv = s.kv_heads, G = s.group();
  std::vector<A> delta(static_cast<std::size_t>(B * Hq * T));
  attention_delta(s, out, d_out, delta.data());
  const index_t k_blocks = (T + attention_block_k - 1) / attention_block_k;
  const Eigen::OuterStride<> q_stride(Hq * D), kv_stride(Hkv * D);
  // Per-head dK, dV, (B, Hq, T, D), only when heads are grouped.
  std::vector<A> dk_heads(G > 1 ? static_cast<std::size_t>(B * Hq * T * D) : 0);
  std::vector<A> dv_heads(dk_heads.size());
  MEAP_OMP(omp parallel)
  {
    attention_tile<A> tile;
    row_matrix<A> acc_k(attention_block_k, D), acc_v(attention_block_k, D);
    MEAP_OMP(omp for schedule(dynamic, 1))
    for (index_t task = 0; task < B * Hq; ++task) {
      const index_t h = task % Hq, b = task / Hq, hk = h / G;
      const attention_mask mask{segments != nullptr ? segments + b * T : nullptr};
      mutable_rows<A> dq_head(dq + (b * T * Hq + h) * D, T, D, q_stride);
      dq_head.setZero();
      // Where this head's dK, dV rows go: the outputs themselves, or its scratch slice.
      A* dk_head = G > 1 ? dk_heads.data() + (b * Hq + h) * T * D : dk + (b * T * Hkv + hk) * D;
      A* dv_head = G > 1 ? dv_heads.data() + (b * Hq + h) * T * D : dv + (b * T * Hkv + hk) * D;
      const index_t head_stride = G > 1 ? D : Hkv * D;
      const A* lse_h = lse + (b * Hq + h) * T;
      const A* delta_h = delta.data() + (b * Hq + h) * T;
      for (index_t kb = 0; kb < k_blocks; ++kb) {
        const index_t j0 = kb * attention_block_k, nk = std::min(attention_block_k, T - j0);
        const index_t kv_offset = ((b * T + j0) * Hkv + hk) * D;
        const const_rows<A> kj(k + kv_offset, nk, D, kv_stride), vj(v + kv_offset, nk, D, kv_stride);
        auto ak = acc_k.topRows(nk);
        auto av = acc_v.topRows(nk);
        ak.setZero();
        av.setZero();
        for (index_t i0 = (j0 / attention_block_q) * attention_block_q; i0 < T; i0 += attention_block_q) {
          const index_t nq = std::min(attention_block_q, T - i0);
          if (!mask.any(i0, nq, j0, nk)) continue;
          const index_t q_offset = ((b * T + i0) * Hq + h) * D;
          const const_rows<A> qi(q + q_offset, nq, D, q_stride), doi(d_out + q_offset, nq, D, q_stride);
          tile.compute(qi, kj, vj, doi, lse_h + i0, delta_h + i0, scale, mask, i0, j0);
          const auto p = tile.p.topLeftCorner(nq, nk);
          const auto ds = tile.ds.topLeftCorner(nq, nk);
          av.noalias() += p.transpose() * doi;
          ak.noalias() += ds.transpose() * qi;
          dq_head.middleRows(i0, nq).noalias() += ds * kj;
        }
        mutable_rows<A>(dk_head + j0 * head_stride, nk, D, Eigen::OuterStride<>(head_stride)) = scale * ak;
        mutable_rows<A>(dv_head + j0 * head_stride, nk, D, Eigen::OuterStride<>(head_stride)) = av;
      }
      dq_head *= scale;
    }
    if (G > 1) {
      // dK[b, t, hk] = sum over the group's heads, in head order.
      MEAP_OMP(omp for schedule(static))
      for (index_t row = 0; row < B * T * Hkv; ++row) {  // row = (b * T + t) * Hkv + hk
        const index_t hk = row % Hkv, t = (row / Hkv) % T, b = row / (Hkv * T);
        A* dk_row = dk + row * D;
        A* dv_row = dv + row * D;
        std::fill(dk_row, dk_row + D, A(0));
        std::fill(dv_row, dv_row + D, A(0));
        for (index_t h = hk * G; h < (hk + 1) * G; ++h) {
          const A* dk_src = dk_heads.data() + ((b * Hq + h) * T + t) * D;
          const A* dv_src = dv_heads.data() + ((b * Hq + h) * T + t) * D;
          for (index_t c = 0; c < D; ++c) {
            dk_row[c] += dk_src[c];
            dv_row[c] += dv_src[c];
          }
        }
      }
    }
  }
}

// Probe: P[b, h, i, j] = exp(scale * q_i.k_j - lse_i) on allowed pairs, 0 elsewhere.
// probabilities: (B, Hq, T, T) or null; key_mass: (B, Hq, T) = sum_i P[b, h, i, j], or null.
template <class A>
void attention_probe(const attention_shape& s, const A* q, const A* k, const std::int32_t* segments, A scale,
                     A* probabilities, A* key_mass) {
  const index_t B = s.batch, T = s.length, D = s.head_dim, Hq = s.q_heads, Hkv = s.kv_heads;
  std::vector<A> lse(static_cast<std::size_t>(B * Hq * T));
  attention_forward<A>(s, q, k, nullptr, segments, scale, nullptr, lse.data());
  const index_t k_blocks = (T + attention_block_k - 1) / attention_block_k;
  const Eigen::OuterStride<> q_stride(Hq * D), kv_stride(Hkv * D);
  // One task per (b, h, key block): it owns those key columns, so column sums need no atomics.
  MEAP_OMP(omp parallel)
  {
    row_matrix<A> p(attention_block_q, attention_block_k);
    MEAP_OMP(omp for schedule(dynamic, 1))
    for (index_t task = 0; task < B * Hq * k_blocks; ++task) {
      const index_t kb = task % k_blocks, h = (task / k_blocks) % Hq, b = task / (k_blocks * Hq);
      const index_t hk = h / s.group();
      const index_t j0 = kb * attention_block_k, nk = std::min(attention_block_k, T - j0);
      const attention_mask mask{segments != nullptr ? segments + b * T : nullptr};
      const const_rows<A> kj(k + ((b * T + j0) * Hkv + hk) * D, nk, D, kv_stride);
      A* mass = key_mass != nullptr ? key_mass + (b * Hq + h) * T + j0 : nullptr;
      if (mass != nullptr) std::fill(mass, mass + nk, A(0));
      for (index_t i0 = 0; i0 < T; i0 += attention_block_q) {
        const index_t nq = std::min(attention_block_q, T - i0);
        auto pb = p.topLeftCorner(nq, nk);
        if (!mask.any(i0, nq, j0, nk)) {
          pb.setZero();
        } else {
          const const_rows<A> qi(q + ((b * T + i0) * Hq + h) * D, nq, D, q_stride);
          pb.noalias() = scale * (qi * kj.transpose());
          const A* lse_i = lse.data() + (b * Hq + h) * T + i0;
          for (index_t r = 0; r < nq; ++r) pb.row(r) = (pb.row(r).array() - lse_i[r]).exp().matrix();
          if (!mask.all(i0, nq, j0, nk)) zero_masked(pb, mask, i0, j0);
        }
        if (mass != nullptr)
          for (index_t c = 0; c < nk; ++c) mass[c] += pb.col(c).sum();
        if (probabilities != nullptr)
          mutable_rows<A>(probabilities + ((b * Hq + h) * T + i0) * T + j0, nq, nk, Eigen::OuterStride<>(T)) = pb;
      }
    }
  }
}

// Attention of new queries over a key/value cache (generation, no backward).
//   q: (B, Tq, Hq, D)   k, v: (B, S, Hkv, D) the cache   out: (B, Tq, Hq, D)   start: (B)
// Query t of row b sits at position start[b] + t and attends the keys j <= start[b] + t. Scores for
// a block of queries against every key it may see are one GEMM; the softmax is exact per row (the
// block holds the whole row, S <= max_seq keys), so no online rescaling is needed.
struct cached_attention_shape {
  index_t batch = 0;     // B
  index_t queries = 0;   // Tq, new tokens per row
  index_t capacity = 0;  // S, cache slots per row
  index_t q_heads = 0;   // Hq
  index_t kv_heads = 0;  // Hkv
  index_t head_dim = 0;  // D

  index_t group() const { return q_heads / kv_heads; }
};

template <class A>
void attention_forward_cached(const cached_attention_shape& s, const A* q, const A* k, const A* v,
                              const index_t* start, A scale, A* out) {
  const index_t Tq = s.queries, S = s.capacity, D = s.head_dim, Hq = s.q_heads, Hkv = s.kv_heads;
  const index_t q_blocks = (Tq + attention_block_q - 1) / attention_block_q;
  const index_t tasks = s.batch * Hq * q_blocks;
  MEAP_OMP(omp parallel)
  {
    row_matrix<A> scores;
    MEAP_OMP(omp for schedule(dynamic, 1))
    for (index_t task = 0; task < tasks; ++task) {
      const index_t qb = task % q_blocks;
      const index_t h = (task / q_blocks) % Hq;
      const index_t b = task / (q_blocks * Hq);
      const index_t hk = h / s.group();
      const index_t i0 = qb * attention_block_q;
      const index_t nq = std::min(attention_block_q, Tq - i0);
      const index_t keys = start[b] + i0 + nq;  // the last query of the block sees keys [0, keys)
      const const_rows<A> qi(q + ((b * Tq + i0) * Hq + h) * D, nq, D, Eigen::OuterStride<>(Hq * D));
      const const_rows<A> kb(k + (b * S * Hkv + hk) * D, keys, D, Eigen::OuterStride<>(Hkv * D));
      const const_rows<A> vb(v + (b * S * Hkv + hk) * D, keys, D, Eigen::OuterStride<>(Hkv * D));
      scores.resize(nq, keys);
      scores.noalias() = scale * (qi * kb.transpose());
      for (index_t r = 0; r < nq; ++r) {
        const index_t seen = start[b] + i0 + r + 1;  // keys [0, seen) for this query
        auto row = scores.row(r);
        const A row_max = row.head(seen).maxCoeff();
        A sum = 0;
        for (index_t j = 0; j < seen; ++j) sum += (row(j) = std::exp(row(j) - row_max));
        row.head(seen) /= sum;
        row.tail(keys - seen).setZero();
      }
      mutable_rows<A> oi(out + ((b * Tq + i0) * Hq + h) * D, nq, D, Eigen::OuterStride<>(Hq * D));
      oi.noalias() = scores * vb;
    }
  }
}

}  // namespace meap::detail::cpu_impl

namespace meap::detail {

// The front doors of kernels/attention.hpp on the host: 16-bit views are widened to float (and
// outputs rounded once), then the kernels above run in the accumulate type.
template <>
struct attention_kernels<cpu> {
  template <class T>
  static void check_limits(std::string_view, const cpu_impl::attention_shape&) noexcept {}
  template <class T>
  static void check_cached_limits(std::string_view, const cpu_impl::cached_attention_shape&) noexcept {}

  template <class A, class Options>
  static A scale_of(const Options& options, index_t head_dim) {
    return static_cast<A>(options.scale ? *options.scale : 1.0 / std::sqrt(static_cast<double>(head_dim)));
  }
  template <class Options>
  static const std::int32_t* segments_of(const Options& options) {
    return options.segment_ids.rank() != 0 ? options.segment_ids.data() : nullptr;
  }

  template <class T>
  static void forward(const cpu&, std::string_view, const cpu_impl::attention_shape& s,
                      const tensor_view<const T, cpu>& q, const tensor_view<const T, cpu>& k,
                      const tensor_view<const T, cpu>& v, const tensor_view<T, cpu>& out,
                      const tensor_view<accumulate_t<T>, cpu>& lse, const attention_options<cpu>& options) {
    using A = accumulate_t<T>;
    const cpu_impl::widened<A, T> q_a(q), k_a(k), v_a(v);
    const cpu_impl::narrowed<A, T> out_a(out);
    cpu_impl::attention_forward<A>(s, q_a.data(), k_a.data(), v_a.data(), segments_of(options),
                                   scale_of<A>(options, s.head_dim), out_a.data(), lse.data());
    out_a.store();
  }

  template <class T>
  static void backward(const cpu&, std::string_view, const cpu_impl::attention_shape& s,
                       const tensor_view<const T, cpu>& q, const tensor_view<const T, cpu>& k,
                       const tensor_view<const T, cpu>& v, const tensor_view<const T, cpu>& out,
                       const tensor_view<const accumulate_t<T>, cpu>& lse, const tensor_view<const T, cpu>& d_out,
                       const tensor_view<T, cpu>& d_q, const tensor_view<T, cpu>& d_k, const tensor_view<T, cpu>& d_v,
                       const attention_options<cpu>& options) {
    using A = accumulate_t<T>;
    const cpu_impl::widened<A, T> q_a(q), k_a(k), v_a(v), out_a(out), d_out_a(d_out);
    const cpu_impl::narrowed<A, T> d_q_a(d_q), d_k_a(d_k), d_v_a(d_v);
    cpu_impl::attention_backward<A>(s, q_a.data(), k_a.data(), v_a.data(), out_a.data(), lse.data(), d_out_a.data(),
                                    segments_of(options), scale_of<A>(options, s.head_dim), d_q_a.data(),
                                    d_k_a.data(), d_v_a.data());
    d_q_a.store();
    d_k_a.store();
    d_v_a.store();
  }

  template <class T>
  static void forward_cached(const cpu&, std::string_view, const cpu_impl::cached_attention_shape& s,
                             const tensor_view<const T, cpu>& q, const tensor_view<const T, cpu>& k_cache,
                             const tensor_view<const T, cpu>& v_cache, std::span<const index_t> start,
                             const tensor_view<T, cpu>& out, std::optional<double> scale) {
    using A = accumulate_t<T>;
    const cpu_impl::widened<A, T> q_a(q), k_a(k_cache), v_a(v_cache);
    const cpu_impl::narrowed<A, T> out_a(out);
    const A scale_a = static_cast<A>(scale ? *scale : 1.0 / std::sqrt(static_cast<double>(s.head_dim)));
    cpu_impl::attention_forward_cached<A>(s, q_a.data(), k_a.data(), v_a.data(), start.data(), scale_a, out_a.data());
    out_a.store();
  }

  // probabilities (B, Hq, T, T) or key_mass (B, Hq, T), whichever is not null.
  template <class T>
  static void probe(const cpu&, std::string_view, const cpu_impl::attention_shape& s, const tensor_view<const T, cpu>& q,
                    const tensor_view<const T, cpu>& k, accumulate_t<T>* probabilities, accumulate_t<T>* key_mass,
                    const attention_options<cpu>& options) {
    using A = accumulate_t<T>;
    const cpu_impl::widened<A, T> q_a(q), k_a(k);
    cpu_impl::attention_probe<A>(s, q_a.data(), k_a.data(), segments_of(options), scale_of<A>(options, s.head_dim),
                                 probabilities, key_mass);
  }
};

}  // namespace meap::detail
