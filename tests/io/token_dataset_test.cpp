// token_dataset: file checks, the random and sequential batch rules, and determinism by step.
#include <meap/core/philox.hpp>
#include <meap/core/tensor.hpp>
#include <meap/io/token_dataset.hpp>

#include "io/support.hpp"

#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <cstring>
#include <set>
#include <string>
#include <vector>

namespace {

using io_test::error_says;
using io_test::scratch_directory;

template <class T>
void write_tokens(const io_test::fs::path& path, const std::vector<T>& tokens) {
  io_test::bytes content(tokens.size() * sizeof(T));
  // Little-endian by construction, whatever the host.
  for (std::size_t i = 0; i < tokens.size(); ++i)
    for (std::size_t b = 0; b < sizeof(T); ++b)
      content[i * sizeof(T) + b] = static_cast<std::byte>((static_cast<std::uint64_t>(tokens[i]) >> (8 * b)) & 0xff);
  io_test::write_bytes(path, content);
}

// Tokens 1000, 1001, ...: a window is contiguous exactly when its values count up by one.
template <class T>
std::vector<T> counting(std::size_t n, T first = T(1000)) {
  std::vector<T> tokens(n);
  for (std::size_t i = 0; i < n; ++i) tokens[i] = static_cast<T>(first + i);
  return tokens;
}

std::vector<std::int32_t> to_vector(const meap::tensor<std::int32_t, meap::cpu>& t) {
  return {t.data(), t.data() + t.numel()};
}

}  // namespace

BOOST_AUTO_TEST_SUITE(token_dataset)

