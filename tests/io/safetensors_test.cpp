// safetensors: round trips, byte-exact files written by hand from the format description, and
// every kind of damaged file rejected with a meap::error (never a crash or garbage).
#include <meap/core/dispatch.hpp>
#include <meap/core/tensor.hpp>
#include <meap/io/safetensors.hpp>

#include "io/support.hpp"

#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <vector>

namespace {

using io_test::append;
using io_test::byte_list;
using io_test::bytes;
using io_test::error_says;
using io_test::le_u64;
using io_test::scratch_directory;
using io_test::text_bytes;

// A host tensor of any dtype held as bytes, with its any_view.
struct stored_tensor {
  std::vector<std::byte> storage;
  meap::any_view view;

  template <class T>
  static stored_tensor make(meap::dims shape, const std::vector<T>& values) {
    BOOST_REQUIRE(static_cast<meap::index_t>(values.size()) == shape.product());
    stored_tensor t;
    t.storage.resize(values.size() * sizeof(T));
    if (!values.empty()) std::memcpy(t.storage.data(), values.data(), t.storage.size());
    t.view = meap::any_view{t.storage.empty() ? nullptr : t.storage.data(), meap::dtype_of<T>, {}, shape,
                            meap::contiguous_strides(shape)};
    return t;
  }
};

// The test set: every dtype, a scalar, an empty tensor, and the extremes of each integer type.
std::map<std::string, stored_tensor> every_dtype() {
  using lim64 = std::numeric_limits<std::int64_t>;
  std::map<std::string, stored_tensor> t;
  t["f64"] = stored_tensor::make<double>({2, 3}, {-1.25, -0.75, 0.0, 0.1, 1e300, -4.9e-324});
  t["f32"] = stored_tensor::make<float>({3}, {1.5f, -0.0f, std::numeric_limits<float>::infinity()});
  t["f16"] = stored_tensor::make<meap::half>({2, 2}, {meap::half(1.0f), meap::half(-2.5f), meap::half(65504.0f),
                                                     meap::half::from_bits(0x0001)});
  t["bf16"] = stored_tensor::make<meap::bfloat16>({4}, {meap::bfloat16(1.0f), meap::bfloat16(-3.0f),
                                                        meap::bfloat16(1e38f), meap::bfloat16::from_bits(0x7fc0)});
  t["i64"] = stored_tensor::make<std::int64_t>({2}, {lim64::min(), lim64::max()});
  t["i32"] = stored_tensor::make<std::int32_t>({3}, {-7, 0, std::numeric_limits<std::int32_t>::max()});
  t["i16"] = stored_tensor::make<std::int16_t>({2}, {-32768, 32767});
  t["i8"] = stored_tensor::make<std::int8_t>({3}, {-128, 0, 127});
  t["u64"] = stored_tensor::make<std::uint64_t>({1}, {std::numeric_limits<std::uint64_t>::max()});
  t["u32"] = stored_tensor::make<std::uint32_t>({2}, {0u, 4'000'000'000u});
  t["u16"] = stored_tensor::make<std::uint16_t>({3}, {1, 2, 65535});
  t["u8"] = stored_tensor::make<std::uint8_t>({5}, {0, 1, 2, 254, 255});
  t["scalar"] = stored_tensor::make<float>(meap::dims{}, {42.0f});
  t["empty"] = stored_tensor::make<float>({0, 3}, {});
  t["model.layers.0.self_attn.q_proj.weight"] = stored_tensor::make<std::uint8_t>({1, 1, 1, 1, 1, 1, 1, 1}, {9});
  return t;
}

bool same_bytes(const meap::any_view& a, const meap::any_view& b) {
  const auto n = static_cast<std::size_t>(a.shape.product()) * meap::size_of(a.type);
  return a.type == b.type && a.shape == b.shape && (n == 0 || std::memcmp(a.data, b.data, n) == 0);
}

// le64(N) + header + data.
bytes file_with_header(const std::string& header, const bytes& data) {
  bytes file = le_u64(header.size());
  append(file, text_bytes(header));
  append(file, data);
  return file;
}

// Passes when opening `file` fails with a message containing every fragment.
void rejects(const bytes& file, std::vector<std::string> fragments) {
  BOOST_CHECK_EXCEPTION(meap::safetensors_file::from_bytes(file, "bad.safetensors"), meap::error,
                        error_says("path", [&] {
                          fragments.insert(fragments.begin(), "'bad.safetensors'");
                          return fragments;
                        }()));
}

}  // namespace

BOOST_AUTO_TEST_SUITE(safetensors)

BOOST_AUTO_TEST_CASE(every_dtype_round_trips_through_a_file) {
  scratch_directory dir;
  const auto tensors = every_dtype();
  meap::safetensors_writer writer;
  for (const auto& [name, t] : tensors) writer.add(name, t.view);
  writer.add_metadata("format", "pt").add_metadata("step", "12").add_metadata("note", "ünïcode ✓");
  const auto path = dir / "all.safetensors";
  writer.save(path);
  BOOST_TEST(dir.listing() == std::vector<std::string>{"all.safetensors"}, boost::test_tools::per_element());
  BOOST_TEST((io_test::read_bytes(path) == writer.serialize()));

  const meap::safetensors_file file(path);
  BOOST_TEST(file.path() == path);
  BOOST_TEST(file.size() == tensors.size());
  BOOST_TEST(file.metadata().at("format") == "pt");
  BOOST_TEST(file.metadata().at("step") == "12");
  BOOST_TEST(file.metadata().at("note") == "ünïcode ✓");
  std::size_t i = 0;
  for (const auto& [name, t] : tensors) {  // both sorted by name
    const auto& e = file.entries()[i++];
    BOOST_TEST(e.name == name);
    BOOST_TEST((e.type == t.view.type));
    BOOST_TEST(e.shape == std::vector<meap::index_t>(t.view.shape.begin(), t.view.shape.end()),
               boost::test_tools::per_element());
    const auto v = file.view(name);
    BOOST_TEST(same_bytes(v, t.view), name);
    BOOST_TEST(reinterpret_cast<std::uintptr_t>(v.data) % meap::size_of(v.type) == 0, name << " is aligned");
    BOOST_TEST((v.where == meap::device_location{}));
  }
  BOOST_TEST(file.view_as<float>("scalar")() == 42.0f);
  BOOST_TEST(file.view_as<std::int64_t>("i64")(1) == std::numeric_limits<std::int64_t>::max());
  BOOST_TEST(file.load<std::uint32_t>("u32").data()[1] == 4'000'000'000u);
  BOOST_TEST(file.load<float>("empty").numel() == 0);
}

// A file built byte by byte from the format description (not by our writer): header not padded,
// keys in no particular order, metadata last, data offsets not in name order, and an I32 tensor
// at an offset that is not a multiple of 4 (legal; the reader must copy it).
BOOST_AUTO_TEST_CASE(hand_written_file_parses_exactly) {
  const std::string header =
      R"({"b":{"dtype":"BF16","shape":[1,2],"data_offsets":[8,12]},)"
      R"("d":{"data_offsets":[14,18],"shape":[1],"dtype":"I32"},)"
      R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("c":{"dtype":"F16","shape":[],"data_offsets":[12,14]},)"
      R"("__metadata__":{"format":"pt"}})";
  const bytes data = byte_list({0x00, 0x00, 0x80, 0x3f,    // a[0] = 1.0f
                                0x00, 0x00, 0x20, 0xc0,    // a[1] = -2.5f
                                0x80, 0x3f, 0x00, 0xc0,    // b = {1.0, -2.0} as bfloat16
                                0x00, 0x3c,                // c = 1.0 as float16
                                0xfd, 0xff, 0xff, 0xff});  // d = -3 as int32
  bytes file = le_u64(header.size());
  append(file, text_bytes(header));
  append(file, data);
  BOOST_TEST(header.size() % 8 != 0);  // readers must not need the padding

  scratch_directory dir;
  io_test::write_bytes(dir / "hand.safetensors", file);
  const meap::safetensors_file parsed(dir / "hand.safetensors");
  BOOST_TEST(parsed.size() == 4u);
  BOOST_TEST(parsed.data_bytes() == 18u);
  BOOST_TEST(parsed.metadata().size() == 1u);
  BOOST_TEST(parsed.metadata().at("format") == "pt");
  BOOST_TEST(parsed.entries()[0].name == "a");
  BOOST_TEST(parsed.entries()[3].name == "d");
  BOOST_TEST(parsed.entry("b").begin == 8u);
  BOOST_TEST(parsed.entry("b").end == 12u);
  BOOST_TEST((parsed.entry("b").shape == std::vector<meap::index_t>{1, 2}));
  BOOST_TEST(parsed.entry("c").shape.empty());
  BOOST_TEST((parsed.entry("c").type == meap::dtype::f16));

  const auto a = parsed.view_as<float>("a");
  BOOST_TEST(a(0) == 1.0f);
  BOOST_TEST(a(1) == -2.5f);
  const auto b = parsed.view_as<meap::bfloat16>("b");
  BOOST_TEST(b(0, 0).bits == 0x3f80);
  BOOST_TEST(b(0, 1).bits == 0xc000);
  const auto b_float = parsed.load<float>("b", {1, 2});
  BOOST_TEST(b_float.data()[0] == 1.0f);
  BOOST_TEST(b_float.data()[1] == -2.0f);
  BOOST_TEST(parsed.load<double>("c").data()[0] == 1.0);
  BOOST_TEST(parsed.load<std::int32_t>("d").data()[0] == -3);
  BOOST_CHECK_EXCEPTION(parsed.view("d"), meap::error,
                        error_says("path", {"tensor 'd'", "offset 14", "element size 4", "use load()"}));
}

// The bytes the reference writer produces for the same input (its own known-answer vectors):
// compact JSON, "__metadata__" first, spaces up to a multiple of 8.
BOOST_AUTO_TEST_CASE(writer_output_is_byte_exact) {
  const auto attn = stored_tensor::make<float>({1, 1, 2, 3}, {0, 1, 2, 3, 4, 5});
  meap::safetensors_writer one;
  one.add("attn0", attn.view);
  bytes expected = le_u64(72);
  append(expected, text_bytes(R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}})"));
  append(expected, text_bytes("       "));
  append(expected, byte_list({0, 0, 0, 0, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40, 0, 0, 0x40, 0x40, 0, 0, 0x80, 0x40, 0, 0,
                              0xa0, 0x40}));
  BOOST_TEST((one.serialize() == expected));

  bytes empty = le_u64(8);
  append(empty, text_bytes("{}      "));
  BOOST_TEST((meap::safetensors_writer{}.serialize() == empty));

  meap::safetensors_writer meta;
  meta.add_metadata("framework", "pt");
  bytes meta_expected = le_u64(40);
  append(meta_expected, text_bytes(R"({"__metadata__":{"framework":"pt"}}     )"));
  BOOST_TEST((meta.serialize() == meta_expected));
  BOOST_TEST(meap::safetensors_file::from_bytes(meta.serialize()).size() == 0u);
}

// Data laid out by decreasing element size, then name: every tensor starts aligned.
BOOST_AUTO_TEST_CASE(writer_orders_data_by_element_size_then_name) {
  const auto z = stored_tensor::make<std::uint8_t>({3}, {1, 2, 3});
  const auto y = stored_tensor::make<double>({1}, {2.0});
  const auto a = stored_tensor::make<float>({1}, {3.0f});
  const auto b = stored_tensor::make<meap::bfloat16>({1}, {meap::bfloat16(4.0f)});
  const auto c = stored_tensor::make<std::int64_t>({1}, {5});
  meap::safetensors_writer writer;
  writer.add("z", z.view).add("y", y.view).add("a", a.view).add("b", b.view).add("c", c.view);
  const auto file = meap::safetensors_file::from_bytes(writer.serialize());
  const auto offsets = [&](const char* name) {
    return std::vector<std::uint64_t>{file.entry(name).begin, file.entry(name).end};
  };
  BOOST_TEST((offsets("c") == std::vector<std::uint64_t>{0, 8}));
  BOOST_TEST((offsets("y") == std::vector<std::uint64_t>{8, 16}));
  BOOST_TEST((offsets("a") == std::vector<std::uint64_t>{16, 20}));
  BOOST_TEST((offsets("b") == std::vector<std::uint64_t>{20, 22}));
  BOOST_TEST((offsets("z") == std::vector<std::uint64_t>{22, 25}));
  const auto serialized = writer.serialize();
  std::uint64_t n = 0;
  std::memcpy(&n, serialized.data(), 8);
  BOOST_TEST(n % 8 == 0u);
  BOOST_TEST(static_cast<char>(serialized[8 + n - 1]) == ' ');
}

BOOST_AUTO_TEST_CASE(load_converts_floating_dtypes_and_checks_shapes) {
  const auto d = stored_tensor::make<double>({3}, {0.1, -1e10, 3.5});
  const auto h = stored_tensor::make<meap::half>({2}, {meap::half(1.5f), meap::half(-0.25f)});
  const auto bf = stored_tensor::make<meap::bfloat16>({2, 3}, {meap::bfloat16(1.0f), meap::bfloat16(2.0f),
                                                               meap::bfloat16(3.0f), meap::bfloat16(4.0f),
                                                               meap::bfloat16(5.0f), meap::bfloat16(6.0f)});
  const auto i = stored_tensor::make<std::int32_t>({2}, {7, -8});
  meap::safetensors_writer writer;
  writer.add("d", d.view).add("h", h.view).add("bf", bf.view).add("i", i.view);
  const auto file = meap::safetensors_file::from_bytes(writer.serialize(), "ckpt");

  const auto d_float = file.load<float>("d", {3});
  BOOST_TEST(d_float.data()[0] == static_cast<float>(0.1));
  BOOST_TEST(d_float.data()[1] == -1e10f);
  BOOST_TEST(file.load<double>("h").data()[1] == -0.25);
  BOOST_TEST(file.load<meap::bfloat16>("d").data()[0].bits == meap::bfloat16(static_cast<float>(0.1)).bits);
  BOOST_TEST(static_cast<float>(file.load<meap::half>("bf").data()[5]) == 6.0f);
  BOOST_TEST(file.load<std::int32_t>("i").data()[1] == -8);

  BOOST_CHECK_EXCEPTION(file.load<float>("i"), meap::error,
                        error_says("path", {"'ckpt'", "tensor 'i'", "dtype I32", "float32", "only floating dtypes"}));
  BOOST_CHECK_EXCEPTION(file.load<std::int64_t>("i"), meap::error, error_says("path", {"tensor 'i'", "int64"}));
  BOOST_CHECK_EXCEPTION(file.load<float>("bf", {3, 2}), meap::error,
                        error_says("expected", {"tensor 'bf'", "shape [2, 3]", "expected (3, 2)"}));
  BOOST_CHECK_EXCEPTION(file.view_as<float>("h"), meap::error, error_says("path", {"tensor 'h'", "F16, not F32"}));
  BOOST_CHECK_EXCEPTION(file.entry("missing"), meap::error,
                        error_says("name", {"no tensor named 'missing'", "'bf', 'd', 'h', 'i'"}));

  // Into a strided destination: the transpose of a (3, 2) tensor has the file's shape (2, 3).
  auto target = meap::zeros<float>(meap::cpu{}, {3, 2});
  file.load_into("bf", target.view().transpose(0, 1));
  BOOST_TEST(target.data()[0] == 1.0f);  // target(0, 0) = bf(0, 0)
  BOOST_TEST(target.data()[1] == 4.0f);  // target(0, 1) = bf(1, 0)
  BOOST_TEST(target.data()[2] == 2.0f);  // target(1, 0) = bf(0, 1)
  auto contiguous = meap::zeros<double>(meap::cpu{}, {2, 3});
  file.load_into("bf", contiguous.view());
  BOOST_TEST(contiguous.data()[4] == 5.0);
  BOOST_CHECK_EXCEPTION(file.load_into("bf", target.view()), meap::error,
                        error_says("destination", {"tensor 'bf'", "expected (3, 2)"}));
}

// Every proper prefix of a valid file is rejected, whether it cuts the length field, the header
// or the data; so is the file with one byte appended.
BOOST_AUTO_TEST_CASE(every_truncation_is_rejected) {
  const auto a = stored_tensor::make<float>({2, 2}, {1, 2, 3, 4});
  const auto b = stored_tensor::make<std::uint8_t>({3}, {5, 6, 7});
  meap::safetensors_writer writer;
  writer.add("a", a.view).add("b", b.view).add_metadata("format", "pt");
  const bytes full = writer.serialize();
  scratch_directory dir;
  const auto path = dir / "cut.safetensors";
  for (std::size_t length = 0; length < full.size(); ++length) {
    const bytes cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(length));
    io_test::write_bytes(path, cut);
    BOOST_CHECK_THROW(meap::safetensors_file{path}, meap::error);
    BOOST_CHECK_THROW(meap::safetensors_file::from_bytes(cut), meap::error);
  }
  io_test::write_bytes(path, full);
  BOOST_CHECK_NO_THROW(meap::safetensors_file{path});
  bytes longer = full;
  longer.push_back(std::byte{0});
  io_test::write_bytes(path, longer);
  BOOST_CHECK_EXCEPTION(meap::safetensors_file{path}, meap::error,
                        error_says("path", {"cut.safetensors", "cover 19 bytes of the 20-byte data buffer"}));
  const bytes tiny(full.begin(), full.begin() + 5);
  rejects(tiny, {"is 5 bytes long", "8-byte header length"});
  const bytes header_cut(full.begin(), full.begin() + 20);
  rejects(header_cut, {"exceeds the 12 bytes that follow it", "truncated"});
}

BOOST_AUTO_TEST_CASE(damaged_headers_are_rejected_with_the_reason) {
  const bytes four = byte_list({0, 0, 0x80, 0x3f});
  const std::string ok = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  BOOST_CHECK_NO_THROW(meap::safetensors_file::from_bytes(file_with_header(ok, four)));

  // The length field.
  bytes huge = le_u64(std::uint64_t{1} << 40);
  append(huge, text_bytes(ok));
  rejects(huge, {"header length 1099511627776", "limit of 100000000"});
  bytes zero = le_u64(0);
  append(zero, four);
  rejects(zero, {"header length 0", "too short"});
  bytes beyond = le_u64(ok.size() + 10);
  append(beyond, text_bytes(ok));
  rejects(beyond, {"header length 64", "exceeds the 54 bytes"});

  // The JSON.
  rejects(file_with_header(R"([{"a":1}])", {}), {"does not start with '{'"});
  rejects(file_with_header(" " + ok, four), {"does not start with '{'"});
  rejects(file_with_header(R"({"a":{"dtype":"F32")", four), {"not valid JSON"});
  rejects(file_with_header("{\"\xff\":{}}", four), {"not valid JSON", "UTF-8"});
  rejects(file_with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                           R"("a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                           four),
          {"names 'a' twice"});
  rejects(file_with_header(R"({"a":{"dtype":"F32","shape":[[[1]]],"data_offsets":[0,4]}})", four), {"deeper"});
  rejects(file_with_header(R"({"a":3})", four), {"tensor 'a'", "not a JSON object"});
  rejects(file_with_header(R"({"__metadata__":{"k":1}})", {}), {"'__metadata__' entry 'k' is not a string"});
  rejects(file_with_header(R"({"__metadata__":["k"]})", {}), {"'__metadata__' is not a JSON object"});

