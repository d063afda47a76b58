// meap/interop/dlpack.hpp: tensors in and out of meap through DLPack, without a copy.
//
// DLPack (github.com/dmlc/dlpack) is the struct through which PyTorch, JAX, CuPy, TVM and others
// hand each other tensors: a pointer, a shape, strides, a dtype, a device, and a deleter that the
// receiver calls when it is done. This header maps it onto meap's views:
//
//   // In: another framework's tensor as a checked meap view of the same memory.
//   meap::interop::dlpack_tensor imported(at::toDLPack(torch_tensor));   // owns it: calls the deleter once
//   auto logits = imported.view<const float, meap::cpu>();              // dtype and device checked
//
//   // Out: a meap tensor handed to another framework, kept alive until that one calls the deleter.
//   DLManagedTensor* exported = meap::interop::to_dlpack(std::move(meap_tensor));
//   at::Tensor t = at::fromDLPack(exported);                            // same memory
//
// What maps to what:
//   dtype    float64/32/16, bfloat16, int64/32/16/8, uint64/32/16/8 (lanes 1); anything else
//            (complex, bool, vectors, float8) is refused.
//   device   kDLCPU and kDLCUDAHost (pinned host memory) -> meap::cpu; kDLCUDA and kDLCUDAManaged
//            -> meap::cuda at ordinal device_id (device_location{cuda, device_id}). Other devices
//            are refused. meap::cpu exports as kDLCPU, meap::cuda as kDLCUDA.
//   strides  in elements, as in meap; none (nullptr) means row-major contiguous. Negative strides
//            are refused (meap views cannot walk backwards); zero strides (broadcast) are kept.
//   offset   byte_offset is added to the pointer; it must keep the element's alignment.
// Nothing is ever copied: an imported view aliases the producer's memory and is valid while the
// dlpack_tensor (or whatever the caller keeps) holds it; an exported tensor's memory stays with
// the DLManagedTensor until its deleter runs. DLPack has no notion of const: an exported
// tensor_view<const T> can be written through by the receiver, as with PyTorch's own exports.
//
// The header needs <dlpack/dlpack.h> (Debian: libdlpack-dev; CMake target meap::dlpack) or, in a
// LibTorch build, ATen's copy of the same file (<ATen/dlpack.h>, identical up to whitespace). It
// speaks the DLManagedTensor ABI (DLPack 0.5 to 1.x), the one at::toDLPack / at::fromDLPack use.
#pragma once

#if defined(DLPACK_DLPACK_H_)
// Already included (for instance through <ATen/dlpack.h>).
#elif __has_include(<dlpack/dlpack.h>)
#include <dlpack/dlpack.h>
#elif __has_include(<ATen/dlpack.h>)
#include <ATen/dlpack.h>
#else
#error "meap/interop/dlpack.hpp needs <dlpack/dlpack.h> (Debian: apt-get install libdlpack-dev; CMake: link meap::dlpack)"
#endif

