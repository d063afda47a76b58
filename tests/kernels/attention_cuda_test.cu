// meap::attention_* on meap::cuda against the CPU kernel (the oracle) on fresh random inputs:
// forward and backward for half, bfloat16 and float; the tensor-core path (D = 64, 128, and the
// padded generic head dims), the float path, and the generic float path 16-bit views take when
// the tensor cores cannot (odd head dims, offset views); odd T, GQA / MQA, segment ids (sorted
// documents and unsorted ids), an explicit scale; the probe. Every output is poisoned with NaN
// before each run, so an element a kernel never writes fails the comparison. The backward pass
// is checked to be bit-for-bit deterministic. Label `gpu`: skipped (exit 77) without a device.
// GCC 12 at -O3 reports a -Wmaybe-uninitialized inside Boost.Test's own runtime_config (a
// boost::function copy) in this large translation unit, where its inlining budget differs; nvcc
// hands the pragma to the host compiler.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define BOOST_TEST_MODULE meap attention cuda
#define BOOST_TEST_NO_MAIN
#define BOOST_TEST_ALTERNATIVE_INIT_API
#include <boost/test/included/unit_test.hpp>

#include <meap/cuda.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "kernels/reference.hpp"
#include "support/errors.hpp"
#include "support/gpu_main.hpp"

