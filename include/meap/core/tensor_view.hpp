// meap/core/tensor_view.hpp: non-owning strided views over memory of one device.
//
// tensor_view<T, Device> is a pointer, a shape and strides (in elements), plus the location
// (device kind and ordinal) the memory lives on. It is trivially copyable and its accessors are
// host/device functions, so kernels take views by value. A view never owns or frees memory.
//
// The plain constructors trust their caller (they are what kernels and tensors use internally);
// make_view() checks that a shape and strides fit in a buffer of known capacity. any_view is the
// type-erased form for memory coming from elsewhere (files, other frameworks); view_cast checks
// dtype and device before handing out a typed view.
#pragma once

#include <meap/core/config.hpp>
#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/dtype.hpp>
#include <meap/core/error.hpp>

#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

namespace meap {

template <class T, class Device>
class tensor_view {
  static_assert(element<T>, "meap::tensor_view: T must be a meap element type (see core/dtype.hpp)");
  static_assert(is_device_v<Device>, "meap::tensor_view: Device must be meap::cpu or meap::cuda");

 public:
  using element_type = T;
  using value_type = std::remove_const_t<T>;
  using device_type = Device;

  tensor_view() = default;

  // Unchecked: the caller guarantees that `data` covers every element that shape and strides
  // reach. Use make_view() for memory whose extent must be checked.
  MEAP_HOST_DEVICE tensor_view(T* data, const dims& shape, const dims& strides,
                               device_location where = {Device::kind, 0})
      : data_(data), shape_(shape), strides_(strides), where_(where) {}

  // Contiguous row-major view. Unchecked, as above.
  MEAP_HOST_DEVICE tensor_view(T* data, const dims& shape, device_location where = {Device::kind, 0})
      : data_(data), shape_(shape), strides_(contiguous_strides(shape)), where_(where) {}

  // tensor_view<T> converts to tensor_view<const T>.
  template <class U>
    requires(std::is_same_v<const U, T> && !std::is_same_v<U, T>)
  MEAP_HOST_DEVICE tensor_view(const tensor_view<U, Device>& other)
      : data_(other.data()), shape_(other.shape()), strides_(other.strides()), where_(other.location()) {}

  MEAP_HOST_DEVICE T* data() const { return data_; }
  MEAP_HOST_DEVICE const dims& shape() const { return shape_; }
  MEAP_HOST_DEVICE const dims& strides() const { return strides_; }
  MEAP_HOST_DEVICE int rank() const { return shape_.rank(); }
  MEAP_HOST_DEVICE index_t size(int axis) const { return shape_[axis]; }
  MEAP_HOST_DEVICE index_t stride(int axis) const { return strides_[axis]; }
  MEAP_HOST_DEVICE index_t numel() const { return shape_.product(); }
  MEAP_HOST_DEVICE bool empty() const { return numel() == 0; }
  MEAP_HOST_DEVICE device_location location() const { return where_; }

  // Row-major contiguous (extent-1 axes may have any stride).
  MEAP_HOST_DEVICE bool is_contiguous() const {
    index_t expected = 1;
    for (int i = rank() - 1; i >= 0; --i) {
      if (shape_[i] != 1 && strides_[i] != expected) return false;
      expected *= shape_[i];
    }
    return true;
  }

  // Element access; one index per axis, unchecked.
  template <class... Index>
  MEAP_HOST_DEVICE T& operator()(Index... index) const {
    const index_t indices[] = {static_cast<index_t>(index)..., 0};
    index_t offset = 0;
    for (int i = 0; i < static_cast<int>(sizeof...(Index)); ++i) offset += indices[i] * strides_[i];
    return data_[offset];
  }

  tensor_view<const T, Device> as_const() const { return *this; }

  // [begin, end) along `axis`.
  tensor_view slice(int axis, index_t begin, index_t end) const {
    check_axis("meap::tensor_view::slice", axis);
    check_argument(0 <= begin && begin <= end && end <= shape_[axis], "meap::tensor_view::slice", "end",
                   end, "0 <= begin <= end <= size(axis) = " + std::to_string(shape_[axis]) +
                            " (begin = " + std::to_string(begin) + ")");
    dims shape = shape_;
    shape[axis] = end - begin;
    return tensor_view(data_ + begin * strides_[axis], shape, strides_, where_);
  }

  // The sub-view at `index` along `axis`; the rank drops by one.
  tensor_view select(int axis, index_t index) const {
    check_axis("meap::tensor_view::select", axis);
    check_argument(0 <= index && index < shape_[axis], "meap::tensor_view::select", "index", index,
                   "an index in [0, " + std::to_string(shape_[axis]) + ")");
    return tensor_view(data_ + index * strides_[axis], shape_.erased(axis), strides_.erased(axis), where_);
  }

