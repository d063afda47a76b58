// meap/masking/span.hpp: contiguous spans of masked positions, for a total of exactly
// budget = max(1, floor(ratio * n)) of the n eligible positions of a row (unless the row runs out
// of room, see below).
//
//   meap::masking::span policy{.ratio = 0.15, .mean_length = 3.0, .max_length = 10};
//
// The rule, in this exact order (the CPU and CUDA implementations both run it):
//  1. Span length: L = 1; while L < max_length and next_u32() < g: L += 1. g = floor(c * 2^32)
//     with c = 1 - 1 / mean_length, so L is geometric on {1, 2, ...} with mean mean_length,
//     clamped to max_length (the clamped mean is expected_span_length()). Integer comparisons
//     only: no log() whose last bit could differ between host and device.
//  2. Clip: L = min(L, budget - masked).
//  3. Place: up to `attempts` times, draw i = next_below(n) and try the start s = positions[i]
//     (uniform over eligible positions, so an accepted start is uniform over the valid ones).
//     s is valid when s .. s+L-1 are all eligible and unmasked and s-1 and s+L are not masked:
//     spans never overlap and never touch, so every run of masked positions is one span.
//     If every attempt fails, retry with ceil(L / 2), then its half, ... down to 1.
//  4. Fallback at length 1: draw i0 = next_below(n) and scan positions[i0], positions[i0 + 1],
//     ... (cyclically) for the first valid single position. If there is none, the row has no room
//     left and masking stops below the budget; with spans kept apart by an unmasked position
//     this needs a ratio near 1/2 or above.
//  5. masked += the placed length; repeat from 1 while masked < budget.
#pragma once

#include <meap/core/config.hpp>
#include <meap/core/error.hpp>
#include <meap/core/philox.hpp>
#include <meap/masking/policy.hpp>

#include <cstdint>
#include <string>

namespace meap::masking {

struct span {
  double ratio = 0.15;         // fraction of the eligible positions to mask
  double mean_length = 3.0;    // mean of the (unclamped) geometric span length, >= 1
  std::int32_t max_length = 10;  // longest span, >= mean_length
  std::int32_t attempts = 8;     // random starts tried per length before halving it, >= 1
  masking::sharing sharing = masking::sharing::per_row;

  void validate() const {
    constexpr const char* function = "meap::masking::span";
    check_ratio(function, ratio);
    check_argument(max_length >= 1, function, "max_length", max_length, "a span length of at least 1");
    check_argument(mean_length >= 1.0 && mean_length <= static_cast<double>(max_length), function, "mean_length",
                   mean_length, "a mean span length in [1, max_length = " + std::to_string(max_length) + "]");
    check_argument(attempts >= 1, function, "attempts", attempts, "at least one attempt per span length");
  }

  // P(a span grows by one more position) as a 32-bit threshold on next_u32().
  MEAP_HOST_DEVICE std::uint32_t continue_threshold() const {
    const double c = 1.0 - 1.0 / mean_length;  // in [0, 1): the product stays below 2^32
    return static_cast<std::uint32_t>(c * 4294967296.0);
  }

  // The mean of the drawn length (step 1), before clipping to the budget: sum of l * P(L = l) with
  // P(L = l) = (1 - g) g^(l-1) for l < max_length and g^(max_length-1) for l = max_length.
  // "span(ratio=..., mean_length=..., ...)": what checkpoints record to compare runs.
  std::string describe() const {
    return "span(" + detail::describe_field("ratio", ratio) + ", " + detail::describe_field("mean_length", mean_length) +
           ", " + detail::describe_field("max_length", max_length) + ", " + detail::describe_field("attempts", attempts) +
           ", " + detail::describe_sharing(sharing) + ")";
  }

  double expected_span_length() const {
    const double g = static_cast<double>(continue_threshold()) / 4294967296.0;
    double mean = 0.0;
    double reach = 1.0;  // P(L >= l)
    for (std::int32_t l = 1; l <= max_length; ++l) {
      mean += reach;  // E[L] = sum over l >= 1 of P(L >= l)
      reach *= g;
    }
    return mean;
  }

  MEAP_HOST_DEVICE void mask_row(const row_candidates& row, philox_stream& random) const {
    const std::int32_t n = row.count;
    const std::int32_t budget = masked_count(ratio, n);
    const std::uint32_t grow = continue_threshold();
    std::int32_t masked = 0;
    while (masked < budget) {
      std::int32_t length = 1;
      while (length < max_length && random.next_u32() < grow) ++length;
      if (length > budget - masked) length = budget - masked;

      std::int32_t placed = 0;
      for (std::int32_t tried = length;; tried = (tried + 1) / 2) {
        for (std::int32_t a = 0; a < attempts && placed == 0; ++a) {
          const std::int32_t start = row.positions[random.next_below(static_cast<std::uint32_t>(n))];
          if (fits(row, start, tried)) placed = place(row, start, tried);
        }
        if (placed != 0 || tried == 1) break;
      }
      if (placed == 0) {
        const auto first = static_cast<std::int32_t>(random.next_below(static_cast<std::uint32_t>(n)));
        for (std::int32_t d = 0; d < n && placed == 0; ++d) {
          const std::int32_t i = first + d < n ? first + d : first + d - n;
          if (fits(row, row.positions[i], 1)) placed = place(row, row.positions[i], 1);
        }
        if (placed == 0) return;  // no valid position is left in this row
      }
      masked += placed;
    }
  }

 private:
  MEAP_HOST_DEVICE static bool fits(const row_candidates& row, std::int32_t start, std::int32_t length) {
    if (start + length > row.length) return false;
    if (start > 0 && row.mask[start - 1] != 0) return false;
    if (start + length < row.length && row.mask[start + length] != 0) return false;
    for (std::int32_t t = start; t < start + length; ++t)
      if (row.eligible[t] == 0 || row.mask[t] != 0) return false;
    return true;
  }

  MEAP_HOST_DEVICE static std::int32_t place(const row_candidates& row, std::int32_t start, std::int32_t length) {
    for (std::int32_t t = start; t < start + length; ++t) row.mask[t] = 1;
    return length;
  }
};

static_assert(pretraining_policy<span>);

}  // namespace meap::masking