namespace {

using meap::cpu;
using meap::dims;
using meap::index_t;
using namespace meap_test;

// Errors are max |gpu - cpu| / max(1, max |cpu|) (relative_error in reference.hpp). The CPU
// kernel computes half / bfloat16 in float and rounds once on output; the tensor-core path also
// rounds P (and dS) to the input type before the second product of each pair, as
// FlashAttention does, so 16-bit tolerances allow a few roundings of 2^-11 (half) and 2^-8
// (bfloat16). The float paths differ from the CPU only in the order of float sums.
template <class T>
struct tolerance;
template <>
struct tolerance<float> {
  static constexpr double value = 2e-5, lse = 2e-5, probe = 1e-5;
};
template <>
struct tolerance<meap::half> {
  static constexpr double value = 5e-3, lse = 5e-5, probe = 1e-5;
};
template <>
struct tolerance<meap::bfloat16> {
  static constexpr double value = 3e-2, lse = 5e-5, probe = 1e-5;
};

struct stream_fixture {
  cudaStream_t stream = nullptr;
  stream_fixture() { MEAP_CUDA_CHECK(cudaStreamCreate(&stream)); }
  ~stream_fixture() {
    (void)cudaStreamSynchronize(stream);
    (void)cudaStreamDestroy(stream);
  }
  meap::cuda device() const { return meap::cuda(stream); }
};

template <class T>
meap::tensor<T, meap::cuda> upload(const meap::cuda& device, const meap::tensor<T, cpu>& host) {
  return meap::to_device(device, host.view());
}

template <class T>
std::vector<double> download(const meap::cuda& device, const meap::tensor_view<T, meap::cuda>& view) {
  const auto host = meap::to_host(device, view);
  return to_double(host.data(), host.numel());
}

template <class T>
void poison(const meap::cuda& device, const meap::tensor_view<T, meap::cuda>& view) {
  meap::fill(device, view, T(std::numeric_limits<float>::quiet_NaN()));
}

std::vector<std::int32_t> make_segments(std::mt19937& rng, index_t B, index_t T, int kind) {
  std::vector<std::int32_t> ids;
  if (kind == 0) return ids;
  for (index_t b = 0; b < B; ++b) {
    if (kind == 1) {  // packed documents, increasing ids
      std::uniform_int_distribution<index_t> length(1, T / 2 + 1);
      std::int32_t id = 0;
      for (index_t t = 0; t < T;) {
        const index_t n = std::min(length(rng), T - t);
        for (index_t u = 0; u < n; ++u) ids.push_back(id);
        t += n;
        ++id;
      }
    } else {  // unsorted ids: tokens of a document need not be contiguous
      std::uniform_int_distribution<int> id(0, 2);
      for (index_t t = 0; t < T; ++t) ids.push_back(id(rng));
    }
  }
  return ids;
}

struct shape {
  index_t B, T, Hq, Hkv, D;
  int segments;  // 0: none, 1: sorted documents, 2: unsorted ids
};

std::string describe(const shape& s, std::string_view dtype) {
  return "B=" + std::to_string(s.B) + " T=" + std::to_string(s.T) + " Hq=" + std::to_string(s.Hq) +
         " Hkv=" + std::to_string(s.Hkv) + " D=" + std::to_string(s.D) + " segments=" + std::to_string(s.segments) +
         " dtype=" + std::string(dtype);
}

// Runs forward and backward on both devices and compares. `offset` > 0 places every CUDA tensor
// `offset` elements into its allocation, so no view is 16-byte aligned (the generic path).
template <class T>
void check_against_cpu(const meap::cuda& device, std::mt19937& rng, const shape& s, double scale = 0, index_t offset = 0) {
  using A = meap::accumulate_t<T>;
  const index_t nq = s.B * s.T * s.Hq * s.D, nkv = s.B * s.T * s.Hkv * s.D;
  const dims q_shape{s.B, s.T, s.Hq, s.D}, kv_shape{s.B, s.T, s.Hkv, s.D}, lse_shape{s.B, s.Hq, s.T};
  // Peaked softmaxes (q, k ~ N(0, 1.5^2)) stress the running max.
  const auto q = make_tensor<T>(q_shape, random_values<T>(rng, nq, 1.5));
  const auto k = make_tensor<T>(kv_shape, random_values<T>(rng, nkv, 1.5));
  const auto v = make_tensor<T>(kv_shape, random_values<T>(rng, nkv));
  const auto d_out = make_tensor<T>(q_shape, random_values<T>(rng, nq));
  const auto segments = make_segments(rng, s.B, s.T, s.segments);

  meap::attention_options<cpu> host_options;
  meap::attention_options<meap::cuda> device_options;
  meap::tensor<std::int32_t, meap::cuda> device_segments;
  if (scale > 0) host_options.scale = device_options.scale = scale;
  if (!segments.empty()) {
    host_options.segment_ids = meap::cpu_view<const std::int32_t>(segments.data(), dims{s.B, s.T});
    device_segments = meap::to_device(device, host_options.segment_ids);
    device_options.segment_ids = device_segments.view();
  }

  // CPU oracle.
  const auto want = meap::attention_forward(cpu{}, q.view(), k.view(), v.view(), host_options);
  meap::tensor<T, cpu> want_dq(cpu{}, q_shape), want_dk(cpu{}, kv_shape), want_dv(cpu{}, kv_shape);
  meap::attention_backward<T>(cpu{}, q.view(), k.view(), v.view(), want.out.view(), want.lse.view(), d_out.view(),
                              want_dq.view(), want_dk.view(), want_dv.view(), host_options);

  // Device tensors, each `offset` elements into its own allocation.
  std::vector<meap::tensor<T, meap::cuda>> storage;
  const auto place = [&](const dims& shape_) {
    storage.emplace_back(device, dims{shape_.product() + offset});
    return meap::tensor_view<T, meap::cuda>(storage.back().data() + offset, shape_, storage.back().view().location());
  };
  const auto placed_copy = [&](const meap::tensor<T, cpu>& host) {
    const auto view = place(host.shape());
    meap::copy(device, host.view(), view);
    return meap::tensor_view<const T, meap::cuda>(view);
  };
  const auto dq_ = placed_copy(q), dk_ = placed_copy(k), dv_ = placed_copy(v), ddo = placed_copy(d_out);
  const auto out = place(q_shape);
  meap::tensor<A, meap::cuda> lse(device, lse_shape);
  poison(device, out);
  poison(device, lse.view());
  meap::attention_forward<T>(device, dq_, dk_, dv_, out, lse.view(), device_options);

  BOOST_TEST_CONTEXT(describe(s, meap::to_string(meap::dtype_of<T>)) << " offset=" << offset << " scale=" << scale) {
    BOOST_TEST(relative_error(download(device, out), to_double(want.out.data(), want.out.numel())) <= tolerance<T>::value);
    BOOST_TEST(relative_error(download(device, lse.view()), to_double(want.lse.data(), want.lse.numel())) <=
               tolerance<T>::lse);

    // The backward pass reads the CPU's forward results, so that its comparison is independent of
    // the forward's error.
    const auto cpu_out = placed_copy(want.out);
    const auto cpu_lse = meap::to_device(device, want.lse.view());
    const auto d_q = place(q_shape), d_k = place(kv_shape), d_v = place(kv_shape);
    poison(device, d_q);
    poison(device, d_k);
    poison(device, d_v);
    meap::attention_backward<T>(device, dq_, dk_, dv_, cpu_out, cpu_lse.view(), ddo, d_q, d_k, d_v, device_options);
    const auto got_dq = download(device, d_q), got_dk = download(device, d_k), got_dv = download(device, d_v);
    BOOST_TEST(relative_error(got_dq, to_double(want_dq.data(), want_dq.numel())) <= tolerance<T>::value);
    BOOST_TEST(relative_error(got_dk, to_double(want_dk.data(), want_dk.numel())) <= tolerance<T>::value);
    BOOST_TEST(relative_error(got_dv, to_double(want_dv.data(), want_dv.numel())) <= tolerance<T>::value);

    // Deterministic: a second run (outputs poisoned again) gives the same bits.
    poison(device, d_q);
    poison(device, d_k);
    poison(device, d_v);
    meap::attention_backward<T>(device, dq_, dk_, dv_, cpu_out, cpu_lse.view(), ddo, d_q, d_k, d_v, device_options);
    BOOST_TEST((download(device, d_q) == got_dq));
    BOOST_TEST((download(device, d_k) == got_dk));
    BOOST_TEST((download(device, d_v) == got_dv));
  }
}

// Head dims: 64 and 128 (specialized), 8, 40, 96, 200, 256 (tensor cores, padded to a bucket),
// 1, 37, 129 (not a multiple of 8: float kernels for 16-bit inputs too).
const shape shapes[] = {
    {1, 1, 1, 1, 64, 0},    {2, 7, 2, 2, 64, 0},     {1, 67, 4, 2, 128, 0},  {2, 97, 3, 1, 64, 1},
    {1, 129, 2, 2, 128, 1}, {1, 300, 4, 1, 256, 0},  {1, 200, 2, 1, 96, 1},  {1, 150, 2, 2, 40, 0},
    {2, 77, 2, 1, 37, 1},   {1, 64, 2, 2, 8, 0},     {1, 333, 8, 2, 64, 2},  {1, 1000, 4, 4, 128, 0},
    {1, 520, 2, 1, 256, 1}, {3, 65, 2, 2, 1, 0},     {1, 130, 2, 1, 200, 2}, {1, 90, 2, 1, 129, 0},
    {2, 257, 4, 1, 128, 2}, {1, 2048, 4, 2, 128, 1}, {1, 1536, 2, 1, 64, 0},
};

template <class T>
void run_shapes(unsigned seed) {
  stream_fixture stream;
  std::mt19937 rng(seed);
  for (const auto& s : shapes) check_against_cpu<T>(stream.device(), rng, s);
  check_against_cpu<T>(stream.device(), rng, {1, 90, 2, 1, 64, 1}, 0.37);  // explicit scale
}

}  // namespace

