// meap/io/safetensors.hpp: read and write safetensors files (the Hugging Face format).
//
// Layout (all integers little-endian):
//   8 bytes    N, a u64: the header length
//   N bytes    a UTF-8 JSON object:
//                {"__metadata__": {"key": "value", ...},          (optional, strings only)
//                 "<tensor name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]},
//                 ...}
//   the rest   the data buffer; a tensor's bytes are buffer[begin, end), row-major.
//
// The writer produces what the reference implementation (huggingface/safetensors) produces:
// tensors laid out by decreasing element size and then by name (so every tensor starts at a
// multiple of its element size), "__metadata__" first, compact JSON, the header padded with
// spaces to a multiple of 8 bytes, and the file written atomically (io/atomic_file.hpp).
//
// The reader checks everything before handing out a byte: header length within the file and at
// most 100 MB, valid JSON (no duplicate names), known dtypes, non-negative integer shapes,
// offsets inside the buffer whose length matches shape and dtype, and tensors that tile the
// buffer exactly (no overlap, no hole, no trailing bytes), as the reference reader does. Any
// violation is a meap::error naming the file, the tensor and the problem. See docs/io.md.
//
//   meap::safetensors_writer out;
//   out.add("model.norm.weight", norm.view()).add_metadata("format", "pt");
//   out.save("model.safetensors");
//
//   const meap::safetensors_file in("model.safetensors");
//   auto w = in.load<float>("model.norm.weight", {d_model});  // F32/F16/BF16/F64 on disk
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/dispatch.hpp>
#include <meap/core/dtype.hpp>
#include <meap/core/error.hpp>
#include <meap/core/tensor.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/io/atomic_file.hpp>

#include <nlohmann/json.hpp>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#pragma push_macro("MEAP_DETAIL_ALLOWED")
#define MEAP_DETAIL_ALLOWED 1
#include <meap/io/detail/posix_file.hpp>
#pragma pop_macro("MEAP_DETAIL_ALLOWED")

static_assert(std::endian::native == std::endian::little,
              "meap/io/safetensors.hpp: safetensors data are little-endian; this host is not");

namespace meap {

// The reference reader refuses longer headers; so do we, and the writer will not produce one.
inline constexpr std::uint64_t safetensors_max_header_bytes = 100'000'000;

// "F32", "BF16", ...: the dtype names of the format.
constexpr std::string_view safetensors_dtype_name(dtype type) noexcept {
  switch (type) {
    case dtype::f64: return "F64";
    case dtype::f32: return "F32";
    case dtype::f16: return "F16";
    case dtype::bf16: return "BF16";
    case dtype::i64: return "I64";
    case dtype::i32: return "I32";
    case dtype::i16: return "I16";
    case dtype::i8: return "I8";
    case dtype::u64: return "U64";
    case dtype::u32: return "U32";
    case dtype::u16: return "U16";
    case dtype::u8: return "U8";
  }
  return "?";
}

// The meap dtype of a format name; nullopt for names meap does not support (BOOL, F8_E4M3, ...).
constexpr std::optional<dtype> safetensors_dtype_from_name(std::string_view name) noexcept {
  constexpr dtype all[] = {dtype::f64, dtype::f32, dtype::f16, dtype::bf16, dtype::i64, dtype::i32,
                           dtype::i16, dtype::i8,  dtype::u64, dtype::u32,  dtype::u16, dtype::u8};
  for (const dtype type : all)
    if (safetensors_dtype_name(type) == name) return type;
  return std::nullopt;
}

// One tensor of a file, as its header describes it.
struct safetensors_entry {
  std::string name;
  dtype type = dtype::f32;
  std::vector<index_t> shape;   // any rank (views need rank <= meap::max_rank)
  std::uint64_t begin = 0;      // byte offsets in the data buffer
  std::uint64_t end = 0;

