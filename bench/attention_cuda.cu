// bench_attention_cuda: causal attention on a CUDA device in TFLOP/s, forward and forward+backward,
// at B * T = 16k tokens and hidden size 2048 (H = 2048 / D heads, MHA), T = 512 .. 16k, D = 64 and
// 128, bfloat16 (or float16), against two baselines:
//   * naive: the textbook attention on cuBLASLt, measured in this run: S = Q K^T (fp32), a causal
//     softmax kernel -> P, O = P V; backward dP = dO V^T, dS = P o (dP - rowsum(P o dP)) scale,
//     dV = P^T dO, dQ = dS K, dK = dS^T Q. It materializes the (H, T, T) scores of one batch row at a
//     time (8 bytes per score) and is skipped where they do not fit in 70% of free memory. Its
//     outputs double as a check of meap's (max error, relative to the largest output element).
//   * PyTorch scaled_dot_product_attention (flash backend), when its figures are given with
//     --sdpa FILE (written by bench/attention_sdpa.py on the same machine, same shapes).
// FLOPs as FlashAttention counts them: forward 4 B T^2 H D / 2 (causal), backward 2.5x forward.
// Times: best of --repeats runs of one call (cudaEvent), after a warm-up.
//
// Usage: bench_attention_cuda [--dtype bf16|fp16] [--sdpa FILE] [--repeats N] [--min-t N] [--max-t N]
//                             [--no-naive] (--help)
#include <meap/cuda.hpp>

#include <cublasLt.h>

#include "support/figures.hpp"
#include "support/main.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace {

namespace plan = meap::detail::cuda_attention;
using meap::dims;
using meap::index_t;

#define BENCH_LT_CHECK(expression)                                                                            \
  do {                                                                                                       \
    const cublasStatus_t status_ = (expression);                                                             \
    if (status_ != CUBLAS_STATUS_SUCCESS) {                                                                  \
      std::fprintf(stderr, "bench_attention_cuda: %s failed: %s\n", #expression, cublasLtGetStatusString(status_)); \
      std::exit(1);                                                                                          \
    }                                                                                                        \
  } while (0)

// ---------------------------------------------------------------------------------------------
// Inputs, checks
// ---------------------------------------------------------------------------------------------

// x[i] = scale * uniform(-1, 1) from a hash of (seed, i).
template <class E>
__global__ void random_fill(E* x, long long n, std::uint32_t seed, float scale) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    std::uint32_t h = static_cast<std::uint32_t>(i) * 0x9E3779B1u ^ (static_cast<std::uint32_t>(i >> 32) + seed * 0x85EBCA77u);
    h ^= h >> 16;
    h *= 0x7FEB352Du;
    h ^= h >> 15;
    h *= 0x846CA68Bu;
    h ^= h >> 16;
    const float u = static_cast<float>(h >> 8) * (1.0f / 8388608.0f) - 1.0f;
    x[i] = meap::detail::cuda_attention::from_float<E>(scale * u);
  }
}

// out[0] = max |a - b|, out[1] = max |b| (non-negative floats order like their bit patterns).
template <class E>
__global__ void max_difference(const E* a, const E* b, long long n, unsigned* out) {
  float diff = 0.f, size = 0.f;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const float x = meap::detail::cuda_attention::to_float(a[i]), y = meap::detail::cuda_attention::to_float(b[i]);
    diff = fmaxf(diff, isfinite(x) ? fabsf(x - y) : INFINITY);
    size = fmaxf(size, fabsf(y));
  }
  atomicMax(out, __float_as_uint(diff));
  atomicMax(out + 1, __float_as_uint(size));
}

// ---------------------------------------------------------------------------------------------
// The naive baseline on cuBLASLt
// ---------------------------------------------------------------------------------------------

