// AdamW and gradient clipping on CUDA against their CPU twins: several AdamW steps over a parameter
// store with and without weight decay under a changing learning rate, the bfloat16 compute copy
// written by the update, the update decided on the device by a step status, a resume through
// load_state that continues bit for bit, the global norm (deterministic: the same bits on every
// run) over lists and over the flat buffer (clip_factor), clipping, the first non-finite gradient,
// and the CPU's error messages.
// Label `gpu`: skipped (exit 77) without a device.
#define BOOST_TEST_MODULE meap optim cuda
#define BOOST_TEST_NO_MAIN
#define BOOST_TEST_ALTERNATIVE_INIT_API
#include <boost/test/unit_test.hpp>

#include <boost/mpl/list.hpp>

#include <meap/cuda.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "support/cuda.hpp"
#include "support/errors.hpp"
#include "support/gpu_main.hpp"

namespace {

using meap::dims;
using meap::index_t;
using meap_test::bitwise_equal;
using meap_test::error_of;
using meap_test::error_says;
using meap_test::stream_fixture;
using meap_test::values_of;
using meap_test::worst_relative;
const meap::cpu host;

// A parameter held on both devices: host tensors for the CPU twin, device tensors for CUDA.
template <class T>
struct twin_parameter {
  std::string name;
  dims shape;
  bool decay = true;
  meap::tensor<T, meap::cpu> host_value, host_grad;
  meap::tensor<T, meap::cuda> device_value, device_grad;

  meap::named_parameter<T, meap::cpu> on_host() { return {name, host_value.view(), host_grad.view(), decay}; }
  meap::named_parameter<T, meap::cuda> on_device() { return {name, device_value.view(), device_grad.view(), decay}; }
};

template <class T>
std::vector<T> random_vector(std::mt19937& rng, index_t n, float scale) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<T> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = T(normal(rng));
  return v;
}

template <class T>
twin_parameter<T> make_parameter(const meap::cuda& device, std::mt19937& rng, std::string name, dims shape, bool decay) {
  twin_parameter<T> p{std::move(name), shape, decay, meap::tensor<T, meap::cpu>(host, shape),
                      meap::tensor<T, meap::cpu>(host, shape), {}, {}};
  const auto values = random_vector<T>(rng, shape.product(), 1.0f);
  std::copy(values.begin(), values.end(), p.host_value.data());
  std::fill(p.host_grad.data(), p.host_grad.data() + p.host_grad.numel(), T(0));
  p.device_value = meap::to_device(device, p.host_value.view().as_const());
  p.device_grad = meap::to_device(device, p.host_grad.view().as_const());
  return p;
}

// Fresh random gradients, the same on both devices.
template <class T>
void new_gradients(const meap::cuda& device, std::mt19937& rng, std::vector<twin_parameter<T>>& params, float scale) {
  for (auto& p : params) {
    const auto g = random_vector<T>(rng, p.shape.product(), scale);
    std::copy(g.begin(), g.end(), p.host_grad.data());
    meap::copy(device, p.host_grad.view().as_const(), p.device_grad.view());
  }
  meap::synchronize(device);
}

template <class T>
std::vector<meap::named_parameter<T, meap::cpu>> host_list(std::vector<twin_parameter<T>>& params) {
  std::vector<meap::named_parameter<T, meap::cpu>> list;
  for (auto& p : params) list.push_back(p.on_host());
  return list;
}
template <class T>
std::vector<meap::named_parameter<T, meap::cuda>> device_list(std::vector<twin_parameter<T>>& params) {
  std::vector<meap::named_parameter<T, meap::cuda>> list;
  for (auto& p : params) list.push_back(p.on_device());
  return list;
}