  index_t numel() const {
    index_t n = 1;
    for (const index_t extent : shape) n *= extent;  // validated not to overflow when read
    return n;
  }
};

namespace detail {

// "[2, 3]"
inline std::string shape_text(std::span<const index_t> shape) {
  std::string text = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) text += ", ";
    text += std::to_string(shape[i]);
  }
  return text + "]";
}

inline bool is_contiguous_layout(const dims& shape, const dims& strides) {
  index_t expected = 1;
  for (int i = shape.rank() - 1; i >= 0; --i) {
    if (shape[i] != 1 && strides[i] != expected) return false;
    expected *= shape[i];
  }
  return true;
}

struct aligned_bytes_deleter {
  std::size_t bytes = 0;
  void operator()(std::byte* p) const noexcept { device_traits<cpu>::deallocate(cpu{}, p, bytes); }
};
using aligned_bytes = std::unique_ptr<std::byte[], aligned_bytes_deleter>;

// 64-byte aligned storage (a null pointer for 0 bytes).
inline aligned_bytes allocate_bytes(std::size_t bytes) {
  return aligned_bytes(static_cast<std::byte*>(device_traits<cpu>::allocate(cpu{}, bytes)),
                       aligned_bytes_deleter{bytes});
}

// Element-wise conversion from a buffer of `from` (any alignment) into T. Floating dtypes convert
// among themselves (16-bit floats through float, as everywhere in meap); other dtypes must match.
template <class T>
void convert_from_bytes(const std::byte* source, dtype from, T* destination, index_t count) {
  if (from == dtype_of<T>) {
    if (count > 0) std::memcpy(destination, source, static_cast<std::size_t>(count) * sizeof(T));
    return;
  }
  dispatch_floating(from, "source", [&]<class S>(type_tag<S>) {
    for (index_t i = 0; i < count; ++i) {
      S value;
      std::memcpy(&value, source + static_cast<std::size_t>(i) * sizeof(S), sizeof(S));
      if constexpr (std::is_same_v<S, half> || std::is_same_v<S, bfloat16>)
        destination[i] = static_cast<T>(static_cast<float>(value));
      else
        destination[i] = static_cast<T>(value);
    }
  });
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Reading.

// The metadata key under which meap's writer records the CRC-32 of a file's data buffer
// (safetensors_writer::add_data_checksum); readers verify it when present, so a flipped or lost
// byte in the tensors of a checkpoint is an error at load, never silent garbage.
inline constexpr std::string_view safetensors_checksum_key = "meap.data_crc32";

namespace detail {

// CRC-32 (zlib's, the polynomial of gzip and PNG) of `bytes` bytes, continuing from `crc`.
inline std::uint32_t crc32_update(std::uint32_t crc, const void* data, std::size_t bytes) {
  const auto* p = static_cast<const Bytef*>(data);
  while (bytes > 0) {  // crc32_z takes z_size_t, but stay within uInt for older zlibs' fallbacks
    const std::size_t n = bytes < (std::size_t{1} << 30) ? bytes : (std::size_t{1} << 30);
    crc = static_cast<std::uint32_t>(::crc32(crc, p, static_cast<uInt>(n)));
    p += n;
    bytes -= n;
  }
  return crc;
}

inline std::string crc32_text(std::uint32_t crc) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string text(8, '0');
  for (int i = 7; i >= 0; --i, crc >>= 4) text[static_cast<std::size_t>(i)] = digits[crc & 15];
  return text;
}

}  // namespace detail

