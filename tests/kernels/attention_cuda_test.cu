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
#include <boost/test/unit_test.hpp>

#include <meap/cuda.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "kernels/reference.hpp"
#include "support/cuda.hpp"
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
// `row` bounds the same error per (b, t, h) row, relative to that row's own size (floored at 1%
// of the largest value): the roundings are relative to the values they round, so the per-element
// bound carries over to each row; twice the global figure leaves room for rows whose sums cancel
// (dK and dV of keys few queries attend to), and float gets 1e-4 for the same reason. These row
// bounds are derived, not yet measured: the first GPU run (docs/gpu.md) is their calibration.
template <class T>
struct tolerance;
template <>
struct tolerance<float> {
  static constexpr double value = 2e-5, lse = 2e-5, probe = 1e-5, row = 1e-4;
};
template <>
struct tolerance<meap::half> {
  static constexpr double value = 5e-3, lse = 5e-5, probe = 1e-5, row = 1e-2;
};
template <>
struct tolerance<meap::bfloat16> {
  static constexpr double value = 3e-2, lse = 5e-5, probe = 1e-5, row = 6e-2;
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
    } else if (kind == 3) {  // many short packed documents (1 to 8 tokens): most tiles are skipped
      std::uniform_int_distribution<index_t> length(1, 8);
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
  int segments;  // 0: none, 1: sorted documents, 2: unsorted ids, 3: many documents of 1 to 8 tokens
};

std::string describe(const shape& s, std::string_view dtype) {
  return "B=" + std::to_string(s.B) + " T=" + std::to_string(s.T) + " Hq=" + std::to_string(s.Hq) +
         " Hkv=" + std::to_string(s.Hkv) + " D=" + std::to_string(s.D) + " segments=" + std::to_string(s.segments) +
         " dtype=" + std::string(dtype);
}

// Per-row errors (worst_row_error in reference.hpp): each (b, t, h) row of D values against its
// own size, so that one wrong row of a long sequence cannot hide under the global maximum.
void check_rows(std::string_view name, const shape& s, index_t heads, const std::vector<double>& got,
                const std::vector<double>& want, double tolerance) {
  const auto worst = worst_row_error(got, want, s.D);
  const index_t h = worst.row % heads, t = worst.row / heads % s.T, b = worst.row / heads / s.T;
  BOOST_TEST(worst.error <= tolerance, name << ": worst row (b, t, h) = (" << b << ", " << t << ", " << h
                                            << ") has relative error " << worst.error << " > " << tolerance);
}

// Device tensors `offset` elements into their own allocations: with offset > 0 no view is 16-byte
// aligned, so 16-bit inputs take the FMA kernels.
template <class T>
class offset_tensors {
 public:
  offset_tensors(const meap::cuda& device, index_t offset) : device_(device), offset_(offset) {}
  meap::tensor_view<T, meap::cuda> place(const dims& shape) {
    storage_.emplace_back(device_, dims{shape.product() + offset_});
    return meap::tensor_view<T, meap::cuda>(storage_.back().data() + offset_, shape, storage_.back().view().location());
  }
  meap::tensor_view<const T, meap::cuda> copy_of(const meap::tensor<T, cpu>& host) {
    const auto view = place(host.shape());
    meap::copy(device_, host.view(), view);
    return view;
  }

