// Every front door checks its arguments once, for every device, before any CUDA call: so the
// same bad arguments give the same error (function, argument, message) on meap::cpu and
// meap::cuda, and this test needs no GPU (label `cpu`): its device views point at memory that is
// never touched. Covered: attention (forward, backward, probe), linear, RMSNorm, RoPE, SwiGLU,
// embedding, the element-wise operations, both cross-entropies, clipping (lists and flat), and
// masking. The CUDA-only errors (float64 attention, device mismatch, sequence length) name the
// argument.
#define BOOST_TEST_MODULE meap front door arguments
#include <boost/test/unit_test.hpp>

#include <meap/cuda.hpp>

#include "support/errors.hpp"

#include <cstdint>
#include <functional>
#include <limits>
#include <algorithm>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace {

using meap::cpu;
using meap::dims;
using meap::index_t;

// Never dereferenced: every call below fails its checks first.
alignas(16) unsigned char fake_device_memory[64];

template <class T>
meap::tensor_view<T, meap::cuda> device_view(const dims& shape, int ordinal = 0) {
  return meap::tensor_view<T, meap::cuda>(reinterpret_cast<T*>(fake_device_memory), shape,
                                    meap::device_location{meap::device_kind::cuda, ordinal});
}

std::string message_of(const std::function<void()>& f, std::string* argument = nullptr) {
  try {
    f();
  } catch (const meap::error& e) {
    if (argument != nullptr) *argument = e.argument();
    return e.what();
  }
  return "(no error)";
}

// Shapes of one forward / backward call; each case breaks one of them.
struct call_shapes {
  dims q{2, 5, 4, 8}, k{2, 5, 2, 8}, v{2, 5, 2, 8}, out{2, 5, 4, 8}, lse{2, 4, 5};
  dims d_out{2, 5, 4, 8}, d_q{2, 5, 4, 8}, d_k{2, 5, 2, 8}, d_v{2, 5, 2, 8};
  dims segments{};
  std::optional<double> scale;
};