BOOST_AUTO_TEST_SUITE(attention_cuda)

BOOST_AUTO_TEST_CASE(half_matches_cpu) { run_shapes<meap::half>(11); }
BOOST_AUTO_TEST_CASE(bfloat16_matches_cpu) { run_shapes<meap::bfloat16>(12); }
BOOST_AUTO_TEST_CASE(float_matches_cpu) { run_shapes<float>(13); }

// A few small shapes that reach every kernel (tensor cores at each head-dim bucket, the float
// kernels, segment ids, GQA, offset views, the probe) quickly: the case to run under
// compute-sanitizer (docs/kernels.md, "CUDA attention").
BOOST_AUTO_TEST_CASE(small_shapes) {
  stream_fixture stream;
  std::mt19937 rng(16);
  for (const shape& s : {shape{1, 37, 2, 1, 64, 1}, shape{2, 70, 2, 2, 128, 2}, shape{1, 45, 2, 1, 200, 1},
                         shape{1, 33, 4, 2, 37, 0}}) {
    check_against_cpu<meap::half>(stream.device(), rng, s);
    check_against_cpu<meap::bfloat16>(stream.device(), rng, s);
    check_against_cpu<float>(stream.device(), rng, s);
  }
  check_against_cpu<meap::bfloat16>(stream.device(), rng, {1, 50, 2, 1, 64, 0}, 0, 1);
  meap::tensor<float, meap::cuda> p(stream.device(), dims{1, 2, 40, 40}), mass(stream.device(), dims{1, 2, 40});
  const auto q = upload(stream.device(), make_tensor<meap::half>(dims{1, 40, 2, 24}, random_values<meap::half>(rng, 1920)));
  const auto k = upload(stream.device(), make_tensor<meap::half>(dims{1, 40, 1, 24}, random_values<meap::half>(rng, 960)));
  meap::attention_probabilities(stream.device(), q.view(), k.view(), p.view());
  meap::attention_key_mass(stream.device(), q.view(), k.view(), mass.view());
  meap::synchronize(stream.device());
}