// One strided-batched GEMM D = alpha op(A) op(B) in cuBLASLt's column-major terms, its algorithm
// chosen once by the heuristic.
struct lt_gemm {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};

  struct operand {
    cudaDataType_t type;
    std::uint64_t rows, cols;
    std::int64_t ld, batch_stride;
  };

  lt_gemm(cublasLtHandle_t handle, cublasOperation_t trans_a, cublasOperation_t trans_b, operand oa, operand ob,
          operand oc, int batch, std::size_t workspace) {
    BENCH_LT_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    BENCH_LT_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
    BENCH_LT_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
    const auto layout = [&](cublasLtMatrixLayout_t& l, const operand& o) {
      BENCH_LT_CHECK(cublasLtMatrixLayoutCreate(&l, o.type, o.rows, o.cols, o.ld));
      BENCH_LT_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof(batch)));
      BENCH_LT_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &o.batch_stride,
                                                      sizeof(o.batch_stride)));
    };
    layout(a, oa);
    layout(b, ob);
    layout(c, oc);
    cublasLtMatmulPreference_t preference = nullptr;
    BENCH_LT_CHECK(cublasLtMatmulPreferenceCreate(&preference));
    BENCH_LT_CHECK(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                                        sizeof(workspace)));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    BENCH_LT_CHECK(cublasLtMatmulAlgoGetHeuristic(handle, desc, a, b, c, c, preference, 1, &result, &found));
    (void)cublasLtMatmulPreferenceDestroy(preference);
    if (found == 0) {
      std::fprintf(stderr, "bench_attention_cuda: cuBLASLt found no algorithm for a baseline GEMM\n");
      std::exit(1);
    }
    algo = result.algo;
  }
  lt_gemm(const lt_gemm&) = delete;
  lt_gemm& operator=(const lt_gemm&) = delete;
  ~lt_gemm() {
    (void)cublasLtMatrixLayoutDestroy(c);
    (void)cublasLtMatrixLayoutDestroy(b);
    (void)cublasLtMatrixLayoutDestroy(a);
    (void)cublasLtMatmulDescDestroy(desc);
  }

  void run(cublasLtHandle_t handle, const void* A, const void* B, void* C, void* workspace, std::size_t workspace_bytes,
           cudaStream_t stream) const {
    const float alpha = 1.f, beta = 0.f;
    BENCH_LT_CHECK(cublasLtMatmul(handle, desc, &alpha, A, a, B, b, &beta, C, c, C, c, &algo, workspace,
                                  workspace_bytes, stream));
  }
};

// P[i, j] = softmax_j(scale S[i, j]) over j <= i, 0 for j > i: one block per row of the (H, T, T)
// scores of one batch row.
template <class E>
__global__ void causal_softmax(const float* scores, E* probabilities, int length, float scale) {
  const long long row = blockIdx.x;  // h * T + i
  const int i = static_cast<int>(row % length);
  const float* s = scores + row * length;
  E* p = probabilities + row * length;
  __shared__ float partial[32];
  const auto block_reduce = [&](float x, bool is_max) {
    for (int offset = 16; offset > 0; offset /= 2) {
      const float y = __shfl_xor_sync(0xffffffffu, x, offset);
      x = is_max ? fmaxf(x, y) : x + y;
    }
    if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = x;
    __syncthreads();
    float total = is_max ? -INFINITY : 0.f;
    for (unsigned w = 0; w < blockDim.x / 32; ++w) total = is_max ? fmaxf(total, partial[w]) : total + partial[w];
    __syncthreads();
    return total;
  };
  float mx = -INFINITY;
  for (int j = static_cast<int>(threadIdx.x); j <= i; j += static_cast<int>(blockDim.x)) mx = fmaxf(mx, s[j]);
  mx = block_reduce(mx, true);
  float sum = 0.f;
  for (int j = static_cast<int>(threadIdx.x); j <= i; j += static_cast<int>(blockDim.x)) sum += expf(scale * (s[j] - mx));
  sum = block_reduce(sum, false);
  const float inv = 1.f / sum;
  for (int j = static_cast<int>(threadIdx.x); j < length; j += static_cast<int>(blockDim.x))
    p[j] = meap::detail::cuda_attention::from_float<E>(j <= i ? expf(scale * (s[j] - mx)) * inv : 0.f);
}

