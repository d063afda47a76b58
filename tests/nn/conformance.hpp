// tests/nn/conformance.hpp: one conformance body per module, instantiated for every device and
// precision (as tiny-cuda-nn's test_differentiable_object and PyTorch's device-type tests do).
//
// For a module M and an instantiation (P, Device):
//   * (fp64, cpu) is the reference: its analytic gradients (of L = sum(w * y) for a fixed random
//     w, so dL/dy = w) are checked against central finite differences, for parameters and inputs.
//   * every other instantiation gets the same parameters and inputs (random values that are exact
//     in its compute type) and must match the reference's output, input gradient and every
//     parameter gradient within a tolerance relative to the largest reference value
//     (tolerance<P>(stages): the unit roundoff of its compute type times the module's rounding stages).
// Included by conformance_test.cpp (cpu: fp64, fp32) and conformance_cuda_test.cu (cuda: fp32,
// bf16_mixed).
#pragma once

#include <meap/core/philox.hpp>
#include <meap/nn/nn.hpp>

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "support/gradient_check.hpp"

namespace conformance {

using meap::dims;
using meap::index_t;

// ---------------------------------------------------------------------------------------------
// Host <-> device helpers that work for both devices.

template <class T, class Device>
meap::tensor<T, Device> upload(const Device& device, const std::vector<double>& values, const dims& shape) {
  meap::tensor<T, meap::cpu> host(meap::cpu{}, shape);
  for (index_t i = 0; i < host.numel(); ++i) host.data()[i] = T(static_cast<float>(values[static_cast<std::size_t>(i)]));
  if constexpr (std::is_same_v<T, double>)
    for (index_t i = 0; i < host.numel(); ++i) host.data()[i] = values[static_cast<std::size_t>(i)];
  auto result = meap::to_device(device, host.view().as_const());
  meap::synchronize(device);
  return result;
}

template <class Device>
meap::tensor<std::int32_t, Device> upload_ids(const Device& device, const std::vector<std::int32_t>& ids, const dims& shape) {
  auto result = meap::to_device(device, meap::tensor_view<const std::int32_t, meap::cpu>(ids.data(), shape));
  meap::synchronize(device);
  return result;
}

template <class T, class Device>
std::vector<double> download(const Device& device, const meap::tensor_view<T, Device>& view) {
  const auto host = meap::to_host(device, view);
  std::vector<double> out(static_cast<std::size_t>(host.numel()));
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<double>(static_cast<float>(host.data()[i]));
  if constexpr (std::is_same_v<std::remove_const_t<T>, double>)
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = host.data()[i];
  return out;
}

// Values in [-scale, scale] that are exact in T (rounded through T), from (seed, stream).
template <class T>
std::vector<double> random_values(index_t n, double scale, std::uint64_t seed, std::uint64_t stream) {
  meap::philox_stream rng(seed, stream);
  std::vector<double> values(static_cast<std::size_t>(n));
  for (auto& v : values) {
    const double x = scale * (2.0 * rng.next_double() - 1.0);
    v = std::is_same_v<T, double> ? x : static_cast<double>(static_cast<float>(T(static_cast<float>(x))));
  }
  return values;
}

// max |got - ref| / max(1e-3, max |ref|); infinite when got has a non-finite value.
inline double relative_error(const std::vector<double>& got, const std::vector<double>& ref) {
  BOOST_TEST_REQUIRE(got.size() == ref.size());
  double worst = 0, scale = 1e-3;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    worst = std::max(worst, std::abs(got[i] - ref[i]));
    scale = std::max(scale, std::abs(ref[i]));
  }
  return worst / scale;
}

// The unit roundoff of the compute type, and the tolerance of a result that went through
// `stages` roundings to it (plus float accumulation, negligible next to 16-bit roundings and
// bounded by 2e-6 relative for the float instantiations at these sizes).
template <class P>
double tolerance(int stages) {
  using T = typename P::compute_t;
  if constexpr (std::is_same_v<T, double>) return 1e-12;
  else if constexpr (std::is_same_v<T, float>) return 2e-5;
  else if constexpr (std::is_same_v<T, meap::bfloat16>) return (stages + 2) * 0.00390625;  // u = 2^-8
  else return (stages + 2) * 0.00048828125;                                                 // half: u = 2^-11
}

