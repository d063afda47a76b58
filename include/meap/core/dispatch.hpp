// meap/core/dispatch.hpp: from a runtime dtype to a compile-time element type.
//
//   meap::dispatch_floating(view.type, "weights", [&]<class T>(meap::type_tag<T>) { ... });
#pragma once

#include <meap/core/dtype.hpp>
#include <meap/core/error.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace meap {

template <class T>
struct type_tag {
  using type = T;
};

// Calls f(type_tag<T>{}) for the floating dtypes (float64, float32, float16, bfloat16); throws
// meap::error naming `argument` for any other dtype.
template <class F>
decltype(auto) dispatch_floating(dtype type, std::string_view argument, F&& f) {
  switch (type) {
    case dtype::f64: return f(type_tag<double>{});
    case dtype::f32: return f(type_tag<float>{});
    case dtype::f16: return f(type_tag<half>{});
    case dtype::bf16: return f(type_tag<bfloat16>{});
    default: break;
  }
  throw_argument_error("meap::dispatch_floating", argument, std::string("dtype ") + std::string(to_string(type)),
                       "a floating dtype: float64, float32, float16 or bfloat16");
}

// Calls f(type_tag<T>{}) for every dtype meap knows.
template <class F>
decltype(auto) dispatch(dtype type, F&& f) {
  switch (type) {
    case dtype::f64: return f(type_tag<double>{});
    case dtype::f32: return f(type_tag<float>{});
    case dtype::f16: return f(type_tag<half>{});
    case dtype::bf16: return f(type_tag<bfloat16>{});
    case dtype::i64: return f(type_tag<std::int64_t>{});
    case dtype::i32: return f(type_tag<std::int32_t>{});
    case dtype::i16: return f(type_tag<std::int16_t>{});
    case dtype::i8: return f(type_tag<std::int8_t>{});
    case dtype::u64: return f(type_tag<std::uint64_t>{});
    case dtype::u32: return f(type_tag<std::uint32_t>{});
    case dtype::u16: return f(type_tag<std::uint16_t>{});
    case dtype::u8: return f(type_tag<std::uint8_t>{});
  }
  throw_argument_error("meap::dispatch", "type", static_cast<int>(type), "a valid meap::dtype");
}

}  // namespace meap
