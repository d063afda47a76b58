// meap/kernels/swiglu.hpp: the SwiGLU gate, h = silu(gate) * up, forward and backward.
//
//   gate, up, h: (N, F)
//
// The projections around it are linear layers; this is the element-wise part. Contiguous views.
#pragma once

#include <meap/kernels/linear.hpp>

namespace meap {

template <host_compute_type T>
void swiglu_forward(const cpu&, std::type_identity_t<tensor_view<const T, cpu>> gate,
                    std::type_identity_t<tensor_view<const T, cpu>> up, const tensor_view<T, cpu>& h) {
  constexpr std::string_view function = "meap::swiglu_forward";
  check_contiguous(function, "gate", gate);
  check_shape(function, "up", up, gate.shape());
  check_contiguous(function, "up", up);
  check_shape(function, "h", h, gate.shape());
  check_contiguous(function, "h", h);
  detail::cpu_impl::swiglu_forward(gate.data(), up.data(), h.data(), gate.numel());
}

template <host_compute_type T>
void swiglu_backward(const cpu&, std::type_identity_t<tensor_view<const T, cpu>> gate,
                     std::type_identity_t<tensor_view<const T, cpu>> up,
                     std::type_identity_t<tensor_view<const T, cpu>> dh, const tensor_view<T, cpu>& d_gate,
                     std::type_identity_t<tensor_view<T, cpu>> d_up) {
  constexpr std::string_view function = "meap::swiglu_backward";
  check_contiguous(function, "gate", gate);
  for (const auto& [name, view] : {std::pair<const char*, tensor_view<const T, cpu>>{"up", up}, {"dh", dh}}) {
    check_shape(function, name, view, gate.shape());
    check_contiguous(function, name, view);
  }
  for (const auto& [name, view] : {std::pair<const char*, tensor_view<T, cpu>>{"d_gate", d_gate}, {"d_up", d_up}}) {
    check_shape(function, name, view, gate.shape());
    check_contiguous(function, name, view);
  }
  detail::cpu_impl::swiglu_backward(gate.data(), up.data(), dh.data(), d_gate.data(), d_up.data(), gate.numel());
}

}  // namespace meap