class safetensors_file {
 public:
  // Reads and validates the whole file. Throws meap::error (argument "path") naming the file and
  // the problem.
  explicit safetensors_file(const std::filesystem::path& path) : path_(path) {
    constexpr std::string_view function = "meap::safetensors_file";
    const auto opened = detail::open_regular_file(function, path_);  // never blocks on a FIFO
    const int fd = opened.fd;
    const detail::descriptor_guard guard{fd};
    const auto file_size = opened.bytes;

    unsigned char length_bytes[8] = {};
    const std::uint64_t header_bytes = read_header_length(file_size, length_bytes, fd);
    std::string header(static_cast<std::size_t>(header_bytes), '\0');
    int code = 0;
    if (!detail::read_exactly(fd, header.data(), header.size(), code)) read_failed(code);
    const std::uint64_t data_bytes = file_size - 8 - header_bytes;
    data_ = detail::allocate_bytes(static_cast<std::size_t>(data_bytes));
    data_bytes_ = data_bytes;
    if (!detail::read_exactly(fd, data_.get(), static_cast<std::size_t>(data_bytes), code)) read_failed(code);
    // A file that grew while we read it is as suspect as one that shrank.
    char extra = 0;
    if (::read(fd, &extra, 1) > 0) fail("changed size while being read");
    parse_header(header);
  }

  // Parses a whole file image held in memory; `source` names it in messages.
  static safetensors_file from_bytes(std::span<const std::byte> bytes, std::string source = "<memory>") {
    safetensors_file file(std::move(source), private_tag{});
    const std::uint64_t size = bytes.size();
    unsigned char length_bytes[8] = {};
    if (size >= 8) std::memcpy(length_bytes, bytes.data(), 8);
    const std::uint64_t header_bytes = file.read_header_length(size, length_bytes, -1);
    const std::string header(reinterpret_cast<const char*>(bytes.data()) + 8, static_cast<std::size_t>(header_bytes));
    file.data_bytes_ = size - 8 - header_bytes;
    file.data_ = detail::allocate_bytes(static_cast<std::size_t>(file.data_bytes_));
    if (file.data_bytes_ > 0)
      std::memcpy(file.data_.get(), bytes.data() + 8 + header_bytes, static_cast<std::size_t>(file.data_bytes_));
    file.parse_header(header);
    return file;
  }

  const std::filesystem::path& path() const noexcept { return path_; }

  // All tensors, sorted by name.
  const std::vector<safetensors_entry>& entries() const noexcept { return entries_; }
  std::size_t size() const noexcept { return entries_.size(); }

  // The "__metadata__" map (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }

  // Bytes in the data buffer (the file size minus 8 minus the header length).
  std::uint64_t data_bytes() const noexcept { return data_bytes_; }

  bool contains(std::string_view name) const noexcept { return find(name) != nullptr; }

  // The entry for `name`; throws meap::error when the file has no such tensor.
  const safetensors_entry& entry(std::string_view name) const {
    if (const auto* found = find(name)) return *found;
    std::string known;
    for (std::size_t i = 0; i < entries_.size() && i < 8; ++i) known += (i > 0 ? ", '" : "'") + entries_[i].name + "'";
    if (entries_.size() > 8) known += ", ... (" + std::to_string(entries_.size()) + " in all)";
    throw error("meap::safetensors_file", "name",
                "meap::safetensors_file: '" + path_.string() + "': no tensor named '" + std::string(name) + "'" +
                    (entries_.empty() ? std::string(" (the file holds no tensors)") : " (it holds " + known + ")"));
  }

  // The tensor's bytes in place, as a contiguous host any_view (valid while this object lives;
  // do not write through it). Needs rank <= meap::max_rank and data that start at a multiple of
  // the element size (always true for files from the reference writer or ours); load() has
  // neither restriction.
  any_view view(std::string_view name) const {
    const auto& e = entry(name);
    const dims shape = view_shape(e);
    if (e.begin % size_of(e.type) != 0)
      tensor_fail(e, "data start at buffer offset " + std::to_string(e.begin) + ", not a multiple of the element size " +
                         std::to_string(size_of(e.type)) + "; use load(), which copies");
    return any_view{data_.get() + e.begin, e.type, device_location{device_kind::cpu, 0}, shape, contiguous_strides(shape)};
  }

