// meap/masking/fixed_ratio.hpp: MEAP's pretraining mask. Exactly k = max(1, floor(ratio * n))
// of the n eligible positions of a row, uniformly without replacement.
//
//   meap::masking::fixed_ratio policy{.ratio = 0.15, .sharing = meap::masking::sharing::per_batch};
#pragma once

#include <meap/core/config.hpp>
#include <meap/core/philox.hpp>
#include <meap/masking/policy.hpp>

#include <cstdint>
#include <string>

namespace meap::masking {

struct fixed_ratio {
  double ratio = 0.15;  // the paper's P
  masking::sharing sharing = masking::sharing::per_row;

  void validate() const { check_ratio("meap::masking::fixed_ratio", ratio); }
  // "fixed_ratio(ratio=0.15, sharing=per_row)": what checkpoints record to compare runs.
  std::string describe() const {
    return "fixed_ratio(" + detail::describe_field("ratio", ratio) + ", " + detail::describe_sharing(sharing) + ")";
  }

  // Partial Fisher-Yates over the eligible positions, in this exact order (the CPU and CUDA
  // implementations both run it, which is what makes them agree bit for bit):
  //   for i in [0, k): j = i + next_below(n - i); swap(positions[i], positions[j]); mask positions[i]
  // Each k-subset is equally likely because each step picks uniformly among the positions not yet
  // taken; it costs k draws, not n.
  MEAP_HOST_DEVICE void mask_row(const row_candidates& row, philox_stream& random) const {
    const std::int32_t n = row.count;
    const std::int32_t k = masked_count(ratio, n);
    for (std::int32_t i = 0; i < k; ++i) {
      const std::int32_t j = i + static_cast<std::int32_t>(random.next_below(static_cast<std::uint32_t>(n - i)));
      const std::int32_t chosen = row.positions[j];
      row.positions[j] = row.positions[i];
      row.positions[i] = chosen;
      row.mask[chosen] = 1;
    }
  }
};

static_assert(pretraining_policy<fixed_ratio>);

}  // namespace meap::masking
