// meap/core/precision.hpp: what a model computes in, and which element types each device's
// kernels take.
//
// A precision names three element types:
//   master_t   the parameters the optimizer updates and checkpoints store (float or double)
//   compute_t  the weights and activations forward and backward compute with
//   grad_t     the parameter gradients (the master type: AdamW reads them next to the master weights)
// fp64 serves gradient checks, fp32 is the CPU default, bf16_mixed the CUDA default (bfloat16
// weights and activations, float master weights, gradients and optimizer state, float
// accumulation in every reduction), fp16_mixed the same with half and dynamic loss scaling.
// When compute_t is master_t the compute weights are the master weights (no copy).
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/dtype.hpp>

#include <string_view>
#include <type_traits>

namespace meap {

template <class Master, class Compute, class Grad>
struct precision {
  static_assert(std::is_same_v<Master, float> || std::is_same_v<Master, double>,
                "meap::precision: master weights are float or double");
  static_assert(std::is_same_v<Grad, Master>, "meap::precision: gradients are kept in the master type");
  using master_t = Master;
  using compute_t = Compute;
  using grad_t = Grad;
  // True when the compute weights are a rounded copy of the master weights.
  static constexpr bool mixed = !std::is_same_v<Master, Compute>;
  // True when gradients need loss scaling to stay above half's smallest normal (6.1e-5).
  static constexpr bool loss_scaling = std::is_same_v<Compute, half>;
};

using fp64 = precision<double, double, double>;
using fp32 = precision<float, float, float>;
using bf16_mixed = precision<float, bfloat16, float>;
using fp16_mixed = precision<float, half, float>;

template <class P>
inline constexpr bool is_precision_v = false;
template <class M, class C, class G>
inline constexpr bool is_precision_v<precision<M, C, G>> = true;

// "fp32", "bf16_mixed", ...: for reports and messages.
template <class P>
constexpr std::string_view precision_name() {
  if constexpr (std::is_same_v<P, fp64>) return "fp64";
  else if constexpr (std::is_same_v<P, fp32>) return "fp32";
  else if constexpr (std::is_same_v<P, bf16_mixed>) return "bf16_mixed";
  else if constexpr (std::is_same_v<P, fp16_mixed>) return "fp16_mixed";
  else return "custom";
}

// ---------------------------------------------------------------------------------------------
// Element types per device. The door of every operation states its requirement with these, so a
// type a device cannot compute in fails to compile at the call.

// The per-token layers (linear, RMSNorm, RoPE, SwiGLU, embedding) and element-wise operations:
// float and double on the CPU (Eigen / BLAS), float, half and bfloat16 on CUDA.
template <class T, class Device>
inline constexpr bool layer_element_v = false;
template <>
inline constexpr bool layer_element_v<float, cpu> = true;
template <>
inline constexpr bool layer_element_v<double, cpu> = true;
template <>
inline constexpr bool layer_element_v<float, cuda> = true;
template <>
inline constexpr bool layer_element_v<half, cuda> = true;
template <>
inline constexpr bool layer_element_v<bfloat16, cuda> = true;

template <class T, class Device>
concept layer_element = layer_element_v<std::remove_const_t<T>, Device>;

// Where a backward pass may write a parameter gradient of a T computation: T itself, or float
// for half / bfloat16 (the master precision, so that AdamW never reads a 16-bit gradient).
template <class G, class T, class Device>
concept gradient_element =
    layer_element<T, Device> && (std::is_same_v<G, T> || (std::is_same_v<G, float> && sizeof(T) == 2));

// The cross-entropy kernels: every floating type on the CPU (16-bit widened to float), float,
// half and bfloat16 on CUDA.
template <class T, class Device>
concept loss_element =
    (std::is_same_v<Device, cpu> && floating_element<std::remove_const_t<T>>) ||
    (std::is_same_v<Device, cuda> && layer_element<T, cuda>);

// A precision a model on Device can run in: its compute type is a layer element there.
template <class P, class Device>
concept device_precision = is_precision_v<P> && layer_element<typename P::compute_t, Device>;

// What a model on a device computes in unless told otherwise.
template <class Device>
struct default_precision;
template <>
struct default_precision<cpu> {
  using type = fp32;
};
template <>
struct default_precision<cuda> {
  using type = bf16_mixed;
};
template <class Device>
using default_precision_t = typename default_precision<Device>::type;

}  // namespace meap