// Views that are not 16-byte aligned take the float kernels, for every element type.
BOOST_AUTO_TEST_CASE(offset_views_match_cpu) {
  stream_fixture stream;
  std::mt19937 rng(14);
  for (const shape& s : {shape{1, 100, 2, 1, 64, 1}, shape{2, 70, 4, 2, 128, 0}}) {
    check_against_cpu<meap::half>(stream.device(), rng, s, 0, 1);
    check_against_cpu<meap::bfloat16>(stream.device(), rng, s, 0, 3);
    check_against_cpu<float>(stream.device(), rng, s, 0, 1);
  }
}

// The probe: probabilities (masked entries exactly 0) and key mass, against the CPU.
BOOST_AUTO_TEST_CASE(probe_matches_cpu) {
  stream_fixture stream;
  const meap::cuda device = stream.device();
  std::mt19937 rng(15);
  const auto run = [&](auto tag, const shape& s) {
    using T = decltype(tag);
    const dims q_shape{s.B, s.T, s.Hq, s.D}, kv_shape{s.B, s.T, s.Hkv, s.D};
    const auto q = make_tensor<T>(q_shape, random_values<T>(rng, q_shape.product(), 1.5));
    const auto k = make_tensor<T>(kv_shape, random_values<T>(rng, kv_shape.product(), 1.5));
    const auto segments = make_segments(rng, s.B, s.T, s.segments);
    meap::attention_options<cpu> host_options;
    meap::attention_options<meap::cuda> device_options;
    meap::tensor<std::int32_t, meap::cuda> device_segments;
    if (!segments.empty()) {
      host_options.segment_ids = meap::cpu_view<const std::int32_t>(segments.data(), dims{s.B, s.T});
      device_segments = meap::to_device(device, host_options.segment_ids);
      device_options.segment_ids = device_segments.view();
    }
    meap::tensor<float, cpu> want_p(cpu{}, dims{s.B, s.Hq, s.T, s.T}), want_mass(cpu{}, dims{s.B, s.Hq, s.T});
    meap::attention_probabilities(cpu{}, q.view(), k.view(), want_p.view(), host_options);
    meap::attention_key_mass(cpu{}, q.view(), k.view(), want_mass.view(), host_options);

    const auto dq = upload(device, q), dk = upload(device, k);
    meap::tensor<float, meap::cuda> p(device, dims{s.B, s.Hq, s.T, s.T}), mass(device, dims{s.B, s.Hq, s.T});
    poison(device, p.view());
    poison(device, mass.view());
    meap::attention_probabilities(device, dq.view(), dk.view(), p.view(), device_options);
    meap::attention_key_mass(device, dq.view(), dk.view(), mass.view(), device_options);
    BOOST_TEST_CONTEXT(describe(s, meap::to_string(meap::dtype_of<T>))) {
      const auto got_p = download(device, p.view());
      BOOST_TEST(relative_error(got_p, to_double(want_p.data(), want_p.numel())) <= tolerance<T>::probe);
      index_t masked_nonzero = 0;
      for (index_t i = 0; i < want_p.numel(); ++i) masked_nonzero += want_p.data()[i] == 0.f && got_p[i] != 0.0;
      BOOST_TEST(masked_nonzero == 0);  // masked exactly, not approximately
      BOOST_TEST(relative_error(download(device, mass.view()), to_double(want_mass.data(), want_mass.numel())) <=
                 tolerance<T>::probe * 10);  // sums of up to T probabilities
    }
  };
  for (const shape& s : {shape{1, 1, 1, 1, 8, 0}, shape{2, 37, 4, 2, 64, 1}, shape{1, 130, 2, 1, 128, 2},
                         shape{1, 75, 3, 3, 200, 1}, shape{2, 200, 2, 1, 13, 0}}) {
    run(float{}, s);
    run(meap::half{}, s);
    run(meap::bfloat16{}, s);
  }
}

