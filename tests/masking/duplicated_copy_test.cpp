// duplicated_copy: both layouts and the plain next-token row, position by position against
// hand-written sequences; truncation; the label invariants on many random pairs; bad input.
#include <meap/masking/duplicated_copy.hpp>

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <set>
#include <span>
#include <vector>

#include "masking/support.hpp"

namespace {

using namespace masking_test;
namespace mm = meap::masking;

constexpr std::int32_t M = mask;                  // in expected input_ids
constexpr std::int32_t X = mm::ignore_index;      // in expected labels

meap::tensor_view<const std::int32_t, meap::cpu> view_of(const std::vector<std::int32_t>& ids) {
  return meap::make_view(std::span<const std::int32_t>(ids), {static_cast<meap::index_t>(ids.size())});
}

void check_row(const meap::tensor<std::int32_t, meap::cpu>& got, meap::index_t row, const std::vector<std::int32_t>& expected,
               const char* what) {
  BOOST_TEST_REQUIRE(got.size(1) == static_cast<meap::index_t>(expected.size()), what);
  for (meap::index_t t = 0; t < got.size(1); ++t)
    BOOST_TEST_REQUIRE(got.view()(row, t) == expected[static_cast<std::size_t>(t)], what << " row " << row << " t " << t);
}

std::vector<std::int32_t> iota_row(std::int32_t length) {
  std::vector<std::int32_t> ids(static_cast<std::size_t>(length));
  for (std::int32_t t = 0; t < length; ++t) ids[static_cast<std::size_t>(t)] = t;
  return ids;
}

// The answer indices the documented rule masks: fixed_ratio's partial Fisher-Yates over the
// non-special answer tokens, stream philox_stream(seed, example, epoch).
std::set<meap::index_t> reference_masked(const std::vector<std::int32_t>& answer, meap::index_t kept, double ratio,
                                         const mm::finetuning_options& options) {
  std::vector<meap::index_t> eligible;
  for (meap::index_t j = 0; j < kept; ++j)
    if (std::find(options.special_ids.begin(), options.special_ids.end(), answer[static_cast<std::size_t>(j)]) ==
        options.special_ids.end())
      eligible.push_back(j);
  const auto n = static_cast<std::int32_t>(eligible.size());
  const std::int32_t k = std::max<std::int32_t>(1, static_cast<std::int32_t>(std::floor(ratio * n)));
  meap::philox_stream random(options.seed, options.example, options.epoch);
  std::set<meap::index_t> masked;
  for (std::int32_t i = 0; i < k; ++i) {
    const std::int32_t j = i + static_cast<std::int32_t>(random.next_below(static_cast<std::uint32_t>(n - i)));
    std::swap(eligible[static_cast<std::size_t>(i)], eligible[static_cast<std::size_t>(j)]);
    masked.insert(eligible[static_cast<std::size_t>(i)]);
  }
  return masked;
}

// prompt 11 12 13, answer 21 .. 26 EOS (EOS is special, so n = 6 eligible and k = floor(0.34 * 6) = 2).
const std::vector<std::int32_t> prompt{11, 12, 13};
const std::vector<std::int32_t> answer{21, 22, 23, 24, 25, 26, eos};
const mm::finetuning_options options{.seed = 42, .example = 7, .mask_id = mask, .special_ids = {eos}};

}  // namespace

BOOST_AUTO_TEST_SUITE(duplicated_copy)