std::vector<twin_parameter<float>> model_parameters(const meap::cuda& device, std::mt19937& rng) {
  std::vector<twin_parameter<float>> params;
  params.push_back(make_parameter<float>(device, rng, "model.embed_tokens.weight", {37, 24}, true));
  params.push_back(make_parameter<float>(device, rng, "model.norm.weight", {24}, false));
  params.push_back(make_parameter<float>(device, rng, "model.layers.0.mlp.up_proj.weight", {200, 300}, true));
  params.push_back(make_parameter<float>(device, rng, "empty", {0}, true));
  return params;
}

// The same parameters in a store on each device: (name, shape, decay), random values.
template <class P>
struct twin_store {
  meap::nn::parameter_store<meap::fp32, meap::cpu> host_store;
  meap::nn::parameter_store<P, meap::cuda> device_store;

  twin_store(const meap::cuda& device, std::mt19937& rng) {
    const auto add = [&](const std::string& name, const dims& shape, bool decay) {
      host_store.declare(name, shape, decay);
      device_store.declare(name, shape, decay);
    };
    add("model.embed_tokens.weight", {37, 24}, true);
    add("model.norm.weight", {24}, false);
    add("model.layers.0.mlp.up_proj.weight", {200, 300}, true);
    add("empty", {0}, true);
    add("model.layers.0.mlp.down_proj.weight", {5, 7}, true);
    host_store.allocate(host);
    device_store.allocate(device);
    for (meap::index_t k = 0; k < host_store.size(); ++k) {  // the alignment gaps stay zero
      const auto values = random_vector<float>(rng, host_store.entry(k).numel, 1.0f);
      std::copy(values.begin(), values.end(), host_store.master(k).data());
    }
    meap::copy(device, host_store.master_flat().as_const(), device_store.master_flat());
    device_store.refresh_compute(device);
    meap::synchronize(device);
  }
  // Fresh random gradients, the same on both devices (zero in the alignment gaps).
  void new_gradients(const meap::cuda& device, std::mt19937& rng, float scale) {
    for (meap::index_t k = 0; k < host_store.size(); ++k) {
      const auto g = host_store.grad(k);
      const auto values = random_vector<float>(rng, g.numel(), scale);
      std::copy(values.begin(), values.end(), g.data());
    }
    meap::copy(device, host_store.grad_flat().as_const(), device_store.grad_flat());
    meap::synchronize(device);
  }
};

}  // namespace

BOOST_FIXTURE_TEST_SUITE(optim_cuda, stream_fixture)

// The element update is PyTorch's operation order on both sides; the CPU compiler may contract a
// multiply and an add into an FMA where the CUDA kernel rounds each, so elements agree to a few ulp.
BOOST_AUTO_TEST_CASE(adamw_matches_cpu_over_several_steps) {
  for (const auto& config : {meap::adamw_config{}, meap::adamw_config{.lr = 1e-2, .beta1 = 0.5, .beta2 = 0.99,
                                                                      .eps = 1e-6, .weight_decay = 0.0},
                             meap::adamw_config{.beta1 = 0.0, .weight_decay = 0.3}}) {
    std::mt19937 rng(1);
    twin_store<meap::fp32> stores(device, rng);
    meap::adamw<meap::fp32, meap::cpu> cpu_opt(config);
    meap::adamw<meap::fp32, meap::cuda> cuda_opt(config);
    const meap::warmup_cosine schedule({.peak_lr = config.lr, .min_lr = config.lr / 10, .warmup_steps = 2, .total_steps = 6});
    for (std::int64_t step = 0; step < 6; ++step) {
      stores.new_gradients(device, rng, step == 3 ? 100.0f : 0.1f);
      cpu_opt.step(host, stores.host_store, schedule(step));
      cuda_opt.step(device, stores.device_store, schedule(step));
      BOOST_TEST(worst_relative(values_of(device, stores.device_store.master_flat()),
                                values_of(device, stores.host_store.master_flat())) <= 4e-6,
                 "master weights after step " << step);
      BOOST_TEST(worst_relative(values_of(device, cuda_opt.exp_avg()), values_of(device, cpu_opt.exp_avg())) <= 4e-6);
      BOOST_TEST(worst_relative(values_of(device, cuda_opt.exp_avg_sq()), values_of(device, cpu_opt.exp_avg_sq())) <= 4e-6);
    }
    BOOST_TEST(cuda_opt.steps() == cpu_opt.steps());
  }
}

