// meap/cuda.hpp: everything in <meap/meap.hpp> plus the meap::cuda overloads. Include it from
// CUDA translation units (.cu files compiled by nvcc) and link the target meap::cuda.
#pragma once
#if !defined(__CUDACC__)
#error "<meap/cuda.hpp> must be compiled by nvcc: include it from a .cu file (CPU code uses <meap/meap.hpp>)"
#endif

#include <meap/meap.hpp>

#include <meap/core/cuda/runtime.hpp>
#include <meap/core/cuda/tensor.hpp>
#include <meap/masking/cuda/apply.hpp>
