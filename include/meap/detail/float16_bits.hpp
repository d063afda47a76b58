// meap/detail/float16_bits.hpp: IEEE binary16 and bfloat16 conversions on bit patterns, usable on
// host and device. Internal; the public types are meap::half and meap::bfloat16 (core/dtype.hpp).
#pragma once
#ifndef MEAP_DETAIL_ALLOWED
#error "meap/detail/* headers are internal: include <meap/meap.hpp> (or <meap/cuda.hpp>) instead"
#endif

#include <meap/core/config.hpp>

#include <bit>
#include <cstdint>

namespace meap::detail {

MEAP_HOST_DEVICE inline std::uint32_t float_to_bits(float value) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(value);
#else
  return std::bit_cast<std::uint32_t>(value);
#endif
}

MEAP_HOST_DEVICE inline float bits_to_float(std::uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  return std::bit_cast<float>(bits);
#endif
}

// float -> binary16, round to nearest even; NaN stays NaN (quiet, payload's high bits kept),
// overflow goes to infinity, underflow through the subnormals to signed zero.
MEAP_HOST_DEVICE inline std::uint16_t float_to_half_bits(float value) {
  const std::uint32_t x = float_to_bits(value);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t magnitude = x & 0x7fffffffu;
  if (magnitude >= 0x7f800000u) {  // inf or NaN
    const std::uint32_t nan_bits = magnitude > 0x7f800000u ? (0x200u | ((magnitude >> 13) & 0x3ffu)) : 0u;
    return static_cast<std::uint16_t>(sign | 0x7c00u | nan_bits);
  }
  if (magnitude >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // >= 65520
  if (magnitude < 0x38800000u) {  // below 2^-14: a half subnormal or zero
    const int exponent = static_cast<int>(magnitude >> 23);
    if (exponent < 102) return static_cast<std::uint16_t>(sign);  // below 2^-25 rounds to zero
    const std::uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;
    const int shift = 126 - exponent;  // value / 2^-24 = mantissa >> shift
    std::uint32_t quotient = mantissa >> shift;
    const std::uint32_t remainder = mantissa & ((1u << shift) - 1u);
    const std::uint32_t halfway = 1u << (shift - 1);
    if (remainder > halfway || (remainder == halfway && (quotient & 1u))) ++quotient;
    return static_cast<std::uint16_t>(sign | quotient);
  }
  std::uint32_t rebased = magnitude - 0x38000000u;  // exponent bias 127 -> 15
  const std::uint32_t remainder = rebased & 0x1fffu;
  rebased >>= 13;
  if (remainder > 0x1000u || (remainder == 0x1000u && (rebased & 1u))) ++rebased;
  return static_cast<std::uint16_t>(sign | rebased);
}

MEAP_HOST_DEVICE inline float half_bits_to_float(std::uint16_t bits) {
  const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
  const std::uint32_t exponent = (bits >> 10) & 0x1fu;
  const std::uint32_t mantissa = bits & 0x3ffu;
  if (exponent == 0x1fu) return bits_to_float(sign | 0x7f800000u | (mantissa << 13));
  if (exponent == 0u) {
    // mantissa * 2^-24 is exact in float.
    const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    return sign != 0u ? -magnitude : magnitude;
  }
  return bits_to_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

// float -> bfloat16, round to nearest even; NaN stays a quiet NaN of the same sign.
MEAP_HOST_DEVICE inline std::uint16_t float_to_bfloat16_bits(float value) {
  std::uint32_t x = float_to_bits(value);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x0040u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<std::uint16_t>(x >> 16);
}

MEAP_HOST_DEVICE inline float bfloat16_bits_to_float(std::uint16_t bits) {
  return bits_to_float(static_cast<std::uint32_t>(bits) << 16);
}

}  // namespace meap::detail
