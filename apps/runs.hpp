// apps/runs.hpp: the library calls meap's apps make, declared `extern template` so that no app
// translation unit instantiates the model, the trainer or the evaluation; apps/instances/ holds
// their one explicit instantiation per device and precision (the library meap_app_runs), and
// cuda_runs.cu the GPU entry points. A consumer of meap needs none of this: the run layer's headers
// are complete templates, instantiated where they are called.
#pragma once

#include <meap/core/precision.hpp>
#include <meap/dist/process_group.hpp>
#include <meap/eval/suite.hpp>
#include <meap/run/finetune.hpp>
#include <meap/run/pretrain.hpp>
#include <meap/text/tokenizer.hpp>
#include <meap/train/memory.hpp>

#include <string>
#include <type_traits>

// MEAP_APPS_RUNS(<prefix>, P, Device): the runs of precision P on Device; <prefix> is `extern` for
// the declarations and empty for the instantiations (apps/instances/).
#define MEAP_APPS_PRETRAIN(prefix, P, Device)                                                                    \
  prefix template int meap::run::pretrain<P, Device>(const meap::run::pretrain_options&, const Device&,         \
                                                     const meap::train::memory_budget&,                         \
                                                     std::type_identity_t<meap::dist::process_group<Device>>*);
#define MEAP_APPS_FINETUNE(prefix, P, Device)                                                                    \
  prefix template int meap::run::finetune<P, Device>(const meap::run::finetune_options&,                        \
                                                     const meap::text::tokenizer*, const Device&,               \
                                                     const meap::train::memory_budget&,                         \
                                                     std::type_identity_t<meap::dist::process_group<Device>>*);
#define MEAP_APPS_EVALUATE(prefix, P, Device) \
  prefix template int meap::eval::run_suite<P, Device>(const meap::eval::suite_options&, const Device&);

#define MEAP_APPS_CPU_RUNS(prefix)                \
  MEAP_APPS_PRETRAIN(prefix, meap::fp32, meap::cpu) \
  MEAP_APPS_PRETRAIN(prefix, meap::fp64, meap::cpu) \
  MEAP_APPS_FINETUNE(prefix, meap::fp32, meap::cpu) \
  MEAP_APPS_EVALUATE(prefix, meap::fp32, meap::cpu)
#define MEAP_APPS_CUDA_BF16_RUNS(prefix)                  \
  MEAP_APPS_PRETRAIN(prefix, meap::bf16_mixed, meap::cuda) \
  MEAP_APPS_FINETUNE(prefix, meap::bf16_mixed, meap::cuda) \
  MEAP_APPS_EVALUATE(prefix, meap::bf16_mixed, meap::cuda)
#define MEAP_APPS_CUDA_FP16_RUNS(prefix)                  \
  MEAP_APPS_PRETRAIN(prefix, meap::fp16_mixed, meap::cuda) \
  MEAP_APPS_FINETUNE(prefix, meap::fp16_mixed, meap::cuda)
#define MEAP_APPS_CUDA_FP32_RUNS(prefix)            \
  MEAP_APPS_PRETRAIN(prefix, meap::fp32, meap::cuda) \
  MEAP_APPS_FINETUNE(prefix, meap::fp32, meap::cuda) \
  MEAP_APPS_EVALUATE(prefix, meap::fp32, meap::cuda)

MEAP_APPS_CPU_RUNS(extern)
MEAP_APPS_CUDA_BF16_RUNS(extern)
MEAP_APPS_CUDA_FP16_RUNS(extern)
MEAP_APPS_CUDA_FP32_RUNS(extern)

namespace meap_apps {

// The GPU entry points (apps/cuda_runs.cu; without MEAP_APPS_WITH_CUDA, each refuses --device
// cuda with a message naming the program). `device`: the --device text; `ordinal`: its number
// (plus the local rank under mpirun); `dtype`: fp32, bf16 or fp16; `host`: the MPI group under
// mpirun (the GPU run then reduces over NCCL), or nullptr.
int pretrain_on_cuda(meap::run::pretrain_options options, const std::string& dtype, const std::string& device,
                     int ordinal, double peak_tflops, meap::dist::process_group<meap::cpu>* host);
int finetune_on_cuda(meap::run::finetune_options options, const meap::text::tokenizer* tokenizer,
                     const std::string& dtype, const std::string& device, int ordinal,
                     meap::dist::process_group<meap::cpu>* host);
int evaluate_on_cuda(const meap::eval::suite_options& options, const std::string& dtype, const std::string& device,
                     int ordinal);

}  // namespace meap_apps
