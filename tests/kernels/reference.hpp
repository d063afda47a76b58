// Deliberately simple float64 reference implementations and helpers for the kernel tests. They
// follow the textbook formulas with full score matrices and no blocking, so they share no code
// (and no bug) with the kernels.
#pragma once

#include <meap/meap.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace meap_test {

using meap::index_t;

// Index helpers for contiguous (B, T, H, D) and (B, H, T) arrays.
struct bthd {
  index_t B, T, H, D;
  index_t operator()(index_t b, index_t t, index_t h, index_t d) const { return ((b * T + t) * H + h) * D + d; }
  index_t size() const { return B * T * H * D; }
};

// Values exactly representable in every dtype under test, so that a half / bfloat16 input and
// the float64 reference see the same numbers.
template <class T>
std::vector<double> random_values(std::mt19937& rng, index_t n, double scale = 1.0) {
  std::normal_distribution<double> normal(0.0, scale);
  std::vector<double> values(static_cast<std::size_t>(n));
  for (auto& x : values) x = static_cast<double>(static_cast<T>(normal(rng)));
  return values;
}

template <class T>
meap::tensor<T, meap::cpu> make_tensor(const meap::dims& shape, const std::vector<double>& values) {
  meap::tensor<T, meap::cpu> t(meap::cpu{}, shape);
  for (index_t i = 0; i < t.numel(); ++i) t.data()[i] = static_cast<T>(values[static_cast<std::size_t>(i)]);
  return t;
}

