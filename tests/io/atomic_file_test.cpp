// atomic_file: the final name holds the old file or the complete new one, and no temporary stays.
#include <meap/io/atomic_file.hpp>

#include "io/support.hpp"

#include <boost/test/unit_test.hpp>

#include <stdexcept>
#include <string>
#include <vector>

namespace {
using io_test::error_says;
using io_test::read_bytes;
using io_test::scratch_directory;
using io_test::text_bytes;
using names = std::vector<std::string>;
}  // namespace

BOOST_AUTO_TEST_SUITE(atomic_file)

BOOST_AUTO_TEST_CASE(commit_creates_and_replaces_the_file_without_leaving_a_temporary) {
  scratch_directory dir;
  const auto path = dir / "data.bin";
  meap::write_file_atomically(path, text_bytes("first version"));
  BOOST_TEST((read_bytes(path) == text_bytes("first version")));
  BOOST_TEST(dir.listing() == names{"data.bin"}, boost::test_tools::per_element());

  meap::atomic_file out(path);
  const auto temporary = out.temporary_path();
  BOOST_TEST(temporary.parent_path() == dir.path());
  BOOST_TEST(temporary.filename().string().rfind(".data.bin.tmp.", 0) == 0);
  out.write("second", 6);
  out.write(text_bytes(" version"));
  // Until commit the final name keeps the old content.
  BOOST_TEST((read_bytes(path) == text_bytes("first version")));
  out.commit();
  BOOST_TEST(out.committed());
  BOOST_TEST(out.temporary_path().empty());
  BOOST_TEST((read_bytes(path) == text_bytes("second version")));
  BOOST_TEST(dir.listing() == names{"data.bin"}, boost::test_tools::per_element());
  BOOST_CHECK_EXCEPTION(out.write("x", 1), meap::error, error_says("path", {"already committed"}));
}

BOOST_AUTO_TEST_CASE(abandoning_a_write_keeps_the_old_file_and_removes_the_temporary) {
  scratch_directory dir;
  const auto path = dir / "checkpoint.safetensors";
  meap::write_file_atomically(path, text_bytes("good checkpoint"));
  try {
    meap::atomic_file out(path);
    out.write("half a checkp", 13);
    BOOST_TEST(dir.listing().size() == 2u);  // the temporary exists meanwhile
    throw std::runtime_error("simulated failure while serializing");
  } catch (const std::runtime_error&) {
  }
  BOOST_TEST((read_bytes(path) == text_bytes("good checkpoint")));
  BOOST_TEST(dir.listing() == names{"checkpoint.safetensors"}, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(missing_directory_is_an_error_and_creates_nothing) {
  scratch_directory dir;
  const auto path = dir / "no_such_directory" / "file.bin";
  BOOST_CHECK_EXCEPTION(meap::write_file_atomically(path, text_bytes("x")), meap::error,
                        error_says("path", {"meap::atomic_file", "no_such_directory", "cannot create a temporary",
                                            "No such file or directory"}));
  BOOST_TEST(dir.listing().empty());
  BOOST_CHECK_EXCEPTION(meap::atomic_file(dir.path() / ""), meap::error, error_says("path", {"names a file"}));
}

// A rename that fails (the final name is a non-empty directory) happens after the temporary was
// written: the temporary goes, the directory stays.
BOOST_AUTO_TEST_CASE(failed_rename_removes_the_temporary_and_keeps_what_was_there) {
  scratch_directory dir;
  const auto path = dir / "occupied";
  io_test::fs::create_directory(path);
  io_test::write_bytes(path / "keep.txt", text_bytes("keep"));
  meap::atomic_file out(path);
  out.write("data", 4);
  BOOST_CHECK_EXCEPTION(out.commit(), meap::error, error_says("path", {"meap::atomic_file::commit", "cannot rename"}));
  BOOST_TEST(!out.committed());
  BOOST_TEST(dir.listing() == names{"occupied"}, boost::test_tools::per_element());
  BOOST_TEST((read_bytes(path / "keep.txt") == text_bytes("keep")));
  BOOST_CHECK_EXCEPTION(out.write("x", 1), meap::error, error_says("path", {"an earlier write failed"}));
}

BOOST_AUTO_TEST_CASE(large_writes_arrive_whole) {
  scratch_directory dir;
  io_test::bytes big(5'000'000);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<std::byte>((i * 7919) >> 3);
  meap::write_file_atomically(dir / "big.bin", big);
  BOOST_TEST((read_bytes(dir / "big.bin") == big));
}

BOOST_AUTO_TEST_SUITE_END()