BOOST_AUTO_TEST_CASE(concatenated_layout_position_by_position) {
  // The draw masks answer tokens 2 and 5 (23 and 26); checked against the rule first.
  BOOST_TEST_REQUIRE((reference_masked(answer, 7, 0.34, options) == std::set<meap::index_t>{2, 5}));
  const auto e = mm::apply(meap::cpu{}, mm::duplicated_copy{.ratio = 0.34, .min_answer_tokens = 3}, view_of(prompt),
                           view_of(answer), options);
  BOOST_TEST(e.duplicated);
  BOOST_TEST(e.answer_tokens == 7);
  BOOST_TEST(e.masked_tokens == 2);
  BOOST_TEST_REQUIRE((e.input_ids.shape() == meap::dims{1, 20}));
  //                 P P P  A:21 ...                      | P  P  P  A' (23 and 26 masked)
  check_row(e.input_ids, 0, {11, 12, 13, 21, 22, 23, 24, 25, 26, eos, 11, 12, 13, 21, 22, M, 24, 25, M, eos}, "input_ids");
  // U_q: the first copy's answer as next-token targets (from the last prompt token on); U_m: the
  // original of each masked token, at the position before it. Nothing else.
  check_row(e.labels, 0, {X, X, 21, 22, 23, 24, 25, 26, eos, X, X, X, X, X, 23, X, X, 26, X, X}, "labels");
  check_row(e.position_ids, 0, iota_row(20), "position_ids");
  for (meap::index_t t = 0; t < 20; ++t) BOOST_TEST_REQUIRE(e.mask.view()(0, t) == ((t == 15 || t == 18) ? 1 : 0));
}

BOOST_AUTO_TEST_CASE(separate_rows_layout_position_by_position) {
  const auto e = mm::apply(meap::cpu{},
                           mm::duplicated_copy{.ratio = 0.34, .min_answer_tokens = 3, .layout = mm::layout::separate_rows},
                           view_of(prompt), view_of(answer), options);
  BOOST_TEST(e.duplicated);
  BOOST_TEST_REQUIRE((e.input_ids.shape() == meap::dims{2, 10}));
  check_row(e.input_ids, 0, {11, 12, 13, 21, 22, 23, 24, 25, 26, eos}, "input_ids");
  check_row(e.labels, 0, {X, X, 21, 22, 23, 24, 25, 26, eos, X}, "labels");
  check_row(e.input_ids, 1, {11, 12, 13, 21, 22, M, 24, 25, M, eos}, "input_ids");
  check_row(e.labels, 1, {X, X, X, X, 23, X, X, 26, X, X}, "labels");
  check_row(e.position_ids, 0, iota_row(10), "position_ids");
  check_row(e.position_ids, 1, iota_row(10), "position_ids");
  for (meap::index_t t = 0; t < 10; ++t) {
    BOOST_TEST_REQUIRE(e.mask.view()(0, t) == 0);
    BOOST_TEST_REQUIRE(e.mask.view()(1, t) == ((t == 5 || t == 8) ? 1 : 0));
  }
}

BOOST_AUTO_TEST_CASE(short_answers_get_a_plain_next_token_row) {
  // 7 answer tokens, threshold 7: "at or under" gets plain NTP, in either layout.
  for (const auto arrangement : {mm::layout::concatenated, mm::layout::separate_rows}) {
    const auto e = mm::apply(meap::cpu{}, mm::duplicated_copy{.min_answer_tokens = 7, .layout = arrangement},
                             view_of(prompt), view_of(answer), options);
    BOOST_TEST(!e.duplicated);
    BOOST_TEST(e.masked_tokens == 0);
    BOOST_TEST_REQUIRE((e.input_ids.shape() == meap::dims{1, 10}));
    check_row(e.input_ids, 0, {11, 12, 13, 21, 22, 23, 24, 25, 26, eos}, "input_ids");
    check_row(e.labels, 0, {X, X, 21, 22, 23, 24, 25, 26, eos, X}, "labels");
    check_row(e.position_ids, 0, iota_row(10), "position_ids");
  }
  // One more answer token than the threshold is duplicated.
  BOOST_TEST(mm::apply(meap::cpu{}, mm::duplicated_copy{.min_answer_tokens = 6}, view_of(prompt), view_of(answer), options)
                 .duplicated);
  // The default threshold is 50.
  BOOST_TEST(!mm::apply(meap::cpu{}, mm::duplicated_copy{}, view_of(prompt), view_of(answer), options).duplicated);
}

