// meap/io/detail/posix_file.hpp: the POSIX file plumbing of the io headers, and the error they
// throw for a file. Internal.
#pragma once
#ifndef MEAP_DETAIL_ALLOWED
#error "meap/io/detail/* headers are internal: include <meap/meap.hpp> or <meap/io/safetensors.hpp> instead"
#endif

#include <meap/core/error.hpp>

#include <cerrno>
#include <cstddef>
#include <cstdint>
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

// fsync(2) of a file or a directory (`what` names it in the message): what makes a write or a
// rename survive a power loss. File systems that cannot sync a directory (EINVAL) have nothing
// to sync.
inline void sync_to_disk(std::string_view function, const std::filesystem::path& path, bool directory,
                         std::string_view what) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | (directory ? O_DIRECTORY : O_NOFOLLOW));
  if (fd < 0) throw_file_error(function, path, "cannot open the " + std::string(what) + " to flush it", errno);
  const int result = ::fsync(fd);
  const int code = errno;
  close_descriptor(fd);
  if (result != 0 && code != EINVAL) throw_file_error(function, path, "cannot flush the " + std::string(what), code);
}

// Opens `path` for reading and checks that it is a regular file, without ever blocking: a FIFO
// or a device would block open(2) itself, so it is opened non-blocking, checked with fstat, and
// the flag cleared for the reads. Returns the descriptor (the caller closes it) and the size.
struct regular_file {
  int fd = -1;
  std::uint64_t bytes = 0;
};
inline regular_file open_regular_file(std::string_view function, const std::filesystem::path& path,
                                      std::string_view what = "file") {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw_file_error(function, path, "cannot open the " + std::string(what), errno);
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    const int code = errno;
    close_descriptor(fd);
    throw_file_error(function, path, "cannot stat the " + std::string(what), code);
  }
  if (!S_ISREG(info.st_mode)) {
    close_descriptor(fd);
    throw_file_error(function, path, "is not a regular file (a directory, FIFO, socket or device)");
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    const int code = errno;
    close_descriptor(fd);
    throw_file_error(function, path, "cannot configure the descriptor of the " + std::string(what), code);
  }
  return {fd, static_cast<std::uint64_t>(info.st_size)};
}

// The whole content of a small regular file (a config, a CSV), refusing files above `limit`
// bytes (a wrong path to a dataset, say) and files that change size while being read.
inline std::string read_small_file(std::string_view function, const std::filesystem::path& path, std::uint64_t limit,
                                   std::string_view what = "file") {
  const auto file = open_regular_file(function, path, what);
  const descriptor_guard guard{file.fd};
  if (file.bytes > limit)
    throw_file_error(function, path, "is " + std::to_string(file.bytes) + " bytes, more than the " +
                                         std::to_string(limit) + " bytes a " + std::string(what) + " may have");
  std::string text(static_cast<std::size_t>(file.bytes), '\0');
  int code = 0;
  if (!read_exactly(file.fd, text.data(), text.size(), code))
    throw_file_error(function, path, code ? "cannot read the " + std::string(what) : "shrank while being read", code);
  char extra = 0;
  if (::read(file.fd, &extra, 1) > 0) throw_file_error(function, path, "grew while being read");
  return text;
}

}  // namespace meap::detail
