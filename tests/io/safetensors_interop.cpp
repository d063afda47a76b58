// safetensors_interop: the C++ half of tests/io/safetensors_interop.py, an independent
// stdlib-only Python reader and writer of the format.
//   safetensors_interop write <path>   writes the tensors below (and metadata) with meap's writer
//   safetensors_interop check <path>   reads a file written by Python and checks the same tensors
// Exit status 0 on success, 1 with a message on stderr otherwise.
#include <meap/core/dtype.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/io/safetensors.hpp>

#include <cstdint>
#include <cstring>
#include <exception>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

namespace {

// The tensors both sides agree on (the Python script spells out the same values).
struct expected_tensors {
  std::vector<float> f32{-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f};                             // [2, 3]
  std::vector<double> f64{0.1, -2.0, 1e300};                                                 // [3]
  std::vector<meap::half> f16{meap::half(1.5f), meap::half(-0.25f)};                         // [2]
  std::vector<meap::bfloat16> bf16{meap::bfloat16(1.0f), meap::bfloat16(-3.0f)};             // [2]
  std::vector<std::int64_t> i64{std::numeric_limits<std::int64_t>::min(), std::numeric_limits<std::int64_t>::max()};
  std::vector<std::uint8_t> u8{0, 128, 255};                                                 // [3]
  std::vector<float> scalar{7.0f};                                                           // []
  std::vector<std::int32_t> empty{};                                                         // [0, 2]
};

template <class T>
meap::tensor_view<T, meap::cpu> view(std::vector<T>& data, meap::dims shape) {
  return meap::tensor_view<T, meap::cpu>(data.empty() ? nullptr : data.data(), shape);
}

template <class T>
bool same(const meap::safetensors_file& file, const std::string& name, const std::vector<T>& expected,
          std::vector<meap::index_t> shape) {
  const auto& e = file.entry(name);
  if (e.type != meap::dtype_of<T> || e.shape != shape) {
    std::cerr << name << ": wrong dtype or shape\n";
    return false;
  }
  const auto loaded = file.load<T>(name);
  if (!expected.empty() && std::memcmp(loaded.data(), expected.data(), expected.size() * sizeof(T)) != 0) {
    std::cerr << name << ": wrong values\n";
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: safetensors_interop write|check <path>\n";
    return 2;
  }
  const std::string mode = argv[1];
  expected_tensors t;
  try {
    if (mode == "write") {
      meap::safetensors_writer writer;
      writer.add("f32", view(t.f32, {2, 3}))
          .add("f64", view(t.f64, {3}))
          .add("f16", view(t.f16, {2}))
          .add("bf16", view(t.bf16, {2}))
          .add("i64", view(t.i64, {2}))
          .add("u8", view(t.u8, {3}))
          .add("scalar", view(t.scalar, meap::dims{}))
          .add("empty", view(t.empty, {0, 2}))
          .add_metadata("format", "pt")
          .add_metadata("producer", "meap");
      writer.save(argv[2]);
      return 0;
    }
    if (mode == "check") {
      const meap::safetensors_file file(argv[2]);
      bool ok = file.size() == 8 && file.metadata().size() == 1 && file.metadata().at("format") == "pt";
      ok = same(file, "f32", t.f32, {2, 3}) && ok;
      ok = same(file, "f64", t.f64, {3}) && ok;
      ok = same(file, "f16", t.f16, {2}) && ok;
      ok = same(file, "bf16", t.bf16, {2}) && ok;
      ok = same(file, "i64", t.i64, {2}) && ok;
      ok = same(file, "u8", t.u8, {3}) && ok;
      ok = same(file, "scalar", t.scalar, {}) && ok;
      ok = same(file, "empty", t.empty, {0, 2}) && ok;
      const auto as_float = file.load<float>("bf16");
      ok = ok && as_float.data()[1] == -3.0f;
      if (!ok) std::cerr << "check failed for " << argv[2] << "\n";
      return ok ? 0 : 1;
    }
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  std::cerr << "unknown mode " << mode << "\n";
  return 2;
}