 private:
  meap::cuda device_;
  index_t offset_;
  std::vector<meap::tensor<T, meap::cuda>> storage_;  // moving a tensor keeps its device pointer
};

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
  offset_tensors<T> placed(device, offset);
  const auto dq_ = placed.copy_of(q), dk_ = placed.copy_of(k), dv_ = placed.copy_of(v), ddo = placed.copy_of(d_out);
  const auto out = placed.place(q_shape);
  meap::tensor<A, meap::cuda> lse(device, lse_shape);
  poison(device, out);
  poison(device, lse.view());
  meap::attention_forward<T>(device, dq_, dk_, dv_, out, lse.view(), device_options);

  BOOST_TEST_CONTEXT(describe(s, meap::to_string(meap::dtype_of<T>)) << " offset=" << offset << " scale=" << scale) {
    const auto got_out = download(device, out);
    BOOST_TEST(relative_error(got_out, to_double(want.out.data(), want.out.numel())) <= tolerance<T>::value);
    check_rows("out", s, s.Hq, got_out, to_double(want.out.data(), want.out.numel()), tolerance<T>::row);
    BOOST_TEST(relative_error(download(device, lse.view()), to_double(want.lse.data(), want.lse.numel())) <=
               tolerance<T>::lse);

    // The backward pass reads the CPU's forward results, so that its comparison is independent of
    // the forward's error.
    const auto cpu_out = placed.copy_of(want.out);
    const auto cpu_lse = meap::to_device(device, want.lse.view());
    const auto d_q = placed.place(q_shape), d_k = placed.place(kv_shape), d_v = placed.place(kv_shape);
    poison(device, d_q);
    poison(device, d_k);
    poison(device, d_v);
    meap::attention_backward<T>(device, dq_, dk_, dv_, cpu_out, cpu_lse.view(), ddo, d_q, d_k, d_v, device_options);
    const auto got_dq = download(device, d_q), got_dk = download(device, d_k), got_dv = download(device, d_v);
    BOOST_TEST(relative_error(got_dq, to_double(want_dq.data(), want_dq.numel())) <= tolerance<T>::value);
    BOOST_TEST(relative_error(got_dk, to_double(want_dk.data(), want_dk.numel())) <= tolerance<T>::value);
    BOOST_TEST(relative_error(got_dv, to_double(want_dv.data(), want_dv.numel())) <= tolerance<T>::value);
    check_rows("dq", s, s.Hq, got_dq, to_double(want_dq.data(), want_dq.numel()), tolerance<T>::row);
    check_rows("dk", s, s.Hkv, got_dk, to_double(want_dk.data(), want_dk.numel()), tolerance<T>::row);
    check_rows("dv", s, s.Hkv, got_dv, to_double(want_dv.data(), want_dv.numel()), tolerance<T>::row);

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
  for (const auto& s : shapes) check_against_cpu<T>(stream.device, rng, s);
  check_against_cpu<T>(stream.device, rng, {1, 90, 2, 1, 64, 1}, 0.37);  // explicit scale
}

// ---------------------------------------------------------------------------------------------
// Leaks: a query must not see keys in its future or in another document. Perturbing K and V only
// where a set of queries must not look leaves those queries' outputs, log-sum-exps and dQ rows
// bit-identical (and, for documents, the dK and dV rows of every other document's keys): masked
// scores must contribute an exact zero, not a small number.
// ---------------------------------------------------------------------------------------------
template <class T>
struct attention_run {
  std::vector<float> out, lse, dq, dk, dv;
};

template <class T>
attention_run<T> run_on_device(const meap::cuda& device, const shape& s, const meap::tensor<T, cpu>& q,
                               const meap::tensor<T, cpu>& k, const meap::tensor<T, cpu>& v,
                               const meap::tensor<T, cpu>& d_out, const std::vector<std::int32_t>& segments,
                               index_t offset, meap::attention_path expected_path) {
  using A = meap::accumulate_t<T>;
  offset_tensors<T> placed(device, offset);
  meap::attention_options<meap::cuda> options;
  meap::tensor<std::int32_t, meap::cuda> device_segments;
  if (!segments.empty()) {
    device_segments = meap::to_device(device, meap::cpu_view<const std::int32_t>(segments.data(), dims{s.B, s.T}));
    options.segment_ids = device_segments.view();
  }
  const auto dq_in = placed.copy_of(q), dk_in = placed.copy_of(k), dv_in = placed.copy_of(v);
  const auto ddo = placed.copy_of(d_out);
  const auto out = placed.place(q.shape()), d_q = placed.place(q.shape());
  const auto d_k = placed.place(k.shape()), d_v = placed.place(v.shape());
  meap::tensor<A, meap::cuda> lse(device, dims{s.B, s.Hq, s.T});
  BOOST_TEST_REQUIRE((meap::attention_kernel_path<T>(dq_in, dk_in, dv_in, out) == expected_path));
  options.path = expected_path;
  for (const auto& view : {out, d_q, d_k, d_v}) poison(device, view);
  meap::attention_forward<T>(device, dq_in, dk_in, dv_in, out, lse.view(), options);
  meap::attention_backward<T>(device, dq_in, dk_in, dv_in, out, lse.view(), ddo, d_q, d_k, d_v, options);
  const auto floats = [&](const auto& view) {
    const auto host = meap::to_host(device, view);
    return std::vector<float>(host.data(), host.data() + host.numel());
  };
  return {floats(out), floats(lse.view()), floats(d_q), floats(d_k), floats(d_v)};
}

