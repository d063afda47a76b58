// fixed_ratio and apply(): exact counts, exclusions, uniformity (with a biased sampler that the
// same test rejects), per_batch sharing, the documented algorithm, user-defined policies, and
// every bad input.
#include <meap/masking/apply.hpp>
#include <meap/masking/fixed_ratio.hpp>

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "masking/support.hpp"

namespace {

using namespace masking_test;
namespace mm = meap::masking;

// The documented draw (docs/masking.md), written out again: partial Fisher-Yates over the
// eligible positions of one row with the given stream.
std::vector<std::uint8_t> reference_fixed_ratio(const std::uint8_t* eligible, meap::index_t length, double ratio,
                                                meap::philox_stream random) {
  std::vector<std::int32_t> positions;
  for (meap::index_t t = 0; t < length; ++t)
    if (eligible[t] != 0) positions.push_back(static_cast<std::int32_t>(t));
  const auto n = static_cast<std::int32_t>(positions.size());
  const std::int32_t k = std::max<std::int32_t>(1, static_cast<std::int32_t>(std::floor(ratio * n)));
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(length), 0);
  for (std::int32_t i = 0; i < k; ++i) {
    const std::int32_t j = i + static_cast<std::int32_t>(random.next_below(static_cast<std::uint32_t>(n - i)));
    std::swap(positions[static_cast<std::size_t>(i)], positions[static_cast<std::size_t>(j)]);
    mask[static_cast<std::size_t>(positions[static_cast<std::size_t>(i)])] = 1;
  }
  return mask;
}

// Checks input_ids and labels against tokens and the mask flags.
void check_outputs_follow_mask(const batch& tokens, mm::masked_batch<meap::cpu>& result, std::int32_t mask_id,
                               std::int32_t pad_id) {
  const meap::index_t length = tokens.columns - 1;
  for (meap::index_t b = 0; b < tokens.rows; ++b)
    for (meap::index_t t = 0; t < length; ++t) {
      const bool masked = result.mask.view()(b, t) != 0;
      BOOST_TEST_REQUIRE(result.input_ids.view()(b, t) == (masked ? mask_id : tokens.at(b, t)), "row " << b << " t " << t);
      const std::int32_t next = tokens.at(b, t + 1);
      BOOST_TEST_REQUIRE(result.labels.view()(b, t) == (pad_id >= 0 && next == pad_id ? mm::ignore_index : next));
    }
}

// A sampler that prefers low positions: it takes the smaller of two draws. It satisfies the
// policy concept, so apply() runs it like any other.
struct low_biased {
  double ratio = 0.15;
  mm::sharing sharing = mm::sharing::per_row;
  void validate() const {}
  void mask_row(const mm::row_candidates& row, meap::philox_stream& random) const {
    const std::int32_t k = mm::masked_count(ratio, row.count);
    for (std::int32_t i = 0; i < k; ++i) {
      const auto bound = static_cast<std::uint32_t>(row.count - i);
      const std::int32_t j = i + static_cast<std::int32_t>(std::min(random.next_below(bound), random.next_below(bound)));
      std::swap(row.positions[i], row.positions[j]);
      row.mask[row.positions[i]] = 1;
    }
  }
};
static_assert(mm::pretraining_policy<low_biased>);

// Counts how often each position of a 33-token row (32 inputs, 31 eligible: the last input is
// excluded) is masked over 80 steps x 50 rows = 4000 draws, and returns Pearson's statistic
// against the uniform expectation E = draws * k / n. A draw is k positions without replacement,
// so the counts are negatively correlated: the covariance of the standardized counts is
// (n - k) / (n - 1) times that of a multinomial, and the statistic is scaled by (n - 1) / (n - k)
// to follow chi-square with n - 1 degrees of freedom.
template <class Policy>
double uniformity_statistic(const Policy& policy) {
  const batch tokens = plain_batch(50, 33, 99);
  const meap::index_t length = 32;
  const double n = 31.0;
  std::vector<double> counts(static_cast<std::size_t>(length), 0.0);
  double draws = 0.0;
  double k = 0.0;
  for (std::uint64_t step = 0; step < 80; ++step) {
    auto result = mm::apply(meap::cpu{}, policy, tokens.view(), {.seed = 2024, .step = step, .mask_id = mask});
    for (meap::index_t b = 0; b < tokens.rows; ++b) {
      for (meap::index_t t = 0; t < length; ++t) counts[static_cast<std::size_t>(t)] += result.mask.view()(b, t);
      k = static_cast<double>(masked_in_row(result, b));
      draws += 1.0;
    }
  }
  BOOST_TEST_REQUIRE(counts.back() == 0.0);  // the last input position is never drawn
  const double expected = draws * k / n;
  double statistic = 0.0;
  for (meap::index_t t = 0; t + 1 < length; ++t)
    statistic += (counts[static_cast<std::size_t>(t)] - expected) * (counts[static_cast<std::size_t>(t)] - expected) / expected;
  return statistic * (n - 1.0) / (n - k);
}

