// meap/masking/duplicated_copy.hpp: MEAP fine-tuning. From one (prompt, answer) pair it builds
// the rows a supervised step trains on: the input ids, the shifted labels of the U_q ∪ U_m loss
// (ignore_index everywhere else) and the position ids. Host-side data preparation; the masks are
// drawn from philox_stream(seed, example, epoch), so they are reproducible on any machine.
//
//   meap::masking::finetuning_options options{.seed = 7, .example = i, .mask_id = mask_id,
//                                             .special_ids = {eos}, .max_length = 4096};
//   auto rows = meap::masking::apply(meap::cpu{}, meap::masking::duplicated_copy{}, prompt, answer, options);
//
// With p prompt tokens P, a kept answer tokens A (after truncation, below) and A' = A with
// k = max(1, floor(ratio * n)) of its n eligible (non-special) tokens replaced by mask_id, drawn by
// fixed_ratio's partial Fisher-Yates:
//
//   layout::concatenated (default, as in the paper): one row of length L = 2 (p + a)
//     input_ids    = [P, A, P, A']
//     labels[t]    = the clean token t + 1 where t + 1 is an answer token of the first copy (U_q),
//                    or a masked token of the copy (U_m: the original token); else ignore_index
//     position_ids = 0, 1, ..., L - 1 (the copies are one sequence)
//   layout::separate_rows (as the official code): two rows of length p + a
//     row 0 = [P, A] with labels on A (U_q); row 1 = [P, A'] with labels on the masked tokens (U_m);
//     position_ids = 0, ..., p + a - 1 in each row.
//   A pair whose kept answer has min_answer_tokens or fewer tokens gets one plain next-token row
//   [P, A] with labels on A.
//
// Truncation to options.max_length (0: none). The prompt is never cut; the answer is cut to its
// first tokens so that every row fits, and the masks are drawn on the kept answer only, so no
// label ever refers to a token that is not in its row (the official code cuts the concatenated
// sequence instead, leaving labels of the copy that point past the cut):
//   a_dup = min(a, floor(max_length / 2) - p)  (concatenated) or  min(a, max_length - p)  (separate_rows)
//   if a > min_answer_tokens and a_dup > min_answer_tokens: duplicated, with a_dup answer tokens;
//   else: plain next-token row with min(a, max_length - p) answer tokens.
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/error.hpp>
#include <meap/core/philox.hpp>
#include <meap/core/tensor.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/masking/fixed_ratio.hpp>
#include <meap/masking/policy.hpp>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace meap::masking {

// How the masked copy is laid out: appended to the clean pair in one row (the paper), or as a
// second row of its own (the official code).
enum class layout : std::uint8_t { concatenated, separate_rows };

struct duplicated_copy {
  double ratio = 0.10;                 // fraction of the (eligible) answer tokens masked in the copy
  std::int32_t min_answer_tokens = 50;  // answers with at most this many tokens get plain next-token prediction
  masking::layout layout = masking::layout::concatenated;

  // "duplicated_copy(ratio=0.1,min_answer_tokens=50,layout=concatenated)": equal only for policies
  // that build equal rows.
  std::string describe() const {
    return "duplicated_copy(" + detail::describe_field("ratio", ratio) +
           ",min_answer_tokens=" + std::to_string(min_answer_tokens) +
           (layout == masking::layout::concatenated ? ",layout=concatenated)" : ",layout=separate_rows)");
  }

  void validate() const {
    check_ratio("meap::masking::duplicated_copy", ratio);
    check_argument(min_answer_tokens >= 0, "meap::masking::duplicated_copy", "min_answer_tokens", min_answer_tokens,
                   "a non-negative token count");
  }
};

struct finetuning_options {
  // Philox key: seed, stream = example index in the dataset, substream = epoch (a new mask each
  // epoch, the same one after a resume).
  std::uint64_t seed = 0;
  std::uint64_t example = 0;
  std::uint32_t epoch = 0;
  // The [MASK] token (required, >= 0, not a special id).
  std::int32_t mask_id = -1;
  // Answer tokens that are never masked (EOS, end-of-turn, ...).
  std::vector<std::int32_t> special_ids{};
  // Longest row produced (0: no limit). Must exceed the prompt length: only the answer is cut.
  index_t max_length = 0;
  // true (default): throw meap::error when mask_id occurs in the prompt or the answer.
  bool mask_id_must_be_unused = true;
};

