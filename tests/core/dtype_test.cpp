// Element types: binary16 / bfloat16 conversions, traits, limits.
#include <meap/meap.hpp>

#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

namespace {

using floating_types = boost::mpl::list<float, double, meap::half, meap::bfloat16>;

bool is_nan_half(std::uint16_t bits) { return (bits & 0x7c00u) == 0x7c00u && (bits & 0x3ffu) != 0; }

// True when `chosen` is a correctly rounded (nearest, ties to even) image of `x` among the finite
// values of a 16-bit format, given that format's conversion to float and its neighbours.
template <class T>
bool is_nearest_even(float x, T chosen) {
  const std::uint16_t bits = chosen.bits;
  const double exact = x;
  const double got = static_cast<float>(chosen);
  if (std::isinf(got)) return std::fabs(exact) >= static_cast<double>(static_cast<float>(std::numeric_limits<T>::max()));
  // Neighbours one unit in the last place away on each side (same sign handling by bit steps).
  const T up = T::from_bits(static_cast<std::uint16_t>(bits + 1));
  const T down = T::from_bits(static_cast<std::uint16_t>(bits == 0x8000u || bits == 0 ? bits ^ 0x8000u : bits - 1));
  const double error = std::fabs(exact - got);
  for (const T neighbour : {up, down}) {
    const double value = static_cast<float>(neighbour);
    if (std::isnan(value) || std::isinf(value)) continue;
    const double other = std::fabs(exact - value);
    if (other < error) return false;
    if (other == error && (bits & 1u) && !(neighbour.bits & 1u)) return false;
  }
  return true;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(dtype)

BOOST_AUTO_TEST_CASE(half_round_trips_every_bit_pattern) {
  for (std::uint32_t bits = 0; bits <= 0xffffu; ++bits) {
    const auto h = meap::half::from_bits(static_cast<std::uint16_t>(bits));
    const meap::half back(static_cast<float>(h));
    if (is_nan_half(h.bits)) {
      BOOST_TEST(std::isnan(static_cast<float>(h)));
      BOOST_TEST(is_nan_half(back.bits));
    } else {
      BOOST_TEST_REQUIRE(back.bits == h.bits, "half bits " << std::hex << bits << " came back as " << back.bits);
    }
  }
}

BOOST_AUTO_TEST_CASE(half_known_values) {
  BOOST_TEST(meap::half(1.0f).bits == 0x3c00u);
  BOOST_TEST(meap::half(-2.0f).bits == 0xc000u);
  BOOST_TEST(meap::half(65504.0f).bits == 0x7bffu);
  BOOST_TEST(meap::half(65519.0f).bits == 0x7bffu);  // below the rounding midpoint to infinity
  BOOST_TEST(meap::half(65520.0f).bits == 0x7c00u);  // the midpoint rounds to even: infinity
  BOOST_TEST(meap::half(std::ldexp(1.0f, -24)).bits == 0x0001u);  // smallest subnormal
  BOOST_TEST(meap::half(std::ldexp(1.0f, -25)).bits == 0x0000u);  // tie to even: zero
  BOOST_TEST(meap::half(std::ldexp(1.5f, -25)).bits == 0x0001u);
  BOOST_TEST(meap::half(-0.0f).bits == 0x8000u);
  BOOST_TEST(meap::half(std::numeric_limits<float>::infinity()).bits == 0x7c00u);
  BOOST_TEST(is_nan_half(meap::half(std::numeric_limits<float>::quiet_NaN()).bits));
  BOOST_TEST(static_cast<float>(meap::half::from_bits(0x3555u)) == 0.333251953125f);
}

BOOST_AUTO_TEST_CASE(half_rounds_to_nearest_even) {
  std::mt19937 engine(1234);
  std::uniform_int_distribution<std::uint32_t> any_bits;
  for (int i = 0; i < 200000; ++i) {
    // Spread over the half range: exponents from far below the subnormals to past the maximum.
    const float x = std::ldexp(static_cast<float>(any_bits(engine) % 0x1000000u) / 16777216.0f + 0.5f,
                               static_cast<int>(any_bits(engine) % 48) - 30) *
                    ((any_bits(engine) & 1u) ? -1.0f : 1.0f);
    const meap::half h(x);
#if defined(__FLT16_MANT_DIG__)
    // The compiler's own binary16 conversion is an independent oracle.
    const auto oracle = std::bit_cast<std::uint16_t>(static_cast<_Float16>(x));
    BOOST_TEST_REQUIRE(h.bits == oracle, "x = " << x << ": meap " << std::hex << h.bits << " vs _Float16 " << oracle);
#endif
    BOOST_TEST_REQUIRE(is_nearest_even(x, h), "x = " << x << " -> " << std::hex << h.bits);
  }
}

BOOST_AUTO_TEST_CASE(bfloat16_known_values_and_rounding) {
  BOOST_TEST(meap::bfloat16(1.0f).bits == 0x3f80u);
  BOOST_TEST(meap::bfloat16(-2.5f).bits == 0xc020u);
  // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties to even keeps 1.
  BOOST_TEST(meap::bfloat16(1.0f + std::ldexp(1.0f, -8)).bits == 0x3f80u);
  BOOST_TEST(meap::bfloat16(1.0f + 3 * std::ldexp(1.0f, -8)).bits == 0x3f82u);
  BOOST_TEST(meap::bfloat16(std::numeric_limits<float>::infinity()).bits == 0x7f80u);
  BOOST_TEST(meap::bfloat16(std::numeric_limits<float>::max()).bits == 0x7f80u);  // rounds up past max
  const meap::bfloat16 nan(-std::numeric_limits<float>::quiet_NaN());
  BOOST_TEST(std::isnan(static_cast<float>(nan)));
  BOOST_TEST((nan.bits & 0x8000u) != 0u);
  std::mt19937 engine(99);
  std::uniform_int_distribution<std::uint32_t> any_bits;
  for (int i = 0; i < 200000; ++i) {
    const float x = std::bit_cast<float>(any_bits(engine));
    if (!std::isfinite(x)) continue;
    const meap::bfloat16 b(x);
    BOOST_TEST_REQUIRE(is_nearest_even(x, b), "x = " << x << " -> " << std::hex << b.bits);
  }
  for (std::uint32_t bits = 0; bits <= 0xffffu; ++bits) {
    const auto b = meap::bfloat16::from_bits(static_cast<std::uint16_t>(bits));
    const float f = b;
    if (!std::isnan(f)) BOOST_TEST_REQUIRE(meap::bfloat16(f).bits == bits);
  }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(small_integers_are_exact_and_arithmetic_works, T, floating_types) {
  for (int i = -256; i <= 256; ++i) BOOST_TEST_REQUIRE(static_cast<double>(static_cast<float>(T(i))) == i);
  T x = T(1.5f);
  x += 0.25f;
  BOOST_TEST(static_cast<float>(x) == 1.75f);
  x *= 2.0f;
  BOOST_TEST(static_cast<float>(x) == 3.5f);
  BOOST_TEST(meap::is_floating(meap::dtype_of<T>));
  static_assert(std::is_same_v<meap::accumulate_t<T>, std::conditional_t<std::is_same_v<T, double>, double, float>>);
  BOOST_TEST(meap::size_of(meap::dtype_of<T>) == sizeof(T));
}

BOOST_AUTO_TEST_CASE(dtype_names_sizes_and_limits) {
  BOOST_TEST(meap::to_string(meap::dtype::bf16) == "bfloat16");
  BOOST_TEST(meap::to_string(meap::dtype_of<std::int32_t>) == "int32");
  BOOST_TEST(meap::to_string(meap::dtype_of<const std::uint16_t>) == "uint16");
  BOOST_TEST(meap::size_of(meap::dtype::u8) == 1u);
  BOOST_TEST(!meap::is_floating(meap::dtype::i64));
  static_assert(meap::floating_element<meap::half> && !meap::floating_element<std::int32_t>);
  static_assert(!meap::element<long double> && !meap::element<bool>);
  BOOST_TEST(static_cast<float>(std::numeric_limits<meap::half>::max()) == 65504.0f);
  BOOST_TEST(static_cast<float>(std::numeric_limits<meap::half>::epsilon()) == std::ldexp(1.0f, -10));
  BOOST_TEST(static_cast<float>(std::numeric_limits<meap::half>::min()) == std::ldexp(1.0f, -14));
  BOOST_TEST(static_cast<float>(std::numeric_limits<meap::bfloat16>::epsilon()) == std::ldexp(1.0f, -7));
  BOOST_TEST(static_cast<float>(std::numeric_limits<meap::bfloat16>::max()) == 3.38953139e38f);
  BOOST_TEST(std::isinf(static_cast<float>(std::numeric_limits<meap::bfloat16>::infinity())));
  BOOST_TEST(static_cast<float>(std::numeric_limits<meap::half>::lowest()) == -65504.0f);
  BOOST_TEST(static_cast<float>(std::numeric_limits<meap::bfloat16>::lowest()) == -3.38953139e38f);
  BOOST_TEST(static_cast<float>(std::numeric_limits<meap::half>::denorm_min()) == std::ldexp(1.0f, -24));
  BOOST_TEST(std::isnan(static_cast<float>(std::numeric_limits<meap::half>::quiet_NaN())));
}

BOOST_AUTO_TEST_CASE(dispatch_maps_dtypes_to_types) {
  for (const auto type : {meap::dtype::f64, meap::dtype::f32, meap::dtype::f16, meap::dtype::bf16}) {
    const auto size = meap::dispatch_floating(type, "weights", [](auto tag) { return sizeof(typename decltype(tag)::type); });
    BOOST_TEST(size == meap::size_of(type));
  }
  const auto same = meap::dispatch(meap::dtype::u16, []<class T>(meap::type_tag<T>) {
    return meap::dtype_of<T> == meap::dtype::u16;
  });
  BOOST_TEST(same);
  BOOST_CHECK_EXCEPTION(meap::dispatch_floating(meap::dtype::i32, "weights", [](auto) { return 0; }), meap::error,
                        [](const meap::error& e) {
                          return e.argument() == "weights" && std::string(e.what()).find("int32") != std::string::npos &&
                                 std::string(e.what()).find("a floating dtype") != std::string::npos;
                        });
}

BOOST_AUTO_TEST_SUITE_END()
