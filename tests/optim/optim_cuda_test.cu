// AdamW and gradient clipping on CUDA against their CPU twins: several AdamW steps with and without
// weight decay under a changing learning rate (and the bfloat16 / half compute copy), a resume
// through load_state that continues bit for bit, the global norm (deterministic: the same bits
// on every run), clipping, the first non-finite gradient, and the CPU's error messages.
// Label `gpu`: skipped (exit 77) without a device.
#define BOOST_TEST_MODULE meap optim cuda
#define BOOST_TEST_NO_MAIN
#define BOOST_TEST_ALTERNATIVE_INIT_API
#include <boost/test/included/unit_test.hpp>

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

#include "support/errors.hpp"
#include "support/gpu_main.hpp"

namespace {

using meap::dims;
using meap::index_t;
using meap_test::error_says;
const meap::cpu host;

struct stream_fixture {
  cudaStream_t stream = nullptr;
  meap::cuda device;
  stream_fixture() {
    MEAP_CUDA_CHECK(cudaStreamCreate(&stream));
    device = meap::cuda(stream);
  }
  ~stream_fixture() {
    (void)cudaStreamSynchronize(stream);
    (void)cudaStreamDestroy(stream);
  }
};

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

template <class T, class D>
std::vector<float> values_of(const meap::cuda& device, const meap::tensor_view<T, D>& view) {
  std::vector<float> out(static_cast<std::size_t>(view.numel()));
  if constexpr (std::is_same_v<D, meap::cuda>) {
    const auto copy = meap::to_host(device, view);
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(copy.data()[i]);
  } else {
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(view.data()[i]);
  }
  return out;
}

// max |a - b| / max |b| over a tensor (infinite when only one side is NaN).
double worst_relative(const std::vector<float>& a, const std::vector<float>& b) {
  BOOST_TEST_REQUIRE(a.size() == b.size());
  double worst = 0, scale = 1e-30;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) != std::isnan(b[i])) return std::numeric_limits<double>::infinity();
    worst = std::max(worst, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return worst / scale;
}

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const meap::error& e) {
    return e.what();
  }
  return "(no error)";
}

std::vector<twin_parameter<float>> model_parameters(const meap::cuda& device, std::mt19937& rng) {
  std::vector<twin_parameter<float>> params;
  params.push_back(make_parameter<float>(device, rng, "model.embed_tokens.weight", {37, 24}, true));
  params.push_back(make_parameter<float>(device, rng, "model.norm.weight", {24}, false));
  params.push_back(make_parameter<float>(device, rng, "model.layers.0.mlp.up_proj.weight", {200, 300}, true));
  params.push_back(make_parameter<float>(device, rng, "empty", {0}, true));
  return params;
}

}  // namespace

BOOST_FIXTURE_TEST_SUITE(optim_cuda, stream_fixture)

// The element update is PyTorch's operation order on both sides; the CPU compiler may contract a
// multiply and an add into an FMA where the CUDA kernel rounds each, so elements agree to a few ulp.
BOOST_AUTO_TEST_CASE(adamw_matches_cpu_over_several_steps) {
  for (const auto& config : {meap::adamw_config{}, meap::adamw_config{.lr = 1e-2, .beta1 = 0.5, .beta2 = 0.99,
                                                                      .eps = 1e-6, .weight_decay = 0.0},
                             meap::adamw_config{.beta1 = 0.0, .weight_decay = 0.3}}) {
    std::mt19937 rng(1);
    auto params = model_parameters(device, rng);
    meap::adamw<float> cpu_opt(config);
    meap::cuda_adamw cuda_opt(config);
    const meap::warmup_cosine schedule({.peak_lr = config.lr, .min_lr = config.lr / 10, .warmup_steps = 2, .total_steps = 6});
    for (std::int64_t step = 0; step < 6; ++step) {
      new_gradients(device, rng, params, step == 3 ? 100.0f : 0.1f);
      cpu_opt.step(host, host_list(params), schedule(step));
      cuda_opt.step(device, device_list(params), schedule(step));
      for (auto& p : params) {
        const auto got = values_of(device, p.device_value.view());
        const auto expected = values_of(device, p.host_value.view());
        BOOST_TEST(worst_relative(got, expected) <= 4e-6, p.name << " after step " << step << ": "
                                                                 << worst_relative(got, expected));
        if (p.shape.product() == 0) continue;
        const auto* cs = cuda_opt.state(p.name);
        const auto* hs = cpu_opt.state(p.name);
        BOOST_TEST_REQUIRE(cs != nullptr);
        BOOST_TEST(cs->step == hs->step);
        BOOST_TEST(worst_relative(values_of(device, cs->exp_avg.view()), values_of(device, hs->exp_avg.view())) <= 4e-6);
        BOOST_TEST(worst_relative(values_of(device, cs->exp_avg_sq.view()), values_of(device, hs->exp_avg_sq.view())) <=
                   4e-6);
      }
    }
    BOOST_TEST(cuda_opt.state_count() == cpu_opt.state_count());
  }
}

