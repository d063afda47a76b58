// meap/core/philox.hpp: Philox4x32 counter-based RNG (Salmon et al., SC'11), identical in host and
// device code, so that a mask drawn for (seed, step, row) is the same bit for bit on the CPU and
// on CUDA. philox4x32<10> reproduces the Random123 known-answer vectors (tests/core).
#pragma once

#include <meap/core/config.hpp>

#include <cstdint>

namespace meap {

struct u32x4 {
  std::uint32_t v[4];
  MEAP_HOST_DEVICE constexpr std::uint32_t operator[](int i) const { return v[i]; }
  MEAP_HOST_DEVICE constexpr std::uint32_t& operator[](int i) { return v[i]; }
  friend constexpr bool operator==(const u32x4&, const u32x4&) = default;
};

struct u32x2 {
  std::uint32_t v[2];
  MEAP_HOST_DEVICE constexpr std::uint32_t operator[](int i) const { return v[i]; }
  MEAP_HOST_DEVICE constexpr std::uint32_t& operator[](int i) { return v[i]; }
  friend constexpr bool operator==(const u32x2&, const u32x2&) = default;
};

namespace philox_constants {
inline constexpr std::uint32_t multiplier0 = 0xD2511F53u;
inline constexpr std::uint32_t multiplier1 = 0xCD9E8D57u;
inline constexpr std::uint32_t weyl0 = 0x9E3779B9u;  // golden ratio
inline constexpr std::uint32_t weyl1 = 0xBB67AE85u;  // sqrt(3) - 1
}  // namespace philox_constants

// The Philox4x32-R bijection of `counter` under `key`. Rounds = 10 is the standard variant.
template <int Rounds = 10>
MEAP_HOST_DEVICE constexpr u32x4 philox4x32(u32x4 counter, u32x2 key) {
  static_assert(Rounds > 0 && Rounds <= 16, "meap::philox4x32: Rounds must be in [1, 16]");
  using namespace philox_constants;
  for (int round = 0; round < Rounds; ++round) {
    if (round > 0) {
      key[0] += weyl0;
      key[1] += weyl1;
    }
    const std::uint64_t product0 = static_cast<std::uint64_t>(multiplier0) * counter[0];
    const std::uint64_t product1 = static_cast<std::uint64_t>(multiplier1) * counter[2];
    const auto hi0 = static_cast<std::uint32_t>(product0 >> 32);
    const auto lo0 = static_cast<std::uint32_t>(product0);
    const auto hi1 = static_cast<std::uint32_t>(product1 >> 32);
    const auto lo1 = static_cast<std::uint32_t>(product1);
    counter = u32x4{{hi1 ^ counter[1] ^ key[0], lo1, hi0 ^ counter[3] ^ key[1], lo0}};
  }
  return counter;
}

// [0, 1) from the top 24 bits of a word: every float it returns is exactly k / 2^24.
MEAP_HOST_DEVICE constexpr float uniform_float(std::uint32_t word) {
  return static_cast<float>(word >> 8) * 5.9604644775390625e-8f;
}

// [0, 1) from 53 bits of two words.
MEAP_HOST_DEVICE constexpr double uniform_double(std::uint32_t high, std::uint32_t low) {
  const std::uint64_t bits = (static_cast<std::uint64_t>(high) << 21) ^ (low >> 11);
  return static_cast<double>(bits & ((std::uint64_t{1} << 53) - 1)) * 1.1102230246251565e-16;
}

// A sequence of random words addressed by (seed, stream, substream):
//   key     = (seed low word, seed high word)
//   counter = (block, substream, stream low word, stream high word)
// Each block yields four words; a sequence holds 2^32 blocks. Two streams, or two substreams of
// one stream, never share a counter, so they are independent. meap's masking uses
// stream = training step and substream = batch row.
class philox_stream {
 public:
  MEAP_HOST_DEVICE constexpr philox_stream(std::uint64_t seed, std::uint64_t stream, std::uint32_t substream = 0)
      : key_{{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)}},
        counter_{{0u, substream, static_cast<std::uint32_t>(stream), static_cast<std::uint32_t>(stream >> 32)}} {}

  MEAP_HOST_DEVICE constexpr std::uint32_t next_u32() {
    if (used_ == 4) {
      block_ = philox4x32<10>(counter_, key_);
      ++counter_[0];
      used_ = 0;
    }
    return block_[used_++];
  }

  MEAP_HOST_DEVICE constexpr std::uint64_t next_u64() {
    const std::uint64_t high = next_u32();
    return (high << 32) | next_u32();
  }

  MEAP_HOST_DEVICE constexpr float next_float() { return uniform_float(next_u32()); }

  MEAP_HOST_DEVICE constexpr double next_double() {
    const std::uint32_t high = next_u32();
    return uniform_double(high, next_u32());
  }

  // Uniform in [0, bound) without modulo bias (Lemire's multiply-and-reject). bound > 0.
  MEAP_HOST_DEVICE constexpr std::uint32_t next_below(std::uint32_t bound) {
    std::uint64_t product = static_cast<std::uint64_t>(next_u32()) * bound;
    auto low = static_cast<std::uint32_t>(product);
    if (low < bound) {
      const std::uint32_t threshold = (0u - bound) % bound;
      while (low < threshold) {
        product = static_cast<std::uint64_t>(next_u32()) * bound;
        low = static_cast<std::uint32_t>(product);
      }
    }
    return static_cast<std::uint32_t>(product >> 32);
  }

  // Jump to block `block` (word 4 * block) of this sequence: random access for parallel draws.
  MEAP_HOST_DEVICE constexpr void seek_block(std::uint32_t block) {
    counter_[0] = block;
    used_ = 4;
  }

 private:
  u32x2 key_;
  u32x4 counter_;
  u32x4 block_{{0u, 0u, 0u, 0u}};
  int used_ = 4;
};

}  // namespace meap
