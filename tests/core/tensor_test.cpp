// Views, owning tensors, host copies, and the argument checks around them.
#include <meap/meap.hpp>

#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>

#include "support/errors.hpp"

#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

namespace {

using element_types =
    boost::mpl::list<float, double, meap::half, meap::bfloat16, std::int32_t, std::uint16_t, std::uint8_t, std::int8_t>;

using meap_test::error_says;

}  // namespace

BOOST_AUTO_TEST_SUITE(tensor)

BOOST_AUTO_TEST_CASE(contiguous_view_indexing_and_strides) {
  std::vector<float> storage(24);
  std::iota(storage.begin(), storage.end(), 0.0f);
  const auto v = meap::make_view(std::span<float>(storage), {2, 3, 4});
  BOOST_TEST(v.rank() == 3);
  BOOST_TEST((v.strides() == meap::dims{12, 4, 1}));
  BOOST_TEST(v.is_contiguous());
  BOOST_TEST(v(1, 2, 3) == 23.0f);
  BOOST_TEST(v(0, 1, 2) == 6.0f);
  BOOST_TEST(meap::to_string(v.shape()) == "(2, 3, 4)");
}

BOOST_AUTO_TEST_CASE(slice_select_transpose_reshape) {
  std::vector<int> storage(24);
  std::iota(storage.begin(), storage.end(), 0);
  const auto v = meap::make_view(std::span<int>(storage), {2, 3, 4});
  const auto s = v.slice(2, 1, 3);  // (2, 3, 2)
  BOOST_TEST((s.shape() == meap::dims{2, 3, 2}));
  BOOST_TEST(!s.is_contiguous());
  BOOST_TEST(s(1, 2, 0) == v(1, 2, 1));
  const auto row = v.select(0, 1);  // (3, 4)
  BOOST_TEST(row.rank() == 2);
  BOOST_TEST(row(2, 3) == 23);
  const auto t = v.transpose(0, 2);  // (4, 3, 2)
  BOOST_TEST((t.shape() == meap::dims{4, 3, 2}));
  BOOST_TEST(t(3, 1, 1) == v(1, 1, 3));
  const auto r = v.reshape({6, 4});
  BOOST_TEST(r(5, 3) == 23);
  BOOST_CHECK_EXCEPTION(t.reshape({24}), meap::error, error_says("this", {"a contiguous view"}));
  BOOST_CHECK_EXCEPTION(v.reshape({5, 5}), meap::error, error_says("shape", {"(5, 5)", "24 elements"}));
  BOOST_CHECK_EXCEPTION(v.slice(1, 2, 4), meap::error, error_says("end", {"size(axis) = 3"}));
  BOOST_CHECK_EXCEPTION(v.select(3, 0), meap::error, error_says("axis", {"= 3", "[0, 3)"}));
  // Extent-1 axes do not break contiguity whatever their stride.
  const meap::tensor_view<int, meap::cpu> column(storage.data(), {4, 1}, {1, 99});
  BOOST_TEST(column.is_contiguous());
}

BOOST_AUTO_TEST_CASE(make_view_rejects_layouts_that_do_not_fit) {
  std::vector<float> buffer(12);
  // A (3, 4) row-major layout needs exactly 12 elements; a padded row stride of 5 needs 14.
  BOOST_CHECK_NO_THROW(meap::make_view(buffer.data(), 12, {3, 4}, {4, 1}));
  BOOST_CHECK_EXCEPTION(meap::make_view(buffer.data(), 12, {3, 4}, {5, 1}), meap::error,
                        error_says("shape", {"(3, 4) with strides (5, 1)", "offset 13", "capacity 12"}));
  BOOST_CHECK_EXCEPTION(meap::make_view(buffer.data(), 12, {3, 4}, {4}), meap::error,
                        error_says("strides", {"(4)", "one stride per dimension of shape (3, 4)"}));
  BOOST_CHECK_EXCEPTION(meap::make_view(buffer.data(), 12, {3, -4}, {4, 1}), meap::error,
                        error_says("shape", {"(3, -4)", "non-negative extents"}));
  BOOST_CHECK_EXCEPTION(meap::make_view(buffer.data(), 12, {3, 4}, {4, -1}), meap::error,
                        error_says("strides", {"negative strides are not supported"}));
  BOOST_CHECK_EXCEPTION((meap::make_view<meap::cpu, float>(nullptr, 12, {3, 4}, {4, 1})), meap::error,
                        error_says("data", {"nullptr"}));
  BOOST_CHECK_EXCEPTION(meap::make_view(buffer.data(), 12, {3, 3}, {std::int64_t{1} << 62, 4}), meap::error,
                        error_says("strides", {"fit in 64 bits"}));
  BOOST_CHECK_EXCEPTION(meap::make_view(std::span<float>(buffer), {5, 2}), meap::error,
                        error_says("shape", {"(5, 2)", "as many elements as the span holds (12)"}));
  BOOST_CHECK_EXCEPTION(meap::make_view(buffer.data(), 12, {3, 4}, {4, 1}, {meap::device_kind::cuda, 0}),
                        meap::error, error_says("where", {"cuda:0", "a location on cpu"}));
  // An empty view fits anywhere, even over no memory.
  BOOST_CHECK_NO_THROW((meap::make_view<meap::cpu, float>(nullptr, 0, {0, 7}, {7, 1})));
  BOOST_CHECK_EXCEPTION(meap::dims({1, 2, 3, 4, 5, 6, 7, 8, 9}), meap::error, error_says("values", {"9"}));
}

