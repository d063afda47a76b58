// meap/text/sentencepiece.hpp: a meap::text::tokenizer over a SentencePiece model file (the
// tokenizer.model of LLaMA-family checkpoints, or one trained with spm_train).
//
//   meap::text::sentencepiece_tokenizer tokenizer("tokenizer.model");  // meap::error if unusable
//   std::vector<std::int32_t> ids = tokenizer.encode("Hello world");   // no BOS / EOS
//   std::string text = tokenizer.decode(ids);
//   tokenizer.bos_id(), eos_id(), pad_id(), unk_id();                  // -1 when the model has none
//   tokenizer.piece_id("[MASK]"), tokenizer.mask_id();                 // -1 when not in the vocabulary
//
// Needs the SentencePiece library (Debian: libsentencepiece-dev): link the CMake target
// meap::sentencepiece, which meap defines when it finds SentencePiece (option
// MEAP_ENABLE_SENTENCEPIECE; the installed package too) and which defines MEAP_HAS_SENTENCEPIECE=1. Without the target,
// define MEAP_HAS_SENTENCEPIECE=1 and link libsentencepiece yourself. The rest of meap does not
// need SentencePiece: meap::meap never includes this header.
//
// Opening a model reads the whole file and checks it before SentencePiece sees it: a missing,
// unreadable or empty file, a file that is not a well-formed serialized ModelProto, one with no
// pieces, and one without the normalizer spec that SentencePiece's trainer writes after the
// pieces (what a file cut short between two pieces looks like: it still parses) are refused with
// a meap::error naming the path; so is anything SentencePiece's own loader reports. No input
// crashes or throws anything but meap::error.
#pragma once

#ifndef MEAP_HAS_SENTENCEPIECE
#error "meap/text/sentencepiece.hpp needs SentencePiece: link the CMake target meap::sentencepiece (defined when meap finds SentencePiece; Debian: apt-get install libsentencepiece-dev), or define MEAP_HAS_SENTENCEPIECE=1 and link libsentencepiece yourself"
#endif
#if defined(__has_include)
#if !__has_include(<sentencepiece_processor.h>)
#error "meap/text/sentencepiece.hpp: <sentencepiece_processor.h> not found (Debian: apt-get install libsentencepiece-dev); link the CMake target meap::sentencepiece"
#endif
#endif

#include <meap/core/error.hpp>
#include <meap/text/tokenizer.hpp>

#include <sentencepiece_processor.h>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#pragma push_macro("MEAP_DETAIL_ALLOWED")
#define MEAP_DETAIL_ALLOWED 1
#include <meap/io/detail/posix_file.hpp>
#pragma pop_macro("MEAP_DETAIL_ALLOWED")

namespace meap::text {

// The largest model file accepted (the biggest public SentencePiece models are tens of MiB).
inline constexpr std::uint64_t max_sentencepiece_model_bytes = std::uint64_t{1} << 30;

namespace detail {

// The top level of a serialized ModelProto, walked with the protobuf wire format alone (no
// generated code): whether every field is well formed and lies inside the file, and which of the
// fields meap requires are there. ModelProto: 1 pieces (repeated), 2 trainer_spec,
// 3 normalizer_spec, 4 self_test_data, 5 denormalizer_spec; serializers write them in this order.
struct model_proto_outline {
  std::string problem;  // empty when the structure is well formed
  std::uint64_t pieces = 0;
  bool trainer_spec = false;
  bool normalizer_spec = false;
};

inline model_proto_outline outline_model_proto(std::string_view bytes) {
  model_proto_outline outline;
  std::size_t at = 0;
  const auto fail = [&](std::size_t where, const std::string& what) {
    outline.problem = what + " at byte " + std::to_string(where);
    return outline;
  };
  const auto varint = [&](std::uint64_t& value) {
    value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (at >= bytes.size()) return false;
      const auto byte = static_cast<unsigned char>(bytes[at++]);
      value |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return true;
    }
    return false;  // more than 10 bytes
  };
  while (at < bytes.size()) {
    const std::size_t field_start = at;
    std::uint64_t tag = 0;
    if (!varint(tag)) return fail(field_start, "a malformed field tag");
    const std::uint64_t field = tag >> 3;
    const auto wire = static_cast<unsigned>(tag & 7);
    if (field == 0 || field > 536870911u) return fail(field_start, "an invalid field number " + std::to_string(field));
    std::uint64_t skip = 0;
    switch (wire) {
      case 0: {
        std::uint64_t ignored = 0;
        if (!varint(ignored)) return fail(field_start, "a truncated or malformed integer field");
        break;
      }
      case 1: skip = 8; break;
      case 5: skip = 4; break;
      case 2:
        if (!varint(skip)) return fail(field_start, "a malformed length");
        break;
      default: return fail(field_start, "an unsupported wire type " + std::to_string(wire));
    }
    if (skip > bytes.size() - at)
      return fail(field_start, "a field of " + std::to_string(skip) + " bytes that runs past the end of the file (" +
                                   std::to_string(bytes.size() - at) + " bytes left)");
    at += static_cast<std::size_t>(skip);
    if (wire == 2) {
      if (field == 1) ++outline.pieces;
      if (field == 2) outline.trainer_spec = true;
      if (field == 3) outline.normalizer_spec = true;
    }
  }
  return outline;
}

}  // namespace detail

