// meap/kernels/backend.hpp: the per-device implementations behind the front doors (the kernels'
// and the optimizer's).
//
// Every operation has one front door in kernels/<op>.hpp, written once for all devices: it checks
// its arguments (shapes, strides, options, and that every view lives on one device, the current
// one), then calls detail::<op>_kernels<Device>, which kernels/cpu/<op>.hpp and
// kernels/cuda/<op>.hpp specialize. The primary templates below are what a translation unit sees
// for meap::cuda when it has not included <meap/cuda.hpp>: instantiating one stops the build
// with a message that says what to include.
#pragma once

#include <meap/core/device.hpp>

// The message of every "this needs <meap/cuda.hpp>" static_assert.
#define MEAP_NEEDS_CUDA_HPP                                                                   \
  "meap: operations on meap::cuda need #include <meap/cuda.hpp> (in a CUDA translation unit " \
  "compiled by nvcc, linked to meap::cuda)"

namespace meap {

// How a backward pass writes a gradient: replace it, or add to it (several layers reading one
// input, e.g. the q, k and v projections, sum their input gradients without a temporary; a tied
// head and micro-batches add parameter gradients up).
enum class gradient_write { overwrite, accumulate };

namespace detail {

template <class Device>
struct needs_cuda_hpp {
  static_assert(dependent_false<Device>, MEAP_NEEDS_CUDA_HPP);
};

template <class Device>
struct linear_kernels : needs_cuda_hpp<Device> {};
template <class Device>
struct rmsnorm_kernels : needs_cuda_hpp<Device> {};
template <class Device>
struct rope_kernels : needs_cuda_hpp<Device> {};
template <class Device>
struct swiglu_kernels : needs_cuda_hpp<Device> {};
template <class Device>
struct embedding_kernels : needs_cuda_hpp<Device> {};
template <class Device>
struct elementwise_kernels : needs_cuda_hpp<Device> {};
template <class Device>
struct attention_kernels : needs_cuda_hpp<Device> {};
template <class Device>
struct cross_entropy_kernels : needs_cuda_hpp<Device> {};
template <class Device>
struct adamw_kernels : needs_cuda_hpp<Device> {};    // optim/adamw.hpp
template <class Device>
struct clip_kernels : needs_cuda_hpp<Device> {};     // optim/clip.hpp

}  // namespace detail

}  // namespace meap