  // Per tensor: dtype, shape, offsets.
  const auto entry = [&](const std::string& body, const bytes& data) {
    return file_with_header(R"({"w":{)" + body + "}}", data);
  };
  rejects(entry(R"("dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4])", four), {"tensor 'w'", "\"F8_E4M3\" is not one meap reads"});
  rejects(entry(R"("dtype":"float32","shape":[1],"data_offsets":[0,4])", four), {"\"float32\" is not one"});
  rejects(entry(R"("dtype":4,"shape":[1],"data_offsets":[0,4])", four), {"no \"dtype\" string"});
  rejects(entry(R"("shape":[1],"data_offsets":[0,4])", four), {"no \"dtype\" string"});
  rejects(entry(R"("dtype":"F32","shape":[-1],"data_offsets":[0,4])", four), {"shape [-1] holds -1", "non-negative integer"});
  rejects(entry(R"("dtype":"F32","shape":[1.0],"data_offsets":[0,4])", four), {"non-negative integer"});
  rejects(entry(R"("dtype":"F32","shape":"1","data_offsets":[0,4])", four), {"no \"shape\" array"});
  rejects(entry(R"("dtype":"F32","data_offsets":[0,4])", four), {"no \"shape\" array"});
  rejects(entry(R"("dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,4])", four),
          {"more elements than 64-bit"});
  rejects(entry(R"("dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,4])", four), {"more bytes than 64-bit"});
  rejects(entry(R"("dtype":"F32","shape":[1],"data_offsets":[4,0])", four), {"[4, 0] end before they begin"});
  rejects(entry(R"("dtype":"F32","shape":[1],"data_offsets":[0,8])", four), {"[0, 8] reach past the end of the 4-byte"});
  rejects(entry(R"("dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551615])", four), {"reach past the end"});
  rejects(entry(R"("dtype":"F32","shape":[2],"data_offsets":[0,4])", four), {"hold 4 bytes, but shape [2] of F32 needs 8"});
  rejects(entry(R"("dtype":"F32","shape":[1],"data_offsets":[0])", four), {"no \"data_offsets\" pair"});
  rejects(entry(R"("dtype":"F32","shape":[1],"data_offsets":[0,-4])", four), {"no \"data_offsets\" pair"});
  rejects(entry(R"("dtype":"F32","shape":[1],"data_offsets":[0,4,8])", four), {"no \"data_offsets\" pair"});

  // The tiling of the buffer.
  const bytes eight = byte_list({1, 2, 3, 4, 5, 6, 7, 8});
  const bytes twelve = byte_list({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
  rejects(file_with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                           eight),
          {"tensor 'b'", "overlap tensor 'a'"});
  rejects(file_with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                           R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                           twelve),
          {"tensor 'b'", "leave a hole", "[4, 8)"});
  rejects(file_with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight), {"leave a hole", "[0, 4)"});
  rejects(file_with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", eight),
          {"cover 4 bytes of the 8-byte data buffer"});
  rejects(file_with_header("{}", four), {"cover 0 bytes of the 4-byte"});
  // Empty tensors may sit anywhere a boundary is; inside another tensor they overlap it.
  BOOST_CHECK_NO_THROW(meap::safetensors_file::from_bytes(file_with_header(
      R"({"e":{"dtype":"F32","shape":[0],"data_offsets":[8,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("f":{"dtype":"U8","shape":[0,5],"data_offsets":[0,0]}})",
      eight)));
  rejects(file_with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("e":{"dtype":"F32","shape":[0],"data_offsets":[2,2]}})",
                           eight),
          {"tensor 'e'", "overlap tensor 'a'"});
}