  // Same elements, new shape; the view must be contiguous and the element count unchanged.
  tensor_view reshape(const dims& shape) const {
    check_argument(is_contiguous(), "meap::tensor_view::reshape", "this", "strides " + to_string(strides_),
                   "a contiguous view of shape " + to_string(shape_));
    for (int i = 0; i < shape.rank(); ++i)
      check_argument(shape[i] >= 0, "meap::tensor_view::reshape", "shape", to_string(shape),
                     "non-negative extents");
    check_argument(shape.product() == numel(), "meap::tensor_view::reshape", "shape", to_string(shape),
                   "a shape with " + std::to_string(numel()) + " elements, as " + to_string(shape_) + " has");
    return tensor_view(data_, shape, contiguous_strides(shape), where_);
  }

  // Axes a and b swapped (no data moves).
  tensor_view transpose(int a, int b) const {
    check_axis("meap::tensor_view::transpose", a);
    check_axis("meap::tensor_view::transpose", b);
    dims shape = shape_;
    dims strides = strides_;
    shape[a] = shape_[b];
    shape[b] = shape_[a];
    strides[a] = strides_[b];
    strides[b] = strides_[a];
    return tensor_view(data_, shape, strides, where_);
  }

 private:
  void check_axis(std::string_view function, int axis) const {
    check_argument(0 <= axis && axis < rank(), function, "axis", axis,
                   "an axis in [0, " + std::to_string(rank()) + ")");
  }

