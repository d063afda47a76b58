// meap/kernels/cpu/cross_entropy.hpp: selective cross-entropy on the host, plain and fused with
// the LM head. Implementations behind <meap/kernels/cross_entropy.hpp>; inputs are trusted.
//
// Per selected row with logits z (V), label y, lse L = log sum_j exp z_j, smoothing eps and
// z-loss weight lambda:
//   loss_row = (1 - eps) (L - z_y) + eps (L - mean_j z_j) + lambda L^2
//   dloss_row / dz_j = p_j (1 + 2 lambda L) - (1 - eps) [j = y] - eps / V,   p = softmax(z)
// The loss is the mean over selected rows, so each row's gradient is scaled by 1 / n_selected.
#pragma once

#include <meap/core/deferred_checks.hpp>
#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/labels.hpp>
#include <meap/core/parallel.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/backend.hpp>
#include <meap/kernels/cpu/convert.hpp>
#include <meap/kernels/cpu/gemm.hpp>
#include <meap/kernels/options.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string_view>
#include <type_traits>
#include <vector>

namespace meap::detail::cpu_impl {

struct cross_entropy_settings {
  double label_smoothing = 0.0;
  double z_loss = 0.0;
  double normalizer = 0.0;      // 0: the number of selected rows
  double gradient_scale = 1.0;  // multiplies the gradients only
};

// The factor each selected row's dloss/dz is multiplied by: gradient_scale / normalizer. The
// default (the mean, unscaled) is computed as 1 / n in A, as it always was.
template <class A>
A row_weight(index_t selected, const cross_entropy_settings& cfg) {
  if (selected == 0) return A(0);
  if (cfg.normalizer == 0.0 && cfg.gradient_scale == 1.0) return A(1) / static_cast<A>(selected);
  const double n = cfg.normalizer == 0.0 ? static_cast<double>(selected) : cfg.normalizer;
  return static_cast<A>(cfg.gradient_scale / n);
}

// One selected row: its loss, and (gradient) dloss_row/dz * weight written over z in place.
// z holds the row's logits (V) in the accumulate type. exp() runs once per entry: the softmax
// numerators exp(z - max) stay in z and are rescaled into p by 1 / sum.
template <class A, class Row>
double row_loss_and_gradient(Row&& z, std::int32_t label, A weight, const cross_entropy_settings& cfg, bool gradient) {
  const index_t vocab = z.cols();
  const A target = z(label);
  const A max = z.maxCoeff();
  const A sum = cfg.label_smoothing != 0.0 ? z.sum() : A(0);
  z = (z.array() - max).exp().matrix();
  const A sum_exp = z.sum();
  const A lse = max + std::log(sum_exp);
  const double L = static_cast<double>(lse);
  const double mean = static_cast<double>(sum) / static_cast<double>(vocab);
  const double loss = (1.0 - cfg.label_smoothing) * (L - static_cast<double>(target)) +
                      cfg.label_smoothing * (L - mean) + cfg.z_loss * L * L;
  if (gradient) {
    const A p_scale = weight * (A(1) + A(2 * cfg.z_loss) * lse) / sum_exp;
    const A uniform = weight * A(cfg.label_smoothing / static_cast<double>(vocab));
    z = (z.array() * p_scale - uniform).matrix();
    z(label) -= weight * A(1.0 - cfg.label_smoothing);
  }
  return loss;
}

// Plain version. logits: (N, V), labels: (N), d_logits: (N, V) or null (ignored rows get 0).
// Returns the summed loss over selected rows; `selected` gets their count.
template <class A, class T>
double cross_entropy(const T* logits, const std::int32_t* labels, index_t rows, index_t vocab,
                     const cross_entropy_settings& cfg, std::int32_t ignore, T* d_logits, index_t& selected) {
  selected = 0;
  for (index_t r = 0; r < rows; ++r) selected += labels[r] != ignore;
  const A weight = row_weight<A>(selected, cfg);
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
      losses[static_cast<std::size_t>(r)] = row_loss_and_gradient<A>(z, labels[r], weight, cfg, grad != nullptr);
      if (grad != nullptr)
        for (index_t j = 0; j < vocab; ++j) grad[j] = static_cast<T>(z(j));
    }
  }
  double total = 0;  // summed in row order: the same result for any thread count
  for (double x : losses) total += x;
  return total;
}

