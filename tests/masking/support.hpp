// tests/masking/support.hpp: batches of tokens and the checks shared by the masking tests.
#pragma once

#include <meap/masking/apply.hpp>
#include <meap/masking/duplicated_copy.hpp>
#include <meap/masking/fixed_ratio.hpp>
#include <meap/masking/span.hpp>

#include <boost/test/unit_test.hpp>

#include "support/errors.hpp"

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace masking_test {

// Ids used throughout: real tokens are >= first_word.
inline constexpr std::int32_t pad = 0;
inline constexpr std::int32_t bos = 1;
inline constexpr std::int32_t eos = 2;
inline constexpr std::int32_t mask = 3;
inline constexpr std::int32_t first_word = 10;

// A (rows, columns) batch of token ids held in a vector, with its view.
struct batch {
  meap::index_t rows = 0;
  meap::index_t columns = 0;
  std::vector<std::int32_t> tokens;

  meap::tensor_view<const std::int32_t, meap::cpu> view() const {
    return meap::make_view(std::span<const std::int32_t>(tokens), {rows, columns});
  }
  std::int32_t at(meap::index_t b, meap::index_t t) const { return tokens[static_cast<std::size_t>(b * columns + t)]; }
};

// Words only (no padding, no special ids).
inline batch plain_batch(meap::index_t rows, meap::index_t columns, std::uint64_t seed = 1) {
  batch result{rows, columns, std::vector<std::int32_t>(static_cast<std::size_t>(rows * columns))};
  meap::philox_stream random(seed, 0xba7c);
  for (auto& token : result.tokens) token = first_word + static_cast<std::int32_t>(random.next_below(1000));
  return result;
}

// Rows of documents: BOS at the start, EOS at the end of some rows, right padding of random
// length, and now and then a special id inside the text.
inline batch messy_batch(meap::index_t rows, meap::index_t columns, std::uint64_t seed) {
  batch result = plain_batch(rows, columns, seed);
  meap::philox_stream random(seed, 0x5eed);
  for (meap::index_t b = 0; b < rows; ++b) {
    const auto padded = static_cast<meap::index_t>(random.next_below(static_cast<std::uint32_t>(columns / 3)));
    const meap::index_t text = columns - padded;
    std::int32_t* row = result.tokens.data() + b * columns;
    row[0] = bos;
    for (meap::index_t t = 1; t < text; ++t)
      if (random.next_below(17) == 0) row[t] = random.next_below(2) == 0 ? bos : eos;
    if (padded > 0) row[text - 1] = eos;
    for (meap::index_t t = text; t < columns; ++t) row[t] = pad;
  }
  return result;
}

// Segment ids for packed rows: a new document every few tokens, (rows, columns).
inline std::vector<std::int32_t> random_segments(meap::index_t rows, meap::index_t columns, std::uint64_t seed) {
  std::vector<std::int32_t> ids(static_cast<std::size_t>(rows * columns));
  meap::philox_stream random(seed, 0x5e9);
  for (meap::index_t b = 0; b < rows; ++b) {
    std::int32_t id = 0;
    for (meap::index_t t = 0; t < columns; ++t) {
      if (t > 0 && random.next_below(9) == 0) ++id;
      ids[static_cast<std::size_t>(b * columns + t)] = id;
    }
  }
  return ids;
}

// The test's own statement of the exclusions (docs/masking.md), position by position.
inline std::vector<std::uint8_t> expected_eligible(const batch& tokens, const meap::masking::pretraining_options& options,
                                                   const std::vector<std::int32_t>* segments = nullptr,
                                                   meap::index_t segment_columns = 0) {
  const meap::index_t length = tokens.columns - 1;
  std::vector<std::uint8_t> eligible(static_cast<std::size_t>(tokens.rows * length));
  for (meap::index_t b = 0; b < tokens.rows; ++b)
    for (meap::index_t t = 0; t < length; ++t) {
      const std::int32_t token = tokens.at(b, t);
      bool ok = !(options.pad_id >= 0 && token == options.pad_id);
      for (const std::int32_t special : options.special_ids) ok = ok && token != special;
      if (!options.mask_last_position) {
        const bool last = t == length - 1;
        const bool before_pad = options.pad_id >= 0 && tokens.at(b, t + 1) == options.pad_id;
        bool segment_ends = false;
        if (segments != nullptr && t + 1 < segment_columns)
          segment_ends = (*segments)[static_cast<std::size_t>(b * segment_columns + t)] !=
                         (*segments)[static_cast<std::size_t>(b * segment_columns + t + 1)];
        ok = ok && !last && !before_pad && !segment_ends;
      }
      eligible[static_cast<std::size_t>(b * length + t)] = ok ? 1 : 0;
    }
  return eligible;
}

using meap_test::error_says;

inline constexpr const char* apply_name = "meap::masking::apply";

// How many positions of row b a masking call masked.
inline meap::index_t masked_in_row(const meap::masking::masked_batch<meap::cpu>& result, meap::index_t b) {
  meap::index_t count = 0;
  for (meap::index_t t = 0; t < result.mask.size(1); ++t) count += result.mask.view()(b, t);
  return count;
}

}  // namespace masking_test
