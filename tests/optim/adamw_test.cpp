// AdamW: the PyTorch formula against literals and a textbook reference, decay only where asked,
// per-parameter state, and a bit-identical resume through exported state.
#include <meap/core/philox.hpp>
#include <meap/core/tensor.hpp>
#include <meap/optim/adamw.hpp>

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
using optim_test::stored_parameter;
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

}  // namespace

BOOST_AUTO_TEST_SUITE(adamw)

// Literals computed independently (Python floats, the textbook formula above) for three steps of
// lr 0.01, betas (0.9, 0.999), eps 1e-8, weight decay 0.1.
BOOST_AUTO_TEST_CASE(three_steps_match_independently_computed_literals_in_double) {
  std::vector<stored_parameter<double>> stored;
  stored.emplace_back("decayed", meap::dims{3}, std::vector<double>{0.5, -1.0, 2.0}, true);
  stored.emplace_back("not_decayed", meap::dims{3}, std::vector<double>{0.5, -1.0, 2.0}, false);
  const auto params = optim_test::parameters(stored);
  const std::vector<std::vector<double>> grads = {{0.1, -0.2, 0.3}, {-0.05, 0.4, 0.0}, {0.2, 0.2, -1.0}};
  const std::vector<std::vector<double>> expected_decayed = {
      {0.4895000009999999, -0.9890000004999999, 1.9880000003333334},
      {0.48634713093933907, -0.9916720356541037, 1.9793114181075822},
      {0.4792796683031988, -0.9958727715970122, 1.981964363415548}};
  const std::vector<std::vector<double>> expected_plain = {
      {0.4900000009999999, -0.9900000004999999, 1.9900000003333334},
      {0.4873366309403391, -0.9936610356546036, 1.9832994181079155},
      {0.4807555154351381, -0.9988534436331662, 1.9879316748339888}};

  meap::adamw<double> opt({.lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.1});
  for (std::size_t t = 0; t < grads.size(); ++t) {
    stored[0].grad = grads[t];
    stored[1].grad = grads[t];
    opt.step(meap::cpu{}, params);
    for (std::size_t i = 0; i < 3; ++i) {
      BOOST_TEST(stored[0].value[i] == expected_decayed[t][i], tt::tolerance(1e-14));
      BOOST_TEST(stored[1].value[i] == expected_plain[t][i], tt::tolerance(1e-14));
    }
  }
  BOOST_TEST(opt.state("decayed")->step == 3);
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
    std::vector<stored_parameter<double>> stored;
    stored.emplace_back("w", meap::dims{4, 5}, std::vector<double>(20, 0.25), true);
    stored.emplace_back("g", meap::dims{7}, std::vector<double>(7, -1.5), false);
    for (std::size_t i = 0; i < 20; ++i) stored[0].value[i] = 0.1 * static_cast<double>(i) - 1.0;
    std::vector<std::vector<double>> reference = {stored[0].value, stored[1].value};
    const auto params = optim_test::parameters(stored);
    meap::adamw<double> opt(config);
    textbook_adamw textbook{config, {}};
    for (std::uint64_t t = 0; t < 25; ++t) {
      const double lr = config.lr * (1.0 + 0.1 * static_cast<double>(t % 3));
      for (std::size_t k = 0; k < stored.size(); ++k) {
        fill_gradient(stored[k].grad, 11 + k, t, t % 5 == 0 ? 10.0 : 0.5);
        textbook.step(stored[k].name, reference[k], stored[k].grad, stored[k].decay, lr);
      }
      opt.step(meap::cpu{}, params, lr);
      // Absolute for values near zero, relative for the rest.
      for (std::size_t k = 0; k < stored.size(); ++k)
        for (std::size_t i = 0; i < reference[k].size(); ++i)
          BOOST_TEST(std::abs(stored[k].value[i] - reference[k][i]) <= 1e-12 * std::max(1.0, std::abs(reference[k][i])),
                     stored[k].name << "[" << i << "] = " << stored[k].value[i] << ", textbook " << reference[k][i]);
    }
  }
}