// ---------------------------------------------------------------------------------------------
// The cases: one per module. Each owns a store (or a model that owns one), declares its module in
// it, and says how to run it. `stages` counts the roundings to the compute type on the longest
// path from an input to an output or gradient.

// A case of one module that owns its store and takes float activations: the module's
// constructor arguments after (store, name); the derived case adds name, stages and the shape.
template <class P, class Device, template <class, class> class Module>
struct single_module_case {
  using T = typename P::compute_t;
  using context = typename Module<P, Device>::context;
  static constexpr bool token_input = false;
  meap::nn::parameter_store<P, Device> parameters;
  Module<P, Device> layer;

  template <class... Args>
  explicit single_module_case(const std::string& name, Args... args) : layer(parameters, name, args...) {}
  auto& store() { return parameters; }
  void prepare(const Device&) {}
  meap::tensor<T, Device> forward(const Device& d, const meap::tensor_view<const T, Device>& x, context& ctx) {
    return layer.forward(d, x, ctx);
  }
  meap::tensor<T, Device> backward(const Device& d, const context& ctx, const meap::tensor_view<const T, Device>& dy) {
    return layer.backward(d, ctx, dy);
  }
};

template <class P, class Device>
struct linear_case : single_module_case<P, Device, meap::nn::linear> {
  static constexpr const char* name = "linear";
  static constexpr int stages = 2;
  linear_case() : single_module_case<P, Device, meap::nn::linear>("proj", index_t{12}, index_t{10}) {}
  dims input_shape() const { return {9, 12}; }
};

template <class P, class Device>
struct rmsnorm_case : single_module_case<P, Device, meap::nn::rmsnorm> {
  static constexpr const char* name = "rmsnorm";
  static constexpr int stages = 3;
  rmsnorm_case() : single_module_case<P, Device, meap::nn::rmsnorm>("norm", index_t{16}, 1e-5) {}
  dims input_shape() const { return {11, 16}; }
};

template <class P, class Device>
struct swiglu_case : single_module_case<P, Device, meap::nn::swiglu_mlp> {
  static constexpr const char* name = "swiglu_mlp";
  static constexpr int stages = 5;
  swiglu_case() : single_module_case<P, Device, meap::nn::swiglu_mlp>("mlp", index_t{8}, index_t{14}) {}
  dims input_shape() const { return {10, 8}; }
};

template <class P, class Device>
struct embedding_case {
  using T = typename P::compute_t;
  static constexpr const char* name = "embedding";
  static constexpr bool token_input = true;
  static constexpr int stages = 1;
  meap::nn::parameter_store<P, Device> parameters;
  meap::nn::embedding<P, Device> layer{parameters, "embed", 13, 6};
  using context = typename meap::nn::embedding<P, Device>::context;

  auto& store() { return parameters; }
  void prepare(const Device&) {}
  dims input_shape() const { return {15}; }
  std::vector<std::int32_t> tokens() const { return {3, 0, 12, 3, 7, 7, 7, 1, 12, 5, 3, 9, 0, 11, 2}; }
  meap::tensor<T, Device> forward(const Device& d, const meap::tensor_view<const std::int32_t, Device>& ids, context& ctx) {
    return layer.forward(d, ids, ctx);
  }
  meap::tensor<T, Device> backward(const Device& d, const context& ctx, const meap::tensor_view<const T, Device>& dy) {
    layer.backward(d, ctx, dy);
    return {};
  }
};

// Causal self-attention with GQA (4 query heads over 2 kv heads), RoPE at given positions and two
// packed documents in the second row.
template <class P, class Device>
struct attention_case {
  using T = typename P::compute_t;
  static constexpr const char* name = "causal_self_attention";
  static constexpr bool token_input = false;
  static constexpr int stages = 7;
  static constexpr index_t B = 2, L = 7, width = 16;
  meap::nn::parameter_store<P, Device> parameters;
  meap::nn::causal_self_attention<P, Device> layer{parameters, "attn", width, 4, 2, 10000.0};
  using context = typename meap::nn::causal_self_attention<P, Device>::context;
  meap::tensor<std::int32_t, Device> positions, segments;