BOOST_AUTO_TEST_CASE(truncation_cuts_the_answer_and_draws_on_what_is_kept) {
  const std::vector<std::int32_t> short_prompt{11, 12};
  const std::vector<std::int32_t> long_answer{21, 22, 23, 24, 25, 26, 27, 28, 29, 30};
  mm::finetuning_options cut{.seed = 5, .mask_id = mask, .max_length = 12};
  {
    // Concatenated in 12: each copy gets 12 / 2 - 2 = 4 answer tokens; k = floor(0.5 * 4) = 2.
    BOOST_TEST_REQUIRE((reference_masked(long_answer, 4, 0.5, cut) == std::set<meap::index_t>{1, 3}));
    const auto e = mm::apply(meap::cpu{}, mm::duplicated_copy{.ratio = 0.5, .min_answer_tokens = 2},
                             view_of(short_prompt), view_of(long_answer), cut);
    BOOST_TEST(e.duplicated);
    BOOST_TEST(e.answer_tokens == 4);
    check_row(e.input_ids, 0, {11, 12, 21, 22, 23, 24, 11, 12, 21, M, 23, M}, "input_ids");
    check_row(e.labels, 0, {X, 21, 22, 23, 24, X, X, X, 22, X, 24, X}, "labels");
    check_row(e.position_ids, 0, iota_row(12), "position_ids");
  }
  {
    // Separate rows in 7: each row holds 7 - 2 = 5 answer tokens.
    cut.max_length = 7;
    BOOST_TEST_REQUIRE((reference_masked(long_answer, 5, 0.5, cut) == std::set<meap::index_t>{1, 3}));
    const auto e = mm::apply(meap::cpu{},
                             mm::duplicated_copy{.ratio = 0.5, .min_answer_tokens = 2, .layout = mm::layout::separate_rows},
                             view_of(short_prompt), view_of(long_answer), cut);
    BOOST_TEST(e.answer_tokens == 5);
    BOOST_TEST_REQUIRE((e.input_ids.shape() == meap::dims{2, 7}));
    check_row(e.input_ids, 0, {11, 12, 21, 22, 23, 24, 25}, "input_ids");
    check_row(e.labels, 0, {X, 21, 22, 23, 24, 25, X}, "labels");
    check_row(e.input_ids, 1, {11, 12, 21, M, 23, M, 25}, "input_ids");
    check_row(e.labels, 1, {X, X, 22, X, 24, X, X}, "labels");
  }
  {
    // Concatenated in 9: a copy would hold 9 / 2 - 2 = 2 answer tokens, not more than the
    // threshold, so the pair becomes a plain row with as much answer as fits: 9 - 2 = 7 tokens.
    cut.max_length = 9;
    const auto e = mm::apply(meap::cpu{}, mm::duplicated_copy{.ratio = 0.5, .min_answer_tokens = 2},
                             view_of(short_prompt), view_of(long_answer), cut);
    BOOST_TEST(!e.duplicated);
    BOOST_TEST(e.answer_tokens == 7);
    check_row(e.input_ids, 0, {11, 12, 21, 22, 23, 24, 25, 26, 27}, "input_ids");
    check_row(e.labels, 0, {X, 21, 22, 23, 24, 25, 26, 27, X}, "labels");
  }
  {
    // The smallest max_length allowed keeps one answer token.
    cut.max_length = 3;
    const auto e = mm::apply(meap::cpu{}, mm::duplicated_copy{.ratio = 0.5, .min_answer_tokens = 2},
                             view_of(short_prompt), view_of(long_answer), cut);
    check_row(e.input_ids, 0, {11, 12, 21}, "input_ids");
    check_row(e.labels, 0, {X, 21, X}, "labels");
  }
}