// meap views hold at most meap::max_rank (8) axes: a rank-9 tensor is listed, and view/load say why
// they cannot hand it out.
BOOST_AUTO_TEST_CASE(tensors_beyond_max_rank_are_listed_but_not_viewed) {
  const auto file = meap::safetensors_file::from_bytes(
      file_with_header(R"({"deep":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,2],"data_offsets":[0,2]}})", byte_list({3, 4})),
      "deep.safetensors");
  BOOST_TEST(file.entry("deep").shape.size() == 9u);
  BOOST_TEST(file.entry("deep").numel() == 2);
  BOOST_CHECK_EXCEPTION(file.view("deep"), meap::error, error_says("path", {"tensor 'deep'", "rank 9 exceeds meap::max_rank = 8"}));
  BOOST_CHECK_EXCEPTION(file.load<std::uint8_t>("deep"), meap::error, error_says("path", {"rank 9"}));
}

BOOST_AUTO_TEST_CASE(missing_and_non_regular_files_are_rejected) {
  scratch_directory dir;
  BOOST_CHECK_EXCEPTION(meap::safetensors_file(dir / "absent.safetensors"), meap::error,
                        error_says("path", {"absent.safetensors", "cannot open", "No such file"}));
  BOOST_CHECK_EXCEPTION(meap::safetensors_file(dir.path()), meap::error, error_says("path", {"not a regular file"}));
}

