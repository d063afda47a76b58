// meap/core/dtype.hpp: element types. The dtype is a template parameter everywhere; the runtime
// enum `dtype` exists for type-erased views, files and messages.
//
// meap::half and meap::bfloat16 are 2-byte storage types, bit-compatible with CUDA's __half and
// __nv_bfloat16 (static_assert'ed in <meap/cuda.hpp>), so a device buffer of one is a buffer of
// the other. Arithmetic converts to float, which is also their accumulate type.
#pragma once

#include <meap/core/config.hpp>

#include <cstdint>
#include <limits>
#include <ostream>
#include <string>
#include <string_view>
#include <type_traits>

#pragma push_macro("MEAP_DETAIL_ALLOWED")
#define MEAP_DETAIL_ALLOWED 1
#include <meap/detail/float16_bits.hpp>
#pragma pop_macro("MEAP_DETAIL_ALLOWED")

namespace meap {

namespace detail {
struct from_bits_t {};
}  // namespace detail

// IEEE 754 binary16.
struct half {
  std::uint16_t bits;

  half() = default;
  MEAP_HOST_DEVICE constexpr half(detail::from_bits_t, std::uint16_t raw) : bits(raw) {}
  MEAP_HOST_DEVICE half(float value) : bits(detail::float_to_half_bits(value)) {}
  MEAP_HOST_DEVICE half(double value) : half(static_cast<float>(value)) {}
  MEAP_HOST_DEVICE half(int value) : half(static_cast<float>(value)) {}
  MEAP_HOST_DEVICE operator float() const { return detail::half_bits_to_float(bits); }

  MEAP_HOST_DEVICE static constexpr half from_bits(std::uint16_t raw) { return {detail::from_bits_t{}, raw}; }

  MEAP_HOST_DEVICE half& operator+=(float x) { return *this = half(float(*this) + x); }
  MEAP_HOST_DEVICE half& operator-=(float x) { return *this = half(float(*this) - x); }
  MEAP_HOST_DEVICE half& operator*=(float x) { return *this = half(float(*this) * x); }
  MEAP_HOST_DEVICE half& operator/=(float x) { return *this = half(float(*this) / x); }
};

// bfloat16: the high half of a float32.
struct bfloat16 {
  std::uint16_t bits;

  bfloat16() = default;
  MEAP_HOST_DEVICE constexpr bfloat16(detail::from_bits_t, std::uint16_t raw) : bits(raw) {}
  MEAP_HOST_DEVICE bfloat16(float value) : bits(detail::float_to_bfloat16_bits(value)) {}
  MEAP_HOST_DEVICE bfloat16(double value) : bfloat16(static_cast<float>(value)) {}
  MEAP_HOST_DEVICE bfloat16(int value) : bfloat16(static_cast<float>(value)) {}
  MEAP_HOST_DEVICE operator float() const { return detail::bfloat16_bits_to_float(bits); }

  MEAP_HOST_DEVICE static constexpr bfloat16 from_bits(std::uint16_t raw) { return {detail::from_bits_t{}, raw}; }

