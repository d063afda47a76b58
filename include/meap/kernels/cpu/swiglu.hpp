// meap/kernels/cpu/swiglu.hpp: the meap::cpu implementation behind <meap/kernels/swiglu.hpp>.
// The front door has checked every argument; these trust their inputs (contiguous, row-major,
// shapes consistent). Its CUDA twin is kernels/cuda/swiglu.hpp.
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/parallel.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/backend.hpp>
#include <meap/kernels/cpu/eigen.hpp>

#include <algorithm>

namespace meap::detail {

namespace cpu_impl {

// SwiGLU in chunks of Eigen arrays, so exp() is vectorized.
inline constexpr index_t swiglu_chunk = 4096;

// h = silu(gate) * up; gate, up, h: (N, F).
template <class T>
void swiglu_forward(const T* gate, const T* up, T* h, index_t count) {
  using array = Eigen::Array<T, Eigen::Dynamic, 1>;
  const index_t chunks = (count + swiglu_chunk - 1) / swiglu_chunk;
  MEAP_OMP(omp parallel for schedule(static) if (count > 65536))
  for (index_t chunk = 0; chunk < chunks; ++chunk) {
    const index_t begin = chunk * swiglu_chunk, n = std::min(swiglu_chunk, count - begin);
    const Eigen::Map<const array> g(gate + begin, n), u(up + begin, n);
    Eigen::Map<array>(h + begin, n) = g / (T(1) + (-g).exp()) * u;
  }
}

// d_gate = dh * up * silu'(gate), silu'(g) = s (1 + g (1 - s)); d_up = dh * silu(gate). Overwritten.
template <class T>
void swiglu_backward(const T* gate, const T* up, const T* dh, T* d_gate, T* d_up, index_t count) {
  using array = Eigen::Array<T, Eigen::Dynamic, 1>;
  const index_t chunks = (count + swiglu_chunk - 1) / swiglu_chunk;
  MEAP_OMP(omp parallel if (count > 65536))
  {
    array sigmoid(swiglu_chunk);
    MEAP_OMP(omp for schedule(static))
    for (index_t chunk = 0; chunk < chunks; ++chunk) {
      const index_t begin = chunk * swiglu_chunk, n = std::min(swiglu_chunk, count - begin);
      const Eigen::Map<const array> g(gate + begin, n), u(up + begin, n), dy(dh + begin, n);
      auto s = sigmoid.head(n);
      s = T(1) / (T(1) + (-g).exp());
      Eigen::Map<array>(d_gate + begin, n) = dy * u * s * (T(1) + g * (T(1) - s));
      Eigen::Map<array>(d_up + begin, n) = dy * g * s;
    }
  }
}

}  // namespace cpu_impl

template <>
struct swiglu_kernels<cpu> {
  template <class T>
  static void forward(const cpu&, const tensor_view<const T, cpu>& gate, const tensor_view<const T, cpu>& up,
                      const tensor_view<T, cpu>& h) {
    cpu_impl::swiglu_forward(gate.data(), up.data(), h.data(), gate.numel());
  }
  template <class T>
  static void backward(const cpu&, const tensor_view<const T, cpu>& gate, const tensor_view<const T, cpu>& up,
                       const tensor_view<const T, cpu>& dh, const tensor_view<T, cpu>& d_gate,
                       const tensor_view<T, cpu>& d_up) {
    cpu_impl::swiglu_backward(gate.data(), up.data(), dh.data(), d_gate.data(), d_up.data(), gate.numel());
  }
};

}  // namespace meap::detail
