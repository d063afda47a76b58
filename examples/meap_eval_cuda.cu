// The CUDA half of meap_eval: the evaluation of eval_run.hpp instantiated for meap::cuda, in
// bfloat16 (mixed, the default) or float32, on its own stream.
#include "eval_run.hpp"
#include "cuda_device.hpp"

#include <meap/cuda.hpp>

int meap_eval::run_cuda(const arguments& a) {
  meap_examples::select_cuda_device("meap_eval", a.device, a.cuda_ordinal);
  meap::cuda_stream stream;
  const meap::cuda device = stream.device();
  if (a.dtype == "fp32") return run<meap::fp32>(a, device);
  return run<meap::bf16_mixed>(a, device);
}