// chi-square with 30 degrees of freedom: P(X > 59.703) = 0.001. A fixed threshold: the seeds
// are fixed, so the test is deterministic and fails only when the sampler is biased.
constexpr double chi_square_30_at_0_001 = 59.703;

}  // namespace

BOOST_AUTO_TEST_SUITE(fixed_ratio)

BOOST_AUTO_TEST_CASE(exact_counts_for_every_row) {
  for (const double ratio : {0.01, 0.15, 0.5, 0.9}) {
    for (const meap::index_t columns : {3, 4, 17, 100, 513}) {
      const batch tokens = messy_batch(9, columns, static_cast<std::uint64_t>(columns));
      const mm::pretraining_options options{.seed = 5, .step = 11, .mask_id = mask, .pad_id = pad, .special_ids = {bos, eos}};
      const auto eligible = expected_eligible(tokens, options);
      const meap::index_t length = columns - 1;
      bool every_row_has_one = true;
      for (meap::index_t b = 0; b < tokens.rows; ++b)
        every_row_has_one = every_row_has_one &&
                            std::count(eligible.begin() + b * length, eligible.begin() + (b + 1) * length, 1) > 0;
      if (!every_row_has_one) continue;  // that batch is the error test's business
      auto result = mm::apply(meap::cpu{}, mm::fixed_ratio{.ratio = ratio}, tokens.view(), options);
      BOOST_TEST_REQUIRE((result.input_ids.shape() == meap::dims{9, length}));
      for (meap::index_t b = 0; b < tokens.rows; ++b) {
        const auto n = std::count(eligible.begin() + b * length, eligible.begin() + (b + 1) * length, 1);
        const auto k = std::max<meap::index_t>(1, static_cast<meap::index_t>(std::floor(ratio * static_cast<double>(n))));
        BOOST_TEST_REQUIRE(masked_in_row(result, b) == k, "ratio " << ratio << " columns " << columns << " row " << b);
        for (meap::index_t t = 0; t < length; ++t)
          if (result.mask.view()(b, t) != 0) BOOST_TEST_REQUIRE(eligible[static_cast<std::size_t>(b * length + t)] == 1);
      }
      check_outputs_follow_mask(tokens, result, mask, pad);
    }
  }
  // k = max(1, floor(P n)) at the edges.
  BOOST_TEST(mm::masked_count(0.15, 1) == 1);
  BOOST_TEST(mm::masked_count(0.15, 6) == 1);
  BOOST_TEST(mm::masked_count(0.15, 7) == 1);
  BOOST_TEST(mm::masked_count(0.15, 20) == 3);
  BOOST_TEST(mm::masked_count(0.15, 4095) == 614);
  BOOST_TEST(mm::masked_count(0.5, 4) == 2);
}