// The same argument errors as the CPU (the CUDA-only ones are in front_door_args_test.cu,
// which runs without a GPU); here: an empty batch does nothing and touches no memory.
BOOST_AUTO_TEST_CASE(empty_batch_is_a_no_op) {
  stream_fixture stream;
  const meap::cuda device = stream.device();
  meap::tensor<meap::half, meap::cuda> q(device, dims{0, 5, 2, 64}), k(device, dims{0, 5, 1, 64}), out(device, dims{0, 5, 2, 64});
  meap::tensor<float, meap::cuda> lse(device, dims{0, 2, 5});
  BOOST_CHECK_NO_THROW(meap::attention_forward<meap::half>(device, q.view(), k.view(), k.view(), out.view(), lse.view()));
  meap::synchronize(device);
}

// Which kernels run is no longer a silent consequence of alignment: attention_kernel_path says,
// and attention_path::tensor_cores refuses what cannot run there. This build lists sm_80 and
// sm_90, so the tensor-core code is real (its PTX is compute_80 or newer).
BOOST_AUTO_TEST_CASE(the_kernel_path_is_visible_and_can_be_required) {
  stream_fixture stream;
  const meap::cuda device = stream.device();
  BOOST_TEST(meap::detail::cuda_attention::tensor_core_architecture() >= 800);
  meap::tensor<meap::bfloat16, meap::cuda> q(device, dims{1, 64, 2, 64}), k(device, dims{1, 64, 1, 64}),
      out(device, dims{1, 64, 2, 64});
  meap::tensor<float, meap::cuda> lse(device, dims{1, 2, 64});
  meap::tensor<float, meap::cuda> qf(device, dims{1, 64, 2, 64}), kf(device, dims{1, 64, 1, 64}), outf(device, dims{1, 64, 2, 64});
  meap::fill(device, q.view(), meap::bfloat16(0.25f));
  meap::fill(device, k.view(), meap::bfloat16(0.5f));
  BOOST_TEST((meap::attention_kernel_path<meap::bfloat16>(q.view(), k.view(), k.view(), out.view()) ==
              meap::attention_path::tensor_cores));
  BOOST_TEST((meap::attention_kernel_path<float>(qf.view(), kf.view(), kf.view(), outf.view()) == meap::attention_path::fma));
  meap::attention_options<meap::cuda> required;
  required.path = meap::attention_path::tensor_cores;
  BOOST_CHECK_EXCEPTION(meap::attention_forward<float>(device, qf.view(), kf.view(), kf.view(), outf.view(), lse.view(), required),
                        meap::error, meap_test::error_says("meap::attention_forward", "options.path", {"float32 inputs"}));
  // A view one element in: no longer 16-byte aligned.
  const meap::tensor_view<const meap::bfloat16, meap::cuda> shifted(q.data() + 1, dims{1, 63, 2, 64});
  const meap::tensor_view<const meap::bfloat16, meap::cuda> k_short(k.data(), dims{1, 63, 1, 64});
  meap::tensor<meap::bfloat16, meap::cuda> out_short(device, dims{1, 63, 2, 64});
  meap::tensor<float, meap::cuda> lse_short(device, dims{1, 2, 63});
  BOOST_TEST((meap::attention_kernel_path<meap::bfloat16>(shifted, k_short, k_short, out_short.view()) ==
              meap::attention_path::fma));
  BOOST_CHECK_EXCEPTION(meap::attention_forward<meap::bfloat16>(device, shifted, k_short, k_short, out_short.view(),
                                                                lse_short.view(), required),
                        meap::error, meap_test::error_says("options.path", {"not 16-byte aligned"}));
  // The FMA kernels on request, and the two paths agree.
  meap::attention_options<meap::cuda> fma;
  fma.path = meap::attention_path::fma;
  meap::tensor<meap::bfloat16, meap::cuda> out_fma(device, dims{1, 64, 2, 64});
  meap::attention_forward<meap::bfloat16>(device, q.view(), k.view(), k.view(), out.view(), lse.view());
  meap::attention_forward<meap::bfloat16>(device, q.view(), k.view(), k.view(), out_fma.view(), lse.view(), fma);
  const auto a = meap::to_host(device, out.view()), b = meap::to_host(device, out_fma.view());
  for (meap::index_t i = 0; i < a.numel(); ++i)
    BOOST_TEST_REQUIRE(std::abs(float(a.data()[i]) - float(b.data()[i])) <= 1e-2f, "element " << i);
}

BOOST_AUTO_TEST_SUITE_END()
