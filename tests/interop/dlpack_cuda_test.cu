// DLPack on CUDA (meap/interop/dlpack.hpp): a meap CUDA tensor exported and imported again keeps
// its device memory and ordinal; CUDA memory described by a DLManagedTensor, as LibTorch or CuPy
// hands it over, runs meap's kernels in place; a tensor on another device than the current one is
// refused by the kernels' location check. Label `gpu`: skipped (exit 77) without a device.
#define BOOST_TEST_MODULE meap dlpack cuda
#define BOOST_TEST_NO_MAIN
#define BOOST_TEST_ALTERNATIVE_INIT_API
#include <boost/test/unit_test.hpp>

#include <meap/cuda.hpp>
#include <meap/interop/dlpack.hpp>
#include <meap/kernels/cross_entropy.hpp>

#include <cstdint>
#include <random>
#include <vector>

#include "support/cuda.hpp"
#include "support/errors.hpp"
#include "support/gpu_main.hpp"

namespace {

using meap::dims;
using meap_test::stream_fixture;

int current_device() {
  int ordinal = 0;
  BOOST_TEST_REQUIRE(cudaGetDevice(&ordinal) == cudaSuccess);
  return ordinal;
}

}  // namespace

BOOST_FIXTURE_TEST_CASE(a_cuda_tensor_goes_out_and_back_in_place, stream_fixture) {
  auto owned = meap_test::upload<float>(device, std::vector<float>(24, 1.5f), dims{4, 6});
  const float* address = owned.data();
  meap::interop::dlpack_tensor imported(meap::interop::to_dlpack(std::move(owned)), "exported");
  const DLTensor& t = imported.get()->dl_tensor;
  BOOST_TEST(t.device.device_type == kDLCUDA);
  BOOST_TEST(t.device.device_id == current_device());
  const auto view = imported.view<const float, meap::cuda>("exported");
  BOOST_TEST(view.data() == address);
  BOOST_TEST((view.location() == meap::device_location{meap::device_kind::cuda, current_device()}));
  BOOST_TEST(meap_test::values_of(device, view)[23] == 1.5f);
  // Device memory is not a host view.
  BOOST_CHECK_EXCEPTION(((void)imported.view<const float, meap::cpu>("exported")), meap::error,
                        meap_test::error_says("meap::view_cast", "exported", {"device mismatch"}));
}

// Logits and labels in cudaMalloc'd memory, described only by DLManagedTensors (the producer's
// deleter frees them): meap's cross-entropy on the imported views equals the CPU's.
BOOST_FIXTURE_TEST_CASE(foreign_cuda_memory_runs_meap_kernels_in_place, stream_fixture) {
  constexpr std::int64_t N = 64, V = 300;
  std::mt19937 random(3);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> logits(static_cast<std::size_t>(N * V));
  for (auto& x : logits) x = normal(random);
  std::vector<std::int32_t> labels(static_cast<std::size_t>(N));
  for (std::int64_t i = 0; i < N; ++i) labels[static_cast<std::size_t>(i)] = i % 5 == 0 ? -100 : (i * 37) % V;

  struct foreign {
    DLManagedTensor managed{};
    std::int64_t shape[2] = {};
    static void release(DLManagedTensor* self) {
      (void)cudaFree(self->dl_tensor.data);
      delete static_cast<foreign*>(self->manager_ctx);
    }
  };
  const auto describe = [&](const void* host, std::size_t bytes, DLDataType type, std::vector<std::int64_t> shape) {
    auto* f = new foreign;
    void* memory = nullptr;
    BOOST_TEST_REQUIRE(cudaMalloc(&memory, bytes) == cudaSuccess);
    BOOST_TEST_REQUIRE(cudaMemcpy(memory, host, bytes, cudaMemcpyHostToDevice) == cudaSuccess);
    for (std::size_t i = 0; i < shape.size(); ++i) f->shape[i] = shape[i];
    f->managed.dl_tensor = DLTensor{memory, {kDLCUDA, current_device()}, static_cast<int>(shape.size()), type,
                                    f->shape, nullptr, 0};
    f->managed.manager_ctx = f;
    f->managed.deleter = &foreign::release;
    return &f->managed;
  };
  const meap::interop::dlpack_tensor gpu_logits(describe(logits.data(), logits.size() * 4, {kDLFloat, 32, 1}, {N, V}),
                                                "logits");
  const meap::interop::dlpack_tensor gpu_labels(describe(labels.data(), labels.size() * 4, {kDLInt, 32, 1}, {N}),
                                                "labels");
  meap::tensor<float, meap::cuda> d_logits(device, dims{N, V});
  const auto on_gpu = meap::cross_entropy(device, gpu_logits.view<const float, meap::cuda>("logits"),
                                          gpu_labels.view<const std::int32_t, meap::cuda>("labels"), d_logits.view());
  meap::tensor<float, meap::cpu> on_cpu_grad(meap::cpu{}, dims{N, V});
  const auto on_cpu = meap::cross_entropy(meap::cpu{}, meap::tensor_view<const float, meap::cpu>(logits.data(), dims{N, V}),
                                          meap::tensor_view<const std::int32_t, meap::cpu>(labels.data(), dims{N}),
                                          on_cpu_grad.view());
  BOOST_TEST(std::abs(on_gpu.loss - on_cpu.loss) <= 1e-5 * std::abs(on_cpu.loss));
  BOOST_TEST(on_gpu.selected == on_cpu.selected);
  BOOST_TEST(meap_test::worst_relative(meap_test::values_of(device, d_logits.view().as_const()),
                                       meap_test::values_of(device, on_cpu_grad.view().as_const())) <= 1e-5);
}

// A DLPack tensor that says it lives on another GPU than the current one reaches meap's location
// check, which names it (no kernel touches memory of the wrong device).
BOOST_FIXTURE_TEST_CASE(a_tensor_on_another_device_is_refused_by_the_kernels, stream_fixture) {
  std::int64_t shape[2] = {2, 3};
  std::int64_t label_shape[1] = {2};
  float fake = 0.0f;
  std::int32_t fake_labels[2] = {0, 1};
  const int elsewhere = current_device() + 1;
  DLTensor logits{&fake, {kDLCUDA, elsewhere}, 2, {kDLFloat, 32, 1}, shape, nullptr, 0};
  DLTensor labels{fake_labels, {kDLCUDA, elsewhere}, 1, {kDLInt, 32, 1}, label_shape, nullptr, 0};
  const auto l = meap::interop::from_dlpack<const float, meap::cuda>(logits, "logits");
  const auto y = meap::interop::from_dlpack<const std::int32_t, meap::cuda>(labels, "labels");
  BOOST_CHECK_EXCEPTION((void)meap::cross_entropy(device, l, y), meap::error,
                        meap_test::error_says("meap::cross_entropy", "logits", {"cuda:" + std::to_string(elsewhere)}));
}
