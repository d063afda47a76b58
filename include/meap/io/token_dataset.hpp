// meap/io/token_dataset.hpp: training windows from a flat binary token file.
//
// File format: token ids as unsigned 16-bit or 32-bit little-endian integers, back to back, no
// header (what `np.array(ids, dtype=np.uint16).tofile("train.u16")` writes). The width comes from
// token_dataset_options::type or, by default, from the extension: ".u16" or ".u32".
//
// A batch is B windows of T + 1 consecutive tokens (inputs and the shifted targets), written to an
// int32 (B, T + 1) tensor. Two ways to pick them, both functions of the step alone, so a run
// resumed at step s reads exactly the batches the uninterrupted run would have read:
//
//   sample_batch(cpu, seed, step, out)   row b starts at a uniform random token index in
//       [0, N - T - 1], drawn from philox_stream(seed ^ token_dataset_seed_salt, step, b):
//       next_below(N - T) when N - T < 2^32, else next_u64() masked to the bit width of N - T - 1,
//       rejecting values >= N - T. The salt keeps these words apart from the masking policies'
//       philox_stream(seed, step, row), so one seed can drive both without correlating them.
//   sequential_batch(cpu, step, out)     row b reads window w = (step * B + b) mod W, where
//       window w holds tokens [w T, w T + T] and W = floor((N - 1) / T): consecutive windows share
//       one token (the last target of one is the first input of the next), and an epoch ends
//       after W windows.
//
// The file is memory-mapped read-only (datasets can be far larger than RAM); it must not be
// truncated while a token_dataset uses it. POSIX only. See docs/io.md.
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/dtype.hpp>
#include <meap/core/error.hpp>
#include <meap/core/philox.hpp>
#include <meap/core/tensor_view.hpp>

#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <string_view>
#include <utility>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#pragma push_macro("MEAP_DETAIL_ALLOWED")
#define MEAP_DETAIL_ALLOWED 1
#include <meap/io/detail/posix_file.hpp>
#pragma pop_macro("MEAP_DETAIL_ALLOWED")

static_assert(std::endian::native == std::endian::little,
              "meap/io/token_dataset.hpp: token files are little-endian; this host is not");

namespace meap {

enum class token_type {
  from_extension,  // ".u16" or ".u32"
  u16,
  u32,
};

struct token_dataset_options {
  index_t seq_len = 0;                             // T (>= 1): windows hold T + 1 tokens
  token_type type = token_type::from_extension;
  std::int64_t vocab_size = 0;                     // > 0: every token must be < vocab_size (checked at open); 0: unchecked
};

// XORed into the seed of sample_batch (see the top of this file). The bytes spell "meap-dat".
inline constexpr std::uint64_t token_dataset_seed_salt = 0x6d6561702d646174ull;

class token_dataset {
 public:
  // Maps and checks the file: it exists, its size is a multiple of the token width, it holds at
  // least T + 1 tokens, and (with vocab_size > 0) every token is < vocab_size. Throws meap::error.
  token_dataset(std::filesystem::path path, const token_dataset_options& options)
      : path_(std::move(path)), seq_len_(options.seq_len), vocab_size_(options.vocab_size) {
    constexpr std::string_view function = "meap::token_dataset";
    check_argument(options.seq_len >= 1, function, "options.seq_len", options.seq_len, "a window length T >= 1");
    check_argument(options.vocab_size >= 0 && options.vocab_size <= (std::int64_t{1} << 31), function,
                   "options.vocab_size", options.vocab_size,
                   "0 (unchecked) or a vocabulary size in [1, 2^31] (token ids must fit in int32)");
    type_ = resolve_type(options.type);
    const std::size_t width = size_of(type_);

    const auto opened = detail::open_regular_file(function, path_, "token file");  // never blocks on a FIFO
    const int fd = opened.fd;
    const detail::descriptor_guard guard{fd};  // the mapping keeps the file; the descriptor can go
    const auto bytes = opened.bytes;
    if (bytes % width != 0)
      detail::throw_file_error(function, path_,
                               "size " + std::to_string(bytes) + " bytes is not a multiple of the token width " +
                                   std::to_string(width) + " (" + std::string(to_string(type_)) +
                                   "; wrong width or truncated file?)");
    size_ = static_cast<index_t>(bytes / width);
    if (size_ < seq_len_ + 1)
      detail::throw_file_error(function, path_,
                               "holds " + std::to_string(size_) + " tokens, fewer than one window of seq_len + 1 = " +
                                   std::to_string(seq_len_ + 1));
    void* mapped = ::mmap(nullptr, static_cast<std::size_t>(bytes), PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapped == MAP_FAILED) detail::throw_file_error(function, path_, "cannot memory-map the token file", errno);
    data_ = mapped;
    mapped_bytes_ = static_cast<std::size_t>(bytes);

    if (vocab_size_ > 0) {
      // The first bad token, so the message points at one place in the file.
      for (index_t i = 0; i < size_; ++i) {
        const std::uint32_t token = at(i);
        if (token >= static_cast<std::uint64_t>(vocab_size_)) {
          const std::string what = "token " + std::to_string(token) + " at index " + std::to_string(i) +
                                   " (byte offset " + std::to_string(static_cast<std::uint64_t>(i) * width) +
                                   ") is >= vocab_size = " + std::to_string(vocab_size_);
          unmap();
          detail::throw_file_error(function, path_, what);
        }
      }
    }
  }

