// meap/kernels/cpu/cross_entropy.hpp: selective cross-entropy on the host, plain and fused with
// the LM head. Implementations behind <meap/kernels/cross_entropy.hpp>; inputs are trusted.
//
// Per selected row with logits z (V), label y, lse L = log sum_j exp z_j, smoothing eps and
// z-loss weight lambda:
//   loss_row = (1 - eps) (L - z_y) + eps (L - mean_j z_j) + lambda L^2
//   dloss_row / dz_j = p_j (1 + 2 lambda L) - (1 - eps) [j = y] - eps / V,   p = softmax(z)
// The loss is the mean over selected rows, so each row's gradient is scaled by 1 / n_selected.
#pragma once

#include <meap/core/dims.hpp>
#include <meap/kernels/cpu/attention.hpp>  // row_matrix, const_rows
#include <meap/core/parallel.hpp>

#include <meap/kernels/cpu/eigen.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

namespace meap::detail::cpu_impl {

struct cross_entropy_settings {
  double label_smoothing = 0.0;
  double z_loss = 0.0;
};

// Running (max, sum of exp, sum) over one row's logits, mergeable across vocabulary chunks.
template <class A>
struct lse_partial {
  A max = -std::numeric_limits<A>::infinity();
  A sum_exp = 0;
  A sum = 0;

