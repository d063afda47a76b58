// tests/support/cuda.hpp: what the gpu-labelled tests share: a stream per test case, copies to and
// from the device as float vectors, and the relative error of one against the other.
#pragma once

#include <meap/cuda.hpp>

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <type_traits>
#include <vector>

namespace meap_test {

// A CUDA stream per test case (meap::cuda_stream: destroyed with the fixture, after its work).
struct stream_fixture {
  meap::cuda_stream stream;
  meap::cuda device{stream.device()};
};

// The elements of a view on either device, as floats (waits for the stream).
template <class T, class Device>
std::vector<float> values_of(const meap::cuda& device, const meap::tensor_view<T, Device>& view) {
  std::vector<float> out(static_cast<std::size_t>(view.numel()));
  if constexpr (std::is_same_v<Device, meap::cuda>) {
    const auto copy = meap::to_host(device, view);
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(copy.data()[i]);
  } else {
    const auto copy = meap::clone(meap::cpu{}, view);
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(copy.data()[i]);
  }
  return out;
}

// A device tensor of `shape` holding `values` converted to T.
template <class T>
meap::tensor<T, meap::cuda> upload(const meap::cuda& device, const std::vector<float>& values, const meap::dims& shape) {
  std::vector<T> converted(values.begin(), values.end());
  auto result = meap::to_device(device, meap::make_view(std::span<const T>(converted), shape));
  meap::synchronize(device);
  return result;
}

// max |got - ref| / max(1e-30, max |ref|); infinite when only one side is NaN.
inline double worst_relative(const std::vector<float>& got, const std::vector<float>& ref) {
  BOOST_TEST_REQUIRE(got.size() == ref.size());
  double worst = 0, scale = 1e-30;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(got[i]) != std::isnan(ref[i])) return std::numeric_limits<double>::infinity();
    worst = std::max(worst, std::abs(static_cast<double>(got[i]) - ref[i]));
    scale = std::max(scale, std::abs(static_cast<double>(ref[i])));
  }
  return worst / scale;
}

// FNV-1a over the bytes of `values`, continuing from `h`: a digest that two processes print and
// a CTest script compares (the *_determinism_across_processes tests).
inline constexpr std::uint64_t digest_start = 0xcbf29ce484222325ULL;
inline std::uint64_t digest_of(std::uint64_t h, const std::vector<float>& values) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(values.data());
  for (std::size_t i = 0; i < values.size() * sizeof(float); ++i) h = (h ^ bytes[i]) * 0x100000001b3ULL;
  return h;
}

inline bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace meap_test