// float32 master weights follow the double reference to float accuracy.
BOOST_AUTO_TEST_CASE(float_precision_tracks_the_double_reference) {
  const meap::adamw_config config{.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
  std::vector<stored_parameter<float>> stored;
  stored.emplace_back("w", meap::dims{64}, std::vector<float>(64, 0.5f), true);
  std::vector<double> reference(64, 0.5);
  const auto params = optim_test::parameters(stored);
  meap::adamw<float> opt(config);
  textbook_adamw textbook{config, {}};
  std::vector<double> grad(64);
  for (std::uint64_t t = 0; t < 10; ++t) {
    fill_gradient(grad, 5, t, 1.0);
    for (std::size_t i = 0; i < 64; ++i) stored[0].grad[i] = static_cast<float>(grad[i]);
    std::vector<double> rounded(stored[0].grad.begin(), stored[0].grad.end());
    textbook.step("w", reference, rounded, true, config.lr);
    opt.step(meap::cpu{}, params);
  }
  for (std::size_t i = 0; i < 64; ++i) BOOST_TEST(stored[0].value[i] == reference[i], tt::tolerance(2e-6));
}

// A large parameter goes through the OpenMP loop; it must give what the same values give in
// small pieces (elements are independent).
BOOST_AUTO_TEST_CASE(large_parameters_update_like_small_ones) {
  const std::size_t n = 100'003;
  std::vector<stored_parameter<float>> big;
  big.emplace_back("big", meap::dims{static_cast<meap::index_t>(n)}, std::vector<float>(n), true);
  std::vector<stored_parameter<float>> pieces;
  for (std::size_t i = 0; i < n; ++i) big[0].value[i] = 0.001f * static_cast<float>(i % 1000) - 0.5f;
  const std::size_t piece = 1000;
  for (std::size_t start = 0; start < n; start += piece) {
    const std::size_t count = std::min(piece, n - start);
    pieces.emplace_back("p" + std::to_string(start), meap::dims{static_cast<meap::index_t>(count)},
                        std::vector<float>(big[0].value.begin() + static_cast<std::ptrdiff_t>(start),
                                           big[0].value.begin() + static_cast<std::ptrdiff_t>(start + count)),
                        true);
  }
  const auto big_params = optim_test::parameters(big);
  const auto piece_params = optim_test::parameters(pieces);
  meap::adamw<float> a, b;
  for (std::uint64_t t = 0; t < 3; ++t) {
    fill_gradient(big[0].grad, 9, t, 1.0);
    for (std::size_t k = 0; k < pieces.size(); ++k)
      std::copy_n(big[0].grad.begin() + static_cast<std::ptrdiff_t>(k * piece), pieces[k].grad.size(),
                  pieces[k].grad.begin());
    a.step(meap::cpu{}, big_params, 1e-2);
    b.step(meap::cpu{}, piece_params, 1e-2);
  }
  bool identical = true;
  for (std::size_t k = 0; k < pieces.size(); ++k)
    identical = identical && std::memcmp(pieces[k].value.data(), big[0].value.data() + k * piece,
                                         pieces[k].value.size() * sizeof(float)) == 0;
  BOOST_TEST(identical);
}

// With a zero gradient the Adam part of the update is exactly zero, so what remains is the decay:
// p * (1 - lr * wd) for decay = true, p unchanged for decay = false or weight_decay = 0.
BOOST_AUTO_TEST_CASE(weight_decay_applies_only_where_asked) {
  std::vector<stored_parameter<float>> stored;
  stored.emplace_back("matrix", meap::dims{2, 2}, std::vector<float>{1.0f, -2.0f, 3.0f, 0.5f}, true);
  stored.emplace_back("norm", meap::dims{2}, std::vector<float>{1.0f, -2.0f}, false);
  const auto params = optim_test::parameters(stored);
  meap::adamw<float> opt({.lr = 0.1, .weight_decay = 0.5});
  opt.step(meap::cpu{}, params);
  const float factor = static_cast<float>(1.0 - 0.1 * 0.5);
  BOOST_TEST(stored[0].value[0] == 1.0f * factor);
  BOOST_TEST(stored[0].value[1] == -2.0f * factor);
  BOOST_TEST(stored[0].value[2] == 3.0f * factor);
  BOOST_TEST(stored[1].value[0] == 1.0f);
  BOOST_TEST(stored[1].value[1] == -2.0f);

  std::vector<stored_parameter<float>> again;
  again.emplace_back("matrix", meap::dims{2}, std::vector<float>{1.0f, -2.0f}, true);
  const auto again_params = optim_test::parameters(again);
  meap::adamw<float> no_decay({.lr = 0.1, .weight_decay = 0.0});
  no_decay.step(meap::cpu{}, again_params);
  BOOST_TEST(again[0].value[0] == 1.0f);
  BOOST_TEST(again[0].value[1] == -2.0f);
}

BOOST_AUTO_TEST_CASE(learning_rate_argument_overrides_the_config) {
  std::vector<stored_parameter<double>> a_store, b_store;
  a_store.emplace_back("w", meap::dims{3}, std::vector<double>{1, 2, 3});
  b_store.emplace_back("w", meap::dims{3}, std::vector<double>{1, 2, 3});
  a_store[0].grad = b_store[0].grad = {0.5, -0.25, 1.0};
  meap::adamw<double> a({.lr = 0.01}), b({.lr = 1.0});
  a.step(meap::cpu{}, optim_test::parameters(a_store));
  b.step(meap::cpu{}, optim_test::parameters(b_store), 0.01);
  BOOST_TEST(a_store[0].value == b_store[0].value, tt::per_element());
  // ... and the override really is used: lr 1.0 moves the parameter by about 1 on the first step.
  std::vector<stored_parameter<double>> c_store;
  c_store.emplace_back("w", meap::dims{1}, std::vector<double>{0.0});
  c_store[0].grad = {3.0};
  meap::adamw<double>({.lr = 0.01, .weight_decay = 0}).step(meap::cpu{}, optim_test::parameters(c_store), 1.0);
  BOOST_TEST(c_store[0].value[0] == -1.0, tt::tolerance(1e-8));
}

// Each parameter counts its own steps: one that joins later gets the bias correction of its
// first step (an update of exactly lr * g / (|g| + eps) without decay).
BOOST_AUTO_TEST_CASE(state_is_per_parameter) {
  std::vector<stored_parameter<double>> stored;
  stored.emplace_back("early", meap::dims{1}, std::vector<double>{0.0}, false);
  meap::adamw<double> opt({.lr = 0.01, .weight_decay = 0.1});
  BOOST_TEST(opt.state("early") == nullptr);
  stored[0].grad = {1.0};
  opt.step(meap::cpu{}, optim_test::parameters(stored));
  opt.step(meap::cpu{}, optim_test::parameters(stored));
  stored.emplace_back("late", meap::dims{1}, std::vector<double>{0.0}, false);
  stored[1].grad = {-2.0};
  opt.step(meap::cpu{}, optim_test::parameters(stored));
  BOOST_TEST(opt.state("early")->step == 3);
  BOOST_TEST(opt.state("late")->step == 1);
  BOOST_TEST(opt.state_count() == 2u);
  BOOST_TEST(stored[1].value[0] == 0.01 * 2.0 / (2.0 + 1e-8), tt::tolerance(1e-15));
  opt.reset();
  BOOST_TEST(opt.state_count() == 0u);
}

BOOST_AUTO_TEST_CASE(state_views_name_and_describe_the_state) {
  std::vector<stored_parameter<float>> stored;
  stored.emplace_back("model.b", meap::dims{2, 3}, std::vector<float>(6, 1.0f));
  stored.emplace_back("model.a", meap::dims{4}, std::vector<float>(4, 1.0f));
  stored[0].grad.assign(6, 0.5f);
  meap::adamw<float> opt;
  opt.step(meap::cpu{}, optim_test::parameters(stored));
  const auto views = opt.state_views();
  BOOST_TEST_REQUIRE(views.size() == 6u);
  // Sorted by parameter name.
  BOOST_TEST(views[0].name == "optimizer.model.a.exp_avg");
  BOOST_TEST(views[1].name == "optimizer.model.a.exp_avg_sq");
  BOOST_TEST(views[2].name == "optimizer.model.a.step");
  BOOST_TEST(views[3].name == "optimizer.model.b.exp_avg");
  BOOST_TEST((views[3].view.shape == meap::dims{2, 3}));
  BOOST_TEST((views[3].view.type == meap::dtype::f32));
  BOOST_TEST((views[5].view.type == meap::dtype::i64));
  BOOST_TEST(views[5].view.shape.rank() == 0);
  BOOST_TEST(*static_cast<const std::int64_t*>(views[5].view.data) == 1);
  // m = (1 - beta1) g after one step.
  BOOST_TEST(static_cast<const float*>(views[3].view.data)[0] == 0.05f, tt::tolerance(1e-6f));
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
  std::vector<stored_parameter<float>> a_store;
  a_store.emplace_back("w", meap::dims{3, 4}, std::vector<float>(12, 0.3f), true);
  a_store.emplace_back("n", meap::dims{4}, std::vector<float>(4, 1.0f), false);
  const auto a_params = optim_test::parameters(a_store);
  const meap::adamw_config config{.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
  meap::adamw<float> a(config);
  const auto set_grads = [](std::vector<stored_parameter<float>>& s, std::uint64_t t) {
    for (std::size_t k = 0; k < s.size(); ++k) fill_gradient(s[k].grad, 100 + k, t, 1.0);
  };
  for (std::uint64_t t = 0; t < 3; ++t) {
    set_grads(a_store, t);
    a.step(meap::cpu{}, a_params);
  }
  const stored_state checkpoint(a.state_views());
  auto b_store = a_store;
  auto fresh_store = a_store;
  const auto b_params = optim_test::parameters(b_store);
  const auto fresh_params = optim_test::parameters(fresh_store);
  meap::adamw<float> b(config), fresh(config);
  b.load_state(b_params, checkpoint);
  for (std::uint64_t t = 3; t < 6; ++t) {
    set_grads(a_store, t);
    set_grads(b_store, t);
    set_grads(fresh_store, t);
    a.step(meap::cpu{}, a_params);
    b.step(meap::cpu{}, b_params);
    fresh.step(meap::cpu{}, fresh_params);
  }
  for (std::size_t k = 0; k < a_store.size(); ++k) {
    BOOST_TEST(std::memcmp(a_store[k].value.data(), b_store[k].value.data(), a_store[k].value.size() * sizeof(float)) == 0);
    const auto* sa = a.state(a_store[k].name);
    const auto* sb = b.state(a_store[k].name);
    BOOST_TEST(sa->step == 6);
    BOOST_TEST(sb->step == 6);
    BOOST_TEST(std::memcmp(sa->exp_avg.data(), sb->exp_avg.data(), sa->exp_avg.bytes()) == 0);
    BOOST_TEST(std::memcmp(sa->exp_avg_sq.data(), sb->exp_avg_sq.data(), sa->exp_avg_sq.bytes()) == 0);
  }
  // Without the state the same three steps give something else (the comparison can fail).
  BOOST_TEST(std::memcmp(a_store[0].value.data(), fresh_store[0].value.data(), 12 * sizeof(float)) != 0);
}

BOOST_AUTO_TEST_CASE(load_state_rejects_bad_state_and_keeps_the_old_one) {
  std::vector<stored_parameter<double>> stored;
  stored.emplace_back("w", meap::dims{2}, std::vector<double>{1, 2});
  stored[0].grad = {0.5, 0.5};
  const auto params = optim_test::parameters(stored);
  meap::adamw<double> opt;
  opt.step(meap::cpu{}, params);
  const auto good = opt.state_views();

  const auto with = [&](const std::string& name, auto edit) {
    stored_state s(good);
    edit(s.views.at(name), s);
    return s;
  };
  const auto fails = [&](const stored_state& s, const std::string& argument, std::vector<std::string> fragments) {
    BOOST_CHECK_EXCEPTION(opt.load_state(params, s), meap::error, error_says(argument, std::move(fragments)));
    BOOST_TEST(opt.state("w")->step == 1);  // unchanged
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
  // A missing tensor: the lookup's own error comes through.
  BOOST_CHECK_EXCEPTION(opt.load_state(params, with("optimizer.w.step", [](meap::any_view&, stored_state& s) {
                          s.views.erase("optimizer.w.step");
                        })),
                        meap::error, [](const meap::error& e) { return std::string(e.what()) == "no tensor optimizer.w.step"; });
  BOOST_TEST(opt.state("w")->step == 1);
}

BOOST_AUTO_TEST_CASE(config_values_are_validated) {
  const auto rejects = [](meap::adamw_config c, const std::string& field, const std::string& fragment) {
    BOOST_CHECK_EXCEPTION(meap::adamw<float>{c}, meap::error, error_says(field, {"meap::adamw_config", fragment}));
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
  BOOST_CHECK_NO_THROW(meap::adamw<float>({.lr = 0.0, .beta1 = 0.0, .beta2 = 0.0, .eps = 1e-12, .weight_decay = 0.0}));
  BOOST_TEST(meap::adamw_config{}.beta2 == 0.95);
  BOOST_TEST(meap::adamw_config{}.weight_decay == 0.1);
}

BOOST_AUTO_TEST_CASE(step_checks_its_arguments_and_changes_nothing_when_it_throws) {
  std::vector<float> value(6, 1.0f), grad(6, 0.5f), other(4, 1.0f), other_grad(4, 0.5f);
  const auto v = meap::make_view(std::span<float>(value), {2, 3});
  const auto g = meap::make_view(std::span<float>(grad), {2, 3});
  meap::adamw<float> opt;
  using P = meap::named_parameter<float, meap::cpu>;
  BOOST_CHECK_EXCEPTION(opt.step(meap::cpu{}, std::vector<P>{{"w", v, g.reshape({3, 2})}}), meap::error,
                        error_says("params", {"parameter 'w' (params[0])", "grad shape (3, 2)", "(2, 3)"}));
  BOOST_CHECK_EXCEPTION(opt.step(meap::cpu{}, std::vector<P>{{"w", v, g}, {"w", v, g}}), meap::error,
                        error_says("params", {"params[1]", "unique"}));
  BOOST_CHECK_EXCEPTION(opt.step(meap::cpu{}, std::vector<P>{{"", v, g}}), meap::error,
                        error_says("params", {"empty name"}));
  BOOST_CHECK_EXCEPTION(opt.step(meap::cpu{}, std::vector<P>{{"w", v.transpose(0, 1), g.transpose(0, 1)}}), meap::error,
                        error_says("params", {"contiguous"}));
  BOOST_CHECK_EXCEPTION(opt.step(meap::cpu{}, std::vector<P>{{"w", v, g}}, -1.0), meap::error,
                        error_says("lr", {"meap::adamw::step", ">= 0"}));
  BOOST_TEST(value == std::vector<float>(6, 1.0f), tt::per_element());
  BOOST_TEST(opt.state_count() == 0u);

  // A name that changes shape between steps is caught before any parameter moves.
  opt.step(meap::cpu{}, std::vector<P>{{"w", v, g}});
  const std::vector<float> after_one = value;
  const auto o = meap::make_view(std::span<float>(other), {4});
  const auto og = meap::make_view(std::span<float>(other_grad), {4});
  BOOST_CHECK_EXCEPTION(opt.step(meap::cpu{}, std::vector<P>{{"v", v, g}, {"w", o, og}}), meap::error,
                        error_says("params", {"parameter 'w' (params[1]) of shape (4)", "(2, 3)"}));
  BOOST_TEST(value == after_one, tt::per_element());
  BOOST_TEST(opt.state("v") == nullptr);
}

BOOST_AUTO_TEST_SUITE_END()
