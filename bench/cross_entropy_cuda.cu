// bench_cross_entropy_cuda: the selective cross-entropy fused with the LM head on CUDA against the
// usual full-logits path, measured in the same binary on the same inputs (bfloat16):
//
//   fused:    meap::linear_cross_entropy: the selected rows only, logits one row block at a time
//             (at most logits_budget_bytes), gradients for hidden and the head weight.
//   baseline: logits = hidden weight^T for all N rows through cuBLASLt (meap::gemm, (N, V) bf16),
//             meap::cross_entropy on them (a plain softmax-CE kernel writing (N, V) bf16
//             d_logits), then d_hidden = d_logits weight and d_weight = d_logits^T hidden.
//
// Each figure is the best of `repeats` calls, forward + backward (and forward only), wall clock
// with the stream synchronized (both paths synchronize once inside, to check the labels).
// Memory: the default memory pool's high-water mark (cudaMemPoolAttrUsedMemHigh) during one call,
// minus what was in use before it (inputs and gradient outputs are allocated beforehand, so this
// is the extra working memory); cuBLASLt's 32 MiB workspace is cudaMalloc'ed once and counted by
// neither. FLOPs are the textbook 3 x 2 rows V d of the three GEMMs (forward, d_hidden, d_weight).
//
// Usage: bench_cross_entropy_cuda [tokens N = 16384] [d = 2048] [V = 32000] [selected fraction = 0.3]
//        [logits budget MiB = 256] (--help)
// The PyTorch figure for the same shapes: python3 bench/cross_entropy_torch.py (GPU machine).
#include <meap/cuda.hpp>

#include "support/figures.hpp"
#include "support/main.hpp"
#include "support/timing.hpp"

#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

namespace {

using meap::index_t;
using meap_bench::best_seconds;
using bf16 = meap::bfloat16;

// Uniform values in [-scale, scale), generated on the host from a Philox stream.
std::vector<bf16> uniform_values(std::uint64_t seed, index_t n, float scale) {
  std::vector<bf16> values(static_cast<std::size_t>(n));
  meap::philox_stream random(seed, 0);
  for (auto& v : values) v = bf16((static_cast<float>(random.next_u32()) * 0x1p-32f * 2.0f - 1.0f) * scale);
  return values;
}

struct memory_probe {
  cudaMemPool_t pool = nullptr;
  explicit memory_probe(int ordinal) { MEAP_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, ordinal)); }
  // Extra pool memory (bytes) in use at the peak of f(), over what was in use before it.
  template <class F>
  std::uint64_t peak_extra(const meap::cuda& device, F&& f) {
    meap::synchronize(device);
    std::uint64_t zero = 0, before = 0, high = 0;
    MEAP_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &zero));  // resets to the current use
    MEAP_CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &before));
    f();
    meap::synchronize(device);
    MEAP_CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &high));
    return high > before ? high - before : 0;
  }
};