  // The tensor in place as a typed view; its dtype must be exactly T.
  template <class T>
  tensor_view<const T, cpu> view_as(std::string_view name) const {
    const auto& e = entry(name);
    if (e.type != dtype_of<T>)
      tensor_fail(e, std::string("has dtype ") + std::string(safetensors_dtype_name(e.type)) + ", not " +
                         std::string(safetensors_dtype_name(dtype_of<T>)));
    return view_cast<const T, cpu>(view(name), name);
  }

  // A new host tensor with the file's shape. Floating dtypes convert to a floating T (e.g. BF16
  // on disk into float); any other dtype must equal T.
  template <class T>
  tensor<T, cpu> load(std::string_view name) const {
    const auto& e = entry(name);
    tensor<T, cpu> result(cpu{}, view_shape(e));
    convert(e, result.data());
    return result;
  }

  // As load(name), after checking that the file's shape is `expected`.
  template <class T>
  tensor<T, cpu> load(std::string_view name, const dims& expected) const {
    const auto& e = entry(name);
    check_shape_matches(e, expected, "expected");
    return load<T>(name);
  }

  // Converts the tensor into `destination` (any strides), whose shape must match the file's.
  template <class T>
  void load_into(std::string_view name, const tensor_view<T, cpu>& destination) const {
    static_assert(!std::is_const_v<T>, "meap::safetensors_file::load_into: destination must be mutable");
    const auto& e = entry(name);
    check_shape_matches(e, destination.shape(), "destination");
    if (destination.is_contiguous()) {
      convert(e, destination.data());
      return;
    }
    const tensor<T, cpu> staged = load<T>(name);
    copy(cpu{}, staged.view(), destination);
  }

 private:
  struct private_tag {};
  safetensors_file(std::string source, private_tag) : path_(std::move(source)) {}

  [[noreturn]] void fail(const std::string& what) const {
    detail::throw_file_error("meap::safetensors_file", path_, what);
  }
  [[noreturn]] void tensor_fail(const safetensors_entry& e, const std::string& what) const {
    fail("tensor '" + e.name + "': " + what);
  }
  [[noreturn]] void read_failed(int code) const {
    if (code != 0) detail::throw_file_error("meap::safetensors_file", path_, "cannot read the file", code);
    fail("ended early while being read (truncated meanwhile?)");
  }

  // Checks the 8-byte length against the file size; with a file descriptor (fd >= 0) it first
  // reads the 8 bytes into length_bytes, else they are already there.
  std::uint64_t read_header_length(std::uint64_t file_size, unsigned char* length_bytes, int fd) const {
    if (file_size < 8)
      fail("is " + std::to_string(file_size) +
           " bytes long, shorter than the 8-byte header length that starts a safetensors file");
    int code = 0;
    if (fd >= 0 && !detail::read_exactly(fd, length_bytes, 8, code)) read_failed(code);
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | length_bytes[i];
    if (n > safetensors_max_header_bytes)
      fail("header length " + std::to_string(n) + " exceeds the limit of " +
           std::to_string(safetensors_max_header_bytes) + " bytes (corrupt length field?)");
    if (n > file_size - 8)
      fail("header length " + std::to_string(n) + " exceeds the " + std::to_string(file_size - 8) +
           " bytes that follow it (truncated file?)");
    if (n < 2) fail("header length " + std::to_string(n) + " is too short for a JSON object");
    return n;
  }

  dims view_shape(const safetensors_entry& e) const {
    if (e.shape.size() > static_cast<std::size_t>(max_rank))
      tensor_fail(e, "rank " + std::to_string(e.shape.size()) + " exceeds meap::max_rank = " + std::to_string(max_rank));
    return dims(std::span<const index_t>(e.shape));
  }

  void check_shape_matches(const safetensors_entry& e, const dims& expected, std::string_view argument) const {
    const bool same = e.shape.size() == static_cast<std::size_t>(expected.rank()) &&
                      std::equal(e.shape.begin(), e.shape.end(), expected.begin());
    if (!same)
      throw error("meap::safetensors_file", std::string(argument),
                  "meap::safetensors_file: '" + path_.string() + "': tensor '" + e.name + "' has shape " +
                      detail::shape_text(e.shape) + ", expected " + to_string(expected));
  }

