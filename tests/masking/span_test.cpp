// span: the documented rule, exact totals, span-length statistics, no overlapping or touching
// spans, exclusions, per_batch sharing, rows that run out of room, and bad parameters.
#include <meap/masking/apply.hpp>
#include <meap/masking/span.hpp>

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "masking/support.hpp"

namespace {

using namespace masking_test;
namespace mm = meap::masking;

// The rule of docs/masking.md, written out again for one row.
std::vector<std::uint8_t> reference_span(const std::uint8_t* eligible, std::int32_t length, const mm::span& policy,
                                         meap::philox_stream random) {
  std::vector<std::int32_t> positions;
  for (std::int32_t t = 0; t < length; ++t)
    if (eligible[t] != 0) positions.push_back(t);
  const auto n = static_cast<std::int32_t>(positions.size());
  const std::int32_t budget = std::max<std::int32_t>(1, static_cast<std::int32_t>(std::floor(policy.ratio * n)));
  const auto grow = static_cast<std::uint32_t>(std::floor((1.0 - 1.0 / policy.mean_length) * 4294967296.0));
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(length), 0);
  const auto at = [&](std::int32_t t) { return mask[static_cast<std::size_t>(t)]; };
  const auto valid = [&](std::int32_t s, std::int32_t l) {
    if (s + l > length || (s > 0 && at(s - 1) != 0) || (s + l < length && at(s + l) != 0)) return false;
    for (std::int32_t t = s; t < s + l; ++t)
      if (eligible[t] == 0 || at(t) != 0) return false;
    return true;
  };
  const auto mark = [&](std::int32_t s, std::int32_t l) {
    for (std::int32_t t = s; t < s + l; ++t) mask[static_cast<std::size_t>(t)] = 1;
    return l;
  };
  std::int32_t masked = 0;
  while (masked < budget) {
    std::int32_t l = 1;
    while (l < policy.max_length && random.next_u32() < grow) ++l;
    l = std::min(l, budget - masked);
    std::int32_t placed = 0;
    for (std::int32_t tried = l; placed == 0; tried = (tried + 1) / 2) {
      for (std::int32_t a = 0; a < policy.attempts && placed == 0; ++a) {
        const std::int32_t s = positions[random.next_below(static_cast<std::uint32_t>(n))];
        if (valid(s, tried)) placed = mark(s, tried);
      }
      if (tried == 1) break;
    }
    if (placed == 0) {
      const std::uint32_t first = random.next_below(static_cast<std::uint32_t>(n));
      for (std::int32_t d = 0; d < n && placed == 0; ++d) {
        const std::int32_t s = positions[(first + static_cast<std::uint32_t>(d)) % static_cast<std::uint32_t>(n)];
        if (valid(s, 1)) placed = mark(s, 1);
      }
      if (placed == 0) break;
    }
    masked += placed;
  }
  return mask;
}