  token_dataset(const token_dataset&) = delete;
  token_dataset& operator=(const token_dataset&) = delete;
  token_dataset(token_dataset&& other) noexcept { swap(other); }
  token_dataset& operator=(token_dataset&& other) noexcept {
    if (this != &other) {
      unmap();
      swap(other);
    }
    return *this;
  }
  ~token_dataset() { unmap(); }

  const std::filesystem::path& path() const noexcept { return path_; }
  dtype type() const noexcept { return type_; }              // dtype::u16 or dtype::u32
  index_t size() const noexcept { return size_; }            // tokens in the file (N)
  index_t seq_len() const noexcept { return seq_len_; }      // T
  std::int64_t vocab_size() const noexcept { return vocab_size_; }
  index_t windows() const noexcept { return (size_ - 1) / seq_len_; }  // W, windows per sequential epoch

  // Token i (checked).
  std::uint32_t token(index_t i) const {
    check_argument(0 <= i && i < size_, "meap::token_dataset::token", "i", i,
                   "an index in [0, " + std::to_string(size_) + ")");
    return at(i);
  }

  // The largest token id in the file and the first index holding it (one pass over the file):
  // what a vocabulary inferred from the data must cover.
  struct largest_token_t {
    std::uint32_t id = 0;
    index_t index = 0;
  };
  largest_token_t largest_token() const {
    largest_token_t largest{at(0), 0};
    for (index_t i = 1; i < size_; ++i) {
      const std::uint32_t token = at(i);
      if (token > largest.id) largest = {token, i};
    }
    return largest;
  }

  // Where sample_batch's row `row` starts at `step` (the rule at the top of this file).
  index_t random_start(std::uint64_t seed, std::uint64_t step, std::uint32_t row) const {
    philox_stream random(seed ^ token_dataset_seed_salt, step, row);
    const auto starts = static_cast<std::uint64_t>(size_ - seq_len_);  // N - T >= 1
    if (starts <= std::numeric_limits<std::uint32_t>::max())
      return static_cast<index_t>(random.next_below(static_cast<std::uint32_t>(starts)));
    const std::uint64_t mask = std::bit_ceil(starts) - 1;
    for (;;) {
      const std::uint64_t candidate = random.next_u64() & mask;
      if (candidate < starts) return static_cast<index_t>(candidate);
    }
  }

  // Where sequential_batch's row `row` of a batch of `batch` rows starts at `step`.
  index_t sequential_start(std::uint64_t step, index_t batch, index_t row) const {
    constexpr std::string_view function = "meap::token_dataset::sequential_start";
    check_argument(batch >= 1, function, "batch", batch, "a batch size >= 1");
    check_argument(0 <= row && row < batch, function, "row", row, "a row in [0, batch = " + std::to_string(batch) + ")");
    std::uint64_t window = 0;
    if (__builtin_mul_overflow(step, static_cast<std::uint64_t>(batch), &window) ||
        __builtin_add_overflow(window, static_cast<std::uint64_t>(row), &window))
      throw_argument_error(function, "step", step, "step * batch + row that fits in 64 bits");
    return static_cast<index_t>(window % static_cast<std::uint64_t>(windows())) * seq_len_;
  }