// The CPU and CUDA forward and backward with these shapes must fail with the same message.
template <class T>
void expect_same_errors(const call_shapes& s) {
  using A = meap::accumulate_t<T>;
  static_assert(std::is_same_v<A, float>);
  std::vector<std::vector<T>> host;
  const auto host_view = [&](const dims& shape) {
    host.emplace_back(static_cast<std::size_t>(shape.rank() == 0 ? 0 : shape.product()));
    return meap::tensor_view<T, cpu>(host.back().data(), shape);
  };
  std::vector<float> lse_host(static_cast<std::size_t>(s.lse.product()));
  std::vector<std::int32_t> segment_host(static_cast<std::size_t>(s.segments.rank() == 0 ? 0 : s.segments.product()));
  meap::attention_options<cpu> host_options;
  meap::attention_options<meap::cuda> device_options;
  host_options.scale = device_options.scale = s.scale;
  if (s.segments.rank() != 0) {
    host_options.segment_ids = meap::tensor_view<const std::int32_t, cpu>(segment_host.data(), s.segments);
    device_options.segment_ids = device_view<const std::int32_t>(s.segments);
  }
  const auto q = host_view(s.q), k = host_view(s.k), v = host_view(s.v), out = host_view(s.out);
  const auto d_out = host_view(s.d_out), d_q = host_view(s.d_q), d_k = host_view(s.d_k), d_v = host_view(s.d_v);
  const meap::tensor_view<A, cpu> lse(reinterpret_cast<A*>(lse_host.data()), s.lse);

  std::string cpu_argument, cuda_argument;
  const std::string cpu_forward = message_of(
      [&] { meap::attention_forward<T>(cpu{}, q, k, v, out, lse, host_options); }, &cpu_argument);
  const std::string cuda_forward = message_of(
      [&] {
        meap::attention_forward<T>(meap::cuda{}, device_view<const T>(s.q), device_view<const T>(s.k),
                                   device_view<const T>(s.v), device_view<T>(s.out), device_view<A>(s.lse),
                                   device_options);
      },
      &cuda_argument);
  BOOST_TEST(cpu_forward != "(no error)");
  BOOST_TEST(cuda_forward == cpu_forward);
  BOOST_TEST(cuda_argument == cpu_argument);

  const std::string cpu_backward = message_of(
      [&] { meap::attention_backward<T>(cpu{}, q, k, v, out, lse, d_out, d_q, d_k, d_v, host_options); });
  const std::string cuda_backward = message_of([&] {
    meap::attention_backward<T>(meap::cuda{}, device_view<const T>(s.q), device_view<const T>(s.k), device_view<const T>(s.v),
                                device_view<const T>(s.out), device_view<const A>(s.lse), device_view<const T>(s.d_out),
                                device_view<T>(s.d_q), device_view<T>(s.d_k), device_view<T>(s.d_v), device_options);
  });
  BOOST_TEST(cpu_backward != "(no error)");
  BOOST_TEST(cuda_backward == cpu_backward);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(attention_cuda_arguments)

BOOST_AUTO_TEST_CASE(same_errors_as_the_cpu) {
  std::vector<call_shapes> cases;
  const call_shapes good;
  const auto with = [&](auto change) {
    call_shapes s = good;
    change(s);
    cases.push_back(s);
  };
  with([](call_shapes& s) { s.q = dims{2, 5, 32}; });                               // rank
  with([](call_shapes& s) { s.q = s.out = s.d_out = s.d_q = dims{2, 5, 4, 0}; });   // D = 0
  with([](call_shapes& s) {                                                         // D > 256
    s.q = s.out = s.d_out = s.d_q = dims{2, 5, 4, 257};
    s.k = s.v = s.d_k = s.d_v = dims{2, 5, 2, 257};
  });
  with([](call_shapes& s) { s.k = dims{2, 4, 2, 8}; });                             // k's T
  with([](call_shapes& s) { s.k = s.v = s.d_k = s.d_v = dims{2, 5, 3, 8}; });       // Hkv does not divide Hq
  with([](call_shapes& s) { s.v = dims{2, 5, 2, 9}; });                             // v against k
  with([](call_shapes& s) { s.out = dims{2, 5, 4, 7}; });                           // out
  with([](call_shapes& s) { s.lse = dims{2, 5, 4}; });                              // lse
  with([](call_shapes& s) { s.segments = dims{2, 6}; });                            // segment ids
  with([](call_shapes& s) { s.scale = -1.0; });                                     // scale
  with([](call_shapes& s) { s.scale = std::numeric_limits<double>::infinity(); });  // scale
  // float only: the checks do not depend on the element type, and every element type this file
  // instantiates costs a full set of kernels in its build.
  for (const auto& s : cases) expect_same_errors<float>(s);
}

BOOST_AUTO_TEST_CASE(backward_output_errors_match_the_cpu) {
  // Only the backward's own arguments are wrong: the forward then passes on the CPU, so compare
  // the backward alone.
  for (const int which : {0, 1, 2, 3}) {
    call_shapes s;
    (which == 0 ? s.d_out : which == 1 ? s.d_q : which == 2 ? s.d_k : s.d_v) = dims{2, 5, 1, 8};
    std::vector<float> buffer(1024);
    const auto host = [&](const dims& shape) { return meap::tensor_view<float, cpu>(buffer.data(), shape); };
    const std::string want = message_of([&] {
      meap::attention_backward<float>(cpu{}, host(s.q), host(s.k), host(s.v), host(s.out), host(s.lse), host(s.d_out),
                                      host(s.d_q), host(s.d_k), host(s.d_v));
    });
    const std::string got = message_of([&] {
      meap::attention_backward<float>(meap::cuda{}, device_view<const float>(s.q), device_view<const float>(s.k),
                                      device_view<const float>(s.v), device_view<const float>(s.out),
                                      device_view<const float>(s.lse), device_view<const float>(s.d_out),
                                      device_view<float>(s.d_q), device_view<float>(s.d_k), device_view<float>(s.d_v));
    });
    BOOST_TEST(want != "(no error)");
    BOOST_TEST(got == want);
  }
}

BOOST_AUTO_TEST_CASE(probe_errors_match_the_cpu) {
  std::vector<float> buffer(4096);
  const auto host = [&](const dims& shape) { return meap::tensor_view<const float, cpu>(buffer.data(), shape); };
  const auto host_out = [&](const dims& shape) { return meap::tensor_view<float, cpu>(buffer.data(), shape); };
  const dims q{1, 6, 2, 8}, k{1, 6, 1, 8};
  for (const dims& bad : {dims{1, 2, 6, 5}, dims{1, 2, 6}}) {
    BOOST_TEST(message_of([&] { meap::attention_probabilities(meap::cuda{}, device_view<const float>(q), device_view<const float>(k),
                                                              device_view<float>(bad)); }) ==
               message_of([&] { meap::attention_probabilities(cpu{}, host(q), host(k), host_out(bad)); }));
  }
  for (const dims& bad : {dims{1, 2, 5}, dims{1, 6, 2}}) {
    BOOST_TEST(message_of([&] {
                 meap::attention_key_mass(meap::cuda{}, device_view<const float>(q), device_view<const float>(k), device_view<float>(bad));
               }) == message_of([&] { meap::attention_key_mass(cpu{}, host(q), host(k), host_out(bad)); }));
  }
  BOOST_TEST(message_of([&] {
               meap::attention_key_mass(meap::cuda{}, device_view<const float>(q), device_view<const float>(dims{1, 6, 4, 8}),
                                        device_view<float>(dims{1, 2, 6}));
             }) == message_of([&] { meap::attention_key_mass(cpu{}, host(q), host(dims{1, 6, 4, 8}), host_out(dims{1, 2, 6})); }));
}

BOOST_AUTO_TEST_CASE(cuda_only_errors) {
  const dims q{2, 5, 4, 8}, k{2, 5, 2, 8}, lse{2, 4, 5};
  std::string argument;
  // float64 has no CUDA kernels.
  const std::string f64 = message_of(
      [&] {
        meap::attention_forward<double>(meap::cuda{}, device_view<const double>(q), device_view<const double>(k),
                                        device_view<const double>(k), device_view<double>(q), device_view<double>(lse));
      },
      &argument);
  BOOST_TEST(argument == "q");
  BOOST_TEST(f64.find("float64") != std::string::npos);
  BOOST_TEST(f64.find("meap::cpu") != std::string::npos);
  BOOST_TEST(message_of([&] {
               (void)meap::attention_forward(meap::cuda{}, device_view<const double>(q), device_view<const double>(k),
                                             device_view<const double>(k));
             }) == f64);
  // Views on different devices.
  for (const auto& [name, call] : std::vector<std::pair<std::string, std::function<void()>>>{
           {"k",
            [&] {
              meap::attention_forward<float>(meap::cuda{}, device_view<const float>(q), device_view<const float>(k, 1),
                                             device_view<const float>(k), device_view<float>(q), device_view<float>(lse));
            }},
           {"out",
            [&] {
              meap::attention_forward<float>(meap::cuda{}, device_view<const float>(q), device_view<const float>(k),
                                             device_view<const float>(k), device_view<float>(q, 2), device_view<float>(lse));
            }},
           {"d_v",
            [&] {
              meap::attention_backward<float>(meap::cuda{}, device_view<const float>(q), device_view<const float>(k),
                                              device_view<const float>(k), device_view<const float>(q),
                                              device_view<const float>(lse), device_view<const float>(q),
                                              device_view<float>(q), device_view<float>(k), device_view<float>(k, 3));
            }}}) {
    const std::string what = message_of(call, &argument);
    BOOST_TEST(argument == name);
    BOOST_TEST(what.find("device mismatch") != std::string::npos, what);
  }
  // Sequences longer than the grid covers.
  const index_t too_long = meap::detail::cuda_attention::max_sequence_length + 1;
  const std::string length = message_of(
      [&] {
        meap::attention_forward<float>(meap::cuda{}, device_view<const float>(dims{1, too_long, 1, 64}),
                                       device_view<const float>(dims{1, too_long, 1, 64}),
                                       device_view<const float>(dims{1, too_long, 1, 64}),
                                       device_view<float>(dims{1, too_long, 1, 64}), device_view<float>(dims{1, 1, too_long}));
      },
      &argument);
  BOOST_TEST(argument == "q");
  BOOST_TEST(length.find("length T = " + std::to_string(too_long)) != std::string::npos, length);
}

// attention_forward_cached: the same messages on both devices, float64 refused on CUDA, and the
// start positions checked on the host before any CUDA call.
BOOST_AUTO_TEST_CASE(cached_attention_errors_match_the_cpu) {
  std::vector<float> buffer(2048);
  const auto host = [&](const dims& shape) { return meap::tensor_view<const float, cpu>(buffer.data(), shape); };
  const auto host_out = [&](const dims& shape) { return meap::tensor_view<float, cpu>(buffer.data(), shape); };
  const dims q{2, 3, 4, 8}, cache{2, 10, 2, 8};
  const std::vector<index_t> too_late{0, 8}, fine{0, 7};
  std::string cpu_argument, cuda_argument;
  const auto host_message = message_of(
      [&] {
        meap::attention_forward_cached<float>(cpu{}, host(q), host(cache), host(cache), too_late, host_out(q));
      },
      &cpu_argument);
  const auto cuda_message = message_of(
      [&] {
        meap::attention_forward_cached<float>(meap::cuda{}, device_view<const float>(q), device_view<const float>(cache),
                                              device_view<const float>(cache), too_late, device_view<float>(q));
      },
      &cuda_argument);
  BOOST_TEST(cpu_argument == "start");
  BOOST_TEST(cuda_argument == "start");
  BOOST_TEST(cuda_message == host_message);
  BOOST_TEST(message_of([&] {
               meap::attention_forward_cached<float>(meap::cuda{}, device_view<const float>(q),
                                                     device_view<const float>(dims{2, 10, 3, 8}),
                                                     device_view<const float>(dims{2, 10, 3, 8}), fine,
                                                     device_view<float>(q));
             }) == message_of([&] {
               meap::attention_forward_cached<float>(cpu{}, host(q), host(dims{2, 10, 3, 8}), host(dims{2, 10, 3, 8}),
                                                     fine, host_out(q));
             }));
  const std::string f64 = message_of(
      [&] {
        meap::attention_forward_cached<double>(meap::cuda{}, device_view<const double>(q),
                                               device_view<const double>(cache), device_view<const double>(cache), fine,
                                               device_view<double>(q));
      },
      &cuda_argument);
  BOOST_TEST(cuda_argument == "q");
  BOOST_TEST(f64.find("float64") != std::string::npos, f64);
  const std::string mismatch = message_of(
      [&] {
        meap::attention_forward_cached<float>(meap::cuda{}, device_view<const float>(q),
                                              device_view<const float>(cache, 1), device_view<const float>(cache), fine,
                                              device_view<float>(q));
      },
      &cuda_argument);
  BOOST_TEST(cuda_argument == "k_cache");
  BOOST_TEST(mismatch.find("device mismatch") != std::string::npos, mismatch);
}

// An empty batch passes the checks and returns before any CUDA call.
BOOST_AUTO_TEST_CASE(empty_batch_returns_before_touching_the_device) {
  BOOST_CHECK_NO_THROW(meap::attention_forward<float>(meap::cuda{}, device_view<const float>(dims{0, 5, 2, 8}),
                                                      device_view<const float>(dims{0, 5, 1, 8}),
                                                      device_view<const float>(dims{0, 5, 1, 8}),
                                                      device_view<float>(dims{0, 5, 2, 8}), device_view<float>(dims{0, 2, 5})));
}

// ---------------------------------------------------------------------------------------------
// The other doors: each case is one bad call, made on both devices.

namespace {

// Host and fake-device views of one shape (the host ones over a zeroed buffer large enough).
struct views {
  std::vector<std::vector<float>> host_buffers;
  template <class T = float>
  meap::tensor_view<T, cpu> h(const dims& shape) {
    host_buffers.emplace_back(static_cast<std::size_t>(shape.rank() == 0 ? 1 : std::max<index_t>(shape.product(), 1)) *
                                  sizeof(T) / sizeof(float) + 1,
                              0.0f);
    return meap::tensor_view<T, cpu>(reinterpret_cast<T*>(host_buffers.back().data()), shape);
  }
  template <class T = float>
  meap::tensor_view<T, meap::cuda> d(const dims& shape) {
    return device_view<T>(shape);
  }
};

void same(const std::string& cpu_error, const std::string& cuda_error, const std::string& what) {
  BOOST_TEST(cpu_error != "(no error)", what);
  BOOST_TEST(cuda_error == cpu_error, what << ": CUDA says '" << cuda_error << "', CPU '" << cpu_error << "'");
}
using meap_test::error_of;

}  // namespace

BOOST_AUTO_TEST_CASE(layer_errors_match_the_cpu) {
  views v;
  // linear: w's inner dimension, y's shape, dx's shape, a strided dw.
  same(error_of([&] { meap::linear_forward<float>(cpu{}, v.h({4, 6}), v.h({5, 7}), v.h({4, 5})); }),
       error_of([&] { meap::linear_forward<float>(meap::cuda{}, v.d({4, 6}), v.d({5, 7}), v.d({4, 5})); }), "linear w");
  same(error_of([&] { meap::linear_forward<float>(cpu{}, v.h({4, 6}), v.h({5, 6}), v.h({4, 6})); }),
       error_of([&] { meap::linear_forward<float>(meap::cuda{}, v.d({4, 6}), v.d({5, 6}), v.d({4, 6})); }), "linear y");
  same(error_of([&] {
         meap::linear_backward<float>(cpu{}, v.h({4, 6}), v.h({5, 6}), v.h({4, 5}), v.h({4, 5}), v.h({5, 6}));
       }),
       error_of([&] {
         meap::linear_backward<float>(meap::cuda{}, v.d({4, 6}), v.d({5, 6}), v.d({4, 5}), v.d({4, 5}), v.d({5, 6}));
       }),
       "linear dx");
  same(error_of([&] {
         meap::linear_backward<float>(cpu{}, v.h({4, 6}), v.h({5, 6}), v.h({4, 5}), {}, v.h({6, 5}).transpose(0, 1));
       }),
       error_of([&] {
         meap::linear_backward<float>(meap::cuda{}, v.d({4, 6}), v.d({5, 6}), v.d({4, 5}), {},
                                      v.d({6, 5}).transpose(0, 1));
       }),
       "linear dw strided");
  // rmsnorm: eps, inv_rms, dw.
  same(error_of([&] { meap::rmsnorm_forward<float>(cpu{}, v.h({4, 6}), v.h({6}), v.h({4, 6}), v.h({4}), 0.0); }),
       error_of([&] { meap::rmsnorm_forward<float>(meap::cuda{}, v.d({4, 6}), v.d({6}), v.d({4, 6}), v.d({4}), 0.0); }),
       "rmsnorm eps");
  same(error_of([&] { meap::rmsnorm_forward<float>(cpu{}, v.h({4, 6}), v.h({6}), v.h({4, 6}), v.h({3}), 1e-5); }),
       error_of([&] { meap::rmsnorm_forward<float>(meap::cuda{}, v.d({4, 6}), v.d({6}), v.d({4, 6}), v.d({3}), 1e-5); }),
       "rmsnorm inv_rms");
  same(error_of([&] {
         meap::rmsnorm_backward<float>(cpu{}, v.h({4, 6}), v.h({6}), v.h({4}), v.h({4, 6}), v.h({4, 6}), v.h({5}));
       }),
       error_of([&] {
         meap::rmsnorm_backward<float>(meap::cuda{}, v.d({4, 6}), v.d({6}), v.d({4}), v.d({4, 6}), v.d({4, 6}), v.d({5}));
       }),
       "rmsnorm dw");
  // rope: an odd head dim, theta, positions' shape.
  same(error_of([&] { meap::rope_forward<float>(cpu{}, v.h({1, 2, 1, 3}), v.h({1, 2, 1, 3})); }),
       error_of([&] { meap::rope_forward<float>(meap::cuda{}, v.d({1, 2, 1, 3}), v.d({1, 2, 1, 3})); }), "rope odd D");
  same(error_of([&] { meap::rope_backward<float>(cpu{}, v.h({1, 2, 1, 4}), v.h({1, 2, 1, 4}), {.theta = 1.0}); }),
       error_of([&] {
         meap::rope_backward<float>(meap::cuda{}, v.d({1, 2, 1, 4}), v.d({1, 2, 1, 4}), {.theta = 1.0});
       }),
       "rope theta");
  same(error_of([&] {
         meap::rope_forward<float>(cpu{}, v.h({1, 2, 1, 4}), v.h({1, 2, 1, 4}),
                                   {.positions = v.h<std::int32_t>({2, 1}).as_const()});
       }),
       error_of([&] {
         meap::rope_forward<float>(meap::cuda{}, v.d({1, 2, 1, 4}), v.d({1, 2, 1, 4}),
                                   {.positions = v.d<std::int32_t>({2, 1}).as_const()});
       }),
       "rope positions");
  // swiglu: up's and d_up's shapes.
  same(error_of([&] { meap::swiglu_forward<float>(cpu{}, v.h({4, 6}), v.h({4, 5}), v.h({4, 6})); }),
       error_of([&] { meap::swiglu_forward<float>(meap::cuda{}, v.d({4, 6}), v.d({4, 5}), v.d({4, 6})); }), "swiglu up");
  same(error_of([&] {
         meap::swiglu_backward<float>(cpu{}, v.h({4, 6}), v.h({4, 6}), v.h({4, 6}), v.h({4, 6}), v.h({6, 4}));
       }),
       error_of([&] {
         meap::swiglu_backward<float>(meap::cuda{}, v.d({4, 6}), v.d({4, 6}), v.d({4, 6}), v.d({4, 6}), v.d({6, 4}));
       }),
       "swiglu d_up");
  // embedding: the table's rank, the tokens' rank, y's shape.
  same(error_of([&] { meap::embedding_forward<float>(cpu{}, v.h<std::int32_t>({6}).as_const(), v.h({5}), v.h({6, 2})); }),
       error_of([&] {
         meap::embedding_forward<float>(meap::cuda{}, v.d<std::int32_t>({6}).as_const(), v.d({5}), v.d({6, 2}));
       }),
       "embedding table");
  same(error_of([&] {
         meap::embedding_forward<float>(cpu{}, v.h<std::int32_t>({2, 3}).as_const(), v.h({5, 2}), v.h({6, 2}));
       }),
       error_of([&] {
         meap::embedding_forward<float>(meap::cuda{}, v.d<std::int32_t>({2, 3}).as_const(), v.d({5, 2}), v.d({6, 2}));
       }),
       "embedding tokens");
  same(error_of([&] { meap::embedding_backward<float>(cpu{}, v.h<std::int32_t>({6}).as_const(), v.h({6, 3}), v.h({5, 2})); }),
       error_of([&] {
         meap::embedding_backward<float>(meap::cuda{}, v.d<std::int32_t>({6}).as_const(), v.d({6, 3}), v.d({5, 2}));
       }),
       "embedding dy");
  // element-wise
  same(error_of([&] { meap::add_into<float>(cpu{}, v.h({4, 6}), v.h({6, 4})); }),
       error_of([&] { meap::add_into<float>(meap::cuda{}, v.d({4, 6}), v.d({6, 4})); }), "add_into addend");
  same(error_of([&] { meap::convert(cpu{}, v.h({4, 6}).as_const(), v.h({4, 5})); }),
       error_of([&] { meap::convert(meap::cuda{}, v.d({4, 6}).as_const(), v.d({4, 5})); }), "convert dst");
}

BOOST_AUTO_TEST_CASE(loss_errors_match_the_cpu) {
  views v;
  const auto hl = v.h<std::int32_t>({4}).as_const();
  const auto dl = v.d<std::int32_t>({4}).as_const();
  same(error_of([&] { (void)meap::linear_cross_entropy(cpu{}, v.h({4, 6}).as_const(), v.h({5, 7}).as_const(), hl); }),
       error_of([&] { (void)meap::linear_cross_entropy(meap::cuda{}, v.d({4, 6}).as_const(), v.d({5, 7}).as_const(), dl); }),
       "linear_cross_entropy weight");
  same(error_of([&] {
         (void)meap::linear_cross_entropy(cpu{}, v.h({4, 6}).as_const(), v.h({5, 6}).as_const(), hl, {.label_smoothing = 1.0});
       }),
       error_of([&] {
         (void)meap::linear_cross_entropy(meap::cuda{}, v.d({4, 6}).as_const(), v.d({5, 6}).as_const(), dl,
                                          {.label_smoothing = 1.0});
       }),
       "linear_cross_entropy smoothing");
  same(error_of([&] {
         (void)meap::linear_cross_entropy<float>(cpu{}, v.h({4, 6}), v.h({5, 6}), hl, v.h({4, 6}), v.h({5, 6}),
                                                 {.normalizer = -1.0});
       }),
       error_of([&] {
         (void)meap::linear_cross_entropy<float>(meap::cuda{}, v.d({4, 6}), v.d({5, 6}), dl, v.d({4, 6}), v.d({5, 6}),
                                                 {.normalizer = -1.0});
       }),
       "linear_cross_entropy normalizer");
  same(error_of([&] {
         (void)meap::linear_cross_entropy<float>(cpu{}, v.h({4, 6}), v.h({5, 6}), hl, v.h({4, 6}), v.h({5, 5}));
       }),
       error_of([&] {
         (void)meap::linear_cross_entropy<float>(meap::cuda{}, v.d({4, 6}), v.d({5, 6}), dl, v.d({4, 6}), v.d({5, 5}));
       }),
       "linear_cross_entropy d_weight");
  meap::cross_entropy_options<cpu> host_options;
  meap::cross_entropy_options<meap::cuda> device_options;
  host_options.selected_rows = device_options.selected_rows = 9;
  same(error_of([&] { (void)meap::linear_cross_entropy(cpu{}, v.h({4, 6}).as_const(), v.h({5, 6}).as_const(), hl, host_options); }),
       error_of([&] {
         (void)meap::linear_cross_entropy(meap::cuda{}, v.d({4, 6}).as_const(), v.d({5, 6}).as_const(), dl, device_options);
       }),
       "linear_cross_entropy selected_rows");
  host_options.selected_rows = device_options.selected_rows = std::nullopt;
  host_options.loss_sum = v.h<double>({3});
  device_options.loss_sum = v.d<double>({3});
  same(error_of([&] { (void)meap::linear_cross_entropy(cpu{}, v.h({4, 6}).as_const(), v.h({5, 6}).as_const(), hl, host_options); }),
       error_of([&] {
         (void)meap::linear_cross_entropy(meap::cuda{}, v.d({4, 6}).as_const(), v.d({5, 6}).as_const(), dl, device_options);
       }),
       "linear_cross_entropy loss_sum");
  same(error_of([&] { (void)meap::cross_entropy(cpu{}, v.h({4, 6}), v.h<std::int32_t>({3}).as_const()); }),
       error_of([&] { (void)meap::cross_entropy(meap::cuda{}, v.d({4, 6}), v.d<std::int32_t>({3}).as_const()); }),
       "cross_entropy labels");
}

BOOST_AUTO_TEST_CASE(optimizer_and_masking_errors_match_the_cpu) {
  views v;
  // Lists of parameters: a duplicate name, a gradient of another shape.
  const auto list = [&](auto make, bool duplicate, bool reshaped) {
    using view = decltype(make(dims{1}));
    using device = typename view::device_type;
    std::vector<meap::named_parameter<float, device>> params;
    params.push_back({"a", make(dims{3, 4}), make(reshaped ? dims{4, 3} : dims{3, 4}), true});
    params.push_back({duplicate ? "a" : "b", make(dims{5}), make(dims{5}), false});
    return params;
  };
  const auto h = [&](const dims& shape) { return v.h(shape); };
  const auto d = [&](const dims& shape) { return v.d(shape); };
  same(error_of([&] { (void)meap::grad_norm(cpu{}, list(h, true, false)); }),
       error_of([&] { (void)meap::grad_norm(meap::cuda{}, list(d, true, false)); }), "grad_norm duplicate");
  same(error_of([&] { (void)meap::clip_grad_norm(cpu{}, list(h, false, true), 1.0); }),
       error_of([&] { (void)meap::clip_grad_norm(meap::cuda{}, list(d, false, true), 1.0); }), "clip_grad_norm grad shape");
  same(error_of([&] { (void)meap::clip_grad_norm(cpu{}, list(h, false, false), -1.0); }),
       error_of([&] { (void)meap::clip_grad_norm(meap::cuda{}, list(d, false, false), -1.0); }), "clip_grad_norm max_norm");
  // The flat form: grads' rank, the status's size.
  same(error_of([&] {
         meap::clip_factor(cpu{}, v.h({2, 8}), 1.0, meap::step_status<cpu>{v.h<double>({meap::status_value_count})});
       }),
       error_of([&] {
         meap::clip_factor(meap::cuda{}, v.d({2, 8}), 1.0,
                           meap::step_status<meap::cuda>{v.d<double>({meap::status_value_count})});
       }),
       "clip_factor grads");
  same(error_of([&] { meap::clip_factor(cpu{}, v.h({16}), 1.0, meap::step_status<cpu>{v.h<double>({2})}); }),
       error_of([&] { meap::clip_factor(meap::cuda{}, v.d({16}), 1.0, meap::step_status<meap::cuda>{v.d<double>({2})}); }),
       "clip_factor status");
  // Masking: the policy's ratio, the tokens' shape, the mask id.
  same(error_of([&] {
         (void)meap::masking::apply(cpu{}, meap::masking::fixed_ratio{1.5}, v.h<std::int32_t>({2, 9}).as_const(),
                                    {.mask_id = 3});
       }),
       error_of([&] {
         (void)meap::masking::apply(meap::cuda{}, meap::masking::fixed_ratio{1.5}, v.d<std::int32_t>({2, 9}).as_const(),
                                    {.mask_id = 3});
       }),
       "masking ratio");
  same(error_of([&] {
         (void)meap::masking::apply(cpu{}, meap::masking::fixed_ratio{}, v.h<std::int32_t>({2, 1}).as_const(), {.mask_id = 3});
       }),
       error_of([&] {
         (void)meap::masking::apply(meap::cuda{}, meap::masking::fixed_ratio{}, v.d<std::int32_t>({2, 1}).as_const(),
                                    {.mask_id = 3});
       }),
       "masking tokens");
  same(error_of([&] {
         (void)meap::masking::apply(cpu{}, meap::masking::fixed_ratio{}, v.h<std::int32_t>({2, 9}).as_const(), {.mask_id = -1});
       }),
       error_of([&] {
         (void)meap::masking::apply(meap::cuda{}, meap::masking::fixed_ratio{}, v.d<std::int32_t>({2, 9}).as_const(),
                                    {.mask_id = -1});
       }),
       "masking mask_id");
}

// Views of two GPUs in one call: CUDA-only, named after the first view that differs.
BOOST_AUTO_TEST_CASE(views_on_two_devices_are_rejected_before_any_cuda_call) {
  std::string argument;
  const std::string what = message_of(
      [&] {
        meap::linear_forward<float>(meap::cuda{}, device_view<const float>({4, 6}), device_view<const float>({5, 6}, 1),
                                    device_view<float>({4, 5}));
      },
      &argument);
  BOOST_TEST(argument == "w");
  BOOST_TEST(what.find("memory on cuda:1") != std::string::npos, what);
  BOOST_TEST(what.find("where 'x' lives (device mismatch)") != std::string::npos, what);
}

BOOST_AUTO_TEST_SUITE_END()
