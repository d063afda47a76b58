// meap/kernels/cpu/layers.hpp: host implementations of the per-token layers of a LLaMA block:
// linear (Eigen GEMM), RMSNorm, rotary embedding, SwiGLU and token embedding, forward and backward.
// Internal to the front doors in kernels/{linear,rmsnorm,rope,swiglu,embedding}.hpp, which check
// every argument; these trust their inputs (contiguous, row-major, shapes consistent).
#pragma once

#include <meap/core/dims.hpp>
#include <meap/core/parallel.hpp>

#include <meap/kernels/cpu/eigen.hpp>

#include <cmath>
#include <cstdint>

namespace meap::detail::cpu_impl {

template <class T>
using row_major_map = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;
template <class T>
using const_row_major_map = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;

// y (N, out) = x (N, in) * W^T, W: (out, in) as PyTorch's nn.Linear stores it.
template <class T>
void linear_forward(const T* x, const T* w, T* y, index_t rows, index_t in, index_t out) {
  row_major_map<T>(y, rows, out).noalias() = const_row_major_map<T>(x, rows, in) * const_row_major_map<T>(w, out, in).transpose();
}

// dx (N, in) = dy (N, out) * W (out, in), overwritten; dW (out, in) += dy^T * x, accumulated so
// that a weight used twice (a tied head) collects both contributions.
template <class T>
void linear_backward(const T* x, const T* w, const T* dy, T* dx, T* dw, index_t rows, index_t in, index_t out) {
  const auto dy_map = const_row_major_map<T>(dy, rows, out);
  if (dx != nullptr) row_major_map<T>(dx, rows, in).noalias() = dy_map * const_row_major_map<T>(w, out, in);
  if (dw != nullptr) row_major_map<T>(dw, out, in).noalias() += dy_map.transpose() * const_row_major_map<T>(x, rows, in);
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
template <class T>
void rmsnorm_backward(const T* x, const T* w, const T* r, const T* dy, T* dx, T* dw, index_t rows, index_t d) {
  MEAP_OMP(omp parallel for schedule(static) if (rows * d > 32768))
  for (index_t n = 0; n < rows; ++n) {
    const T* xn = x + n * d;
    const T* dyn = dy + n * d;
    T* dxn = dx + n * d;
    T dot = 0;
    for (index_t i = 0; i < d; ++i) dot += dyn[i] * w[i] * xn[i];
    const T inv = r[n];
    const T mean = dot * inv / static_cast<T>(d);  // mean(g * xhat)
    for (index_t i = 0; i < d; ++i) dxn[i] = inv * (dyn[i] * w[i] - xn[i] * inv * mean);
  }
  // dw: a column reduction, kept serial over rows per column block so the sum order is fixed.
  MEAP_OMP(omp parallel for schedule(static) if (rows * d > 32768))
  for (index_t i = 0; i < d; ++i) {
    T sum = 0;
    for (index_t n = 0; n < rows; ++n) sum += dy[n * d + i] * x[n * d + i] * r[n];
    dw[i] += sum;
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
  MEAP_OMP(omp parallel for collapse(2) schedule(static) if (batch * length * heads * head_dim > 32768))
  for (index_t b = 0; b < batch; ++b)
    for (index_t t = 0; t < length; ++t) {
      const double position = positions != nullptr ? positions[b * length + t] : static_cast<double>(t);
      for (index_t i = 0; i < half; ++i) {
        // Angles in double: positions up to 10^6 times frequencies near 1 keep their precision.
        const double angle = position * std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
        const T c = static_cast<T>(std::cos(angle));
        const T s = static_cast<T>(inverse ? -std::sin(angle) : std::sin(angle));
        for (index_t h = 0; h < heads; ++h) {
          const index_t base = ((b * length + t) * heads + h) * head_dim;
          const T a = x[base + i];
          const T bb = x[base + i + half];
          y[base + i] = a * c - bb * s;
          y[base + i + half] = bb * c + a * s;
        }
      }
    }
}

template <class T>
T sigmoid(T v) {
  return T(1) / (T(1) + std::exp(-v));
}

// h = silu(gate) * up; gate, up, h: (N, F).
template <class T>
void swiglu_forward(const T* gate, const T* up, T* h, index_t count) {
  MEAP_OMP(omp parallel for schedule(static) if (count > 65536))
  for (index_t i = 0; i < count; ++i) h[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

// d_gate = dh * up * silu'(gate), silu'(g) = s (1 + g (1 - s)); d_up = dh * silu(gate). Overwritten.
template <class T>
void swiglu_backward(const T* gate, const T* up, const T* dh, T* d_gate, T* d_up, index_t count) {
  MEAP_OMP(omp parallel for schedule(static) if (count > 65536))
  for (index_t i = 0; i < count; ++i) {
    const T s = sigmoid(gate[i]);
    d_gate[i] = dh[i] * up[i] * s * (T(1) + gate[i] * (T(1) - s));
    d_up[i] = dh[i] * gate[i] * s;
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
