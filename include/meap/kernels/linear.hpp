// meap/kernels/linear.hpp: y = x W^T without bias, forward and backward, on every device
// (kernels/cpu/linear.hpp: OpenBLAS through CBLAS or Eigen; kernels/cuda/linear.hpp: cuBLASLt).
//
//   x: (N, in)   w: (out, in) as nn.Linear / Hugging Face store it   y: (N, out)
//
// Backward writes dx = dy W (or adds it to dx, gradient_write::accumulate) and accumulates
// dw += dy^T x (parameter gradients add up over uses, e.g. a tied embedding and LM head, or
// micro-batches). Every view must be contiguous and on one device. Element types: float and
// double on the CPU; float, half and bfloat16 on CUDA, where dw may be float for 16-bit T (the
// master precision).
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/error.hpp>
#include <meap/core/precision.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/backend.hpp>
#include <meap/kernels/cpu/linear.hpp>

#include <string>
#include <string_view>
#include <type_traits>

namespace meap {

template <class T, device Device>
  requires layer_element<T, Device>
void linear_forward(const Device& device, std::type_identity_t<tensor_view<const T, Device>> x,
                    std::type_identity_t<tensor_view<const T, Device>> w, const tensor_view<T, Device>& y) {
  constexpr std::string_view function = "meap::linear_forward";
  check_argument(x.rank() == 2, function, "x", "shape " + to_string(x.shape()), "a rank-2 shape (N, in)");
  check_argument(w.rank() == 2 && w.size(1) == x.size(1), function, "w", "shape " + to_string(w.shape()),
                 "shape (out, " + std::to_string(x.size(1)) + "), matching x " + to_string(x.shape()));
  check_matrix(function, "x", x, x.size(0), x.size(1));
  check_matrix(function, "w", w, w.size(0), w.size(1));
  check_matrix(function, "y", y, x.size(0), w.size(0));
  check_colocated<Device>(function, {at("x", x), at("w", w), at("y", y)});
  detail::linear_kernels<Device>::template forward<T>(device, x, w, y);
}

// dx may be a default (empty) view to skip it (e.g. the first layer's input needs no gradient).
// G, taken from dw, is T, or float for 16-bit T.
template <class T, class G = T, device Device>
  requires gradient_element<G, T, Device>
void linear_backward(const Device& device, std::type_identity_t<tensor_view<const T, Device>> x,
                     std::type_identity_t<tensor_view<const T, Device>> w,
                     std::type_identity_t<tensor_view<const T, Device>> dy, const tensor_view<T, Device>& dx,
                     const tensor_view<G, Device>& dw, gradient_write dx_mode = gradient_write::overwrite) {
  constexpr std::string_view function = "meap::linear_backward";
  check_argument(x.rank() == 2 && w.rank() == 2 && w.size(1) == x.size(1), function, "w",
                 "shape " + to_string(w.shape()), "shape (out, in) matching x " + to_string(x.shape()));
  check_matrix(function, "x", x, x.size(0), x.size(1));
  check_matrix(function, "w", w, w.size(0), w.size(1));
  check_matrix(function, "dy", dy, x.size(0), w.size(0));
  const bool want_dx = dx.rank() != 0;
  if (want_dx) check_matrix(function, "dx", dx, x.size(0), x.size(1));
  check_matrix(function, "dw", dw, w.size(0), w.size(1));
  check_colocated<Device>(function, {at("x", x), at("w", w), at("dy", dy), at("dx", dx), at("dw", dw)});
  detail::linear_kernels<Device>::template backward<T, G>(device, x, w, dy, dx, dw, dx_mode);
}

}  // namespace meap
