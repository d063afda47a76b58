// DLPack in and out (meap/interop/dlpack.hpp): round trips for every dtype, strided and offset
// views without a copy, the deleter's once-only call, and every refusal.
#define BOOST_TEST_MODULE meap dlpack
#include <boost/test/unit_test.hpp>

#include <meap/interop/dlpack.hpp>
#include <meap/kernels/cross_entropy.hpp>

#include <support/errors.hpp>

#include <cstdint>
#include <memory>
#include <numeric>
#include <tuple>
#include <vector>

namespace {

using meap::dims;
using meap::dtype;
using meap::interop::dlpack_tensor;
using meap::interop::from_dlpack;
using meap::interop::to_dlpack;
using meap_test::error_says;

// A DLTensor over caller memory, as a producer would describe it.
struct described {
  std::vector<std::int64_t> shape, strides;
  DLTensor tensor{};

  described(void* data, DLDataType type, std::vector<std::int64_t> extents, std::vector<std::int64_t> steps = {},
            std::uint64_t byte_offset = 0, DLDevice device = {kDLCPU, 0})
      : shape(std::move(extents)), strides(std::move(steps)) {
    tensor.data = data;
    tensor.device = device;
    tensor.ndim = static_cast<int>(shape.size());
    tensor.dtype = type;
    tensor.shape = shape.data();
    tensor.strides = strides.empty() ? nullptr : strides.data();
    tensor.byte_offset = byte_offset;
  }
};

using element_types = std::tuple<double, float, meap::half, meap::bfloat16, std::int64_t, std::int32_t, std::int16_t,
                                 std::int8_t, std::uint64_t, std::uint32_t, std::uint16_t, std::uint8_t>;

}  // namespace

BOOST_AUTO_TEST_CASE_TEMPLATE(every_dtype_goes_out_and_comes_back_without_a_copy, T, element_types) {
  meap::tensor<T, meap::cpu> owned(meap::cpu{}, dims{3, 4});
  for (meap::index_t i = 0; i < owned.numel(); ++i) owned.data()[i] = T(static_cast<int>(i % 100));
  const T* data = owned.data();

  dlpack_tensor imported(to_dlpack(std::move(owned)), "exported");
  const DLTensor& t = imported.get()->dl_tensor;
  BOOST_TEST(t.data == data);
  BOOST_TEST(t.ndim == 2);
  BOOST_TEST(t.shape[0] == 3);
  BOOST_TEST(t.shape[1] == 4);
  BOOST_TEST(t.strides[0] == 4);
  BOOST_TEST(t.strides[1] == 1);
  BOOST_TEST(t.device.device_type == kDLCPU);
  BOOST_TEST(static_cast<int>(meap::interop::dtype_from_dlpack(t.dtype).value()) ==
             static_cast<int>(meap::dtype_of<T>));

  const auto view = imported.view<const T, meap::cpu>("exported");
  BOOST_TEST(view.data() == data);
  BOOST_TEST((view.shape() == dims{3, 4}));
  BOOST_TEST(static_cast<double>(view(2, 3)) == 11.0);
  // The other dtypes are refused by the typed view, naming both.
  if constexpr (!std::is_same_v<T, float>)
    BOOST_CHECK_EXCEPTION(((void)imported.view<const float, meap::cpu>("exported")), meap::error,
                          error_says("meap::view_cast", "exported", {"dtype mismatch"}));
}

BOOST_AUTO_TEST_CASE(dtype_tables_agree_both_ways) {
  for (int code = 0; code < 12; ++code) {
    const auto type = static_cast<dtype>(code);
    const DLDataType out = meap::interop::to_dlpack(type);
    BOOST_TEST(out.lanes == 1);
    BOOST_TEST(out.bits == 8 * meap::size_of(type));
    BOOST_TEST(static_cast<int>(meap::interop::dtype_from_dlpack(out).value()) == code);
  }
}