// Selected rows per block of the fused version: the block's logits (rows x V in A) are about
// 16 MiB in float, small enough for a last-level cache and never the whole (N, V) matrix, while
// every GEMM keeps at least 64 rows.
inline index_t cross_entropy_block_rows(index_t vocab) {
  return std::clamp<index_t>((index_t{1} << 22) / std::max<index_t>(vocab, 1), 64, 1024);
}

// Fused with the LM head: logits = hidden W^T are never stored whole. hidden: (N, d),
// weight: (V, d), labels: (N). d_hidden: (N, d) of A or null; d_weight: (V, d) of A or null, both
// overwritten (d_weight: added to when accumulate_dw). Only selected rows are gathered, so the cost
// is O(n_selected * V * d).
// Per block of selected rows H_b (n_b, d), three GEMMs over the whole vocabulary:
//   Z = H_b W^T (n_b, V);  Z <- dL/dZ row by row;  dW += Z^T H_b;  dH_b = Z W.
// Returns the summed loss; `selected` gets the row count.
template <class A, class T>
double linear_cross_entropy(const T* hidden, const T* weight, const std::int32_t* labels, index_t rows,
                            index_t width, index_t vocab, const cross_entropy_settings& cfg, std::int32_t ignore,
                            A* d_hidden, A* d_weight, index_t& selected, bool accumulate_dw = false) {
  const index_t d = width, V = vocab;
  std::vector<index_t> picked;
  for (index_t r = 0; r < rows; ++r)
    if (labels[r] != ignore) picked.push_back(r);
  selected = static_cast<index_t>(picked.size());
  if (d_hidden != nullptr) std::fill(d_hidden, d_hidden + rows * d, A(0));
  if (d_weight != nullptr && !accumulate_dw) std::fill(d_weight, d_weight + V * d, A(0));
  if (selected == 0) return 0.0;
  const bool gradients = d_hidden != nullptr || d_weight != nullptr;
  const A weight_per_row = row_weight<A>(selected, cfg);

  // The head in A: mapped in place, or widened once (half / bfloat16 weights).
  std::vector<A> widened;
  const A* w = nullptr;
  if constexpr (std::is_same_v<T, A>) {
    w = weight;
  } else {
    widened.resize(static_cast<std::size_t>(V * d));
    MEAP_OMP(omp parallel for schedule(static))
    for (index_t i = 0; i < V * d; ++i) widened[static_cast<std::size_t>(i)] = static_cast<A>(weight[i]);
    w = widened.data();
  }

  const index_t block_rows = std::min(selected, cross_entropy_block_rows(V));
  std::vector<double> losses(static_cast<std::size_t>(selected), 0.0);
  // Eigen-allocated (aligned) buffers: Eigen's vectorized row reductions peel to the first aligned
  // element, so with a fixed base alignment their summation order, and the loss, is reproducible.
  using buffer = Eigen::Matrix<A, Eigen::Dynamic, 1>;
  buffer h(block_rows * d), z(block_rows * V), dh(d_hidden != nullptr ? block_rows * d : 0);
  for (index_t r0 = 0; r0 < selected; r0 += block_rows) {
    const index_t nr = std::min(block_rows, selected - r0);
    const index_t* block = picked.data() + r0;
    MEAP_OMP(omp parallel for schedule(static) if (nr * d > 65536))
    for (index_t r = 0; r < nr; ++r)
      for (index_t c = 0; c < d; ++c) h(r * d + c) = static_cast<A>(hidden[block[r] * d + c]);
    gemm<A>(transpose::no, transpose::yes, nr, V, d, A(1), h.data(), d, w, d, A(0), z.data(), V);
    MEAP_OMP(omp parallel for schedule(static))
    for (index_t r = 0; r < nr; ++r) {
      Eigen::Map<Eigen::Matrix<A, 1, Eigen::Dynamic>> row(z.data() + r * V, V);
      losses[static_cast<std::size_t>(r0 + r)] =
          row_loss_and_gradient<A>(row, labels[block[r]], weight_per_row, cfg, gradients);
    }
    if (d_weight != nullptr)
      gemm<A>(transpose::yes, transpose::no, V, d, nr, A(1), z.data(), V, h.data(), d, A(1), d_weight, d);
    if (d_hidden != nullptr) {
      gemm<A>(transpose::no, transpose::no, nr, d, V, A(1), z.data(), V, w, d, A(0), dh.data(), d);
      MEAP_OMP(omp parallel for schedule(static) if (nr * d > 65536))
      for (index_t r = 0; r < nr; ++r)
        std::copy_n(dh.data() + r * d, d, d_hidden + block[r] * d);
    }
  }
  double total = 0;  // in row order: the same for any thread count
  for (double x : losses) total += x;
  return total;
}

}  // namespace meap::detail::cpu_impl

