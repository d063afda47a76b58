// Core on CUDA: Philox and the 16-bit conversions give the host's bits on the device; device
// memory, fill and host <-> device copies. Label `gpu`: skipped (exit 77) without a device.
#define BOOST_TEST_MODULE meap core cuda
#define BOOST_TEST_NO_MAIN
#define BOOST_TEST_ALTERNATIVE_INIT_API
#include <boost/test/unit_test.hpp>

#include <meap/cuda.hpp>

#include <cstdint>
#include <random>
#include <vector>

#include "support/gpu_main.hpp"

namespace {

// out: (3, 4) words for the three Random123 vectors.
__global__ void philox_known_answers_kernel(std::uint32_t* out) {
  const meap::u32x4 counters[3] = {{{0u, 0u, 0u, 0u}},
                                   {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}},
                                   {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}};
  const meap::u32x2 keys[3] = {{{0u, 0u}}, {{0xffffffffu, 0xffffffffu}}, {{0xa4093822u, 0x299f31d0u}}};
  const int i = threadIdx.x;
  if (i < 3) {
    const meap::u32x4 r = meap::philox4x32<10>(counters[i], keys[i]);
    for (int w = 0; w < 4; ++w) out[4 * i + w] = r[w];
  }
}

// out: (rows, words). Row r draws from philox_stream(seed, stream, r); one thread per row.
__global__ void philox_stream_kernel(std::uint64_t seed, std::uint64_t stream, int rows, int words,
                                     std::uint32_t* out) {
  const int row = blockIdx.x * blockDim.x + threadIdx.x;
  if (row >= rows) return;
  meap::philox_stream s(seed, stream, static_cast<std::uint32_t>(row));
  for (int w = 0; w < words; ++w) out[row * words + w] = (w % 3 == 2) ? s.next_below(1000u + w) : s.next_u32();
}

// in: (n) floats; out: (n, 4) = meap::half bits, __float2half_rn bits, meap::bfloat16 bits,
// __float2bfloat16_rn bits.
__global__ void convert_kernel(const float* in, int n, std::uint16_t* out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  out[4 * i + 0] = meap::half(in[i]).bits;
  out[4 * i + 1] = meap::from_native(__float2half_rn(in[i])).bits;
  out[4 * i + 2] = meap::bfloat16(in[i]).bits;
  out[4 * i + 3] = meap::from_native(__float2bfloat16_rn(in[i])).bits;
}

