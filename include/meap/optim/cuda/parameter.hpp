// meap/optim/cuda/parameter.hpp: the checks the CUDA optimizer functions make on a list of
// device parameters: those of <meap/optim/parameter.hpp> (same messages), which takes host
// parameters, plus one device for every value and gradient.
// Part of <meap/cuda.hpp>; compiled by nvcc only.
#pragma once
#if !defined(__CUDACC__)
#error "meap/optim/cuda/*.hpp (and <meap/cuda.hpp>) must be compiled by nvcc: put this code in a .cu file"
#endif

#include <meap/core/device.hpp>
#include <meap/core/error.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/optim/parameter.hpp>

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>

namespace meap::detail::cuda_impl {

// The CPU's check_parameters (non-empty unique names, grad of the value's shape, contiguous,
// non-null), copied for device views; then every value and grad on the device of params[0].
template <class T>
void check_parameters(std::string_view function, std::span<const named_parameter<T, cuda>> params) {
  std::unordered_set<std::string_view> names;
  names.reserve(params.size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto& p = params[i];
    const std::string who = describe_parameter(p.name, i);
    if (p.name.empty())
      throw_argument_error(function, "params", "params[" + std::to_string(i) + "] with an empty name",
                           "a non-empty name for every parameter (it keys the optimizer state)");
    if (!names.insert(p.name).second)
      throw_argument_error(function, "params", who, "unique parameter names (this name appears twice)");
    if (p.grad.shape() != p.value.shape())
      throw_argument_error(function, "params", who + " with grad shape " + to_string(p.grad.shape()),
                           "a gradient of the value's shape " + to_string(p.value.shape()));
    if (!p.value.is_contiguous() || !p.grad.is_contiguous())
      throw_argument_error(function, "params",
                           who + " with value strides " + to_string(p.value.strides()) + " and grad strides " +
                               to_string(p.grad.strides()),
                           "contiguous (row-major) value and grad views");
    if (!p.value.empty() && (p.value.data() == nullptr || p.grad.data() == nullptr))
      throw_argument_error(function, "params", who + " with a null value or grad pointer",
                           "views of allocated memory");
    const device_location home = params[0].value.location();
    if (p.value.location() != home || p.grad.location() != home)
      throw_argument_error(function, "params",
                           who + " with value on " + to_string(p.value.location()) + " and grad on " +
                               to_string(p.grad.location()),
                           "every value and gradient on " + to_string(home) + ", where params[0] lives");
  }
}

}  // namespace meap::detail::cuda_impl
