// The argument checks of the meap::cuda attention entry points, which run on the host before any
// CUDA call: so this test needs no GPU (label `cpu`) and its device views point at memory that is
// never touched. Every error the CPU overloads also raise must read the same (function, argument
// and message); the CUDA-only ones (float64, device mismatch, sequence length) name the argument.
#define BOOST_TEST_MODULE meap attention meap::cuda arguments
#include <boost/test/included/unit_test.hpp>

#include <meap/cuda.hpp>

#include <cstdint>
#include <functional>
#include <limits>
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

// An empty batch passes the checks and returns before any CUDA call.
BOOST_AUTO_TEST_CASE(empty_batch_returns_before_touching_the_device) {
  BOOST_CHECK_NO_THROW(meap::attention_forward<float>(meap::cuda{}, device_view<const float>(dims{0, 5, 2, 8}),
                                                      device_view<const float>(dims{0, 5, 1, 8}),
                                                      device_view<const float>(dims{0, 5, 1, 8}),
                                                      device_view<float>(dims{0, 5, 2, 8}), device_view<float>(dims{0, 2, 5})));
}

BOOST_AUTO_TEST_SUITE_END()
