// meap/kernels/cpu/rope.hpp: the meap::cpu implementation behind <meap/kernels/rope.hpp>.
// The front door has checked every argument; these trust their inputs (contiguous, row-major,
// shapes consistent). Its CUDA twin is kernels/cuda/rope.hpp.
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/parallel.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/backend.hpp>
#include <meap/kernels/rope_frequency.hpp>
#include <meap/core/deferred_checks.hpp>

#include <cmath>
#include <string_view>
#include <cstdint>
#include <vector>

namespace meap::detail {

namespace cpu_impl {

// Rotary embedding in the Hugging Face LLaMA layout (rotate_half over the two halves of a head):
// for i < D/2, with angle = pos * theta^(-2i/D) (Llama 3.1-scaled when scaling is enabled),
//   y[i]       = x[i] cos - x[i + D/2] sin
//   y[i + D/2] = x[i + D/2] cos + x[i] sin
// x, y: (B, T, H, D), in place allowed. positions: (B, T) or null (position = t). inverse = true
// applies the transposed rotation, which is the backward pass.
template <class T>
void rope_apply(const T* x, T* y, const std::int32_t* positions, index_t batch, index_t length, index_t heads,
                index_t head_dim, double theta, const rope_scaling& scaling, bool inverse) {
  const index_t half = head_dim / 2;
  std::vector<double> frequency(static_cast<std::size_t>(half));
  for (index_t i = 0; i < half; ++i) frequency[static_cast<std::size_t>(i)] = rope_inverse_frequency(i, head_dim, theta, scaling);
  // cos and sin per (position row, i): one row per t when positions are the default (shared by
  // the batch), one per (b, t) otherwise. Angles in double: positions up to 10^6 times
  // frequencies near 1 keep their precision.
  const index_t table_rows = positions != nullptr ? batch * length : length;
  std::vector<T> cos_table(static_cast<std::size_t>(table_rows * half)), sin_table(cos_table.size());
  MEAP_OMP(omp parallel if (batch * length * heads * head_dim > 32768))
  {
    MEAP_OMP(omp for schedule(static))
    for (index_t row = 0; row < table_rows; ++row) {
      const double position = positions != nullptr ? positions[row] : static_cast<double>(row);
      for (index_t i = 0; i < half; ++i) {
        const double angle = position * frequency[static_cast<std::size_t>(i)];
        const double sine = inverse ? -std::sin(angle) : std::sin(angle);
        cos_table[static_cast<std::size_t>(row * half + i)] = static_cast<T>(std::cos(angle));
        sin_table[static_cast<std::size_t>(row * half + i)] = static_cast<T>(sine);
      }
    }
    MEAP_OMP(omp for schedule(static))
    for (index_t bt = 0; bt < batch * length; ++bt) {
      const index_t row = positions != nullptr ? bt : bt % length;
      const T* c = cos_table.data() + row * half;
      const T* sn = sin_table.data() + row * half;
      for (index_t h = 0; h < heads; ++h) {
        const T* xh = x + (bt * heads + h) * head_dim;
        T* yh = y + (bt * heads + h) * head_dim;
        for (index_t i = 0; i < half; ++i) {
          const T a = xh[i];
          const T b = xh[i + half];
          yh[i] = a * c[i] - b * sn[i];
          yh[i + half] = b * c[i] + a * sn[i];
        }
      }
    }
  }
}

}  // namespace cpu_impl

template <>
struct rope_kernels<cpu> {
  // The first negative position (flat index, value), scanned on the host.
  static void check_positions(const cpu&, std::string_view function, const tensor_view<const std::int32_t, cpu>& positions,
                              const deferred_checks<cpu>&) {
    const std::int32_t* p = positions.data();
    for (index_t i = 0, n = positions.numel(); i < n; ++i)
      if (p[i] < 0) throw_invalid_position(function, i, p[i]);
  }
  template <class T>
  static void apply(const cpu&, const tensor_view<const T, cpu>& x, const tensor_view<T, cpu>& y,
                    const tensor_view<const std::int32_t, cpu>& positions, double theta, const rope_scaling& scaling,
                    bool inverse) {
    cpu_impl::rope_apply(x.data(), y.data(), positions.rank() != 0 ? positions.data() : nullptr, x.size(0), x.size(1),
                         x.size(2), x.size(3), theta, scaling, inverse);
  }
};

}  // namespace meap::detail
