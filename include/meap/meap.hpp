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