BOOST_AUTO_TEST_CASE_TEMPLATE(owning_tensor_fill_copy_clone, T, element_types) {
  meap::cpu host;
  auto a = meap::zeros<T>(host, {3, 5});
  BOOST_TEST(a.numel() == 15);
  BOOST_TEST(a.bytes() == 15 * sizeof(T));
  for (meap::index_t i = 0; i < a.numel(); ++i) BOOST_TEST_REQUIRE(static_cast<double>(a.data()[i]) == 0.0);
  auto b = meap::full<T>(host, {5, 3}, T(7));
  // Copy a transposed (strided) view into a contiguous one, element by element.
  for (int i = 0; i < 15; ++i) b.data()[i] = T(i);
  meap::copy(host, b.view().transpose(0, 1).as_const(), a.view());
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 5; ++c) BOOST_TEST_REQUIRE(static_cast<double>(a.view()(r, c)) == static_cast<double>(b.view()(c, r)));
  const auto c = meap::clone(host, a.view());
  BOOST_TEST(c.data() != a.data());
  BOOST_TEST(static_cast<double>(c.view()(2, 4)) == static_cast<double>(a.view()(2, 4)));
  meap::fill(host, a.view().slice(1, 1, 2), T(3));
  BOOST_TEST(static_cast<double>(a.view()(2, 1)) == 3.0);
  BOOST_TEST(static_cast<double>(a.view()(2, 2)) != 3.0);
  // Moves transfer ownership; the source is left empty.
  auto moved = std::move(a);
  BOOST_TEST(a.data() == nullptr);
  BOOST_TEST(a.numel() == 0);
  BOOST_TEST(moved.numel() == 15);
  moved = meap::tensor<T, meap::cpu>();
  BOOST_TEST(moved.bytes() == 0u);
  BOOST_TEST((meap::tensor<T, meap::cpu>().shape() == meap::dims{0}));
}

BOOST_AUTO_TEST_CASE(copy_rejects_different_sizes) {
  meap::cpu host;
  auto src = meap::zeros<float>(host, {4, 3});
  auto dst = meap::zeros<float>(host, {3, 4});
  BOOST_CHECK_EXCEPTION(meap::copy(host, src.view().as_const(), dst.view()), meap::error,
                        error_says("dst", {"shape (3, 4)", "shape (4, 3)", "size mismatch"}));
  BOOST_CHECK_EXCEPTION((meap::tensor<float, meap::cpu>(host, {2, -1})), meap::error,
                        error_says("shape", {"(2, -1)", "non-negative"}));
  BOOST_CHECK_EXCEPTION((meap::tensor<double, meap::cpu>(host, {std::int64_t{1} << 40, std::int64_t{1} << 40})),
                        meap::error, error_says("shape", {"fits in size_t"}));
}

BOOST_AUTO_TEST_CASE(view_cast_checks_dtype_and_device) {
  std::vector<float> storage(6, 1.0f);
  const auto typed = meap::make_view(std::span<float>(storage), {2, 3});
  const meap::any_view erased = meap::to_any(typed);
  BOOST_TEST((erased.type == meap::dtype::f32));
  const auto back = meap::view_cast<float, meap::cpu>(erased, "weights");
  BOOST_TEST(back.data() == storage.data());
  BOOST_TEST((back.shape() == typed.shape()));
  BOOST_CHECK_EXCEPTION((meap::view_cast<meap::bfloat16, meap::cpu>(erased, "weights")), meap::error,
                        error_says("weights", {"dtype float32", "dtype bfloat16", "dtype mismatch"}));
  meap::any_view on_gpu = erased;
  on_gpu.where = {meap::device_kind::cuda, 1};
  BOOST_CHECK_EXCEPTION((meap::view_cast<float, meap::cpu>(on_gpu, "weights")), meap::error,
                        error_says("weights", {"memory on cuda:1", "memory on cpu", "device mismatch"}));
  const auto device_view = meap::view_cast<float, meap::cuda>(on_gpu, "weights");  // never dereferenced
  BOOST_TEST((device_view.location() == meap::device_location{meap::device_kind::cuda, 1}));
  const meap::tensor_view<float, meap::cuda> other_gpu(nullptr, {2, 3}, {meap::device_kind::cuda, 0});
  BOOST_CHECK_EXCEPTION(meap::check_same_device("meap::op", "x", device_view, "y", other_gpu), meap::error,
                        error_says("y", {"cuda:0", "cuda:1", "'x'", "device mismatch"}));
  BOOST_CHECK_NO_THROW(meap::check_same_device("meap::op", "x", device_view, "y", device_view));
  BOOST_CHECK_EXCEPTION(meap::check_contiguous("meap::op", "q", typed.transpose(0, 1)), meap::error,
                        error_says("q", {"strides (1, 3)", "contiguous"}));
  BOOST_CHECK_EXCEPTION(meap::check_shape("meap::op", "k", typed, {3, 2}), meap::error,
                        error_says("k", {"shape (2, 3)", "expected shape (3, 2)"}));
}

BOOST_AUTO_TEST_SUITE_END()