BOOST_AUTO_TEST_CASE(exclusions_padding_specials_last_position_and_segments) {
  // Ratio 0.9 over many steps: the union of masked positions is exactly the eligible set.
  const auto masked_union = [](const batch& tokens, const mm::pretraining_options& base,
                               meap::tensor_view<const std::int32_t, meap::cpu> segments) {
    std::set<meap::index_t> seen;
    for (std::uint64_t step = 0; step < 200; ++step) {
      mm::pretraining_options options = base;
      options.step = step;
      auto result = mm::apply(meap::cpu{}, mm::fixed_ratio{.ratio = 0.9}, tokens.view(), options, segments);
      for (meap::index_t t = 0; t < result.mask.size(1); ++t)
        if (result.mask.view()(0, t) != 0) seen.insert(t);
    }
    return seen;
  };
  const std::int32_t a = 20, b = 21, c = 22, d = 23, e = 24, f = 25;
  // Inputs 0..10, target of input 10 is padding.
  //   BOS a b c EOS BOS d e f EOS PAD | PAD
  const batch documents{1, 12, {bos, a, b, c, eos, bos, d, e, f, eos, pad, pad}};
  const mm::pretraining_options options{.seed = 3, .mask_id = mask, .pad_id = pad, .special_ids = {bos, eos}};
  BOOST_TEST((masked_union(documents, options, {}) == std::set<meap::index_t>{1, 2, 3, 6, 7, 8}));

  // Position before padding and the row's last position: excluded unless mask_last_position.
  //   a b c d PAD PAD | PAD  (inputs 0..5)
  const batch padded{1, 7, {a, b, c, d, pad, pad, pad}};
  BOOST_TEST((masked_union(padded, options, {}) == std::set<meap::index_t>{0, 1, 2}));
  mm::pretraining_options last_allowed = options;
  last_allowed.mask_last_position = true;
  BOOST_TEST((masked_union(padded, last_allowed, {}) == std::set<meap::index_t>{0, 1, 2, 3}));
  const batch unpadded{1, 7, {a, b, c, d, e, f, a}};
  BOOST_TEST((masked_union(unpadded, options, {}) == std::set<meap::index_t>{0, 1, 2, 3, 4}));
  BOOST_TEST((masked_union(unpadded, last_allowed, {}) == std::set<meap::index_t>{0, 1, 2, 3, 4, 5}));

  // Packed documents: the last input of each segment (its target is the next document) is
  // excluded; the first token of a segment is fine.
  //   tokens  a b c d e f a b | c
  //   segment 0 0 0 1 1 1 2 2 | 2
  const batch packed{1, 9, {a, b, c, d, e, f, a, b, c}};
  const std::vector<std::int32_t> segment_per_token{0, 0, 0, 1, 1, 1, 2, 2, 2};
  const auto per_token = meap::make_view(std::span<const std::int32_t>(segment_per_token), {1, 9});
  BOOST_TEST((masked_union(packed, options, per_token) == std::set<meap::index_t>{0, 1, 3, 4, 6}));
  // (B, T) segment ids say the same for inputs 0..6; the last input is excluded anyway.
  const auto per_input = per_token.slice(1, 0, 8);
  BOOST_TEST((masked_union(packed, options, per_input) == std::set<meap::index_t>{0, 1, 3, 4, 6}));
  // A document change between the last two inputs, seen by (B, T) ids.
  const std::vector<std::int32_t> late_change{0, 0, 0, 0, 0, 0, 0, 1};
  BOOST_TEST((masked_union(packed, options, meap::make_view(std::span<const std::int32_t>(late_change), {1, 8})) ==
              std::set<meap::index_t>{0, 1, 2, 3, 4, 5}));
  // mask_last_position = true makes the last input of every segment eligible too.
  BOOST_TEST((masked_union(packed, last_allowed, per_token) == std::set<meap::index_t>{0, 1, 2, 3, 4, 5, 6, 7}));

  // A large messy batch with segments: no masked position is ever ineligible.
  const batch messy = messy_batch(16, 300, 8);
  const auto segments = random_segments(16, 300, 8);
  const auto segment_view = meap::make_view(std::span<const std::int32_t>(segments), {16, 300});
  const auto eligible = expected_eligible(messy, options, &segments, 300);
  for (std::uint64_t step = 0; step < 20; ++step) {
    mm::pretraining_options stepped = options;
    stepped.step = step;
    auto result = mm::apply(meap::cpu{}, mm::fixed_ratio{.ratio = 0.5}, messy.view(), stepped, segment_view);
    for (meap::index_t row = 0; row < 16; ++row)
      for (meap::index_t t = 0; t < 299; ++t)
        if (result.mask.view()(row, t) != 0) BOOST_TEST_REQUIRE(eligible[static_cast<std::size_t>(row * 299 + t)] == 1);
    check_outputs_follow_mask(messy, result, mask, pad);
  }
}