namespace meap::detail {

// The front doors of kernels/cross_entropy.hpp on the host. Labels are checked here (a scan);
// 16-bit inputs are widened to float and the gradients rounded once.
template <>
struct cross_entropy_kernels<cpu> {
  template <class T>
  static void check_limits(std::string_view, index_t) noexcept {}

  // The first label that is neither ignore_index nor in [0, vocab), and the selected count
  // against options.selected_rows. Returns the count.
  static index_t check_labels(std::string_view function, const tensor_view<const std::int32_t, cpu>& labels,
                              index_t vocab, const std::optional<index_t>& expected) {
    const std::int32_t* p = labels.data();
    index_t selected = 0;
    for (index_t r = 0, n = labels.numel(); r < n; ++r) {
      if (p[r] == ignore_index) continue;
      if (p[r] < 0 || p[r] >= vocab) throw_invalid_label(function, r, p[r], vocab);
      ++selected;
    }
    if (expected && *expected != selected) throw_wrong_selected_rows(function, *expected, selected);
    return selected;
  }

  static cpu_impl::cross_entropy_settings settings(const cross_entropy_options<cpu>& options) {
    return {options.label_smoothing, options.z_loss, options.normalizer, options.gradient_scale};
  }

  static cross_entropy_result finish(double total, index_t selected, const cross_entropy_options<cpu>& options) {
    cross_entropy_result result;
    result.selected = selected;
    const double normalizer = options.normalizer != 0.0 ? options.normalizer : static_cast<double>(selected);
    result.loss = selected > 0 ? total / normalizer : 0.0;
    if (options.loss_sum.rank() != 0) {
      options.loss_sum.data()[0] += result.loss;
      options.loss_sum.data()[1] += static_cast<double>(selected);
    }
    return result;
  }

  template <class T>
  static cross_entropy_result plain(const cpu&, std::string_view function, const tensor_view<const T, cpu>& logits,
                                    const tensor_view<const std::int32_t, cpu>& labels,
                                    const tensor_view<T, cpu>& d_logits, const cross_entropy_options<cpu>& options) {
    (void)check_labels(function, labels, logits.size(1), options.selected_rows);
    index_t selected = 0;
    const double total = cpu_impl::cross_entropy<accumulate_t<T>>(
        logits.data(), labels.data(), logits.size(0), logits.size(1), settings(options), ignore_index,
        d_logits.rank() != 0 ? d_logits.data() : nullptr, selected);
    return finish(total, selected, options);
  }

  template <class T, class G>
  static cross_entropy_result fused(const cpu&, std::string_view function, const tensor_view<const T, cpu>& hidden,
                                    const tensor_view<const T, cpu>& weight,
                                    const tensor_view<const std::int32_t, cpu>& labels,
                                    const tensor_view<T, cpu>& d_hidden, const tensor_view<G, cpu>& d_weight,
                                    const cross_entropy_options<cpu>& options) {
    using A = accumulate_t<T>;
    (void)check_labels(function, labels, weight.size(0), options.selected_rows);
    const bool accumulate = options.d_weight_write == gradient_write::accumulate;
    std::optional<cpu_impl::narrowed<A, T>> dh;
    std::optional<cpu_impl::narrowed<A, G>> dw;
    if (d_hidden.rank() != 0) dh.emplace(d_hidden);
    if (d_weight.rank() != 0) {
      dw.emplace(d_weight);
      if constexpr (!std::is_same_v<G, A>)  // the sum continues from the caller's 16-bit values
        if (accumulate) cpu_impl::convert(d_weight.data(), dw->data(), d_weight.numel());
    }
    index_t selected = 0;
    const double total = cpu_impl::linear_cross_entropy<A>(
        hidden.data(), weight.data(), labels.data(), hidden.size(0), hidden.size(1), weight.size(0), settings(options),
        ignore_index, dh ? dh->data() : nullptr, dw ? dw->data() : nullptr, selected, accumulate);
    if (dh) dh->store();
    if (dw) dw->store();
    return finish(total, selected, options);
  }
};

}  // namespace meap::detail
