// tests/fuzz/replay_main.cpp: runs a fuzz target's LLVMFuzzerTestOneInput over every file of the
// directories named on the command line (the corpus and the regression inputs), without libFuzzer,
// so that any compiler's build replays them as a CTest test.
//
//   fuzz_replay_<target> <directory>...
//
// Files are replayed in name order; names starting with '.' are skipped (.gitkeep). Each name is
// printed before its run, so a crash (a signal, a sanitizer report) follows the name of the file
// that caused it. Exits 1 when an exception escapes the target (it swallows meap::error itself,
// so anything escaping is a bug), a directory is missing or holds no input at all.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <typeinfo>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

namespace fs = std::filesystem;

bool read_file(const fs::path& path, std::vector<std::uint8_t>& bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return !in.bad();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <directory>...\n", argv[0]);
    return 2;
  }
  std::vector<fs::path> files;
  for (int i = 1; i < argc; ++i) {
    const fs::path directory = argv[i];
    std::error_code code;
    if (!fs::is_directory(directory, code)) {
      std::fprintf(stderr, "fuzz replay: '%s' is not a directory\n", argv[i]);
      return 1;
    }
    for (const auto& entry : fs::directory_iterator(directory)) {
      const std::string name = entry.path().filename().string();
      if (!name.empty() && name[0] != '.' && entry.is_regular_file()) files.push_back(entry.path());
    }
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    std::fprintf(stderr, "fuzz replay: no input files in the directories given\n");
    return 1;
  }

  std::vector<std::uint8_t> bytes;
  for (const auto& path : files) {
    if (!read_file(path, bytes)) {
      std::fprintf(stderr, "fuzz replay: cannot read '%s'\n", path.c_str());
      return 1;
    }
    std::fprintf(stderr, "replay %s (%zu bytes)\n", path.c_str(), bytes.size());
    try {
      // An empty vector's data() may be null; libFuzzer never passes null, so neither do we.
      static const std::uint8_t nothing = 0;
      LLVMFuzzerTestOneInput(bytes.empty() ? &nothing : bytes.data(), bytes.size());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "fuzz replay: FAILED on '%s': exception %s escaped: %s\n", path.c_str(), typeid(e).name(),
                   e.what());
      return 1;
    } catch (...) {
      std::fprintf(stderr, "fuzz replay: FAILED on '%s': a non-std exception escaped\n", path.c_str());
      return 1;
    }
  }
  std::fprintf(stderr, "fuzz replay: %zu inputs, no failure\n", files.size());
  return 0;
}
