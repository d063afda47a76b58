// AdamW over a parameter store's flat buffers: the PyTorch formula against literals and a textbook
// reference, decay only where asked, one step count, the update decided by a step status, and a
// bit-identical resume through exported state.
#include <meap/core/philox.hpp>
#include <meap/core/tensor.hpp>
#include <meap/optim/adamw.hpp>
#include <meap/optim/clip.hpp>

#include "optim/support.hpp"

#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <vector>

namespace {

using optim_test::error_says;
namespace tt = boost::test_tools;

// The update written the way papers write it, one element at a time, in double.
struct textbook_adamw {
  meap::adamw_config config;
  struct slot {
    std::vector<double> m, v;
    int t = 0;
  };
  std::map<std::string, slot> slots;

  void step(const std::string& name, std::vector<double>& p, const std::vector<double>& g, bool decay, double lr) {
    auto& s = slots[name];
    if (s.m.empty()) s.m.assign(p.size(), 0.0), s.v.assign(p.size(), 0.0);
    s.t += 1;
    for (std::size_t i = 0; i < p.size(); ++i) {
      if (decay) p[i] -= lr * config.weight_decay * p[i];
      s.m[i] = config.beta1 * s.m[i] + (1 - config.beta1) * g[i];
      s.v[i] = config.beta2 * s.v[i] + (1 - config.beta2) * g[i] * g[i];
      const double mhat = s.m[i] / (1 - std::pow(config.beta1, s.t));
      const double vhat = s.v[i] / (1 - std::pow(config.beta2, s.t));
      p[i] -= lr * mhat / (std::sqrt(vhat) + config.eps);
    }
  }
};

template <class T>
void fill_gradient(std::vector<T>& grad, std::uint64_t seed, std::uint64_t step, double magnitude) {
  meap::philox_stream random(seed, step);
  for (auto& g : grad) g = static_cast<T>(magnitude * (2.0 * random.next_double() - 1.0));
}

// A parameter store on the CPU with given parameters: (name, shape, values, decay) each.
template <class P>
struct store_of {
  using M = typename P::master_t;
  struct spec {
    std::string name;
    meap::dims shape;
    std::vector<M> values;
    bool decay = true;
  };
  meap::nn::parameter_store<P, meap::cpu> store;