// dS[i, j] = scale P[i, j] (dP[i, j] - sum_j' P[i, j'] dP[i, j']) (0 for j > i): one block per row.
template <class E>
__global__ void softmax_backward(const E* probabilities, const float* d_probabilities, E* d_scores, int length,
                                 float scale) {
  const long long row = blockIdx.x;
  const int i = static_cast<int>(row % length);
  const E* p = probabilities + row * length;
  const float* dp = d_probabilities + row * length;
  E* ds = d_scores + row * length;
  __shared__ float partial[32];
  float dot = 0.f;
  for (int j = static_cast<int>(threadIdx.x); j <= i; j += static_cast<int>(blockDim.x))
    dot += meap::detail::cuda_attention::to_float(p[j]) * dp[j];
  for (int offset = 16; offset > 0; offset /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = dot;
  __syncthreads();
  float delta = 0.f;
  for (unsigned w = 0; w < blockDim.x / 32; ++w) delta += partial[w];
  for (int j = static_cast<int>(threadIdx.x); j < length; j += static_cast<int>(blockDim.x))
    ds[j] = meap::detail::cuda_attention::from_float<E>(
        j <= i ? scale * meap::detail::cuda_attention::to_float(p[j]) * (dp[j] - delta) : 0.f);
}

// The naive attention of one shape: per batch row, the H heads as one strided batch.
template <class E>
struct naive_attention {
  int B, T, H, D;
  float scale;
  cudaDataType_t type;
  std::size_t workspace_bytes = 32u << 20;
  void* workspace = nullptr;
  float* scores = nullptr;  // (H, T, T): S, then dP
  E* probabilities = nullptr;  // (H, T, T)
  E* d_scores = nullptr;       // (H, T, T)
  // Q-like operands (D x T column-major views of (T, H, D) rows, ld H D, batch stride D) and the
  // (T x T, ld T, batch stride T^2) score matrices.
  lt_gemm scores_gemm, values_gemm, grad_values_gemm;

  static std::size_t bytes_needed(int length, int heads) {
    return static_cast<std::size_t>(heads) * length * length * (sizeof(float) + 2 * sizeof(E)) + (32u << 20);
  }

  naive_attention(cublasLtHandle_t handle, int B_, int T_, int H_, int D_, cudaDataType_t type_)
      : B(B_), T(T_), H(H_), D(D_), scale(1.f / std::sqrt(static_cast<float>(D_))), type(type_),
        // C (T x T) = K^T Q: column-major C[j, i] = k_j . q_i, i.e. row-major S[i, j]  (also dP = dO V^T)
        scores_gemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, {type_, ucast(D_), ucast(T_), ld(), D_}, {type_, ucast(D_), ucast(T_), ld(), D_},
                    {CUDA_R_32F, ucast(T_), ucast(T_), T_, square()}, H_, workspace_bytes),
        // C (D x T) = V P^T: C[d, i] = sum_j V[j, d] P[i, j], i.e. O = P V  (also dQ = dS K)
        values_gemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, {type_, ucast(D_), ucast(T_), ld(), D_},
                    {type_, ucast(T_), ucast(T_), T_, square()}, {type_, ucast(D_), ucast(T_), ld(), D_}, H_,
                    workspace_bytes),
        // C (D x T) = dO P: C[d, j] = sum_i dO[i, d] P[i, j], i.e. dV = P^T dO  (also dK = dS^T Q)
        grad_values_gemm(handle, CUBLAS_OP_N, CUBLAS_OP_T, {type_, ucast(D_), ucast(T_), ld(), D_},
                         {type_, ucast(T_), ucast(T_), T_, square()}, {type_, ucast(D_), ucast(T_), ld(), D_}, H_,
                         workspace_bytes) {
    const std::size_t squares = static_cast<std::size_t>(H) * T * T;
    MEAP_CUDA_CHECK(cudaMalloc(&workspace, workspace_bytes));
    MEAP_CUDA_CHECK(cudaMalloc(&scores, squares * sizeof(float)));
    MEAP_CUDA_CHECK(cudaMalloc(&probabilities, squares * sizeof(E)));
    MEAP_CUDA_CHECK(cudaMalloc(&d_scores, squares * sizeof(E)));
  }
  ~naive_attention() {
    (void)cudaFree(d_scores);
    (void)cudaFree(probabilities);
    (void)cudaFree(scores);
    (void)cudaFree(workspace);
  }
  naive_attention(const naive_attention&) = delete;
  naive_attention& operator=(const naive_attention&) = delete;

  static std::uint64_t ucast(int x) { return static_cast<std::uint64_t>(x); }
  std::int64_t ld() const { return static_cast<std::int64_t>(H) * D; }
  std::int64_t square() const { return static_cast<std::int64_t>(T) * T; }
  long long row_offset(int b) const { return static_cast<long long>(b) * T * H * D; }

  void forward(cublasLtHandle_t handle, const E* q, const E* k, const E* v, E* out, cudaStream_t stream) const {
    for (int b = 0; b < B; ++b) {
      const long long o = row_offset(b);
      scores_gemm.run(handle, k + o, q + o, scores, workspace, workspace_bytes, stream);
      causal_softmax<E><<<static_cast<unsigned>(H * T), 256, 0, stream>>>(scores, probabilities, T, scale);
      values_gemm.run(handle, v + o, probabilities, out + o, workspace, workspace_bytes, stream);
    }
  }
  // Forward and backward together (the backward needs each row's P).
  void forward_backward(cublasLtHandle_t handle, const E* q, const E* k, const E* v, const E* d_out, E* out, E* d_q,
                        E* d_k, E* d_v, cudaStream_t stream) const {
    for (int b = 0; b < B; ++b) {
      const long long o = row_offset(b);
      scores_gemm.run(handle, k + o, q + o, scores, workspace, workspace_bytes, stream);
      causal_softmax<E><<<static_cast<unsigned>(H * T), 256, 0, stream>>>(scores, probabilities, T, scale);
      values_gemm.run(handle, v + o, probabilities, out + o, workspace, workspace_bytes, stream);
      scores_gemm.run(handle, v + o, d_out + o, scores, workspace, workspace_bytes, stream);  // dP = dO V^T
      softmax_backward<E><<<static_cast<unsigned>(H * T), 256, 0, stream>>>(probabilities, scores, d_scores, T, scale);
      grad_values_gemm.run(handle, d_out + o, probabilities, d_v + o, workspace, workspace_bytes, stream);  // dV
      values_gemm.run(handle, k + o, d_scores, d_q + o, workspace, workspace_bytes, stream);               // dQ
      grad_values_gemm.run(handle, q + o, d_scores, d_k + o, workspace, workspace_bytes, stream);          // dK
    }
  }
};

