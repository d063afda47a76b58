// The apps' GPU entry points (apps/runs.hpp): the rank's device (and NCCL group under mpirun), a
// stream, the memory budget of the GPU, then the run in the precision --dtype names. The runs
// themselves are compiled in apps/instances/cuda_*.cu.
#include <meap/cuda.hpp>
#include <meap/dist/launch.hpp>

#include "runs.hpp"

#include <cstdio>

namespace meap_apps {

int pretrain_on_cuda(meap::run::pretrain_options options, const std::string& dtype, const std::string& device,
                     int ordinal, double peak_tflops, meap::dist::process_group<meap::cpu>* host) {
  meap::dist::gpu_rank gpu(options.program, device, ordinal, host);
  meap::cuda_stream stream;
  const meap::cuda on = stream.device();
  const bool tensor_cores = dtype != "fp32";
  options.peak_flops = peak_tflops > 0 ? peak_tflops * 1e12 : meap::cuda_peak_flops(gpu.ordinal(), tensor_cores);
  std::fprintf(stderr, "device: %s, MFU against %.0f TFLOP/s (%s)\n", meap::cuda_device_name(gpu.ordinal()).c_str(),
               options.peak_flops * 1e-12,
               peak_tflops > 0 ? "--peak-tflops" : "estimated: SMs x clock x dense FLOPs per SM and clock");
  const meap::train::memory_budget budget{static_cast<double>(meap::cuda_memory().free), "on the GPU"};
  if (dtype == "fp16") return meap::run::pretrain<meap::fp16_mixed>(options, on, budget, gpu.group());
  if (dtype == "fp32") return meap::run::pretrain<meap::fp32>(options, on, budget, gpu.group());
  return meap::run::pretrain<meap::bf16_mixed>(options, on, budget, gpu.group());
}

int finetune_on_cuda(meap::run::finetune_options options, const meap::text::tokenizer* tokenizer,
                     const std::string& dtype, const std::string& device, int ordinal,
                     meap::dist::process_group<meap::cpu>* host) {
  meap::dist::gpu_rank gpu(options.program, device, ordinal, host);
  meap::cuda_stream stream;
  const meap::cuda on = stream.device();
  const meap::train::memory_budget budget{static_cast<double>(meap::cuda_memory().free), "on the GPU"};
  if (dtype == "fp16") return meap::run::finetune<meap::fp16_mixed>(options, tokenizer, on, budget, gpu.group());
  if (dtype == "fp32") return meap::run::finetune<meap::fp32>(options, tokenizer, on, budget, gpu.group());
  return meap::run::finetune<meap::bf16_mixed>(options, tokenizer, on, budget, gpu.group());
}

int evaluate_on_cuda(const meap::eval::suite_options& options, const std::string& dtype, const std::string& device,
                     int ordinal) {
  meap::dist::select_cuda_device(options.program, device, ordinal);
  meap::cuda_stream stream;
  const meap::cuda on = stream.device();
  if (dtype == "fp32") return meap::eval::run_suite<meap::fp32>(options, on);
  return meap::eval::run_suite<meap::bf16_mixed>(options, on);
}

}  // namespace meap_apps