BOOST_AUTO_TEST_CASE(adamw_is_deterministic_and_writes_compute_copies) {
  std::vector<std::vector<float>> runs;
  for (int run = 0; run < 2; ++run) {
    std::mt19937 rng(2);
    auto params = model_parameters(device, rng);
    meap::cuda_adamw opt;
    std::vector<meap::tensor<meap::bfloat16, meap::cuda>> copies;
    std::vector<meap::tensor_view<meap::bfloat16, meap::cuda>> copy_views;
    for (auto& p : params) {
      copies.emplace_back(device, p.shape);
      meap::fill(device, copies.back().view(), std::numeric_limits<meap::bfloat16>::quiet_NaN());
      copy_views.push_back(copies.back().view());
    }
    copy_views[1] = {};  // a default view skips that parameter's copy
    for (int step = 0; step < 3; ++step) {
      new_gradients(device, rng, params, 1.0f);
      opt.step(device, device_list(params), 1e-3, copy_views);
    }
    std::vector<float> all;
    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto value = values_of(device, params[i].device_value.view());
      all.insert(all.end(), value.begin(), value.end());
      const auto copy = values_of(device, copies[i].view());
      for (std::size_t j = 0; j < value.size(); ++j) {
        if (i == 1) BOOST_TEST_REQUIRE(std::isnan(copy[j]), "skipped copy was written");
        else BOOST_TEST_REQUIRE(copy[j] == static_cast<float>(meap::bfloat16(value[j])), params[i].name << "[" << j << "]");
      }
    }
    runs.push_back(all);
  }
  BOOST_TEST(bitwise_equal(runs[0], runs[1]));
}

BOOST_AUTO_TEST_CASE(adamw_resumes_bit_for_bit_through_load_state) {
  std::mt19937 rng(3);
  auto params = model_parameters(device, rng);
  meap::cuda_adamw straight;
  for (int step = 0; step < 2; ++step) {
    new_gradients(device, rng, params, 1.0f);
    straight.step(device, device_list(params), 1e-3);
  }
  // Save: parameters and optimizer state copied to the host, as a checkpoint would.
  std::map<std::string, meap::tensor<float, meap::cpu>> saved;
  std::map<std::string, std::int64_t> steps;
  for (const auto& [name, view] : straight.state_views()) {
    if (view.type == meap::dtype::i64) {
      std::memcpy(&steps[name], view.data, sizeof(std::int64_t));
      continue;
    }
    BOOST_TEST_REQUIRE((view.where.kind == meap::device_kind::cuda));
    saved.emplace(name, meap::to_host(device, meap::view_cast<const float, meap::cuda>(view, name)));
  }
  std::vector<meap::tensor<float, meap::cpu>> values;
  for (auto& p : params) values.push_back(meap::to_host(device, p.device_value.view()));

  new_gradients(device, rng, params, 1.0f);
  straight.step(device, device_list(params), 1e-3);
  std::vector<std::vector<float>> expected;
  for (auto& p : params) expected.push_back(values_of(device, p.device_value.view()));

  // Resume: restore the values, load the state in a new optimizer, take the same step.
  for (std::size_t i = 0; i < params.size(); ++i)
    meap::copy(device, values[i].view().as_const(), params[i].device_value.view());
  meap::cuda_adamw resumed;
  resumed.load_state(device, device_list(params), [&](const std::string& name) -> meap::any_view {
    if (const auto found = saved.find(name); found != saved.end()) return meap::to_any(found->second.view());
    return meap::to_any(meap::tensor_view<const std::int64_t, meap::cpu>(&steps.at(name), dims{}));
  });
  resumed.step(device, device_list(params), 1e-3);
  for (std::size_t i = 0; i < params.size(); ++i)
    BOOST_TEST(bitwise_equal(values_of(device, params[i].device_value.view()), expected[i]), params[i].name);
}

BOOST_AUTO_TEST_CASE(adamw_rejects_bad_arguments) {
  std::mt19937 rng(4);
  auto params = model_parameters(device, rng);
  meap::cuda_adamw opt;
  BOOST_CHECK_EXCEPTION(opt.step(device, device_list(params), -1.0), meap::error,
                        error_says("meap::cuda_adamw::step", "lr", {"a finite learning rate >= 0"}));
  auto list = device_list(params);
  list[2].name = list[0].name;
  BOOST_CHECK_EXCEPTION(opt.step(device, list, 1e-3), meap::error,
                        error_says("meap::cuda_adamw::step", "params", {"unique parameter names"}));
  opt.step(device, device_list(params), 1e-3);
  auto reshaped = device_list(params);
  reshaped[2].value = reshaped[2].value.reshape({300, 200});
  reshaped[2].grad = reshaped[2].grad.reshape({300, 200});
  BOOST_CHECK_EXCEPTION(opt.step(device, reshaped, 1e-3), meap::error,
                        error_says("meap::cuda_adamw::step", "params", {"a parameter name must keep its shape"}));
  std::vector<meap::tensor_view<meap::half, meap::cuda>> too_few(1);
  BOOST_CHECK_EXCEPTION(opt.step(device, device_list(params), 1e-3, too_few), meap::error,
                        error_says("meap::cuda_adamw::step", "copies", {"one view per parameter"}));
  BOOST_CHECK_EXCEPTION((void)meap::cuda_adamw({.beta2 = 1.0}), meap::error, error_says("meap::adamw_config", "beta2", {}));
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
