// meap/kernels/cpu/layers.hpp: host implementations of the per-token layers of a LLaMA block:
// linear (gemm.hpp: CBLAS or Eigen), RMSNorm, rotary embedding, SwiGLU and token embedding,
// forward and backward.
// Internal to the front doors in kernels/{linear,rmsnorm,rope,swiglu,embedding}.hpp, which check
// every argument; these trust their inputs (contiguous, row-major, shapes consistent).
#pragma once

#include <meap/core/dims.hpp>
#include <meap/core/parallel.hpp>

#include <meap/kernels/cpu/gemm.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace meap::detail::cpu_impl {

// y (N, out) = x (N, in) * W^T, W: (out, in) as PyTorch's nn.Linear stores it.
template <class T>
void linear_forward(const T* x, const T* w, T* y, index_t rows, index_t in, index_t out) {
  gemm<T>(transpose::no, transpose::yes, rows, out, in, T(1), x, in, w, in, T(0), y, out);
}

// dx (N, in) = dy (N, out) * W (out, in), overwritten or (accumulate_dx) added to; dW (out, in)
// += dy^T * x, always accumulated so that a weight used twice (a tied head) collects both
// contributions. Accumulating dx lets the q/k/v and gate/up projections of one input sum their
// input gradients inside the GEMM instead of in a separate pass.
template <class T>
void linear_backward(const T* x, const T* w, const T* dy, T* dx, T* dw, index_t rows, index_t in, index_t out,
                     bool accumulate_dx = false) {
  if (dx != nullptr)
    gemm<T>(transpose::no, transpose::no, rows, in, out, T(1), dy, out, w, in, accumulate_dx ? T(1) : T(0), dx, in);
  if (dw != nullptr) gemm<T>(transpose::yes, transpose::no, out, in, rows, T(1), dy, out, x, in, T(1), dw, in);
}

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

// Rotary embedding in the Hugging Face LLaMA layout (rotate_half over the two halves of a head):
// for i < D/2, with angle = pos * theta^(-2i/D),
//   y[i]       = x[i] cos - x[i + D/2] sin
//   y[i + D/2] = x[i + D/2] cos + x[i] sin
// x, y: (B, T, H, D), in place allowed. positions: (B, T) or null (position = t). inverse = true
// applies the transposed rotation, which is the backward pass.
template <class T>
void rope_apply(const T* x, T* y, const std::int32_t* positions, index_t batch, index_t length, index_t heads,
                index_t head_dim, double theta, bool inverse) {
  const index_t half = head_dim / 2;
  std::vector<double> frequency(static_cast<std::size_t>(half));
  for (index_t i = 0; i < half; ++i)
    frequency[static_cast<std::size_t>(i)] =
        std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
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

// y[n] = table[tokens[n]]; tokens: (N); table: (V, d); y: (N, d).
template <class T>
void embedding_forward(const std::int32_t* tokens, const T* table, T* y, index_t rows, index_t d) {
  MEAP_OMP(omp parallel for schedule(static) if (rows * d > 65536))
  for (index_t n = 0; n < rows; ++n) {
    const T* src = table + static_cast<index_t>(tokens[n]) * d;
    for (index_t i = 0; i < d; ++i) y[n * d + i] = src[i];
  }
}

// d_table[tokens[n]] += dy[n], in row order for every column, so the result does not depend on
// the thread count (threads split the columns, never the rows).
template <class T>
void embedding_backward(const std::int32_t* tokens, const T* dy, T* d_table, index_t rows, index_t d) {
  constexpr index_t column_block = 64;
  const index_t blocks = (d + column_block - 1) / column_block;
  MEAP_OMP(omp parallel for schedule(static) if (rows * d > 65536))
  for (index_t block = 0; block < blocks; ++block) {
    const index_t begin = block * column_block;
    const index_t end = begin + column_block < d ? begin + column_block : d;
    for (index_t n = 0; n < rows; ++n) {
      T* dst = d_table + static_cast<index_t>(tokens[n]) * d;
      const T* src = dy + n * d;
      for (index_t i = begin; i < end; ++i) dst[i] += src[i];
    }
  }
}

}  // namespace meap::detail::cpu_impl
