// meap/masking/apply.hpp: apply() for pretraining policies, and its CPU backend. The CUDA backend
// is in masking/cuda/apply.hpp (part of <meap/cuda.hpp>) and runs the same per-row algorithm.
//
//   meap::masking::pretraining_options options{.seed = 1234, .step = step, .mask_id = mask_id,
//                                              .pad_id = pad_id, .special_ids = {bos, eos}};
//   auto batch = meap::masking::apply(meap::cpu{}, meap::masking::fixed_ratio{}, tokens, options);
//   // batch.input_ids (B, T), batch.labels (B, T), batch.mask (B, T)
//
// What apply() does, on every device:
//  1. Checks at the door: shapes, ids, the policy's parameters (meap::error).
//  2. Marks each input position eligible or not (pretraining_options documents the exclusions),
//     and rejects the batch if mask_id occurs in tokens (when options.mask_id_must_be_unused), if
//     a row has no eligible position, or, under sharing::per_batch, if no position is eligible in
//     every row. These checks come in this order and nothing is drawn before they pass.
//  3. Calls policy.mask_row once per row with philox_stream(seed, step, micro_batch * B + row), or
//     once for the batch with philox_stream(seed, step, batch_substream - micro_batch) on the
//     positions eligible in every row.
//  4. Writes input_ids, labels and mask, keeping only eligible masked positions.
// On the CPU, rows run in parallel under OpenMP (when meap::meap is built with it); every row is
// keyed by its own index, so the thread count never changes a result. Outputs may not share
// memory with the tokens or with each other (checked).
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/error.hpp>
#include <meap/core/philox.hpp>
#include <meap/core/tensor.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/core/parallel.hpp>
#include <meap/masking/policy.hpp>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace meap::masking {

// tokens: (B, T + 1) token ids on `device`, any strides. segment_ids (optional): (B, T + 1) or
// (B, T) document ids of packed rows, on the same device. Returns new (B, T) tensors.
template <meap::device Device, pretraining_policy Policy>
masked_batch<Device> apply(const Device& device, const Policy& policy,
                           tensor_view<const std::int32_t, std::type_identity_t<Device>> tokens,
                           const pretraining_options& options,
                           tensor_view<const std::int32_t, std::type_identity_t<Device>> segment_ids = {}) {
  detail::check_pretraining_arguments(policy, tokens, options, segment_ids);
  const dims shape{tokens.size(0), tokens.size(1) - 1};
  masked_batch<Device> result{tensor<std::int32_t, Device>(device, shape), tensor<std::int32_t, Device>(device, shape),
                              tensor<std::uint8_t, Device>(device, shape)};
  backend<Device>::run(device, policy, tokens, options, segment_ids, result.view());
  return result;
}

// As above, writing into caller-provided (B, T) views (no allocation of outputs).
template <meap::device Device, pretraining_policy Policy>
void apply(const Device& device, const Policy& policy, tensor_view<const std::int32_t, std::type_identity_t<Device>> tokens,
           const pretraining_options& options, const masked_batch_view<std::type_identity_t<Device>>& out,
           tensor_view<const std::int32_t, std::type_identity_t<Device>> segment_ids = {}) {
  detail::check_pretraining_arguments(policy, tokens, options, segment_ids);
  detail::check_outputs(out, tokens);
  backend<Device>::run(device, policy, tokens, options, segment_ids, out);
}

