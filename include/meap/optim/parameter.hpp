// meap/optim/parameter.hpp: what an optimizer sees of a model, and what it hands to a checkpoint.
//
// A model hands out a std::vector<named_parameter<T, Device>>: for each trainable tensor its
// checkpoint name, a view of its value (updated in place by the optimizer), a view of its
// gradient, and whether weight decay applies. The optimizer keeps its state keyed by that name,
// so the name must be unique and stable across runs (it is also the tensor's name in the
// checkpoint, e.g. "model.layers.0.self_attn.q_proj.weight").
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/error.hpp>
#include <meap/core/tensor_view.hpp>

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_set>

namespace meap {

template <class T, class Device>
struct named_parameter {
  std::string name;
  tensor_view<T, Device> value;
  tensor_view<T, Device> grad;
  // Decoupled weight decay applies to this parameter. By convention false for norm gains and
  // biases, true for matrices and embeddings.
  bool decay = true;
};

// Where the first non-finite gradient element is (parameters in list order, elements in
// row-major order).
struct nonfinite_gradient {
  std::string parameter;   // its name
  std::size_t position;    // its index in the parameter list
  index_t index;           // flat (row-major) element index
  double value;            // NaN, +inf or -inf
};

// A named host tensor of any dtype: how optimizer state leaves the optimizer (and enters a
// checkpoint writer such as meap::safetensors_writer) without either side knowing the other.
struct named_view {
  std::string name;
  any_view view;
};

namespace detail {

// "parameter 'w' (params[3])": how messages point at one entry of a parameter list.
inline std::string describe_parameter(std::string_view name, std::size_t index) {
  return "parameter '" + std::string(name) + "' (params[" + std::to_string(index) + "])";
}

// The checks every optimizer-side function makes at the door: non-empty unique names, a
// gradient of the value's shape, both contiguous (the update runs over flat element ranges) and
// both non-null when non-empty. Device-generic; the CUDA optimizer adds its device check.
template <class T, class Device>
void check_parameter_list(std::string_view function, std::span<const named_parameter<T, Device>> params) {
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
  }
}
// check_parameter_list, then every value and gradient on the device of params[0], the current
// one (the device check of every front door).
template <class T, class Device>
void check_parameters(std::string_view function, std::span<const named_parameter<T, Device>> params) {
  check_parameter_list<T, Device>(function, params);
  if (params.empty()) return;
  const device_location home = params[0].value.location();
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto& p = params[i];
    if (p.value.location() != home || p.grad.location() != home)
      throw_argument_error(function, "params",
                           describe_parameter(p.name, i) + " with value on " + to_string(p.value.location()) +
                               " and grad on " + to_string(p.grad.location()),
                           "every value and gradient on " + to_string(home) + ", where params[0] lives");
  }
  device_traits<Device>::check_current(function, "params", home);
}

}  // namespace detail

}  // namespace meap
