// tests/data/support.hpp: a byte-level test tokenizer, text files, and the message check shared by
// the data tests.
#pragma once

#include <meap/core/error.hpp>
#include <meap/text/tokenizer.hpp>

#include <boost/test/unit_test.hpp>

#include "io/support.hpp"

#include <cctype>
#include <cstdint>
#include <fstream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace data_test {

namespace fs = std::filesystem;
using io_test::scratch_directory;

// Byte b is id b + 4; ids 0..3 are unk, BOS, EOS and PAD (each may be switched off: -1).
class byte_tokenizer final : public meap::text::tokenizer {
 public:
  explicit byte_tokenizer(std::int32_t bos = 1, std::int32_t eos = 2, std::int32_t pad = 3)
      : bos_(bos), eos_(eos), pad_(pad) {}
  std::vector<std::int32_t> encode(std::string_view text) const override {
    std::vector<std::int32_t> ids;
    for (const char c : text) ids.push_back(static_cast<std::int32_t>(static_cast<unsigned char>(c)) + 4);
    return ids;
  }
  std::string decode(std::span<const std::int32_t> ids) const override {
    std::string text;
    for (const auto id : ids)
      if (id >= 4) text.push_back(static_cast<char>(id - 4));
    return text;
  }
  std::int32_t vocab_size() const override { return 260; }
  std::int32_t bos_id() const override { return bos_; }
  std::int32_t eos_id() const override { return eos_; }
  std::int32_t pad_id() const override { return pad_; }
  std::int32_t piece_id(std::string_view piece) const override {
    return piece.size() == 1 ? static_cast<std::int32_t>(static_cast<unsigned char>(piece[0])) + 4 : -1;
  }

 private:
  std::int32_t bos_, eos_, pad_;
};

inline void write_text(const fs::path& path, std::string_view text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  BOOST_REQUIRE_MESSAGE(out.good(), "cannot write " << path);
}

inline std::vector<std::int32_t> concat(std::initializer_list<std::vector<std::int32_t>> parts) {
  std::vector<std::int32_t> all;
  for (const auto& part : parts) all.insert(all.end(), part.begin(), part.end());
  return all;
}

// For BOOST_CHECK_EXCEPTION: the message names `source` at 1-based line `line` (line 0: any, or
// none) and contains every fragment.
inline auto error_at(std::string source, std::uint64_t line, std::vector<std::string> fragments) {
  return [source = std::move(source), line, fragments = std::move(fragments)](const meap::error& e) {
    const std::string what = e.what();
    bool ok = what.find(source) != std::string::npos;
    if (ok && line > 0) {
      const std::string place = source + " line " + std::to_string(line);
      const auto at = what.find(place);
      ok = at != std::string::npos &&
           (at + place.size() == what.size() || !std::isdigit(static_cast<unsigned char>(what[at + place.size()])));
    }
    for (const auto& fragment : fragments) ok = ok && what.find(fragment) != std::string::npos;
    if (!ok) BOOST_TEST_MESSAGE("expected '" << source << "' line " << line << " in: " << what);
    return ok;
  };
}

}  // namespace data_test