BOOST_AUTO_TEST_CASE(device_predicate_agrees_with_the_exclusion_rules) {
  // The CUDA backend evaluates exclusion_rule::eligible position by position; the CPU backend
  // evaluates the same rule pass by pass. Both must say what the documented rules say.
  const batch messy = messy_batch(16, 300, 8);
  const auto segments = random_segments(16, 300, 8);
  for (const bool last_ok : {false, true}) {
    mm::pretraining_options options{.mask_id = mask, .pad_id = pad, .special_ids = {bos, eos}, .mask_last_position = last_ok};
    for (const bool segmented : {false, true}) {
      const auto expected = expected_eligible(messy, options, segmented ? &segments : nullptr, 300);
      const mm::detail::exclusion_rule rule{pad, options.special_ids.data(), 2, 299, last_ok};
      for (meap::index_t b = 0; b < 16; ++b)
        for (std::int32_t t = 0; t < 299; ++t) {
          const bool ends = segmented && segments[static_cast<std::size_t>(b * 300 + t)] !=
                                             segments[static_cast<std::size_t>(b * 300 + t + 1)];
          BOOST_TEST_REQUIRE(rule.eligible(t, messy.at(b, t), messy.at(b, t + 1), ends) ==
                                 (expected[static_cast<std::size_t>(b * 299 + t)] != 0),
                             "row " << b << " t " << t);
        }
      // The CPU backend draws k = max(1, floor(0.5 n)) of exactly those n positions.
      const auto segment_view = meap::make_view(std::span<const std::int32_t>(segments), {16, 300});
      auto result = mm::apply(meap::cpu{}, mm::fixed_ratio{.ratio = 0.5}, messy.view(), options,
                              segmented ? segment_view : meap::tensor_view<const std::int32_t, meap::cpu>{});
      for (meap::index_t b = 0; b < 16; ++b) {
        const auto n = std::count(expected.begin() + b * 299, expected.begin() + (b + 1) * 299, 1);
        BOOST_TEST_REQUIRE(masked_in_row(result, b) == mm::masked_count(0.5, static_cast<std::int32_t>(n)));
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(uniform_over_positions_chi_square) {
  const double statistic = uniformity_statistic(mm::fixed_ratio{.ratio = 0.15});
  BOOST_TEST_MESSAGE("fixed_ratio chi-square (30 dof): " << statistic);
  BOOST_TEST(statistic < chi_square_30_at_0_001);
  const double shared = uniformity_statistic(mm::fixed_ratio{.ratio = 0.15, .sharing = mm::sharing::per_batch});
  // Under per_batch the 50 rows of a step repeat one draw, so only 80 draws are independent:
  // scale the counts back to one row per step before testing.
  BOOST_TEST_MESSAGE("fixed_ratio per_batch chi-square (30 dof, x 1/50): " << shared / 50.0);
  BOOST_TEST(shared / 50.0 < chi_square_30_at_0_001);
}

BOOST_AUTO_TEST_CASE(biased_sampler_fails_the_same_chi_square_test) {
  const double statistic = uniformity_statistic(low_biased{});
  BOOST_TEST_MESSAGE("low_biased chi-square (30 dof): " << statistic);
  BOOST_TEST(statistic > chi_square_30_at_0_001);
}

BOOST_AUTO_TEST_CASE(per_batch_shares_one_position_set) {
  const batch tokens = messy_batch(12, 80, 17);
  const mm::pretraining_options options{.seed = 9, .step = 4, .mask_id = mask, .pad_id = pad, .special_ids = {bos, eos}};
  const auto eligible = expected_eligible(tokens, options);
  const meap::index_t length = 79;
  std::vector<std::uint8_t> common(static_cast<std::size_t>(length), 1);
  for (meap::index_t b = 0; b < tokens.rows; ++b)
    for (meap::index_t t = 0; t < length; ++t) common[static_cast<std::size_t>(t)] &= eligible[static_cast<std::size_t>(b * length + t)];
  const auto n = std::count(common.begin(), common.end(), 1);
  BOOST_TEST_REQUIRE(n > 10);
  const mm::fixed_ratio policy{.ratio = 0.2, .sharing = mm::sharing::per_batch};
  auto result = mm::apply(meap::cpu{}, policy, tokens.view(), options);
  for (meap::index_t b = 0; b < tokens.rows; ++b) {
    BOOST_TEST_REQUIRE(masked_in_row(result, b) == static_cast<meap::index_t>(std::floor(0.2 * static_cast<double>(n))));
    for (meap::index_t t = 0; t < length; ++t) {
      BOOST_TEST_REQUIRE(result.mask.view()(b, t) == result.mask.view()(0, t), "row " << b << " t " << t);
      if (result.mask.view()(b, t) != 0) BOOST_TEST_REQUIRE(common[static_cast<std::size_t>(t)] == 1);
    }
  }
  check_outputs_follow_mask(tokens, result, mask, pad);
  // The draw is the documented one on the common set, with the batch substream.
  const auto expected =
      reference_fixed_ratio(common.data(), length, 0.2, meap::philox_stream(9, 4, mm::batch_substream));
  for (meap::index_t t = 0; t < length; ++t) BOOST_TEST_REQUIRE(result.mask.view()(0, t) == expected[static_cast<std::size_t>(t)]);
  // Another step draws another set.
  mm::pretraining_options next = options;
  next.step = 5;
  auto other = mm::apply(meap::cpu{}, policy, tokens.view(), next);
  bool differs = false;
  for (meap::index_t t = 0; t < length; ++t) differs = differs || other.mask.view()(0, t) != result.mask.view()(0, t);
  BOOST_TEST(differs);
}

BOOST_AUTO_TEST_CASE(per_row_is_the_documented_draw_keyed_by_seed_step_row) {
  const batch tokens = messy_batch(6, 64, 23);
  const mm::pretraining_options options{.seed = 77, .step = 1000, .mask_id = mask, .pad_id = pad, .special_ids = {bos, eos}};
  const auto eligible = expected_eligible(tokens, options);
  auto result = mm::apply(meap::cpu{}, mm::fixed_ratio{}, tokens.view(), options);
  for (meap::index_t b = 0; b < 6; ++b) {
    const auto expected = reference_fixed_ratio(eligible.data() + b * 63, 63, 0.15,
                                                meap::philox_stream(77, 1000, static_cast<std::uint32_t>(b)));
    for (meap::index_t t = 0; t < 63; ++t)
      BOOST_TEST_REQUIRE(result.mask.view()(b, t) == expected[static_cast<std::size_t>(t)], "row " << b << " t " << t);
  }
  // A row's mask depends on (seed, step, row) and its own tokens only: the first two rows alone
  // get the same masks, and rows differ from each other.
  const batch first_two{2, 64, std::vector<std::int32_t>(tokens.tokens.begin(), tokens.tokens.begin() + 128)};
  auto alone = mm::apply(meap::cpu{}, mm::fixed_ratio{}, first_two.view(), options);
  for (meap::index_t b = 0; b < 2; ++b)
    for (meap::index_t t = 0; t < 63; ++t) BOOST_TEST_REQUIRE(alone.mask.view()(b, t) == result.mask.view()(b, t));
  const batch same_rows = plain_batch(1, 64, 5);
  batch repeated{8, 64, {}};
  for (int r = 0; r < 8; ++r) repeated.tokens.insert(repeated.tokens.end(), same_rows.tokens.begin(), same_rows.tokens.end());
  auto per_row = mm::apply(meap::cpu{}, mm::fixed_ratio{}, repeated.view(), options);
  // Rows as strings of '0'/'1' (a std::set of byte vectors trips a GCC 12 -O3 false positive,
  // -Wstringop-overread, inside std::lexicographical_compare_three_way).
  std::set<std::string> distinct;
  for (meap::index_t b = 0; b < 8; ++b) {
    std::string row;
    for (meap::index_t t = 0; t < 63; ++t) row.push_back(per_row.mask.view()(b, t) ? '1' : '0');
    distinct.insert(row);
  }
  BOOST_TEST(distinct.size() == 8u);
}

// Micro-batches: row b of micro-batch m is keyed as row m B + b of the global batch, so a step split
// into micro-batches draws the whole batch's masks; per_batch draws one set per micro-batch, and
// the sets differ between micro-batches (the official code reuses one for every micro-batch).
BOOST_AUTO_TEST_CASE(micro_batches_are_keyed_by_their_global_rows) {
  const batch tokens = messy_batch(8, 64, 29);
  mm::pretraining_options options{.seed = 5, .step = 12, .mask_id = mask, .pad_id = pad, .special_ids = {bos, eos}};
  const auto whole = mm::apply(meap::cpu{}, mm::fixed_ratio{}, tokens.view(), options);
  for (std::uint32_t m = 0; m < 4; ++m) {
    options.micro_batch = m;
    const auto part = mm::apply(meap::cpu{}, mm::fixed_ratio{}, tokens.view().slice(0, 2 * m, 2 * m + 2), options);
    for (meap::index_t b = 0; b < 2; ++b)
      for (meap::index_t t = 0; t < 63; ++t)
        BOOST_TEST_REQUIRE(part.mask.view()(b, t) == whole.mask.view()(2 * m + b, t), "micro-batch " << m << " row " << b);
  }
  const batch same_rows = plain_batch(1, 64, 5);
  batch repeated{2, 64, {}};
  for (int r = 0; r < 2; ++r) repeated.tokens.insert(repeated.tokens.end(), same_rows.tokens.begin(), same_rows.tokens.end());
  std::set<std::string> patterns;
  for (std::uint32_t m = 0; m < 6; ++m) {
    options.micro_batch = m;
    const auto shared = mm::apply(meap::cpu{}, mm::fixed_ratio{.sharing = mm::sharing::per_batch}, repeated.view(), options);
    std::string row;
    for (meap::index_t t = 0; t < 63; ++t) row.push_back(shared.mask.view()(0, t) ? '1' : '0');
    patterns.insert(row);
  }
  BOOST_TEST(patterns.size() == 6u);
  options.micro_batch = mm::max_micro_batches;
  BOOST_CHECK_EXCEPTION(mm::apply(meap::cpu{}, mm::fixed_ratio{}, tokens.view(), options), meap::error,
                        meap_test::error_says("options.micro_batch", {"below 2^16"}));
}

BOOST_AUTO_TEST_CASE(writes_into_caller_views_and_reads_strided_tokens) {
  const batch wide = messy_batch(5, 90, 31);
  // tokens = columns [10, 70) of a (5, 90) buffer: a strided view.
  const auto tokens = wide.view().slice(1, 10, 70);
  batch narrow{5, 60, {}};
  for (meap::index_t b = 0; b < 5; ++b)
    for (meap::index_t t = 10; t < 70; ++t) narrow.tokens.push_back(wide.at(b, t));
  const mm::pretraining_options options{.seed = 1, .step = 2, .mask_id = mask, .pad_id = pad, .special_ids = {bos, eos}};
  auto expected = mm::apply(meap::cpu{}, mm::fixed_ratio{.ratio = 0.3}, narrow.view(), options);
  // Outputs: the transposed halves of bigger buffers, so none is contiguous.
  auto input_ids = meap::zeros<std::int32_t>(meap::cpu{}, {59, 5});
  auto labels = meap::zeros<std::int32_t>(meap::cpu{}, {59, 5});
  auto flags = meap::zeros<std::uint8_t>(meap::cpu{}, {59, 5});
  const mm::masked_batch_view<meap::cpu> out{input_ids.view().transpose(0, 1), labels.view().transpose(0, 1),
                                             flags.view().transpose(0, 1)};
  mm::apply(meap::cpu{}, mm::fixed_ratio{.ratio = 0.3}, tokens, options, out);
  for (meap::index_t b = 0; b < 5; ++b)
    for (meap::index_t t = 0; t < 59; ++t) {
      BOOST_TEST_REQUIRE(input_ids.view()(t, b) == expected.input_ids.view()(b, t));
      BOOST_TEST_REQUIRE(labels.view()(t, b) == expected.labels.view()(b, t));
      BOOST_TEST_REQUIRE(flags.view()(t, b) == expected.mask.view()(b, t));
    }
  // Outputs that share memory with the tokens or with each other.
  batch in_place = narrow;
  const auto in_place_tokens = meap::make_view(std::span<const std::int32_t>(in_place.tokens), {5, 60});
  const auto in_place_ids = meap::make_view(std::span<std::int32_t>(in_place.tokens), {5, 60}).slice(1, 0, 59);
  BOOST_CHECK_EXCEPTION(mm::apply(meap::cpu{}, mm::fixed_ratio{}, in_place_tokens, options,
                                  mm::masked_batch_view<meap::cpu>{in_place_ids, out.labels, out.mask}),
                        meap::error, error_says(apply_name, "out.input_ids", {"overlapping 'tokens'"}));
  BOOST_CHECK_EXCEPTION(mm::apply(meap::cpu{}, mm::fixed_ratio{}, tokens, options,
                                  mm::masked_batch_view<meap::cpu>{out.input_ids, out.input_ids, out.mask}),
                        meap::error, error_says(apply_name, "out.labels", {"overlapping 'out.input_ids'"}));
  auto wrong = meap::zeros<std::uint8_t>(meap::cpu{}, {5, 60});
  BOOST_CHECK_EXCEPTION(mm::apply(meap::cpu{}, mm::fixed_ratio{}, tokens, options,
                                  mm::masked_batch_view<meap::cpu>{out.input_ids, out.labels, wrong.view()}),
                        meap::error, error_says(apply_name, "out.mask", {"(5, 60)", "(5, 59)"}));
}

BOOST_AUTO_TEST_CASE(user_defined_policy_runs_through_the_same_apply) {
  // Masks every eligible position whose index is a multiple of `every`; shares nothing random.
  struct every_nth {
    std::int32_t every = 3;
    mm::sharing sharing = mm::sharing::per_row;
    void validate() const { meap::check_argument(every >= 1, "every_nth", "every", every, "at least 1"); }
    void mask_row(const mm::row_candidates& row, meap::philox_stream&) const {
      for (std::int32_t i = 0; i < row.count; ++i)
        if (row.positions[i] % every == 0) row.mask[row.positions[i]] = 1;
    }
  };
  static_assert(mm::pretraining_policy<every_nth>);
  const batch tokens = plain_batch(3, 20, 4);
  const mm::pretraining_options options{.mask_id = mask};
  auto result = mm::apply(meap::cpu{}, every_nth{.every = 4}, tokens.view(), options);
  for (meap::index_t b = 0; b < 3; ++b)
    for (meap::index_t t = 0; t < 19; ++t)
      BOOST_TEST_REQUIRE(result.mask.view()(b, t) == ((t % 4 == 0 && t != 18) ? 1 : 0));
  check_outputs_follow_mask(tokens, result, mask, -1);
  BOOST_CHECK_EXCEPTION(mm::apply(meap::cpu{}, every_nth{.every = 0}, tokens.view(), options), meap::error,
                        error_says("every_nth", "every", {"= 0"}));

  // A policy that marks everything still cannot mask an excluded position.
  struct everything {
    mm::sharing sharing = mm::sharing::per_row;
    void validate() const {}
    void mask_row(const mm::row_candidates& row, meap::philox_stream&) const {
      for (std::int32_t t = 0; t < row.length; ++t) row.mask[t] = 1;
    }
  };
  const batch messy = messy_batch(4, 40, 12);
  const mm::pretraining_options exclusions{.mask_id = mask, .pad_id = pad, .special_ids = {bos, eos}};
  const auto eligible = expected_eligible(messy, exclusions);
  auto all = mm::apply(meap::cpu{}, everything{}, messy.view(), exclusions);
  for (meap::index_t b = 0; b < 4; ++b)
    for (meap::index_t t = 0; t < 39; ++t)
      BOOST_TEST_REQUIRE(all.mask.view()(b, t) == eligible[static_cast<std::size_t>(b * 39 + t)]);
  check_outputs_follow_mask(messy, all, mask, pad);
}

BOOST_AUTO_TEST_CASE(bad_inputs_are_rejected_with_clear_errors) {
  const batch tokens = plain_batch(3, 10, 6);
  const mm::pretraining_options options{.mask_id = mask};
  // A ratio outside (0, 1).
  for (const double ratio : {0.0, 1.0, -0.1, 1.5, std::numeric_limits<double>::quiet_NaN()})
    BOOST_CHECK_EXCEPTION(mm::apply(meap::cpu{}, mm::fixed_ratio{.ratio = ratio}, tokens.view(), options), meap::error,
                          error_says("meap::masking::fixed_ratio", "ratio", {"(0, 1)"}));
  // A mask id that occurs in the tokens, when it must not; allowed when the user says so.
  batch colliding = tokens;
  colliding.tokens[static_cast<std::size_t>(1 * 10 + 7)] = mask;
  BOOST_CHECK_EXCEPTION(mm::apply(meap::cpu{}, mm::fixed_ratio{}, colliding.view(), options), meap::error,
                        error_says(apply_name, "options.mask_id", {"= 3", "row 1, position 7", "mask_id_must_be_unused"}));
  mm::pretraining_options reuse = options;
  reuse.mask_id_must_be_unused = false;
  BOOST_CHECK_NO_THROW(mm::apply(meap::cpu{}, mm::fixed_ratio{}, colliding.view(), reuse));
  // The target column counts too: mask_id as the very last token.
  batch last_target = tokens;
  last_target.tokens.back() = mask;
  BOOST_CHECK_EXCEPTION(mm::apply(meap::cpu{}, mm::fixed_ratio{}, last_target.view(), options), meap::error,
                        error_says(apply_name, "options.mask_id", {"row 2, position 9"}));
  // A row with no eligible position: all padding, or all special ids.
  batch empty_row = tokens;
  for (meap::index_t t = 0; t < 10; ++t) empty_row.tokens[static_cast<std::size_t>(2 * 10 + t)] = pad;
  const mm::pretraining_options with_pad{.mask_id = mask, .pad_id = pad, .special_ids = {bos}};
  BOOST_CHECK_EXCEPTION(mm::apply(meap::cpu{}, mm::fixed_ratio{}, empty_row.view(), with_pad), meap::error,
                        error_says(apply_name, "tokens", {"row 2 with no maskable position"}));
  batch special_row = tokens;
  for (meap::index_t t = 0; t < 9; ++t) special_row.tokens[static_cast<std::size_t>(0 * 10 + t)] = bos;
  BOOST_CHECK_EXCEPTION(mm::apply(meap::cpu{}, mm::fixed_ratio{}, special_row.view(), with_pad), meap::error,
                        error_says(apply_name, "tokens", {"row 0 with no maskable position"}));
  // A one-input row has only its last position: rejected unless the last position may be masked.
  const batch one_input = plain_batch(2, 2, 3);
  BOOST_CHECK_EXCEPTION(mm::apply(meap::cpu{}, mm::fixed_ratio{}, one_input.view(), options), meap::error,
                        error_says(apply_name, "tokens", {"row 0"}));
  mm::pretraining_options last_ok = options;
  last_ok.mask_last_position = true;
  BOOST_TEST(mm::apply(meap::cpu{}, mm::fixed_ratio{}, one_input.view(), last_ok).mask.view()(1, 0) == 1);
  // per_batch with rows that share no eligible position.
  const batch disjoint{2, 5, {20, 21, pad, pad, pad, pad, pad, 22, 23, 24}};
  BOOST_CHECK_EXCEPTION(
      mm::apply(meap::cpu{}, mm::fixed_ratio{.sharing = mm::sharing::per_batch}, disjoint.view(), with_pad), meap::error,
      error_says(apply_name, "tokens", {"no position eligible in every row", "sharing::per_row"}));
  BOOST_CHECK_NO_THROW(mm::apply(meap::cpu{}, mm::fixed_ratio{}, disjoint.view(), with_pad));
  // Ids.
  BOOST_CHECK_EXCEPTION(mm::apply(meap::cpu{}, mm::fixed_ratio{}, tokens.view(), {}), meap::error,
                        error_says(apply_name, "options.mask_id", {"= -1", "non-negative"}));
  BOOST_CHECK_EXCEPTION(mm::apply(meap::cpu{}, mm::fixed_ratio{}, tokens.view(), {.mask_id = pad, .pad_id = pad}),
                        meap::error, error_says(apply_name, "options.mask_id", {"pad_id"}));
  BOOST_CHECK_EXCEPTION(mm::apply(meap::cpu{}, mm::fixed_ratio{}, tokens.view(), {.mask_id = eos, .special_ids = {bos, eos}}),
                        meap::error, error_says(apply_name, "options.mask_id", {"special_ids"}));
  // Shapes.
  BOOST_CHECK_EXCEPTION(mm::apply(meap::cpu{}, mm::fixed_ratio{}, tokens.view().select(0, 0), options), meap::error,
                        error_says(apply_name, "tokens", {"(10)", "(B, T + 1)"}));
  BOOST_CHECK_EXCEPTION(mm::apply(meap::cpu{}, mm::fixed_ratio{}, tokens.view().slice(1, 0, 1), options), meap::error,
                        error_says(apply_name, "tokens", {"(3, 1)", "T + 1 >= 2"}));
  const std::vector<std::int32_t> segments(3 * 8, 0);
  BOOST_CHECK_EXCEPTION(mm::apply(meap::cpu{}, mm::fixed_ratio{}, tokens.view(), options,
                                  meap::make_view(std::span<const std::int32_t>(segments), {3, 8})),
                        meap::error, error_says(apply_name, "segment_ids", {"(3, 8)", "(3, 10) or (3, 9)"}));
}

BOOST_AUTO_TEST_SUITE_END()
