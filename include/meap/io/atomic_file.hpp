// meap/io/atomic_file.hpp: write a file so that its final name only ever holds a complete file.
//
//   meap::atomic_file out("run/checkpoint.safetensors");
//   out.write(header.data(), header.size());
//   out.write(tensor_bytes, n);
//   out.commit();  // fsync, rename over the final name, fsync the directory
//
// The bytes go to a temporary file in the same directory (".<name>.tmp.<pid>.<n>"); commit()
// flushes it to disk, renames it over the final name (atomic on POSIX file systems: a reader sees
// the old file or the new one, never a mix), and flushes the directory so that the rename itself
// survives a power loss. If anything fails, or the atomic_file is destroyed without commit() (an
// exception unwinding), the temporary is removed and the final name keeps its old content. Only a
// crash of the process itself can leave a temporary behind, never a half-written final file.
// POSIX only (Linux, macOS).
#pragma once

#include <meap/core/error.hpp>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include <cstdlib>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#pragma push_macro("MEAP_DETAIL_ALLOWED")
#define MEAP_DETAIL_ALLOWED 1
#include <meap/io/detail/posix_file.hpp>
#pragma pop_macro("MEAP_DETAIL_ALLOWED")

namespace meap {

class atomic_file {
 public:
  // Creates the temporary next to `path`. Throws meap::error when the directory does not exist
  // or is not writable.
  explicit atomic_file(std::filesystem::path path) : path_(std::move(path)) {
    constexpr std::string_view function = "meap::atomic_file";
    if (path_.empty() || !path_.has_filename())
      detail::throw_file_error(function, path_, "expected a path that names a file");
    const std::filesystem::path directory = path_.has_parent_path() ? path_.parent_path() : ".";
    static std::atomic<std::uint64_t> counter{0};
    // O_EXCL makes the name ours; a collision (a temporary left by a crashed process with a
    // recycled pid) just moves on to the next counter value.
    for (int attempt = 0; attempt < 100; ++attempt) {
      std::string name(".");
      name.append(path_.filename().string()).append(".tmp.").append(std::to_string(::getpid())).append(".");
      name.append(std::to_string(counter.fetch_add(1)));
      temporary_ = directory / name;
      fd_ = ::open(temporary_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      if (fd_ >= 0) return;
      if (errno != EEXIST) break;
    }
    const int code = errno;
    temporary_.clear();
    detail::throw_file_error(function, path_, "cannot create a temporary file in directory '" + directory.string() + "'",
                             code);
  }

  atomic_file(const atomic_file&) = delete;
  atomic_file& operator=(const atomic_file&) = delete;

  // Without commit(): closes and removes the temporary; the final name is untouched.
  ~atomic_file() { abandon(); }

  // Appends `bytes` bytes. Throws meap::error (and removes the temporary) on failure.
  void write(const void* data, std::size_t bytes) {
    check_open("meap::atomic_file::write");
    int code = 0;
    if (!detail::write_all(fd_, data, bytes, code))
      fail("meap::atomic_file::write", "cannot write the temporary file '" + temporary_.string() + "'", code);
  }
  void write(std::span<const std::byte> bytes) { write(bytes.data(), bytes.size()); }

  // Makes the written bytes the content of path(): fsync, close, rename, fsync of the directory.
  void commit() {
    constexpr std::string_view function = "meap::atomic_file::commit";
    check_open(function);
    if (::fsync(fd_) != 0) fail(function, "cannot flush the temporary file '" + temporary_.string() + "'", errno);
    const int fd = std::exchange(fd_, -1);
    if (detail::close_descriptor(fd) != 0)
      fail(function, "cannot close the temporary file '" + temporary_.string() + "'", errno);
    if (::rename(temporary_.c_str(), path_.c_str()) != 0)
      fail(function, "cannot rename the temporary file '" + temporary_.string() + "' over it", errno);
    temporary_.clear();
    committed_ = true;
    sync_directory(function);
  }

  const std::filesystem::path& path() const noexcept { return path_; }
  // Empty once committed or abandoned.
  const std::filesystem::path& temporary_path() const noexcept { return temporary_; }
  bool committed() const noexcept { return committed_; }

 private:
  void check_open(std::string_view function) const {
    if (fd_ < 0)
      detail::throw_file_error(function, path_,
                               committed_ ? "the file was already committed" : "an earlier write failed");
  }

  // Removes the temporary, then throws.
  [[noreturn]] void fail(std::string_view function, const std::string& what, int code) {
    abandon();
    detail::throw_file_error(function, path_, what, code);
  }

  void abandon() noexcept {
    if (fd_ >= 0) detail::close_descriptor(std::exchange(fd_, -1));
    if (!temporary_.empty()) {
      ::unlink(temporary_.c_str());
      temporary_.clear();
    }
  }

  // Without this a power loss right after rename() can bring back the old directory entry.
  void sync_directory(std::string_view function) const {
    const std::filesystem::path directory = path_.has_parent_path() ? path_.parent_path() : ".";
    detail::sync_to_disk(function, directory, true, "directory of the renamed file");
  }

  std::filesystem::path path_;
  std::filesystem::path temporary_;
  int fd_ = -1;
  bool committed_ = false;
};

// Removes the temporaries that killed processes left next to `path` (".<name>.tmp.<pid>.<n>" whose
// <pid> is no longer a running process; a live writer's are kept). Returns how many it removed.
// Never throws: stale temporaries cost disk space, not correctness.
inline std::size_t remove_stale_temporaries(const std::filesystem::path& path) noexcept {
  std::size_t removed = 0;
  try {
    const std::filesystem::path directory = path.has_parent_path() ? path.parent_path() : ".";
    const std::string prefix = "." + path.filename().string() + ".tmp.";
    std::error_code ec;
    for (std::filesystem::directory_iterator it(directory, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
      const std::string rest = name.substr(prefix.size());  // "<pid>.<n>"
      const std::size_t dot = rest.find('.');
      if (dot == 0 || dot == std::string::npos || rest.find_first_not_of("0123456789.") != std::string::npos) continue;
      const long pid = std::strtol(rest.substr(0, dot).c_str(), nullptr, 10);
      if (pid <= 0 || pid == ::getpid() || ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
      std::error_code remove_ec;
      if (std::filesystem::remove(it->path(), remove_ec) && !remove_ec) ++removed;
    }
  } catch (...) {
  }
  return removed;
}

// Writes `bytes` to `path` atomically (see atomic_file).
inline void write_file_atomically(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  atomic_file out(path);
  out.write(bytes);
  out.commit();
}

}  // namespace meap
