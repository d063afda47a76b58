// meap/masking/policy.hpp: what every masking policy shares: the label convention, the options
// of a pretraining batch (seed, step, exclusions), the sharing mode, the row a policy sees, the
// policy concept, and the outputs of apply().
//
// Label convention, used throughout meap: labels are *shifted*. labels[b, t] is the target of
// the logits at position t, i.e. the clean token that follows input position t; positions that
// carry no loss hold meap::masking::ignore_index (-100, as in PyTorch's cross_entropy).
//
// A pretraining batch is tokens (B, T + 1). apply() returns
//   input_ids (B, T) = tokens[:, :T] with the masked positions replaced by mask_id,
//   labels    (B, T) = tokens[:, 1:] (clean: masking never touches a target; padding -> -100),
//   mask      (B, T) = 1 where input_ids holds mask_id (for analysis).
// The exact rules (which positions may be masked, how many, and how they are drawn) are in
// docs/masking.md; they are identical on the CPU and on CUDA.
#pragma once

#include <meap/core/labels.hpp>

#include <meap/core/config.hpp>
#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/error.hpp>
#include <meap/core/philox.hpp>
#include <meap/core/tensor.hpp>
#include <meap/core/tensor_view.hpp>

#include <concepts>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace meap::masking {

// The label of a position that carries no loss (core/labels.hpp).
using meap::ignore_index;

// Whether each row draws its own positions (per_row) or the whole batch shares one position set
// drawn among the positions eligible in every row (per_batch, as the official MEAP code does).
enum class sharing : std::uint8_t { per_row, per_batch };

namespace detail {
// "ratio=0.15" pieces of a policy's describe(): numbers in full precision, so that two policies
// describe alike only if they mask alike.
inline std::string describe_field(const char* name, double value) {
  char text[64];
  std::snprintf(text, sizeof text, "%s=%.17g", name, value);
  return text;
}
inline std::string describe_sharing(sharing mode) {
  return mode == sharing::per_row ? "sharing=per_row" : "sharing=per_batch";
}
}  // namespace detail

// The Philox substream of the one draw a per_batch policy makes for micro-batch 0 of a step;
// micro-batch m uses batch_substream - m. Row draws (per_row) use the row's index in the global
// batch, micro_batch * B + b, so a step split into micro-batches draws exactly the masks of the
// same step taken whole; those substreams stay below 2^32 - 2^16, the per_batch ones above.
inline constexpr std::uint32_t batch_substream = 0xffffffffu;
inline constexpr std::uint32_t max_micro_batches = 1u << 16;

MEAP_HOST_DEVICE constexpr std::uint32_t row_substream(std::uint32_t micro_batch, std::int64_t rows, std::int64_t row) {
  return static_cast<std::uint32_t>(static_cast<std::int64_t>(micro_batch) * rows + row);
}
MEAP_HOST_DEVICE constexpr std::uint32_t shared_substream(std::uint32_t micro_batch) {
  return batch_substream - micro_batch;
}

// Everything about a pretraining batch that is not the policy: the RNG key and the exclusions.
struct pretraining_options {
  // Philox key: the same (seed, step, micro-batch, row) gives the same mask on every device and
  // after a resume.
  std::uint64_t seed = 0;
  std::uint64_t step = 0;
  // Which micro-batch of the step these rows are (gradient accumulation): row b is row
  // micro_batch * B + b of the step's global batch. Below max_micro_batches.
  std::uint32_t micro_batch = 0;
  // The [MASK] token written into input_ids. Required (>= 0); it may be neither pad_id nor a
  // special id.
  std::int32_t mask_id = -1;
  // Padding token (< 0: the batch has none). Padding is never masked and its targets are ignored.
  std::int32_t pad_id = -1;
  // Tokens that are never masked (BOS, EOS, separators, ...).
  std::vector<std::int32_t> special_ids{};
  // false (default, as the official code): the last input position of each document is never
  // masked: position T - 1, a position whose next token starts another segment, and a position
  // whose next token is padding. true makes those positions eligible like any other.
  bool mask_last_position = false;
  // true (default): throw meap::error when mask_id occurs in tokens, since a masked position
  // could then not be told apart from a real token. false allows a reused id.
  bool mask_id_must_be_unused = true;
};

// One row as a policy sees it (or the whole batch, under sharing::per_batch: then `eligible`
// holds the positions eligible in every row). Plain pointers, valid on the device that runs the
// policy: host memory in meap::cpu, global memory in meap::cuda.
struct row_candidates {
  std::int32_t* positions;        // [count] the eligible positions, increasing; scratch the policy may reorder
  std::int32_t count;             // >= 1 (apply() rejects rows with no eligible position)
  const std::uint8_t* eligible;   // [length] 1 where the position may be masked
  std::uint8_t* mask;             // [length] all 0 on entry; the policy sets 1 where it masks
  std::int32_t length;            // T
};