double mib(std::uint64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

int run_bench(int argc, char** argv) {
  long long N = 16384;
  long long d = 2048;
  long long V = 32000;
  double fraction = 0.3;
  long long budget_mib = 256;
  CLI::App app{"bench_cross_entropy_cuda: the selective cross-entropy fused with the LM head against full logits + "
               "softmax-CE, bfloat16, time and peak extra memory",
               "bench_cross_entropy_cuda"};
  // Labels are std::int32_t class ids, so V stays below 2^31.
  app.add_option("N", N, "tokens (rows of hidden)")->check(CLI::Range(1ll, 1ll << 30))->capture_default_str();
  app.add_option("d", d, "hidden size")->check(CLI::Range(1ll, 1ll << 20))->capture_default_str();
  app.add_option("V", V, "vocabulary size")->check(CLI::Range(2ll, static_cast<long long>(INT32_MAX)))->capture_default_str();
  app.add_option("fraction", fraction, "fraction of the rows that carry a label")
      ->check(meap_bench::fraction())
      ->capture_default_str();
  app.add_option("budget_mib", budget_mib, "the fused path's logits budget in MiB (cross_entropy_options)")
      ->check(CLI::Range(1ll, 1ll << 20))
      ->capture_default_str();
  if (const int code = meap_bench::parse(app, argc, argv); code >= 0) return code;
  if (!meap::has_cuda_device()) {
    std::printf("bench_cross_entropy_cuda: no CUDA device is available; nothing measured\n");
    return 0;
  }
  cudaDeviceProp properties{};
  MEAP_CUDA_CHECK(cudaGetDeviceProperties(&properties, 0));
  std::printf("device: %s (sm_%d%d); N = %lld tokens, d = %lld, V = %lld, %.0f%% selected, bfloat16\n", properties.name,
              properties.major, properties.minor, N, d, V, 100 * fraction);

  // Inputs: hidden ~ U(-1, 1), head ~ U(-0.05, 0.05); labels: every row with probability `fraction`.
  const auto hidden_host = uniform_values(1, N * d, 1.0f);
  const auto weight_host = uniform_values(2, V * d, 0.05f);
  std::vector<std::int32_t> labels_host(static_cast<std::size_t>(N));
  meap::philox_stream draws(3, 0);
  index_t selected = 0;
  for (auto& y : labels_host) {
    const bool keep = static_cast<double>(draws.next_u32()) * 0x1p-32 < fraction;
    y = keep ? static_cast<std::int32_t>(draws.next_below(static_cast<std::uint32_t>(V))) : meap::ignore_index;
    selected += keep;
  }

  cudaStream_t stream = nullptr;
  MEAP_CUDA_CHECK(cudaStreamCreate(&stream));
  {
    const meap::cuda device(stream);
    const auto hidden = meap::to_device(device, meap::make_view(std::span<const bf16>(hidden_host), {N, d}));
    const auto weight = meap::to_device(device, meap::make_view(std::span<const bf16>(weight_host), {V, d}));
    const auto labels = meap::to_device(device, meap::make_view(std::span<const std::int32_t>(labels_host), {N}));
    meap::tensor<bf16, meap::cuda> d_hidden(device, {N, d}), d_weight(device, {V, d});
    // The baseline's (N, V) logits and their gradient, allocated inside each call like any
    // framework's activations would be.
    meap::cross_entropy_options<meap::cuda> tuning;
    tuning.logits_budget_bytes = static_cast<std::size_t>(budget_mib) << 20;
    int ordinal = 0;
    MEAP_CUDA_CHECK(cudaGetDevice(&ordinal));
    memory_probe probe(ordinal);

    double fused_loss = 0, baseline_loss = 0;
    const auto fused = [&] {
      fused_loss = meap::linear_cross_entropy<bf16>(device, hidden.view(), weight.view(), labels.view(),
                                                    d_hidden.view(), d_weight.view(), tuning)
                       .loss;
    };
    const auto fused_forward = [&] {
      fused_loss = meap::linear_cross_entropy(device, hidden.view(), weight.view(), labels.view(), tuning).loss;
    };
    const auto baseline = [&](bool backward) {
      meap::tensor<bf16, meap::cuda> logits(device, {N, V});
      meap::gemm<bf16>(device, hidden.view(), meap::gemm_transpose::no, weight.view(), meap::gemm_transpose::yes,
                       logits.view());
      if (!backward) {
        baseline_loss = meap::cross_entropy(device, logits.view(), labels.view()).loss;
        return;
      }
      meap::tensor<bf16, meap::cuda> d_logits(device, {N, V});
      baseline_loss = meap::cross_entropy(device, logits.view(), labels.view(), d_logits.view()).loss;
      meap::gemm<bf16>(device, d_logits.view(), meap::gemm_transpose::no, weight.view(), meap::gemm_transpose::no,
                       d_hidden.view());
      meap::gemm<bf16>(device, d_logits.view(), meap::gemm_transpose::yes, hidden.view(), meap::gemm_transpose::no,
                       d_weight.view());
    };

    constexpr int repeats = 7;
    const auto timed = [&](auto&& f) {
      f();  // warm-up: cuBLASLt plans, the memory pool
      meap::synchronize(device);
      return best_seconds(repeats, [&] {
        f();
        meap::synchronize(device);
      });
    };
    const double t_fused = timed(fused);
    const double t_base = timed([&] { baseline(true); });
    const double t_fused_fwd = timed(fused_forward);
    const double t_base_fwd = timed([&] { baseline(false); });
    const std::uint64_t m_fused = probe.peak_extra(device, fused);
    const std::uint64_t m_base = probe.peak_extra(device, [&] { baseline(true); });

    const double flops_fused = 3.0 * 2.0 * static_cast<double>(selected) * static_cast<double>(V) * static_cast<double>(d);
    const double flops_base = 3.0 * 2.0 * static_cast<double>(N) * static_cast<double>(V) * static_cast<double>(d);
    const auto tiling = meap::detail::cuda_plan::plan_cross_entropy(selected, V, tuning.logits_budget_bytes, 6);
    std::printf("selected rows: %lld of %lld; fused tiling: %lld row blocks of %lld x %lld vocabulary chunk(s) of %lld\n",
                static_cast<long long>(selected), N, static_cast<long long>(tiling.row_blocks),
                static_cast<long long>(tiling.row_block), static_cast<long long>(tiling.vocab_chunks),
                static_cast<long long>(tiling.vocab_chunk));
    std::printf("loss: fused %.6f, baseline %.6f\n", fused_loss, baseline_loss);
    std::printf("%-34s %10s %10s %14s\n", "path", "ms", "TFLOP/s", "extra MiB");
    std::printf("%-34s %10.3f %10.1f %14.1f\n", "fused selective CE, fwd+bwd", 1e3 * t_fused,
                flops_fused / t_fused * 1e-12, mib(m_fused));
    std::printf("%-34s %10.3f %10.1f %14.1f\n", "full logits + softmax-CE, fwd+bwd", 1e3 * t_base,
                flops_base / t_base * 1e-12, mib(m_base));
    std::printf("%-34s %10.3f %10s %14s\n", "fused selective CE, fwd", 1e3 * t_fused_fwd, "", "");
    std::printf("%-34s %10.3f %10s %14s\n", "full logits + softmax-CE, fwd", 1e3 * t_base_fwd, "", "");
    std::printf("ratio baseline / fused: time %.2fx (fwd+bwd), %.2fx (fwd); peak extra memory %.2fx\n",
                t_base / t_fused, t_base_fwd / t_fused_fwd,
                m_fused > 0 ? static_cast<double>(m_base) / static_cast<double>(m_fused) : 0.0);
    std::printf("(the (N, V) bf16 logits alone are %.1f MiB)\n", mib(static_cast<std::uint64_t>(N * V * 2)));
    meap_bench::figures("cross_entropy")
        .add({{"tokens", N}, {"d", d}, {"V", V}, {"selected", selected}, {"dtype", "bf16"},
              {"fused_fwd_bwd_ms", 1e3 * t_fused}, {"fused_fwd_ms", 1e3 * t_fused_fwd},
              {"fused_tflops", flops_fused / t_fused * 1e-12}, {"fused_extra_mib", mib(m_fused)},
              {"full_logits_fwd_bwd_ms", 1e3 * t_base}, {"full_logits_fwd_ms", 1e3 * t_base_fwd},
              {"full_logits_extra_mib", mib(m_base)}, {"fused_loss", fused_loss}, {"full_logits_loss", baseline_loss}});
  }
  MEAP_CUDA_CHECK(cudaStreamDestroy(stream));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return meap_bench::guarded_main("bench_cross_entropy_cuda", [&] { return run_bench(argc, argv); });
}
