// meap/kernels/cpu/embedding.hpp: the meap::cpu implementation behind <meap/kernels/embedding.hpp>.
// The front door has checked every argument; these trust their inputs (contiguous, row-major,
// shapes consistent). Its CUDA twin is kernels/cuda/embedding.hpp.
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/parallel.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/backend.hpp>
#include <meap/core/deferred_checks.hpp>

#include <cstdint>
#include <string_view>
#include <type_traits>

namespace meap::detail {

namespace cpu_impl {

// y[n] = table[tokens[n]]; tokens: (N); table: (V, d); y: (N, d).
template <class T>
void embedding_forward(const std::int32_t* tokens, const T* table, T* y, index_t rows, index_t d) {
  MEAP_OMP(omp parallel for schedule(static) if (rows * d > 65536))
  for (index_t n = 0; n < rows; ++n) {
    const T* src = table + static_cast<index_t>(tokens[n]) * d;
    for (index_t i = 0; i < d; ++i) y[n * d + i] = src[i];
  }
}

// d_table[tokens[n]] += dy[n], in row order for every column, so the result does not depend on
// the thread count (threads split the columns, never the rows).
template <class T>
void embedding_backward(const std::int32_t* tokens, const T* dy, T* d_table, index_t rows, index_t d) {
  constexpr index_t column_block = 64;
  const index_t blocks = (d + column_block - 1) / column_block;
  MEAP_OMP(omp parallel for schedule(static) if (rows * d > 65536))
  for (index_t block = 0; block < blocks; ++block) {
    const index_t begin = block * column_block;
    const index_t end = begin + column_block < d ? begin + column_block : d;
    for (index_t n = 0; n < rows; ++n) {
      T* dst = d_table + static_cast<index_t>(tokens[n]) * d;
      const T* src = dy + n * d;
      for (index_t i = begin; i < end; ++i) dst[i] += src[i];
    }
  }
}

}  // namespace cpu_impl

template <>
struct embedding_kernels<cpu> {
  // The first token outside [0, vocab), scanned on the host.
  static void check_tokens(const cpu&, std::string_view function, const tensor_view<const std::int32_t, cpu>& tokens,
                           index_t vocab, const deferred_checks<cpu>&) {
    const std::int32_t* p = tokens.data();
    for (index_t n = 0, count = tokens.numel(); n < count; ++n)
      if (p[n] < 0 || p[n] >= vocab) throw_invalid_token(function, n, p[n], vocab);
  }
  template <class T>
  static void forward(const cpu&, const tensor_view<const std::int32_t, cpu>& tokens,
                      const tensor_view<const T, cpu>& table, const tensor_view<T, cpu>& y, const deferred_checks<cpu>&) {
    cpu_impl::embedding_forward(tokens.data(), table.data(), y.data(), tokens.size(0), table.size(1));
  }
  template <class T, class G>
  static void backward(const cpu&, const tensor_view<const std::int32_t, cpu>& tokens, const tensor_view<const T, cpu>& dy,
                       const tensor_view<G, cpu>& d_table, const deferred_checks<cpu>&) {
    static_assert(std::is_same_v<G, T>, "meap::cpu computes parameter gradients in the compute type");
    cpu_impl::embedding_backward(tokens.data(), dy.data(), d_table.data(), tokens.size(0), d_table.size(1));
  }
};

}  // namespace meap::detail
