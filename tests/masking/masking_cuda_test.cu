// Masking on CUDA gives the CPU's masks bit for bit: fixed_ratio and span, per_row and
// per_batch, with padding, special ids and segment ids, a user-defined policy, strided inputs and
// caller-provided outputs; and the same errors. Label `gpu`: skipped (exit 77) without a device.
#define BOOST_TEST_MODULE meap masking cuda
#define BOOST_TEST_NO_MAIN
#define BOOST_TEST_ALTERNATIVE_INIT_API
#include <boost/test/unit_test.hpp>

#include <meap/cuda.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "masking/support.hpp"
#include "support/errors.hpp"
#include "support/gpu_main.hpp"

namespace {

using namespace masking_test;
namespace mm = meap::masking;

// A user-defined policy that runs on both devices: each eligible position is masked when its
// own draw falls below `threshold`. MEAP_HOST_DEVICE is all it takes to run on meap::cuda.
struct coin_flips {
  std::uint32_t threshold = 0x40000000u;  // P = 1/4
  mm::sharing sharing = mm::sharing::per_row;
  void validate() const {}
  MEAP_HOST_DEVICE void mask_row(const mm::row_candidates& row, meap::philox_stream& random) const {
    for (std::int32_t i = 0; i < row.count; ++i)
      if (random.next_u32() < threshold) row.mask[row.positions[i]] = 1;
  }
};
static_assert(mm::pretraining_policy<coin_flips>);

template <class T>
meap::tensor<T, meap::cuda> upload(const meap::cuda& device, const std::vector<T>& values, meap::dims shape) {
  return meap::to_device(device, meap::make_view(std::span<const T>(values), shape));
}

using meap_test::error_of;

// Runs `policy` on both devices and compares the three outputs element by element. Returns
// false when the CPU rejects the batch (random batches may have no position eligible in every
// row), after checking that CUDA rejects it with the same message.
template <class Policy>
bool check_cpu_equals_cuda(const meap::cuda& device, const Policy& policy, const batch& tokens,
                           const mm::pretraining_options& options, const std::vector<std::int32_t>* segments = nullptr,
                           meap::index_t segment_columns = 0) {
  meap::tensor_view<const std::int32_t, meap::cpu> host_segments;
  meap::tensor<std::int32_t, meap::cuda> device_segments;
  meap::tensor_view<const std::int32_t, meap::cuda> device_segment_view;
  if (segments != nullptr) {
    host_segments = meap::make_view(std::span<const std::int32_t>(*segments), {tokens.rows, segment_columns});
    device_segments = upload(device, *segments, {tokens.rows, segment_columns});
    device_segment_view = device_segments.view();
  }
  const auto device_tokens = upload(device, tokens.tokens, {tokens.rows, tokens.columns});
  const std::string rejected =
      error_of([&] { (void)mm::apply(meap::cpu{}, policy, tokens.view(), options, host_segments); });
  if (rejected != "(no error)") {
    BOOST_TEST(error_of([&] { (void)mm::apply(device, policy, device_tokens.view(), options, device_segment_view); }) ==
               rejected);
    return false;
  }
  auto expected = mm::apply(meap::cpu{}, policy, tokens.view(), options, host_segments);
  auto got = mm::apply(device, policy, device_tokens.view(), options, device_segment_view);
  const auto input_ids = meap::to_host(device, got.input_ids.view());
  const auto labels = meap::to_host(device, got.labels.view());
  const auto mask_flags = meap::to_host(device, got.mask.view());
  meap::index_t masked = 0;
  for (meap::index_t b = 0; b < tokens.rows; ++b)
    for (meap::index_t t = 0; t + 1 < tokens.columns; ++t) {
      BOOST_TEST_REQUIRE(mask_flags.view()(b, t) == expected.mask.view()(b, t), "row " << b << " t " << t);
      BOOST_TEST_REQUIRE(input_ids.view()(b, t) == expected.input_ids.view()(b, t), "row " << b << " t " << t);
      BOOST_TEST_REQUIRE(labels.view()(b, t) == expected.labels.view()(b, t), "row " << b << " t " << t);
      masked += expected.mask.view()(b, t);
    }
  BOOST_TEST_REQUIRE(masked > 0);
  return true;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(masking_cuda)

BOOST_AUTO_TEST_CASE(fixed_ratio_matches_cpu) {
  cudaStream_t stream = nullptr;
  MEAP_CUDA_CHECK(cudaStreamCreate(&stream));
  {
    const meap::cuda device(stream);
    const mm::pretraining_options options{.seed = 31, .step = 4, .mask_id = mask, .pad_id = pad, .special_ids = {bos, eos}};
    mm::pretraining_options last_allowed = options;
    last_allowed.mask_last_position = true;
    int compared = 0;
    for (const auto sharing : {mm::sharing::per_row, mm::sharing::per_batch}) {
      const mm::fixed_ratio policy{.ratio = 0.15, .sharing = sharing};
      BOOST_TEST(check_cpu_equals_cuda(device, policy, plain_batch(64, 4097, 1), {.seed = 1, .step = 2, .mask_id = mask}));
      for (const meap::index_t columns : {4, 33, 257, 1000}) {
        const meap::index_t rows = sharing == mm::sharing::per_row ? 37 : 5;
        const batch tokens = messy_batch(rows, columns, static_cast<std::uint64_t>(columns));
        const auto segments = random_segments(rows, columns, 5);
        std::vector<std::int32_t> per_input;  // (B, T) segment ids
        for (meap::index_t b = 0; b < rows; ++b)
          per_input.insert(per_input.end(), segments.begin() + b * columns, segments.begin() + (b + 1) * columns - 1);
        compared += check_cpu_equals_cuda(device, policy, tokens, options);
        compared += check_cpu_equals_cuda(device, policy, tokens, options, &segments, columns);
        compared += check_cpu_equals_cuda(device, policy, tokens, options, &per_input, columns - 1);
        compared += check_cpu_equals_cuda(device, mm::fixed_ratio{.ratio = 0.6, .sharing = sharing}, tokens, last_allowed,
                                          &segments, columns);
      }
    }
    BOOST_TEST(compared >= 24);
    // More rows than a grid's y extent (65535): the kernels loop over rows.
    BOOST_TEST(check_cpu_equals_cuda(device, mm::fixed_ratio{}, plain_batch(70000, 3, 9), {.mask_id = mask}));
    BOOST_TEST(check_cpu_equals_cuda(device, mm::fixed_ratio{.ratio = 0.3, .sharing = mm::sharing::per_batch},
                                     plain_batch(70000, 9, 10), {.seed = 4, .mask_id = mask}));
    BOOST_TEST(check_cpu_equals_cuda(device, mm::span{.ratio = 0.3, .mean_length = 2.0, .max_length = 3},
                                     plain_batch(66000, 17, 11), {.seed = 5, .mask_id = mask}));
    // A micro-batch other than the first: the same (seed, step, micro-batch, row) keys on both devices.
    for (const auto sharing : {mm::sharing::per_row, mm::sharing::per_batch})
      BOOST_TEST(check_cpu_equals_cuda(device, mm::fixed_ratio{.ratio = 0.2, .sharing = sharing}, messy_batch(6, 65, 3),
                                       {.seed = 8, .step = 3, .micro_batch = 5, .mask_id = mask, .pad_id = pad}));
    meap::synchronize(device);
  }
  MEAP_CUDA_CHECK(cudaStreamDestroy(stream));
}

BOOST_AUTO_TEST_CASE(span_and_user_policies_match_cpu) {
  const meap::cuda device;
  const mm::pretraining_options options{.seed = 8, .step = 77, .mask_id = mask, .pad_id = pad, .special_ids = {bos, eos}};
  const batch tokens = messy_batch(29, 700, 4);
  const batch few = messy_batch(4, 700, 4);
  const auto segments = random_segments(29, 700, 6);
  BOOST_TEST(check_cpu_equals_cuda(device, mm::span{}, tokens, options, &segments, 700));
  BOOST_TEST(check_cpu_equals_cuda(device, mm::span{.ratio = 0.45, .mean_length = 4.0, .max_length = 6, .attempts = 1},
                                   tokens, options));
  BOOST_TEST(check_cpu_equals_cuda(device, coin_flips{}, tokens, options, &segments, 700));
  for (const auto sharing : {mm::sharing::per_row, mm::sharing::per_batch}) {
    BOOST_TEST(check_cpu_equals_cuda(device, mm::span{.sharing = sharing}, plain_batch(64, 4097, 2), {.seed = 3, .mask_id = mask}));
    BOOST_TEST(check_cpu_equals_cuda(device, mm::span{.ratio = 0.3, .sharing = sharing}, few, options));
    BOOST_TEST(check_cpu_equals_cuda(device, coin_flips{.sharing = sharing}, few, options));
  }
}

BOOST_AUTO_TEST_CASE(strided_tokens_and_caller_outputs_on_device) {
  const meap::cuda device;
  const batch wide = messy_batch(6, 300, 3);
  const mm::pretraining_options options{.seed = 2, .step = 9, .mask_id = mask, .pad_id = pad, .special_ids = {bos, eos}};
  batch narrow{6, 200, {}};
  for (meap::index_t b = 0; b < 6; ++b)
    for (meap::index_t t = 50; t < 250; ++t) narrow.tokens.push_back(wide.at(b, t));
  auto expected = mm::apply(meap::cpu{}, mm::span{.ratio = 0.2}, narrow.view(), options);
  const auto device_wide = upload(device, wide.tokens, {6, 300});
  auto input_ids = meap::zeros<std::int32_t>(device, {199, 6});
  auto labels = meap::zeros<std::int32_t>(device, {199, 6});
  auto flags = meap::zeros<std::uint8_t>(device, {199, 6});
  mm::apply(device, mm::span{.ratio = 0.2}, device_wide.view().slice(1, 50, 250), options,
            mm::masked_batch_view<meap::cuda>{input_ids.view().transpose(0, 1), labels.view().transpose(0, 1),
                                              flags.view().transpose(0, 1)});
  const auto got_ids = meap::to_host(device, input_ids.view());
  const auto got_labels = meap::to_host(device, labels.view());
  const auto got_flags = meap::to_host(device, flags.view());
  for (meap::index_t b = 0; b < 6; ++b)
    for (meap::index_t t = 0; t < 199; ++t) {
      BOOST_TEST_REQUIRE(got_ids.view()(t, b) == expected.input_ids.view()(b, t));
      BOOST_TEST_REQUIRE(got_labels.view()(t, b) == expected.labels.view()(b, t));
      BOOST_TEST_REQUIRE(got_flags.view()(t, b) == expected.mask.view()(b, t));
    }
}

BOOST_AUTO_TEST_CASE(errors_match_cpu) {
  const meap::cuda device;
  const mm::pretraining_options options{.mask_id = mask, .pad_id = pad, .special_ids = {bos}};
  const auto both = [&](const batch& tokens, const auto& policy) {
    const auto device_tokens = upload(device, tokens.tokens, {tokens.rows, tokens.columns});
    const std::string on_cpu = error_of([&] { (void)mm::apply(meap::cpu{}, policy, tokens.view(), options); });
    const std::string on_cuda = error_of([&] { (void)mm::apply(device, policy, device_tokens.view(), options); });
    BOOST_TEST(on_cpu != "(no error)");
    BOOST_TEST(on_cuda == on_cpu);
  };
  batch colliding = plain_batch(4, 50, 1);
  colliding.tokens[2 * 50 + 31] = mask;
  colliding.tokens[3 * 50 + 2] = mask;
  both(colliding, mm::fixed_ratio{});
  batch empty_row = plain_batch(4, 50, 1);
  for (meap::index_t t = 0; t < 50; ++t) empty_row.tokens[static_cast<std::size_t>(3 * 50 + t)] = pad;
  both(empty_row, mm::span{});
  const batch disjoint{2, 5, {20, 21, pad, pad, pad, pad, pad, 22, 23, 24}};
  both(disjoint, mm::fixed_ratio{.sharing = mm::sharing::per_batch});
  both(plain_batch(2, 10, 1), mm::fixed_ratio{.ratio = 1.5});
}

BOOST_AUTO_TEST_SUITE_END()