// The rows built from one pair. Each tensor is (rows, length): rows = 2 for a duplicated pair in
// layout::separate_rows, else 1.
struct finetuning_example {
  tensor<std::int32_t, cpu> input_ids;
  tensor<std::int32_t, cpu> labels;        // shifted: labels[r, t] is the target of the logits at t
  tensor<std::int32_t, cpu> position_ids;
  tensor<std::uint8_t, cpu> mask;          // 1 where input_ids holds mask_id
  bool duplicated = false;                 // false: one plain next-token row
  index_t answer_tokens = 0;               // answer tokens kept after truncation
  index_t masked_tokens = 0;               // k (0 for a plain row)
};

// The shape of what apply() builds from a pair of p prompt and a answer tokens, without building
// it (batch planning: a fine-tuner packs rows by these lengths). Arguments as apply() checks them.
struct finetuning_shape {
  bool duplicated = false;
  index_t answer_tokens = 0;  // kept after truncation
  index_t rows = 1;           // 2 for a duplicated pair in layout::separate_rows
  index_t length = 0;         // of each row
};

inline finetuning_shape plan_rows(const duplicated_copy& policy, index_t p, index_t a, index_t max_length) {
  const bool concatenated = policy.layout == masking::layout::concatenated;
  finetuning_shape shape;
  shape.answer_tokens = a;
  if (a > policy.min_answer_tokens) {
    const index_t room = max_length == 0 ? a : (concatenated ? max_length / 2 : max_length) - p;
    if (std::min(a, room) > policy.min_answer_tokens) {
      shape.duplicated = true;
      shape.answer_tokens = std::min(a, room);
    }
  }
  if (!shape.duplicated && max_length != 0) shape.answer_tokens = std::min(a, max_length - p);
  const index_t pair = p + shape.answer_tokens;
  shape.rows = shape.duplicated && !concatenated ? 2 : 1;
  shape.length = shape.duplicated && concatenated ? 2 * pair : pair;
  return shape;
}

namespace detail {
inline constexpr const char* finetuning_function = "meap::masking::apply (duplicated_copy)";
}  // namespace detail