  template <class T>
  void convert(const safetensors_entry& e, T* destination) const {
    if (e.type != dtype_of<T> && !(is_floating(e.type) && is_floating(dtype_of<T>)))
      tensor_fail(e, std::string("has dtype ") + std::string(safetensors_dtype_name(e.type)) + ", which cannot load into " +
                         std::string(to_string(dtype_of<T>)) + " (only floating dtypes convert)");
    detail::convert_from_bytes(data_.get() + e.begin, e.type, destination, e.numel());
  }

  const safetensors_entry* find(std::string_view name) const noexcept {
    const auto it = std::lower_bound(entries_.begin(), entries_.end(), name,
                                     [](const safetensors_entry& e, std::string_view n) { return e.name < n; });
    return (it != entries_.end() && it->name == name) ? &*it : nullptr;
  }

  // Everything about the header; data_bytes_ is set.
  void parse_header(const std::string& text) {
    using json = nlohmann::json;
    if (text.front() != '{') fail("header does not start with '{' (not a safetensors file?)");
    // The callback sees every key as it is parsed: it catches duplicate names (the DOM keeps the
    // last, which would hide a tensor) and stops values nested deeper than the format allows.
    std::set<std::string, std::less<>> seen;
    std::string duplicate;
    bool too_deep = false;
    const json::parser_callback_t callback = [&](int depth, json::parse_event_t event, json& parsed) {
      if (depth > 3) {
        too_deep = true;
        return false;
      }
      if (event == json::parse_event_t::key && depth == 1 && duplicate.empty()) {
        std::string key = parsed.get<std::string>();
        if (!seen.insert(key).second) duplicate = std::move(key);
      }
      return true;
    };
    json header;
    try {
      header = json::parse(text, callback);
    } catch (const json::exception& e) {
      fail(std::string("header is not valid JSON: ") + e.what());
    }
    if (!duplicate.empty()) fail("header names '" + duplicate + "' twice");
    if (too_deep) fail("header nests values deeper than the format allows");
    if (!header.is_object()) fail("header is not a JSON object");

    for (auto it = header.begin(); it != header.end(); ++it) {
      if (it.key() == "__metadata__") {
        if (!it->is_object()) fail("'__metadata__' is not a JSON object of strings");
        for (auto m = it->begin(); m != it->end(); ++m) {
          if (!m->is_string()) fail("'__metadata__' entry '" + m.key() + "' is not a string");
          metadata_.emplace(m.key(), m->get<std::string>());
        }
        continue;
      }
      entries_.push_back(parse_entry(it.key(), *it));
    }
    std::sort(entries_.begin(), entries_.end(),
              [](const safetensors_entry& a, const safetensors_entry& b) { return a.name < b.name; });

    // The tensors must tile the buffer: sorted by offsets, each starts where the previous ended.
    std::vector<const safetensors_entry*> by_offset;
    by_offset.reserve(entries_.size());
    for (const auto& e : entries_) by_offset.push_back(&e);
    std::sort(by_offset.begin(), by_offset.end(), [](const safetensors_entry* a, const safetensors_entry* b) {
      return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
    });
    std::uint64_t covered = 0;
    const safetensors_entry* previous = nullptr;
    for (const auto* e : by_offset) {
      if (e->begin < covered)
        tensor_fail(*e, "data_offsets [" + std::to_string(e->begin) + ", " + std::to_string(e->end) +
                            "] overlap tensor '" + previous->name + "' (which ends at " + std::to_string(covered) + ")");
      if (e->begin > covered)
        tensor_fail(*e, "data_offsets [" + std::to_string(e->begin) + ", " + std::to_string(e->end) +
                            "] leave a hole: no tensor covers buffer bytes [" + std::to_string(covered) + ", " +
                            std::to_string(e->begin) + ")");
      covered = e->end;
      previous = e;
    }
    if (covered != data_bytes_)
      fail("the tensors cover " + std::to_string(covered) + " bytes of the " + std::to_string(data_bytes_) +
           "-byte data buffer (trailing bytes: corrupt header or appended data)");
    verify_checksum();
  }

