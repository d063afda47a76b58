// meap/meap.hpp: everything meap offers on the CPU. CUDA translation units include
// <meap/cuda.hpp>, which includes this header too.
#pragma once

// core: devices, element types, views and tensors, errors, the counter-based RNG
#include <meap/core/config.hpp>
#include <meap/core/deferred_checks.hpp>
#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/dispatch.hpp>
#include <meap/core/dtype.hpp>
#include <meap/core/error.hpp>
#include <meap/core/labels.hpp>
#include <meap/core/philox.hpp>
#include <meap/core/precision.hpp>
#include <meap/core/tensor.hpp>
#include <meap/core/tensor_view.hpp>

// masking: the MEAP policies
#include <meap/masking/apply.hpp>
#include <meap/masking/duplicated_copy.hpp>
#include <meap/masking/fixed_ratio.hpp>
#include <meap/masking/policy.hpp>
#include <meap/masking/span.hpp>

// kernels: attention, selective cross-entropy, the per-token layers and element-wise operations,
// one front door each for every device
#include <meap/kernels/attention.hpp>
#include <meap/kernels/cross_entropy.hpp>
#include <meap/kernels/elementwise.hpp>
#include <meap/kernels/embedding.hpp>
#include <meap/kernels/linear.hpp>
#include <meap/kernels/options.hpp>
#include <meap/kernels/rmsnorm.hpp>
#include <meap/kernels/rope.hpp>
#include <meap/kernels/swiglu.hpp>

// nn: the parameter store, modules and the LLaMA model; optim: AdamW, clipping, schedules, the step status
#include <meap/nn/nn.hpp>
#include <meap/optim/adamw.hpp>
#include <meap/optim/clip.hpp>
#include <meap/optim/parameter.hpp>
#include <meap/optim/schedule.hpp>
#include <meap/optim/status.hpp>

// io: safetensors, token datasets, atomic files; train: the pretraining step and checkpoints
#include <meap/data/instruction.hpp>
#include <meap/io/atomic_file.hpp>
#include <meap/io/safetensors.hpp>
#include <meap/io/token_dataset.hpp>
#include <meap/train/checkpoint.hpp>
#include <meap/train/finetune.hpp>
#include <meap/train/pretrain.hpp>

#include <meap/eval/eval.hpp>