namespace detail {

// Row b of a (B, C) view with any column stride: element t is at data[t * step].
template <class T>
struct strided_row {
  T* data;
  index_t step;
  T& operator[](index_t t) const { return data[t * step]; }
};

template <class T>
strided_row<T> row_of(const tensor_view<T, cpu>& view, index_t b) {
  return {view.data() + b * view.stride(0), view.stride(1)};
}

// Segment ids absent: no position ends a segment.
struct no_segments {};

// Calls f(row) with row[t] = view(b, t): a plain pointer when the row is contiguous, so that the
// loops over it vectorize, else a strided accessor.
template <class T, class F>
void visit_row(const tensor_view<T, cpu>& view, index_t b, F&& f) {
  if (view.stride(1) == 1) {
    f(view.data() + b * view.stride(0));
  } else {
    f(row_of(view, b));
  }
}

// The eligibility flags of one row (exclusion_rule::eligible, evaluated pass by pass: short
// loops keep their state in registers); returns their count and sets `has_mask_id` when
// `check_mask_id` and mask_id occurs among the row's T + 1 tokens. Everything arrives by value so
// that the byte stores to `flags` (which may alias anything) do not force reloads.
template <class In, class Ids>
std::int32_t eligible_flags(const exclusion_rule rule, const In in, const Ids ids, const index_t segment_columns,
                            const bool check_mask_id, const std::int32_t mask_id, std::uint8_t* flags,
                            bool& has_mask_id) {
  const std::int32_t length = rule.length;
  const std::int32_t pad_id = rule.pad_id;
  const bool no_pad = pad_id < 0;
  const bool last_ok = rule.mask_last_position;
  // Padding, and the last input of a document (the row's end, or the position before padding).
  bool found = in[length] == mask_id;
  for (std::int32_t t = 0; t < length; ++t) {
    const std::int32_t token = in[t];
    const bool maskable = no_pad | (token != pad_id);
    const bool document_ends = (t == length - 1) | (!no_pad & (in[t + 1] == pad_id));
    flags[t] = static_cast<std::uint8_t>(maskable & (last_ok | !document_ends));
    found |= token == mask_id;
  }
  has_mask_id = check_mask_id & found;
  // Special ids.
  for (std::int32_t i = 0; i < rule.special_count; ++i) {
    const std::int32_t special = rule.special_ids[i];
    for (std::int32_t t = 0; t < length; ++t) flags[t] &= static_cast<std::uint8_t>(in[t] != special);
  }
  // The last input of each segment.
  if constexpr (!std::is_same_v<Ids, no_segments>) {
    if (!last_ok) {
      const auto checked = static_cast<std::int32_t>(segment_columns - 1 < length ? segment_columns - 1 : length);
      for (std::int32_t t = 0; t < checked; ++t) flags[t] &= static_cast<std::uint8_t>(ids[t] == ids[t + 1]);
    }
  }
  std::int32_t count = 0;
  for (std::int32_t t = 0; t < length; ++t) count += flags[t];
  return count;
}

// The outputs of one row: masked = drawn & flags, input_ids, labels.
template <class In, class Ids, class Labels, class Masked>
void write_row(const std::uint8_t* drawn, const std::uint8_t* flags, const In in, const Ids input_ids,
               const Labels labels, const Masked masked, const std::int32_t length, const std::int32_t mask_id,
               const std::int32_t pad_id) {
  const bool padded = pad_id >= 0;
  // Selects by bit masks, not branches: which positions are masked is random by design.
  for (std::int32_t t = 0; t < length; ++t) {
    const auto m = static_cast<std::uint8_t>(drawn[t] & flags[t]);
    const std::int32_t next = in[t + 1];
    const std::int32_t keep = static_cast<std::int32_t>(m) - 1;                         // 0 or all ones
    const std::int32_t ignore = -static_cast<std::int32_t>(padded & (next == pad_id));  // all ones or 0
    masked[t] = m;
    input_ids[t] = (in[t] & keep) | (mask_id & ~keep);
    labels[t] = (next & ~ignore) | (ignore_index & ignore);
  }
}

}  // namespace detail