template <class T>
std::vector<double> to_double(const T* data, index_t n) {
  std::vector<double> out(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = static_cast<double>(static_cast<float>(data[i]));
  return out;
}
inline std::vector<double> to_double(const double* data, index_t n) { return {data, data + n}; }

// max |a - b| / max(1, max |b|): an error relative to the size of the reference values.
inline double relative_error(const std::vector<double>& got, const std::vector<double>& want) {
  double err = 0, scale = 1;
  for (std::size_t i = 0; i < want.size(); ++i) {
    err = std::max(err, std::abs(got[i] - want[i]));
    scale = std::max(scale, std::abs(want[i]));
    if (!std::isfinite(got[i])) return INFINITY;
  }
  return err / scale;
}

// The worst row of `got` against `want`, each row measured against its own size: a global
// tolerance lets one wrong row of a long sequence hide under the largest values elsewhere. A row
// is `row_length` consecutive elements; its error is max |got - want| / max(max |want| in the
// row, floor), the floor (1% of the largest |want|, at least 1e-2) keeping rows whose values
// cancel to almost nothing from dividing rounding noise by zero.
struct row_error {
  double error = 0;
  index_t row = -1;  // the worst row
};
inline row_error worst_row_error(const std::vector<double>& got, const std::vector<double>& want, index_t row_length) {
  double largest = 1;
  for (double w : want) largest = std::max(largest, std::abs(w));
  const double floor = 1e-2 * largest;
  row_error worst;
  const auto rows = static_cast<index_t>(want.size()) / row_length;
  for (index_t r = 0; r < rows; ++r) {
    double err = 0, scale = floor;
    for (index_t i = r * row_length; i < (r + 1) * row_length; ++i) {
      const auto u = static_cast<std::size_t>(i);
      if (!std::isfinite(got[u])) return {INFINITY, r};
      err = std::max(err, std::abs(got[u] - want[u]));
      scale = std::max(scale, std::abs(want[u]));
    }
    if (err / scale > worst.error) worst = {err / scale, r};
  }
  return worst;
}

struct attention_problem {
  index_t B, T, Hq, Hkv, D;
  double scale;
  std::vector<double> q, k, v;
  std::vector<std::int32_t> segments;  // empty: none
};

struct attention_reference {
  std::vector<double> out, lse, probabilities;  // probabilities: (B, Hq, T, T)
  std::vector<double> dq, dk, dv;
};

inline bool allowed(const attention_problem& p, index_t b, index_t i, index_t j) {
  if (j > i) return false;
  return p.segments.empty() || p.segments[static_cast<std::size_t>(b * p.T + i)] == p.segments[static_cast<std::size_t>(b * p.T + j)];
}

// Forward with full T x T matrices; backward through dS = P o (dP - rowsum(P o dP)) when d_out is
// given (note: the kernels use rowsum(dO o O) instead, an identity this cross-checks).
inline attention_reference naive_attention(const attention_problem& p, const std::vector<double>* d_out = nullptr) {
  const bthd qi{p.B, p.T, p.Hq, p.D}, ki{p.B, p.T, p.Hkv, p.D};
  attention_reference r;
  r.out.assign(static_cast<std::size_t>(qi.size()), 0.0);
  r.lse.assign(static_cast<std::size_t>(p.B * p.Hq * p.T), 0.0);
  r.probabilities.assign(static_cast<std::size_t>(p.B * p.Hq * p.T * p.T), 0.0);
  r.dq.assign(static_cast<std::size_t>(qi.size()), 0.0);
  r.dk.assign(static_cast<std::size_t>(ki.size()), 0.0);
  r.dv.assign(static_cast<std::size_t>(ki.size()), 0.0);
  const index_t group = p.Hq / p.Hkv;
  for (index_t b = 0; b < p.B; ++b)
    for (index_t h = 0; h < p.Hq; ++h) {
      const index_t g = h / group;
      for (index_t i = 0; i < p.T; ++i) {
        std::vector<double> s(static_cast<std::size_t>(p.T), -INFINITY);
        double mx = -INFINITY;
        for (index_t j = 0; j < p.T; ++j) {
          if (!allowed(p, b, i, j)) continue;
          double dot = 0;
          for (index_t d = 0; d < p.D; ++d) dot += p.q[qi(b, i, h, d)] * p.k[ki(b, j, g, d)];
          s[j] = p.scale * dot;
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (index_t j = 0; j < p.T; ++j) sum += allowed(p, b, i, j) ? std::exp(s[j] - mx) : 0.0;
        r.lse[(b * p.Hq + h) * p.T + i] = mx + std::log(sum);
        std::vector<double> prob(static_cast<std::size_t>(p.T), 0.0);
        for (index_t j = 0; j < p.T; ++j) {
          prob[j] = allowed(p, b, i, j) ? std::exp(s[j] - mx) / sum : 0.0;
          r.probabilities[((b * p.Hq + h) * p.T + i) * p.T + j] = prob[j];
          for (index_t d = 0; d < p.D; ++d) r.out[qi(b, i, h, d)] += prob[j] * p.v[ki(b, j, g, d)];
        }
        if (d_out == nullptr) continue;
        std::vector<double> dp(static_cast<std::size_t>(p.T), 0.0);
        double row = 0;
        for (index_t j = 0; j < p.T; ++j) {
          for (index_t d = 0; d < p.D; ++d) dp[j] += (*d_out)[qi(b, i, h, d)] * p.v[ki(b, j, g, d)];
          row += prob[j] * dp[j];
        }
        for (index_t j = 0; j < p.T; ++j) {
          const double ds = prob[j] * (dp[j] - row);
          for (index_t d = 0; d < p.D; ++d) {
            r.dq[qi(b, i, h, d)] += p.scale * ds * p.k[ki(b, j, g, d)];
            r.dk[ki(b, j, g, d)] += p.scale * ds * p.q[qi(b, i, h, d)];
            r.dv[ki(b, j, g, d)] += prob[j] * (*d_out)[qi(b, i, h, d)];
          }
        }
      }
    }
  return r;
}

struct cross_entropy_reference {
  double loss = 0;
  index_t selected = 0;
  std::vector<double> d_logits;  // (N, V)
};

// Mean over selected rows of (1 - eps)(L - z_y) + eps (L - mean z) + lambda L^2, from full logits.
inline cross_entropy_reference naive_cross_entropy(const std::vector<double>& logits, const std::vector<std::int32_t>& labels,
                                                   index_t N, index_t V, double eps = 0, double lambda = 0) {
  cross_entropy_reference r;
  r.d_logits.assign(static_cast<std::size_t>(N * V), 0.0);
  for (index_t n = 0; n < N; ++n) r.selected += labels[n] != -100;
  for (index_t n = 0; n < N; ++n) {
    if (labels[n] == -100) continue;
    const double* z = logits.data() + n * V;
    double mx = -INFINITY, sum = 0, mean = 0;
    for (index_t j = 0; j < V; ++j) mx = std::max(mx, z[j]);
    for (index_t j = 0; j < V; ++j) sum += std::exp(z[j] - mx), mean += z[j] / static_cast<double>(V);
    const double L = mx + std::log(sum);
    r.loss += (1 - eps) * (L - z[labels[n]]) + eps * (L - mean) + lambda * L * L;
    for (index_t j = 0; j < V; ++j) {
      const double prob = std::exp(z[j] - L);
      double g = prob + 2 * lambda * L * prob - eps / static_cast<double>(V) - (j == labels[n] ? 1 - eps : 0.0);
      r.d_logits[n * V + j] = g / static_cast<double>(r.selected);
    }
  }
  if (r.selected > 0) r.loss /= static_cast<double>(r.selected);
  return r;
}

// C = A B^T for row-major A (m, k) and B (n, k).
inline std::vector<double> matmul_nt(const std::vector<double>& a, const std::vector<double>& b, index_t m, index_t n,
                                     index_t k) {
  std::vector<double> c(static_cast<std::size_t>(m * n), 0.0);
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < n; ++j) {
      double s = 0;
      for (index_t t = 0; t < k; ++t) s += a[i * k + t] * b[j * k + t];
      c[i * n + j] = s;
    }
  return c;
}

}  // namespace meap_test