  // A file that records the CRC-32 of its data buffer must match it.
  void verify_checksum() const {
    const auto recorded = metadata_.find(std::string(safetensors_checksum_key));
    if (recorded == metadata_.end()) return;
    const std::string actual =
        detail::crc32_text(detail::crc32_update(0, data_.get(), static_cast<std::size_t>(data_bytes_)));
    if (recorded->second != actual)
      fail("the data buffer's CRC-32 is " + actual + " but the header records " + recorded->second +
           " (the file is corrupt: a changed or lost byte)");
  }

  safetensors_entry parse_entry(const std::string& name, const nlohmann::json& value) const {
    safetensors_entry e;
    e.name = name;
    if (!value.is_object()) tensor_fail(e, "header entry is not a JSON object");

    const auto dtype_field = value.find("dtype");
    if (dtype_field == value.end() || !dtype_field->is_string()) tensor_fail(e, "has no \"dtype\" string");
    const auto name_text = dtype_field->get<std::string>();
    const auto type = safetensors_dtype_from_name(name_text);
    if (!type)
      tensor_fail(e, "dtype \"" + name_text + "\" is not one meap reads (F64, F32, F16, BF16, I64, I32, I16, I8, U64, "
                                              "U32, U16, U8)");
    e.type = *type;

    const auto shape_field = value.find("shape");
    if (shape_field == value.end() || !shape_field->is_array()) tensor_fail(e, "has no \"shape\" array");
    std::uint64_t count = 1;
    // The product of the non-zero extents, times the element size, bounds every stride and byte
    // offset a view of this shape computes; with a zero extent the element count alone is 0 and
    // would not catch [0, 2^62, 4] (whose row-major strides overflow).
    std::uint64_t reach = size_of(e.type);
    for (const auto& extent : *shape_field) {
      if (!extent.is_number_unsigned())
        tensor_fail(e, "shape " + shape_field->dump() + " holds " + extent.dump() + ", not a non-negative integer");
      const auto n = extent.get<std::uint64_t>();
      if (n > static_cast<std::uint64_t>(INT64_MAX) || __builtin_mul_overflow(count, n, &count) ||
          count > static_cast<std::uint64_t>(INT64_MAX))
        tensor_fail(e, "shape " + shape_field->dump() + " has more elements than 64-bit sizes can count");
      if (n != 0 && (__builtin_mul_overflow(reach, n, &reach) || reach > static_cast<std::uint64_t>(INT64_MAX)))
        tensor_fail(e, "shape " + shape_field->dump() + " spans more bytes than 64-bit sizes can count");
      e.shape.push_back(static_cast<index_t>(n));
    }
    std::uint64_t bytes = 0;
    if (__builtin_mul_overflow(count, static_cast<std::uint64_t>(size_of(e.type)), &bytes))
      tensor_fail(e, "shape " + shape_field->dump() + " has more bytes than 64-bit sizes can count");

    const auto offsets = value.find("data_offsets");
    if (offsets == value.end() || !offsets->is_array() || offsets->size() != 2 || !(*offsets)[0].is_number_unsigned() ||
        !(*offsets)[1].is_number_unsigned())
      tensor_fail(e, "has no \"data_offsets\" pair of non-negative integers");
    e.begin = (*offsets)[0].get<std::uint64_t>();
    e.end = (*offsets)[1].get<std::uint64_t>();
    const std::string range = "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "]";
    if (e.begin > e.end) tensor_fail(e, range + " end before they begin");
    if (e.end > data_bytes_)
      tensor_fail(e, range + " reach past the end of the " + std::to_string(data_bytes_) +
                         "-byte data buffer (truncated file?)");
    if (e.end - e.begin != bytes)
      tensor_fail(e, range + " hold " + std::to_string(e.end - e.begin) + " bytes, but shape " +
                         detail::shape_text(e.shape) + " of " + name_text + " needs " + std::to_string(bytes));
    return e;
  }

  std::filesystem::path path_;
  std::vector<safetensors_entry> entries_;
  std::map<std::string, std::string> metadata_;
  detail::aligned_bytes data_;
  std::uint64_t data_bytes_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Writing.