#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/dtype.hpp>
#include <meap/core/error.hpp>
#include <meap/core/tensor.hpp>
#include <meap/core/tensor_view.hpp>

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace meap::interop {

// The meap dtype of a DLPack data type, or nullopt when meap has none.
constexpr std::optional<dtype> dtype_from_dlpack(DLDataType type) noexcept {
  if (type.lanes != 1) return std::nullopt;
  switch (type.code) {
    case kDLFloat:
      if (type.bits == 64) return dtype::f64;
      if (type.bits == 32) return dtype::f32;
      if (type.bits == 16) return dtype::f16;
      return std::nullopt;
    case kDLBfloat: return type.bits == 16 ? std::optional<dtype>(dtype::bf16) : std::nullopt;
    case kDLInt:
      if (type.bits == 64) return dtype::i64;
      if (type.bits == 32) return dtype::i32;
      if (type.bits == 16) return dtype::i16;
      if (type.bits == 8) return dtype::i8;
      return std::nullopt;
    case kDLUInt:
      if (type.bits == 64) return dtype::u64;
      if (type.bits == 32) return dtype::u32;
      if (type.bits == 16) return dtype::u16;
      if (type.bits == 8) return dtype::u8;
      return std::nullopt;
    default: return std::nullopt;
  }
}

constexpr DLDataType to_dlpack(dtype type) noexcept {
  const auto bits = static_cast<std::uint8_t>(8 * size_of(type));
  switch (type) {
    case dtype::f64: case dtype::f32: case dtype::f16: return {kDLFloat, bits, 1};
    case dtype::bf16: return {kDLBfloat, bits, 1};
    case dtype::i64: case dtype::i32: case dtype::i16: case dtype::i8: return {kDLInt, bits, 1};
    case dtype::u64: case dtype::u32: case dtype::u16: case dtype::u8: return {kDLUInt, bits, 1};
  }
  return {kDLUInt, 8, 1};
}

// "kDLFloat bits 8 lanes 1": how a refused dtype is named in messages.
inline std::string describe(DLDataType type) {
  std::string code;
  switch (type.code) {
    case kDLInt: code = "kDLInt"; break;
    case kDLUInt: code = "kDLUInt"; break;
    case kDLFloat: code = "kDLFloat"; break;
    case kDLOpaqueHandle: code = "kDLOpaqueHandle"; break;
    case kDLBfloat: code = "kDLBfloat"; break;
    case kDLComplex: code = "kDLComplex"; break;
    default: code = "code " + std::to_string(type.code); break;
  }
  return code + " bits " + std::to_string(type.bits) + " lanes " + std::to_string(type.lanes);
}

inline std::string describe(DLDevice device) {
  std::string kind;
  switch (device.device_type) {
    case kDLCPU: kind = "kDLCPU"; break;
    case kDLCUDA: kind = "kDLCUDA"; break;
    case kDLCUDAHost: kind = "kDLCUDAHost"; break;
    case kDLOpenCL: kind = "kDLOpenCL"; break;
    case kDLVulkan: kind = "kDLVulkan"; break;
    case kDLMetal: kind = "kDLMetal"; break;
    case kDLVPI: kind = "kDLVPI"; break;
    case kDLROCM: kind = "kDLROCM"; break;
    case kDLROCMHost: kind = "kDLROCMHost"; break;
    case kDLExtDev: kind = "kDLExtDev"; break;
    case kDLCUDAManaged: kind = "kDLCUDAManaged"; break;
    default: kind = "device type " + std::to_string(static_cast<int>(device.device_type)); break;
  }
  return kind + ":" + std::to_string(device.device_id);
}

// Where meap places memory of a DLPack device (see the top of this file); throws meap::error for
// devices meap does not run on.
inline device_location location_from_dlpack(DLDevice device, std::string_view argument = "tensor") {
  constexpr std::string_view function = "meap::interop::from_dlpack";
  switch (device.device_type) {
    case kDLCPU:
    case kDLCUDAHost: return {device_kind::cpu, 0};
    case kDLCUDA:
    case kDLCUDAManaged:
      check_argument(device.device_id >= 0, function, argument, "device " + describe(device),
                     "a CUDA device ordinal >= 0");
      return {device_kind::cuda, device.device_id};
    default:
      throw_argument_error(function, argument, "device " + describe(device),
                           "host memory (kDLCPU, kDLCUDAHost) or CUDA memory (kDLCUDA, kDLCUDAManaged)");
  }
}

constexpr DLDevice to_dlpack(const device_location& where) noexcept {
  return where.kind == device_kind::cuda ? DLDevice{kDLCUDA, where.ordinal} : DLDevice{kDLCPU, 0};
}

// The type-erased meap view of `tensor`'s memory, after checking everything meap relies on:
// rank <= max_rank, non-negative extents, a dtype and device meap knows, non-negative strides, a
// byte offset that keeps the element aligned, and a non-null pointer when there are elements.
// `argument` names the tensor in messages.
inline any_view from_dlpack(const DLTensor& tensor, std::string_view argument = "tensor") {
  constexpr std::string_view function = "meap::interop::from_dlpack";
  check_argument(tensor.ndim >= 0 && tensor.ndim <= max_rank, function, argument,
                 "ndim " + std::to_string(tensor.ndim), "a rank in [0, " + std::to_string(max_rank) + "]");
  if (tensor.ndim > 0)
    check_argument(tensor.shape != nullptr, function, argument, "shape nullptr", "a shape array of ndim extents");
  const auto type = dtype_from_dlpack(tensor.dtype);
  if (!type)
    throw_argument_error(function, argument, "dtype " + describe(tensor.dtype),
                         "one of meap's dtypes (float64/32/16, bfloat16, int64/32/16/8, uint64/32/16/8) with lanes 1");
  const device_location where = location_from_dlpack(tensor.device, argument);

  any_view view;
  view.type = *type;
  view.where = where;
  dims shape, strides;
  for (int i = 0; i < tensor.ndim; ++i) {
    check_argument(tensor.shape[i] >= 0, function, argument,
                   "extent " + std::to_string(tensor.shape[i]) + " in dimension " + std::to_string(i),
                   "non-negative extents");
    shape = shape.appended(tensor.shape[i]);
  }
  if (tensor.strides == nullptr) {
    strides = contiguous_strides(shape);
  } else {
    for (int i = 0; i < tensor.ndim; ++i) {
      // A negative stride walks backwards (torch.flip, x[::-1] in NumPy); meap's views cannot.
      if (tensor.strides[i] < 0)
        throw_argument_error(function, argument,
                             "stride " + std::to_string(tensor.strides[i]) + " in dimension " + std::to_string(i),
                             "non-negative strides (negative strides are not supported: pass a contiguous copy)");
      strides = strides.appended(tensor.strides[i]);
    }
  }
  const std::size_t element = size_of(*type);
  if (tensor.byte_offset % element != 0)
    throw_argument_error(function, argument, "byte_offset " + std::to_string(tensor.byte_offset),
                         "a multiple of the element size, " + std::to_string(element) + " bytes (" +
                             std::string(to_string(*type)) + "), so that elements stay aligned");
  auto* base = static_cast<unsigned char*>(tensor.data);
  index_t count = 1;
  for (int i = 0; i < shape.rank(); ++i)
    if (__builtin_mul_overflow(count, shape[i], &count))
      throw_argument_error(function, argument, "shape " + to_string(shape), "an element count that fits in 64 bits");
  if (count > 0) {
    check_argument(base != nullptr, function, argument, "data nullptr",
                   "a pointer to the tensor's memory (it has " + std::to_string(count) + " elements)");
    const auto address = reinterpret_cast<std::uintptr_t>(base) + tensor.byte_offset;
    if (address % element != 0)
      throw_argument_error(function, argument,
                           "data + byte_offset at an address that is not a multiple of " + std::to_string(element),
                           "memory aligned for " + std::string(to_string(*type)) + " elements");
    detail::check_view_fits(function, shape, strides, std::numeric_limits<index_t>::max(), false);
  }
  view.data = base == nullptr ? nullptr : base + tensor.byte_offset;
  view.shape = shape;
  view.strides = strides;
  return view;
}

// The typed view: from_dlpack, then the dtype and device checks of view_cast.
template <class T, device Device>
tensor_view<T, Device> from_dlpack(const DLTensor& tensor, std::string_view argument = "tensor") {
  return view_cast<T, Device>(from_dlpack(tensor, argument), argument);
}

// An imported DLManagedTensor, owned: its deleter runs exactly once, when this object dies (or
// never, after release()). Checked on construction, so a dlpack_tensor always holds a valid view.
class dlpack_tensor {
 public:
  dlpack_tensor() = default;
  // Takes ownership of `managed` (also when the checks throw: the deleter then runs at once, so a
  // refused tensor is not leaked).
  explicit dlpack_tensor(DLManagedTensor* managed, std::string_view argument = "tensor") : managed_(managed) {
    check_argument(managed != nullptr, "meap::interop::dlpack_tensor", argument, "nullptr",
                   "a DLManagedTensor from a producer (at::toDLPack, a framework's __dlpack__)");
    try {
      view_ = from_dlpack(managed->dl_tensor, argument);
    } catch (...) {
      reset();
      throw;
    }
  }
  dlpack_tensor(const dlpack_tensor&) = delete;
  dlpack_tensor& operator=(const dlpack_tensor&) = delete;
  dlpack_tensor(dlpack_tensor&& other) noexcept
      : managed_(std::exchange(other.managed_, nullptr)), view_(std::exchange(other.view_, {})) {}
  dlpack_tensor& operator=(dlpack_tensor&& other) noexcept {
    if (this != &other) {
      reset();
      managed_ = std::exchange(other.managed_, nullptr);
      view_ = std::exchange(other.view_, {});
    }
    return *this;
  }
  ~dlpack_tensor() { reset(); }

  const any_view& view() const noexcept { return view_; }
  template <class T, device Device>
  tensor_view<T, Device> view(std::string_view argument = "tensor") const {
    return view_cast<T, Device>(view_, argument);
  }
  DLManagedTensor* get() const noexcept { return managed_; }
  // Gives the tensor back without calling its deleter (the caller now owns it).
  DLManagedTensor* release() noexcept {
    view_ = {};
    return std::exchange(managed_, nullptr);
  }

 private:
  void reset() noexcept {
    if (managed_ != nullptr && managed_->deleter != nullptr) managed_->deleter(managed_);
    managed_ = nullptr;
    view_ = {};
  }

  DLManagedTensor* managed_ = nullptr;
  any_view view_;
};

namespace detail {

// What an exported DLManagedTensor points to: the struct itself, its shape and strides, and
// whatever keeps the memory alive (a moved-in tensor, or an owner the caller named).
template <class Keep>
struct dlpack_export {
  DLManagedTensor managed{};
  std::int64_t shape[max_rank] = {};
  std::int64_t strides[max_rank] = {};
  Keep keep;

  static void release(DLManagedTensor* self) noexcept { delete static_cast<dlpack_export*>(self->manager_ctx); }
};

template <class Keep, class T, class Device>
DLManagedTensor* export_view(const tensor_view<T, Device>& view, Keep keep) {
  auto holder = std::make_unique<dlpack_export<Keep>>();
  holder->keep = std::move(keep);
  const int rank = view.rank();
  for (int i = 0; i < rank; ++i) {
    holder->shape[i] = view.size(i);
    holder->strides[i] = view.stride(i);
  }
  DLTensor& t = holder->managed.dl_tensor;
  t.data = const_cast<std::remove_const_t<T>*>(view.data());
  t.device = to_dlpack(view.location());
  t.ndim = rank;
  t.dtype = to_dlpack(dtype_of<std::remove_const_t<T>>);
  t.shape = holder->shape;
  t.strides = holder->strides;
  t.byte_offset = 0;
  holder->managed.manager_ctx = holder.get();
  holder->managed.deleter = &dlpack_export<Keep>::release;
  return &holder.release()->managed;
}

}  // namespace detail

// Hands `owned` out: the returned DLManagedTensor owns the tensor's memory, which is freed when
// the receiver calls its deleter (exactly once, as DLPack requires).
template <class T, device Device>
DLManagedTensor* to_dlpack(tensor<T, Device>&& owned) {
  const auto view = owned.view();
  return detail::export_view(view, std::make_shared<tensor<T, Device>>(std::move(owned)));
}

// Hands out a view of memory that `owner` keeps alive (a shared_ptr to whatever holds it; the
// DLManagedTensor holds a reference until its deleter runs). With a null owner the caller
// promises that the memory outlives every use of the export.
template <class T, device Device>
DLManagedTensor* to_dlpack(const tensor_view<T, Device>& view, std::shared_ptr<const void> owner) {
  return detail::export_view(view, std::move(owner));
}

}  // namespace meap::interop