  T* data_ = nullptr;
  dims shape_;
  dims strides_;
  device_location where_{Device::kind, 0};
};

template <class T>
using cpu_view = tensor_view<T, cpu>;

// ---------------------------------------------------------------------------------------------
// Checked construction.

namespace detail {

// Throws unless `shape` with `strides` stays inside [0, capacity) elements.
inline void check_view_fits(std::string_view function, const dims& shape, const dims& strides,
                            index_t capacity, bool data_is_null) {
  check_argument(strides.rank() == shape.rank(), function, "strides", to_string(strides),
                 "one stride per dimension of shape " + to_string(shape));
  index_t last = 0;  // offset of the last element reached
  bool empty = false;
  for (int i = 0; i < shape.rank(); ++i) {
    check_argument(shape[i] >= 0, function, "shape", to_string(shape), "non-negative extents");
    check_argument(strides[i] >= 0, function, "strides", to_string(strides),
                   "non-negative strides (negative strides are not supported)");
    if (shape[i] == 0) empty = true;
  }
  if (empty) return;
  for (int i = 0; i < shape.rank(); ++i) {
    index_t step = 0;
    if (__builtin_mul_overflow(shape[i] - 1, strides[i], &step) || __builtin_add_overflow(last, step, &last))
      throw_argument_error(function, "strides", to_string(strides), "offsets that fit in 64 bits");
  }
  check_argument(!data_is_null, function, "data", "nullptr", "a pointer to at least one element");
  check_argument(last < capacity, function, "shape",
                 to_string(shape) + " with strides " + to_string(strides),
                 "a layout whose last element (offset " + std::to_string(last) +
                     ") lies inside the buffer of capacity " + std::to_string(capacity));
}

}  // namespace detail

// A view over `capacity` elements at `data`, checked: one stride per axis, non-negative extents
// and strides, and every reachable element inside the buffer.
template <class Device = cpu, class T>
tensor_view<T, Device> make_view(T* data, index_t capacity, const dims& shape, const dims& strides,
                                 device_location where = {Device::kind, 0}) {
  check_argument(capacity >= 0, "meap::make_view", "capacity", capacity, "a non-negative element count");
  check_argument(where.kind == Device::kind, "meap::make_view", "where", to_string(where),
                 std::string("a location on ") + std::string(to_string(Device::kind)));
  detail::check_view_fits("meap::make_view", shape, strides, capacity, data == nullptr);
  return tensor_view<T, Device>(data, shape, strides, where);
}

// A contiguous view of host memory; the span must hold exactly shape.product() elements.
template <class T>
tensor_view<T, cpu> make_view(std::span<T> data, const dims& shape) {
  const dims strides = contiguous_strides(shape);
  detail::check_view_fits("meap::make_view", shape, strides, static_cast<index_t>(data.size()),
                          data.data() == nullptr);
  check_argument(shape.product() == static_cast<index_t>(data.size()), "meap::make_view", "shape",
                 to_string(shape), "exactly as many elements as the span holds (" + std::to_string(data.size()) + ")");
  return tensor_view<T, cpu>(data.data(), shape, strides);
}

// ---------------------------------------------------------------------------------------------
// Type-erased views: memory described at run time (a file, a foreign framework's tensor).

struct any_view {
  void* data = nullptr;
  dtype type = dtype::f32;
  device_location where{};
  dims shape;
  dims strides;
};

template <class T, class Device>
any_view to_any(const tensor_view<T, Device>& view) {
  return {const_cast<std::remove_const_t<T>*>(view.data()), dtype_of<T>, view.location(), view.shape(),
          view.strides()};
}

// The typed view behind `view`, after checking that it holds T on Device. `argument` names the
// view in the error message.
template <class T, class Device>
tensor_view<T, Device> view_cast(const any_view& view, std::string_view argument = "view") {
  if (view.type != dtype_of<T>)
    throw_argument_error("meap::view_cast", argument, std::string("dtype ") + std::string(to_string(view.type)),
                         std::string("dtype ") + std::string(to_string(dtype_of<T>)) + " (dtype mismatch)");
  if (view.where.kind != Device::kind)
    throw_argument_error("meap::view_cast", argument, "memory on " + to_string(view.where),
                         std::string("memory on ") + std::string(to_string(Device::kind)) + " (device mismatch)");
  check_argument(view.strides.rank() == view.shape.rank(), "meap::view_cast", argument,
                 "strides " + to_string(view.strides), "one stride per dimension of shape " + to_string(view.shape));
  return tensor_view<T, Device>(static_cast<T*>(view.data), view.shape, view.strides, view.where);
}

// ---------------------------------------------------------------------------------------------
// Argument checks for functions that take views. Each throws meap::error naming the argument.

template <class T, class Device>
void check_shape(std::string_view function, std::string_view argument, const tensor_view<T, Device>& view,
                 const dims& expected) {
  if (view.shape() != expected)
    throw_argument_error(function, argument, "shape " + to_string(view.shape()), "shape " + to_string(expected));
}

template <class T, class Device>
void check_contiguous(std::string_view function, std::string_view argument, const tensor_view<T, Device>& view) {
  if (!view.is_contiguous())
    throw_argument_error(function, argument, "shape " + to_string(view.shape()) + " strides " + to_string(view.strides()),
                         "a contiguous (row-major) view");
}

namespace detail {
[[noreturn]] inline void throw_device_mismatch(std::string_view function, std::string_view name_a,
                                               const device_location& a, std::string_view name_b,
                                               const device_location& b) {
  std::string got("memory on ");
  got.append(to_string(b));
  std::string expected("memory on ");
  expected.append(to_string(a)).append(", where '").append(name_a).append("' lives (device mismatch)");
  throw_argument_error(function, name_b, got, expected);
}
}  // namespace detail

template <class A, class DA, class B, class DB>
void check_same_device(std::string_view function, std::string_view name_a, const tensor_view<A, DA>& a,
                       std::string_view name_b, const tensor_view<B, DB>& b) {
  if (a.location() != b.location()) detail::throw_device_mismatch(function, name_a, a.location(), name_b, b.location());
}

// A rank-2 row-major contiguous view of exactly (rows, columns).
template <class T, class Device>
void check_matrix(std::string_view function, std::string_view argument, const tensor_view<T, Device>& view,
                  index_t rows, index_t columns) {
  check_shape(function, argument, view, dims{rows, columns});
  check_contiguous(function, argument, view);
}

// One argument of a front door, for the location checks below: its name, where its memory is,
// and whether it was given at all (a default view, rank 0 and null, means "not requested").
struct located {
  std::string_view name;
  device_location where;
  bool given = true;
};

template <class T, class Device>
located at(std::string_view name, const tensor_view<T, Device>& view) {
  return {name, view.location(), !(view.rank() == 0 && view.data() == nullptr)};
}

// Every given argument lives where the first given one does (device mismatch otherwise), and
// that place is usable by work on `Device` now (device_traits<Device>::check_current: on CUDA,
// the current GPU). Front doors call this once, after their shape checks, so that the messages
// about shapes are the same on every device.
template <class Device>
void check_colocated(std::string_view function, std::initializer_list<located> arguments) {
  const located* first = nullptr;
  for (const located& argument : arguments) {
    if (!argument.given) continue;
    if (first == nullptr) {
      first = &argument;
      continue;
    }
    if (argument.where != first->where)
      detail::throw_device_mismatch(function, first->name, first->where, argument.name, argument.where);
  }
  if (first != nullptr) device_traits<Device>::check_current(function, first->name, first->where);
}

}  // namespace meap
