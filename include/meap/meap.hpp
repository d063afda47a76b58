// meap/meap.hpp: everything meap offers on the CPU. CUDA translation units include
// <meap/cuda.hpp>, which includes this header too.
#pragma once

#include <meap/core/config.hpp>
#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/dispatch.hpp>
#include <meap/core/dtype.hpp>
#include <meap/core/error.hpp>
#include <meap/core/philox.hpp>
#include <meap/core/tensor.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/masking/apply.hpp>
#include <meap/masking/duplicated_copy.hpp>
#include <meap/masking/fixed_ratio.hpp>
#include <meap/masking/policy.hpp>
#include <meap/masking/span.hpp>
#include <meap/kernels/attention.hpp>
#include <meap/kernels/cross_entropy.hpp>
#include <meap/optim/adamw.hpp>
#include <meap/optim/clip.hpp>
#include <meap/optim/parameter.hpp>
#include <meap/optim/schedule.hpp>
#include <meap/io/atomic_file.hpp>
#include <meap/io/safetensors.hpp>
#include <meap/io/token_dataset.hpp>
