// meap/kernels/embedding.hpp: token embedding lookup and its deterministic backward, on every
// device.
//
//   tokens: (N) int32 in [0, V)   table: (V, d)   y: (N, d)
//
// Backward accumulates d_table[tokens[n]] += dy[n] in row order (no atomics), so the gradient is
// bit-identical whatever the thread count or grid. Contiguous views on one device. float and
// double on the CPU; float, half and bfloat16 on CUDA (d_table T or float). A token outside
// [0, V) is an error; on CUDA that check reads device memory, so it waits for the stream unless
// `checks` defers it (core/deferred_checks.hpp): then an invalid token embeds as zeros and its
// row is left out of the backward pass.
#pragma once

#include <meap/core/deferred_checks.hpp>
#include <meap/core/device.hpp>
#include <meap/core/error.hpp>
#include <meap/core/precision.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/backend.hpp>
#include <meap/kernels/cpu/embedding.hpp>

#include <cstdint>
#include <string_view>
#include <type_traits>

namespace meap {

namespace detail {
template <class Device>
void check_token_layout(std::string_view function, const tensor_view<const std::int32_t, Device>& tokens) {
  check_argument(tokens.rank() == 1, function, "tokens", "shape " + to_string(tokens.shape()), "a rank-1 shape (N)");
  check_contiguous(function, "tokens", tokens);
}
}  // namespace detail

template <class T, device Device>
  requires layer_element<T, Device>
void embedding_forward(const Device& device, std::type_identity_t<tensor_view<const std::int32_t, Device>> tokens,
                       std::type_identity_t<tensor_view<const T, Device>> table, const tensor_view<T, Device>& y,
                       const deferred_checks<Device>& checks = {}) {
  constexpr std::string_view function = "meap::embedding_forward";
  check_argument(table.rank() == 2, function, "table", "shape " + to_string(table.shape()), "a rank-2 shape (V, d)");
  check_contiguous(function, "table", table);
  detail::check_token_layout(function, tokens);
  check_matrix(function, "y", y, tokens.size(0), table.size(1));
  check_colocated<Device>(function, {at("table", table), at("tokens", tokens), at("y", y)});
  detail::embedding_kernels<Device>::check_tokens(device, function, tokens, table.size(0), checks);
  detail::embedding_kernels<Device>::template forward<T>(device, tokens, table, y, checks);
}

// d_table (V, d) += the rows of dy (N, d) at their tokens. G, taken from d_table, is T or float.
template <class T, class G = T, device Device>
  requires gradient_element<G, T, Device>
void embedding_backward(const Device& device, std::type_identity_t<tensor_view<const std::int32_t, Device>> tokens,
                        std::type_identity_t<tensor_view<const T, Device>> dy, const tensor_view<G, Device>& d_table,
                        const deferred_checks<Device>& checks = {}) {
  constexpr std::string_view function = "meap::embedding_backward";
  check_argument(d_table.rank() == 2, function, "d_table", "shape " + to_string(d_table.shape()),
                 "a rank-2 shape (V, d)");
  check_contiguous(function, "d_table", d_table);
  detail::check_token_layout(function, tokens);
  check_matrix(function, "dy", dy, tokens.size(0), d_table.size(1));
  check_colocated<Device>(function, {at("d_table", d_table), at("tokens", tokens), at("dy", dy)});
  detail::embedding_kernels<Device>::check_tokens(device, function, tokens, d_table.size(0), checks);
  detail::embedding_kernels<Device>::template backward<T, G>(device, tokens, dy, d_table, checks);
}

}  // namespace meap
