// meap/kernels/rope.hpp: rotary position embedding, Hugging Face LLaMA convention (rotate_half:
// dimension i pairs with i + D/2, frequency theta^(-2i/D), optionally with Llama 3.1's scaling),
// on every device.
//
//   x, y: (B, T, H, D), D even; positions: (B, T) int32 on the same device, optional (default: t)
//
// rope_backward applies the transposed rotation to dy. y may alias x (in place). Contiguous
// views. Angles are computed in double (a position of 10^6 times a frequency near 1 keeps its
// precision), cos and sin rounded once. float and double on the CPU; float, half and bfloat16
// on CUDA. A negative position is an error; on CUDA that check reads device memory, so it waits
// for the stream unless options.checks defers it (core/deferred_checks.hpp).
#pragma once

#include <meap/core/deferred_checks.hpp>
#include <meap/core/device.hpp>
#include <meap/core/error.hpp>
#include <meap/core/precision.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/backend.hpp>
#include <meap/kernels/cpu/rope.hpp>
#include <meap/kernels/rope_frequency.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>

namespace meap {

template <class Device = cpu>
struct rope_options {
  double theta = 10000.0;
  // (B, T) positions; a default view means position t for token t of every row.
  tensor_view<const std::int32_t, Device> positions{};
  // Where meap::cuda records a negative position instead of waiting for the stream.
  deferred_checks<Device> checks{};
  // Llama 3.1's frequency scaling (kernels/rope_frequency.hpp); off by default.
  rope_scaling scaling{};
};

namespace detail {
template <class T, class Device>
void check_rope(const Device& device, std::string_view function, const tensor_view<const T, Device>& x,
                const tensor_view<T, Device>& y, const rope_options<Device>& options) {
  check_argument(x.rank() == 4, function, "x", "shape " + to_string(x.shape()), "a rank-4 shape (B, T, H, D)");
  check_argument(x.size(3) % 2 == 0 && x.size(3) > 0, function, "x", "head dim D = " + std::to_string(x.size(3)),
                 "an even head dim (rotate_half pairs i with i + D/2)");
  check_contiguous(function, "x", x);
  check_shape(function, "y", y, x.shape());
  check_contiguous(function, "y", y);
  check_argument(std::isfinite(options.theta) && options.theta > 1.0, function, "theta", options.theta,
                 "a finite base above 1");
  check_rope_scaling(function, "scaling", options.scaling);
  const bool positioned = options.positions.rank() != 0;
  if (positioned) {
    check_shape(function, "positions", options.positions, dims{x.size(0), x.size(1)});
    check_contiguous(function, "positions", options.positions);
  }
  check_colocated<Device>(function, {at("x", x), at("y", y), at("positions", options.positions)});
  if (positioned) rope_kernels<Device>::check_positions(device, function, options.positions, options.checks);
}
}  // namespace detail

template <class T, device Device>
  requires layer_element<T, Device>
void rope_forward(const Device& device, std::type_identity_t<tensor_view<const T, Device>> x,
                  const tensor_view<T, Device>& y, const rope_options<Device>& options = {}) {
  detail::check_rope(device, "meap::rope_forward", x, y, options);
  detail::rope_kernels<Device>::template apply<T>(device, x, y, options.positions, options.theta, options.scaling, false);
}

template <class T, device Device>
  requires layer_element<T, Device>
void rope_backward(const Device& device, std::type_identity_t<tensor_view<const T, Device>> dy,
                   const tensor_view<T, Device>& dx, const rope_options<Device>& options = {}) {
  detail::check_rope(device, "meap::rope_backward", dy, dx, options);
  detail::rope_kernels<Device>::template apply<T>(device, dy, dx, options.positions, options.theta, options.scaling, true);
}

}  // namespace meap
