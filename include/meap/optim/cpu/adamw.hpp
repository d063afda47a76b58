// meap/optim/cpu/adamw.hpp: the element update of AdamW on the host, behind meap::adamw
// (optim/adamw.hpp). Its CUDA twin is optim/cuda/adamw.hpp.
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/parallel.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/backend.hpp>
#include <meap/optim/status.hpp>

#include <cmath>
#include <cstdint>

namespace meap::detail {

// PyTorch's lerp (aten/src/ATen/native/Lerp.h): the branch keeps the result exact at both ends.
template <class T>
MEAP_HOST_DEVICE inline T pytorch_lerp(T self, T end, T weight) {
  return (weight < T(0) ? -weight : weight) < T(0.5) ? self + weight * (end - self)
                                                     : end - (end - self) * (T(1) - weight);
}

// The step's scalars, computed in double on the host and rounded to the master type once.
template <class T>
struct adamw_scalars {
  T decay_factor;    // 1 - lr * weight_decay
  T beta1_weight;    // 1 - beta1, the lerp weight
  T beta2;
  T one_minus_beta2;
  T bias_correction2_sqrt;
  T eps;
  T neg_step_size;   // -lr / (1 - beta1^t)
};

// The segment table of the flat buffers, as both backends read it: (2 S + 1) int64 words,
// [0, S] the segment starts followed by the end of the last one, [S + 1, 2 S + 1) 1 where weight
// decay applies. Segment k covers [table[k], table[k + 1]).
struct adamw_segments {
  const std::int64_t* table = nullptr;
  int count = 0;
  MEAP_HOST_DEVICE index_t begin(int k) const { return table[k]; }
  MEAP_HOST_DEVICE index_t end(int k) const { return table[k + 1]; }
  MEAP_HOST_DEVICE bool decay(int k) const { return table[count + 1 + k] != 0; }
};

namespace cpu_impl {

// One segment, element by element, in PyTorch's order of operations (single-tensor AdamW). The
// gradient is multiplied by `factor` first when a status gave one (the clip factor, divided by
// the loss scale): the same rounding as a clip that scales the gradients in place.
template <class M, class C>
void adamw_update(M* __restrict p, const M* __restrict g, M* __restrict m, M* __restrict v, C* __restrict copy,
                  index_t n, const adamw_scalars<M>& s, bool decay, bool scaled, M factor) {
  // The OpenMP threshold keeps small tensors (norm gains) off the thread pool.
  MEAP_OMP(omp parallel for schedule(static) if (n >= 32768))
  for (index_t i = 0; i < n; ++i) {
    M param = p[i];
    if (decay) param = param * s.decay_factor;
    const M grad = scaled ? g[i] * factor : g[i];
    const M exp_avg = pytorch_lerp(m[i], grad, s.beta1_weight);
    M exp_avg_sq = v[i] * s.beta2;
    exp_avg_sq = exp_avg_sq + s.one_minus_beta2 * grad * grad;
    const M denom = std::sqrt(exp_avg_sq) / s.bias_correction2_sqrt + s.eps;
    param = param + s.neg_step_size * exp_avg / denom;
    p[i] = param;
    m[i] = exp_avg;
    v[i] = exp_avg_sq;
    if (copy != nullptr) copy[i] = static_cast<C>(param);
  }
}

}  // namespace cpu_impl

template <>
struct adamw_kernels<cpu> {
  // p, g, m, v: (n) flat; copy: (n) or null; status: (status_value_count) or null.
  template <class M, class C>
  static void update(const cpu&, const adamw_segments& segments, index_t, M* p, const M* g, M* m, M* v, C* copy,
                     const adamw_scalars<M>& scalars, bool decay_enabled, const double* status) {
    if (status != nullptr && status[static_cast<int>(status_value::update)] == 0.0) return;
    const bool scaled = status != nullptr;
    const M factor = scaled ? static_cast<M>(status[static_cast<int>(status_value::grad_factor)]) : M(1);
    for (int k = 0; k < segments.count; ++k) {
      const index_t b = segments.begin(k);
      cpu_impl::adamw_update<M, C>(p + b, g + b, m + b, v + b, copy != nullptr ? copy + b : nullptr,
                                   segments.end(k) - b, scalars, decay_enabled && segments.decay(k), scaled, factor);
    }
  }
};

}  // namespace meap::detail