template <class T>
std::vector<T> download(const meap::cuda& device, const T* pointer, std::size_t count) {
  std::vector<T> host(count);
  MEAP_CUDA_CHECK(cudaMemcpyAsync(host.data(), pointer, count * sizeof(T), cudaMemcpyDeviceToHost, device.stream));
  meap::synchronize(device);
  return host;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(core_cuda)

BOOST_AUTO_TEST_CASE(philox_known_answers_on_device) {
  meap::cuda device;
  auto out = meap::zeros<std::uint32_t>(device, {3, 4});
  philox_known_answers_kernel<<<1, 32>>>(out.data());
  MEAP_CUDA_CHECK(cudaGetLastError());
  const auto got = download(device, out.data(), 12);
  const std::uint32_t expected[12] = {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u,
                                      0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu,
                                      0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u};
  for (int i = 0; i < 12; ++i) BOOST_TEST(got[i] == expected[i]);
}

BOOST_AUTO_TEST_CASE(philox_stream_matches_host_bit_for_bit) {
  meap::cuda device;
  constexpr int rows = 300;
  constexpr int words = 37;
  auto out = meap::zeros<std::uint32_t>(device, {rows, words});
  philox_stream_kernel<<<(rows + 127) / 128, 128>>>(99, 12345, rows, words, out.data());
  MEAP_CUDA_CHECK(cudaGetLastError());
  const auto got = download(device, out.data(), rows * words);
  for (int row = 0; row < rows; ++row) {
    meap::philox_stream s(99, 12345, static_cast<std::uint32_t>(row));
    for (int w = 0; w < words; ++w) {
      const std::uint32_t expected = (w % 3 == 2) ? s.next_below(1000u + w) : s.next_u32();
      BOOST_TEST_REQUIRE(got[row * words + w] == expected, "row " << row << " word " << w);
    }
  }
}

BOOST_AUTO_TEST_CASE(half_and_bfloat16_conversions_match_host_and_cuda) {
  meap::cuda device;
  std::mt19937 engine(7);
  std::uniform_int_distribution<std::uint32_t> any_bits;
  std::vector<float> inputs;
  for (int i = 0; i < 100000; ++i) {
    const float x = std::bit_cast<float>(any_bits(engine));
    if (!std::isnan(x)) inputs.push_back(x);
    inputs.push_back(std::ldexp(static_cast<float>(any_bits(engine) % 4096u) / 4096.0f, static_cast<int>(any_bits(engine) % 40) - 26));
  }
  const int n = static_cast<int>(inputs.size());
  auto in = meap::to_device(device, meap::make_view(std::span<const float>(inputs), {n}));
  auto out = meap::zeros<std::uint16_t>(device, {n, 4});
  convert_kernel<<<(n + 255) / 256, 256, 0, device.stream>>>(in.data(), n, out.data());
  MEAP_CUDA_CHECK(cudaGetLastError());
  const auto got = meap::to_host(device, out.view());
  for (int i = 0; i < n; ++i) {
    const std::uint16_t host_half = meap::half(inputs[i]).bits;
    const std::uint16_t host_bf16 = meap::bfloat16(inputs[i]).bits;
    BOOST_TEST_REQUIRE(got.view()(i, 0) == host_half, "x = " << inputs[i]);
    BOOST_TEST_REQUIRE(got.view()(i, 1) == host_half, "x = " << inputs[i] << " (__float2half_rn)");
    BOOST_TEST_REQUIRE(got.view()(i, 2) == host_bf16, "x = " << inputs[i]);
    BOOST_TEST_REQUIRE(got.view()(i, 3) == host_bf16, "x = " << inputs[i] << " (__float2bfloat16_rn)");
  }
}

BOOST_AUTO_TEST_CASE(device_tensors_fill_and_copy_round_trip) {
  cudaStream_t stream = nullptr;
  MEAP_CUDA_CHECK(cudaStreamCreate(&stream));
  meap::cuda device(stream);
  {
    std::vector<float> values(6 * 7);
    for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i) * 0.5f;
    const auto host = meap::make_view(std::span<const float>(values), {6, 7});
    auto on_device = meap::to_device(device, host);
    BOOST_TEST((on_device.location().kind == meap::device_kind::cuda));
    // Strided fill on the device: column 3 only.
    meap::fill(device, on_device.view().slice(1, 3, 4), -1.0f);
    const auto back = meap::to_host(device, on_device.view());
    for (int r = 0; r < 6; ++r)
      for (int c = 0; c < 7; ++c)
        BOOST_TEST_REQUIRE(back.view()(r, c) == (c == 3 ? -1.0f : host(r, c)));
    // A transposed host view goes through a contiguous staging copy.
    auto transposed = meap::to_device(device, host.transpose(0, 1));
    const auto transposed_back = meap::to_host(device, transposed.view());
    BOOST_TEST(transposed_back.view()(4, 2) == host(2, 4));
    // Device -> device, then zeros.
    auto copy_target = meap::zeros<float>(device, {6, 7});
    meap::copy(device, on_device.view().as_const(), copy_target.view());
    BOOST_TEST(meap::to_host(device, copy_target.view()).view()(5, 6) == host(5, 6));
    // Bad input.
    auto wrong = meap::zeros<float>(device, {7, 6});
    BOOST_CHECK_EXCEPTION(meap::copy(device, on_device.view().as_const(), wrong.view()), meap::error,
                          [](const meap::error& e) { return e.argument() == "dst"; });
    BOOST_CHECK_EXCEPTION(meap::copy(device, on_device.view().transpose(0, 1).as_const(), wrong.view()), meap::error,
                          [](const meap::error& e) { return e.argument() == "src"; });
    meap::synchronize(device);
  }
  MEAP_CUDA_CHECK(cudaStreamDestroy(stream));
}

BOOST_AUTO_TEST_SUITE_END()
