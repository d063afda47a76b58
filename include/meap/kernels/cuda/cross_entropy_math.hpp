// meap/kernels/cuda/cross_entropy_math.hpp: the per-element arithmetic of the CUDA cross-entropy
// kernels, in plain C++ (MEAP_HOST_DEVICE), so that the host test (tests/kernels/cuda_plan_test.cpp)
// checks the very functions the kernels call against the CPU twin: the online log-sum-exp (one
// element at a time, and the merge of two partials in any tree), the row loss, and the gradient
// of one logit. expf / logf / fmaxf are glibc's on the host and CUDA's in device code.
#pragma once

#include <meap/core/config.hpp>
#include <meap/core/dims.hpp>

#include <math.h>

namespace meap::detail::cuda_math {

// Log-sum-exp of a set of logits, kept as (max, sum of exp(z - max)), plus their plain sum (the
// mean that label smoothing needs). The empty set is (-inf, 0, 0).
struct lse_partial {
  float max;
  float sum_exp;
  float sum;
};

MEAP_HOST_DEVICE inline lse_partial lse_empty() { return {-INFINITY, 0.0f, 0.0f}; }

// Adds one logit: one exp per element (the running sum is rescaled only when the max grows).
MEAP_HOST_DEVICE inline void lse_add(lse_partial& p, float x, bool want_sum) {
  if (x > p.max) {
    p.sum_exp = p.sum_exp * expf(p.max - x) + 1.0f;  // expf(-inf) = 0 for the first element
    p.max = x;
  } else {
    p.sum_exp += expf(x - p.max);
  }
  if (want_sum) p.sum += x;
}

// The union of two disjoint sets. A side whose max is the result's keeps its sum unscaled, which
// also makes the empty set (-inf, 0) neutral instead of producing exp(-inf - -inf) = NaN.
MEAP_HOST_DEVICE inline lse_partial lse_merge(const lse_partial& a, const lse_partial& b) {
  const float m = fmaxf(a.max, b.max);
  const float sa = a.max == m ? a.sum_exp : a.sum_exp * expf(a.max - m);
  const float sb = b.max == m ? b.sum_exp : b.sum_exp * expf(b.max - m);
  return {m, sa + sb, a.sum + b.sum};
}

// L = max + log(sum_exp) in float (the CPU's lse), and the row loss in double:
//   (1 - eps)(L - z_y) + eps (L - sum / V) + lambda L^2
struct row_loss {
  float lse;
  double loss;
};

MEAP_HOST_DEVICE inline row_loss ce_row_loss(const lse_partial& p, float target, index_t vocab, double smoothing,
                                              double z_loss) {
  const float l = p.max + logf(p.sum_exp);
  const auto L = static_cast<double>(l);
  const double mean = static_cast<double>(p.sum) / static_cast<double>(vocab);
  return {l, (1.0 - smoothing) * (L - static_cast<double>(target)) + smoothing * (L - mean) + z_loss * L * L};
}

// dloss_row / dz for one logit, times `scale`:
//   scale (exp(z - L) (1 + 2 lambda L) - eps / V - (1 - eps) [z is the target])
// with p_scale = scale (1 + 2 lambda L), shift = scale eps / V, target_step = scale (1 - eps)
// precomputed per row.
MEAP_HOST_DEVICE inline float ce_gradient(float z, float lse, float p_scale, float shift, bool is_target,
                                          float target_step) {
  float value = expf(z - lse) * p_scale - shift;
  if (is_target) value -= target_step;
  return value;
}

}  // namespace meap::detail::cuda_math