BOOST_AUTO_TEST_CASE(strided_and_offset_views_alias_the_producer_memory) {
  std::vector<float> memory(64);
  std::iota(memory.begin(), memory.end(), 0.0f);
  // Every other column of a (4, 8) matrix, starting at element 1 (byte_offset 4).
  described d(memory.data(), {kDLFloat, 32, 1}, {4, 4}, {8, 2}, sizeof(float));
  const auto view = from_dlpack<const float, meap::cpu>(d.tensor, "columns");
  BOOST_TEST(view.data() == memory.data() + 1);
  BOOST_TEST((view.strides() == dims{8, 2}));
  BOOST_TEST(view(0, 0) == 1.0f);
  BOOST_TEST(view(1, 2) == 13.0f);
  BOOST_TEST(view(3, 3) == 31.0f);
  BOOST_TEST(!view.is_contiguous());

  // A transposed view (column-major strides) and a broadcast (stride 0) keep their strides.
  described transposed(memory.data(), {kDLFloat, 32, 1}, {8, 4}, {1, 8});
  const auto t = from_dlpack<float, meap::cpu>(transposed.tensor);
  BOOST_TEST(t(5, 2) == 21.0f);
  described broadcast(memory.data(), {kDLFloat, 32, 1}, {3, 5}, {0, 1});
  const auto broadcast_view = from_dlpack<float, meap::cpu>(broadcast.tensor);
  BOOST_TEST(broadcast_view(2, 4) == 4.0f);

  // Writes through the imported view land in the producer's memory.
  from_dlpack<float, meap::cpu>(d.tensor)(2, 1) = -7.0f;
  BOOST_TEST(memory[2 * 8 + 1 + 2] == -7.0f);

  // Scalars (ndim 0) and empty tensors (a null pointer is fine with no elements).
  float scalar = 2.5f;
  described zero_d(&scalar, {kDLFloat, 32, 1}, {});
  const auto scalar_view = from_dlpack<float, meap::cpu>(zero_d.tensor);
  BOOST_TEST(scalar_view.data()[0] == 2.5f);
  described empty(nullptr, {kDLFloat, 32, 1}, {0, 7});
  const auto empty_view = from_dlpack<float, meap::cpu>(empty.tensor);
  BOOST_TEST(empty_view.numel() == 0);
}

BOOST_AUTO_TEST_CASE(exported_views_keep_their_owner_alive_until_the_deleter) {
  auto owner = std::make_shared<std::vector<double>>(12, 1.5);
  std::weak_ptr<std::vector<double>> watch = owner;
  const meap::tensor_view<const double, meap::cpu> view(owner->data(), dims{3, 2}, dims{4, 2});  // strided
  DLManagedTensor* exported = to_dlpack(view, owner);
  owner.reset();
  BOOST_TEST(!watch.expired());  // the export holds it
  BOOST_TEST(exported->dl_tensor.strides[0] == 4);
  BOOST_TEST(exported->dl_tensor.strides[1] == 2);
  {
    dlpack_tensor imported(exported);
    const auto view_back = imported.view<const double, meap::cpu>();
    BOOST_TEST(view_back(2, 1) == 1.5);
    BOOST_TEST(!watch.expired());
  }
  BOOST_TEST(watch.expired());  // the deleter ran, once
}

BOOST_AUTO_TEST_CASE(the_deleter_runs_exactly_once) {
  static int deleted = 0;
  deleted = 0;
  float value = 1.0f;
  std::int64_t shape[1] = {1};
  DLManagedTensor managed{};
  managed.dl_tensor = DLTensor{&value, {kDLCPU, 0}, 1, {kDLFloat, 32, 1}, shape, nullptr, 0};
  managed.deleter = [](DLManagedTensor*) { ++deleted; };
  {
    dlpack_tensor a(&managed);
    dlpack_tensor b(std::move(a));  // moved: still one owner
    dlpack_tensor c;
    c = std::move(b);
    BOOST_TEST(deleted == 0);
  }
  BOOST_TEST(deleted == 1);
  {
    dlpack_tensor d(&managed);
    BOOST_TEST(d.release() == &managed);
  }
  BOOST_TEST(deleted == 1);  // released: not ours to delete
  // A refused tensor is deleted at once, not leaked.
  managed.dl_tensor.dtype = {kDLComplex, 64, 1};
  BOOST_CHECK_THROW(dlpack_tensor(&managed, "complex"), meap::error);
  BOOST_TEST(deleted == 2);
  BOOST_CHECK_EXCEPTION(dlpack_tensor(nullptr, "input"), meap::error,
                        error_says("meap::interop::dlpack_tensor", "input", {"nullptr"}));
}