BOOST_AUTO_TEST_CASE(labels_always_point_at_tokens_of_their_row) {
  // Random pairs, layouts and limits: every label is the clean token that follows its position
  // in the clean copy, or the original of a masked token; rows fit max_length; masks are the
  // documented draw on the kept answer.
  meap::philox_stream random(3, 4);
  int duplicated = 0;
  for (int example = 0; example < 400; ++example) {
    std::vector<std::int32_t> p(1 + random.next_below(12));
    std::vector<std::int32_t> a(1 + random.next_below(80));
    for (auto& id : p) id = first_word + static_cast<std::int32_t>(random.next_below(500));
    for (auto& id : a) id = random.next_below(10) == 0 ? eos : first_word + static_cast<std::int32_t>(random.next_below(500));
    a[0] = first_word;  // at least one maskable token
    const mm::duplicated_copy policy{.ratio = 0.1 + 0.8 * random.next_double(),
                                     .min_answer_tokens = static_cast<std::int32_t>(random.next_below(30)),
                                     .layout = random.next_below(2) == 0 ? mm::layout::concatenated : mm::layout::separate_rows};
    const meap::index_t limit = random.next_below(3) == 0 ? 0 : static_cast<meap::index_t>(p.size()) + 1 + random.next_below(150);
    const mm::finetuning_options o{.seed = 17, .example = static_cast<std::uint64_t>(example), .mask_id = mask,
                                   .special_ids = {eos}, .max_length = limit};
    const auto e = mm::apply(meap::cpu{}, policy, view_of(p), view_of(a), o);
    const auto ids = e.input_ids.view();
    const auto labels = e.labels.view();
    const auto pairs = static_cast<meap::index_t>(p.size()) + e.answer_tokens;
    BOOST_TEST_REQUIRE(e.answer_tokens >= 1);
    BOOST_TEST_REQUIRE(e.answer_tokens <= static_cast<meap::index_t>(a.size()));
    if (limit != 0) BOOST_TEST_REQUIRE(e.input_ids.size(1) <= limit);
    if (e.duplicated) {
      ++duplicated;
      BOOST_TEST_REQUIRE(e.answer_tokens > policy.min_answer_tokens);
      const auto masked = reference_masked(a, e.answer_tokens, policy.ratio, o);
      BOOST_TEST_REQUIRE(static_cast<meap::index_t>(masked.size()) == e.masked_tokens);
      const bool concatenated = policy.layout == mm::layout::concatenated;
      const meap::index_t row = concatenated ? 0 : 1;
      const meap::index_t offset = concatenated ? pairs : 0;
      for (meap::index_t j = 0; j < e.answer_tokens; ++j) {
        const bool hidden = masked.count(j) != 0;
        const meap::index_t at = offset + static_cast<meap::index_t>(p.size()) + j;
        BOOST_TEST_REQUIRE(ids(row, at) == (hidden ? mask : a[static_cast<std::size_t>(j)]));
        BOOST_TEST_REQUIRE(labels(row, at - 1) == (hidden ? a[static_cast<std::size_t>(j)] : X));
      }
    } else {
      BOOST_TEST_REQUIRE(e.input_ids.size(0) == 1);
      BOOST_TEST_REQUIRE(e.input_ids.size(1) == pairs);
    }
    // Row 0 always begins with the clean pair and its U_q labels.
    for (meap::index_t t = 0; t < pairs; ++t) {
      const bool target_is_answer = t + 1 >= static_cast<meap::index_t>(p.size()) && t + 1 < pairs;
      BOOST_TEST_REQUIRE(labels(0, t) == (target_is_answer ? ids(0, t + 1) : X));
    }
  }
  BOOST_TEST(duplicated > 50);
}

BOOST_AUTO_TEST_CASE(reproducible_per_seed_example_and_epoch) {
  const std::vector<std::int32_t> long_answer(200, 50);
  const mm::duplicated_copy policy{};
  const auto masks_of = [&](std::uint64_t seed, std::uint64_t example, std::uint32_t epoch) {
    const auto e = mm::apply(meap::cpu{}, policy, view_of(prompt), view_of(long_answer),
                             {.seed = seed, .example = example, .epoch = epoch, .mask_id = mask});
    std::vector<std::uint8_t> flags;
    for (meap::index_t t = 0; t < e.mask.size(1); ++t) flags.push_back(e.mask.view()(0, t));
    return flags;
  };
  BOOST_TEST((masks_of(1, 2, 3) == masks_of(1, 2, 3)));
  BOOST_TEST((masks_of(1, 2, 3) != masks_of(1, 3, 3)));
  BOOST_TEST((masks_of(1, 2, 3) != masks_of(1, 2, 4)));
  BOOST_TEST((masks_of(1, 2, 3) != masks_of(2, 2, 3)));
  const auto flags = masks_of(1, 2, 3);
  BOOST_TEST(std::count(flags.begin(), flags.end(), 1) == 20);  // floor(0.10 * 200)
}

