// meap/optim/clip.hpp: gradient clipping by global L2 norm, and the non-finite gradient report.
//
//   const auto clip = meap::clip_grad_norm(meap::cpu{}, params, 1.0);
//   if (!clip.finite) { report(meap::first_nonfinite_gradient(meap::cpu{}, params)); skip the step; }
//
// As torch.nn.utils.clip_grad_norm_: total_norm = sqrt(sum over all gradient elements of g^2),
// and every gradient is multiplied by scale = min(1, max_norm / (total_norm + 1e-6)). Two
// differences, both deliberate: the sum is accumulated in double in a fixed order (so the norm,
// and therefore the training run, does not depend on the thread count), and a non-finite norm
// leaves the gradients untouched and says so, where PyTorch would multiply them by NaN.
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/error.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/optim/parameter.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace meap {

struct clip_result {
  double total_norm = 0;  // global L2 norm of the gradients before clipping (NaN or inf if non-finite)
  double scale = 1;       // factor the gradients were multiplied by (1: untouched)
  bool finite = true;     // false: some gradient is NaN or inf; nothing was changed, skip the step
};

// Where the first non-finite gradient element is (parameters in list order, elements in
// row-major order).
struct nonfinite_gradient {
  std::string parameter;   // its name
  std::size_t position;    // its index in the parameter list
  index_t index;           // flat (row-major) element index
  double value;            // NaN, +inf or -inf
};

namespace detail {

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

}  // namespace detail

// The global L2 norm of all gradients (NaN or inf when one is non-finite). Nothing is modified.
template <class T>
double grad_norm(const cpu&, std::span<const named_parameter<T, cpu>> params) {
  detail::check_parameters<T>("meap::grad_norm", params);
  return detail::global_norm(params);
}

// Scales all gradients so that their global L2 norm is at most about max_norm (see the top of
// this file). max_norm must be finite and > 0.
template <class T>
clip_result clip_grad_norm(const cpu&, std::span<const named_parameter<T, cpu>> params, double max_norm) {
  constexpr std::string_view function = "meap::clip_grad_norm";
  check_argument(std::isfinite(max_norm) && max_norm > 0, function, "max_norm", max_norm, "a finite value > 0");
  detail::check_parameters<T>(function, params);
  const double norm = detail::global_norm(params);
  if (!std::isfinite(norm)) return {norm, 1.0, false};
  const double scale = std::min(1.0, max_norm / (norm + 1e-6));
  if (scale < 1.0) {
    const auto factor = static_cast<T>(scale);
    for (const auto& p : params) {
      T* g = p.grad.data();
      const index_t n = p.grad.numel();
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (n >= 32768)
#endif
      for (index_t i = 0; i < n; ++i) g[i] *= factor;
    }
  }
  return {norm, scale, true};
}

// The first non-finite gradient element, or nullopt when all are finite: what a trainer prints
// when clip_grad_norm reports finite == false.
template <class T>
std::optional<nonfinite_gradient> first_nonfinite_gradient(const cpu&, std::span<const named_parameter<T, cpu>> params) {
  detail::check_parameters<T>("meap::first_nonfinite_gradient", params);
  return detail::find_nonfinite(params);
}

// The same for a std::vector of parameters (a template cannot deduce T through the conversion
// to std::span).
template <class T>
double grad_norm(const cpu& device, const std::vector<named_parameter<T, cpu>>& params) {
  return grad_norm(device, std::span<const named_parameter<T, cpu>>(params));
}
template <class T>
clip_result clip_grad_norm(const cpu& device, const std::vector<named_parameter<T, cpu>>& params, double max_norm) {
  return clip_grad_norm(device, std::span<const named_parameter<T, cpu>>(params), max_norm);
}
template <class T>
std::optional<nonfinite_gradient> first_nonfinite_gradient(const cpu& device,
                                                           const std::vector<named_parameter<T, cpu>>& params) {
  return first_nonfinite_gradient(device, std::span<const named_parameter<T, cpu>>(params));
}

}  // namespace meap