// Lengths of the maximal runs of masked positions in row b.
std::vector<std::int32_t> runs(const mm::masked_batch<meap::cpu>& result, meap::index_t b) {
  std::vector<std::int32_t> lengths;
  std::int32_t current = 0;
  for (meap::index_t t = 0; t < result.mask.size(1); ++t) {
    if (result.mask.view()(b, t) != 0) {
      ++current;
    } else if (current > 0) {
      lengths.push_back(current);
      current = 0;
    }
  }
  if (current > 0) lengths.push_back(current);
  return lengths;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(span)

BOOST_AUTO_TEST_CASE(length_draw_uses_an_integer_threshold) {
  BOOST_TEST(mm::span{.mean_length = 1.0}.continue_threshold() == 0u);
  BOOST_TEST(mm::span{.mean_length = 2.0}.continue_threshold() == 2147483648u);
  BOOST_TEST(mm::span{.mean_length = 3.0}.continue_threshold() == 2863311530u);  // floor(2/3 * 2^32)
  // Clamped geometric mean: sum over l = 1..max of g^(l - 1).
  const mm::span short_spans{.mean_length = 2.0, .max_length = 3};
  const mm::span default_spans{.mean_length = 3.0, .max_length = 10};
  BOOST_TEST(short_spans.expected_span_length() == 1.75);
  BOOST_TEST(default_spans.expected_span_length() == 3.0 * (1.0 - std::pow(2.0 / 3.0, 10.0)),
             boost::test_tools::tolerance(1e-8));
}

BOOST_AUTO_TEST_CASE(statistics_exact_total_mean_length_max_and_separation) {
  // [64, 4096] inputs, the last excluded: n = 4095 eligible, budget = floor(0.15 * 4095) = 614.
  const batch tokens = plain_batch(64, 4097, 3);
  for (const mm::span policy : {mm::span{.ratio = 0.15, .mean_length = 3.0, .max_length = 10},
                                mm::span{.ratio = 0.15, .mean_length = 5.0, .max_length = 8},
                                mm::span{.ratio = 0.3, .mean_length = 1.5, .max_length = 4}}) {
    auto result = mm::apply(meap::cpu{}, policy, tokens.view(), {.seed = 8, .step = 1, .mask_id = mask});
    const auto budget = static_cast<meap::index_t>(std::floor(policy.ratio * 4095.0));
    std::vector<double> histogram(static_cast<std::size_t>(policy.max_length) + 1, 0.0);
    double spans = 0.0;
    double total = 0.0;
    for (meap::index_t b = 0; b < 64; ++b) {
      BOOST_TEST_REQUIRE(masked_in_row(result, b) == budget, "row " << b);
      BOOST_TEST_REQUIRE(result.mask.view()(b, 4095) == 0);
      for (const std::int32_t length : runs(result, b)) {
        // Spans never touch, so a run of masked positions is one span, at most max_length long.
        BOOST_TEST_REQUIRE(length <= policy.max_length);
        histogram[static_cast<std::size_t>(length)] += 1.0;
        spans += 1.0;
        total += length;
      }
    }
    const double mean = total / spans;
    const double g = static_cast<double>(policy.continue_threshold()) / 4294967296.0;
    BOOST_TEST_MESSAGE("span mean_length " << policy.mean_length << " max " << policy.max_length << ": " << spans
                                           << " spans, mean " << mean << " (expected " << policy.expected_span_length()
                                           << "), P(1) = " << histogram[1] / spans << " (expected " << 1.0 - g << ")");
    // Budget clipping and the rare shortened span pull the mean down by well under 1%.
    BOOST_TEST(mean == policy.expected_span_length(), boost::test_tools::tolerance(0.03));
    BOOST_TEST(histogram[1] / spans == 1.0 - g, boost::test_tools::tolerance(0.06));
    // The geometric tail reaches the cap.
    BOOST_TEST(histogram[static_cast<std::size_t>(policy.max_length)] > 0.0);
  }
}

BOOST_AUTO_TEST_CASE(follows_the_documented_rule_with_exclusions_and_segments) {
  const batch tokens = messy_batch(24, 257, 41);
  const auto segments = random_segments(24, 257, 41);
  const auto segment_view = meap::make_view(std::span<const std::int32_t>(segments), {24, 257});
  const mm::pretraining_options options{.seed = 12, .step = 345, .mask_id = mask, .pad_id = pad, .special_ids = {bos, eos}};
  const auto eligible = expected_eligible(tokens, options, &segments, 257);
  for (const mm::span policy : {mm::span{}, mm::span{.ratio = 0.3, .mean_length = 4.0, .max_length = 12, .attempts = 2},
                                mm::span{.ratio = 0.05, .mean_length = 1.0, .max_length = 1}}) {
    auto result = mm::apply(meap::cpu{}, policy, tokens.view(), options, segment_view);
    for (meap::index_t b = 0; b < 24; ++b) {
      const auto expected = reference_span(eligible.data() + b * 256, 256, policy,
                                           meap::philox_stream(12, 345, static_cast<std::uint32_t>(b)));
      for (meap::index_t t = 0; t < 256; ++t) {
        BOOST_TEST_REQUIRE(result.mask.view()(b, t) == expected[static_cast<std::size_t>(t)], "row " << b << " t " << t);
        if (result.mask.view()(b, t) != 0) BOOST_TEST_REQUIRE(eligible[static_cast<std::size_t>(b * 256 + t)] == 1);
        BOOST_TEST_REQUIRE(result.input_ids.view()(b, t) == (result.mask.view()(b, t) != 0 ? mask : tokens.at(b, t)));
      }
      for (const std::int32_t length : runs(result, b)) BOOST_TEST_REQUIRE(length <= policy.max_length);
    }
  }
}

BOOST_AUTO_TEST_CASE(per_batch_spans_are_shared) {
  const batch tokens = messy_batch(10, 200, 5);
  const mm::pretraining_options options{.seed = 1, .step = 2, .mask_id = mask, .pad_id = pad, .special_ids = {bos, eos}};
  const auto eligible = expected_eligible(tokens, options);
  std::vector<std::uint8_t> common(199, 1);
  for (meap::index_t b = 0; b < 10; ++b)
    for (meap::index_t t = 0; t < 199; ++t) common[static_cast<std::size_t>(t)] &= eligible[static_cast<std::size_t>(b * 199 + t)];
  const mm::span policy{.ratio = 0.2, .sharing = mm::sharing::per_batch};
  auto result = mm::apply(meap::cpu{}, policy, tokens.view(), options);
  const auto expected = reference_span(common.data(), 199, policy, meap::philox_stream(1, 2, mm::batch_substream));
  for (meap::index_t b = 0; b < 10; ++b)
    for (meap::index_t t = 0; t < 199; ++t)
      BOOST_TEST_REQUIRE(result.mask.view()(b, t) == expected[static_cast<std::size_t>(t)], "row " << b << " t " << t);
}

BOOST_AUTO_TEST_CASE(a_row_without_room_stops_below_the_budget) {
  // 19 eligible positions, budget floor(0.9 * 19) = 17, but spans of at most 5 must be kept apart
  // by a free position, so at most 5 + 5 + 5 + 1 = 16 fit. Masking stops when no single position
  // can be added: then every free position touches a span, which takes at least ceil(19 / 3) = 7.
  const batch tokens = plain_batch(8, 21, 2);
  const mm::span policy{.ratio = 0.9, .mean_length = 2.0, .max_length = 5};
  auto result = mm::apply(meap::cpu{}, policy, tokens.view(), {.mask_id = mask});
  for (meap::index_t b = 0; b < 8; ++b) {
    const meap::index_t count = masked_in_row(result, b);
    BOOST_TEST_REQUIRE(count >= 7);
    BOOST_TEST_REQUIRE(count <= 16);
    const auto m = [&](meap::index_t t) { return t >= 0 && t < 20 && result.mask.view()(b, t) != 0; };
    for (meap::index_t t = 0; t < 19; ++t)  // maximal: every free eligible position touches a span
      BOOST_TEST_REQUIRE((m(t) || m(t - 1) || m(t + 1)), "row " << b << " t " << t);
    for (const std::int32_t length : runs(result, b)) BOOST_TEST_REQUIRE(length <= 5);
  }
}

BOOST_AUTO_TEST_CASE(bad_parameters_are_rejected) {
  const batch tokens = plain_batch(2, 30, 1);
  const mm::pretraining_options options{.mask_id = mask};
  const auto rejects = [&](const mm::span& policy, const char* argument, std::vector<std::string> fragments) {
    BOOST_CHECK_EXCEPTION(mm::apply(meap::cpu{}, policy, tokens.view(), options), meap::error,
                          error_says("meap::masking::span", argument, std::move(fragments)));
  };
  rejects(mm::span{.ratio = 0.0}, "ratio", {"(0, 1)"});
  rejects(mm::span{.ratio = 1.0}, "ratio", {"(0, 1)"});
  rejects(mm::span{.mean_length = 0.5}, "mean_length", {"= 0.5", "[1, max_length = 10]"});
  rejects(mm::span{.mean_length = 11.0}, "mean_length", {"= 11"});
  rejects(mm::span{.mean_length = 1.0, .max_length = 0}, "max_length", {"= 0"});
  rejects(mm::span{.attempts = 0}, "attempts", {"= 0"});
}

BOOST_AUTO_TEST_SUITE_END()