template <>
struct backend<cpu> {
  template <class Policy>
  static void run(const cpu&, const Policy& policy, const tensor_view<const std::int32_t, cpu>& tokens,
                  const pretraining_options& options, const tensor_view<const std::int32_t, cpu>& segment_ids,
                  const masked_batch_view<cpu>& out) {
    const index_t rows = tokens.size(0);
    const auto length = static_cast<std::int32_t>(tokens.size(1) - 1);  // T
    if (rows == 0) return;
    const detail::exclusion_rule rule{options.pad_id, options.special_ids.data(),
                                      static_cast<std::int32_t>(options.special_ids.size()), length,
                                      options.mask_last_position};
    const std::size_t row_size = static_cast<std::size_t>(length);

    // Phase 1, rows in parallel: eligibility flags (B, T), counts, and whether mask_id occurs.
    std::vector<std::uint8_t> eligible(static_cast<std::size_t>(rows) * row_size);
    std::vector<std::int32_t> counts(static_cast<std::size_t>(rows));
    std::vector<std::uint8_t> has_mask_id(static_cast<std::size_t>(rows));
    MEAP_OMP(omp parallel for schedule(static))
    for (index_t b = 0; b < rows; ++b) {
      std::uint8_t* flags = eligible.data() + static_cast<std::size_t>(b) * row_size;
      bool found = false;
      std::int32_t count = 0;
      detail::visit_row(tokens, b, [&](const auto in) {
        if (segment_ids.rank() == 0) {
          count = detail::eligible_flags(rule, in, detail::no_segments{}, 0, options.mask_id_must_be_unused,
                                         options.mask_id, flags, found);
        } else {
          detail::visit_row(segment_ids, b, [&](const auto ids) {
            count = detail::eligible_flags(rule, in, ids, segment_ids.size(1), options.mask_id_must_be_unused,
                                           options.mask_id, flags, found);
          });
        }
      });
      counts[static_cast<std::size_t>(b)] = count;
      has_mask_id[static_cast<std::size_t>(b)] = found ? 1 : 0;
    }
    // Every check that depends on the data, before anything is drawn or written, in the
    // documented order (the CUDA backend keeps it too): mask_id at its first row-major
    // occurrence, then the first row without an eligible position.
    for (index_t b = 0; b < rows; ++b)
      if (has_mask_id[static_cast<std::size_t>(b)] != 0)
        for (index_t t = 0; t <= length; ++t)
          if (tokens(b, t) == options.mask_id) detail::throw_mask_id_in_tokens(options.mask_id, b, t);
    for (index_t b = 0; b < rows; ++b)
      if (counts[static_cast<std::size_t>(b)] == 0) detail::throw_row_without_eligible(b);

    // Compacts `flags` into increasing positions, clears `mask`, and runs the policy. mask_row
    // may run inside a parallel region, so it must not throw (in device code it cannot anyway).
    const auto draw = [&](const std::uint8_t* flags, std::uint32_t substream, std::int32_t* positions,
                          std::uint8_t* mask) {
      std::int32_t count = 0;
      for (std::int32_t t = 0; t < length; ++t) {
        positions[count] = t;  // kept only when flags[t] is set
        count += flags[t];
      }
      for (std::int32_t t = 0; t < length; ++t) mask[t] = 0;
      philox_stream random(options.seed, options.step, substream);
      policy.mask_row(row_candidates{positions, count, flags, mask, length}, random);
    };
    const bool contiguous = tokens.stride(1) == 1 && out.input_ids.stride(1) == 1 && out.labels.stride(1) == 1 &&
                            out.mask.stride(1) == 1;
    const auto write = [&](index_t b, const std::uint8_t* drawn) {
      const std::uint8_t* flags = eligible.data() + static_cast<std::size_t>(b) * row_size;
      if (contiguous) {
        detail::write_row(drawn, flags, tokens.data() + b * tokens.stride(0),
                          out.input_ids.data() + b * out.input_ids.stride(0), out.labels.data() + b * out.labels.stride(0),
                          out.mask.data() + b * out.mask.stride(0), length, options.mask_id, options.pad_id);
      } else {
        detail::write_row(drawn, flags, detail::row_of(tokens, b), detail::row_of(out.input_ids, b),
                          detail::row_of(out.labels, b), detail::row_of(out.mask, b), length, options.mask_id,
                          options.pad_id);
      }
    };

    // Phase 2: draw and write, keeping only eligible masked positions.
    if (static_cast<masking::sharing>(policy.sharing) == masking::sharing::per_batch) {
      // One draw on the positions eligible in every row.
      std::vector<std::uint8_t> common(eligible.begin(), eligible.begin() + length);
      for (index_t b = 1; b < rows; ++b) {
        const std::uint8_t* flags = eligible.data() + static_cast<std::size_t>(b) * row_size;
        for (std::int32_t t = 0; t < length; ++t) common[static_cast<std::size_t>(t)] &= flags[t];
      }
      std::int32_t count = 0;
      for (const std::uint8_t flag : common) count += flag;
      if (count == 0) detail::throw_no_common_position(rows);
      std::vector<std::int32_t> positions(row_size);
      std::vector<std::uint8_t> mask(row_size);
      draw(common.data(), shared_substream(options.micro_batch), positions.data(), mask.data());
      MEAP_OMP(omp parallel for schedule(static))
      for (index_t b = 0; b < rows; ++b) write(b, mask.data());
      return;
    }
    // Each row its own draw; rows are independent (keyed by their index), so the thread count
    // changes nothing in the result.
    MEAP_OMP(omp parallel)
    {
      std::vector<std::int32_t> positions(row_size);
      std::vector<std::uint8_t> mask(row_size);
      MEAP_OMP(omp for schedule(static))
      for (index_t b = 0; b < rows; ++b) {
        draw(eligible.data() + static_cast<std::size_t>(b) * row_size, row_substream(options.micro_batch, rows, b),
             positions.data(),
             mask.data());
        write(b, mask.data());
      }
    }
  }
};

}  // namespace meap::masking