  auto& store() { return parameters; }
  void prepare(const Device& d) {
    positions = upload_ids(d, {0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 0, 1, 2, 3}, {B, L});
    segments = upload_ids(d, {0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 9, 9, 9, 9}, {B, L});
  }
  dims input_shape() const { return {B * L, width}; }
  meap::tensor<T, Device> forward(const Device& d, const meap::tensor_view<const T, Device>& x, context& ctx) {
    const meap::nn::sequence_info<Device> sequence{B, L, positions.view(), segments.view()};
    return layer.forward(d, x, sequence, ctx);
  }
  meap::tensor<T, Device> backward(const Device& d, const context& ctx, const meap::tensor_view<const T, Device>& dy) {
    return layer.backward(d, ctx, dy);
  }
};

template <class P, class Device>
struct block_case {
  using T = typename P::compute_t;
  static constexpr const char* name = "llama_block";
  static constexpr bool token_input = false;
  static constexpr int stages = 12;
  static constexpr index_t B = 2, L = 6;
  meap::nn::parameter_store<P, Device> parameters;
  meap::nn::llama_block<P, Device> layer{parameters, "model.layers.0",
                                          meap::nn::llama_config{.vocab = 11, .d_model = 16, .layers = 1, .heads = 4,
                                                                 .kv_heads = 2, .ffn = 24, .max_seq = 8}};
  using context = typename meap::nn::llama_block<P, Device>::context;

  auto& store() { return parameters; }
  void prepare(const Device&) {}
  dims input_shape() const { return {B * L, 16}; }
  meap::tensor<T, Device> forward(const Device& d, const meap::tensor_view<const T, Device>& x, context& ctx) {
    return layer.forward(d, x, meap::nn::sequence_info<Device>{B, L}, ctx);
  }
  meap::tensor<T, Device> backward(const Device& d, const context& ctx, const meap::tensor_view<const T, Device>& dy) {
    return layer.backward(d, ctx, dy);
  }
};

// The whole model, tied head, GQA: tokens (B, T) -> hidden states.
template <class P, class Device>
struct model_case {
  using T = typename P::compute_t;
  static constexpr const char* name = "llama_model";
  static constexpr bool token_input = true;
  static constexpr int stages = 24;
  static constexpr index_t B = 2, L = 5;
  meap::nn::llama_model<P, Device> model;
  using context = typename meap::nn::llama_model<P, Device>::context;

  explicit model_case(const Device& d)
      : model(meap::nn::llama_config{.vocab = 13, .d_model = 8, .layers = 2, .heads = 2, .kv_heads = 1, .ffn = 12,
                                     .max_seq = 16, .tied_head = true},
              d) {}
  auto& store() { return model.store(); }
  void prepare(const Device&) {}
  dims input_shape() const { return {B, L}; }
  std::vector<std::int32_t> tokens() const { return {1, 5, 12, 0, 7, 3, 3, 9, 11, 2}; }
  meap::tensor<T, Device> forward(const Device& d, const meap::tensor_view<const std::int32_t, Device>& ids, context& ctx) {
    ctx = model.forward(d, ids);
    meap::tensor<T, Device> hidden(d, ctx.hidden.shape());
    meap::copy(d, ctx.hidden.view().as_const(), hidden.view());
    return hidden;
  }
  meap::tensor<T, Device> backward(const Device& d, const context& ctx, const meap::tensor_view<const T, Device>& dy) {
    model.backward(d, ctx, dy);
    return {};
  }
};

// A case on device `d`, allocated: cases owning a bare store allocate it here; the model case
// allocates itself (its constructor takes the device).
template <template <class, class> class Case, class P, class Device>
std::unique_ptr<Case<P, Device>> make_case(const Device& d) {
  std::unique_ptr<Case<P, Device>> c;
  if constexpr (std::is_constructible_v<Case<P, Device>, const Device&>) {
    c = std::make_unique<Case<P, Device>>(d);
  } else {
    c = std::make_unique<Case<P, Device>>();
    c->parameters.allocate(d);
  }
  c->prepare(d);
  return c;
}