// ---------------------------------------------------------------------------------------------
// Timing and the run
// ---------------------------------------------------------------------------------------------

template <class F>
double best_ms(cudaStream_t stream, int repeats, F&& f) {
  cudaEvent_t start = nullptr, stop = nullptr;
  MEAP_CUDA_CHECK(cudaEventCreate(&start));
  MEAP_CUDA_CHECK(cudaEventCreate(&stop));
  f();  // warm-up
  MEAP_CUDA_CHECK(cudaStreamSynchronize(stream));
  float best = 1e30f;
  for (int r = 0; r < repeats; ++r) {
    MEAP_CUDA_CHECK(cudaEventRecord(start, stream));
    f();
    MEAP_CUDA_CHECK(cudaEventRecord(stop, stream));
    MEAP_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0.f;
    MEAP_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    best = std::min(best, ms);
  }
  (void)cudaEventDestroy(start);
  (void)cudaEventDestroy(stop);
  return best;
}

struct options {
  std::string dtype = "bf16";
  std::string sdpa_file;
  int repeats = 10;
  long long min_t = 512, max_t = 16384;
  bool naive = true;
};

// SDPA figures: lines "D T fwd_ms fwd_bwd_ms" ('#' starts a comment).
std::map<std::pair<int, int>, std::pair<double, double>> read_sdpa(const std::string& path) {
  std::map<std::pair<int, int>, std::pair<double, double>> figures;
  if (path.empty()) return figures;
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read --sdpa file '" + path + "'");
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    int d = 0, t = 0;
    double fwd = 0, both = 0;
    if (fields >> d >> t >> fwd >> both) figures[{d, t}] = {fwd, both};
  }
  return figures;
}

