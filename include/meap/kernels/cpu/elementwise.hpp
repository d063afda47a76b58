// meap/kernels/cpu/elementwise.hpp: the meap::cpu implementation behind
// <meap/kernels/elementwise.hpp>. Its CUDA twin is kernels/cuda/elementwise.hpp.
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/parallel.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/backend.hpp>
#include <meap/kernels/cpu/convert.hpp>

namespace meap::detail {

template <>
struct elementwise_kernels<cpu> {
  template <class T>
  static void add(const cpu&, const tensor_view<T, cpu>& target, const tensor_view<const T, cpu>& addend) {
    T* a = target.data();
    const T* b = addend.data();
    const index_t n = target.numel();
    MEAP_OMP(omp parallel for schedule(static) if (n > 65536))
    for (index_t i = 0; i < n; ++i) a[i] += b[i];
  }
  template <class From, class To>
  static void convert(const cpu&, const tensor_view<const From, cpu>& src, const tensor_view<To, cpu>& dst) {
    cpu_impl::convert(src.data(), dst.data(), src.numel());
  }
};

}  // namespace meap::detail