  void merge(const lse_partial& other) {
    if (other.max == -std::numeric_limits<A>::infinity()) return;
    const A m = std::max(max, other.max);
    sum_exp = sum_exp * std::exp(max - m) + other.sum_exp * std::exp(other.max - m);
    max = m;
    sum += other.sum;
  }
  A lse() const { return max + std::log(sum_exp); }
};

template <class A, class Row>
lse_partial<A> row_partial(const Row& z) {
  lse_partial<A> part;
  part.max = z.maxCoeff();
  part.sum_exp = (z.array() - part.max).exp().sum();
  part.sum = z.sum();
  return part;
}

template <class A>
double row_loss(const lse_partial<A>& part, A target_logit, index_t vocab, const cross_entropy_settings& cfg) {
  const double L = static_cast<double>(part.lse());
  const double mean = static_cast<double>(part.sum) / static_cast<double>(vocab);
  return (1.0 - cfg.label_smoothing) * (L - static_cast<double>(target_logit)) + cfg.label_smoothing * (L - mean) +
         cfg.z_loss * L * L;
}

// Turns a row of logits z (columns [c0, c0 + z.cols()) of the vocabulary) into the gradient of
// `weight` * loss_row with respect to z, in place.
template <class A, class Row>
void row_gradient(Row&& z, A lse, index_t c0, std::int32_t label, index_t vocab, A weight,
                  const cross_entropy_settings& cfg) {
  const A p_scale = weight * (A(1) + A(2 * cfg.z_loss) * lse);
  const A uniform = weight * A(cfg.label_smoothing / static_cast<double>(vocab));
  z = ((z.array() - lse).exp() * p_scale - uniform).matrix();
  if (label >= c0 && label < c0 + z.cols()) z(label - c0) -= weight * A(1.0 - cfg.label_smoothing);
}

// Plain version. logits: (N, V), labels: (N), d_logits: (N, V) or null (ignored rows get 0).
// Returns the summed loss over selected rows; `selected` gets their count.
template <class A, class T>
double cross_entropy(const T* logits, const std::int32_t* labels, index_t rows, index_t vocab,
                     const cross_entropy_settings& cfg, std::int32_t ignore, T* d_logits, index_t& selected) {
  selected = 0;
  for (index_t r = 0; r < rows; ++r) selected += labels[r] != ignore;
  const A weight = selected > 0 ? A(1) / static_cast<A>(selected) : A(0);
  std::vector<double> losses(static_cast<std::size_t>(rows), 0.0);
  MEAP_OMP(omp parallel)
  {
    Eigen::Matrix<A, 1, Eigen::Dynamic> z(vocab);
    MEAP_OMP(omp for schedule(static))
    for (index_t r = 0; r < rows; ++r) {
      const T* row = logits + r * vocab;
      T* grad = d_logits != nullptr ? d_logits + r * vocab : nullptr;
      if (labels[r] == ignore) {
        if (grad != nullptr) std::fill(grad, grad + vocab, T(0));
        continue;
      }
      for (index_t j = 0; j < vocab; ++j) z(j) = static_cast<A>(row[j]);
      const auto part = row_partial<A>(z);
      losses[static_cast<std::size_t>(r)] = row_loss<A>(part, z(labels[r]), vocab, cfg);
      if (grad != nullptr) {
        row_gradient<A>(z, part.lse(), 0, labels[r], vocab, weight, cfg);
        for (index_t j = 0; j < vocab; ++j) grad[j] = static_cast<T>(z(j));
      }
    }
  }
  double total = 0;  // summed in row order: the same result for any thread count
  for (double x : losses) total += x;
  return total;
}

// 512 selected rows x 256 vocabulary entries per GEMM tile: the logits tile (512 KiB in float)
// and a weight chunk stay cache-resident while the d-wide products are large enough for Eigen.
inline constexpr index_t cross_entropy_block_rows = 512;
inline constexpr index_t cross_entropy_block_vocab = 256;

// A weight chunk (rows [c0, c0 + n) of W) as A: mapped in place, or widened into `buffer`.
template <class A, class T>
const_rows<A> weight_chunk(const T* weight, index_t c0, index_t n, index_t d, row_matrix<A>& buffer) {
  if constexpr (std::is_same_v<T, A>) {
    return const_rows<A>(weight + c0 * d, n, d, Eigen::OuterStride<>(d));
  } else {
    for (index_t r = 0; r < n; ++r)
      for (index_t c = 0; c < d; ++c) buffer(r, c) = static_cast<A>(weight[(c0 + r) * d + c]);
    return const_rows<A>(buffer.data(), n, d, Eigen::OuterStride<>(buffer.cols()));
  }
}

// Fused with the LM head: logits = hidden W^T are never stored whole. hidden: (N, d),
// weight: (V, d), labels: (N). d_hidden: (N, d) of A or null; d_weight: (V, d) of A or null, both
// overwritten. Only selected rows are gathered, so the cost is O(n_selected * V * d).
// Returns the summed loss; `selected` gets the row count.
template <class A, class T>
double linear_cross_entropy(const T* hidden, const T* weight, const std::int32_t* labels, index_t rows,
                            index_t width, index_t vocab, const cross_entropy_settings& cfg, std::int32_t ignore,
                            A* d_hidden, A* d_weight, index_t& selected) {
  const index_t d = width, V = vocab;
  std::vector<index_t> picked;
  for (index_t r = 0; r < rows; ++r)
    if (labels[r] != ignore) picked.push_back(r);
  selected = static_cast<index_t>(picked.size());
  if (d_hidden != nullptr) std::fill(d_hidden, d_hidden + rows * d, A(0));
  if (d_weight != nullptr) std::fill(d_weight, d_weight + V * d, A(0));
  if (selected == 0) return 0.0;
  const bool gradients = d_hidden != nullptr || d_weight != nullptr;
  const A weight_per_row = A(1) / static_cast<A>(selected);
  const index_t chunks = (V + cross_entropy_block_vocab - 1) / cross_entropy_block_vocab;
  const int threads = max_threads();
  std::vector<double> losses(static_cast<std::size_t>(selected), 0.0);
  row_matrix<A> h(std::min(selected, cross_entropy_block_rows), d);
  std::vector<lse_partial<A>> partials;
  std::vector<A> lse;
  std::vector<row_matrix<A>> dh_partial(d_hidden != nullptr ? static_cast<std::size_t>(threads) : 0);

  for (index_t r0 = 0; r0 < selected; r0 += cross_entropy_block_rows) {
    const index_t nr = std::min(cross_entropy_block_rows, selected - r0);
    const index_t* block = picked.data() + r0;
    auto hb = h.topRows(nr);
    for (index_t r = 0; r < nr; ++r)
      for (index_t c = 0; c < d; ++c) hb(r, c) = static_cast<A>(hidden[block[r] * d + c]);
    partials.assign(static_cast<std::size_t>(chunks * nr), lse_partial<A>{});
    lse.assign(static_cast<std::size_t>(nr), A(0));
    MEAP_OMP(omp parallel)
    {
      row_matrix<A> logits(nr, cross_entropy_block_vocab);
      row_matrix<A> buffer(std::is_same_v<T, A> ? 0 : cross_entropy_block_vocab, d);
      // Pass 1: per-chunk partial log-sum-exp of every row of the block.
      MEAP_OMP(omp for schedule(dynamic, 1))
      for (index_t chunk = 0; chunk < chunks; ++chunk) {
        const index_t c0 = chunk * cross_entropy_block_vocab, nc = std::min(cross_entropy_block_vocab, V - c0);
        const auto w = weight_chunk<A>(weight, c0, nc, d, buffer);
        auto zb = logits.leftCols(nc);
        zb.noalias() = hb * w.transpose();
        for (index_t r = 0; r < nr; ++r) partials[static_cast<std::size_t>(chunk * nr + r)] = row_partial<A>(zb.row(r));
      }
      // Merge the chunks in chunk order (deterministic); the target logit is one dot product.
      MEAP_OMP(omp for schedule(static))
      for (index_t r = 0; r < nr; ++r) {
        lse_partial<A> total;
        for (index_t chunk = 0; chunk < chunks; ++chunk) total.merge(partials[static_cast<std::size_t>(chunk * nr + r)]);
        lse[static_cast<std::size_t>(r)] = total.lse();
        const std::int32_t y = labels[block[r]];
        A target = 0;
        for (index_t c = 0; c < d; ++c) target += hb(r, c) * static_cast<A>(weight[y * d + c]);
        losses[static_cast<std::size_t>(r0 + r)] = row_loss<A>(total, target, V, cfg);
      }
      // Pass 2: recompute each logits chunk, turn it into dL/dz, then
      //   dW[chunk] += G^T H  (the chunk's rows belong to this task alone)
      //   dH += G W[chunk]    (into this thread's partial, summed below)
      if (gradients) {
        row_matrix<A>* dh = nullptr;
        if (d_hidden != nullptr) {
          dh = &dh_partial[static_cast<std::size_t>(thread_index())];
          dh->setZero(nr, d);
        }
        MEAP_OMP(omp for schedule(dynamic, 1))
        for (index_t chunk = 0; chunk < chunks; ++chunk) {
          const index_t c0 = chunk * cross_entropy_block_vocab, nc = std::min(cross_entropy_block_vocab, V - c0);
          const auto w = weight_chunk<A>(weight, c0, nc, d, buffer);
          auto zb = logits.leftCols(nc);
          zb.noalias() = hb * w.transpose();
          for (index_t r = 0; r < nr; ++r)
            row_gradient<A>(zb.row(r), lse[static_cast<std::size_t>(r)], c0, labels[block[r]], V, weight_per_row, cfg);
          if (d_weight != nullptr) mutable_rows<A>(d_weight + c0 * d, nc, d, Eigen::OuterStride<>(d)).noalias() += zb.transpose() * hb;
          if (dh != nullptr) dh->noalias() += zb * w;
        }
        // Sum the threads' partials in thread order, split over rows.
        if (d_hidden != nullptr) {
          const int team = [] {
#if defined(_OPENMP)
            return omp_get_num_threads();
#else
            return 1;
#endif
          }();
          MEAP_OMP(omp for schedule(static))
          for (index_t r = 0; r < nr; ++r) {
            A* out = d_hidden + block[r] * d;
            for (int t = 0; t < team; ++t) {
              const auto& part = dh_partial[static_cast<std::size_t>(t)];
              for (index_t c = 0; c < d; ++c) out[c] += part(r, c);
            }
          }
        }
      }
    }
  }
  double total = 0;
  for (double x : losses) total += x;
  return total;
}

}  // namespace meap::detail::cpu_impl