// Rows (b, t, h) of a (B, T, H, D) array, or (b, h, t) entries of the (B, H, T) lse, where
// `hidden(b, t)` is false must be bit-identical between the two runs.
template <class Hidden>
index_t count_changed_rows(const std::vector<float>& a, const std::vector<float>& b, const shape& s, index_t heads,
                           index_t row_length, bool lse_layout, Hidden&& hidden) {
  index_t changed = 0;
  for (index_t bb = 0; bb < s.B; ++bb)
    for (index_t t = 0; t < s.T; ++t) {
      if (hidden(bb, t)) continue;
      for (index_t h = 0; h < heads; ++h) {
        const index_t start = lse_layout ? (bb * heads + h) * s.T + t : ((bb * s.T + t) * heads + h) * row_length;
        const index_t n = lse_layout ? 1 : row_length;
        changed += std::memcmp(a.data() + start, b.data() + start, static_cast<std::size_t>(n) * sizeof(float)) != 0;
      }
    }
  return changed;
}

template <class T>
void check_no_leak(const meap::cuda& device, std::mt19937& rng, const shape& s, index_t offset,
                   meap::attention_path expected_path) {
  const dims q_shape{s.B, s.T, s.Hq, s.D}, kv_shape{s.B, s.T, s.Hkv, s.D};
  const auto q = make_tensor<T>(q_shape, random_values<T>(rng, q_shape.product(), 1.5));
  const auto k = make_tensor<T>(kv_shape, random_values<T>(rng, kv_shape.product(), 1.5));
  const auto v = make_tensor<T>(kv_shape, random_values<T>(rng, kv_shape.product()));
  const auto d_out = make_tensor<T>(q_shape, random_values<T>(rng, q_shape.product()));
  const auto segments = make_segments(rng, s.B, s.T, s.segments);
  const auto base = run_on_device<T>(device, s, q, k, v, d_out, segments, offset, expected_path);

  // K and V changed at positions where `perturbed(b, t)`; everything else as before.
  const auto perturb = [&](auto&& perturbed) {
    auto k2 = meap::clone(cpu{}, k.view()), v2 = meap::clone(cpu{}, v.view());
    std::normal_distribution<float> noise(0.f, 3.f);
    for (index_t b = 0; b < s.B; ++b)
      for (index_t t = 0; t < s.T; ++t)
        if (perturbed(b, t))
          for (index_t i = 0; i < s.Hkv * s.D; ++i) {
            const index_t at = (b * s.T + t) * s.Hkv * s.D + i;
            k2.data()[at] = T(float(k2.data()[at]) + noise(rng));
            v2.data()[at] = T(float(v2.data()[at]) + noise(rng));
          }
    return run_on_device<T>(device, s, q, k2, v2, d_out, segments, offset, expected_path);
  };
  const std::string context = describe(s, meap::to_string(meap::dtype_of<T>)) + " offset=" + std::to_string(offset);

  // The future: keys after `cut` changed; queries up to `cut` must not notice.
  const index_t cut = s.T / 2;
  const auto future = perturb([&](index_t, index_t t) { return t > cut; });
  const auto after_cut = [&](index_t, index_t t) { return t > cut; };
  BOOST_TEST_CONTEXT(context << ", keys after t = " << cut << " perturbed") {
    BOOST_TEST(count_changed_rows(base.out, future.out, s, s.Hq, s.D, false, after_cut) == 0);
    BOOST_TEST(count_changed_rows(base.lse, future.lse, s, s.Hq, 1, true, after_cut) == 0);
    BOOST_TEST(count_changed_rows(base.dq, future.dq, s, s.Hq, s.D, false, after_cut) == 0);
    // The perturbation did reach the queries that may see it (the test can fail).
    const auto up_to_cut = [&](index_t, index_t t) { return t <= cut; };
    BOOST_TEST(count_changed_rows(base.out, future.out, s, s.Hq, s.D, false, up_to_cut) > 0);
  }
  if (segments.empty()) return;

  // Another document: keys of the document at the middle of row 0 changed; queries of every other
  // document see nothing, and the keys of every other document get the same dK and dV.
  const std::int32_t chosen = segments[static_cast<std::size_t>(s.T / 2)];
  const auto in_chosen = [&](index_t b, index_t t) {
    return b == 0 && segments[static_cast<std::size_t>(b * s.T + t)] == chosen;
  };
  const auto other = perturb(in_chosen);
  BOOST_TEST_CONTEXT(context << ", keys of document " << chosen << " perturbed") {
    BOOST_TEST(count_changed_rows(base.out, other.out, s, s.Hq, s.D, false, in_chosen) == 0);
    BOOST_TEST(count_changed_rows(base.lse, other.lse, s, s.Hq, 1, true, in_chosen) == 0);
    BOOST_TEST(count_changed_rows(base.dq, other.dq, s, s.Hq, s.D, false, in_chosen) == 0);
    BOOST_TEST(count_changed_rows(base.dk, other.dk, s, s.Hkv, s.D, false, in_chosen) == 0);
    BOOST_TEST(count_changed_rows(base.dv, other.dv, s, s.Hkv, s.D, false, in_chosen) == 0);
    const auto elsewhere = [&](index_t b, index_t t) { return !in_chosen(b, t); };
    BOOST_TEST(count_changed_rows(base.out, other.out, s, s.Hq, s.D, false, elsewhere) > 0);
  }
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
    check_against_cpu<meap::half>(stream.device, rng, s);
    check_against_cpu<meap::bfloat16>(stream.device, rng, s);
    check_against_cpu<float>(stream.device, rng, s);
  }
  check_against_cpu<meap::bfloat16>(stream.device, rng, {1, 50, 2, 1, 64, 0}, 0, 1);
  meap::tensor<float, meap::cuda> p(stream.device, dims{1, 2, 40, 40}), mass(stream.device, dims{1, 2, 40});
  const auto q = upload(stream.device, make_tensor<meap::half>(dims{1, 40, 2, 24}, random_values<meap::half>(rng, 1920)));
  const auto k = upload(stream.device, make_tensor<meap::half>(dims{1, 40, 1, 24}, random_values<meap::half>(rng, 960)));
  meap::attention_probabilities(stream.device, q.view(), k.view(), p.view());
  meap::attention_key_mass(stream.device, q.view(), k.view(), mass.view());
  meap::synchronize(stream.device);
}