  MEAP_HOST_DEVICE bfloat16& operator+=(float x) { return *this = bfloat16(float(*this) + x); }
  MEAP_HOST_DEVICE bfloat16& operator-=(float x) { return *this = bfloat16(float(*this) - x); }
  MEAP_HOST_DEVICE bfloat16& operator*=(float x) { return *this = bfloat16(float(*this) * x); }
  MEAP_HOST_DEVICE bfloat16& operator/=(float x) { return *this = bfloat16(float(*this) / x); }
};

static_assert(sizeof(half) == 2 && alignof(half) == 2 && std::is_trivially_copyable_v<half>);
static_assert(sizeof(bfloat16) == 2 && alignof(bfloat16) == 2 && std::is_trivially_copyable_v<bfloat16>);

inline std::ostream& operator<<(std::ostream& out, half value) { return out << static_cast<float>(value); }
inline std::ostream& operator<<(std::ostream& out, bfloat16 value) { return out << static_cast<float>(value); }

// Runtime element type. Names follow PyTorch (float32, bfloat16, int32, ...).
enum class dtype : std::uint8_t { f64, f32, f16, bf16, i64, i32, i16, i8, u64, u32, u16, u8 };

constexpr std::string_view to_string(dtype type) noexcept {
  switch (type) {
    case dtype::f64: return "float64";
    case dtype::f32: return "float32";
    case dtype::f16: return "float16";
    case dtype::bf16: return "bfloat16";
    case dtype::i64: return "int64";
    case dtype::i32: return "int32";
    case dtype::i16: return "int16";
    case dtype::i8: return "int8";
    case dtype::u64: return "uint64";
    case dtype::u32: return "uint32";
    case dtype::u16: return "uint16";
    case dtype::u8: return "uint8";
  }
  return "unknown";
}

constexpr std::size_t size_of(dtype type) noexcept {
  switch (type) {
    case dtype::f64: case dtype::i64: case dtype::u64: return 8;
    case dtype::f32: case dtype::i32: case dtype::u32: return 4;
    case dtype::f16: case dtype::bf16: case dtype::i16: case dtype::u16: return 2;
    case dtype::i8: case dtype::u8: return 1;
  }
  return 0;
}

constexpr bool is_floating(dtype type) noexcept {
  return type == dtype::f64 || type == dtype::f32 || type == dtype::f16 || type == dtype::bf16;
}

template <class T>
struct dtype_traits;  // undefined: not an element type meap knows

#define MEAP_DTYPE_TRAITS(type_, tag_)                 \
  template <>                                          \
  struct dtype_traits<type_> {                         \
    static constexpr dtype value = dtype::tag_;        \
  };
MEAP_DTYPE_TRAITS(double, f64)
MEAP_DTYPE_TRAITS(float, f32)
MEAP_DTYPE_TRAITS(half, f16)
MEAP_DTYPE_TRAITS(bfloat16, bf16)
MEAP_DTYPE_TRAITS(std::int64_t, i64)
MEAP_DTYPE_TRAITS(std::int32_t, i32)
MEAP_DTYPE_TRAITS(std::int16_t, i16)
MEAP_DTYPE_TRAITS(std::int8_t, i8)
MEAP_DTYPE_TRAITS(std::uint64_t, u64)
MEAP_DTYPE_TRAITS(std::uint32_t, u32)
MEAP_DTYPE_TRAITS(std::uint16_t, u16)
MEAP_DTYPE_TRAITS(std::uint8_t, u8)
#undef MEAP_DTYPE_TRAITS

template <class T>
concept element = requires { dtype_traits<std::remove_const_t<T>>::value; };

template <element T>
inline constexpr dtype dtype_of = dtype_traits<std::remove_const_t<T>>::value;

template <class T>
concept floating_element = element<T> && is_floating(dtype_of<T>);

// The type sums and products are accumulated in: float for the 16-bit floats, else the type.
template <class T>
struct accumulate_type {
  using type = T;
};
template <>
struct accumulate_type<half> {
  using type = float;
};
template <>
struct accumulate_type<bfloat16> {
  using type = float;
};
template <class T>
using accumulate_t = typename accumulate_type<std::remove_const_t<T>>::type;

}  // namespace meap

namespace meap::detail {
// std::numeric_limits members for a 16-bit float type, from its bit patterns.
template <class T, int Digits, int MinExponent, int MaxExponent, bool Iec559, std::uint16_t Min, std::uint16_t Max,
          std::uint16_t Epsilon, std::uint16_t Infinity, std::uint16_t QuietNaN>
struct float16_limits {
  static constexpr bool is_specialized = true;
  static constexpr bool is_signed = true;
  static constexpr bool is_integer = false;
  static constexpr bool is_exact = false;
  static constexpr bool has_infinity = true;
  static constexpr bool has_quiet_NaN = true;
  static constexpr bool is_iec559 = Iec559;
  static constexpr int digits = Digits;
  static constexpr int radix = 2;
  static constexpr int min_exponent = MinExponent;
  static constexpr int max_exponent = MaxExponent;
  static constexpr T min() noexcept { return T::from_bits(Min); }
  static constexpr T max() noexcept { return T::from_bits(Max); }
  static constexpr T lowest() noexcept { return T::from_bits(static_cast<std::uint16_t>(Max | 0x8000u)); }
  static constexpr T epsilon() noexcept { return T::from_bits(Epsilon); }
  static constexpr T infinity() noexcept { return T::from_bits(Infinity); }
  static constexpr T quiet_NaN() noexcept { return T::from_bits(QuietNaN); }
  static constexpr T denorm_min() noexcept { return T::from_bits(0x0001); }
};
}  // namespace meap::detail

// numeric_limits for the 16-bit floats, so generic code can ask for lowest(), infinity(), ...
template <>
class std::numeric_limits<meap::half>
    : public meap::detail::float16_limits<meap::half, 11, -13, 16, true, 0x0400, 0x7bff, 0x1400, 0x7c00, 0x7e00> {};

template <>
class std::numeric_limits<meap::bfloat16>
    : public meap::detail::float16_limits<meap::bfloat16, 8, -125, 128, false, 0x0080, 0x7f7f, 0x3c00, 0x7f80, 0x7fc0> {};
