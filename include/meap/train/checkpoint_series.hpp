// meap/train/checkpoint_series.hpp: the checkpoints of a run as a series of directories, each
// committed as one unit, so that a kill at any moment (inside a checkpoint write included) costs
// at most the steps since the last complete checkpoint.
//
//   run/checkpoints/
//     step-00000150/      a complete checkpoint (whatever the caller writes: for the trainer,
//                         config.json + model.safetensors + trainer.safetensors)
//     step-00000200/
//     latest -> step-00000200   a symbolic link, replaced atomically after each commit
//     .lock               held (flock) by the process that writes the series
//
//   meap::train::checkpoint_series series("run/checkpoints", 3);   // keep the 3 newest
//   series.commit(step, [&](const std::filesystem::path& dir) { /* write files into dir */ });
//   if (auto newest = series.newest()) resume_from(newest->path);
//
// A commit writes into a temporary directory ".step-00000200.tmp.<pid>", flushes every file and
// the directory to disk, renames it to "step-00000200" (atomic: the name only ever holds a
// complete checkpoint), flushes the parent, then points `latest` at it and removes the oldest
// checkpoints beyond `keep_last` (each first renamed to a ".deleting" name, so a kill during the
// removal never leaves a partial "step-" directory). The newest "step-" directory is the one to
// resume from; `latest` names it for people and tools (a kill between the rename and the link
// update leaves `latest` one checkpoint behind, which newest() does not trust). Opening a series
// removes the temporaries a killed process left behind. POSIX only.
#pragma once

#include <meap/core/error.hpp>
#include <meap/io/atomic_file.hpp>
#include <meap/io/json_fields.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace meap::train {

struct checkpoint_entry {
  std::uint64_t step = 0;
  std::filesystem::path path;
};

class checkpoint_series {
 public:
  static constexpr std::string_view latest_link = "latest";

