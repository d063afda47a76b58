// Philox4x32-10: Random123's known-answer vectors, and the stream built on it.
#include <meap/meap.hpp>

#include <boost/test/unit_test.hpp>

#include <array>
#include <cstdint>
#include <set>

namespace {

struct known_answer {
  meap::u32x4 counter;
  meap::u32x2 key;
  meap::u32x4 expected;
};

// Random123 1.14, tests/kat_vectors, the three "philox4x32 10" lines.
constexpr std::array<known_answer, 3> known_answers{{
    {{{0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u}}, {{0x00000000u, 0x00000000u}},
     {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}}},
    {{{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}}, {{0xffffffffu, 0xffffffffu}},
     {{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}}},
    {{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, {{0xa4093822u, 0x299f31d0u}},
     {{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}}},
}};

// The generator is constexpr: the vectors also hold at compile time.
static_assert(meap::philox4x32<10>(known_answers[2].counter, known_answers[2].key) == known_answers[2].expected);

}  // namespace

BOOST_AUTO_TEST_SUITE(philox)

BOOST_AUTO_TEST_CASE(random123_known_answers) {
  for (const auto& kat : known_answers) {
    const meap::u32x4 got = meap::philox4x32<10>(kat.counter, kat.key);
    for (int i = 0; i < 4; ++i) BOOST_TEST(got[i] == kat.expected[i]);
  }
  // Seven rounds is a different function (Random123 lists it separately).
  BOOST_TEST(!(meap::philox4x32<7>(known_answers[2].counter, known_answers[2].key) == known_answers[2].expected));
}

BOOST_AUTO_TEST_CASE(stream_layout_is_documented_counter_and_key) {
  const std::uint64_t seed = 0x0123456789abcdefull;
  const std::uint64_t stream = 0xfedcba9876543210ull;
  meap::philox_stream s(seed, stream, 7);
  for (std::uint32_t block = 0; block < 3; ++block) {
    const meap::u32x4 expected = meap::philox4x32<10>(
        {{block, 7u, 0x76543210u, 0xfedcba98u}}, {{0x89abcdefu, 0x01234567u}});
    for (int i = 0; i < 4; ++i) BOOST_TEST_REQUIRE(s.next_u32() == expected[i]);
  }
  meap::philox_stream jumped(seed, stream, 7);
  jumped.seek_block(2);
  meap::philox_stream walked(seed, stream, 7);
  for (int i = 0; i < 8; ++i) (void)walked.next_u32();
  for (int i = 0; i < 12; ++i) BOOST_TEST_REQUIRE(jumped.next_u32() == walked.next_u32());
}

BOOST_AUTO_TEST_CASE(streams_and_substreams_differ) {
  std::set<std::uint32_t> firsts;
  for (std::uint64_t stream = 0; stream < 16; ++stream)
    for (std::uint32_t sub = 0; sub < 16; ++sub) firsts.insert(meap::philox_stream(42, stream, sub).next_u32());
  BOOST_TEST(firsts.size() == 256u);
  BOOST_TEST(meap::philox_stream(1, 0).next_u32() != meap::philox_stream(2, 0).next_u32());
}

BOOST_AUTO_TEST_CASE(bounded_and_unit_interval_draws) {
  meap::philox_stream s(2024, 1);
  constexpr std::uint32_t bins = 10;
  constexpr int draws = 100000;
  std::array<int, bins> counts{};
  for (int i = 0; i < draws; ++i) {
    const std::uint32_t k = s.next_below(bins);
    BOOST_TEST_REQUIRE(k < bins);
    ++counts[k];
  }
  double chi_square = 0.0;
  for (const int c : counts) chi_square += (c - draws / double(bins)) * (c - draws / double(bins)) / (draws / double(bins));
  BOOST_TEST(chi_square < 27.88);  // 9 degrees of freedom, p = 0.001
  for (int i = 0; i < 10000; ++i) {
    const float f = s.next_float();
    const double d = s.next_double();
    BOOST_TEST_REQUIRE((f >= 0.0f && f < 1.0f));
    BOOST_TEST_REQUIRE((d >= 0.0 && d < 1.0));
  }
  BOOST_TEST(meap::uniform_float(0xffffffffu) < 1.0f);
  BOOST_TEST(meap::uniform_double(0xffffffffu, 0xffffffffu) < 1.0);
  // A bound that is not a power of two and close to 2^32 still lands in range.
  for (int i = 0; i < 1000; ++i) BOOST_TEST_REQUIRE(s.next_below(0xfffffffbu) < 0xfffffffbu);
  BOOST_TEST(s.next_below(1) == 0u);
}

BOOST_AUTO_TEST_SUITE_END()