// Views that are not 16-byte aligned take the float kernels, for every element type.
BOOST_AUTO_TEST_CASE(offset_views_match_cpu) {
  stream_fixture stream;
  std::mt19937 rng(14);
  for (const shape& s : {shape{1, 100, 2, 1, 64, 1}, shape{2, 70, 4, 2, 128, 0}}) {
    check_against_cpu<meap::half>(stream.device, rng, s, 0, 1);
    check_against_cpu<meap::bfloat16>(stream.device, rng, s, 0, 3);
    check_against_cpu<float>(stream.device, rng, s, 0, 1);
  }
}

// The probe: probabilities (masked entries exactly 0) and key mass, against the CPU.
BOOST_AUTO_TEST_CASE(probe_matches_cpu) {
  stream_fixture stream;
  const meap::cuda device = stream.device;
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
  const meap::cuda device = stream.device;
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
  const meap::cuda device = stream.device;
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

// Long sequences (T = 16k) and many short packed documents (1 to 8 tokens over T = 4096: nearly
// every tile of the prefetch pipeline is skipped), with per-row errors against the CPU.
BOOST_AUTO_TEST_CASE(long_sequences_and_many_short_documents) {
  stream_fixture stream;
  std::mt19937 rng(17);
  check_against_cpu<meap::bfloat16>(stream.device, rng, {1, 16384, 2, 1, 64, 0});
  check_against_cpu<meap::bfloat16>(stream.device, rng, {1, 16384, 2, 2, 128, 1});
  check_against_cpu<meap::half>(stream.device, rng, {1, 4096, 4, 2, 64, 3});
  check_against_cpu<meap::bfloat16>(stream.device, rng, {2, 4096, 2, 1, 128, 3});
  check_against_cpu<float>(stream.device, rng, {1, 4096, 2, 1, 64, 3});
}

// No leak through the causal mask or across documents, on the tensor-core path (16-bit, aligned)
// and on the FMA path (float32, and 16-bit views one element in).
BOOST_AUTO_TEST_CASE(masked_keys_leak_nothing) {
  stream_fixture stream;
  std::mt19937 rng(18);
  const auto tc = meap::attention_path::tensor_cores, fma = meap::attention_path::fma;
  for (const shape& s : {shape{1, 300, 4, 2, 64, 1}, shape{2, 257, 2, 1, 128, 2}, shape{1, 600, 2, 2, 64, 3},
                         shape{1, 200, 2, 1, 256, 1}}) {
    check_no_leak<meap::bfloat16>(stream.device, rng, s, 0, tc);
    check_no_leak<meap::half>(stream.device, rng, s, 0, tc);
    check_no_leak<float>(stream.device, rng, s, 0, fma);
    check_no_leak<meap::bfloat16>(stream.device, rng, s, 1, fma);
  }
  check_no_leak<meap::half>(stream.device, rng, {1, 150, 2, 1, 40, 1}, 0, tc);  // a padded head-dim bucket
  check_no_leak<float>(stream.device, rng, {1, 150, 2, 1, 37, 2}, 0, fma);       // an odd head dim
}

// The same problem on two streams at once gives the bits of a run alone (no shared scratch,
// no dependence on scheduling).
BOOST_AUTO_TEST_CASE(two_concurrent_streams_give_the_same_bits) {
  std::mt19937 rng(19);
  const shape s{2, 700, 4, 2, 128, 1};
  const dims q_shape{s.B, s.T, s.Hq, s.D}, kv_shape{s.B, s.T, s.Hkv, s.D};
  const auto q = make_tensor<meap::bfloat16>(q_shape, random_values<meap::bfloat16>(rng, q_shape.product(), 1.5));
  const auto k = make_tensor<meap::bfloat16>(kv_shape, random_values<meap::bfloat16>(rng, kv_shape.product(), 1.5));
  const auto v = make_tensor<meap::bfloat16>(kv_shape, random_values<meap::bfloat16>(rng, kv_shape.product()));
  const auto d_out = make_tensor<meap::bfloat16>(q_shape, random_values<meap::bfloat16>(rng, q_shape.product()));
  const auto segments = make_segments(rng, s.B, s.T, s.segments);
  const auto tc = meap::attention_path::tensor_cores;
  stream_fixture alone;
  const auto want = run_on_device(alone.device, s, q, k, v, d_out, segments, 0, tc);

  // Both streams get their work queued before either is waited for.
  stream_fixture first, second;
  struct buffers {
    meap::tensor<meap::bfloat16, meap::cuda> q, k, v, d_out, out, dq, dk, dv;
    meap::tensor<float, meap::cuda> lse;
    meap::tensor<std::int32_t, meap::cuda> segments;
  };
  const auto enqueue = [&](const meap::cuda& device) {
    using bf16_tensor = meap::tensor<meap::bfloat16, meap::cuda>;
    buffers b{meap::to_device(device, q.view()),
              meap::to_device(device, k.view()),
              meap::to_device(device, v.view()),
              meap::to_device(device, d_out.view()),
              bf16_tensor(device, q_shape),
              bf16_tensor(device, q_shape),
              bf16_tensor(device, kv_shape),
              bf16_tensor(device, kv_shape),
              meap::tensor<float, meap::cuda>(device, dims{s.B, s.Hq, s.T}),
              meap::to_device(device, meap::cpu_view<const std::int32_t>(segments.data(), dims{s.B, s.T}))};
    meap::attention_options<meap::cuda> options;
    options.segment_ids = b.segments.view();
    for (int repeat = 0; repeat < 3; ++repeat) {  // long enough for the two streams to overlap
      meap::attention_forward<meap::bfloat16>(device, b.q.view(), b.k.view(), b.v.view(), b.out.view(), b.lse.view(),
                                              options);
      meap::attention_backward<meap::bfloat16>(device, b.q.view(), b.k.view(), b.v.view(), b.out.view(), b.lse.view(),
                                               b.d_out.view(), b.dq.view(), b.dk.view(), b.dv.view(), options);
    }
    return b;
  };
  const auto a = enqueue(first.device);
  const auto b = enqueue(second.device);
  for (const auto* run : {&a, &b}) {
    const auto& device = run == &a ? first.device : second.device;
    BOOST_TEST(bitwise_equal(values_of(device, run->out.view()), want.out));
    BOOST_TEST(bitwise_equal(values_of(device, run->lse.view()), want.lse));
    BOOST_TEST(bitwise_equal(values_of(device, run->dq.view()), want.dq));
    BOOST_TEST(bitwise_equal(values_of(device, run->dk.view()), want.dk));
    BOOST_TEST(bitwise_equal(values_of(device, run->dv.view()), want.dv));
  }
}

// Prints a digest of a fixed problem's forward and backward outputs on both paths. The CTest
// test attention_determinism_across_processes runs this case in two processes and compares.
BOOST_AUTO_TEST_CASE(print_digest) {
  stream_fixture stream;
  std::mt19937 rng(20);
  const shape s{2, 513, 4, 2, 64, 1};
  const dims q_shape{s.B, s.T, s.Hq, s.D}, kv_shape{s.B, s.T, s.Hkv, s.D};
  std::uint64_t h = digest_start;
  const auto run = [&](auto tag, index_t offset, meap::attention_path path) {
    using T = decltype(tag);
    const auto q = make_tensor<T>(q_shape, random_values<T>(rng, q_shape.product(), 1.5));
    const auto k = make_tensor<T>(kv_shape, random_values<T>(rng, kv_shape.product(), 1.5));
    const auto v = make_tensor<T>(kv_shape, random_values<T>(rng, kv_shape.product()));
    const auto d_out = make_tensor<T>(q_shape, random_values<T>(rng, q_shape.product()));
    const auto segments = make_segments(rng, s.B, s.T, s.segments);
    const auto result = run_on_device<T>(stream.device, s, q, k, v, d_out, segments, offset, path);
    for (const auto* part : {&result.out, &result.lse, &result.dq, &result.dk, &result.dv}) h = digest_of(h, *part);
  };
  run(meap::bfloat16{}, 0, meap::attention_path::tensor_cores);
  run(meap::half{}, 0, meap::attention_path::tensor_cores);
  run(float{}, 0, meap::attention_path::fma);
  run(meap::bfloat16{}, 1, meap::attention_path::fma);
  std::printf("meap-digest: %016llx\n", static_cast<unsigned long long>(h));
}

// Small problems for compute-sanitizer (tests/sanitizer_cases.txt): big enough that every
// pipeline stage runs (the D = 64 dK/dV kernel steps over query blocks of 64 in two stages, so T
// about 300 runs both buffers several times), small enough for racecheck: each kernel, path and
// head-dim bucket once, with documents and GQA.
BOOST_AUTO_TEST_CASE(sanitizer_shapes) {
  stream_fixture stream;
  std::mt19937 rng(21);
  check_against_cpu<meap::bfloat16>(stream.device, rng, {1, 300, 2, 1, 64, 1});
  check_against_cpu<meap::half>(stream.device, rng, {1, 260, 2, 2, 128, 2});
  check_against_cpu<meap::bfloat16>(stream.device, rng, {1, 140, 2, 1, 256, 3});
  check_against_cpu<meap::bfloat16>(stream.device, rng, {1, 100, 2, 1, 40, 0});
  check_against_cpu<float>(stream.device, rng, {1, 130, 2, 1, 64, 1});
  check_against_cpu<meap::bfloat16>(stream.device, rng, {1, 70, 2, 1, 64, 0}, 0, 1);
  check_against_cpu<float>(stream.device, rng, {1, 50, 2, 1, 37, 2});
  meap::tensor<float, meap::cuda> p(stream.device, dims{1, 2, 70, 70}), mass(stream.device, dims{1, 2, 70});
  const auto q = upload(stream.device, make_tensor<meap::half>(dims{1, 70, 2, 64}, random_values<meap::half>(rng, 8960)));
  const auto k =
      upload(stream.device, make_tensor<meap::half>(dims{1, 70, 1, 64}, random_values<meap::half>(rng, 4480)));
  meap::attention_probabilities(stream.device, q.view(), k.view(), p.view());
  meap::attention_key_mass(stream.device, q.view(), k.view(), mass.view());
  meap::synchronize(stream.device);
}

BOOST_AUTO_TEST_SUITE_END()
