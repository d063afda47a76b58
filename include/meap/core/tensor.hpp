// meap/core/tensor.hpp: owning tensors, and the host-side fill and copy.
//
// tensor<T, Device> owns one contiguous allocation made through device_traits<Device> and hands
// out views. It is move-only; copies are explicit (meap::copy, meap::clone). Host <-> device
// copies are in <meap/cuda.hpp> and run on a meap::cuda stream.
#pragma once

#include <meap/core/config.hpp>
#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/dtype.hpp>
#include <meap/core/error.hpp>
#include <meap/core/tensor_view.hpp>

#include <cstring>
#include <limits>
#include <string>
#include <utility>

namespace meap {

template <class T, class Device>
class tensor {
  static_assert(element<T> && !std::is_const_v<T>, "meap::tensor: T must be a non-const meap element type");
  static_assert(is_device_v<Device>, "meap::tensor: Device must be meap::cpu or meap::cuda");

 public:
  using value_type = T;
  using device_type = Device;

  tensor() = default;

  // Uninitialized storage for `shape` on `device` (use meap::zeros / meap::full for values).
  tensor(const Device& device, const dims& shape) : device_(device), shape_(shape) {
    for (int i = 0; i < shape.rank(); ++i)
      check_argument(shape[i] >= 0, "meap::tensor", "shape", to_string(shape), "non-negative extents");
    index_t count = 1;
    for (int i = 0; i < shape.rank(); ++i)
      if (__builtin_mul_overflow(count, shape[i], &count) ||
          static_cast<std::size_t>(count) > std::numeric_limits<std::size_t>::max() / sizeof(T))
        throw_argument_error("meap::tensor", "shape", to_string(shape), "a size whose byte count fits in size_t");
    data_ = static_cast<T*>(device_traits<Device>::allocate(device_, bytes()));
    where_ = device_traits<Device>::location(device_);
  }

  tensor(const tensor&) = delete;
  tensor& operator=(const tensor&) = delete;
  tensor(tensor&& other) noexcept { swap(other); }
  tensor& operator=(tensor&& other) noexcept {
    if (this != &other) {
      release();
      swap(other);
    }
    return *this;
  }
  ~tensor() { release(); }

  tensor_view<T, Device> view() { return {data_, shape_, where_}; }
  tensor_view<const T, Device> view() const { return {data_, shape_, where_}; }

  T* data() { return data_; }
  const T* data() const { return data_; }
  const dims& shape() const { return shape_; }
  int rank() const { return shape_.rank(); }
  index_t size(int axis) const { return shape_[axis]; }
  index_t numel() const { return shape_.product(); }
  std::size_t bytes() const { return static_cast<std::size_t>(numel()) * sizeof(T); }
  const Device& device() const { return device_; }
  device_location location() const { return where_; }

 private:
  void release() noexcept {
    if (data_ != nullptr) device_traits<Device>::deallocate(device_, data_, bytes());
    data_ = nullptr;
    shape_ = empty_shape();
  }
  void swap(tensor& other) noexcept {
    std::swap(device_, other.device_);
    std::swap(data_, other.data_);
    std::swap(shape_, other.shape_);
    std::swap(where_, other.where_);
  }

  // An empty tensor (default-constructed or moved from) has shape (0): no elements, no bytes.
  static dims empty_shape() { return dims{0}; }

