// The CUDA half of meap_pretrain: the loop of pretrain_run.hpp instantiated for meap::cuda, in
// bfloat16 (mixed, the default), half (mixed, dynamic loss scaling) or float32, on its own stream.
#include "pretrain_run.hpp"
#include "dist_launch.hpp"

#include <meap/cuda.hpp>

#include <cstdio>

int meap_pretrain::run_cuda(const arguments& a, meap::dist::process_group<meap::cpu>* host) {
  meap_examples::gpu_ranks gpu("meap_pretrain", a.device, a.cuda_ordinal, host);
  const int ordinal = gpu.ordinal();
  meap::dist::process_group<meap::cuda>* group = gpu.group();
  meap::cuda_stream stream;
  const meap::cuda device = stream.device();
  const bool tensor_cores = a.dtype != "fp32";
  const double peak = a.peak_tflops > 0 ? a.peak_tflops * 1e12 : meap::cuda_peak_flops(ordinal, tensor_cores);
  std::fprintf(stderr, "device: %s, MFU against %.0f TFLOP/s (%s)\n", meap::cuda_device_name(ordinal).c_str(),
               peak * 1e-12, a.peak_tflops > 0 ? "--peak-tflops" : "estimated: SMs x clock x dense FLOPs per SM and clock");
  const memory_budget budget{static_cast<double>(meap::cuda_memory().free), "on the GPU"};
  if (a.dtype == "fp16") return run_with_policy<meap::fp16_mixed>(a, device, peak, budget, group);
  if (a.dtype == "fp32") return run_with_policy<meap::fp32>(a, device, peak, budget, group);
  return run_with_policy<meap::bf16_mixed>(a, device, peak, budget, group);
}
