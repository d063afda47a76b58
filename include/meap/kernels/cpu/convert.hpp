// meap/kernels/cpu/convert.hpp: moving 16-bit tensors to and from their float accumulate type.
//
// The host kernels compute in float or double only; half and bfloat16 inputs are widened to float
// on the way in and rounded once on the way out, so a result is never rounded mid-accumulation.
#pragma once

#include <meap/core/dims.hpp>
#include <meap/core/tensor.hpp>
#include <meap/core/parallel.hpp>

#include <type_traits>

namespace meap::detail::cpu_impl {

// dst[i] = To(src[i]) for n contiguous elements.
template <class To, class From>
void convert(const From* src, To* dst, index_t n) {
  MEAP_OMP(omp parallel for schedule(static) if (n > 65536))
  for (index_t i = 0; i < n; ++i) dst[i] = static_cast<To>(src[i]);
}

// A float copy of a contiguous 16-bit view, or the view's own data when it already holds A.
template <class A, class T>
class widened {
 public:
  explicit widened(const tensor_view<const T, cpu>& view) {
    if constexpr (std::is_same_v<T, A>) {
      data_ = view.data();
    } else {
      copy_ = tensor<A, cpu>(cpu{}, dims{view.numel()});
      convert(view.data(), copy_.data(), view.numel());
      data_ = copy_.data();
    }
  }
  const A* data() const { return data_; }

 private:
  tensor<A, cpu> copy_;
  const A* data_ = nullptr;
};

// Where a kernel writes an output of type A that the caller wants as T: straight into the caller's
// memory when T is A, else into a float buffer that store() rounds into the caller's view.
template <class A, class T>
class narrowed {
 public:
  explicit narrowed(const tensor_view<T, cpu>& view) : view_(view) {
    if constexpr (std::is_same_v<T, A>) {
      data_ = view.data();
    } else {
      buffer_ = tensor<A, cpu>(cpu{}, dims{view.numel()});
      data_ = buffer_.data();
    }
  }
  A* data() const { return data_; }
  void store() const {
    if constexpr (!std::is_same_v<T, A>) convert(data_, view_.data(), view_.numel());
  }

 private:
  tensor_view<T, cpu> view_;
  tensor<A, cpu> buffer_;
  A* data_ = nullptr;
};

}  // namespace meap::detail::cpu_impl