// A bfloat16 model: the update writes the compute copy (bf16 of the new master) in the same pass;
// and the same inputs give the same bits on every run.
BOOST_AUTO_TEST_CASE(adamw_is_deterministic_and_writes_the_compute_copy) {
  std::vector<std::vector<float>> runs;
  for (int run = 0; run < 2; ++run) {
    std::mt19937 rng(2);
    twin_store<meap::bf16_mixed> stores(device, rng);
    meap::fill(device, stores.device_store.compute_copy(), std::numeric_limits<meap::bfloat16>::quiet_NaN());
    meap::adamw<meap::bf16_mixed, meap::cuda> opt;
    for (int step = 0; step < 3; ++step) {
      stores.new_gradients(device, rng, 1.0f);
      opt.step(device, stores.device_store, 1e-3);
    }
    const auto master = values_of(device, stores.device_store.master_flat());
    const auto copy = values_of(device, stores.device_store.compute_flat());
    for (std::size_t j = 0; j < master.size(); ++j)
      BOOST_TEST_REQUIRE(copy[j] == static_cast<float>(meap::bfloat16(master[j])), "compute copy [" << j << "]");
    runs.push_back(master);
  }
  BOOST_TEST(bitwise_equal(runs[0], runs[1]));
}

// With a step status the device decides: skip (nothing moves), or apply with the gradients times
// the status's factor (equal to an ungated step on the scaled gradients).
BOOST_AUTO_TEST_CASE(adamw_follows_a_step_status_on_the_device) {
  std::mt19937 rng(9);
  twin_store<meap::fp32> gated(device, rng);
  std::mt19937 rng2(9);
  twin_store<meap::fp32> plain(device, rng2);
  gated.new_gradients(device, rng, 1.0f);
  // plain gets the same gradients times 0.5 (exact).
  auto halved = meap::clone(host, gated.host_store.grad_flat());
  for (meap::index_t i = 0; i < halved.numel(); ++i) halved.data()[i] *= 0.5f;
  meap::copy(device, halved.view().as_const(), plain.device_store.grad_flat());
  auto values = meap::zeros<double>(device, {meap::status_value_count});
  const meap::step_status<meap::cuda> status{values.view()};
  meap::adamw<meap::fp32, meap::cuda> a, b;
  const auto before = values_of(device, gated.device_store.master_flat());
  a.step(device, gated.device_store, 1e-2, status);  // update = 0: skip
  a.finish_step(false);
  BOOST_TEST(bitwise_equal(values_of(device, gated.device_store.master_flat()), before));
  const std::vector<double> apply = {0, 0, 0, 0.5, 1};  // grad_factor 0.5, update 1
  meap::copy(device, meap::make_view(std::span<const double>(apply), {meap::status_value_count}), values.view());
  a.step(device, gated.device_store, 1e-2, status);
  a.finish_step(true);
  b.step(device, plain.device_store, 1e-2);
  BOOST_TEST(bitwise_equal(values_of(device, gated.device_store.master_flat()),
                           values_of(device, plain.device_store.master_flat())));
  BOOST_TEST(a.steps() == 1);
}

