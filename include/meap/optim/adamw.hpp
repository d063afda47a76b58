// meap/optim/adamw.hpp: AdamW (Loshchilov & Hutter, decoupled weight decay) with the semantics of
// PyTorch's torch.optim.AdamW, on host parameters.
//
// For each parameter p with gradient g, at its own step count t (1 on its first update):
//   p  <- p * (1 - lr * weight_decay)                       (only when the parameter has decay)
//   m  <- lerp(m, g, 1 - beta1)       = beta1 m + (1 - beta1) g
//   v  <- v * beta2 + (1 - beta2) g g
//   p  <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// which is p -= lr * mhat / (sqrt(vhat) + eps) with mhat = m / (1 - beta1^t), vhat = v / (1 - beta2^t).
// The per-element operations run in T, in the order of PyTorch's single-tensor implementation;
// the scalars (bias corrections, step size, decay factor) are computed in double and rounded to T
// once, as PyTorch does with Python floats. See docs/optim.md.
//
//   meap::adamw<float> opt({.lr = 3e-4, .weight_decay = 0.1});
//   opt.step(meap::cpu{}, params, schedule(step));
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/error.hpp>
#include <meap/core/tensor.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/optim/parameter.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace meap {

// Defaults follow the LLaMA pretraining recipe (beta2 = 0.95, weight decay 0.1), not PyTorch's
// (beta2 = 0.999, weight decay 0.01): with beta2 = 0.999 the second moment reacts too slowly to
// the gradient spikes of language-model pretraining.
struct adamw_config {
  double lr = 3e-4;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;

  // Throws meap::error naming the first invalid field.
  void validate() const {
    constexpr std::string_view function = "meap::adamw_config";
    check_argument(std::isfinite(lr) && lr >= 0, function, "lr", lr, "a finite learning rate >= 0");
    check_argument(beta1 >= 0 && beta1 < 1, function, "beta1", beta1, "a value in [0, 1)");
    check_argument(beta2 >= 0 && beta2 < 1, function, "beta2", beta2, "a value in [0, 1)");
    check_argument(std::isfinite(eps) && eps > 0, function, "eps", eps, "a finite value > 0");
    check_argument(std::isfinite(weight_decay) && weight_decay >= 0, function, "weight_decay", weight_decay,
                   "a finite value >= 0");
  }
};

// The state AdamW keeps for one parameter. Created (zeros, step 0) on the parameter's first step.
template <class T>
struct adamw_state {
  tensor<T, cpu> exp_avg;     // m, the parameter's shape
  tensor<T, cpu> exp_avg_sq;  // v, the parameter's shape
  std::int64_t step = 0;      // updates applied so far
};

namespace detail {

// PyTorch's lerp (aten/src/ATen/native/Lerp.h): the branch keeps the result exact at both ends.
template <class T>
inline T pytorch_lerp(T self, T end, T weight) {
  return std::abs(weight) < T(0.5) ? self + weight * (end - self) : end - (end - self) * (T(1) - weight);
}

// The step's scalars, rounded to T once.
template <class T>
struct adamw_scalars {
  T decay_factor;    // 1 - lr * weight_decay
  T beta1_weight;    // 1 - beta1, the lerp weight
  T beta2;
  T one_minus_beta2;
  T bias_correction2_sqrt;
  T eps;
  T neg_step_size;   // -lr / (1 - beta1^t)
};

template <class T>
void adamw_update(T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v, index_t n,
                  const adamw_scalars<T>& s, bool decay) {
  // The OpenMP threshold keeps small tensors (norm gains) off the thread pool.
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (n >= 32768)
#endif
  for (index_t i = 0; i < n; ++i) {
    T param = p[i];
    if (decay) param = param * s.decay_factor;
    const T grad = g[i];
    const T exp_avg = pytorch_lerp(m[i], grad, s.beta1_weight);
    T exp_avg_sq = v[i] * s.beta2;
    exp_avg_sq = exp_avg_sq + s.one_minus_beta2 * grad * grad;
    const T denom = std::sqrt(exp_avg_sq) / s.bias_correction2_sqrt + s.eps;
    p[i] = param + s.neg_step_size * exp_avg / denom;
    m[i] = exp_avg;
    v[i] = exp_avg_sq;
  }
}

}  // namespace detail