  // out: (B, T + 1) int32. Random windows for `step` (see the top of this file).
  void sample_batch(const cpu&, std::uint64_t seed, std::uint64_t step, const tensor_view<std::int32_t, cpu>& out) const {
    check_batch("meap::token_dataset::sample_batch", out);
    for (index_t b = 0; b < out.size(0); ++b)
      copy_window(random_start(seed, step, static_cast<std::uint32_t>(b)), out, b);
  }

  // out: (B, T + 1) int32. The windows of `step` in file order (see the top of this file).
  void sequential_batch(const cpu&, std::uint64_t step, const tensor_view<std::int32_t, cpu>& out) const {
    check_batch("meap::token_dataset::sequential_batch", out);
    for (index_t b = 0; b < out.size(0); ++b) copy_window(sequential_start(step, out.size(0), b), out, b);
  }

 private:
  dtype resolve_type(token_type requested) const {
    const std::string extension = path_.extension().string();
    const dtype from_name = extension == ".u16" ? dtype::u16 : extension == ".u32" ? dtype::u32 : dtype::u8;
    if (requested == token_type::from_extension) {
      if (from_name == dtype::u8)
        throw_argument_error("meap::token_dataset", "options.type", "token_type::from_extension",
                             "a file named *.u16 or *.u32, or options.type = u16 or u32 ('" + path_.string() +
                                 "' has extension '" + extension + "')");
      return from_name;
    }
    const dtype chosen = requested == token_type::u16 ? dtype::u16 : dtype::u32;
    // An explicit width that contradicts the file's own extension is a mistake, not a choice.
    if (from_name != dtype::u8 && from_name != chosen)
      throw_argument_error("meap::token_dataset", "options.type", std::string(to_string(chosen)),
                           "the width the extension '" + extension + "' of '" + path_.string() + "' says, " +
                               std::string(to_string(from_name)));
    return chosen;
  }

  std::uint32_t at(index_t i) const noexcept {
    if (type_ == dtype::u16) return static_cast<const std::uint16_t*>(data_)[i];
    return static_cast<const std::uint32_t*>(data_)[i];
  }

  void check_batch(std::string_view function, const tensor_view<std::int32_t, cpu>& out) const {
    if (out.rank() != 2 || out.size(1) != seq_len_ + 1)
      throw_argument_error(function, "out", "shape " + to_string(out.shape()),
                           "shape (B, seq_len + 1 = " + std::to_string(seq_len_ + 1) + ")");
    check_argument(out.data() != nullptr || out.empty(), function, "out", "a null data pointer",
                   "a view of allocated memory");
  }

  void copy_window(index_t start, const tensor_view<std::int32_t, cpu>& out, index_t row) const {
    for (index_t t = 0; t <= seq_len_; ++t) {
      const std::uint32_t token = at(start + t);
      // Without a vocabulary check a u32 file may hold ids that int32 cannot represent.
      if (token > static_cast<std::uint32_t>(std::numeric_limits<std::int32_t>::max()))
        detail::throw_file_error("meap::token_dataset", path_,
                                 "token " + std::to_string(token) + " at index " + std::to_string(start + t) +
                                     " does not fit in int32 (set options.vocab_size to check the file when opening it)");
      out(row, t) = static_cast<std::int32_t>(token);
    }
  }

  void unmap() noexcept {
    if (data_ != nullptr) ::munmap(data_, mapped_bytes_);
    data_ = nullptr;
    mapped_bytes_ = 0;
  }

  void swap(token_dataset& other) noexcept {
    std::swap(path_, other.path_);
    std::swap(type_, other.type_);
    std::swap(size_, other.size_);
    std::swap(seq_len_, other.seq_len_);
    std::swap(vocab_size_, other.vocab_size_);
    std::swap(data_, other.data_);
    std::swap(mapped_bytes_, other.mapped_bytes_);
  }

  std::filesystem::path path_;
  dtype type_ = dtype::u16;
  index_t size_ = 0;
  index_t seq_len_ = 1;
  std::int64_t vocab_size_ = 0;
  void* data_ = nullptr;
  std::size_t mapped_bytes_ = 0;
};

}  // namespace meap