// Every single-byte change of the length field and header either still parses into a file whose
// tensors all lie inside the buffer, or is a meap::error: never another exception, never a
// read outside the buffer (the sanitizer build checks the latter).
BOOST_AUTO_TEST_CASE(single_byte_corruptions_never_escape_validation) {
  const auto a = stored_tensor::make<float>({2}, {1, 2});
  const auto b = stored_tensor::make<meap::bfloat16>({3}, {meap::bfloat16(1.0f), meap::bfloat16(2.0f), meap::bfloat16(3.0f)});
  const auto c = stored_tensor::make<std::int8_t>({1, 2}, {-1, 1});
  meap::safetensors_writer writer;
  writer.add("a", a.view).add("b", b.view).add("c", c.view).add_metadata("k", "v");
  const bytes good = writer.serialize();
  std::uint64_t n = 0;
  std::memcpy(&n, good.data(), 8);
  int accepted = 0, rejected = 0;
  for (std::size_t position = 0; position < 8 + n; ++position) {
    const auto original = static_cast<unsigned>(good[position]);
    for (const unsigned replacement : {0x00u, 0x20u, 0x22u, 0x2cu, 0x30u, 0x31u, 0x39u, 0x5bu, 0x7bu, 0x7du, 0xffu,
                                       original ^ 0x01u, original ^ 0x80u}) {
      if (replacement == original) continue;
      bytes damaged = good;
      damaged[position] = static_cast<std::byte>(replacement);
      try {
        const auto file = meap::safetensors_file::from_bytes(damaged);
        ++accepted;
        for (const auto& e : file.entries()) {
          BOOST_TEST(e.end <= file.data_bytes());
          if (is_floating(e.type)) (void)file.load<double>(e.name);
        }
      } catch (const meap::error&) {
        ++rejected;
      } catch (const std::exception& other) {
        BOOST_ERROR("byte " << position << " = " << replacement << ": not a meap::error: " << other.what());
      }
    }
  }
  BOOST_TEST(rejected > 100);
  BOOST_TEST_MESSAGE(accepted << " harmless corruptions (e.g. inside names), " << rejected << " rejected");
}