double tflops(double flops, double ms) { return flops / (ms * 1e-3) / 1e12; }

template <class T>
int run(const options& opt) {
  using E = meap::native_t<T>;
  const cudaDataType_t lt_type = std::is_same_v<T, meap::half> ? CUDA_R_16F : CUDA_R_16BF;
  const auto sdpa = read_sdpa(opt.sdpa_file);
  cudaStream_t stream = nullptr;
  MEAP_CUDA_CHECK(cudaStreamCreate(&stream));
  cublasLtHandle_t handle = nullptr;
  BENCH_LT_CHECK(cublasLtCreate(&handle));
  cudaDeviceProp properties{};
  MEAP_CUDA_CHECK(cudaGetDeviceProperties(&properties, 0));
  std::printf("bench_attention_cuda: %s (sm_%d%d), %s, causal, B*T = 16384 tokens, hidden 2048 (H = 2048 / D), MHA\n",
              properties.name, properties.major, properties.minor, opt.dtype.c_str());
  std::printf("FLOPs: forward 4 B T^2 H D / 2, backward 2.5x; best of %d runs; ratios are meap / baseline%s\n\n",
              opt.repeats, opt.sdpa_file.empty() ? " (no --sdpa file: SDPA columns empty)" : "");
  std::printf("%4s %6s %3s %3s | %9s %8s | %9s %8s | %8s %6s %8s %6s | %8s %6s %8s %6s | %9s\n", "D", "T", "B", "H",
              "fwd ms", "TFLOP/s", "f+b ms", "TFLOP/s", "naive f", "x", "naive fb", "x", "sdpa f", "x", "sdpa fb", "x",
              "err/naive");
  const meap::cuda device(stream);
  const meap_bench::figures figures("attention");
  for (const int D : {64, 128}) {
    const int H = 2048 / D;
    for (long long L = opt.min_t; L <= opt.max_t; L *= 2) {
      const int B = static_cast<int>(std::max<long long>(1, 16384 / L));
      const dims q_shape{B, L, H, D};
      meap::tensor<T, meap::cuda> q(device, q_shape), k(device, q_shape), v(device, q_shape), out(device, q_shape),
          d_out(device, q_shape), d_q(device, q_shape), d_k(device, q_shape), d_v(device, q_shape);
      meap::tensor<float, meap::cuda> lse(device, dims{B, H, L});
      const long long n = q_shape.product();
      const auto fill = [&](T* x, std::uint32_t seed, float scale) {
        random_fill<E><<<1024, 256, 0, stream>>>(reinterpret_cast<E*>(x), n, seed, scale);
        MEAP_CUDA_CHECK(cudaGetLastError());
      };
      fill(q.data(), 1, 2.f);
      fill(k.data(), 2, 2.f);
      fill(v.data(), 3, 1.f);
      fill(d_out.data(), 4, 1.f);

      const auto forward = [&] {
        meap::attention_forward<T>(device, q.view(), k.view(), v.view(), out.view(), lse.view());
      };
      const auto forward_backward = [&] {
        forward();
        meap::attention_backward<T>(device, q.view(), k.view(), v.view(), out.view(), lse.view(), d_out.view(),
                                    d_q.view(), d_k.view(), d_v.view());
      };
      const double fwd_ms = best_ms(stream, opt.repeats, forward);
      const double both_ms = best_ms(stream, opt.repeats, forward_backward);
      const double fwd_flops = plan::causal_forward_flops(B, static_cast<double>(L), H, D);
      const double both_flops = fwd_flops + plan::causal_backward_flops(B, static_cast<double>(L), H, D);

      char naive_f[64] = "-", naive_fx[32] = "-", naive_fb[64] = "-", naive_fbx[32] = "-", error[32] = "-";
      std::optional<double> naive_fwd_ms, naive_both_ms, naive_error, sdpa_fwd_ms, sdpa_both_ms;
      std::size_t free_bytes = 0, total_bytes = 0;
      MEAP_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
      if (opt.naive &&
          naive_attention<E>::bytes_needed(static_cast<int>(L), H) < static_cast<std::size_t>(0.7 * static_cast<double>(free_bytes))) {
        const naive_attention<E> naive(handle, B, static_cast<int>(L), H, D, lt_type);
        meap::tensor<T, meap::cuda> n_out(device, q_shape), n_dq(device, q_shape), n_dk(device, q_shape), n_dv(device, q_shape);
        const auto* qe = reinterpret_cast<const E*>(q.data());
        const auto* ke = reinterpret_cast<const E*>(k.data());
        const auto* ve = reinterpret_cast<const E*>(v.data());
        const auto* doe = reinterpret_cast<const E*>(d_out.data());
        const double nf = best_ms(stream, opt.repeats,
                                  [&] { naive.forward(handle, qe, ke, ve, reinterpret_cast<E*>(n_out.data()), stream); });
        const double nfb = best_ms(stream, opt.repeats, [&] {
          naive.forward_backward(handle, qe, ke, ve, doe, reinterpret_cast<E*>(n_out.data()),
                                 reinterpret_cast<E*>(n_dq.data()), reinterpret_cast<E*>(n_dk.data()),
                                 reinterpret_cast<E*>(n_dv.data()), stream);
        });
        naive_fwd_ms = nf;
        naive_both_ms = nfb;
        std::snprintf(naive_f, sizeof naive_f, "%.1f", tflops(fwd_flops, nf));
        std::snprintf(naive_fx, sizeof naive_fx, "%.2f", nf / fwd_ms);
        std::snprintf(naive_fb, sizeof naive_fb, "%.1f", tflops(both_flops, nfb));
        std::snprintf(naive_fbx, sizeof naive_fbx, "%.2f", nfb / both_ms);
        // meap's outputs against the naive ones: the largest of max|diff| / max|naive| over O, dQ, dK, dV.
        forward_backward();
        meap::tensor<unsigned, meap::cuda> stats(device, dims{8});
        MEAP_CUDA_CHECK(cudaMemsetAsync(stats.data(), 0, 8 * sizeof(unsigned), stream));
        const std::pair<const T*, const T*> pairs[] = {
            {out.data(), n_out.data()}, {d_q.data(), n_dq.data()}, {d_k.data(), n_dk.data()}, {d_v.data(), n_dv.data()}};
        for (int i = 0; i < 4; ++i) {
          max_difference<E><<<512, 256, 0, stream>>>(reinterpret_cast<const E*>(pairs[i].first),
                                                     reinterpret_cast<const E*>(pairs[i].second), n,
                                                     stats.data() + 2 * i);
          MEAP_CUDA_CHECK(cudaGetLastError());
        }
        const auto host_stats = meap::to_host(device, stats.view());
        double worst = 0;
        for (int i = 0; i < 4; ++i) {
          float diff = 0, size = 0;
          std::memcpy(&diff, host_stats.data() + 2 * i, sizeof diff);
          std::memcpy(&size, host_stats.data() + 2 * i + 1, sizeof size);
          worst = std::max(worst, static_cast<double>(diff) / std::max(1e-30, static_cast<double>(size)));
        }
        naive_error = worst;
        std::snprintf(error, sizeof error, "%.2e", worst);
      }
      char sdpa_f[32] = "-", sdpa_fx[32] = "-", sdpa_fb[32] = "-", sdpa_fbx[32] = "-";
      if (const auto found = sdpa.find({D, static_cast<int>(L)}); found != sdpa.end()) {
        sdpa_fwd_ms = found->second.first;
        sdpa_both_ms = found->second.second;
        std::snprintf(sdpa_f, sizeof sdpa_f, "%.1f", tflops(fwd_flops, found->second.first));
        std::snprintf(sdpa_fx, sizeof sdpa_fx, "%.2f", found->second.first / fwd_ms);
        std::snprintf(sdpa_fb, sizeof sdpa_fb, "%.1f", tflops(both_flops, found->second.second));
        std::snprintf(sdpa_fbx, sizeof sdpa_fbx, "%.2f", found->second.second / both_ms);
      }
      std::printf("%4d %6lld %3d %3d | %9.3f %8.1f | %9.3f %8.1f | %8s %6s %8s %6s | %8s %6s %8s %6s | %9s\n", D, L, B, H,
                  fwd_ms, tflops(fwd_flops, fwd_ms), both_ms, tflops(both_flops, both_ms), naive_f, naive_fx, naive_fb,
                  naive_fbx, sdpa_f, sdpa_fx, sdpa_fb, sdpa_fbx, error);
      std::fflush(stdout);
      figures.add({{"dtype", opt.dtype}, {"D", D}, {"T", L}, {"B", B}, {"H", H}, {"fwd_ms", fwd_ms},
                   {"fwd_tflops", tflops(fwd_flops, fwd_ms)}, {"fwd_bwd_ms", both_ms},
                   {"fwd_bwd_tflops", tflops(both_flops, both_ms)}, {"naive_fwd_ms", figures.maybe(naive_fwd_ms)},
                   {"naive_fwd_bwd_ms", figures.maybe(naive_both_ms)}, {"sdpa_fwd_ms", figures.maybe(sdpa_fwd_ms)},
                   {"sdpa_fwd_bwd_ms", figures.maybe(sdpa_both_ms)}, {"max_error_vs_naive", figures.maybe(naive_error)}});
    }
  }
  (void)cublasLtDestroy(handle);
  MEAP_CUDA_CHECK(cudaStreamSynchronize(stream));
  (void)cudaStreamDestroy(stream);
  return 0;
}