BOOST_AUTO_TEST_CASE(adamw_resumes_bit_for_bit_through_load_state) {
  std::mt19937 rng(3);
  twin_store<meap::fp32> stores(device, rng);
  auto& store = stores.device_store;
  meap::adamw<meap::fp32, meap::cuda> straight;
  for (int step = 0; step < 2; ++step) {
    stores.new_gradients(device, rng, 1.0f);
    straight.step(device, store, 1e-3);
  }
  // Save: parameters and optimizer state copied to the host, as a checkpoint would.
  std::map<std::string, meap::tensor<float, meap::cpu>> saved;
  std::map<std::string, std::int64_t> steps;
  for (const auto& [name, view] : straight.state_views(store)) {
    if (view.type == meap::dtype::i64) {
      std::memcpy(&steps[name], view.data, sizeof(std::int64_t));
      continue;
    }
    BOOST_TEST_REQUIRE((view.where.kind == meap::device_kind::cuda));
    saved.emplace(name, meap::to_host(device, meap::view_cast<const float, meap::cuda>(view, name)));
  }
  const auto values = meap::to_host(device, store.master_flat());

  stores.new_gradients(device, rng, 1.0f);
  straight.step(device, store, 1e-3);
  const auto expected = values_of(device, store.master_flat());

  // Resume: restore the values, load the state in a new optimizer, take the same step.
  meap::copy(device, values.view().as_const(), store.master_flat());
  meap::adamw<meap::fp32, meap::cuda> resumed;
  resumed.load_state(device, store, [&](const std::string& name) -> meap::any_view {
    if (const auto found = saved.find(name); found != saved.end()) return meap::to_any(found->second.view());
    return meap::to_any(meap::tensor_view<const std::int64_t, meap::cpu>(&steps.at(name), dims{}));
  });
  BOOST_TEST(resumed.steps() == 2);
  resumed.step(device, store, 1e-3);
  BOOST_TEST(bitwise_equal(values_of(device, store.master_flat()), expected));
}

BOOST_AUTO_TEST_CASE(adamw_rejects_bad_arguments) {
  std::mt19937 rng(4);
  twin_store<meap::fp32> stores(device, rng);
  meap::adamw<meap::fp32, meap::cuda> opt;
  meap::adamw<meap::fp32, meap::cpu> cpu_opt;
  BOOST_TEST(error_of([&] { opt.step(device, stores.device_store, -1.0); }) ==
             error_of([&] { cpu_opt.step(host, stores.host_store, -1.0); }));
  BOOST_CHECK_EXCEPTION(opt.step(device, stores.device_store, -1.0), meap::error,
                        error_says("meap::adamw::step", "lr", {"a finite learning rate >= 0"}));
  auto short_values = meap::zeros<double>(device, {3});
  BOOST_CHECK_EXCEPTION(opt.step(device, stores.device_store, 1e-3, meap::step_status<meap::cuda>{short_values.view()}),
                        meap::error, error_says("meap::adamw::step", "status.values", {"shape (3)"}));
  using cuda_adamw = meap::adamw<meap::fp32, meap::cuda>;
  BOOST_CHECK_EXCEPTION((void)cuda_adamw({.beta2 = 1.0}), meap::error,
                        error_says("meap::adamw_config", "beta2", {}));
}

