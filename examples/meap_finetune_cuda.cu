// The CUDA half of meap_finetune: the run of finetune_run.hpp instantiated for meap::cuda, in
// bfloat16 (mixed, the default), half (mixed, dynamic loss scaling) or float32, on its own stream.
#include "dist_launch.hpp"
#include "finetune_run.hpp"

#include <meap/cuda.hpp>

int meap_finetune::run_cuda(const arguments& a, meap::dist::process_group<meap::cpu>* host) {
  meap_examples::gpu_ranks gpu("meap_finetune", a.device, a.cuda_ordinal, host);
  meap::cuda_stream stream;
  const meap::cuda device = stream.device();
  const meap_examples::memory_budget budget{static_cast<double>(meap::cuda_memory().free), "on the GPU"};
  if (a.dtype == "fp16") return run<meap::fp16_mixed>(a, device, budget, gpu.group());
  if (a.dtype == "fp32") return run<meap::fp32>(a, device, budget, gpu.group());
  return run<meap::bf16_mixed>(a, device, budget, gpu.group());
}