int run_bench(int argc, char** argv) {
  options opt;
  CLI::App app{"bench_attention_cuda: causal attention on a CUDA device in TFLOP/s, forward and forward+backward, "
               "against a cuBLASLt naive attention and (--sdpa) PyTorch SDPA",
               "bench_attention_cuda"};
  app.add_option("--dtype", opt.dtype, "element type")->check(CLI::IsMember({"bf16", "fp16"}))->capture_default_str();
  app.add_option("--sdpa", opt.sdpa_file, "PyTorch SDPA figures written by bench/attention_sdpa.py")
      ->check(CLI::ExistingFile);
  app.add_option("--repeats", opt.repeats, "timed runs per figure (the best is kept)")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  // T doubles from --min-t while it is at most --max-t; the naive baseline takes T as an int.
  app.add_option("--min-t", opt.min_t, "the shortest sequence length")
      ->check(CLI::Range(1ll, 1ll << 30))
      ->capture_default_str();
  app.add_option("--max-t", opt.max_t, "the longest sequence length")
      ->check(CLI::Range(1ll, 1ll << 30))
      ->capture_default_str();
  app.add_flag_callback("--no-naive", [&] { opt.naive = false; },
                        "skip the cuBLASLt naive baseline (and the error check it gives)");
  app.callback([&] {
    if (opt.max_t < opt.min_t)
      throw CLI::ValidationError("--max-t", "Value " + std::to_string(opt.max_t) + " is less than --min-t (" +
                                                std::to_string(opt.min_t) + ")");
  });
  if (const int code = meap_bench::parse(app, argc, argv); code >= 0) return code;
  if (!meap::has_cuda_device()) {
    std::printf("bench_attention_cuda: no CUDA device is available; nothing measured\n");
    return 0;
  }
  return opt.dtype == "bf16" ? run<meap::bfloat16>(opt) : run<meap::half>(opt);
}

}  // namespace

int main(int argc, char** argv) {
  return meap_bench::guarded_main("bench_attention_cuda", [&] { return run_bench(argc, argv); });
}