// Collects named host tensors (views: their memory must stay valid until save() or serialize()
// returns) and metadata, then writes one safetensors file.
class safetensors_writer {
 public:
  // Adds a contiguous host tensor. Throws meap::error for an empty, reserved or repeated name,
  // device memory, or a non-contiguous view.
  safetensors_writer& add(std::string name, const any_view& view) {
    constexpr std::string_view function = "meap::safetensors_writer::add";
    check_argument(!name.empty(), function, "name", "\"\"", "a non-empty tensor name");
    check_argument(name != "__metadata__", function, "name", name, "a tensor name other than the reserved '__metadata__'");
    check_utf8(function, "name", name);
    for (const auto& t : tensors_)
      check_argument(t.name != name, function, "name", name, "a name not added before (tensor names are unique)");
    if (view.where.kind != device_kind::cpu)
      throw_argument_error(function, "view", "tensor '" + name + "' in memory on " + to_string(view.where),
                           "host memory (copy device tensors to the host first)");
    check_argument(view.strides.rank() == view.shape.rank(), function, "view", "tensor '" + name + "' with strides " +
                   to_string(view.strides), "one stride per dimension of shape " + to_string(view.shape));
    for (int i = 0; i < view.shape.rank(); ++i)
      check_argument(view.shape[i] >= 0, function, "view", "tensor '" + name + "' of shape " + to_string(view.shape),
                     "non-negative extents");
    if (!detail::is_contiguous_layout(view.shape, view.strides))
      throw_argument_error(function, "view",
                           "tensor '" + name + "' of shape " + to_string(view.shape) + " with strides " +
                               to_string(view.strides),
                           "a contiguous (row-major) view; copy it into a contiguous tensor first");
    check_argument(view.data != nullptr || view.shape.product() == 0, function, "view",
                   "tensor '" + name + "' with a null data pointer", "a view of allocated memory");
    tensors_.push_back({std::move(name), view});
    return *this;
  }

  template <class T>
  safetensors_writer& add(std::string name, const tensor_view<T, cpu>& view) {
    return add(std::move(name), to_any(view));
  }
  template <class T>
  safetensors_writer& add(std::string name, const tensor<T, cpu>& t) {
    return add(std::move(name), to_any(t.view()));
  }

  // Sets "__metadata__"[key] = value (replacing an earlier value for key).
  safetensors_writer& add_metadata(std::string key, std::string value) {
    constexpr std::string_view function = "meap::safetensors_writer::add_metadata";
    check_utf8(function, "key", key);
    check_utf8(function, "value", value);
    metadata_[std::move(key)] = std::move(value);
    return *this;
  }

  // Records the CRC-32 of the data buffer in the metadata (key safetensors_checksum_key), which
  // safetensors_file verifies on every read. Other readers ignore the key.
  safetensors_writer& add_data_checksum() {
    checksum_ = true;
    return *this;
  }

  std::size_t size() const noexcept { return tensors_.size(); }

  // The whole file in memory.
  std::vector<std::byte> serialize() const {
    const auto plan = prepare();
    std::vector<std::byte> bytes(8 + plan.header.size() + plan.data_bytes);
    std::size_t at = 0;
    const auto put = [&](const void* data, std::size_t n) {
      if (n > 0) std::memcpy(bytes.data() + at, data, n);
      at += n;
    };
    const auto length = length_bytes(plan.header.size());
    put(length.data(), length.size());
    put(plan.header.data(), plan.header.size());
    for (const auto* t : plan.order) put(t->view.data, tensor_bytes(t->view));
    return bytes;
  }