  explicit store_of(const std::vector<spec>& specs) {
    for (const auto& s : specs) store.declare(s.name, s.shape, s.decay);
    store.allocate(meap::cpu{});
    for (std::size_t k = 0; k < specs.size(); ++k) set(static_cast<meap::index_t>(k), specs[k].values);
  }
  std::vector<M> value(meap::index_t k) const {
    const auto v = store.master(k);
    return {v.data(), v.data() + v.numel()};
  }
  void set(meap::index_t k, const std::vector<M>& values) { std::copy(values.begin(), values.end(), store.master(k).data()); }
  void set_grad(meap::index_t k, const std::vector<M>& values) { std::copy(values.begin(), values.end(), store.grad(k).data()); }
  std::vector<M> grad(meap::index_t k) const {
    const auto g = store.grad(k);
    return {g.data(), g.data() + g.numel()};
  }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(adamw)

// Literals computed independently (Python floats, the textbook formula above) for three steps of
// lr 0.01, betas (0.9, 0.999), eps 1e-8, weight decay 0.1.
BOOST_AUTO_TEST_CASE(three_steps_match_independently_computed_literals_in_double) {
  store_of<meap::fp64> s({{"decayed", {3}, {0.5, -1.0, 2.0}, true}, {"not_decayed", {3}, {0.5, -1.0, 2.0}, false}});
  const std::vector<std::vector<double>> grads = {{0.1, -0.2, 0.3}, {-0.05, 0.4, 0.0}, {0.2, 0.2, -1.0}};
  const std::vector<std::vector<double>> expected_decayed = {
      {0.4895000009999999, -0.9890000004999999, 1.9880000003333334},
      {0.48634713093933907, -0.9916720356541037, 1.9793114181075822},
      {0.4792796683031988, -0.9958727715970122, 1.981964363415548}};
  const std::vector<std::vector<double>> expected_plain = {
      {0.4900000009999999, -0.9900000004999999, 1.9900000003333334},
      {0.4873366309403391, -0.9936610356546036, 1.9832994181079155},
      {0.4807555154351381, -0.9988534436331662, 1.9879316748339888}};

  meap::adamw<meap::fp64, meap::cpu> opt({.lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.1});
  for (std::size_t t = 0; t < grads.size(); ++t) {
    s.set_grad(0, grads[t]);
    s.set_grad(1, grads[t]);
    opt.step(meap::cpu{}, s.store, opt.config().lr);
    for (std::size_t i = 0; i < 3; ++i) {
      BOOST_TEST(s.value(0)[i] == expected_decayed[t][i], tt::tolerance(1e-14));
      BOOST_TEST(s.value(1)[i] == expected_plain[t][i], tt::tolerance(1e-14));
    }
  }
  BOOST_TEST(opt.steps() == 3);
}

// Many steps, several parameters and configurations (beta1 < 0.5 takes the other branch of
// PyTorch's lerp), a changing learning rate: the double optimizer stays on the textbook formula.
BOOST_AUTO_TEST_CASE(double_precision_follows_the_textbook_formula_over_many_steps) {
  const meap::adamw_config configs[] = {
      {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1},
      {.lr = 0.05, .beta1 = 0.3, .beta2 = 0.5, .eps = 1e-6, .weight_decay = 0.0},
      {.lr = 0.2, .beta1 = 0.0, .beta2 = 0.0, .eps = 1e-3, .weight_decay = 2.0},
  };
  for (const auto& config : configs) {
    std::vector<double> w(20);
    for (std::size_t i = 0; i < 20; ++i) w[i] = 0.1 * static_cast<double>(i) - 1.0;
    store_of<meap::fp64> s({{"w", {4, 5}, w, true}, {"g", {7}, std::vector<double>(7, -1.5), false}});
    std::vector<std::vector<double>> reference = {s.value(0), s.value(1)};
    const bool decays[] = {true, false};
    meap::adamw<meap::fp64, meap::cpu> opt(config);
    textbook_adamw textbook{config, {}};
    for (std::uint64_t t = 0; t < 25; ++t) {
      const double lr = config.lr * (1.0 + 0.1 * static_cast<double>(t % 3));
      for (meap::index_t k = 0; k < 2; ++k) {
        auto grad = s.grad(k);
        fill_gradient(grad, 11 + static_cast<std::uint64_t>(k), t, t % 5 == 0 ? 10.0 : 0.5);
        s.set_grad(k, grad);
        textbook.step(s.store.entry(k).name, reference[static_cast<std::size_t>(k)], grad, decays[k], lr);
      }
      opt.step(meap::cpu{}, s.store, lr);
      // Absolute for values near zero, relative for the rest.
      for (meap::index_t k = 0; k < 2; ++k) {
        const auto got = s.value(k);
        const auto& want = reference[static_cast<std::size_t>(k)];
        for (std::size_t i = 0; i < want.size(); ++i)
          BOOST_TEST(std::abs(got[i] - want[i]) <= 1e-12 * std::max(1.0, std::abs(want[i])),
                     s.store.entry(k).name << "[" << i << "] = " << got[i] << ", textbook " << want[i]);
      }
    }
  }
}

// float32 master weights follow the double reference to float accuracy.
BOOST_AUTO_TEST_CASE(float_precision_tracks_the_double_reference) {
  const meap::adamw_config config{.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
  store_of<meap::fp32> s({{"w", {64}, std::vector<float>(64, 0.5f), true}});
  std::vector<double> reference(64, 0.5);
  meap::adamw<meap::fp32, meap::cpu> opt(config);
  textbook_adamw textbook{config, {}};
  std::vector<double> grad(64);
  for (std::uint64_t t = 0; t < 10; ++t) {
    fill_gradient(grad, 5, t, 1.0);
    s.set_grad(0, std::vector<float>(grad.begin(), grad.end()));
    const auto rounded = s.grad(0);
    textbook.step("w", reference, std::vector<double>(rounded.begin(), rounded.end()), true, config.lr);
    opt.step(meap::cpu{}, s.store, config.lr);
  }
  const auto got = s.value(0);
  for (std::size_t i = 0; i < 64; ++i) BOOST_TEST(got[i] == reference[i], tt::tolerance(2e-6));
}

// A large parameter goes through the OpenMP loop; it must give what the same values give in
// small pieces (elements are independent), whatever the store's padding between pieces.
BOOST_AUTO_TEST_CASE(large_parameters_update_like_small_ones) {
  const meap::index_t n = 100'003, piece = 1000;
  std::vector<float> values(static_cast<std::size_t>(n));
  for (meap::index_t i = 0; i < n; ++i) values[static_cast<std::size_t>(i)] = 0.001f * static_cast<float>(i % 1000) - 0.5f;
  store_of<meap::fp32> big({{"big", {n}, values, true}});
  std::vector<store_of<meap::fp32>::spec> specs;
  for (meap::index_t start = 0; start < n; start += piece) {
    const meap::index_t count = std::min(piece, n - start);
    specs.push_back({"p" + std::to_string(start), {count},
                     std::vector<float>(values.begin() + start, values.begin() + start + count), true});
  }
  store_of<meap::fp32> pieces(specs);
  meap::adamw<meap::fp32, meap::cpu> a, b;
  std::vector<float> grad(static_cast<std::size_t>(n));
  for (std::uint64_t t = 0; t < 3; ++t) {
    fill_gradient(grad, 9, t, 1.0);
    big.set_grad(0, grad);
    for (meap::index_t k = 0; k < pieces.store.size(); ++k) {
      const auto begin = grad.begin() + k * piece;
      pieces.set_grad(k, std::vector<float>(begin, begin + pieces.store.entry(k).numel));
    }
    a.step(meap::cpu{}, big.store, 1e-2);
    b.step(meap::cpu{}, pieces.store, 1e-2);
  }
  const auto whole = big.value(0);
  bool identical = true;
  for (meap::index_t k = 0; k < pieces.store.size(); ++k) {
    const auto part = pieces.value(k);
    identical = identical && std::memcmp(part.data(), whole.data() + k * piece, part.size() * sizeof(float)) == 0;
  }
  BOOST_TEST(identical);
}

// With a zero gradient the Adam part of the update is exactly zero, so what remains is the decay:
// p * (1 - lr * wd) for decay = true, p unchanged for decay = false or weight_decay = 0.
BOOST_AUTO_TEST_CASE(weight_decay_applies_only_where_asked) {
  store_of<meap::fp32> s({{"matrix", {2, 2}, {1.0f, -2.0f, 3.0f, 0.5f}, true}, {"norm", {2}, {1.0f, -2.0f}, false}});
  meap::adamw<meap::fp32, meap::cpu> opt({.lr = 0.1, .weight_decay = 0.5});
  opt.step(meap::cpu{}, s.store, 0.1);
  const float factor = static_cast<float>(1.0 - 0.1 * 0.5);
  BOOST_TEST(s.value(0)[0] == 1.0f * factor);
  BOOST_TEST(s.value(0)[1] == -2.0f * factor);
  BOOST_TEST(s.value(0)[2] == 3.0f * factor);
  BOOST_TEST(s.value(1)[0] == 1.0f);
  BOOST_TEST(s.value(1)[1] == -2.0f);

  store_of<meap::fp32> again({{"matrix", {2}, {1.0f, -2.0f}, true}});
  meap::adamw<meap::fp32, meap::cpu> no_decay({.lr = 0.1, .weight_decay = 0.0});
  no_decay.step(meap::cpu{}, again.store, 0.1);
  BOOST_TEST(again.value(0)[0] == 1.0f);
  BOOST_TEST(again.value(0)[1] == -2.0f);
}

BOOST_AUTO_TEST_CASE(the_learning_rate_is_the_argument) {
  store_of<meap::fp64> a({{"w", {3}, {1, 2, 3}, true}}), b({{"w", {3}, {1, 2, 3}, true}});
  a.set_grad(0, {0.5, -0.25, 1.0});
  b.set_grad(0, {0.5, -0.25, 1.0});
  meap::adamw<meap::fp64, meap::cpu> first({.lr = 0.01}), second({.lr = 1.0});
  first.step(meap::cpu{}, a.store, first.config().lr);
  second.step(meap::cpu{}, b.store, 0.01);
  BOOST_TEST(a.value(0) == b.value(0), tt::per_element());
  // ... and it really is used: lr 1.0 moves the parameter by about 1 on the first step.
  store_of<meap::fp64> c({{"w", {1}, {0.0}, true}});
  c.set_grad(0, {3.0});
  meap::adamw<meap::fp64, meap::cpu>({.lr = 0.01, .weight_decay = 0}).step(meap::cpu{}, c.store, 1.0);
  BOOST_TEST(c.value(0)[0] == -1.0, tt::tolerance(1e-8));
}

// Given a step status, the update happens only where the status says so, with the gradients
// multiplied by its factor; the step count follows finish_step().
BOOST_AUTO_TEST_CASE(a_step_status_decides_the_update_and_scales_the_gradients) {
  const std::vector<float> w = {0.5f, -1.0f, 2.0f, 0.25f};
  const std::vector<float> g = {0.2f, -0.4f, 0.8f, 1.6f};
  store_of<meap::fp32> gated({{"w", {4}, w, true}}), plain({{"w", {4}, w, true}});
  gated.set_grad(0, g);
  plain.set_grad(0, {0.1f, -0.2f, 0.4f, 0.8f});  // g * 0.5, exactly
  meap::adamw<meap::fp32, meap::cpu> a, b;
  std::vector<double> values(meap::status_value_count, 0.0);
  const meap::step_status<meap::cpu> status{meap::make_view(std::span<double>(values), {meap::status_value_count})};
  values[static_cast<int>(meap::status_value::update)] = 0.0;
  a.step(meap::cpu{}, gated.store, 1e-2, status);
  BOOST_TEST(a.pending());
  BOOST_CHECK_EXCEPTION(a.step(meap::cpu{}, gated.store, 1e-2, status), meap::error,
                        error_says("this", {"finish_step"}));
  a.finish_step(false);
  BOOST_TEST(gated.value(0) == w, tt::per_element());  // skipped: nothing moved
  BOOST_TEST(a.steps() == 0);
  BOOST_TEST(a.exp_avg().data()[0] == 0.0f);
  values[static_cast<int>(meap::status_value::update)] = 1.0;
  values[static_cast<int>(meap::status_value::grad_factor)] = 0.5;
  a.step(meap::cpu{}, gated.store, 1e-2, status);
  a.finish_step(true);
  b.step(meap::cpu{}, plain.store, 1e-2);
  BOOST_TEST(a.steps() == 1);
  BOOST_TEST(std::memcmp(gated.value(0).data(), plain.value(0).data(), 4 * sizeof(float)) == 0);
  BOOST_CHECK_EXCEPTION(a.finish_step(true), meap::error, error_says("this", {"no step waiting"}));
}

BOOST_AUTO_TEST_CASE(state_views_name_and_describe_the_state) {
  store_of<meap::fp32> s({{"model.b", {2, 3}, std::vector<float>(6, 1.0f), true},
                          {"model.a", {4}, std::vector<float>(4, 1.0f), true}});
  s.set_grad(0, std::vector<float>(6, 0.5f));
  meap::adamw<meap::fp32, meap::cpu> opt;
  BOOST_TEST(opt.state_views(s.store).empty());
  opt.step(meap::cpu{}, s.store, 3e-4);
  const auto views = opt.state_views(s.store);
  BOOST_TEST_REQUIRE(views.size() == 6u);
  // In the store's order.
  BOOST_TEST(views[0].name == "optimizer.model.b.exp_avg");
  BOOST_TEST(views[1].name == "optimizer.model.b.exp_avg_sq");
  BOOST_TEST(views[2].name == "optimizer.model.b.step");
  BOOST_TEST(views[3].name == "optimizer.model.a.exp_avg");
  BOOST_TEST((views[0].view.shape == meap::dims{2, 3}));
  BOOST_TEST((views[0].view.type == meap::dtype::f32));
  BOOST_TEST((views[2].view.type == meap::dtype::i64));
  BOOST_TEST(views[2].view.shape.rank() == 0);
  BOOST_TEST(*static_cast<const std::int64_t*>(views[2].view.data) == 1);
  // m = (1 - beta1) g after one step.
  BOOST_TEST(static_cast<const float*>(views[0].view.data)[0] == 0.05f, tt::tolerance(1e-6f));
}

namespace {
// A checkpoint in memory: copies of the bytes behind each exported view.
struct stored_state {
  std::map<std::string, std::vector<unsigned char>> bytes;
  std::map<std::string, meap::any_view> views;

  explicit stored_state(const std::vector<meap::named_view>& exported) {
    for (const auto& [name, view] : exported) {
      const auto n = static_cast<std::size_t>(view.shape.product()) * meap::size_of(view.type);
      auto& copy = bytes[name];
      copy.resize(n);
      std::memcpy(copy.data(), view.data, n);
      meap::any_view v = view;
      v.data = copy.data();
      views[name] = v;
    }
  }
  meap::any_view operator()(const std::string& name) const {
    const auto found = views.find(name);
    if (found == views.end()) throw meap::error("no tensor " + name);
    return found->second;
  }
};
}  // namespace

// Run A for 3 steps, export its state, load it into a fresh B with copies of A's parameters, then
// run both for 3 more steps on the same gradients: parameters and state stay bitwise equal.
BOOST_AUTO_TEST_CASE(exported_state_resumes_bit_identically) {
  const std::vector<store_of<meap::fp32>::spec> specs = {{"w", {3, 4}, std::vector<float>(12, 0.3f), true},
                                                         {"n", {4}, std::vector<float>(4, 1.0f), false}};
  store_of<meap::fp32> a_store(specs);
  const meap::adamw_config config{.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
  meap::adamw<meap::fp32, meap::cpu> a(config);
  const auto set_grads = [](store_of<meap::fp32>& s, std::uint64_t t) {
    for (meap::index_t k = 0; k < s.store.size(); ++k) {
      auto g = s.grad(k);
      fill_gradient(g, 100 + static_cast<std::uint64_t>(k), t, 1.0);
      s.set_grad(k, g);
    }
  };
  for (std::uint64_t t = 0; t < 3; ++t) {
    set_grads(a_store, t);
    a.step(meap::cpu{}, a_store.store, config.lr);
  }
  const stored_state checkpoint(a.state_views(a_store.store));
  store_of<meap::fp32> b_store(specs), fresh_store(specs);
  for (meap::index_t k = 0; k < 2; ++k) {
    b_store.set(k, a_store.value(k));
    fresh_store.set(k, a_store.value(k));
  }
  meap::adamw<meap::fp32, meap::cpu> b(config), fresh(config);
  b.load_state(meap::cpu{}, b_store.store, checkpoint);
  BOOST_TEST(b.steps() == 3);
  for (std::uint64_t t = 3; t < 6; ++t) {
    set_grads(a_store, t);
    set_grads(b_store, t);
    set_grads(fresh_store, t);
    a.step(meap::cpu{}, a_store.store, config.lr);
    b.step(meap::cpu{}, b_store.store, config.lr);
    fresh.step(meap::cpu{}, fresh_store.store, config.lr);
  }
  for (meap::index_t k = 0; k < 2; ++k)
    BOOST_TEST(std::memcmp(a_store.value(k).data(), b_store.value(k).data(), a_store.value(k).size() * sizeof(float)) == 0);
  BOOST_TEST(a.steps() == 6);
  BOOST_TEST(b.steps() == 6);
  const auto n = static_cast<std::size_t>(a.exp_avg().numel()) * sizeof(float);
  BOOST_TEST(std::memcmp(a.exp_avg().data(), b.exp_avg().data(), n) == 0);
  BOOST_TEST(std::memcmp(a.exp_avg_sq().data(), b.exp_avg_sq().data(), n) == 0);
  // Without the state the same three steps give something else (the comparison can fail).
  BOOST_TEST(std::memcmp(a_store.value(0).data(), fresh_store.value(0).data(), 12 * sizeof(float)) != 0);
}

// ZeRO-1's building block: optimizers sharded over two ranges of one store, each stepping its own
// range, update every parameter exactly as one optimizer over the whole store (shards that cut a
// parameter and the boundary between decay and no decay included); their moments are the whole
// optimizer's, piece by piece; a sharded optimizer loads the whole state and keeps its piece.
BOOST_AUTO_TEST_CASE(sharded_optimizers_update_like_one) {
  const std::vector<store_of<meap::fp32>::spec> specs = {{"w", {3, 50}, std::vector<float>(150, 0.3f), true},
                                                         {"n", {40}, std::vector<float>(40, 1.0f), false},
                                                         {"v", {70}, std::vector<float>(70, -0.2f), true}};
  store_of<meap::fp32> whole_store(specs), sharded_store(specs);
  const meap::adamw_config config{.lr = 1e-2, .weight_decay = 0.1};
  meap::adamw<meap::fp32, meap::cpu> whole(config), low(config), high(config);
  const meap::index_t n = whole_store.store.flat_size(), cut = 100;  // inside "w"
  low.shard(0, cut);
  high.shard(cut, n);
  BOOST_TEST(low.sharded());
  for (std::uint64_t t = 0; t < 4; ++t) {
    for (meap::index_t k = 0; k < whole_store.store.size(); ++k) {
      auto g = whole_store.grad(k);
      fill_gradient(g, 7 + static_cast<std::uint64_t>(k), t, 1.0);
      whole_store.set_grad(k, g);
      sharded_store.set_grad(k, g);
    }
    whole.step(meap::cpu{}, whole_store.store, config.lr);
    low.step(meap::cpu{}, sharded_store.store, config.lr);
    high.step(meap::cpu{}, sharded_store.store, config.lr);
  }
  const auto a = whole_store.store.master_flat(), b = sharded_store.store.master_flat();
  BOOST_TEST(std::memcmp(a.data(), b.data(), static_cast<std::size_t>(n) * sizeof(float)) == 0);
  BOOST_TEST(low.exp_avg().numel() == cut);
  BOOST_TEST(high.exp_avg().numel() == n - cut);
  BOOST_TEST(std::memcmp(whole.exp_avg().data() + cut, high.exp_avg().data(),
                         static_cast<std::size_t>(n - cut) * sizeof(float)) == 0);
  BOOST_CHECK_EXCEPTION((void)low.state_views(sharded_store.store), meap::error,
                        error_says("meap::adamw::state_views", "this", {"sharded", "gather"}));
  // The whole state into a fresh sharded optimizer: its piece, bit for bit.
  const stored_state saved(whole.state_views(whole_store.store));
  meap::adamw<meap::fp32, meap::cpu> reloaded(config);
  reloaded.shard(cut, n);
  reloaded.load_state(meap::cpu{}, sharded_store.store, saved);
  BOOST_TEST(reloaded.steps() == 4);
  BOOST_TEST(std::memcmp(whole.exp_avg_sq().data() + cut, reloaded.exp_avg_sq().data(),
                         static_cast<std::size_t>(n - cut) * sizeof(float)) == 0);
  // A shard is set before any state.
  BOOST_CHECK_EXCEPTION(whole.shard(0, 10), meap::error, error_says("meap::adamw::shard", "this", {"before the first step"}));
  meap::adamw<meap::fp32, meap::cpu> bad(config);
  BOOST_CHECK_EXCEPTION(bad.shard(5, 2), meap::error, error_says("meap::adamw::shard", "end", {"[begin, end)"}));
}

BOOST_AUTO_TEST_CASE(load_state_rejects_bad_state_and_keeps_the_old_one) {
  store_of<meap::fp64> s({{"w", {2}, {1, 2}, true}, {"v", {1}, {3}, true}});
  s.set_grad(0, {0.5, 0.5});
  meap::adamw<meap::fp64, meap::cpu> opt;
  opt.step(meap::cpu{}, s.store, 1e-3);
  const auto good = opt.state_views(s.store);
  const double m0 = opt.exp_avg().data()[0];

  const auto with = [&](const std::string& name, auto edit) {
    stored_state state(good);
    edit(state.views.at(name), state);
    return state;
  };
  const auto fails = [&](const stored_state& state, const std::string& argument, std::vector<std::string> fragments) {
    BOOST_CHECK_EXCEPTION(opt.load_state(meap::cpu{}, s.store, state), meap::error,
                          error_says(argument, std::move(fragments)));
    BOOST_TEST(opt.steps() == 1);  // unchanged
    BOOST_TEST(opt.exp_avg().data()[0] == m0);
  };
  fails(with("optimizer.w.exp_avg", [](meap::any_view& v, stored_state&) { v.type = meap::dtype::f32; }),
        "optimizer.w.exp_avg", {"dtype float32", "expected dtype float64"});
  fails(with("optimizer.w.exp_avg_sq", [](meap::any_view& v, stored_state&) { v.shape = meap::dims{1, 2}; v.strides = meap::dims{2, 1}; }),
        "optimizer.w.exp_avg_sq", {"shape (1, 2)", "(2)"});
  fails(with("optimizer.w.exp_avg_sq",
             [](meap::any_view& v, stored_state&) { static_cast<double*>(v.data)[1] = -1e-9; }),
        "optimizer.w.exp_avg_sq", {"element 1", ">= 0"});
  fails(with("optimizer.w.exp_avg",
             [](meap::any_view& v, stored_state&) { static_cast<double*>(v.data)[0] = std::numeric_limits<double>::quiet_NaN(); }),
        "optimizer.w.exp_avg", {"element 0", "finite"});
  fails(with("optimizer.w.step", [](meap::any_view& v, stored_state&) { *static_cast<std::int64_t*>(v.data) = -3; }),
        "optimizer.w.step", {"-3", ">= 0"});
  fails(with("optimizer.w.step", [](meap::any_view& v, stored_state&) { v.type = meap::dtype::f64; }),
        "optimizer.w.step", {"float64", "int64"});
  // Step counts that differ between parameters: one optimizer step counts for all.
  std::int64_t other_step = 7;
  fails(with("optimizer.v.step", [&](meap::any_view& v, stored_state&) { v.data = &other_step; }), "optimizer.v.step",
        {"7", "every other parameter, 1", "optimizer.w.step"});
  // A missing tensor: the lookup's own error comes through.
  BOOST_CHECK_EXCEPTION(opt.load_state(meap::cpu{}, s.store, with("optimizer.w.step", [](meap::any_view&, stored_state& state) {
                          state.views.erase("optimizer.w.step");
                        })),
                        meap::error, [](const meap::error& e) { return std::string(e.what()) == "no tensor optimizer.w.step"; });
  BOOST_TEST(opt.steps() == 1);
}

BOOST_AUTO_TEST_CASE(config_values_are_validated) {
  const auto rejects = [](meap::adamw_config c, const std::string& field, const std::string& fragment) {
    BOOST_CHECK_EXCEPTION((meap::adamw<meap::fp32, meap::cpu>{c}), meap::error,
                          error_says(field, {"meap::adamw_config", fragment}));
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  rejects({.lr = -1e-3}, "lr", ">= 0");
  rejects({.lr = nan}, "lr", "finite");
  rejects({.lr = inf}, "lr", "finite");
  rejects({.beta1 = 1.0}, "beta1", "[0, 1)");
  rejects({.beta1 = -0.1}, "beta1", "[0, 1)");
  rejects({.beta1 = nan}, "beta1", "[0, 1)");
  rejects({.beta2 = 1.0}, "beta2", "[0, 1)");
  rejects({.eps = 0.0}, "eps", "> 0");
  rejects({.eps = inf}, "eps", "> 0");
  rejects({.weight_decay = -0.1}, "weight_decay", ">= 0");
  BOOST_CHECK_NO_THROW((meap::adamw<meap::fp32, meap::cpu>({.lr = 0.0, .beta1 = 0.0, .beta2 = 0.0, .eps = 1e-12,
                                                             .weight_decay = 0.0})));
  BOOST_TEST(meap::adamw_config{}.beta2 == 0.95);
  BOOST_TEST(meap::adamw_config{}.weight_decay == 0.1);
}

BOOST_AUTO_TEST_CASE(step_checks_its_arguments_and_changes_nothing_when_it_throws) {
  store_of<meap::fp32> s({{"w", {2, 3}, std::vector<float>(6, 1.0f), true}});
  s.set_grad(0, std::vector<float>(6, 0.5f));
  meap::adamw<meap::fp32, meap::cpu> opt;
  BOOST_CHECK_EXCEPTION(opt.step(meap::cpu{}, s.store, -1.0), meap::error,
                        error_says("lr", {"meap::adamw::step", ">= 0"}));
  std::vector<double> short_values(3);
  const meap::step_status<meap::cpu> bad{meap::make_view(std::span<double>(short_values), {3})};
  BOOST_CHECK_EXCEPTION(opt.step(meap::cpu{}, s.store, 1e-3, bad), meap::error,
                        error_says("status.values", {"shape (3)", "(5)"}));
  meap::nn::parameter_store<meap::fp32, meap::cpu> unallocated;
  unallocated.declare("x", {2}, true);
  BOOST_CHECK_EXCEPTION(opt.step(meap::cpu{}, unallocated, 1e-3), meap::error,
                        error_says("store", {"allocate"}));
  BOOST_TEST(s.value(0) == std::vector<float>(6, 1.0f), tt::per_element());
  BOOST_TEST(opt.steps() == 0);
  // One optimizer, one model: a second store is refused.
  opt.step(meap::cpu{}, s.store, 1e-3);
  store_of<meap::fp32> other({{"w", {2, 3}, std::vector<float>(6, 1.0f), true}});
  BOOST_CHECK_EXCEPTION(opt.step(meap::cpu{}, other.store, 1e-3), meap::error,
                        error_says("store", {"another parameter store"}));
  BOOST_TEST(other.value(0) == std::vector<float>(6, 1.0f), tt::per_element());
}

BOOST_AUTO_TEST_SUITE_END()
