// meap/nn/kv_cache.hpp: the keys and values a llama_model has computed for the tokens it has seen,
// per layer, so that generating one more token costs one token's work (llama_model::forward_cached).
//
//   keys(l), values(l): (B, S, Hkv, D) in the model's compute type, on its device; row b holds
//   lengths()[b] valid positions (keys after RoPE). S = capacity <= the model's max_seq.
//
// Rows advance independently: a batch of prompts of different lengths is prefilled right-padded,
// then each row's length is set to its own prompt length, so the padding's slots are overwritten
// by that row's next tokens before any query can see them (a query at position p reads keys <= p).
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/error.hpp>
#include <meap/core/tensor.hpp>
#include <meap/nn/config.hpp>

#include <cstddef>
#include <span>
#include <string>
#include <vector>

namespace meap::nn {

template <class T, device Device>
class kv_cache {
 public:
  kv_cache() = default;
  // Allocates `layers` pairs of (batch, capacity, kv_heads, head_dim) buffers on `device`.
  kv_cache(const Device& device, const llama_config& config, index_t batch, index_t capacity)
      : batch_(batch), capacity_(capacity), lengths_(static_cast<std::size_t>(batch), 0) {
    constexpr std::string_view function = "meap::nn::kv_cache";
    config.validate();
    check_argument(batch >= 1, function, "batch", batch, "at least one row");
    check_argument(capacity >= 1 && capacity <= config.max_seq, function, "capacity", capacity,
                   "1 <= capacity <= max_seq = " + std::to_string(config.max_seq) +
                       " (positions beyond max_seq were never trained)");
    const dims shape{batch, capacity, config.kv_heads, config.head_dim()};
    keys_.reserve(static_cast<std::size_t>(config.layers));
    values_.reserve(static_cast<std::size_t>(config.layers));
    for (index_t l = 0; l < config.layers; ++l) {
      keys_.emplace_back(device, shape);
      values_.emplace_back(device, shape);
    }
  }

  index_t batch() const noexcept { return batch_; }
  index_t capacity() const noexcept { return capacity_; }
  index_t layers() const noexcept { return static_cast<index_t>(keys_.size()); }
  // Positions held per row.
  std::span<const index_t> lengths() const noexcept { return lengths_; }

  tensor_view<T, Device> keys(index_t layer) { return keys_[static_cast<std::size_t>(layer)].view(); }
  tensor_view<T, Device> values(index_t layer) { return values_[static_cast<std::size_t>(layer)].view(); }

  // Sets how many positions each row holds (after a right-padded prefill, each row's own length).
  void set_lengths(std::span<const index_t> lengths) {
    constexpr std::string_view function = "meap::nn::kv_cache::set_lengths";
    check_argument(static_cast<index_t>(lengths.size()) == batch_, function, "lengths",
                   std::to_string(lengths.size()) + " entries", "one per row (B = " + std::to_string(batch_) + ")");
    for (std::size_t b = 0; b < lengths.size(); ++b)
      check_argument(lengths[b] >= 0 && lengths[b] <= capacity_, function, "lengths",
                     "lengths[" + std::to_string(b) + "] = " + std::to_string(lengths[b]),
                     "0 <= length <= capacity = " + std::to_string(capacity_));
    lengths_.assign(lengths.begin(), lengths.end());
  }
  // Forgets every position (the buffers are kept for the next batch).
  void clear() { lengths_.assign(lengths_.size(), 0); }

 private:
  index_t batch_ = 0, capacity_ = 0;
  std::vector<index_t> lengths_;
  std::vector<tensor<T, Device>> keys_, values_;
};

}  // namespace meap::nn
