// meap/kernels/elementwise.hpp: the element-wise operations a model needs between its layers, on
// every device.
//
//   add_into(device, target, addend)   target += addend (residual connections, gradient sums)
//   convert(device, src, dst)          dst = To(src), rounded to nearest even (master weights to
//                                      their bfloat16 / half compute copy, and back for reports)
//
// Same shapes, contiguous views, one device. add_into takes the layer element types of the
// device; convert any two floating types the device stores (float, double on the CPU also with
// half and bfloat16; float, half and bfloat16 on CUDA).
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/dtype.hpp>
#include <meap/core/error.hpp>
#include <meap/core/precision.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/backend.hpp>
#include <meap/kernels/cpu/elementwise.hpp>

#include <string_view>
#include <type_traits>

namespace meap {

template <class T, device Device>
  requires layer_element<T, Device>
void add_into(const Device& device, const tensor_view<T, Device>& target,
              std::type_identity_t<tensor_view<const T, Device>> addend) {
  constexpr std::string_view function = "meap::add_into";
  check_contiguous(function, "target", target);
  check_shape(function, "addend", addend, target.shape());
  check_contiguous(function, "addend", addend);
  check_colocated<Device>(function, {at("target", target), at("addend", addend)});
  detail::elementwise_kernels<Device>::template add<T>(device, target, addend);
}

// The element types convert() moves between on a device.
template <class T, class Device>
concept storage_element =
    (std::is_same_v<Device, cpu> && floating_element<std::remove_const_t<T>>) ||
    (std::is_same_v<Device, cuda> && layer_element<T, cuda>);

template <class From, class To, device Device>
  requires storage_element<From, Device> && storage_element<To, Device>
void convert(const Device& device, const tensor_view<const From, Device>& src, const tensor_view<To, Device>& dst) {
  constexpr std::string_view function = "meap::convert";
  check_contiguous(function, "src", src);
  check_shape(function, "dst", dst, src.shape());
  check_contiguous(function, "dst", dst);
  check_colocated<Device>(function, {at("src", src), at("dst", dst)});
  detail::elementwise_kernels<Device>::template convert<From, To>(device, src, dst);
}

// The same with a mutable source view.
template <class From, class To, device Device>
  requires storage_element<From, Device> && storage_element<To, Device> && (!std::is_const_v<From>)
void convert(const Device& device, const tensor_view<From, Device>& src, const tensor_view<To, Device>& dst) {
  convert<From, To, Device>(device, src.as_const(), dst);
}

}  // namespace meap