// A pretraining masking policy is a plain value type with
//   sharing:          a data member (or anything convertible to meap::masking::sharing);
//   validate():       throws meap::error when a parameter is out of range;
//   mask_row(row, random): sets row.mask[p] = 1 for the positions it masks, drawing from
//                     `random` only. Called once per row (per_row) or once per batch (per_batch),
//                     possibly from several threads at once (for different rows) and inside an
//                     OpenMP region, so it must not throw and must keep no mutable state.
// It must be trivially copyable (it is passed by value to CUDA kernels). To run on meap::cuda,
// mask_row must also be callable in device code: declare it MEAP_HOST_DEVICE. apply() keeps only
// positions that are eligible, so a policy cannot break the exclusions, whatever it sets.
template <class P>
concept pretraining_policy =
    std::is_trivially_copyable_v<P> && requires(const P& policy, const row_candidates& row, philox_stream& random) {
      { policy.sharing } -> std::convertible_to<masking::sharing>;
      policy.validate();
      { policy.mask_row(row, random) } -> std::same_as<void>;
    };

// The number of positions a ratio asks for among `eligible` ones: max(1, floor(ratio * eligible)).
// ratio is in (0, 1) and eligible >= 1; the product is one correctly rounded double multiply, so
// host and device agree.
MEAP_HOST_DEVICE constexpr std::int32_t masked_count(double ratio, std::int32_t eligible) {
  const auto k = static_cast<std::int32_t>(ratio * static_cast<double>(eligible));  // floor: both >= 0
  return k < 1 ? 1 : k;
}

// Checks a ratio at the door: in (0, 1), NaN rejected.
inline void check_ratio(std::string_view function, double ratio) {
  check_argument(ratio > 0.0 && ratio < 1.0, function, "ratio", ratio, "a ratio in the open interval (0, 1)");
}

// Caller-provided outputs of a pretraining apply(), each (B, T), any strides, on the device of
// the tokens.
template <class Device>
struct masked_batch_view {
  tensor_view<std::int32_t, Device> input_ids;
  tensor_view<std::int32_t, Device> labels;
  tensor_view<std::uint8_t, Device> mask;
};

// The owning outputs of a pretraining apply().
template <class Device>
struct masked_batch {
  tensor<std::int32_t, Device> input_ids;  // (B, T): tokens[:, :T], mask_id where masked
  tensor<std::int32_t, Device> labels;     // (B, T): tokens[:, 1:], ignore_index where the target is padding
  tensor<std::uint8_t, Device> mask;       // (B, T): 1 where masked

  masked_batch_view<Device> view() { return {input_ids.view(), labels.view(), mask.view()}; }
};

namespace detail {

// Which input positions may be masked. Trivially copyable; `special_ids` points to memory of the
// device that evaluates the rule.
struct exclusion_rule {
  std::int32_t pad_id;               // < 0: none
  const std::int32_t* special_ids;   // [special_count]
  std::int32_t special_count;
  std::int32_t length;               // T
  bool mask_last_position;

  // Bitwise & and | rather than && and ||: these run once per position, and branches on
  // random data would be mispredicted.
  MEAP_HOST_DEVICE bool is_special(std::int32_t token) const {
    bool found = false;
    for (std::int32_t i = 0; i < special_count; ++i) found |= special_ids[i] == token;
    return found;
  }

