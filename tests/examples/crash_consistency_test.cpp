// Crash consistency of meap_pretrain, with real processes and real SIGKILLs: a run with a
// checkpoint after every step is killed again and again (at random moments, inside checkpoint
// writes, between the files of one checkpoint, while `latest` moves or old checkpoints are
// removed), resumed with --resume after each kill, and must end with a model, trainer state and
// loss.csv byte-identical to those of a run that was never interrupted.
//
//   test_pretrain_crash -- <path to meap_pretrain> <scratch directory>
#define BOOST_TEST_MODULE meap_pretrain crash consistency
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace {

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

struct arguments {
  std::string program;
  fs::path scratch;
};

arguments command_line() {
  const auto& suite = boost::unit_test::framework::master_test_suite();
  BOOST_TEST_REQUIRE(suite.argc == 3, "usage: test_pretrain_crash -- <meap_pretrain> <scratch directory>");
  return {suite.argv[1], suite.argv[2]};
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The run's options: a small model, a checkpoint after every step, a few checkpoints kept (so
// that pruning happens all the time too).
std::vector<std::string> run_options(const fs::path& out, int steps) {
  return {"--steps", std::to_string(steps), "--batch", "4", "--micro-batches", "2", "--seq-len", "16", "--warmup", "2",
          "--checkpoint-every", "1", "--keep-checkpoints", "2", "--out", out.string()};
}

// A started meap_pretrain whose stderr goes to a file.
struct child {
  pid_t pid = -1;
  fs::path log;
};

child start(const std::string& program, std::vector<std::string> options, const fs::path& log) {
  std::vector<char*> argv;
  options.insert(options.begin(), program);
  for (auto& o : options) argv.push_back(o.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 2, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  const int code = posix_spawn(&pid, program.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  BOOST_TEST_REQUIRE(code == 0, "cannot start " << program);
  return {pid, log};
}

// Exit status of a finished child; -signal when it was killed. -1000 while it still runs.
int poll_status(pid_t pid, bool wait) {
  int status = 0;
  const pid_t done = ::waitpid(pid, &status, wait ? 0 : WNOHANG);
  if (done == 0) return -1000;
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return WEXITSTATUS(status);
}

bool has_entry(const fs::path& directory, const std::string& prefix, const std::string& infix) {
  std::error_code ec;
  for (fs::directory_iterator it(directory, ec), end; !ec && it != end; it.increment(ec)) {
    const auto name = it->path().filename().string();
    if (name.rfind(prefix, 0) == 0 && name.find(infix) != std::string::npos) return true;
  }
  return false;
}

// A temporary checkpoint directory that already holds model.safetensors: the moment between the
// model and trainer files of one checkpoint (where the old layout lost the run).
bool between_files(const fs::path& checkpoints, const std::string& tmp_of_pid) {
  std::error_code ec;
  for (fs::directory_iterator it(checkpoints, ec), end; !ec && it != end; it.increment(ec)) {
    const auto name = it->path().filename().string();
    if (name.rfind(".step-", 0) == 0 && name.find(tmp_of_pid) != std::string::npos &&
        fs::exists(it->path() / "model.safetensors", ec) && !fs::exists(it->path() / "trainer.safetensors", ec))
      return true;
  }
  return false;
}

}  // namespace

BOOST_AUTO_TEST_CASE(killed_and_resumed_run_equals_uninterrupted_run) {
  const auto args = command_line();
  fs::remove_all(args.scratch);
  fs::create_directories(args.scratch);
  // One thread: the runs must be bit-identical to each other (the same thread count everywhere),
  // and OpenMP's barriers crawl when CTest runs other tests on the same cores.
  ::setenv("OMP_NUM_THREADS", "1", 1);
  constexpr int steps = 80;

  // The reference: one uninterrupted run.
  const fs::path reference = args.scratch / "reference";
  {
    const auto c = start(args.program, run_options(reference, steps), args.scratch / "reference.log");
    BOOST_TEST_REQUIRE(poll_status(c.pid, true) == 0, read_file(c.log));
  }

  // The same run, killed with SIGKILL at moments chosen by `trigger`, resumed after each kill.
  const fs::path crashed = args.scratch / "crashed";
  const fs::path checkpoints = crashed / "checkpoints";
  enum class trigger { delay, inside_write, between_files, moving_latest, pruning };
  const std::vector<trigger> schedule = {
      trigger::delay,         trigger::inside_write, trigger::between_files, trigger::delay,        trigger::moving_latest,
      trigger::inside_write,  trigger::pruning,      trigger::between_files, trigger::delay,        trigger::inside_write,
      trigger::between_files, trigger::moving_latest, trigger::delay,        trigger::inside_write, trigger::pruning,
      trigger::between_files, trigger::delay,        trigger::inside_write, trigger::between_files, trigger::moving_latest,
      trigger::delay,         trigger::inside_write, trigger::pruning,      trigger::between_files};
  std::map<std::string, int> kills;  // what the leftovers show each kill interrupted
  int runs = 0;
  for (std::size_t attempt = 0;; ++attempt) {
    BOOST_TEST_REQUIRE(runs < 200, "no end after 200 runs");
    auto options = run_options(crashed, steps);
    const bool resume = fs::exists(checkpoints) && has_entry(checkpoints, "step-", "");
    if (resume) options.push_back("--resume");
    const auto log = args.scratch / ("run-" + std::to_string(runs) + ".log");
    const auto c = start(args.program, options, log);
    ++runs;
    if (attempt >= schedule.size()) {  // the kills are done: let it finish
      const int status = poll_status(c.pid, true);
      BOOST_TEST_REQUIRE(status == 0, "the last run failed (" << status << "): " << read_file(log));
      break;
    }
    const auto kind = schedule[attempt];
    // The names this run's writer uses carry its pid (a killed run's debris, removed when the next
    // run opens the series, carries another).
    const std::string tmp_of_pid = ".tmp." + std::to_string(c.pid);
    const std::string deleting_of_pid = ".deleting." + std::to_string(c.pid);
    // Delays in [0, 143] ms in steps of 13 ms after the start. Polling triggers fall back to a kill
    // 60 to 88 ms after this run's first checkpoint write appeared (or after 60 s): moving `latest`
    // and pruning take microseconds and a poll may miss them; a kill then is as good as a random
    // one. Counting from the first write, not the start, keeps slow starts (sanitizers, a loaded
    // machine) from turning every kill into a kill before the first checkpoint.
    const auto delay = std::chrono::milliseconds(13 * static_cast<int>(attempt % 12));
    const auto fallback = std::chrono::milliseconds(60 + 7 * static_cast<int>(attempt % 5));
    const auto begin = clock_type::now();
    std::optional<clock_type::time_point> first_write;
    int status = -1000;
    bool fired = false;
    while (!fired && (status = poll_status(c.pid, false)) == -1000) {
      const auto now = clock_type::now();
      const bool writing = has_entry(checkpoints, ".step-", tmp_of_pid);
      if (writing && !first_write) first_write = now;
      switch (kind) {
        case trigger::delay: fired = now - begin >= delay; break;
        case trigger::inside_write: fired = writing; break;
        case trigger::between_files: fired = between_files(checkpoints, tmp_of_pid); break;
        case trigger::moving_latest: fired = has_entry(checkpoints, ".latest", tmp_of_pid); break;
        case trigger::pruning: fired = has_entry(checkpoints, ".step-", deleting_of_pid); break;
      }
      if (!fired && ((first_write && now - *first_write > fallback) || now - begin > std::chrono::seconds(60)))
        fired = true;
      if (!fired) std::this_thread::yield();
    }
    if (fired) {
      ::kill(c.pid, SIGKILL);
      status = poll_status(c.pid, true);
    }
    if (status == 0) break;  // the run reached its end before the trigger
    BOOST_TEST_REQUIRE(status == -SIGKILL, "run " << runs << " failed by itself (" << status << "): " << read_file(log));
    // Classify by what the kill left behind.
    std::string where = "between checkpoints";
    if (has_entry(checkpoints, ".step-", tmp_of_pid)) where = "inside a checkpoint write";
    else if (has_entry(checkpoints, ".latest", tmp_of_pid)) where = "while moving latest";
    else if (has_entry(checkpoints, ".step-", deleting_of_pid)) where = "while removing an old checkpoint";
    ++kills[where];
  }

  std::ostringstream summary;
  int total = 0;
  for (const auto& [where, count] : kills) {
    summary << where << ": " << count << "; ";
    total += count;
  }
  BOOST_TEST_MESSAGE("runs: " << runs << ", kills: " << total << " (" << summary.str() << ")");
  BOOST_TEST(total >= 16, "only " << total << " kills landed: " << summary.str());
  BOOST_TEST(kills["inside a checkpoint write"] >= 3, "too few kills inside checkpoint writes: " << summary.str());

  // The end state equals the uninterrupted run's, byte for byte.
  char name[32];
  std::snprintf(name, sizeof name, "step-%08d", steps);
  for (const char* file : {"model.safetensors", "trainer.safetensors", "config.json"}) {
    const auto a = read_file(reference / "checkpoints" / name / file);
    const auto b = read_file(checkpoints / name / file);
    BOOST_TEST(!a.empty());
    BOOST_TEST((a == b), file << " differs from the uninterrupted run's");
  }
  const auto reference_csv = read_file(reference / "loss.csv");
  const auto crashed_csv = read_file(crashed / "loss.csv");
  BOOST_TEST((reference_csv == crashed_csv), "loss.csv differs:\n--- uninterrupted\n"
                                                 << reference_csv << "--- killed and resumed\n" << crashed_csv);
  // No debris: only the kept checkpoints, `latest` and the lock remain.
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(checkpoints)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  std::string listing;
  for (const auto& n : names) listing += n + " ";
  char expected[96];
  std::snprintf(expected, sizeof expected, ".lock latest step-%08d step-%08d ", steps - 1, steps);
  BOOST_TEST(listing == expected);
}