  // Opens (creating it if needed) the series in `root`, takes its lock and removes what killed
  // writers left behind. Throws meap::error when `root` cannot be created or written, or when
  // another process holds the lock (two runs writing one series would destroy each other's
  // checkpoints).
  explicit checkpoint_series(std::filesystem::path root, std::size_t keep_last = 3)
      : root_(std::move(root)), keep_last_(keep_last) {
    constexpr std::string_view function = "meap::train::checkpoint_series";
    check_argument(keep_last_ >= 1, function, "keep_last", keep_last_, "at least 1 checkpoint to keep");
    check_argument(!root_.empty(), function, "root", "\"\"", "a directory path");
    std::error_code ec;
    std::filesystem::create_directories(root_, ec);
    if (ec || !std::filesystem::is_directory(root_, ec))
      throw_argument_error(function, "root", root_.string(),
                           "a directory that exists or can be created" + (ec ? " (" + ec.message() + ")" : std::string()));
    const auto lock_path = root_ / ".lock";
    lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0666);
    if (lock_fd_ < 0)
      throw_argument_error(function, "root", root_.string(),
                           "a writable directory (cannot create '" + lock_path.string() + "': " +
                               std::generic_category().message(errno) + ")");
    if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
      const int code = errno;
      ::close(std::exchange(lock_fd_, -1));
      throw_argument_error(function, "root", root_.string(),
                           code == EWOULDBLOCK ? "a checkpoint directory no other process is writing (another run "
                                                 "holds its lock '" + lock_path.string() + "')"
                                               : "a directory that can be locked (" +
                                                     std::generic_category().message(code) + ")");
    }
    orphans_removed_ = remove_orphans();
  }

  checkpoint_series(const checkpoint_series&) = delete;
  checkpoint_series& operator=(const checkpoint_series&) = delete;
  checkpoint_series(checkpoint_series&& other) noexcept
      : root_(std::move(other.root_)), keep_last_(other.keep_last_), lock_fd_(std::exchange(other.lock_fd_, -1)),
        orphans_removed_(other.orphans_removed_) {}
  checkpoint_series& operator=(checkpoint_series&&) = delete;
  ~checkpoint_series() {
    if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the lock
  }

  const std::filesystem::path& root() const noexcept { return root_; }
  std::size_t keep_last() const noexcept { return keep_last_; }
  // Temporaries of killed writers that opening the series removed.
  std::size_t orphans_removed() const noexcept { return orphans_removed_; }

  // "step-00000150": at least 8 digits, so that names sort like steps.
  static std::string directory_name(std::uint64_t step) {
    char digits[32];
    std::snprintf(digits, sizeof digits, "%08llu", static_cast<unsigned long long>(step));
    return std::string("step-") + digits;
  }

  // The step a directory name stands for ("step-" and digits only), or nullopt.
  static std::optional<std::uint64_t> step_of(std::string_view name) {
    if (name.substr(0, 5) != "step-") return std::nullopt;
    return parse_decimal_u64(name.substr(5));
  }

  // The complete checkpoints, oldest first.
  std::vector<checkpoint_entry> list() const {
    std::vector<checkpoint_entry> found;
    std::error_code ec;
    for (std::filesystem::directory_iterator it(root_, ec), end; !ec && it != end; it.increment(ec)) {
      const auto name = it->path().filename().string();
      const auto step = step_of(name);
      std::error_code type_ec;
      if (step && it->is_directory(type_ec) && !it->is_symlink(type_ec)) found.push_back({*step, it->path()});
    }
    if (ec) throw_argument_error("meap::train::checkpoint_series::list", "root", root_.string(),
                                 "a readable directory (" + ec.message() + ")");
    std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
    return found;
  }

  // The newest complete checkpoint, if any.
  std::optional<checkpoint_entry> newest() const {
    auto all = list();
    if (all.empty()) return std::nullopt;
    return all.back();
  }

  // Writes checkpoint `step`: `write` fills a fresh, empty directory, which then becomes
  // step-<step> as one unit (see the top of this file). A step that already has a complete
  // checkpoint is not written again (a run's state at a step is the same however often it is
  // saved there); the existing one is returned. If `write` throws, the temporary is removed and
  // nothing else changes.
  checkpoint_entry commit(std::uint64_t step, const std::function<void(const std::filesystem::path&)>& write) {
    constexpr std::string_view function = "meap::train::checkpoint_series::commit";
    const std::string name = directory_name(step);
    const auto final_path = root_ / name;
    std::error_code ec;
    if (std::filesystem::is_directory(final_path, ec)) return {step, final_path};
    const auto temporary = root_ / ("." + name + ".tmp." + std::to_string(::getpid()));
    std::filesystem::remove_all(temporary, ec);
    if (!std::filesystem::create_directory(temporary, ec) || ec)
      meap::detail::throw_file_error(function, temporary, "cannot create the temporary checkpoint directory",
                               ec ? ec.value() : EEXIST);
    try {
      write(temporary);
      sync_tree(function, temporary);
      if (::rename(temporary.c_str(), final_path.c_str()) != 0)
        meap::detail::throw_file_error(function, final_path, "cannot rename the temporary checkpoint directory to it", errno);
    } catch (...) {
      std::filesystem::remove_all(temporary, ec);
      throw;
    }
    sync_directory(function, root_);
    point_latest_at(name);
    prune();
    return {step, final_path};
  }

 private:
  // fsync of every regular file under `directory` and of every directory (the files written by
  // atomic_file are already on disk; this also covers files the caller wrote some other way).
  static void sync_tree(std::string_view function, const std::filesystem::path& directory) {
    std::error_code ec;
    for (std::filesystem::recursive_directory_iterator it(directory, ec), end; !ec && it != end; it.increment(ec)) {
      std::error_code type_ec;
      if (it->is_symlink(type_ec)) continue;
      if (it->is_directory(type_ec)) sync_directory(function, it->path());
      else if (it->is_regular_file(type_ec)) sync_file(function, it->path());
    }
    if (ec) meap::detail::throw_file_error(function, directory, "cannot list the checkpoint directory", ec.value());
    sync_directory(function, directory);
  }

  static void sync_file(std::string_view function, const std::filesystem::path& file) {
    meap::detail::sync_to_disk(function, file, false, "checkpoint file");
  }

  static void sync_directory(std::string_view function, const std::filesystem::path& directory) {
    meap::detail::sync_to_disk(function, directory, true, "directory");
  }

  // `latest` -> name, replaced atomically (a new link under a temporary name, renamed over it).
  void point_latest_at(const std::string& name) const {
    constexpr std::string_view function = "meap::train::checkpoint_series::commit";
    const auto link = root_ / std::string(latest_link);
    const auto temporary = root_ / (".latest.tmp." + std::to_string(::getpid()));
    ::unlink(temporary.c_str());
    if (::symlink(name.c_str(), temporary.c_str()) != 0)
      meap::detail::throw_file_error(function, temporary, "cannot create the link to the newest checkpoint", errno);
    if (::rename(temporary.c_str(), link.c_str()) != 0) {
      const int code = errno;
      ::unlink(temporary.c_str());
      meap::detail::throw_file_error(function, link, "cannot replace the link to the newest checkpoint", code);
    }
    sync_directory(function, root_);
  }

  // Removes the oldest checkpoints beyond keep_last_.
  void prune() const {
    const auto all = list();
    if (all.size() <= keep_last_) return;
    for (std::size_t i = 0; i + keep_last_ < all.size(); ++i) {
      const auto doomed = root_ / ("." + all[i].path.filename().string() + ".deleting." + std::to_string(::getpid()));
      if (::rename(all[i].path.c_str(), doomed.c_str()) != 0) continue;  // left for the next prune
      std::error_code ec;
      std::filesystem::remove_all(doomed, ec);
    }
  }

  // Names a writer of this series (or atomic_file inside it) uses only while it runs:
  // ".step-*.tmp.*", ".step-*.deleting.*", ".latest.tmp.*", and atomic_file's ".<name>.tmp.*".
  // We hold the lock, so none of them belongs to a live writer.
  std::size_t remove_orphans() const {
    std::size_t removed = 0;
    std::error_code ec;
    std::vector<std::filesystem::path> doomed;
    for (std::filesystem::directory_iterator it(root_, ec), end; !ec && it != end; it.increment(ec)) {
      const auto name = it->path().filename().string();
      if (name.size() > 1 && name[0] == '.' && (name.find(".tmp.") != std::string::npos ||
                                                  name.find(".deleting.") != std::string::npos))
        doomed.push_back(it->path());
    }
    for (const auto& path : doomed) {
      std::error_code remove_ec;
      if (std::filesystem::remove_all(path, remove_ec) > 0 && !remove_ec) ++removed;
    }
    return removed;
  }

  std::filesystem::path root_;
  std::size_t keep_last_;
  int lock_fd_ = -1;
  std::size_t orphans_removed_ = 0;
};

}  // namespace meap::train
