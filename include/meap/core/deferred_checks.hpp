// meap/core/deferred_checks.hpp: checks of values in device memory that a front door records on
// the device instead of waiting for it.
//
// Token ids, labels and positions are data: a door on meap::cuda can only check them by reading
// device memory, which means waiting for the stream. By default it does exactly that and throws
// the same meap::error as the CPU. Given a deferred_checks (four 64-bit words in device memory,
// filled with deferred_none), it instead records the first failure of each check there and
// returns without waiting; raise_deferred_checks() reads the words on the host (after the caller's
// own synchronization, e.g. the training step's one) and throws the error the door would have
// thrown. Kernels never read out of bounds because of a failed check they deferred: an invalid
// token embeds as zeros and is skipped by the backward pass; the step that produced it must be
// discarded, which pretrainer does (AdamW skips the update when any word is set).
// On meap::cpu the doors always check at once; deferral changes nothing there.
#pragma once

#include <meap/core/config.hpp>
#include <meap/core/device.hpp>
#include <meap/core/error.hpp>
#include <meap/core/tensor_view.hpp>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace meap {

// The checks a door can defer, one word each.
enum class deferred_check : int {
  token_ids = 0,      // embedding: tokens in [0, vocab)
  labels = 1,         // cross-entropy: labels in [0, vocab) or ignore_index
  positions = 2,      // RoPE: positions >= 0
  selected_rows = 3,  // cross-entropy: the caller's count of selected rows is right
};
inline constexpr int deferred_check_count = 4;

// A word with no failure recorded. A failure is (index << 32) | uint32(value): the smallest index
// wins an atomicMin, and its value rides along.
inline constexpr std::uint64_t deferred_none = ~std::uint64_t{0};

MEAP_HOST_DEVICE constexpr std::uint64_t deferred_failure(std::uint64_t index, std::int32_t value) {
  return (index << 32) | static_cast<std::uint32_t>(value);
}

template <class Device>
struct deferred_checks {
  // (deferred_check_count) words on Device, set to deferred_none before the calls that record;
  // a default (null) view means: check at once.
  tensor_view<std::uint64_t, Device> words{};

  bool active() const noexcept { return words.data() != nullptr; }
  std::uint64_t* word(deferred_check check) const noexcept { return words.data() + static_cast<int>(check); }
};

namespace detail {

// The messages of the value checks, shared by the doors (immediate) and by
// raise_deferred_checks (deferred), so that both read the same.
[[noreturn]] inline void throw_invalid_token(std::string_view function, index_t index, std::int64_t value,
                                             index_t vocab, std::string_view where = {}) {
  throw_argument_error(function, "tokens",
                       "token " + std::to_string(value) + " at index " + std::to_string(index) + std::string(where),
                       "token ids in [0, " + std::to_string(vocab) + ")");
}

[[noreturn]] inline void throw_invalid_label(std::string_view function, index_t index, std::int64_t value,
                                             index_t vocab, std::string_view where = {}) {
  throw_argument_error(function, "labels",
                       "labels[" + std::to_string(index) + "] = " + std::to_string(value) + std::string(where),
                       "a class in [0, " + std::to_string(vocab) + ") or -100 (ignored)");
}

[[noreturn]] inline void throw_invalid_position(std::string_view function, index_t index, std::int64_t value,
                                                std::string_view where = {}) {
  throw_argument_error(function, "positions",
                       "position " + std::to_string(value) + " at flat index " + std::to_string(index) +
                           std::string(where),
                       "non-negative positions");
}

[[noreturn]] inline void throw_wrong_selected_rows(std::string_view function, index_t given, index_t counted,
                                                   std::string_view where = {}) {
  throw_argument_error(function, "options.selected_rows", std::to_string(given) + std::string(where),
                       "the number of labels other than -100, " + std::to_string(counted));
}

}  // namespace detail

// Throws the error a door would have thrown for the first failure recorded in `words` (host
// copies of deferred_checks::words), checks in enum order; returns when none is recorded. `vocab`
// is the vocabulary the tokens and labels were checked against; `where` is appended to the value
// (e.g. " (micro-batch 2)").
inline void raise_deferred_checks(std::span<const std::uint64_t> words, index_t vocab, std::string_view where = {}) {
  check_argument(words.size() >= static_cast<std::size_t>(deferred_check_count), "meap::raise_deferred_checks",
                 "words", std::to_string(words.size()) + " words",
                 "at least " + std::to_string(deferred_check_count) + " (one per deferred_check)");
  const auto index_of = [](std::uint64_t word) { return static_cast<index_t>(word >> 32); };
  const auto value_of = [](std::uint64_t word) { return static_cast<std::int32_t>(static_cast<std::uint32_t>(word)); };
  const std::uint64_t tokens = words[static_cast<int>(deferred_check::token_ids)];
  if (tokens != deferred_none)
    detail::throw_invalid_token("meap::embedding_forward", index_of(tokens), value_of(tokens), vocab, where);
  const std::uint64_t labels = words[static_cast<int>(deferred_check::labels)];
  if (labels != deferred_none)
    detail::throw_invalid_label("meap::linear_cross_entropy", index_of(labels), value_of(labels), vocab, where);
  const std::uint64_t positions = words[static_cast<int>(deferred_check::positions)];
  if (positions != deferred_none)
    detail::throw_invalid_position("meap::rope_forward", index_of(positions), value_of(positions), where);
  const std::uint64_t selected = words[static_cast<int>(deferred_check::selected_rows)];
  if (selected != deferred_none)
    detail::throw_wrong_selected_rows("meap::linear_cross_entropy", index_of(selected), value_of(selected), where);
}

}  // namespace meap
