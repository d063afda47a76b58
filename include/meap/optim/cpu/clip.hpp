// meap/optim/cpu/clip.hpp: the global gradient norm on the host, behind optim/clip.hpp. Its
// CUDA twin is optim/cuda/clip.hpp.
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/parallel.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/backend.hpp>
#include <meap/optim/parameter.hpp>
#include <meap/optim/status.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace meap {

namespace detail {

namespace cpu_impl {

// Gradient elements per partial sum. Chunks are summed in parallel and their partials added in
// chunk order, so the result is the same for any thread count.
inline constexpr index_t norm_chunk = index_t{1} << 14;

// Sum of (g[i] / divisor)^2 in double, four interleaved accumulators (fixed order).
template <bool Divide, class T>
double chunk_sum_of_squares(const T* g, index_t n, double divisor) {
  double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  index_t i = 0;
  const auto load = [&](index_t k) {
    const auto x = static_cast<double>(g[k]);
    if constexpr (Divide) return x / divisor;
    else return x;
  };
  for (; i + 4 <= n; i += 4) {
    const double x0 = load(i), x1 = load(i + 1), x2 = load(i + 2), x3 = load(i + 3);
    a0 += x0 * x0;
    a1 += x1 * x1;
    a2 += x2 * x2;
    a3 += x3 * x3;
  }
  for (; i < n; ++i) {
    const double x = load(i);
    a0 += x * x;
  }
  return (a0 + a1) + (a2 + a3);
}

template <bool Divide, class T>
double sum_of_squares(const T* g, index_t n, double divisor) {
  const index_t chunks = (n + norm_chunk - 1) / norm_chunk;
  if (chunks <= 1) return chunk_sum_of_squares<Divide>(g, n, divisor);
  std::vector<double> partial(static_cast<std::size_t>(chunks));
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
  for (index_t c = 0; c < chunks; ++c) {
    const index_t begin = c * norm_chunk;
    partial[static_cast<std::size_t>(c)] =
        chunk_sum_of_squares<Divide>(g + begin, std::min(norm_chunk, n - begin), divisor);
  }
  double total = 0;
  for (const double x : partial) total += x;
  return total;
}

template <class T>
std::optional<nonfinite_gradient> find_nonfinite(std::span<const named_parameter<T, cpu>> params) {
  for (std::size_t k = 0; k < params.size(); ++k) {
    const T* g = params[k].grad.data();
    for (index_t i = 0, n = params[k].grad.numel(); i < n; ++i)
      if (!std::isfinite(g[i])) return nonfinite_gradient{params[k].name, k, i, static_cast<double>(g[i])};
  }
  return std::nullopt;
}

// The global norm; NaN/inf when a gradient is non-finite. The plain sum of squares can overflow
// only for double gradients beyond ~1e154; then the norm is recomputed with every element divided
// by the largest magnitude first (as LAPACK's dnrm2 does), so finite gradients give a finite norm.
template <class T>
double global_norm(std::span<const named_parameter<T, cpu>> params) {
  double total = 0;
  for (const auto& p : params) total += sum_of_squares<false>(p.grad.data(), p.grad.numel(), 1.0);
  if (std::isfinite(total)) return std::sqrt(total);
  if (find_nonfinite(params)) return total;  // NaN (from a NaN) or +inf (from an inf)
  double largest = 0;
  for (const auto& p : params)
    for (index_t i = 0, n = p.grad.numel(); i < n; ++i)
      largest = std::max(largest, std::abs(static_cast<double>(p.grad.data()[i])));
  double scaled = 0;
  for (const auto& p : params) scaled += sum_of_squares<true>(p.grad.data(), p.grad.numel(), largest);
  return largest * std::sqrt(scaled);
}

}  // namespace cpu_impl

// The norm of one flat buffer, as global_norm computes it for a list.
template <class T>
double flat_norm(const T* g, index_t n) {
  const double total = cpu_impl::sum_of_squares<false>(g, n, 1.0);
  if (std::isfinite(total)) return std::sqrt(total);
  double largest = 0;
  for (index_t i = 0; i < n; ++i) {
    if (!std::isfinite(static_cast<double>(g[i]))) return total;  // NaN (from a NaN) or +inf (from an inf)
    largest = std::max(largest, std::abs(static_cast<double>(g[i])));
  }
  return largest * std::sqrt(cpu_impl::sum_of_squares<true>(g, n, largest));
}

// What clip_factor() decides, from the unscaled norm, the loss, and whether a deferred check
// failed; shared by both backends' final step (the CUDA one runs it in a kernel).
MEAP_HOST_DEVICE inline void decide_update(double* values, double norm, double max_norm, double loss_scale,
                                           bool checks_passed) {
  // x - x is 0 exactly when x is finite (inf - inf and NaN - NaN are NaN), on host and device alike.
  const double loss = values[static_cast<int>(status_value::loss)];
  const bool update = checks_passed && norm - norm == 0.0 && loss - loss == 0.0;
  const double clip = update ? (max_norm / (norm + 1e-6) < 1.0 ? max_norm / (norm + 1e-6) : 1.0) : 1.0;
  values[static_cast<int>(status_value::grad_norm)] = norm;
  values[static_cast<int>(status_value::grad_factor)] = clip / loss_scale;
  values[static_cast<int>(status_value::update)] = update ? 1.0 : 0.0;
}

template <>
struct clip_kernels<cpu> {
  template <class T>
  static double norm(const cpu&, std::span<const named_parameter<T, cpu>> params) {
    return cpu_impl::global_norm(params);
  }
  template <class T>
  static void scale(const cpu&, std::span<const named_parameter<T, cpu>> params, double scale) {
    const auto factor = static_cast<T>(scale);
    for (const auto& p : params) {
      T* g = p.grad.data();
      const index_t n = p.grad.numel();
      MEAP_OMP(omp parallel for schedule(static) if (n >= 32768))
      for (index_t i = 0; i < n; ++i) g[i] *= factor;
    }
  }
  template <class T>
  static std::optional<nonfinite_gradient> first_nonfinite(const cpu&, std::span<const named_parameter<T, cpu>> params) {
    return cpu_impl::find_nonfinite(params);
  }
  template <class T>
  static void factor(const cpu&, const tensor_view<const T, cpu>& grads, double max_norm, double loss_scale,
                     const step_status<cpu>& status) {
    bool checks_passed = true;
    const index_t words = status.checks.rank() != 0 ? status.checks.numel() : 0;  // a default view: no checks
    for (index_t i = 0; i < words; ++i) checks_passed &= status.checks.data()[i] == deferred_none;
    const double scaled_norm = flat_norm(grads.data(), grads.numel());
    decide_update(status.values.data(), scaled_norm / loss_scale, max_norm, loss_scale, checks_passed);
  }
  template <class T>
  static void sum_of_squares(const cpu&, const tensor_view<const T, cpu>& grads, double* sum) {
    *sum = cpu_impl::sum_of_squares<false>(grads.data(), grads.numel(), 1.0);
  }
  static void factor_from_sums(const cpu&, const double* sums, index_t count, double max_norm, double loss_scale,
                               const step_status<cpu>& status) {
    bool checks_passed = true;
    const index_t words = status.checks.rank() != 0 ? status.checks.numel() : 0;
    for (index_t i = 0; i < words; ++i) checks_passed &= status.checks.data()[i] == deferred_none;
    double total = 0;
    for (index_t i = 0; i < count; ++i) total += sums[i];
    decide_update(status.values.data(), std::sqrt(total) / loss_scale, max_norm, loss_scale, checks_passed);
  }
};

}  // namespace detail

}  // namespace meap