BOOST_AUTO_TEST_CASE(writer_checks_what_it_is_given) {
  std::vector<float> storage(6, 1.0f);
  const auto v = meap::make_view(std::span<float>(storage), {2, 3});
  meap::safetensors_writer writer;
  writer.add("w", v);
  BOOST_CHECK_EXCEPTION(writer.add("w", v), meap::error, error_says("name", {"unique"}));
  BOOST_CHECK_EXCEPTION(writer.add("", v), meap::error, error_says("name", {"non-empty"}));
  BOOST_CHECK_EXCEPTION(writer.add("__metadata__", v), meap::error, error_says("name", {"reserved"}));
  BOOST_CHECK_EXCEPTION(writer.add("bad\xff", v), meap::error, error_says("name", {"UTF-8"}));
  BOOST_CHECK_EXCEPTION(writer.add("t", v.transpose(0, 1)), meap::error,
                        error_says("view", {"tensor 't'", "strides (1, 3)", "contiguous"}));
  meap::any_view device = meap::to_any(v);
  device.where = {meap::device_kind::cuda, 0};
  BOOST_CHECK_EXCEPTION(writer.add("g", device), meap::error, error_says("view", {"cuda:0", "host memory"}));
  meap::any_view null = meap::to_any(v);
  null.data = nullptr;
  BOOST_CHECK_EXCEPTION(writer.add("n", null), meap::error, error_says("view", {"null"}));
  BOOST_CHECK_EXCEPTION(writer.add_metadata("k", "\xc3"), meap::error, error_says("value", {"UTF-8"}));
  BOOST_TEST(writer.size() == 1u);
  // An extent-1 axis with an odd stride is still contiguous.
  const meap::tensor_view<float, meap::cpu> column(storage.data(), {6, 1}, {1, 42});
  BOOST_CHECK_NO_THROW(writer.add("column", column));
}