  // Position t with input `token`, next token `next` (tokens[t + 1]) and `segment_ends` (the
  // next token belongs to another segment).
  MEAP_HOST_DEVICE bool eligible(std::int32_t t, std::int32_t token, std::int32_t next, bool segment_ends) const {
    const bool no_pad = pad_id < 0;
    const bool maskable = (no_pad | (token != pad_id)) & !is_special(token);
    // The last input position of a document: its target is the row's end, another document, or padding.
    const bool document_ends = (t == length - 1) | segment_ends | (!no_pad & (next == pad_id));
    return maskable & (mask_last_position | !document_ends);
  }
};

inline constexpr const char* apply_function = "meap::masking::apply";

// Checks at the door shared by every device: shapes, ids and the policy's parameters.
template <class Device, class Policy>
void check_pretraining_arguments(const Policy& policy, const tensor_view<const std::int32_t, Device>& tokens,
                                 const pretraining_options& options,
                                 const tensor_view<const std::int32_t, Device>& segment_ids) {
  policy.validate();
  check_argument(tokens.rank() == 2, apply_function, "tokens", "shape " + to_string(tokens.shape()),
                 "a (B, T + 1) matrix of token ids");
  check_argument(options.micro_batch < max_micro_batches, apply_function, "options.micro_batch", options.micro_batch,
                 "a micro-batch index below 2^16");
  constexpr index_t row_substreams = (index_t{1} << 32) - max_micro_batches;
  check_argument((static_cast<index_t>(options.micro_batch) + 1) * tokens.size(0) <= row_substreams, apply_function,
                 "tokens", "shape " + to_string(tokens.shape()) + " in micro-batch " + std::to_string(options.micro_batch),
                 "(micro_batch + 1) * B <= 2^32 - 2^16 (global row indices are Philox substreams)");
  check_argument(tokens.size(1) >= 2 && tokens.size(1) <= std::numeric_limits<std::int32_t>::max(), apply_function,
                 "tokens", "shape " + to_string(tokens.shape()),
                 "T + 1 >= 2 columns (T inputs and their next-token targets), at most 2^31 - 1");
  if (segment_ids.rank() != 0) {
    const index_t rows = tokens.size(0);
    const index_t columns = tokens.size(1);
    check_argument(segment_ids.shape() == dims{rows, columns} || segment_ids.shape() == dims{rows, columns - 1},
                   apply_function, "segment_ids", "shape " + to_string(segment_ids.shape()),
                   "shape " + to_string(dims{rows, columns}) + " or " + to_string(dims{rows, columns - 1}) +
                       " (one id per token, or per input position)");
    check_same_device(apply_function, "tokens", tokens, "segment_ids", segment_ids);
  }
  check_argument(options.mask_id >= 0, apply_function, "options.mask_id", options.mask_id,
                 "a non-negative token id (the [MASK] token)");
  check_argument(options.pad_id < 0 || options.mask_id != options.pad_id, apply_function, "options.mask_id",
                 options.mask_id, "an id other than options.pad_id");
  for (const std::int32_t special : options.special_ids)
    check_argument(special != options.mask_id, apply_function, "options.mask_id", options.mask_id,
                   "an id that is not in options.special_ids (masked positions would read as special tokens)");
}

// The bytes [first, last) a view reaches.
template <class T, class Device>
std::pair<std::uintptr_t, std::uintptr_t> byte_range(const tensor_view<T, Device>& view) {
  index_t last = 0;
  for (int i = 0; i < view.rank(); ++i) last += (view.size(i) - 1) * view.stride(i);
  const auto first = reinterpret_cast<std::uintptr_t>(view.data());
  return {first, first + static_cast<std::uintptr_t>(last + 1) * sizeof(T)};
}

// Throws when the memory of `b` overlaps that of `a` (by address range, which is conservative for
// interleaved strided views).
template <class A, class B, class Device>
void check_disjoint(std::string_view name_a, const tensor_view<A, Device>& a, std::string_view name_b,
                    const tensor_view<B, Device>& b) {
  if (a.empty() || b.empty()) return;
  const auto [a_first, a_last] = byte_range(a);
  const auto [b_first, b_last] = byte_range(b);
  if (a_first < b_last && b_first < a_last)
    throw_argument_error(apply_function, name_b, "memory overlapping '" + std::string(name_a) + "'",
                         "an output that shares no memory with the tokens or another output");
}

template <class Device>
void check_outputs(const masked_batch_view<Device>& out, const tensor_view<const std::int32_t, Device>& tokens) {
  const dims expected{tokens.size(0), tokens.size(1) - 1};
  check_shape(apply_function, "out.input_ids", out.input_ids, expected);
  check_shape(apply_function, "out.labels", out.labels, expected);
  check_shape(apply_function, "out.mask", out.mask, expected);
  check_same_device(apply_function, "tokens", tokens, "out.input_ids", out.input_ids);
  check_same_device(apply_function, "tokens", tokens, "out.labels", out.labels);
  check_same_device(apply_function, "tokens", tokens, "out.mask", out.mask);
  check_disjoint("tokens", tokens, "out.input_ids", out.input_ids);
  check_disjoint("tokens", tokens, "out.labels", out.labels);
  check_disjoint("tokens", tokens, "out.mask", out.mask);
  check_disjoint("out.input_ids", out.input_ids, "out.labels", out.labels);
  check_disjoint("out.input_ids", out.input_ids, "out.mask", out.mask);
  check_disjoint("out.labels", out.labels, "out.mask", out.mask);
}

[[noreturn]] inline void throw_mask_id_in_tokens(std::int32_t mask_id, index_t row, index_t position) {
  throw_argument_error(apply_function, "options.mask_id", mask_id,
                       "an id that does not occur in tokens (it occurs at row " + std::to_string(row) +
                           ", position " + std::to_string(position) +
                           "); set options.mask_id_must_be_unused = false to reuse a real token as [MASK]");
}

[[noreturn]] inline void throw_row_without_eligible(index_t row) {
  throw_argument_error(apply_function, "tokens", "row " + std::to_string(row) + " with no maskable position",
                       "at least one position per row that is not padding, not a special id and not the last "
                       "input position of a document");
}

[[noreturn]] inline void throw_no_common_position(index_t rows) {
  throw_argument_error(apply_function, "tokens", "a batch of " + std::to_string(rows) + " rows with no position "
                       "eligible in every row", "a position eligible in every row under sharing::per_batch "
                       "(or use sharing::per_row)");
}

}  // namespace detail

// The backend of apply() for one device. meap::cpu is in masking/apply.hpp; meap::cuda in
// <meap/cuda.hpp>. The primary template is what a translation unit sees without that header.
template <class Device>
struct backend {
  static_assert(meap::detail::dependent_false<Device>,
                "meap::masking::apply on meap::cuda needs #include <meap/cuda.hpp> "
                "(in a CUDA translation unit compiled by nvcc, linked to meap::cuda)");
};

}  // namespace meap::masking
