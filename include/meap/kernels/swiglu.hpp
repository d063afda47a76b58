// meap/kernels/swiglu.hpp: the SwiGLU gate, h = silu(gate) * up, forward and backward, on every
// device.
//
//   gate, up, h: (N, F)      (any shape, as long as all views share it and are contiguous)
//
// The projections around it are linear layers; this is the element-wise part. Outputs are
// overwritten. float and double on the CPU; float, half and bfloat16 on CUDA.
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/error.hpp>
#include <meap/core/precision.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/backend.hpp>
#include <meap/kernels/cpu/swiglu.hpp>

#include <string_view>
#include <type_traits>
#include <utility>

namespace meap {

template <class T, device Device>
  requires layer_element<T, Device>
void swiglu_forward(const Device& device, std::type_identity_t<tensor_view<const T, Device>> gate,
                    std::type_identity_t<tensor_view<const T, Device>> up, const tensor_view<T, Device>& h) {
  constexpr std::string_view function = "meap::swiglu_forward";
  check_contiguous(function, "gate", gate);
  check_shape(function, "up", up, gate.shape());
  check_contiguous(function, "up", up);
  check_shape(function, "h", h, gate.shape());
  check_contiguous(function, "h", h);
  check_colocated<Device>(function, {at("gate", gate), at("up", up), at("h", h)});
  detail::swiglu_kernels<Device>::template forward<T>(device, gate, up, h);
}

template <class T, device Device>
  requires layer_element<T, Device>
void swiglu_backward(const Device& device, std::type_identity_t<tensor_view<const T, Device>> gate,
                     std::type_identity_t<tensor_view<const T, Device>> up,
                     std::type_identity_t<tensor_view<const T, Device>> dh, const tensor_view<T, Device>& d_gate,
                     std::type_identity_t<tensor_view<T, Device>> d_up) {
  constexpr std::string_view function = "meap::swiglu_backward";
  check_contiguous(function, "gate", gate);
  for (const auto& [name, view] : {std::pair<const char*, tensor_view<const T, Device>>{"up", up}, {"dh", dh}}) {
    check_shape(function, name, view, gate.shape());
    check_contiguous(function, name, view);
  }
  for (const auto& [name, view] : {std::pair<const char*, tensor_view<T, Device>>{"d_gate", d_gate}, {"d_up", d_up}}) {
    check_shape(function, name, view, gate.shape());
    check_contiguous(function, name, view);
  }
  check_colocated<Device>(function, {at("gate", gate), at("up", up), at("dh", dh), at("d_gate", d_gate),
                                     at("d_up", d_up)});
  detail::swiglu_kernels<Device>::template backward<T>(device, gate, up, dh, d_gate, d_up);
}

}  // namespace meap