// The flat form: the same norm and decision as the CPU, in device memory.
BOOST_AUTO_TEST_CASE(clip_factor_matches_cpu) {
  std::mt19937 rng(10);
  twin_store<meap::fp32> stores(device, rng);
  stores.new_gradients(device, rng, 0.5f);
  std::vector<double> host_values(meap::status_value_count, 0.0);
  host_values[0] = 1.5;  // a finite loss
  const meap::step_status<meap::cpu> host_status{meap::make_view(std::span<double>(host_values), {meap::status_value_count})};
  auto device_values = meap::to_device(device, host_status.values.as_const());
  auto checks = meap::full<std::uint64_t>(host, {2 * meap::deferred_check_count}, meap::deferred_none);
  auto device_checks = meap::to_device(device, checks.view().as_const());
  const meap::step_status<meap::cuda> status{device_values.view(), device_checks.view()};
  meap::clip_factor(host, stores.host_store.grad_flat(), 1.0, host_status, 8.0);
  meap::clip_factor(device, stores.device_store.grad_flat(), 1.0, status, 8.0);
  auto got = meap::to_host(device, device_values.view());
  for (int v = 2; v < meap::status_value_count; ++v)
    BOOST_TEST(std::abs(got.data()[v] - host_values[static_cast<std::size_t>(v)]) <=
                   1e-12 * std::abs(host_values[static_cast<std::size_t>(v)]),
               "status value " << v << ": " << got.data()[v] << " vs " << host_values[static_cast<std::size_t>(v)]);
  BOOST_TEST(got.data()[static_cast<int>(meap::status_value::update)] == 1.0);
  // A failed deferred check, or a non-finite gradient, makes it skip.
  checks.data()[meap::deferred_check_count + 2] = meap::deferred_failure(4, -1);
  meap::copy(device, checks.view().as_const(), device_checks.view());
  meap::clip_factor(device, stores.device_store.grad_flat(), 1.0, status);
  BOOST_TEST(meap::to_host(device, device_values.view()).data()[static_cast<int>(meap::status_value::update)] == 0.0);
  meap::fill(device, device_checks.view(), meap::deferred_none);
  meap::fill(device, stores.device_store.grad(2).slice(0, 7, 8), std::numeric_limits<float>::infinity());
  meap::clip_factor(device, stores.device_store.grad_flat(), 1.0, status);
  got = meap::to_host(device, device_values.view());
  BOOST_TEST(got.data()[static_cast<int>(meap::status_value::update)] == 0.0);
  BOOST_TEST(!std::isfinite(got.data()[static_cast<int>(meap::status_value::grad_norm)]));
}

BOOST_AUTO_TEST_CASE(grad_norm_and_clipping_match_cpu) {
  std::mt19937 rng(5);
  auto params = model_parameters(device, rng);
  new_gradients(device, rng, params, 0.5f);
  const double cpu_norm = meap::grad_norm(host, host_list(params));
  const double cuda_norm = meap::grad_norm(device, device_list(params));
  BOOST_TEST(std::abs(cuda_norm - cpu_norm) <= 1e-12 * cpu_norm);
  // The same bits on every call.
  for (int run = 0; run < 3; ++run) BOOST_TEST(meap::grad_norm(device, device_list(params)) == cuda_norm);
  // Clipping multiplies by the same float factor on both sides: identical gradients.
  const auto cpu_clip = meap::clip_grad_norm(host, host_list(params), 1.0);
  const auto cuda_clip = meap::clip_grad_norm(device, device_list(params), 1.0);
  BOOST_TEST(cuda_clip.finite);
  BOOST_TEST(cuda_clip.scale < 1.0);
  BOOST_TEST(std::abs(cuda_clip.scale - cpu_clip.scale) <= 1e-12);
  for (auto& p : params)
    BOOST_TEST(worst_relative(values_of(device, p.device_grad.view()), values_of(device, p.host_grad.view())) <= 1e-7,
               p.name);
  // Below max_norm: untouched.
  const auto before = values_of(device, params[2].device_grad.view());
  const auto loose = meap::clip_grad_norm(device, device_list(params), 1e6);
  BOOST_TEST(loose.scale == 1.0);
  BOOST_TEST(bitwise_equal(values_of(device, params[2].device_grad.view()), before));
  BOOST_TEST(!meap::first_nonfinite_gradient(device, device_list(params)).has_value());
}