  Device device_{};
  T* data_ = nullptr;
  dims shape_ = empty_shape();
  device_location where_{Device::kind, 0};
};

// ---------------------------------------------------------------------------------------------
// Host operations. Each has a meap::cuda twin in <meap/cuda.hpp>; the generic templates below are
// what a translation unit without that header gets, and they say so at compile time.

namespace detail {
// Calls f(offset_a, offset_b) for every index of `shape`, in row-major order.
template <class F>
void for_each_offset(const dims& shape, const dims& strides_a, const dims& strides_b, F&& f) {
  const index_t count = shape.product();
  if (count == 0) return;
  index_t index[max_rank] = {};
  index_t offset_a = 0;
  index_t offset_b = 0;
  for (index_t n = 0; n < count; ++n) {
    f(offset_a, offset_b);
    for (int axis = shape.rank() - 1; axis >= 0; --axis) {
      if (++index[axis] < shape[axis]) {
        offset_a += strides_a[axis];
        offset_b += strides_b[axis];
        break;
      }
      offset_a -= (shape[axis] - 1) * strides_a[axis];
      offset_b -= (shape[axis] - 1) * strides_b[axis];
      index[axis] = 0;
    }
  }
}
}  // namespace detail

// dst[i] = value for every element of dst.
template <class T>
void fill(const cpu&, const tensor_view<T, cpu>& dst, std::type_identity_t<T> value) {
  static_assert(!std::is_const_v<T>, "meap::fill: dst must be a view of mutable elements");
  if (dst.is_contiguous()) {
    T* p = dst.data();
    for (index_t i = 0, n = dst.numel(); i < n; ++i) p[i] = value;
    return;
  }
  detail::for_each_offset(dst.shape(), dst.strides(), dst.strides(),
                          [&](index_t offset, index_t) { dst.data()[offset] = value; });
}

// Element-wise copy between two host views of the same shape (any strides; no overlap).
template <class S, class D>
  requires std::is_same_v<std::remove_const_t<S>, D>
void copy(const cpu&, const tensor_view<S, cpu>& src, const tensor_view<D, cpu>& dst) {
  if (src.shape() != dst.shape())
    throw_argument_error("meap::copy", "dst", "shape " + to_string(dst.shape()),
                         "shape " + to_string(src.shape()) + ", the shape of 'src' (size mismatch)");
  if (src.empty()) return;
  if (src.is_contiguous() && dst.is_contiguous()) {
    std::memcpy(dst.data(), src.data(), static_cast<std::size_t>(src.numel()) * sizeof(D));
    return;
  }
  detail::for_each_offset(src.shape(), src.strides(), dst.strides(),
                          [&](index_t from, index_t to) { dst.data()[to] = src.data()[from]; });
}

// Fallback: copies that involve meap::cuda (an execution tag or a view) live in <meap/cuda.hpp>.
template <class Exec, class S, class SD, class D, class DD>
void copy(const Exec&, const tensor_view<S, SD>&, const tensor_view<D, DD>&) {
  static_assert(detail::dependent_false<Exec>,
                "meap::copy: copies that touch meap::cuda memory run on a meap::cuda stream and need "
                "#include <meap/cuda.hpp> (in a CUDA translation unit compiled by nvcc)");
}

// A tensor of `shape` on `device` with every element zero (all-zero bits for every dtype).
template <class T, class Device>
tensor<T, Device> zeros(const Device& device, const dims& shape) {
  tensor<T, Device> result(device, shape);
  device_traits<Device>::zero(device, result.data(), result.bytes());
  return result;
}

// A host tensor of `shape` with every element `value`.
template <class T>
tensor<T, cpu> full(const cpu& device, const dims& shape, std::type_identity_t<T> value) {
  tensor<T, cpu> result(device, shape);
  fill(device, result.view(), value);
  return result;
}

// A new host tensor with the elements of `src` (made contiguous).
template <class T>
tensor<std::remove_const_t<T>, cpu> clone(const cpu& device, const tensor_view<T, cpu>& src) {
  tensor<std::remove_const_t<T>, cpu> result(device, src.shape());
  copy(device, src, result.view());
  return result;
}

// Host memory that `Device` copies from and to without waiting: page-locked (pinned) for
// meap::cuda, so that an upload is truly asynchronous (cudaMemcpyAsync from pageable memory waits
// for the stream first); plain host memory for meap::cpu. What a trainer stages its batches in and
// reads its step report into. Move-only; reshape() reallocates only to grow.
template <class T, class Device>
class host_staging {
  static_assert(element<T> && !std::is_const_v<T>, "meap::host_staging: T must be a non-const meap element type");

 public:
  host_staging() = default;
  host_staging(const Device& device, const dims& shape) : device_(device) { reshape(shape); }
  host_staging(const host_staging&) = delete;
  host_staging& operator=(const host_staging&) = delete;
  host_staging(host_staging&& other) noexcept { swap(other); }
  host_staging& operator=(host_staging&& other) noexcept {
    if (this != &other) {
      release();
      swap(other);
    }
    return *this;
  }
  ~host_staging() { release(); }

  void reshape(const dims& shape) {
    index_t count = 1;
    for (int i = 0; i < shape.rank(); ++i) {
      check_argument(shape[i] >= 0, "meap::host_staging", "shape", to_string(shape), "non-negative extents");
      if (__builtin_mul_overflow(count, shape[i], &count) ||
          static_cast<std::size_t>(count) > std::numeric_limits<std::size_t>::max() / sizeof(T))
        throw_argument_error("meap::host_staging", "shape", to_string(shape), "a size whose byte count fits in size_t");
    }
    const std::size_t bytes = static_cast<std::size_t>(count) * sizeof(T);
    if (bytes > capacity_) {
      release();
      data_ = static_cast<T*>(device_traits<Device>::allocate_host(device_, bytes));
      capacity_ = bytes;
    }
    shape_ = shape;
  }

  tensor_view<T, cpu> view() const { return {data_, shape_}; }
  T* data() const noexcept { return data_; }
  const dims& shape() const noexcept { return shape_; }
  index_t numel() const { return shape_.product(); }

 private:
  void release() noexcept {
    if (data_ != nullptr) device_traits<Device>::deallocate_host(device_, data_, capacity_);
    data_ = nullptr;
    capacity_ = 0;
    shape_ = dims{0};
  }
  void swap(host_staging& other) noexcept {
    std::swap(device_, other.device_);
    std::swap(data_, other.data_);
    std::swap(shape_, other.shape_);
    std::swap(capacity_, other.capacity_);
  }

  Device device_{};
  T* data_ = nullptr;
  dims shape_{0};
  std::size_t capacity_ = 0;
};

// The host and device sides of a CPU tensor are the same memory: these make generic code that
// stages data (to_device) or reads results (to_host) work on meap::cpu too. Both copy.
template <class T>
tensor<std::remove_const_t<T>, cpu> to_host(const cpu& device, const tensor_view<T, cpu>& src) {
  return clone(device, src);
}
template <class T>
tensor<std::remove_const_t<T>, cpu> to_device(const cpu& device, const tensor_view<T, cpu>& src) {
  return clone(device, src);
}

}  // namespace meap