BOOST_AUTO_TEST_CASE(bad_inputs_are_rejected_with_clear_errors) {
  const char* function = "meap::masking::apply (duplicated_copy)";
  const mm::duplicated_copy policy{.min_answer_tokens = 2};
  const std::vector<std::int32_t> none;
  // An empty answer.
  BOOST_CHECK_EXCEPTION(mm::apply(meap::cpu{}, policy, view_of(prompt), view_of(none), options), meap::error,
                        error_says(function, "answer", {"(0)", "at least one token"}));
  // An empty prompt.
  BOOST_CHECK_EXCEPTION(mm::apply(meap::cpu{}, policy, view_of(none), view_of(answer), options), meap::error,
                        error_says(function, "prompt", {"(0)", "non-empty"}));
  // A max_length that does not exceed the prompt.
  for (const meap::index_t limit : {1, 2, 3}) {
    mm::finetuning_options o = options;
    o.max_length = limit;
    BOOST_CHECK_EXCEPTION(mm::apply(meap::cpu{}, policy, view_of(prompt), view_of(answer), o), meap::error,
                          error_says(function, "options.max_length", {"more than the prompt's 3 tokens"}));
  }
  mm::finetuning_options negative = options;
  negative.max_length = -4;
  BOOST_CHECK_EXCEPTION(mm::apply(meap::cpu{}, policy, view_of(prompt), view_of(answer), negative), meap::error,
                        error_says(function, "options.max_length", {"= -4"}));
  // A ratio outside (0, 1), and a negative threshold.
  for (const double ratio : {0.0, 1.0, 2.0})
    BOOST_CHECK_EXCEPTION(mm::apply(meap::cpu{}, mm::duplicated_copy{.ratio = ratio}, view_of(prompt), view_of(answer), options),
                          meap::error, error_says("meap::masking::duplicated_copy", "ratio", {"(0, 1)"}));
  BOOST_CHECK_EXCEPTION(mm::apply(meap::cpu{}, mm::duplicated_copy{.min_answer_tokens = -1}, view_of(prompt),
                                  view_of(answer), options),
                        meap::error, error_says("meap::masking::duplicated_copy", "min_answer_tokens", {"= -1"}));
  // A mask id that occurs in the prompt or the answer, when it must not.
  const std::vector<std::int32_t> answer_with_mask{21, 22, mask, 24};
  BOOST_CHECK_EXCEPTION(mm::apply(meap::cpu{}, policy, view_of(prompt), view_of(answer_with_mask), options), meap::error,
                        error_says(function, "options.mask_id", {"answer token 2", "mask_id_must_be_unused"}));
  const std::vector<std::int32_t> prompt_with_mask{mask, 12};
  BOOST_CHECK_EXCEPTION(mm::apply(meap::cpu{}, policy, view_of(prompt_with_mask), view_of(answer), options), meap::error,
                        error_says(function, "options.mask_id", {"prompt token 0"}));
  mm::finetuning_options reuse = options;
  reuse.mask_id_must_be_unused = false;
  BOOST_CHECK_NO_THROW(mm::apply(meap::cpu{}, policy, view_of(prompt), view_of(answer_with_mask), reuse));
  // Other ids.
  mm::finetuning_options unset = options;
  unset.mask_id = -1;
  BOOST_CHECK_EXCEPTION(mm::apply(meap::cpu{}, policy, view_of(prompt), view_of(answer), unset), meap::error,
                        error_says(function, "options.mask_id", {"= -1"}));
  mm::finetuning_options special = options;
  special.mask_id = eos;
  BOOST_CHECK_EXCEPTION(mm::apply(meap::cpu{}, policy, view_of(prompt), view_of(answer), special), meap::error,
                        error_says(function, "options.mask_id", {"special_ids"}));
  // An answer long enough to duplicate whose tokens are all special ids.
  const std::vector<std::int32_t> only_eos(5, eos);
  BOOST_CHECK_EXCEPTION(mm::apply(meap::cpu{}, policy, view_of(prompt), view_of(only_eos), options), meap::error,
                        error_says(function, "answer", {"all special ids"}));
}

BOOST_AUTO_TEST_SUITE_END()
