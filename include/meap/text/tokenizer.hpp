// meap/text/tokenizer.hpp: what meap asks of a tokenizer (text <-> token ids), so that the data
// readers and the fine-tuning trainer work with any implementation: SentencePiece
// (meap/text/sentencepiece.hpp, target meap::sentencepiece) or the caller's own.
//
//   class tokenizer {
//     std::vector<std::int32_t> encode(std::string_view text) const;   // no BOS / EOS added
//     std::string decode(std::span<const std::int32_t> ids) const;
//     std::int32_t vocab_size() const;
//     std::int32_t bos_id() const, eos_id() const, pad_id() const;      // -1 when there is none
//     std::int32_t piece_id(std::string_view piece) const;             // -1 when not in the vocabulary
//   };
//
// Implementations throw meap::error (never anything else) for input they cannot handle, e.g. an
// id outside [0, vocab_size()) given to decode. encode and decode are const and must be safe to
// call from several threads at once.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace meap::text {

class tokenizer {
 public:
  virtual ~tokenizer() = default;

  // The ids of `text`, every one in [0, vocab_size()). Adds no BOS and no EOS.
  virtual std::vector<std::int32_t> encode(std::string_view text) const = 0;
  // The text of `ids` (each in [0, vocab_size())); control ids (BOS, EOS, PAD) decode to nothing.
  virtual std::string decode(std::span<const std::int32_t> ids) const = 0;
  // The number of ids: every id encode returns is below it.
  virtual std::int32_t vocab_size() const = 0;
  virtual std::int32_t bos_id() const = 0;  // -1 when the model has none
  virtual std::int32_t eos_id() const = 0;  // -1 when none
  virtual std::int32_t pad_id() const = 0;  // -1 when none
  // The id of a piece of the vocabulary (a special symbol such as "[MASK]", say); -1 when the
  // piece is not in the vocabulary (not the unknown-piece id).
  virtual std::int32_t piece_id(std::string_view piece) const = 0;

 protected:
  tokenizer() = default;
  tokenizer(const tokenizer&) = default;
  tokenizer& operator=(const tokenizer&) = default;
  tokenizer(tokenizer&&) = default;
  tokenizer& operator=(tokenizer&&) = default;
};

}  // namespace meap::text
