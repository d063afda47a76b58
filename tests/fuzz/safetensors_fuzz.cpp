// Fuzz target: meap::safetensors_file::from_bytes, then every way of reading the tensors of a file
// that parsed (views, typed loads, loads into contiguous and strided tensors, conversions), and a
// round trip through meap::safetensors_writer (with a data checksum) that must reproduce names,
// dtypes, shapes, bytes and metadata.
#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/dispatch.hpp>
#include <meap/core/dtype.hpp>
#include <meap/core/tensor.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/io/safetensors.hpp>

#include "fuzz_support.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace {

using meap_fuzz::check;
using meap_fuzz::expect_meap_error;

std::size_t byte_count(const meap::safetensors_entry& e) {
  return static_cast<std::size_t>(e.end - e.begin);
}

bool same_bytes(const void* a, const void* b, std::size_t n) {
  return n == 0 || std::memcmp(a, b, n) == 0;
}

// Every typed way of reading one entry whose dtype is T.
template <class T>
void load_typed(const meap::safetensors_file& file, const meap::safetensors_entry& e, const std::byte* raw) {
  expect_meap_error([&] {
    const meap::tensor<T, meap::cpu> loaded = file.load<T>(e.name);
    check(loaded.numel() == e.numel(), "load<T>() returned the entry's element count");
    if (e.type == meap::dtype_of<T>) {
      check(loaded.bytes() == byte_count(e), "load<T>() of the stored dtype returned the entry's byte count");
      if (raw != nullptr) check(same_bytes(loaded.data(), raw, byte_count(e)), "load<T>() of the stored dtype copies the bytes");
    }

    (void)file.load<T>(e.name, loaded.shape());

    auto contiguous = meap::zeros<T>(meap::cpu{}, loaded.shape());
    file.load_into(e.name, contiguous.view());
    check(same_bytes(contiguous.data(), loaded.data(), loaded.bytes()), "load_into() a contiguous tensor equals load()");

    // A strided destination: every other element of a tensor twice as wide in its last axis.
    const meap::dims shape = loaded.shape();
    if (shape.rank() >= 1 && loaded.numel() > 0 && loaded.numel() <= (1 << 16)) {
      meap::dims wide = shape;
      wide[wide.rank() - 1] *= 2;
      auto storage = meap::zeros<T>(meap::cpu{}, wide);
      const meap::tensor_view<T, meap::cpu> strided(storage.data(), shape, meap::contiguous_strides(wide));
      file.load_into(e.name, strided);
      const auto packed = meap::clone(meap::cpu{}, strided);
      check(same_bytes(packed.data(), loaded.data(), loaded.bytes()), "load_into() a strided tensor equals load()");
    }

    if (e.type == meap::dtype_of<T>) (void)file.view_as<T>(e.name);
  });
}

void exercise(const meap::safetensors_file& file) {
  std::uint64_t covered = 0;
  for (const auto& e : file.entries()) {
    check(file.contains(e.name) && &file.entry(e.name) == &e, "entry(name) finds every listed entry");
    check(e.begin <= e.end && e.end <= file.data_bytes(), "entries lie inside the data buffer");
    covered += e.end - e.begin;

    // The bytes in place: read every one of them (AddressSanitizer checks the range).
    const std::byte* raw = nullptr;
    expect_meap_error([&] {
      const meap::any_view view = file.view(e.name);
      check(view.type == e.type, "view() keeps the dtype");
      check(view.shape.product() == e.numel(), "view() keeps the element count");
      check(view.data != nullptr || byte_count(e) == 0, "view() of a non-empty tensor has data");
      unsigned sum = 0;
      const auto* bytes = static_cast<const unsigned char*>(view.data);
      for (std::size_t i = 0; i < byte_count(e); ++i) sum += bytes[i];
      (void)sum;
      raw = static_cast<const std::byte*>(view.data);
    });

    meap::dispatch(e.type, [&]<class T>(meap::type_tag<T>) { load_typed<T>(file, e, raw); });
    // Conversions to the floating types (a meap::error for integer dtypes).
    load_typed<float>(file, e, nullptr);
    load_typed<double>(file, e, nullptr);
    load_typed<meap::bfloat16>(file, e, nullptr);
  }
  check(covered == file.data_bytes(), "the entries tile the data buffer");

  bool refused = false;
  try {
    (void)file.entry(std::string("\x01 no such tensor"));
  } catch (const meap::error&) {
    refused = true;
  }
  check(refused, "entry() of an unknown name throws meap::error");
}

// Writes what was read with safetensors_writer and reads it back: the same tensors must come out.
void round_trip(const meap::safetensors_file& file) {
  meap::safetensors_writer writer;
  std::vector<std::byte> image;
  const bool written = expect_meap_error([&] {
    for (const auto& e : file.entries()) writer.add(e.name, file.view(e.name));
    for (const auto& [key, value] : file.metadata()) writer.add_metadata(key, value);
    writer.add_data_checksum();  // replaces a recorded CRC: the writer may order the data differently
    image = writer.serialize();
  });
  if (!written) return;  // a view the reader refuses (misaligned data, rank above max_rank)

  std::optional<meap::safetensors_file> again;
  try {
    again.emplace(meap::safetensors_file::from_bytes(image, "round trip"));
  } catch (const meap::error& e) {
    std::fprintf(stderr, "meap fuzz: %s\n", e.what());
    meap_fuzz::invariant_broken("the writer's image of a file the reader accepted does not read back");
  }
  check(again->size() == file.size(), "the round trip keeps the tensor count");
  auto metadata = again->metadata();
  const auto crc = metadata.find(std::string(meap::safetensors_checksum_key));
  check(crc != metadata.end(), "the round trip records the data checksum");
  if (!file.metadata().contains(crc->first)) metadata.erase(crc);
  else metadata[crc->first] = file.metadata().at(crc->first);
  check(metadata == file.metadata(), "the round trip keeps the metadata");
  check(again->data_bytes() == file.data_bytes(), "the round trip keeps the data size");
  for (std::size_t i = 0; i < file.size(); ++i) {
    const auto& a = file.entries()[i];
    const auto& b = again->entries()[i];
    check(a.name == b.name && a.type == b.type && a.shape == b.shape, "the round trip keeps names, dtypes and shapes");
    check(same_bytes(file.view(a.name).data, again->view(b.name).data, byte_count(a)), "the round trip keeps the bytes");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> input(data, size);
  std::optional<meap::safetensors_file> file;
  expect_meap_error([&] { file.emplace(meap::safetensors_file::from_bytes(std::as_bytes(input), "fuzz input")); });
  if (!file) return 0;
  exercise(*file);
  round_trip(*file);
  return 0;
}
