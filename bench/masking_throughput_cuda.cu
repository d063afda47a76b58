// bench_masking_cuda: rows per second for masking a [64, 4096] pretraining batch on a CUDA device,
// against the CPU path (meap::cpu, one thread) measured in the same run. Each GPU figure covers
// one whole apply(): its kernels and the one stream synchronization it makes to validate the
// batch. A device-to-device copy of the batch into input_ids and labels is printed as the floor.
// Usage: bench_masking_cuda [rows, default 64] [T, default 4096] (--help)
#include <meap/cuda.hpp>

#include "support/figures.hpp"
#include "support/main.hpp"
#include "support/timing.hpp"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <span>
#include <vector>

namespace {

namespace mm = meap::masking;

using meap_bench::best_seconds;

int run_bench(int argc, char** argv) {
  long long rows = 64;
  long long length = 4096;
  CLI::App app{"bench_masking_cuda: rows per second for masking a [rows, T] pretraining batch on a CUDA device, "
               "against meap::cpu on one thread",
               "bench_masking_cuda"};
  app.add_option("rows", rows, "sequences in the batch")->check(CLI::Range(1ll, 1ll << 24))->capture_default_str();
  // T is at most INT32_MAX: the masking policies take a row length as std::int32_t.
  app.add_option("T", length, "input positions per sequence")
      ->check(CLI::Range(2ll, static_cast<long long>(INT32_MAX)))
      ->capture_default_str();
  if (const int code = meap_bench::parse(app, argc, argv); code >= 0) return code;
  if (!meap::has_cuda_device()) {
    std::printf("bench_masking_cuda: no CUDA device is available; nothing measured\n");
    return 0;
  }
  const long long columns = length + 1;
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(rows * columns));
  meap::philox_stream words(1, 2);
  for (auto& token : tokens) token = 10 + static_cast<std::int32_t>(words.next_below(32000));
  const auto host_batch = meap::make_view(std::span<const std::int32_t>(tokens), {rows, columns});
  cudaStream_t stream = nullptr;
  MEAP_CUDA_CHECK(cudaStreamCreate(&stream));
  {
    const meap::cuda device(stream);
    const auto device_batch = meap::to_device(device, host_batch);
    auto device_out = mm::masked_batch<meap::cuda>{meap::tensor<std::int32_t, meap::cuda>(device, {rows, length}),
                                                   meap::tensor<std::int32_t, meap::cuda>(device, {rows, length}),
                                                   meap::tensor<std::uint8_t, meap::cuda>(device, {rows, length})};
    auto host_out = mm::masked_batch<meap::cpu>{meap::tensor<std::int32_t, meap::cpu>(meap::cpu{}, {rows, length}),
                                                meap::tensor<std::int32_t, meap::cpu>(meap::cpu{}, {rows, length}),
                                                meap::tensor<std::uint8_t, meap::cpu>(meap::cpu{}, {rows, length})};
    mm::pretraining_options options{.seed = 7, .mask_id = 3};
    constexpr int repeats = 11;
    const auto on_gpu = [&](const auto& policy) {
      mm::apply(device, policy, device_batch.view(), options, device_out.view());  // warm-up
      meap::synchronize(device);
      return best_seconds(repeats, [&] {
        ++options.step;
        mm::apply(device, policy, device_batch.view(), options, device_out.view());
        meap::synchronize(device);
      });
    };
    const auto on_cpu = [&](const auto& policy) {
      return best_seconds(repeats, [&] {
        ++options.step;
        mm::apply(meap::cpu{}, policy, host_batch, options, host_out.view());
      });
    };
    const double copied = best_seconds(repeats, [&] {
      const auto bytes = static_cast<std::size_t>(length) * sizeof(std::int32_t);
      const std::size_t pitch = static_cast<std::size_t>(columns) * sizeof(std::int32_t);
      MEAP_CUDA_CHECK(cudaMemcpy2DAsync(device_out.input_ids.data(), bytes, device_batch.data(), pitch, bytes,
                                        static_cast<std::size_t>(rows), cudaMemcpyDeviceToDevice, stream));
      MEAP_CUDA_CHECK(cudaMemcpy2DAsync(device_out.labels.data(), bytes, device_batch.data() + 1, pitch, bytes,
                                        static_cast<std::size_t>(rows), cudaMemcpyDeviceToDevice, stream));
      meap::synchronize(device);
    });

    cudaDeviceProp properties{};
    MEAP_CUDA_CHECK(cudaGetDeviceProperties(&properties, 0));
    std::printf("masking a [%lld, %lld] batch on %s; baseline: meap::cpu (one thread) in this run\n", rows, length,
                properties.name);
    std::printf("%-34s %14s %14s %8s\n", "policy", "GPU rows/s", "CPU rows/s", "ratio");
    const meap_bench::figures figures("masking");
    const auto line = [&](const char* name, double gpu, double cpu) {
      std::printf("%-34s %14.0f %14.0f %8.2f\n", name, static_cast<double>(rows) / gpu, static_cast<double>(rows) / cpu,
                  cpu / gpu);
      figures.add({{"policy", name}, {"rows", rows}, {"T", length}, {"gpu_rows_per_s", static_cast<double>(rows) / gpu},
                   {"cpu_one_thread_rows_per_s", static_cast<double>(rows) / cpu}});
    };
    line("fixed_ratio 0.15, per_row", on_gpu(mm::fixed_ratio{}), on_cpu(mm::fixed_ratio{}));
    line("fixed_ratio 0.15, per_batch", on_gpu(mm::fixed_ratio{.sharing = mm::sharing::per_batch}),
         on_cpu(mm::fixed_ratio{.sharing = mm::sharing::per_batch}));
    line("span 0.15 (mean 3, max 10), per_row", on_gpu(mm::span{}), on_cpu(mm::span{}));
    std::printf("%-34s %14.0f  (device copy of the batch only: the floor)\n", "copy of tokens to ids + labels",
                static_cast<double>(rows) / copied);
    figures.add({{"policy", "copy only (the floor)"}, {"rows", rows}, {"T", length},
                 {"gpu_rows_per_s", static_cast<double>(rows) / copied}});
  }
  MEAP_CUDA_CHECK(cudaStreamDestroy(stream));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return meap_bench::guarded_main("bench_masking_cuda", [&] { return run_bench(argc, argv); });
}
