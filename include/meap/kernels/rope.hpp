// meap/kernels/rope.hpp: rotary position embedding, Hugging Face LLaMA convention (rotate_half:
// dimension i pairs with i + D/2, frequency theta^(-2i/D)).
//
//   x, y: (B, T, H, D), D even; positions: (B, T) int32, optional (default: t)
//
// rope_backward applies the transposed rotation to dy. y may alias x (in place). Contiguous views.
#pragma once

#include <meap/kernels/linear.hpp>

#include <cmath>
#include <cstdint>

namespace meap {

struct rope_options {
  double theta = 10000.0;
  // (B, T) positions; a default view means position t for token t of every row.
  tensor_view<const std::int32_t, cpu> positions{};
};

namespace detail {
template <class T>
void check_rope(std::string_view function, const tensor_view<const T, cpu>& x, const tensor_view<T, cpu>& y,
                const rope_options& options) {
  check_argument(x.rank() == 4, function, "x", "shape " + to_string(x.shape()), "a rank-4 shape (B, T, H, D)");
  check_argument(x.size(3) % 2 == 0 && x.size(3) > 0, function, "x", "head dim D = " + std::to_string(x.size(3)),
                 "an even head dim (rotate_half pairs i with i + D/2)");
  check_contiguous(function, "x", x);
  check_shape(function, "y", y, x.shape());
  check_contiguous(function, "y", y);
  check_argument(std::isfinite(options.theta) && options.theta > 1.0, function, "theta", options.theta,
                 "a finite base above 1");
  if (options.positions.rank() != 0) {
    check_shape(function, "positions", options.positions, dims{x.size(0), x.size(1)});
    check_contiguous(function, "positions", options.positions);
    for (index_t i = 0, n = options.positions.numel(); i < n; ++i)
      check_argument(options.positions.data()[i] >= 0, function, "positions",
                     "position " + std::to_string(options.positions.data()[i]) + " at flat index " + std::to_string(i),
                     "non-negative positions");
  }
}
}  // namespace detail

template <host_compute_type T>
void rope_forward(const cpu&, std::type_identity_t<tensor_view<const T, cpu>> x, const tensor_view<T, cpu>& y,
                  const rope_options& options = {}) {
  detail::check_rope("meap::rope_forward", x, y, options);
  detail::cpu_impl::rope_apply(x.data(), y.data(), options.positions.rank() ? options.positions.data() : nullptr,
                               x.size(0), x.size(1), x.size(2), x.size(3), options.theta, false);
}

template <host_compute_type T>
void rope_backward(const cpu&, std::type_identity_t<tensor_view<const T, cpu>> dy, const tensor_view<T, cpu>& dx,
                   const rope_options& options = {}) {
  detail::check_rope("meap::rope_backward", dy, dx, options);
  detail::cpu_impl::rope_apply(dy.data(), dx.data(), options.positions.rank() ? options.positions.data() : nullptr,
                               dy.size(0), dy.size(1), dy.size(2), dy.size(3), options.theta, true);
}

}  // namespace meap