BOOST_AUTO_TEST_CASE(nonfinite_gradients_are_reported_and_left_alone) {
  std::mt19937 rng(6);
  auto params = model_parameters(device, rng);
  new_gradients(device, rng, params, 1.0f);
  // inf in the third tensor at 70001 and NaN at 123; an inf in the first at 500.
  for (const auto& [k, i, value] : {std::tuple<std::size_t, index_t, float>{2, 70001, INFINITY},
                                    {2, 123, std::numeric_limits<float>::quiet_NaN()},
                                    {0, 500, -INFINITY}}) {
    params[k].host_grad.data()[i] = value;
    meap::copy(device, params[k].host_grad.view().as_const(), params[k].device_grad.view());
  }
  meap::synchronize(device);
  const auto before = values_of(device, params[0].device_grad.view());
  const auto clip = meap::clip_grad_norm(device, device_list(params), 1.0);
  BOOST_TEST(!clip.finite);
  BOOST_TEST(clip.scale == 1.0);
  BOOST_TEST(!std::isfinite(clip.total_norm));
  const auto after = values_of(device, params[0].device_grad.view());
  BOOST_TEST(std::memcmp(before.data(), after.data(), before.size() * sizeof(float)) == 0);
  const auto got = meap::first_nonfinite_gradient(device, device_list(params));
  const auto expected = meap::first_nonfinite_gradient(host, host_list(params));
  BOOST_TEST_REQUIRE(got.has_value());
  BOOST_TEST(got->parameter == expected->parameter);
  BOOST_TEST(got->position == expected->position);
  BOOST_TEST(got->index == expected->index);
  BOOST_TEST(got->value == expected->value);
  BOOST_TEST(got->index == 500);
}

using gradient_types = boost::mpl::list<meap::bfloat16, meap::half>;
BOOST_AUTO_TEST_CASE_TEMPLATE(sixteen_bit_gradient_norm, T, gradient_types) {
  std::mt19937 rng(7);
  std::vector<twin_parameter<T>> params;
  params.push_back(make_parameter<T>(device, rng, "a", {50000}, true));
  params.push_back(make_parameter<T>(device, rng, "b", {3, 7}, false));
  new_gradients(device, rng, params, 0.25f);
  double reference = 0;
  for (auto& p : params)
    for (index_t i = 0; i < p.host_grad.numel(); ++i) {
      const auto x = static_cast<double>(static_cast<float>(p.host_grad.data()[i]));
      reference += x * x;
    }
  reference = std::sqrt(reference);
  BOOST_TEST(std::abs(meap::grad_norm(device, device_list(params)) - reference) <= 1e-12 * reference);
  const auto clip = meap::clip_grad_norm(device, device_list(params), reference / 2);
  BOOST_TEST(std::abs(clip.scale - 0.5) <= 1e-6);
  const auto scaled = values_of(device, params[0].device_grad.view());
  const auto factor = static_cast<float>(T(clip.scale));
  for (index_t i = 0; i < 100; ++i)
    BOOST_TEST_REQUIRE(scaled[static_cast<std::size_t>(i)] ==
                       static_cast<float>(T(static_cast<float>(params[0].host_grad.data()[i]) * factor)));
}

BOOST_AUTO_TEST_CASE(clip_errors_match_cpu) {
  std::mt19937 rng(8);
  auto params = model_parameters(device, rng);
  BOOST_TEST(error_of([&] { (void)meap::clip_grad_norm(device, device_list(params), 0.0); }) ==
             error_of([&] { (void)meap::clip_grad_norm(host, host_list(params), 0.0); }));
  auto hl = host_list(params);
  auto dl = device_list(params);
  hl[1].name = "";
  dl[1].name = "";
  BOOST_TEST(error_of([&] { (void)meap::grad_norm(device, dl); }) == error_of([&] { (void)meap::grad_norm(host, hl); }));
  hl = host_list(params);
  dl = device_list(params);
  hl[2].grad = hl[0].grad;
  dl[2].grad = dl[0].grad;
  BOOST_TEST(error_of([&] { (void)meap::first_nonfinite_gradient(device, dl); }) ==
             error_of([&] { (void)meap::first_nonfinite_gradient(host, hl); }));
  BOOST_TEST(error_of([&] { (void)meap::grad_norm(device, dl); }) != "(no error)");
}

BOOST_AUTO_TEST_SUITE_END()
