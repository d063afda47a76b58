// tests/io/support.hpp: a scratch directory, file bytes, and the error check shared by the io tests.
#pragma once

#include <meap/core/error.hpp>

#include <boost/test/unit_test.hpp>

#include "support/errors.hpp"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <unistd.h>

namespace io_test {

namespace fs = std::filesystem;
using bytes = std::vector<std::byte>;

// A fresh directory under the system temp directory, removed with everything in it.
class scratch_directory {
 public:
  scratch_directory() {
    static std::atomic<int> counter{0};
    std::random_device random;
    path_ = fs::temp_directory_path() / ("meap_io_test_" + std::to_string(::getpid()) + "_" +
                                         std::to_string(random()) + "_" + std::to_string(counter++));
    fs::create_directory(path_);
  }
  scratch_directory(const scratch_directory&) = delete;
  scratch_directory& operator=(const scratch_directory&) = delete;
  ~scratch_directory() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }

  const fs::path& path() const { return path_; }
  fs::path operator/(std::string_view name) const { return path_ / name; }

  // Names of the directory's entries, sorted (temporaries included: they start with '.').
  std::vector<std::string> listing() const {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(path_)) names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  fs::path path_;
};

inline bytes read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  BOOST_REQUIRE_MESSAGE(in, "cannot open " << path);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  bytes result(chars.size());
  if (!chars.empty()) std::memcpy(result.data(), chars.data(), chars.size());
  return result;
}

inline void write_bytes(const fs::path& path, const bytes& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(content.data()), static_cast<std::streamsize>(content.size()));
  BOOST_REQUIRE_MESSAGE(out.good(), "cannot write " << path);
}

inline bytes text_bytes(std::string_view text) {
  bytes result(text.size());
  if (!text.empty()) std::memcpy(result.data(), text.data(), text.size());
  return result;
}

inline void append(bytes& to, const bytes& more) { to.insert(to.end(), more.begin(), more.end()); }

// Little-endian bytes spelled out one by one (independent of the host's byte order).
inline bytes le_u64(std::uint64_t value) {
  bytes result(8);
  for (int i = 0; i < 8; ++i) result[static_cast<std::size_t>(i)] = static_cast<std::byte>((value >> (8 * i)) & 0xff);
  return result;
}
inline bytes byte_list(std::initializer_list<unsigned> values) {
  bytes result;
  for (const unsigned v : values) result.push_back(static_cast<std::byte>(v));
  return result;
}

using meap_test::error_says;

}  // namespace io_test