BOOST_AUTO_TEST_CASE(devices_map_to_meap_locations) {
  float value = 0.0f;
  const auto where = [&](DLDevice device) {
    described d(&value, {kDLFloat, 32, 1}, {1}, {}, 0, device);
    return from_dlpack(d.tensor).where;
  };
  BOOST_TEST((where({kDLCPU, 0}) == meap::device_location{meap::device_kind::cpu, 0}));
  BOOST_TEST((where({kDLCUDAHost, 0}) == meap::device_location{meap::device_kind::cpu, 0}));
  BOOST_TEST((where({kDLCUDA, 3}) == meap::device_location{meap::device_kind::cuda, 3}));
  BOOST_TEST((where({kDLCUDAManaged, 1}) == meap::device_location{meap::device_kind::cuda, 1}));
  BOOST_TEST(meap::interop::to_dlpack(meap::device_location{meap::device_kind::cuda, 2}).device_type == kDLCUDA);
  BOOST_TEST(meap::interop::to_dlpack(meap::device_location{meap::device_kind::cuda, 2}).device_id == 2);
  // CUDA memory is not a host view.
  described gpu(&value, {kDLFloat, 32, 1}, {1}, {}, 0, {kDLCUDA, 0});
  BOOST_CHECK_EXCEPTION(((void)from_dlpack<float, meap::cpu>(gpu.tensor, "logits")), meap::error,
                        error_says("meap::view_cast", "logits", {"cuda:0", "device mismatch"}));
}

BOOST_AUTO_TEST_CASE(every_refusal_names_what_it_found) {
  std::vector<float> memory(16);
  const DLDataType f32{kDLFloat, 32, 1};
  const auto refused = [](const described& d, std::vector<std::string> fragments) {
    BOOST_CHECK_EXCEPTION((void)from_dlpack(d.tensor, "x"), meap::error,
                          error_says("meap::interop::from_dlpack", "x", std::move(fragments)));
  };
  refused(described(memory.data(), {kDLComplex, 64, 1}, {2}), {"kDLComplex bits 64 lanes 1"});
  refused(described(memory.data(), {kDLFloat, 32, 4}, {2}), {"kDLFloat bits 32 lanes 4"});
  refused(described(memory.data(), {kDLFloat, 8, 1}, {2}), {"kDLFloat bits 8"});
  refused(described(memory.data(), {kDLBfloat, 32, 1}, {2}), {"kDLBfloat bits 32"});
  refused(described(memory.data(), {6, 8, 1}, {2}), {"code 6 bits 8"});  // kDLBool in DLPack 0.8+
  refused(described(memory.data(), f32, {2}, {}, 0, {kDLVulkan, 0}), {"kDLVulkan:0", "CUDA memory"});
  refused(described(memory.data(), f32, {2}, {}, 0, {kDLROCM, 1}), {"kDLROCM:1"});
  refused(described(memory.data(), f32, {2}, {}, 0, {kDLCUDA, -1}), {"kDLCUDA:-1", "ordinal"});
  refused(described(memory.data(), f32, {4, 4}, {-4, 1}), {"stride -4 in dimension 0", "negative strides"});
  refused(described(memory.data(), f32, {4}, {}, 2), {"byte_offset 2", "multiple of the element size, 4 bytes"});
  refused(described(reinterpret_cast<char*>(memory.data()) + 1, f32, {4}), {"not a multiple of 4", "aligned"});
  refused(described(nullptr, f32, {2, 2}), {"data nullptr", "4 elements"});
  refused(described(memory.data(), f32, {2, -1}), {"extent -1 in dimension 1"});
  refused(described(memory.data(), f32, {1, 1, 1, 1, 1, 1, 1, 1, 1}), {"ndim 9", "[0, 8]"});
  refused(described(memory.data(), f32, {std::int64_t{1} << 40, std::int64_t{1} << 40}, {0, 0}),
          {"fits in 64 bits"});
  described no_shape(memory.data(), f32, {2});
  no_shape.tensor.shape = nullptr;
  refused(no_shape, {"shape nullptr"});
}