BOOST_AUTO_TEST_CASE(width_from_extension_or_option) {
  scratch_directory dir;
  write_tokens(dir / "train.u16", counting<std::uint16_t>(100));
  write_tokens(dir / "train.u32", counting<std::uint32_t>(100, 70'000));
  write_tokens(dir / "train.bin", counting<std::uint32_t>(100, 70'000));

  const meap::token_dataset u16(dir / "train.u16", {.seq_len = 8});
  BOOST_TEST((u16.type() == meap::dtype::u16));
  BOOST_TEST(u16.size() == 100);
  BOOST_TEST(u16.token(99) == 1099u);
  const meap::token_dataset u32(dir / "train.u32", {.seq_len = 8});
  BOOST_TEST((u32.type() == meap::dtype::u32));
  BOOST_TEST(u32.token(0) == 70'000u);
  const meap::token_dataset bin(dir / "train.bin", {.seq_len = 8, .type = meap::token_type::u32});
  BOOST_TEST(bin.size() == 100);
  BOOST_TEST(bin.token(5) == 70'005u);
  BOOST_CHECK_EXCEPTION(bin.token(100), meap::error, error_says("i", {"[0, 100)"}));

  BOOST_CHECK_EXCEPTION(meap::token_dataset(dir / "train.bin", {.seq_len = 8}), meap::error,
                        error_says("options.type", {"*.u16 or *.u32", "'.bin'"}));
  BOOST_CHECK_EXCEPTION(meap::token_dataset(dir / "train.u32", {.seq_len = 8, .type = meap::token_type::u16}),
                        meap::error, error_says("options.type", {"uint16", "'.u32'", "uint32"}));
}

BOOST_AUTO_TEST_CASE(bad_files_and_options_are_rejected) {
  scratch_directory dir;
  BOOST_CHECK_EXCEPTION(meap::token_dataset(dir / "absent.u16", {.seq_len = 4}), meap::error,
                        error_says("path", {"absent.u16", "cannot open", "No such file"}));
  io_test::fs::create_directory(dir / "folder.u16");
  BOOST_CHECK_EXCEPTION(meap::token_dataset(dir / "folder.u16", {.seq_len = 4}), meap::error,
                        error_says("path", {"not a regular file"}));
  io_test::write_bytes(dir / "odd.u32", io_test::byte_list({1, 0, 0, 0, 2, 0}));
  BOOST_CHECK_EXCEPTION(meap::token_dataset(dir / "odd.u32", {.seq_len = 1}), meap::error,
                        error_says("path", {"size 6 bytes", "multiple of the token width 4"}));
  write_tokens(dir / "short.u16", counting<std::uint16_t>(8));
  BOOST_CHECK_EXCEPTION(meap::token_dataset(dir / "short.u16", {.seq_len = 8}), meap::error,
                        error_says("path", {"holds 8 tokens", "seq_len + 1 = 9"}));
  io_test::write_bytes(dir / "empty.u16", {});
  BOOST_CHECK_EXCEPTION(meap::token_dataset(dir / "empty.u16", {.seq_len = 1}), meap::error,
                        error_says("path", {"holds 0 tokens"}));
  BOOST_CHECK_EXCEPTION(meap::token_dataset(dir / "short.u16", {.seq_len = 0}), meap::error,
                        error_says("options.seq_len", {">= 1"}));
  BOOST_CHECK_EXCEPTION(meap::token_dataset(dir / "short.u16", {.seq_len = 2, .vocab_size = -5}), meap::error,
                        error_says("options.vocab_size", {"2^31"}));
  BOOST_CHECK_EXCEPTION(meap::token_dataset(dir / "short.u16", {.seq_len = 2, .vocab_size = (std::int64_t{1} << 31) + 1}),
                        meap::error, error_says("options.vocab_size", {"fit in int32"}));
  // Exactly one window is enough.
  BOOST_CHECK_NO_THROW(meap::token_dataset(dir / "short.u16", {.seq_len = 7}));
}

BOOST_AUTO_TEST_CASE(vocabulary_check_names_the_first_bad_token) {
  scratch_directory dir;
  auto tokens = counting<std::uint16_t>(64, 0);
  tokens[37] = 500;
  tokens[50] = 900;
  write_tokens(dir / "data.u16", tokens);
  BOOST_CHECK_EXCEPTION(meap::token_dataset(dir / "data.u16", {.seq_len = 4, .vocab_size = 256}), meap::error,
                        error_says("path", {"token 500 at index 37", "byte offset 74", ">= vocab_size = 256"}));
  BOOST_CHECK_NO_THROW(meap::token_dataset(dir / "data.u16", {.seq_len = 4, .vocab_size = 901}));
  BOOST_CHECK_EXCEPTION(meap::token_dataset(dir / "data.u16", {.seq_len = 4, .vocab_size = 900}), meap::error,
                        error_says("path", {"token 900 at index 50"}));
}

// Each row is a contiguous window starting where the documented Philox rule says, the same
// (seed, step) gives the same batch, and another step or seed gives another.
BOOST_AUTO_TEST_CASE(random_batches_follow_the_documented_rule) {
  scratch_directory dir;
  const std::size_t n = 5000;
  write_tokens(dir / "data.u32", counting<std::uint32_t>(n));
  const meap::index_t T = 16, B = 4;
  const meap::token_dataset data(dir / "data.u32", {.seq_len = T});
  auto batch = meap::zeros<std::int32_t>(meap::cpu{}, {B, T + 1});
  data.sample_batch(meap::cpu{}, 1234, 7, batch.view());
  for (meap::index_t b = 0; b < B; ++b) {
    meap::philox_stream random(1234 ^ meap::token_dataset_seed_salt, 7, static_cast<std::uint32_t>(b));
    const auto start = static_cast<std::int32_t>(random.next_below(static_cast<std::uint32_t>(n - T)));
    BOOST_TEST(data.random_start(1234, 7, static_cast<std::uint32_t>(b)) == start);
    for (meap::index_t t = 0; t <= T; ++t)
      BOOST_TEST(batch.data()[b * (T + 1) + t] == 1000 + start + static_cast<std::int32_t>(t));
  }
  auto again = meap::zeros<std::int32_t>(meap::cpu{}, {B, T + 1});
  data.sample_batch(meap::cpu{}, 1234, 7, again.view());
  BOOST_TEST(to_vector(again) == to_vector(batch), boost::test_tools::per_element());
  data.sample_batch(meap::cpu{}, 1234, 8, again.view());
  BOOST_TEST(to_vector(again) != to_vector(batch));
  data.sample_batch(meap::cpu{}, 1235, 7, again.view());
  BOOST_TEST(to_vector(again) != to_vector(batch));
  // The rows of one batch are drawn independently.
  std::set<std::int32_t> firsts;
  for (meap::index_t b = 0; b < B; ++b) firsts.insert(batch.data()[b * (T + 1)]);
  BOOST_TEST(firsts.size() == static_cast<std::size_t>(B));
}

// With N = T + 3 there are three possible windows: all appear, and none reads past the end.
BOOST_AUTO_TEST_CASE(random_windows_cover_every_start_and_stay_inside) {
  scratch_directory dir;
  const meap::index_t T = 5;
  write_tokens(dir / "data.u16", counting<std::uint16_t>(static_cast<std::size_t>(T + 3)));
  const meap::token_dataset data(dir / "data.u16", {.seq_len = T});
  std::set<meap::index_t> starts;
  for (std::uint64_t step = 0; step < 200; ++step) {
    const auto s = data.random_start(99, step, 0);
    BOOST_TEST_REQUIRE((0 <= s && s + T < data.size()));
    starts.insert(s);
  }
  BOOST_TEST(starts == (std::set<meap::index_t>{0, 1, 2}), boost::test_tools::per_element());
  // One window only: every batch is the whole file.
  write_tokens(dir / "one.u16", counting<std::uint16_t>(static_cast<std::size_t>(T + 1)));
  const meap::token_dataset one(dir / "one.u16", {.seq_len = T});
  auto batch = meap::zeros<std::int32_t>(meap::cpu{}, {2, T + 1});
  one.sample_batch(meap::cpu{}, 5, 123, batch.view());
  BOOST_TEST(batch.data()[T] == 1000 + T);
  BOOST_TEST(batch.data()[T + 1] == 1000);
}

BOOST_AUTO_TEST_CASE(sequential_batches_walk_the_file_and_wrap) {
  scratch_directory dir;
  const meap::index_t T = 4, B = 3;
  write_tokens(dir / "data.u16", counting<std::uint16_t>(23));  // W = floor(22 / 4) = 5 windows
  const meap::token_dataset data(dir / "data.u16", {.seq_len = T});
  BOOST_TEST(data.windows() == 5);
  auto batch = meap::zeros<std::int32_t>(meap::cpu{}, {B, T + 1});
  data.sequential_batch(meap::cpu{}, 0, batch.view());
  // Windows 0, 1, 2: consecutive windows share one token.
  BOOST_TEST(to_vector(batch) == (std::vector<std::int32_t>{1000, 1001, 1002, 1003, 1004, 1004, 1005, 1006, 1007, 1008,
                                                            1008, 1009, 1010, 1011, 1012}),
             boost::test_tools::per_element());
  // Step 1 reads windows 3, 4 and then 0 again (the next epoch).
  data.sequential_batch(meap::cpu{}, 1, batch.view());
  BOOST_TEST(batch.data()[0] == 1012);
  BOOST_TEST(batch.data()[T + 1] == 1016);
  BOOST_TEST(batch.data()[2 * (T + 1)] == 1000);
  BOOST_TEST(batch.data()[2 * (T + 1) + T] == 1004);
  // A function of the step alone: step 6 is windows 18..20 mod 5 = 3, 4, 0, as step 1.
  auto later = meap::zeros<std::int32_t>(meap::cpu{}, {B, T + 1});
  data.sequential_batch(meap::cpu{}, 6, later.view());
  BOOST_TEST(to_vector(later) == to_vector(batch), boost::test_tools::per_element());
  BOOST_TEST(data.sequential_start(2, B, 1) == ((2 * B + 1) % 5) * T);
  BOOST_CHECK_EXCEPTION(data.sequential_start(std::uint64_t{1} << 63, 4, 0), meap::error,
                        error_says("step", {"fits in 64 bits"}));
}

BOOST_AUTO_TEST_CASE(output_must_be_batch_by_window) {
  scratch_directory dir;
  write_tokens(dir / "data.u16", counting<std::uint16_t>(50));
  const meap::token_dataset data(dir / "data.u16", {.seq_len = 8});
  auto wrong = meap::zeros<std::int32_t>(meap::cpu{}, {2, 8});
  BOOST_CHECK_EXCEPTION(data.sample_batch(meap::cpu{}, 0, 0, wrong.view()), meap::error,
                        error_says("out", {"meap::token_dataset::sample_batch", "shape (2, 8)", "seq_len + 1 = 9"}));
  auto flat = meap::zeros<std::int32_t>(meap::cpu{}, {9});
  BOOST_CHECK_EXCEPTION(data.sequential_batch(meap::cpu{}, 0, flat.view()), meap::error, error_says("out", {"(B, seq_len + 1"}));
  // Any strides: a transposed (T + 1, B) buffer works as a (B, T + 1) view.
  auto transposed = meap::zeros<std::int32_t>(meap::cpu{}, {9, 2});
  data.sequential_batch(meap::cpu{}, 0, transposed.view().transpose(0, 1));
  BOOST_TEST(transposed.data()[0] == 1000);
  BOOST_TEST(transposed.data()[1] == 1008);  // row 1 starts at window 1
}

BOOST_AUTO_TEST_CASE(u32_ids_beyond_int32_need_a_vocabulary_or_fail_when_read) {
  scratch_directory dir;
  auto tokens = counting<std::uint32_t>(10, 0);
  tokens[3] = 3'000'000'000u;
  write_tokens(dir / "big.u32", tokens);
  const meap::token_dataset data(dir / "big.u32", {.seq_len = 4});
  auto batch = meap::zeros<std::int32_t>(meap::cpu{}, {1, 5});
  BOOST_CHECK_EXCEPTION(data.sequential_batch(meap::cpu{}, 0, batch.view()), meap::error,
                        error_says("path", {"token 3000000000 at index 3", "does not fit in int32"}));
  data.sequential_batch(meap::cpu{}, 1, batch.view());  // window 1 = tokens 4..8
  BOOST_TEST(batch.data()[0] == 4);
}

BOOST_AUTO_TEST_CASE(datasets_move) {
  scratch_directory dir;
  write_tokens(dir / "data.u16", counting<std::uint16_t>(20));
  meap::token_dataset a(dir / "data.u16", {.seq_len = 3});
  meap::token_dataset b = std::move(a);
  BOOST_TEST(b.token(19) == 1019u);
  write_tokens(dir / "other.u16", counting<std::uint16_t>(10, 7));
  meap::token_dataset c(dir / "other.u16", {.seq_len = 3});
  c = std::move(b);
  BOOST_TEST(c.size() == 20);
  BOOST_TEST(c.token(0) == 1000u);
}

BOOST_AUTO_TEST_SUITE_END()
