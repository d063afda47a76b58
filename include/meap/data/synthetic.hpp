// meap/data/synthetic.hpp: a built-in pretraining task that needs no data file: documents of the
// affine recurrence x[t+1] = (a x[t] + c) mod 64, with (a, c, x[0]) drawn per document, 16 to 48
// tokens each, back to back. A model must read the context to find a and c, so the loss falls only
// as it learns to attend. Rows are keyed by (seed, step, row): any rank, any rerun and any resume
// draws the same ones.
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/error.hpp>
#include <meap/core/philox.hpp>
#include <meap/core/tensor_view.hpp>

#include <algorithm>
#include <cstdint>
#include <string>

namespace meap::data {

// Ids of the task: 0 .. affine_vocab - 1.
inline constexpr std::int32_t affine_vocab = 64;

// Fills `out` (rows, tokens) with the rows of `step`.
inline void affine_recurrence_batch(std::uint64_t seed, std::uint64_t step, const tensor_view<std::int32_t, cpu>& out) {
  check_argument(out.rank() == 2, "meap::data::affine_recurrence_batch", "out",
                 "a view of rank " + std::to_string(out.rank()), "a (rows, tokens) view");
  for (index_t b = 0; b < out.size(0); ++b) {
    philox_stream rng(seed ^ 0x73796e7468ull, step, static_cast<std::uint32_t>(b));
    index_t t = 0;
    while (t < out.size(1)) {
      const std::int32_t a = 1 + 2 * static_cast<std::int32_t>(rng.next_below(affine_vocab / 2));  // odd: a bijection
      const std::int32_t c = static_cast<std::int32_t>(rng.next_below(affine_vocab));
      std::int32_t x = static_cast<std::int32_t>(rng.next_below(affine_vocab));
      const index_t end = std::min<index_t>(out.size(1), t + 16 + rng.next_below(33));
      for (; t < end; ++t) {
        out(b, t) = x;
        x = (a * x + c) % affine_vocab;
      }
    }
  }
}

}  // namespace meap::data
