// meap/io/step_log.hpp: a per-step CSV (a loss curve) that stays consistent with the run's
// checkpoints across kills and resumes.
//
//   auto log = resume ? meap::step_log::resume("run/loss.csv", header, trainer.next_step())
//                     : meap::step_log::create("run/loss.csv", header);
//   log.append(step, "2.31,0.001,...");   // buffered
//   log.sync();                            // before each checkpoint: every row so far is on disk
//
// Rows start with their step. create() replaces the file by one holding just the header;
// resume(next_step) keeps the header and the rows of steps before next_step, in order, and drops
// the rest (rows written after the checkpoint being resumed, a torn last line), so that after any
// number of kills and resumes the file equals the one an uninterrupted run writes. Both rewrite the
// file atomically (never writing through a symbolic link at that name) and then append to it
// opened with O_NOFOLLOW; temporaries of killed writers at the name are removed. Calling sync() before each checkpoint is what makes every row of a
// checkpointed step survive a kill. POSIX only.
#pragma once

#include <meap/core/error.hpp>
#include <meap/io/atomic_file.hpp>
#include <meap/io/json_fields.hpp>

#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>

#include <fcntl.h>
#include <unistd.h>

namespace meap {

class step_log {
 public:
  // A new log at `path` holding `header` (one line, without the newline). Throws meap::error when
  // the file cannot be written: before a run's first step, not at its end.
  static step_log create(const std::filesystem::path& path, std::string header) {
    check_header("meap::step_log::create", header);
    (void)remove_stale_temporaries(path);
    write_file_atomically(path, as_bytes(header + "\n"));
    return step_log(path, std::move(header), 0);
  }

  // The log of a run resuming at `next_step` (see the top of this file). Throws meap::error when
  // the file exists but is not a log with this header (another program's file, or an older
  // format). A missing file starts a new log; missing_rows() then says how many rows are lost.
  static step_log resume(const std::filesystem::path& path, std::string header, std::uint64_t next_step) {
    constexpr std::string_view function = "meap::step_log::resume";
    check_header(function, header);
    (void)remove_stale_temporaries(path);
    std::error_code ec;
    std::string kept = header + "\n";
    std::uint64_t rows = 0;
    if (std::filesystem::exists(std::filesystem::symlink_status(path, ec))) {
      const std::string text = detail::read_small_file(function, path, std::uint64_t{1} << 32, "step log");
      const std::size_t header_end = text.find('\n');
      if (header_end == std::string::npos || std::string_view(text).substr(0, header_end) != header)
        detail::throw_file_error(function, path,
                                 "does not start with the header line '" + header +
                                     "' (a file of another program or version; move it away to start a new log)");
      std::uint64_t expected = 0;
      for (std::size_t at = header_end + 1; at < text.size();) {
        const std::size_t end = text.find('\n', at);
        if (end == std::string::npos) break;  // a torn last line: written after the checkpoint
        const std::string_view line(text.data() + at, end - at);
        const auto step = parse_decimal_u64(line.substr(0, line.find(',')));
        at = end + 1;
        if (!step || *step >= next_step) continue;
        if (*step != expected) continue;  // a repeated or out-of-order row (an older meap's log)
        kept.append(line).push_back('\n');
        ++expected;
        ++rows;
      }
    }
    write_file_atomically(path, as_bytes(kept));
    step_log log(path, std::move(header), rows);
    log.missing_rows_ = next_step - rows;
    return log;
  }

  step_log(const step_log&) = delete;
  step_log& operator=(const step_log&) = delete;
  step_log(step_log&& other) noexcept
      : path_(std::move(other.path_)), header_(std::move(other.header_)), fd_(std::exchange(other.fd_, -1)),
        pending_(std::move(other.pending_)), rows_(other.rows_), missing_rows_(other.missing_rows_) {}
  step_log& operator=(step_log&&) = delete;
  // Writes what is buffered (best effort: a destructor cannot report failure; call sync()).
  ~step_log() {
    if (fd_ < 0) return;
    int code = 0;
    (void)detail::write_all(fd_, pending_.data(), pending_.size(), code);
    detail::close_descriptor(fd_);
  }

  // Appends "<step>,<fields>\n" (buffered; written by sync() or once 64 KiB are pending).
  void append(std::uint64_t step, std::string_view fields) {
    pending_.append(std::to_string(step)).push_back(',');
    pending_.append(fields).push_back('\n');
    ++rows_;
    if (pending_.size() >= (std::size_t{1} << 16)) write_pending("meap::step_log::append");
  }

  // Writes every pending row and flushes the file to disk.
  void sync() {
    constexpr std::string_view function = "meap::step_log::sync";
    write_pending(function);
    if (::fsync(fd_) != 0 && errno != EINVAL) detail::throw_file_error(function, path_, "cannot flush the log", errno);
  }

  const std::filesystem::path& path() const noexcept { return path_; }
  const std::string& header() const noexcept { return header_; }
  std::uint64_t rows() const noexcept { return rows_; }
  // After resume(): steps before the resumed one that have no row (a log that was deleted or
  // truncated by hand); 0 when the log is complete.
  std::uint64_t missing_rows() const noexcept { return missing_rows_; }

 private:
  step_log(std::filesystem::path path, std::string header, std::uint64_t rows)
      : path_(std::move(path)), header_(std::move(header)), rows_(rows) {
    // The name was just replaced by our own file; O_NOFOLLOW refuses a link swapped in since.
    fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
    if (fd_ < 0) detail::throw_file_error("meap::step_log", path_, "cannot open the log for appending", errno);
  }

  static void check_header(std::string_view function, const std::string& header) {
    check_argument(!header.empty() && header.find('\n') == std::string::npos, function, "header", header,
                   "one non-empty line");
  }

  static std::span<const std::byte> as_bytes(const std::string& text) {
    return {reinterpret_cast<const std::byte*>(text.data()), text.size()};
  }

  void write_pending(std::string_view function) {
    int code = 0;
    if (!detail::write_all(fd_, pending_.data(), pending_.size(), code))
      detail::throw_file_error(function, path_, "cannot write the log", code);
    pending_.clear();
  }

  std::filesystem::path path_;
  std::string header_;
  int fd_ = -1;
  std::string pending_;
  std::uint64_t rows_ = 0;
  std::uint64_t missing_rows_ = 0;
};

}  // namespace meap