  // Writes the file atomically: `path` holds either its previous content or the complete new
  // file, never a partial one (see io/atomic_file.hpp).
  void save(const std::filesystem::path& path) const {
    const auto plan = prepare();
    atomic_file out(path);
    const auto length = length_bytes(plan.header.size());
    out.write(length.data(), length.size());
    out.write(plan.header.data(), plan.header.size());
    for (const auto* t : plan.order) out.write(t->view.data, tensor_bytes(t->view));
    out.commit();
  }

 private:
  struct item {
    std::string name;
    any_view view;
  };
  struct plan_t {
    std::vector<const item*> order;
    std::string header;
    std::size_t data_bytes = 0;
  };

  static std::size_t tensor_bytes(const any_view& view) {
    return static_cast<std::size_t>(view.shape.product()) * size_of(view.type);
  }

  static std::array<unsigned char, 8> length_bytes(std::uint64_t n) {
    std::array<unsigned char, 8> bytes{};
    for (int i = 0; i < 8; ++i) bytes[static_cast<std::size_t>(i)] = static_cast<unsigned char>(n >> (8 * i));
    return bytes;
  }

  static void check_utf8(std::string_view function, std::string_view argument, const std::string& text) {
    try {
      (void)nlohmann::json(text).dump();
    } catch (const nlohmann::json::exception&) {
      throw_argument_error(function, argument, "a string of " + std::to_string(text.size()) + " bytes",
                           "valid UTF-8 (JSON strings are UTF-8)");
    }
  }

  // Data order: decreasing element size, then name, so each tensor starts aligned to its
  // element size (the header is padded to 8 bytes); "__metadata__" first in the header.
  plan_t prepare() const {
    plan_t plan;
    for (const auto& t : tensors_) plan.order.push_back(&t);
    std::sort(plan.order.begin(), plan.order.end(), [](const item* a, const item* b) {
      const std::size_t sa = size_of(a->view.type), sb = size_of(b->view.type);
      return sa != sb ? sa > sb : a->name < b->name;
    });
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    auto metadata = metadata_;
    if (checksum_) {
      std::uint32_t crc = 0;
      for (const auto* t : plan.order) crc = detail::crc32_update(crc, t->view.data, tensor_bytes(t->view));
      metadata[std::string(safetensors_checksum_key)] = detail::crc32_text(crc);
    }
    if (!metadata.empty()) {
      nlohmann::ordered_json meta = nlohmann::ordered_json::object();
      for (const auto& [key, value] : metadata) meta[key] = value;
      header["__metadata__"] = std::move(meta);
    }
    std::uint64_t offset = 0;
    for (const auto* t : plan.order) {
      nlohmann::ordered_json shape = nlohmann::ordered_json::array();
      for (int i = 0; i < t->view.shape.rank(); ++i) shape.push_back(static_cast<std::uint64_t>(t->view.shape[i]));
      const std::uint64_t end = offset + tensor_bytes(t->view);
      nlohmann::ordered_json entry = nlohmann::ordered_json::object();
      entry["dtype"] = std::string(safetensors_dtype_name(t->view.type));
      entry["shape"] = std::move(shape);
      entry["data_offsets"] = nlohmann::ordered_json::array({offset, end});
      header[t->name] = std::move(entry);
      offset = end;
    }
    plan.header = header.dump();
    plan.header.append((8 - plan.header.size() % 8) % 8, ' ');
    if (plan.header.size() > safetensors_max_header_bytes)
      throw_argument_error("meap::safetensors_writer", "tensors", std::to_string(tensors_.size()) + " tensors",
                           "a header of at most " + std::to_string(safetensors_max_header_bytes) +
                               " bytes (readers refuse longer ones); split the checkpoint");
    plan.data_bytes = static_cast<std::size_t>(offset);
    return plan;
  }

  std::vector<item> tensors_;
  std::map<std::string, std::string> metadata_;
  bool checksum_ = false;
};

}  // namespace meap
