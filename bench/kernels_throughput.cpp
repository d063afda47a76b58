// bench_kernels: attention forward+backward and selective fused cross-entropy forward+backward, in
// GFLOP/s, against two baselines measured in this run: a naive loop implementation of the same
// maths (single thread, float) and Eigen's plain float GEMM (same thread count as the kernels).
//
// FLOPs are the useful multiply-adds x 2 of the textbook algorithm, not what the kernel executes:
//   attention fwd: 2 GEMMs over the causal half, 2 * 2 * B * Hq * D * T(T+1)/2
//   attention bwd: 2.5x the forward (dV, dP, dQ, dK, as FlashAttention counts it)
//   fused CE fwd: 2 * n_sel * V * d;  bwd: 2x that (dW and dH; the logits recompute is not counted)
// Usage: bench_kernels [T, default 1024] (--help)
#include <meap/meap.hpp>

#include "support/main.hpp"
#include "support/timing.hpp"

#include <Eigen/Core>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

namespace {

using meap::cpu;
using meap::dims;
using meap::index_t;

using meap_bench::best_seconds;

volatile float sink;

void random_fill(float* p, index_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> normal(0.0f, scale);
  for (index_t i = 0; i < n; ++i) p[i] = normal(rng);
}

// Naive causal attention forward + backward (the textbook loops, one thread).
void naive_attention(index_t T, index_t Hq, index_t Hkv, index_t D, const float* q, const float* k, const float* v,
                     const float* d_out, float* out, float* dq, float* dk, float* dv) {
  const float scale = 1.0f / std::sqrt(float(D));
  const index_t group = Hq / Hkv;
  std::vector<float> p(static_cast<std::size_t>(T)), dp(static_cast<std::size_t>(T));
  std::fill(dk, dk + T * Hkv * D, 0.0f);
  std::fill(dv, dv + T * Hkv * D, 0.0f);
  for (index_t h = 0; h < Hq; ++h) {
    const index_t g = h / group;
    for (index_t i = 0; i < T; ++i) {
      const float* qi = q + (i * Hq + h) * D;
      float mx = -INFINITY;
      for (index_t j = 0; j <= i; ++j) {
        float s = 0;
        for (index_t d = 0; d < D; ++d) s += qi[d] * k[(j * Hkv + g) * D + d];
        p[j] = s * scale;
        mx = std::max(mx, p[j]);
      }
      float sum = 0;
      for (index_t j = 0; j <= i; ++j) sum += p[j] = std::exp(p[j] - mx);
      float* oi = out + (i * Hq + h) * D;
      std::fill(oi, oi + D, 0.0f);
      for (index_t j = 0; j <= i; ++j) {
        p[j] /= sum;
        for (index_t d = 0; d < D; ++d) oi[d] += p[j] * v[(j * Hkv + g) * D + d];
      }
      const float* doi = d_out + (i * Hq + h) * D;
      float row = 0;
      for (index_t j = 0; j <= i; ++j) {
        float s = 0;
        for (index_t d = 0; d < D; ++d) s += doi[d] * v[(j * Hkv + g) * D + d];
        dp[j] = s;
        row += p[j] * s;
      }
      float* dqi = dq + (i * Hq + h) * D;
      std::fill(dqi, dqi + D, 0.0f);
      for (index_t j = 0; j <= i; ++j) {
        const float ds = p[j] * (dp[j] - row) * scale;
        for (index_t d = 0; d < D; ++d) {
          dqi[d] += ds * k[(j * Hkv + g) * D + d];
          dk[(j * Hkv + g) * D + d] += ds * qi[d];
          dv[(j * Hkv + g) * D + d] += p[j] * doi[d];
        }
      }
    }
  }
}

// Naive selective cross-entropy with the LM head: logits of one selected row at a time.
double naive_cross_entropy(index_t N, index_t d, index_t V, const float* h, const float* w, const std::int32_t* labels,
                           float* dh, float* dw) {
  index_t selected = 0;
  for (index_t n = 0; n < N; ++n) selected += labels[n] != meap::ignore_index;
  std::fill(dh, dh + N * d, 0.0f);
  std::fill(dw, dw + V * d, 0.0f);
  std::vector<float> z(static_cast<std::size_t>(V));
  double loss = 0;
  for (index_t n = 0; n < N; ++n) {
    if (labels[n] == meap::ignore_index) continue;
    float mx = -INFINITY;
    for (index_t j = 0; j < V; ++j) {
      float s = 0;
      for (index_t c = 0; c < d; ++c) s += h[n * d + c] * w[j * d + c];
      z[j] = s;
      mx = std::max(mx, s);
    }
    float sum = 0;
    for (index_t j = 0; j < V; ++j) sum += std::exp(z[j] - mx);
    const float lse = mx + std::log(sum);
    loss += lse - z[labels[n]];
    for (index_t j = 0; j < V; ++j) {
      const float g = (std::exp(z[j] - lse) - (j == labels[n] ? 1.0f : 0.0f)) / float(selected);
      for (index_t c = 0; c < d; ++c) {
        dh[n * d + c] += g * w[j * d + c];
        dw[j * d + c] += g * h[n * d + c];
      }
    }
  }
  return loss / double(selected);
}

void row(const char* name, const char* shape, double flops, double seconds, double naive_gflops, double gemm_gflops) {
  const double gflops = flops / seconds * 1e-9;
  std::printf("| %-30s | %-34s | %9.2f | %9.1f | %8.1fx | %7.2f |\n", name, shape, seconds * 1e3, gflops,
              gflops / naive_gflops, gflops / gemm_gflops);
}

int run_bench(int argc, char** argv) {
  index_t T = 1024;
  CLI::App app{"bench_kernels: CPU attention and selective fused cross-entropy in GFLOP/s, against a naive loop "
               "and Eigen's float GEMM",
               "bench_kernels"};
  app.add_option("T", T, "attention sequence length")->check(CLI::Range(index_t{1}, index_t{1} << 20))->capture_default_str();
  if (const int code = meap_bench::parse(app, argc, argv); code >= 0) return code;
  std::mt19937 rng(1);
  const int threads = meap::detail::cpu_impl::max_threads();

  // Baseline 1: Eigen's plain float GEMM, 1024^3, row-major like the kernels' tiles.
  const index_t n = 1024;
  using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  matrix a = matrix::Random(n, n), b = matrix::Random(n, n), c(n, n);
  c.noalias() = a * b;  // warm-up: Eigen sizes its blocking and the OpenMP team starts
  const double gemm_s = best_seconds(5, [&] { c.noalias() = a * b; sink = c(0, 0); });
  const double gemm_gflops = 2.0 * double(n) * double(n) * double(n) / gemm_s * 1e-9;

  // Attention: B = 1, Hq = 8, Hkv = 2 (GQA), D = 64, float.
  const index_t B = 1, Hq = 8, Hkv = 2, D = 64;
  std::vector<float> q(B * T * Hq * D), k(B * T * Hkv * D), v(B * T * Hkv * D), d_out(B * T * Hq * D);
  for (auto* p : {&q, &k, &v, &d_out}) random_fill(p->data(), index_t(p->size()), rng);
  std::vector<float> out(q.size()), dq(q.size()), dk(k.size()), dv(v.size()), lse(B * Hq * T);
  const meap::cpu_view<const float> qv(q.data(), dims{B, T, Hq, D}), kv(k.data(), dims{B, T, Hkv, D}),
      vv(v.data(), dims{B, T, Hkv, D}), dov(d_out.data(), dims{B, T, Hq, D});
  const meap::cpu_view<float> outv(out.data(), dims{B, T, Hq, D}), lsev(lse.data(), dims{B, Hq, T}),
      dqv(dq.data(), dims{B, T, Hq, D}), dkv(dk.data(), dims{B, T, Hkv, D}), dvv(dv.data(), dims{B, T, Hkv, D});
  const double attn_fwd_flops = 4.0 * double(B * Hq * D) * double(T) * double(T + 1) / 2.0;
  const double attn_bwd_flops = 2.5 * attn_fwd_flops;
  meap::attention_forward<float>(cpu{}, qv, kv, vv, outv, lsev);  // warm-up
  const double fwd_s = best_seconds(3, [&] { meap::attention_forward<float>(cpu{}, qv, kv, vv, outv, lsev); });
  const double bwd_s = best_seconds(3, [&] {
    meap::attention_backward<float>(cpu{}, qv, kv, vv, outv, lsev, dov, dqv, dkv, dvv);
  });
  std::vector<float> n_out(q.size()), n_dq(q.size()), n_dk(k.size()), n_dv(v.size());
  const double naive_attn_s = best_seconds(1, [&] {
    naive_attention(T, Hq, Hkv, D, q.data(), k.data(), v.data(), d_out.data(), n_out.data(), n_dq.data(), n_dk.data(),
                    n_dv.data());
  });
  double attn_diff = 0;
  for (std::size_t i = 0; i < dq.size(); ++i) attn_diff = std::max(attn_diff, double(std::abs(dq[i] - n_dq[i])));
  const double naive_attn_gflops = (attn_fwd_flops + attn_bwd_flops) / naive_attn_s * 1e-9;

  // Selective fused cross-entropy: N = 4096 rows, half of them selected, d = 512, V = 8192, float.
  const index_t N = 4096, width = 512, V = 8192;
  std::vector<float> hidden(N * width), weight(V * width), dh(N * width), dw(V * width);
  random_fill(hidden.data(), index_t(hidden.size()), rng);
  random_fill(weight.data(), index_t(weight.size()), rng, 0.05f);
  std::vector<std::int32_t> labels(N);
  std::uniform_int_distribution<std::int32_t> label(0, std::int32_t(V - 1));
  for (index_t i = 0; i < N; ++i) labels[i] = i % 2 == 0 ? label(rng) : meap::ignore_index;
  const index_t selected = N / 2;
  const meap::cpu_view<const float> hv(hidden.data(), dims{N, width}), wv(weight.data(), dims{V, width});
  const meap::cpu_view<const std::int32_t> lv(labels.data(), dims{N});
  const meap::cpu_view<float> dhv(dh.data(), dims{N, width}), dwv(dw.data(), dims{V, width});
  const double ce_fwd_flops = 2.0 * double(selected) * double(V) * double(width);
  const double ce_fwd_s = best_seconds(3, [&] { sink = float(meap::linear_cross_entropy(cpu{}, hv, wv, lv).loss); });
  double loss = 0;
  const double ce_s = best_seconds(3, [&] { loss = meap::linear_cross_entropy<float>(cpu{}, hv, wv, lv, dhv, dwv).loss; });
  // The naive version on a quarter of the rows (it is slow); its GFLOP/s is size-independent.
  const index_t naive_rows = N / 4;
  std::vector<float> n_dh(naive_rows * width), n_dw(V * width);
  const double naive_ce_s = best_seconds(1, [&] {
    sink = float(naive_cross_entropy(naive_rows, width, V, hidden.data(), weight.data(), labels.data(), n_dh.data(), n_dw.data()));
  });
  const double naive_ce_gflops = 3.0 * 2.0 * double(naive_rows / 2) * double(V) * double(width) / naive_ce_s * 1e-9;

  std::printf("meap kernels on the CPU: %d OpenMP thread(s); best of 3 (naive: 1 run, 1 thread)\n", threads);
  std::printf("Eigen float GEMM %lldx%lldx%lld: %.1f GFLOP/s (%d thread(s))\n", (long long)n, (long long)n, (long long)n,
              gemm_gflops, threads);
  std::printf("naive attention fwd+bwd: %.2f GFLOP/s; naive selective CE fwd+bwd: %.2f GFLOP/s\n\n", naive_attn_gflops,
              naive_ce_gflops);
  std::printf("| %-30s | %-34s | %9s | %9s | %9s | %7s |\n", "kernel (float)", "shape", "ms", "GFLOP/s", "vs naive",
              "vs GEMM");
  std::printf("|%s|%s|%s|%s|%s|%s|\n", "--------------------------------", "------------------------------------",
              "-----------", "-----------", "-----------", "---------");
  char shape[96];
  std::snprintf(shape, sizeof shape, "B=%lld T=%lld Hq=%lld Hkv=%lld D=%lld", (long long)B, (long long)T, (long long)Hq,
                (long long)Hkv, (long long)D);
  row("attention forward", shape, attn_fwd_flops, fwd_s, naive_attn_gflops, gemm_gflops);
  row("attention backward", shape, attn_bwd_flops, bwd_s, naive_attn_gflops, gemm_gflops);
  row("attention fwd+bwd", shape, attn_fwd_flops + attn_bwd_flops, fwd_s + bwd_s, naive_attn_gflops, gemm_gflops);
  std::snprintf(shape, sizeof shape, "N=%lld sel=%lld d=%lld V=%lld", (long long)N, (long long)selected, (long long)width,
                (long long)V);
  row("fused selective CE forward", shape, ce_fwd_flops, ce_fwd_s, naive_ce_gflops, gemm_gflops);
  row("fused selective CE fwd+bwd", shape, 3.0 * ce_fwd_flops, ce_s, naive_ce_gflops, gemm_gflops);
  std::printf("\ncheck: max |dq - naive dq| = %.2e; CE loss = %.4f (log V = %.4f)\n", attn_diff, loss, std::log(double(V)));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return meap_bench::guarded_main("bench_kernels", [&] { return run_bench(argc, argv); });
}
