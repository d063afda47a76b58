// meap/kernels/embedding.hpp: token embedding lookup and its deterministic backward.
//
//   tokens: (N) int32 in [0, V)   table: (V, d)   y: (N, d)
//
// Backward accumulates d_table[tokens[n]] += dy[n] in row order (no atomics), so the gradient is
// bit-identical whatever the thread count. Contiguous views.
#pragma once

#include <meap/kernels/linear.hpp>

#include <cstdint>

namespace meap {

namespace detail {
inline void check_tokens(std::string_view function, const tensor_view<const std::int32_t, cpu>& tokens, index_t vocab) {
  check_argument(tokens.rank() == 1, function, "tokens", "shape " + to_string(tokens.shape()), "a rank-1 shape (N)");
  check_contiguous(function, "tokens", tokens);
  for (index_t n = 0; n < tokens.numel(); ++n) {
    const std::int32_t id = tokens.data()[n];
    if (id < 0 || id >= vocab)
      throw_argument_error(function, "tokens", "token " + std::to_string(id) + " at index " + std::to_string(n),
                           "token ids in [0, " + std::to_string(vocab) + ")");
  }
}
}  // namespace detail

template <host_compute_type T>
void embedding_forward(const cpu&, const tensor_view<const std::int32_t, cpu>& tokens,
                       std::type_identity_t<tensor_view<const T, cpu>> table, const tensor_view<T, cpu>& y) {
  constexpr std::string_view function = "meap::embedding_forward";
  check_argument(table.rank() == 2, function, "table", "shape " + to_string(table.shape()), "a rank-2 shape (V, d)");
  check_contiguous(function, "table", table);
  detail::check_tokens(function, tokens, table.size(0));
  detail::check_matrix(function, "y", y, tokens.size(0), table.size(1));
  detail::cpu_impl::embedding_forward(tokens.data(), table.data(), y.data(), tokens.size(0), table.size(1));
}

template <host_compute_type T>
void embedding_backward(const cpu&, const tensor_view<const std::int32_t, cpu>& tokens,
                        std::type_identity_t<tensor_view<const T, cpu>> dy, const tensor_view<T, cpu>& d_table) {
  constexpr std::string_view function = "meap::embedding_backward";
  check_argument(d_table.rank() == 2, function, "d_table", "shape " + to_string(d_table.shape()),
                 "a rank-2 shape (V, d)");
  check_contiguous(function, "d_table", d_table);
  detail::check_tokens(function, tokens, d_table.size(0));
  detail::check_matrix(function, "dy", dy, tokens.size(0), d_table.size(1));
  detail::cpu_impl::embedding_backward(tokens.data(), dy.data(), d_table.data(), tokens.size(0), d_table.size(1));
}

}  // namespace meap
