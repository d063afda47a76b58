// meap/io/detail/posix_file.hpp: the POSIX file plumbing of the io headers, and the error they
// throw for a file. Internal.
#pragma once
#ifndef MEAP_DETAIL_ALLOWED
#error "meap/io/detail/* headers are internal: include <meap/meap.hpp> or <meap/io/safetensors.hpp> instead"
#endif

#include <meap/core/error.hpp>

#include <cerrno>
#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace meap::detail {

// "meap::f: '<path>': <what>: <strerror(code)>" as a meap::error whose argument is "path".
[[noreturn]] inline void throw_file_error(std::string_view function, const std::filesystem::path& path,
                                          std::string_view what, int code = 0) {
  std::string message = std::string(function) + ": '" + path.string() + "': " + std::string(what);
  if (code != 0) message += ": " + std::generic_category().message(code);
  throw error(std::string(function), "path", message);
}

// close(2) that reports EINTR as success: on Linux the descriptor is released either way, and
// retrying could close a descriptor another thread just opened.
inline int close_descriptor(int fd) noexcept {
  const int result = ::close(fd);
  return (result != 0 && errno == EINTR) ? 0 : result;
}

// Closes a descriptor when the scope ends (error paths included).
struct descriptor_guard {
  int fd = -1;
  explicit descriptor_guard(int descriptor) noexcept : fd(descriptor) {}
  descriptor_guard(const descriptor_guard&) = delete;
  descriptor_guard& operator=(const descriptor_guard&) = delete;
  ~descriptor_guard() {
    if (fd >= 0) close_descriptor(fd);
  }
};

// Linux moves at most 0x7ffff000 bytes per read/write call; 1 GiB requests keep every call whole.
inline constexpr std::size_t io_chunk_bytes = std::size_t{1} << 30;

// Reads exactly `bytes` bytes at the current position of `fd`. False on failure, with `code` =
// errno, or on a file that ends first, with `code` = 0.
inline bool read_exactly(int fd, void* data, std::size_t bytes, int& code) {
  auto* p = static_cast<unsigned char*>(data);
  while (bytes > 0) {
    const ::ssize_t got = ::read(fd, p, bytes < io_chunk_bytes ? bytes : io_chunk_bytes);
    if (got < 0) {
      if (errno == EINTR) continue;
      code = errno;
      return false;
    }
    if (got == 0) {
      code = 0;
      return false;
    }
    p += got;
    bytes -= static_cast<std::size_t>(got);
  }
  return true;
}

// Writes all `bytes` bytes to `fd`; false with `code` = errno on failure.
inline bool write_all(int fd, const void* data, std::size_t bytes, int& code) {
  const auto* p = static_cast<const unsigned char*>(data);
  while (bytes > 0) {
    const ::ssize_t written = ::write(fd, p, bytes < io_chunk_bytes ? bytes : io_chunk_bytes);
    if (written < 0) {
      if (errno == EINTR) continue;
      code = errno;
      return false;
    }
    p += written;
    bytes -= static_cast<std::size_t>(written);
  }
  return true;
}

}  // namespace meap::detail
