// Fuzz target: meap::token_dataset. Input byte 0 picks the window length T = (b0 & 63) + 1 and the
// token width (b0 & 64: u32, else u16); byte 1 the batch size B = (b1 & 3) + 1 and the vocabulary
// check (b1 >> 2: below 16 none, 62 an invalid size, 63 the largest valid one, 2^31, else a small
// size); the remaining bytes are the token file. After a successful open the target reads the
// largest token, single tokens, random and sequential (B, T + 1) batches, and checks that every
// batch row is the window of the file that the documented rule names.
#include <meap/core/device.hpp>
#include <meap/core/tensor.hpp>
#include <meap/io/token_dataset.hpp>

#include "fuzz_support.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>

#include <sys/mman.h>
#include <unistd.h>

namespace {

using meap_fuzz::check;
using meap_fuzz::expect_meap_error;

// One file, rewritten for every input: a memfd (or, where there is none, an unlinked temporary
// file), opened by the dataset through /proc/self/fd/<n>.
class scratch_file {
 public:
  scratch_file() {
    fd_ = ::memfd_create("meap_token_dataset_fuzz", MFD_CLOEXEC);
    if (fd_ < 0) {
      char name[] = "/tmp/meap_token_dataset_fuzz.XXXXXX";
      fd_ = ::mkstemp(name);
      if (fd_ >= 0) ::unlink(name);
    }
    if (fd_ < 0) {
      std::perror("meap fuzz: cannot create the scratch token file");
      std::abort();
    }
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  scratch_file(const scratch_file&) = delete;
  scratch_file& operator=(const scratch_file&) = delete;
  ~scratch_file() { ::close(fd_); }

  void write(const std::uint8_t* data, std::size_t size) const {
    bool ok = ::ftruncate(fd_, 0) == 0;
    std::size_t done = 0;
    while (ok && done < size) {
      const ::ssize_t n = ::pwrite(fd_, data + done, size - done, static_cast<off_t>(done));
      ok = n > 0;
      if (ok) done += static_cast<std::size_t>(n);
    }
    if (!ok) {
      std::perror("meap fuzz: cannot write the scratch token file");
      std::abort();
    }
  }
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

std::int64_t vocabulary(unsigned choice) {
  if (choice < 16) return 0;                              // unchecked
  if (choice == 62) return (std::int64_t{1} << 31) + 1;  // invalid: a meap::error
  if (choice == 63) return std::int64_t{1} << 31;        // the largest accepted
  const std::int64_t k = choice - 15;
  return 8 * k * k;  // 8 .. 17672: some files pass, some hold a token too large
}

// Row `row` of `out` is the window of T + 1 tokens that starts at `start`.
void check_row(const meap::token_dataset& data, const meap::tensor<std::int32_t, meap::cpu>& out, meap::index_t row,
               meap::index_t start, std::uint32_t largest) {
  check(0 <= start && start + data.seq_len() <= data.size() - 1,
        "a window starts where T + 1 tokens remain");
  for (meap::index_t t = 0; t <= data.seq_len(); ++t) {
    const std::int32_t value = out.view()(row, t);
    check(value >= 0 && static_cast<std::uint32_t>(value) == data.token(start + t), "a batch row is its window");
    check(static_cast<std::uint32_t>(value) <= largest, "no token exceeds largest_token()");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  static const scratch_file file;
  const meap::index_t seq_len = (data[0] & 63) + 1;
  const meap::token_type type = (data[0] & 64) != 0 ? meap::token_type::u32 : meap::token_type::u16;
  const meap::index_t batch = (data[1] & 3) + 1;
  const std::int64_t vocab_size = vocabulary(data[1] >> 2);
  file.write(data + 2, size - 2);

  std::optional<meap::token_dataset> opened;
  expect_meap_error([&] { opened.emplace(file.path(), meap::token_dataset_options{seq_len, type, vocab_size}); });
  if (!opened) return 0;
  const meap::token_dataset& dataset = *opened;

  const std::size_t width = type == meap::token_type::u32 ? 4 : 2;
  check(dataset.size() == static_cast<meap::index_t>((size - 2) / width), "size() counts the tokens of the file");
  check(dataset.size() >= seq_len + 1 && dataset.windows() >= 1, "an open dataset holds a window");

  const auto largest = dataset.largest_token();
  check(largest.index >= 0 && largest.index < dataset.size() && dataset.token(largest.index) == largest.id,
        "largest_token() names a token of the file");
  if (vocab_size > 0) check(largest.id < static_cast<std::uint64_t>(vocab_size), "every token is below vocab_size");
  (void)dataset.token(dataset.size() - 1);
  for (const meap::index_t outside : {meap::index_t{-1}, dataset.size()}) {
    bool refused = false;
    try {
      (void)dataset.token(outside);
    } catch (const meap::error&) {
      refused = true;
    }
    check(refused, "token() outside the file throws meap::error");
  }

  auto out = meap::zeros<std::int32_t>(meap::cpu{}, {batch, seq_len + 1});
  constexpr std::uint64_t seeds[] = {0, 1234, std::numeric_limits<std::uint64_t>::max()};
  constexpr std::uint64_t steps[] = {0, 1, 7, std::uint64_t{1} << 40, std::numeric_limits<std::uint64_t>::max()};
  for (const std::uint64_t seed : seeds)
    for (const std::uint64_t step : steps)
      expect_meap_error([&] {
        dataset.sample_batch(meap::cpu{}, seed, step, out.view());
        for (meap::index_t b = 0; b < batch; ++b)
          check_row(dataset, out, b, dataset.random_start(seed, step, static_cast<std::uint32_t>(b)), largest.id);
      });
  for (const std::uint64_t step : steps)
    expect_meap_error([&] {
      dataset.sequential_batch(meap::cpu{}, step, out.view());
      for (meap::index_t b = 0; b < batch; ++b) {
        const meap::index_t start = dataset.sequential_start(step, batch, b);
        check(start % seq_len == 0 && start / seq_len < dataset.windows(), "sequential windows start at w * T, w < W");
        check_row(dataset, out, b, start, largest.id);
      }
    });

  // A batch of the wrong shape is refused with meap::error.
  auto wrong = meap::zeros<std::int32_t>(meap::cpu{}, {batch, seq_len});
  bool refused = false;
  try {
    dataset.sequential_batch(meap::cpu{}, 0, wrong.view());
  } catch (const meap::error&) {
    refused = true;
  }
  check(refused, "a batch of shape (B, T) is refused");
  return 0;
}
