// meap/cuda.hpp: everything in <meap/meap.hpp> plus the meap::cuda implementations behind its
// front doors (kernels/cuda/*, optim/cuda/*, masking/cuda/*), so that the same calls, models and
// trainers run with meap::cuda{stream}. Include it from CUDA translation units (.cu files compiled
// by nvcc) and link the target meap::cuda.
#pragma once
#if !defined(__CUDACC__)
#error "<meap/cuda.hpp> must be compiled by nvcc: include it from a .cu file (CPU code uses <meap/meap.hpp>)"
#endif

#include <meap/meap.hpp>

#include <meap/core/cuda/runtime.hpp>
#include <meap/core/cuda/tensor.hpp>
#include <meap/kernels/cuda/attention.hpp>
#include <meap/kernels/cuda/cross_entropy.hpp>
#include <meap/kernels/cuda/elementwise.hpp>
#include <meap/kernels/cuda/embedding.hpp>
#include <meap/kernels/cuda/gemm.hpp>
#include <meap/kernels/cuda/linear.hpp>
#include <meap/kernels/cuda/rmsnorm.hpp>
#include <meap/kernels/cuda/rope.hpp>
#include <meap/kernels/cuda/swiglu.hpp>
#include <meap/masking/cuda/apply.hpp>
#include <meap/optim/cuda/adamw.hpp>
#include <meap/optim/cuda/clip.hpp>