// docs/interop.md, route 3: an llm.c-style trainer's own buffers through make_view, a tied head
// whose gradient is accumulated; the same loss and gradients as the plain cross-entropy over the
// logits computed here by hand.
BOOST_AUTO_TEST_CASE(plain_pointer_route_of_the_interop_page) {
  constexpr meap::index_t BT = 6, C = 4, V = 9;
  std::vector<float> lnf(BT * C), wte(V * C), grad_lnf(BT * C), grad_wte(V * C, 0.5f);
  for (std::size_t i = 0; i < lnf.size(); ++i) lnf[i] = static_cast<float>((i * 7) % 11) / 5.0f - 1.0f;
  for (std::size_t i = 0; i < wte.size(); ++i) wte[i] = static_cast<float>((i * 5) % 13) / 6.0f - 1.0f;
  std::vector<std::int32_t> targets{3, -100, 0, 8, 5, 1};

  const float* lnf_in = lnf.data();
  const float* wte_in = wte.data();
  const std::int32_t* targets_in = targets.data();
  auto hidden = meap::make_view(lnf_in, BT * C, {BT, C}, {C, 1});
  auto weight = meap::make_view(wte_in, V * C, {V, C}, {C, 1});
  auto labels = meap::make_view(targets_in, BT, {BT}, {1});
  auto d_hidden = meap::make_view(grad_lnf.data(), BT * C, {BT, C}, {C, 1});
  auto d_weight = meap::make_view(grad_wte.data(), V * C, {V, C}, {C, 1});
  meap::cross_entropy_options<meap::cpu> options;
  options.d_weight_write = meap::gradient_write::accumulate;
  const auto result = meap::linear_cross_entropy<float, float>(meap::cpu{}, hidden, weight, labels, d_hidden, d_weight,
                                                               options);

  std::vector<float> logits(BT * V), d_logits(BT * V);
  for (meap::index_t r = 0; r < BT; ++r)
    for (meap::index_t v = 0; v < V; ++v) {
      double z = 0;
      for (meap::index_t c = 0; c < C; ++c) z += double(lnf[r * C + c]) * wte[v * C + c];
      logits[r * V + v] = static_cast<float>(z);
    }
  const auto reference = meap::cross_entropy(
      meap::cpu{}, meap::tensor_view<const float, meap::cpu>(logits.data(), dims{BT, V}), labels,
      meap::tensor_view<float, meap::cpu>(d_logits.data(), dims{BT, V}));
  BOOST_TEST(result.loss == reference.loss, boost::test_tools::tolerance(1e-5));
  BOOST_TEST(result.selected == 5);
  for (meap::index_t v = 0; v < V; ++v)
    for (meap::index_t c = 0; c < C; ++c) {
      double g = 0.5;  // accumulated onto the buffer's 0.5
      for (meap::index_t r = 0; r < BT; ++r) g += double(d_logits[r * V + v]) * lnf[r * C + c];
      BOOST_TEST(grad_wte[v * C + c] == g, boost::test_tools::tolerance(1e-5));
    }
  for (meap::index_t r = 0; r < BT; ++r)
    for (meap::index_t c = 0; c < C; ++c) {
      double g = 0;
      for (meap::index_t v = 0; v < V; ++v) g += double(d_logits[r * V + v]) * wte[v * C + c];
      BOOST_TEST(grad_lnf[r * C + c] + 1.0 == g + 1.0, boost::test_tools::tolerance(1e-5));
    }
}