// Writes the same parameter values into a store: entry k gets values in [-0.4, 0.4] (norm gains
// 1 +- 0.2), exact in the compute type.
template <class P, class Device>
void set_parameters(const Device& d, meap::nn::parameter_store<P, Device>& store, std::uint64_t seed) {
  using M = typename P::master_t;
  using T = typename P::compute_t;
  auto host = meap::zeros<M>(meap::cpu{}, dims{store.flat_size()});
  for (std::size_t k = 0; k < store.entries().size(); ++k) {
    const auto& e = store.entries()[k];
    const bool gain = e.shape.rank() == 1;
    const auto values = random_values<T>(e.numel, gain ? 0.2 : 0.4, seed, k);
    for (index_t i = 0; i < e.numel; ++i)
      host.data()[e.offset + i] = static_cast<M>(values[static_cast<std::size_t>(i)] + (gain ? 1.0 : 0.0));
    if constexpr (!std::is_same_v<T, M>)  // 1 + x must be exact in T too
      for (index_t i = 0; i < e.numel; ++i)
        host.data()[e.offset + i] = static_cast<M>(static_cast<float>(T(static_cast<float>(host.data()[e.offset + i]))));
  }
  meap::copy(d, host.view().as_const(), store.master_flat());
  store.refresh_compute(d);
  meap::synchronize(d);
}

// Everything one run of a case produces, on the host in double.
struct run_result {
  std::vector<double> output, input_gradient;
  std::vector<std::vector<double>> parameter_gradients;  // in store order
};

template <template <class, class> class Case, class P, class Device>
run_result run(const Device& d, Case<P, Device>& c, std::uint64_t seed) {
  using T = typename P::compute_t;
  set_parameters(d, c.store(), seed);
  c.store().zero_grad(d);
  typename Case<P, Device>::context ctx;
  run_result result;
  meap::tensor<T, Device> y, dx;
  const dims shape = c.input_shape();
  meap::tensor<std::int32_t, Device> ids;
  meap::tensor<T, Device> x;
  if constexpr (Case<P, Device>::token_input) {
    ids = upload_ids(d, c.tokens(), shape);
    y = c.forward(d, ids.view(), ctx);
  } else {
    x = upload<T>(d, random_values<T>(shape.product(), 1.0, seed, 1000), shape);
    y = c.forward(d, x.view(), ctx);
  }
  result.output = download(d, y.view());
  const auto w = upload<T>(d, random_values<T>(y.numel(), 1.0, seed, 2000), y.shape());
  dx = c.backward(d, ctx, w.view());
  if (dx.numel() > 0) result.input_gradient = download(d, dx.view());
  for (index_t k = 0; k < c.store().size(); ++k) result.parameter_gradients.push_back(download(d, c.store().grad(k)));
  return result;
}

