// Fuzz target: meap::data::parse_instruction_jsonl (the JSONL reader of fine-tuning data), in ids
// mode and with a byte-level tokenizer for text records. On success it checks what the reader
// promises: every example has a non-empty prompt and answer of ids in [0, vocab), no prompt
// reaches max_length, and the line numbers lie within the text.
#include <meap/data/instruction.hpp>

#include "fuzz_support.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace {

using meap_fuzz::check;
using meap_fuzz::expect_meap_error;

// One id per byte (ids 3..258), BOS 1, EOS 2: text records without a model file.
class byte_tokenizer final : public meap::text::tokenizer {
 public:
  std::vector<std::int32_t> encode(std::string_view text) const override {
    std::vector<std::int32_t> ids;
    for (const char c : text) ids.push_back(3 + static_cast<unsigned char>(c));
    return ids;
  }
  std::string decode(std::span<const std::int32_t> ids) const override {
    std::string text;
    for (const std::int32_t id : ids)
      if (id >= 3) text.push_back(static_cast<char>(id - 3));
    return text;
  }
  std::int32_t vocab_size() const override { return 259; }
  std::int32_t bos_id() const override { return 1; }
  std::int32_t eos_id() const override { return 2; }
  std::int32_t pad_id() const override { return 0; }
  std::int32_t piece_id(std::string_view) const override { return -1; }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const byte_tokenizer tokenizer;
  for (const bool with_tokenizer : {false, true}) {
    meap::data::instruction_read_options options;
    options.tokenizer = with_tokenizer ? &tokenizer : nullptr;
    options.vocab = 300;
    options.max_length = 64;
    std::optional<meap::data::instruction_dataset> read;
    expect_meap_error([&] { read.emplace(meap::data::parse_instruction_jsonl(text, "fuzz.jsonl", options)); });
    if (!read) continue;
    std::uint64_t newlines = 0;
    for (const char c : text) newlines += c == '\n';
    check(read->lines >= 1 && read->lines <= newlines + 1, "the line count is within the text");
    check(read->blank_lines <= read->lines, "no more blank lines than lines");
    for (const auto& e : read->examples) {
      check(!e.prompt.empty() && !e.answer.empty(), "every example has a prompt and an answer");
      check(e.prompt.size() < 64, "no prompt reaches max_length");
      check(e.line >= 1 && e.line <= read->lines, "an example's line is a line of the text");
      for (const auto* ids : {&e.prompt, &e.answer})
        for (const std::int32_t id : *ids) check(id >= 0 && id < 300, "every id is in [0, vocab)");
    }
  }
  return 0;
}
