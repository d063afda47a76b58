// meap/kernels/cpu/rmsnorm.hpp: the meap::cpu implementation behind <meap/kernels/rmsnorm.hpp>.
// The front door has checked every argument; these trust their inputs (contiguous, row-major,
// shapes consistent). Its CUDA twin is kernels/cuda/rmsnorm.hpp.
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/parallel.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/backend.hpp>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

namespace meap::detail {

namespace cpu_impl {

// y[n] = x[n] * r[n] * w, r[n] = 1 / sqrt(mean(x[n]^2) + eps). x, y: (N, d); w: (d); r: (N) saved.
template <class T>
void rmsnorm_forward(const T* x, const T* w, T* y, T* r, index_t rows, index_t d, double eps) {
  MEAP_OMP(omp parallel for schedule(static) if (rows * d > 32768))
  for (index_t n = 0; n < rows; ++n) {
    const T* xn = x + n * d;
    T* yn = y + n * d;
    T sum = 0;
    for (index_t i = 0; i < d; ++i) sum += xn[i] * xn[i];
    const T inv = T(1) / std::sqrt(sum / static_cast<T>(d) + static_cast<T>(eps));
    r[n] = inv;
    for (index_t i = 0; i < d; ++i) yn[i] = xn[i] * inv * w[i];
  }
}

// With xhat = x r and g = dy * w: dx = r (g - xhat mean(g xhat)) (overwritten), dw += sum_n dy xhat.
// dw is summed per fixed chunk of rows, then over the chunks in order: row-contiguous (vectorized)
// and the same result for any thread count.
template <class T>
void rmsnorm_backward(const T* x, const T* w, const T* r, const T* dy, T* dx, T* dw, index_t rows, index_t d) {
  constexpr index_t chunk_rows = 64;
  const index_t chunks = (rows + chunk_rows - 1) / chunk_rows;
  std::vector<T> partial(static_cast<std::size_t>(chunks * d));
  MEAP_OMP(omp parallel if (rows * d > 32768))
  {
    MEAP_OMP(omp for schedule(static))
    for (index_t chunk = 0; chunk < chunks; ++chunk) {
      T* dw_chunk = partial.data() + chunk * d;
      std::fill(dw_chunk, dw_chunk + d, T(0));
      for (index_t n = chunk * chunk_rows, end = std::min(rows, n + chunk_rows); n < end; ++n) {
        const T* xn = x + n * d;
        const T* dyn = dy + n * d;
        T* dxn = dx + n * d;
        T dot = 0;
        for (index_t i = 0; i < d; ++i) dot += dyn[i] * w[i] * xn[i];
        const T inv = r[n];
        const T mean = dot * inv / static_cast<T>(d);  // mean(g * xhat)
        for (index_t i = 0; i < d; ++i) {
          dxn[i] = inv * (dyn[i] * w[i] - xn[i] * inv * mean);
          dw_chunk[i] += dyn[i] * xn[i] * inv;
        }
      }
    }
    MEAP_OMP(omp for schedule(static))
    for (index_t i = 0; i < d; ++i) {
      T sum = 0;
      for (index_t chunk = 0; chunk < chunks; ++chunk) sum += partial[static_cast<std::size_t>(chunk * d + i)];
      dw[i] += sum;
    }
  }
}

}  // namespace cpu_impl

template <>
struct rmsnorm_kernels<cpu> {
  template <class T>
  static void forward(const cpu&, const tensor_view<const T, cpu>& x, const tensor_view<const T, cpu>& w,
                      const tensor_view<T, cpu>& y, const tensor_view<T, cpu>& inv_rms, double eps) {
    cpu_impl::rmsnorm_forward(x.data(), w.data(), y.data(), inv_rms.data(), x.size(0), x.size(1), eps);
  }
  template <class T, class G>
  static void backward(const cpu&, const tensor_view<const T, cpu>& x, const tensor_view<const T, cpu>& w,
                       const tensor_view<const T, cpu>& inv_rms, const tensor_view<const T, cpu>& dy,
                       const tensor_view<T, cpu>& dx, const tensor_view<G, cpu>& dw) {
    static_assert(std::is_same_v<G, T>, "meap::cpu computes parameter gradients in the compute type");
    cpu_impl::rmsnorm_backward(x.data(), w.data(), inv_rms.data(), dy.data(), dx.data(), dw.data(), x.size(0),
                               x.size(1));
  }
};

}  // namespace meap::detail