// prompt: (p) token ids, p >= 1; answer: (a) token ids, a >= 1. Any strides.
inline finetuning_example apply(const cpu& device, const duplicated_copy& policy,
                                tensor_view<const std::int32_t, cpu> prompt, tensor_view<const std::int32_t, cpu> answer,
                                const finetuning_options& options) {
  const char* function = detail::finetuning_function;
  policy.validate();
  check_argument(prompt.rank() == 1 && prompt.size(0) >= 1, function, "prompt", "shape " + to_string(prompt.shape()),
                 "a non-empty vector of token ids (the first answer token is predicted from the last prompt token)");
  check_argument(answer.rank() == 1, function, "answer", "shape " + to_string(answer.shape()), "a vector of token ids");
  check_argument(answer.size(0) >= 1, function, "answer", "shape " + to_string(answer.shape()),
                 "at least one token (an empty answer has nothing to learn)");
  check_argument(options.mask_id >= 0, function, "options.mask_id", options.mask_id,
                 "a non-negative token id (the [MASK] token)");
  for (const std::int32_t special : options.special_ids)
    check_argument(special != options.mask_id, function, "options.mask_id", options.mask_id,
                   "an id that is not in options.special_ids");
  const index_t p = prompt.size(0);
  const index_t a = answer.size(0);
  check_argument(options.max_length >= 0, function, "options.max_length", options.max_length,
                 "a non-negative length (0: no limit)");
  check_argument(options.max_length == 0 || options.max_length > p, function, "options.max_length",
                 options.max_length,
                 "more than the prompt's " + std::to_string(p) +
                     " tokens (the prompt is never truncated and at least one answer token must fit)");
  if (options.mask_id_must_be_unused) {
    for (index_t t = 0; t < p; ++t)
      check_argument(prompt(t) != options.mask_id, function, "options.mask_id", options.mask_id,
                     "an id that does not occur in the prompt (it is prompt token " + std::to_string(t) +
                         "); set options.mask_id_must_be_unused = false to reuse a real token");
    for (index_t t = 0; t < a; ++t)
      check_argument(answer(t) != options.mask_id, function, "options.mask_id", options.mask_id,
                     "an id that does not occur in the answer (it is answer token " + std::to_string(t) +
                         "); set options.mask_id_must_be_unused = false to reuse a real token");
  }

  // How much of the answer is kept, and whether the pair is duplicated (see the header comment).
  const bool concatenated = policy.layout == masking::layout::concatenated;
  const auto shape = plan_rows(policy, p, a, options.max_length);
  const index_t kept = shape.answer_tokens;
  const bool duplicated = shape.duplicated;

  finetuning_example result;
  result.duplicated = duplicated;
  result.answer_tokens = kept;

  // The copy's mask over the kept answer: fixed_ratio on the non-special answer tokens.
  std::vector<std::uint8_t> masked(static_cast<std::size_t>(kept), 0);
  if (duplicated) {
    check_argument(kept <= std::numeric_limits<std::int32_t>::max(), function, "answer", "shape " + to_string(answer.shape()),
                   "fewer than 2^31 tokens");
    const detail::exclusion_rule rule{-1, options.special_ids.data(), static_cast<std::int32_t>(options.special_ids.size()),
                                      static_cast<std::int32_t>(kept), true};
    std::vector<std::uint8_t> eligible(static_cast<std::size_t>(kept));
    std::vector<std::int32_t> positions;
    for (index_t j = 0; j < kept; ++j) {
      eligible[static_cast<std::size_t>(j)] = rule.is_special(answer(j)) ? 0 : 1;
      if (eligible[static_cast<std::size_t>(j)] != 0) positions.push_back(static_cast<std::int32_t>(j));
    }
    if (positions.empty())
      throw_argument_error(function, "answer", "an answer whose first " + std::to_string(kept) + " tokens are all special ids",
                           "at least one answer token that is not in options.special_ids");
    philox_stream random(options.seed, options.example, options.epoch);
    const fixed_ratio draw{.ratio = policy.ratio, .sharing = masking::sharing::per_row};
    draw.mask_row(row_candidates{positions.data(), static_cast<std::int32_t>(positions.size()), eligible.data(),
                                 masked.data(), static_cast<std::int32_t>(kept)},
                  random);
    result.masked_tokens = masked_count(policy.ratio, static_cast<std::int32_t>(positions.size()));
  }

  const index_t pair = p + kept;  // [P, A]
  const index_t rows = shape.rows;
  const index_t length = shape.length;
  result.input_ids = tensor<std::int32_t, cpu>(device, {rows, length});
  result.labels = full<std::int32_t>(device, {rows, length}, ignore_index);
  result.position_ids = tensor<std::int32_t, cpu>(device, {rows, length});
  result.mask = zeros<std::uint8_t>(device, {rows, length});
  const auto input_ids = result.input_ids.view();
  const auto labels = result.labels.view();
  const auto position_ids = result.position_ids.view();
  const auto mask = result.mask.view();

  // Writes [P, A] (or [P, A'] when `copy`) at (row, offset); U_q labels for the clean pair, U_m
  // labels for the copy.
  const auto write_pair = [&](index_t row, index_t offset, bool copy) {
    for (index_t t = 0; t < p; ++t) input_ids(row, offset + t) = prompt(t);
    for (index_t j = 0; j < kept; ++j) {
      const bool hidden = copy && masked[static_cast<std::size_t>(j)] != 0;
      input_ids(row, offset + p + j) = hidden ? options.mask_id : answer(j);
      mask(row, offset + p + j) = hidden ? 1 : 0;
      // The answer token at offset + p + j is the target of the logits one position earlier.
      if (!copy || hidden) labels(row, offset + p + j - 1) = answer(j);
    }
  };
  write_pair(0, 0, false);
  if (duplicated) {
    if (concatenated) {
      write_pair(0, pair, true);
    } else {
      write_pair(1, 0, true);
    }
  }
  for (index_t r = 0; r < rows; ++r)
    for (index_t t = 0; t < length; ++t) position_ids(r, t) = static_cast<std::int32_t>(t);
  return result;
}

}  // namespace meap::masking