// AdamW over host parameters of type T (float32 master weights, or double for gradient checks).
// State is keyed by parameter name and created on a parameter's first step, so the same
// optimizer can see a parameter list that grows; each parameter has its own step count.
template <class T>
class adamw {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "meap::adamw: T must be float (master weights) or double (gradient checks)");

 public:
  using value_type = T;

  // Names of the exported state tensors: "optimizer.<parameter>.exp_avg" (T, the parameter's
  // shape), "optimizer.<parameter>.exp_avg_sq" (same) and "optimizer.<parameter>.step" (int64,
  // shape ()).
  static constexpr std::string_view state_prefix = "optimizer.";
  static std::string exp_avg_name(std::string_view parameter) {
    return std::string(state_prefix) + std::string(parameter) + ".exp_avg";
  }
  static std::string exp_avg_sq_name(std::string_view parameter) {
    return std::string(state_prefix) + std::string(parameter) + ".exp_avg_sq";
  }
  static std::string step_name(std::string_view parameter) {
    return std::string(state_prefix) + std::string(parameter) + ".step";
  }

  explicit adamw(const adamw_config& config = {}) : config_(config) { config_.validate(); }

  const adamw_config& config() const noexcept { return config_; }

  // One update of every parameter with config().lr.
  void step(const cpu& device, std::span<const named_parameter<T, cpu>> params) { step(device, params, config_.lr); }

  // One update of every parameter with learning rate `lr` (a schedule's value for this step).
  // Gradients are read, not cleared. Non-finite gradients are not checked here: clip_grad_norm
  // reports them so the caller can skip the step.
  void step(const cpu&, std::span<const named_parameter<T, cpu>> params, double lr) {
    constexpr std::string_view function = "meap::adamw::step";
    check_argument(std::isfinite(lr) && lr >= 0, function, "lr", lr, "a finite learning rate >= 0");
    detail::check_parameters<T>(function, params);
    // Check every existing state before touching any parameter, so a rejected call changes nothing.
    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto found = states_.find(params[i].name);
      if (found != states_.end() && found->second.exp_avg.shape() != params[i].value.shape())
        throw_argument_error(function, "params",
                             detail::describe_parameter(params[i].name, i) + " of shape " +
                                 to_string(params[i].value.shape()),
                             "the shape its optimizer state has, " + to_string(found->second.exp_avg.shape()) +
                                 " (a parameter name must keep its shape)");
    }
    for (const auto& p : params) {
      auto found = states_.find(p.name);
      if (found == states_.end()) {
        adamw_state<T> fresh{zeros<T>(cpu{}, p.value.shape()), zeros<T>(cpu{}, p.value.shape()), 0};
        found = states_.emplace(p.name, std::move(fresh)).first;
      }
      adamw_state<T>& state = found->second;
      state.step += 1;
      const auto t = static_cast<double>(state.step);
      const double bias_correction1 = 1.0 - std::pow(config_.beta1, t);
      const double bias_correction2 = 1.0 - std::pow(config_.beta2, t);
      const detail::adamw_scalars<T> scalars{
          static_cast<T>(1.0 - lr * config_.weight_decay),
          static_cast<T>(1.0 - config_.beta1),
          static_cast<T>(config_.beta2),
          static_cast<T>(1.0 - config_.beta2),
          static_cast<T>(std::sqrt(bias_correction2)),
          static_cast<T>(config_.eps),
          static_cast<T>(-(lr / bias_correction1)),
      };
      // PyTorch skips the decay multiply when weight_decay == 0; so do we (it is exact either way).
      const bool decay = p.decay && config_.weight_decay != 0;
      detail::adamw_update<T>(p.value.data(), p.grad.data(), state.exp_avg.data(), state.exp_avg_sq.data(),
                              p.value.numel(), scalars, decay);
    }
  }

  // The state of parameter `name`, or nullptr before its first step.
  const adamw_state<T>* state(std::string_view name) const {
    const auto found = states_.find(name);
    return found == states_.end() ? nullptr : &found->second;
  }

  // Parameters with state.
  std::size_t state_count() const noexcept { return states_.size(); }

  // Forget all state (the next step of each parameter is its first).
  void reset() noexcept { states_.clear(); }

  // Views of the whole state, sorted by parameter name, three per parameter (see the names
  // above). They alias the optimizer's memory: write them out before the next step.
  std::vector<named_view> state_views() const {
    std::vector<named_view> views;
    views.reserve(3 * states_.size());
    for (const auto& [name, state] : states_) {
      views.push_back({exp_avg_name(name), to_any(state.exp_avg.view())});
      views.push_back({exp_avg_sq_name(name), to_any(state.exp_avg_sq.view())});
      views.push_back({step_name(name), to_any(tensor_view<const std::int64_t, cpu>(&state.step, dims{}))});
    }
    return views;
  }

  // Replaces the state with the one `lookup` finds for each of `params`: lookup(name) returns the
  // host any_view stored under that name (or throws when it has none), e.g.
  //   opt.load_state(params, [&](const std::string& name) { return file.view(name); });
  // Every parameter needs all three tensors, with dtype T (int64 for the step) and the
  // parameter's shape; exp_avg must be finite and exp_avg_sq finite and >= 0. Data are copied, so
  // a resume continues bit for bit. On any error the current state is left as it was.
  template <class Lookup>
    requires std::is_invocable_r_v<any_view, Lookup&, const std::string&>
  void load_state(std::span<const named_parameter<T, cpu>> params, Lookup&& lookup) {
    constexpr std::string_view function = "meap::adamw::load_state";
    detail::check_parameters<T>(function, params);
    std::map<std::string, adamw_state<T>, std::less<>> loaded;
    for (const auto& p : params) {
      adamw_state<T> state;
      state.exp_avg = load_moment(function, lookup, exp_avg_name(p.name), p.value.shape(), false);
      state.exp_avg_sq = load_moment(function, lookup, exp_avg_sq_name(p.name), p.value.shape(), true);
      const std::string step_tensor = step_name(p.name);
      const any_view step_view = std::invoke(lookup, step_tensor);
      check_host(function, step_tensor, step_view);
      if (step_view.type != dtype::i64 || step_view.shape.product() != 1)
        throw_argument_error(function, step_tensor,
                             std::string("dtype ") + std::string(to_string(step_view.type)) + " shape " +
                                 to_string(step_view.shape),
                             "one int64 element (the parameter's step count)");
      std::int64_t step = 0;
      std::memcpy(&step, step_view.data, sizeof step);
      check_argument(step >= 0, function, step_tensor, step, "a step count >= 0");
      state.step = step;
      loaded.emplace(p.name, std::move(state));
    }
    states_ = std::move(loaded);
  }

 private:
  static void check_host(std::string_view function, const std::string& name, const any_view& view) {
    if (view.where.kind != device_kind::cpu)
      throw_argument_error(function, name, "memory on " + to_string(view.where), "host memory");
    if (view.data == nullptr && view.shape.product() != 0)
      throw_argument_error(function, name, "a null pointer", "a view of allocated memory");
  }

  template <class Lookup>
  static tensor<T, cpu> load_moment(std::string_view function, Lookup& lookup, const std::string& name,
                                    const dims& shape, bool second_moment) {
    const any_view found = std::invoke(lookup, name);
    check_host(function, name, found);
    if (found.type != dtype_of<T>)
      throw_argument_error(function, name, std::string("dtype ") + std::string(to_string(found.type)),
                           std::string("dtype ") + std::string(to_string(dtype_of<T>)) +
                               " (optimizer state is restored without conversion, for a bit-identical resume)");
    if (found.shape != shape)
      throw_argument_error(function, name, "shape " + to_string(found.shape),
                           "shape " + to_string(shape) + ", the parameter's shape");
    tensor<T, cpu> result(cpu{}, shape);
    copy(cpu{}, view_cast<const T, cpu>(found, name), result.view());
    const T* data = result.data();
    for (index_t i = 0, n = result.numel(); i < n; ++i) {
      const bool ok = std::isfinite(data[i]) && (!second_moment || data[i] >= T(0));
      if (!ok)
        throw_argument_error(function, name, "element " + std::to_string(i) + " = " + std::to_string(data[i]),
                             second_moment ? "finite values >= 0 (a running mean of squared gradients)"
                                           : "finite values (a running mean of gradients)");
    }
    return result;
  }

  adamw_config config_;
  std::map<std::string, adamw_state<T>, std::less<>> states_;
};

}  // namespace meap
