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

namespace meap::detail::cuda_impl {

// The CPU's checks (detail::check_parameter_list: non-empty unique names, grad of the value's
// shape, contiguous, non-null), then every value and grad on the device of params[0].
template <class T>
void check_parameters(std::string_view function, std::span<const named_parameter<T, cuda>> params) {
  detail::check_parameter_list<T, cuda>(function, params);
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto& p = params[i];
    const std::string who = describe_parameter(p.name, i);
    const device_location home = params[0].value.location();
    if (p.value.location() != home || p.grad.location() != home)
      throw_argument_error(function, "params",
                           who + " with value on " + to_string(p.value.location()) + " and grad on " +
                               to_string(p.grad.location()),
                           "every value and gradient on " + to_string(home) + ", where params[0] lives");
  }
}

}  // namespace meap::detail::cuda_impl
