// meap/kernels/rmsnorm.hpp: RMSNorm (LLaMA), forward and backward, on every device.
//
//   x, y: (N, d)   w: (d)   inv_rms: (N) in accumulate_t<T> (float for 16-bit T), saved by the
//   forward for the backward
//   y = x / sqrt(mean(x^2) + eps) * w
//
// Backward overwrites dx and accumulates dw (T, or float for 16-bit T on CUDA). dw is summed over
// fixed chunks of rows, then over the chunks in order: the same bits for any thread count or grid.
// Contiguous views on one device; float and double on the CPU, float, half and bfloat16 on CUDA.
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/dtype.hpp>
#include <meap/core/error.hpp>
#include <meap/core/precision.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/backend.hpp>
#include <meap/kernels/cpu/rmsnorm.hpp>

#include <cmath>
#include <string_view>
#include <type_traits>

namespace meap {

template <class T, device Device>
  requires layer_element<T, Device>
void rmsnorm_forward(const Device& device, std::type_identity_t<tensor_view<const T, Device>> x,
                     std::type_identity_t<tensor_view<const T, Device>> w, const tensor_view<T, Device>& y,
                     std::type_identity_t<tensor_view<accumulate_t<T>, Device>> inv_rms, double eps) {
  constexpr std::string_view function = "meap::rmsnorm_forward";
  check_argument(x.rank() == 2, function, "x", "shape " + to_string(x.shape()), "a rank-2 shape (N, d)");
  check_argument(std::isfinite(eps) && eps > 0, function, "eps", eps, "a finite positive epsilon");
  check_matrix(function, "x", x, x.size(0), x.size(1));
  check_shape(function, "w", w, dims{x.size(1)});
  check_matrix(function, "y", y, x.size(0), x.size(1));
  check_shape(function, "inv_rms", inv_rms, dims{x.size(0)});
  check_colocated<Device>(function, {at("x", x), at("w", w), at("y", y), at("inv_rms", inv_rms)});
  detail::rmsnorm_kernels<Device>::template forward<T>(device, x, w, y, inv_rms, eps);
}

template <class T, class G = T, device Device>
  requires gradient_element<G, T, Device>
void rmsnorm_backward(const Device& device, std::type_identity_t<tensor_view<const T, Device>> x,
                      std::type_identity_t<tensor_view<const T, Device>> w,
                      std::type_identity_t<tensor_view<const accumulate_t<T>, Device>> inv_rms,
                      std::type_identity_t<tensor_view<const T, Device>> dy, const tensor_view<T, Device>& dx,
                      const tensor_view<G, Device>& dw) {
  constexpr std::string_view function = "meap::rmsnorm_backward";
  check_argument(x.rank() == 2, function, "x", "shape " + to_string(x.shape()), "a rank-2 shape (N, d)");
  check_matrix(function, "x", x, x.size(0), x.size(1));
  check_shape(function, "w", w, dims{x.size(1)});
  check_shape(function, "inv_rms", inv_rms, dims{x.size(0)});
  check_matrix(function, "dy", dy, x.size(0), x.size(1));
  check_matrix(function, "dx", dx, x.size(0), x.size(1));
  check_shape(function, "dw", dw, dims{x.size(1)});
  check_colocated<Device>(function, {at("x", x), at("w", w), at("inv_rms", inv_rms), at("dy", dy), at("dx", dx),
                                     at("dw", dw)});
  detail::rmsnorm_kernels<Device>::template backward<T, G>(device, x, w, inv_rms, dy, dx, dw);
}

}  // namespace meap