// save() goes through atomic_file: no temporary stays, and a failed save leaves what was there.
BOOST_AUTO_TEST_CASE(save_is_atomic) {
  scratch_directory dir;
  const auto a = stored_tensor::make<float>({2}, {1, 2});
  meap::safetensors_writer first;
  first.add("a", a.view);
  const auto path = dir / "model.safetensors";
  first.save(path);
  const bytes before = io_test::read_bytes(path);

  const auto b = stored_tensor::make<float>({3}, {3, 4, 5});
  meap::safetensors_writer second;
  second.add("b", b.view);
  BOOST_CHECK_EXCEPTION(second.save(dir / "missing" / "model.safetensors"), meap::error,
                        error_says("path", {"missing", "cannot create a temporary"}));
  io_test::fs::create_directory(dir / "taken");
  io_test::write_bytes(dir / "taken" / "x", before);
  BOOST_CHECK_EXCEPTION(second.save(dir / "taken"), meap::error, error_says("path", {"cannot rename"}));
  BOOST_TEST(dir.listing() == (std::vector<std::string>{"model.safetensors", "taken"}), boost::test_tools::per_element());
  BOOST_TEST((io_test::read_bytes(dir / "taken" / "x") == before));
  BOOST_TEST((io_test::read_bytes(path) == before));

  second.save(path);
  BOOST_TEST(dir.listing() == (std::vector<std::string>{"model.safetensors", "taken"}), boost::test_tools::per_element());
  const meap::safetensors_file file(path);
  BOOST_TEST(!file.contains("a"));
  BOOST_TEST(file.load<float>("b").data()[2] == 5.0f);
}

BOOST_AUTO_TEST_CASE(dtype_names_follow_the_format) {
  BOOST_TEST(meap::safetensors_dtype_name(meap::dtype::bf16) == "BF16");
  BOOST_TEST(meap::safetensors_dtype_name(meap::dtype::u64) == "U64");
  BOOST_TEST((meap::safetensors_dtype_from_name("F16") == meap::dtype::f16));
  BOOST_TEST(!meap::safetensors_dtype_from_name("BOOL").has_value());
  BOOST_TEST(!meap::safetensors_dtype_from_name("f32").has_value());
  for (const auto type : {meap::dtype::f64, meap::dtype::f32, meap::dtype::f16, meap::dtype::bf16, meap::dtype::i64,
                          meap::dtype::i32, meap::dtype::i16, meap::dtype::i8, meap::dtype::u64, meap::dtype::u32,
                          meap::dtype::u16, meap::dtype::u8})
    BOOST_TEST((meap::safetensors_dtype_from_name(meap::safetensors_dtype_name(type)) == type));
}

BOOST_AUTO_TEST_SUITE_END()