// The reference's gradients against central finite differences of L = sum(w * y).
template <template <class, class> class Case>
void check_finite_differences(std::uint64_t seed) {
  const meap::cpu host;
  auto c = make_case<Case, meap::fp64, meap::cpu>(host);
  const run_result analytic = run(host, *c, seed);
  const dims shape = c->input_shape();
  const auto w = random_values<double>(static_cast<index_t>(analytic.output.size()), 1.0, seed, 2000);
  std::vector<double> x = random_values<double>(shape.product(), 1.0, seed, 1000);
  const auto loss = [&] {
    typename Case<meap::fp64, meap::cpu>::context ctx;
    meap::tensor<double, meap::cpu> y;
    meap::tensor<std::int32_t, meap::cpu> ids;
    meap::tensor<double, meap::cpu> input;
    if constexpr (Case<meap::fp64, meap::cpu>::token_input) {
      ids = upload_ids(host, c->tokens(), shape);
      y = c->forward(host, ids.view(), ctx);
    } else {
      input = upload<double>(host, x, shape);
      y = c->forward(host, input.view(), ctx);
    }
    double sum = 0;
    for (index_t i = 0; i < y.numel(); ++i) sum += w[static_cast<std::size_t>(i)] * y.data()[i];
    return sum;
  };
  const auto check = [&](double& coordinate, double expected, const std::string& what) {
    const double numeric = meap_test::central_difference(coordinate, loss);
    const char* name = Case<meap::fp64, meap::cpu>::name;
    BOOST_TEST_REQUIRE(std::fabs(numeric - expected) <= 1e-6 * (1 + std::fabs(numeric)),
                       name << " " << what << ": analytic " << expected << " vs numeric " << numeric);
  };
  // Up to 16 coordinates per tensor, spread evenly, the first and the last included.
  const auto sample = [](index_t n) {
    std::vector<index_t> picks;
    const index_t stride = n > 16 ? (n + 14) / 15 : 1;
    for (index_t i = 0; i < n; i += stride) picks.push_back(i);
    if (picks.back() != n - 1) picks.push_back(n - 1);
    return picks;
  };
  auto& store = c->store();
  for (index_t k = 0; k < store.size(); ++k) {
    const auto master = store.master(k);
    for (const index_t i : sample(master.numel()))
      check(master.data()[i], analytic.parameter_gradients[static_cast<std::size_t>(k)][static_cast<std::size_t>(i)],
            store.entry(k).name + "[" + std::to_string(i) + "]");
  }
  if constexpr (!Case<meap::fp64, meap::cpu>::token_input)
    for (const index_t i : sample(shape.product()))
      check(x[static_cast<std::size_t>(i)], analytic.input_gradient[static_cast<std::size_t>(i)],
            "input[" + std::to_string(i) + "]");
}

// The case in (P, Device) against the (fp64, cpu) reference.
template <template <class, class> class Case, class P, class Device>
void check_against_reference(const Device& d, std::uint64_t seed) {
  const meap::cpu host;
  auto reference_case = make_case<Case, meap::fp64, meap::cpu>(host);
  const run_result reference = run(host, *reference_case, seed);
  auto c = make_case<Case, P, Device>(d);
  const run_result got = run(d, *c, seed);
  const double tol = tolerance<P>(Case<P, Device>::stages);
  const std::string where = std::string(Case<P, Device>::name) + " in " + std::string(meap::precision_name<P>()) +
                            " on " + std::string(meap::to_string(Device::kind));
  BOOST_TEST(relative_error(got.output, reference.output) <= tol,
             where << ": output error " << relative_error(got.output, reference.output) << " > " << tol);
  if (!reference.input_gradient.empty())
    BOOST_TEST(relative_error(got.input_gradient, reference.input_gradient) <= tol,
               where << ": input gradient error " << relative_error(got.input_gradient, reference.input_gradient));
  BOOST_TEST_REQUIRE(got.parameter_gradients.size() == reference.parameter_gradients.size());
  for (std::size_t k = 0; k < got.parameter_gradients.size(); ++k)
    BOOST_TEST(relative_error(got.parameter_gradients[k], reference.parameter_gradients[k]) <= tol,
               where << ": gradient of " << c->store().entry(static_cast<index_t>(k)).name << " error "
                     << relative_error(got.parameter_gradients[k], reference.parameter_gradients[k]));
}

// What a test file instantiates per (P, Device): every module's conformance.
template <class P, class Device>
void check_every_module(const Device& d) {
  if constexpr (std::is_same_v<P, meap::fp64> && std::is_same_v<Device, meap::cpu>) {
    check_finite_differences<linear_case>(11);
    check_finite_differences<rmsnorm_case>(12);
    check_finite_differences<swiglu_case>(13);
    check_finite_differences<embedding_case>(14);
    check_finite_differences<attention_case>(15);
    check_finite_differences<block_case>(16);
    check_finite_differences<model_case>(17);
  } else {
    check_against_reference<linear_case, P>(d, 11);
    check_against_reference<rmsnorm_case, P>(d, 12);
    check_against_reference<swiglu_case, P>(d, 13);
    check_against_reference<embedding_case, P>(d, 14);
    check_against_reference<attention_case, P>(d, 15);
    check_against_reference<block_case, P>(d, 16);
    check_against_reference<model_case, P>(d, 17);
  }
}

}  // namespace conformance