class sentencepiece_tokenizer final : public tokenizer {
 public:
  // Loads and checks the model file (see the top of this file). Throws meap::error naming `model`.
  explicit sentencepiece_tokenizer(const std::filesystem::path& model)
      : path_(model), processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
    constexpr std::string_view function = "meap::text::sentencepiece_tokenizer";
    constexpr std::string_view expected = "expected a SentencePiece model file (a serialized ModelProto, e.g. tokenizer.model)";
    const std::string bytes =
        meap::detail::read_small_file(function, path_, max_sentencepiece_model_bytes, "SentencePiece model");
    if (bytes.empty()) meap::detail::throw_file_error(function, path_, "is empty: " + std::string(expected));
    const auto outline = detail::outline_model_proto(bytes);
    if (!outline.problem.empty())
      meap::detail::throw_file_error(function, path_,
                                     "is not a SentencePiece model (" + outline.problem +
                                         "; a truncated or corrupt file?): " + std::string(expected));
    if (outline.pieces == 0)
      meap::detail::throw_file_error(function, path_, "holds no vocabulary pieces: " + std::string(expected));
    if (!outline.normalizer_spec)
      meap::detail::throw_file_error(function, path_,
                                     "has " + std::to_string(outline.pieces) +
                                         " pieces but no normalizer spec, which SentencePiece writes after the "
                                         "pieces (a truncated file?): " + std::string(expected));
    std::string status_text;
    try {
      const auto status = processor_->LoadFromSerializedProto(bytes);
      if (!status.ok()) status_text = status.ToString();
    } catch (const std::exception& e) {
      status_text = e.what();
    }
    if (!status_text.empty())
      meap::detail::throw_file_error(function, path_,
                                     "SentencePiece cannot load it (" + status_text + "): " + std::string(expected));
    const int pieces = processor_->GetPieceSize();
    if (pieces <= 0)
      meap::detail::throw_file_error(function, path_, "holds no vocabulary pieces: " + std::string(expected));
    vocab_size_ = static_cast<std::int32_t>(pieces);
  }

  // Moved-from tokenizers may only be destroyed or assigned to.
  sentencepiece_tokenizer(sentencepiece_tokenizer&&) noexcept = default;
  sentencepiece_tokenizer& operator=(sentencepiece_tokenizer&&) noexcept = default;
  sentencepiece_tokenizer(const sentencepiece_tokenizer&) = delete;
  sentencepiece_tokenizer& operator=(const sentencepiece_tokenizer&) = delete;
  ~sentencepiece_tokenizer() override = default;

  // SentencePiece's encoding with the model's normalization (no BOS, no EOS; the model's dummy
  // prefix, when it has one, starts every call's text with a word boundary).
  std::vector<std::int32_t> encode(std::string_view text) const override {
    std::vector<int> ids;
    std::string status_text;
    try {
      const auto status = processor_->Encode(text, &ids);
      if (!status.ok()) status_text = status.ToString();
    } catch (const std::exception& e) {
      status_text = e.what();
    }
    if (!status_text.empty())
      throw_argument_error("meap::text::sentencepiece_tokenizer::encode", "text", shorten(text),
                           "text SentencePiece can encode (" + status_text + ")");
    return std::vector<std::int32_t>(ids.begin(), ids.end());
  }

  std::string decode(std::span<const std::int32_t> ids) const override {
    constexpr std::string_view function = "meap::text::sentencepiece_tokenizer::decode";
    std::vector<int> values(ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] < 0 || ids[i] >= vocab_size_)
        throw_argument_error(function, "ids", "ids[" + std::to_string(i) + "] = " + std::to_string(ids[i]),
                             "token ids in [0, " + std::to_string(vocab_size_) + ")");
      values[i] = ids[i];
    }
    std::string text;
    std::string status_text;
    try {
      const auto status = processor_->Decode(values, &text);
      if (!status.ok()) status_text = status.ToString();
    } catch (const std::exception& e) {
      status_text = e.what();
    }
    if (!status_text.empty())
      throw_argument_error(function, "ids", std::to_string(ids.size()) + " ids",
                           "ids SentencePiece can decode (" + status_text + ")");
    return text;
  }

  std::int32_t vocab_size() const override { return vocab_size_; }
  std::int32_t bos_id() const override { return processor_->bos_id(); }
  std::int32_t eos_id() const override { return processor_->eos_id(); }
  std::int32_t pad_id() const override { return processor_->pad_id(); }
  std::int32_t unk_id() const { return processor_->unk_id(); }

  // -1 when `piece` is not in the vocabulary (SentencePiece itself would answer the unknown id).
  std::int32_t piece_id(std::string_view piece) const override {
    const int id = processor_->PieceToId(piece);
    if (id < 0 || id >= vocab_size_) return -1;
    if (id == processor_->unk_id() && processor_->IdToPiece(id) != piece) return -1;
    return id;
  }
  // The piece of an id in [0, vocab_size()).
  std::string piece(std::int32_t id) const {
    check_argument(id >= 0 && id < vocab_size_, "meap::text::sentencepiece_tokenizer::piece", "id", id,
                   "a token id in [0, " + std::to_string(vocab_size_) + ")");
    return processor_->IdToPiece(id);
  }
  // The id of "[MASK]" (train the model with --user_defined_symbols=[MASK]); -1 when absent.
  std::int32_t mask_id() const { return piece_id("[MASK]"); }

  const std::filesystem::path& path() const noexcept { return path_; }
  // The underlying processor, for what this class does not offer (sampling, n-best, pieces).
  const sentencepiece::SentencePieceProcessor& processor() const noexcept { return *processor_; }

 private:
  static std::string shorten(std::string_view text) {
    std::string shown = "\"" + std::string(text.substr(0, 40)) + (text.size() > 40 ? "...\"" : "\"");
    return shown + " (" + std::to_string(text.size()) + " bytes)";
  }

  std::filesystem::path path_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
  std::int32_t vocab_size_ = 0;
};

}  // namespace meap::text
