// meap/optim/cuda/adamw.hpp: AdamW on CUDA, the twin of <meap/optim/adamw.hpp> (PyTorch's
// torch.optim.AdamW: decoupled weight decay, bias correction, the same adamw_config).
//
// Master weights, gradients and both moments are float on the device. Each element's update is
// the CPU's, operation for operation in PyTorch's order (decay multiply, two-branch lerp, v,
// sqrt(v) / sqrt(1 - beta2^t) + eps, the step), written with the round-to-nearest intrinsics
// (__fmul_rn, __fadd_rn, __fdiv_rn, __fsqrt_rn) so that nvcc cannot fuse a multiply and an add
// into an FMA: the update does not depend on the compiler's contraction choices. The scalars are
// computed in double on the host and rounded to float once, as on the CPU. Optionally the step
// also writes a bfloat16 (or half) copy of each updated parameter, the weights the forward and
// backward of the next step compute with, saving a separate conversion pass over the weights.
//
//   meap::cuda_adamw opt({.lr = 3e-4, .weight_decay = 0.1});
//   opt.step(device, params, schedule(step));                  // params: named_parameter<float, cuda>
//   opt.step(device, params, schedule(step), bf16_weights);    // + bf16_weights[i] = bfloat16(params[i].value)
//
// State (exp_avg, exp_avg_sq: device tensors; step: host count) is kept per parameter name and
// created (zeros, step 0) on a parameter's first step, allocated stream-ordered on the stream of
// that step: that stream must outlive the optimizer (or its reset()). Part of <meap/cuda.hpp>.
#pragma once
#if !defined(__CUDACC__)
#error "meap/optim/cuda/*.hpp (and <meap/cuda.hpp>) must be compiled by nvcc: put this code in a .cu file"
#endif

#include <meap/core/cuda/runtime.hpp>
#include <meap/core/cuda/tensor.hpp>
#include <meap/core/device.hpp>
#include <meap/core/error.hpp>
#include <meap/core/tensor.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/cuda/plan.hpp>
#include <meap/kernels/cuda/support.hpp>
#include <meap/optim/adamw.hpp>
#include <meap/optim/cuda/parameter.hpp>
#include <meap/optim/parameter.hpp>

#include <cuda_runtime.h>

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

// The 16-bit types cuda_adamw can write a compute copy of the updated weights in.
template <class C>
concept adamw_copy_type = std::is_same_v<C, half> || std::is_same_v<C, bfloat16>;

struct cuda_adamw_state {
  tensor<float, cuda> exp_avg;     // m, the parameter's shape
  tensor<float, cuda> exp_avg_sq;  // v, the parameter's shape
  std::int64_t step = 0;           // updates applied so far
};

namespace detail::cuda_impl {

// PyTorch's lerp (aten/src/ATen/native/Lerp.h), rounding after every operation.
__device__ __forceinline__ float pytorch_lerp(float self, float end, float weight) {
  return fabsf(weight) < 0.5f ? __fadd_rn(self, __fmul_rn(weight, __fsub_rn(end, self)))
                              : __fsub_rn(end, __fmul_rn(__fsub_rn(end, self), __fsub_rn(1.0f, weight)));
}

// p, g, m, v: (n) float; copy: (n) or null. One element per step of a grid-stride loop; the
// update of an element reads that element only.
template <class C>
__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, index_t n, adamw_scalars<float> s,
                             bool decay, C* copy) {
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<index_t>(gridDim.x) * blockDim.x) {
    float param = p[i];
    if (decay) param = __fmul_rn(param, s.decay_factor);
    const float grad = g[i];
    const float exp_avg = pytorch_lerp(m[i], grad, s.beta1_weight);
    float exp_avg_sq = __fmul_rn(v[i], s.beta2);
    exp_avg_sq = __fadd_rn(exp_avg_sq, __fmul_rn(__fmul_rn(s.one_minus_beta2, grad), grad));
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(exp_avg_sq), s.bias_correction2_sqrt), s.eps);
    param = __fadd_rn(param, __fdiv_rn(__fmul_rn(s.neg_step_size, exp_avg), denom));
    p[i] = param;
    m[i] = exp_avg;
    v[i] = exp_avg_sq;
    if (copy != nullptr) copy[i] = from_float<C>(param);
  }
}

}  // namespace detail::cuda_impl

// AdamW over float device parameters. State is keyed by parameter name; see the top of this file.
class cuda_adamw {
 public:
  using value_type = float;

  // The names of the exported state tensors, as adamw<float> names them.
  static std::string exp_avg_name(std::string_view parameter) { return adamw<float>::exp_avg_name(parameter); }
  static std::string exp_avg_sq_name(std::string_view parameter) { return adamw<float>::exp_avg_sq_name(parameter); }
  static std::string step_name(std::string_view parameter) { return adamw<float>::step_name(parameter); }

  explicit cuda_adamw(const adamw_config& config = {}) : config_(config) { config_.validate(); }

  const adamw_config& config() const noexcept { return config_; }

  // One update of every parameter with config().lr.
  void step(const cuda& device, std::span<const named_parameter<float, cuda>> params) {
    step(device, params, config_.lr);
  }

  // One update of every parameter with learning rate `lr`. Gradients are read, not cleared.
  void step(const cuda& device, std::span<const named_parameter<float, cuda>> params, double lr) {
    run<bfloat16>(device, params, lr, {}, false);
  }

  // The same, and then copies[i] = C(params[i].value) for every i whose copy is not a default
  // view: the compute weights of the next step, written by the same kernel.
  template <adamw_copy_type C>
  void step(const cuda& device, std::span<const named_parameter<float, cuda>> params, double lr,
            std::span<const tensor_view<C, cuda>> copies) {
    run<C>(device, params, lr, copies, true);
  }
  template <adamw_copy_type C>
  void step(const cuda& device, std::span<const named_parameter<float, cuda>> params, double lr,
            const std::vector<tensor_view<C, cuda>>& copies) {
    run<C>(device, params, lr, std::span<const tensor_view<C, cuda>>(copies), true);
  }

  // The state of parameter `name`, or nullptr before its first step.
  const cuda_adamw_state* state(std::string_view name) const {
    const auto found = states_.find(name);
    return found == states_.end() ? nullptr : &found->second;
  }

  std::size_t state_count() const noexcept { return states_.size(); }

  // Forget all state (freed stream-ordered on the streams that allocated it).
  void reset() noexcept { states_.clear(); }

  // Views of the whole state, sorted by parameter name, three per parameter: exp_avg and
  // exp_avg_sq alias device memory (copy them to the host, e.g. with meap::to_host, to write a
  // checkpoint); the step is a host int64 scalar. Valid until the next step.
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

  // Replaces the state with the one lookup(name) finds for each of `params` (as adamw<float>::
  // load_state; the tensors may be in host or device memory). Same checks and messages; on any
  // error the current state is kept. Waits for the stream.
  template <class Lookup>
    requires std::is_invocable_r_v<any_view, Lookup&, const std::string&>
  void load_state(const cuda& device, std::span<const named_parameter<float, cuda>> params, Lookup&& lookup) {
    constexpr std::string_view function = "meap::cuda_adamw::load_state";
    detail::cuda_impl::check_parameters<float>(function, params);
    std::map<std::string, cuda_adamw_state, std::less<>> loaded;
    for (const auto& p : params) {
      cuda_adamw_state state;
      state.exp_avg = load_moment(device, function, lookup, exp_avg_name(p.name), p.value.shape(), false);
      state.exp_avg_sq = load_moment(device, function, lookup, exp_avg_sq_name(p.name), p.value.shape(), true);
      const std::string step_tensor = step_name(p.name);
      const any_view step_view = std::invoke(lookup, step_tensor);
      check_memory(function, step_tensor, step_view);
      if (step_view.type != dtype::i64 || step_view.shape.product() != 1)
        throw_argument_error(function, step_tensor,
                             std::string("dtype ") + std::string(to_string(step_view.type)) + " shape " +
                                 to_string(step_view.shape),
                             "one int64 element (the parameter's step count)");
      std::int64_t step = 0;
      if (step_view.where.kind == device_kind::cpu) {
        std::memcpy(&step, step_view.data, sizeof step);
      } else {
        MEAP_CUDA_CHECK(cudaMemcpyAsync(&step, step_view.data, sizeof step, cudaMemcpyDeviceToHost, device.stream));
        synchronize(device);
      }
      check_argument(step >= 0, function, step_tensor, step, "a step count >= 0");
      state.step = step;
      loaded.emplace(p.name, std::move(state));
    }
    states_ = std::move(loaded);
  }
  template <class Lookup>
    requires std::is_invocable_r_v<any_view, Lookup&, const std::string&>
  void load_state(const cuda& device, const std::vector<named_parameter<float, cuda>>& params, Lookup&& lookup) {
    load_state(device, std::span<const named_parameter<float, cuda>>(params), std::forward<Lookup>(lookup));
  }

 private:
  template <class C>
  void run(const cuda& device, std::span<const named_parameter<float, cuda>> params, double lr,
           std::span<const tensor_view<C, cuda>> copies, bool with_copies) {
    constexpr std::string_view function = "meap::cuda_adamw::step";
    check_argument(std::isfinite(lr) && lr >= 0, function, "lr", lr, "a finite learning rate >= 0");
    detail::cuda_impl::check_parameters<float>(function, params);
    if (with_copies)
      check_argument(copies.size() == params.size(), function, "copies", std::to_string(copies.size()) + " views",
                     "one view per parameter (" + std::to_string(params.size()) + "), a default view to skip one");
    // Check every state and copy before touching any parameter, so a rejected call changes nothing.
    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto found = states_.find(params[i].name);
      if (found != states_.end() && found->second.exp_avg.shape() != params[i].value.shape())
        throw_argument_error(function, "params",
                             detail::describe_parameter(params[i].name, i) + " of shape " +
                                 to_string(params[i].value.shape()),
                             "the shape its optimizer state has, " + to_string(found->second.exp_avg.shape()) +
                                 " (a parameter name must keep its shape)");
      if (with_copies && !(copies[i].rank() == 0 && copies[i].data() == nullptr)) {
        const std::string name = "copies[" + std::to_string(i) + "]";
        check_shape(function, name, copies[i], params[i].value.shape());
        check_contiguous(function, name, copies[i]);
        check_same_device(function, "params", params[i].value, name, copies[i]);
      }
    }
    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto& p = params[i];
      auto found = states_.find(p.name);
      if (found == states_.end()) {
        cuda_adamw_state fresh{zeros<float>(device, p.value.shape()), zeros<float>(device, p.value.shape()), 0};
        found = states_.emplace(p.name, std::move(fresh)).first;
      }
      cuda_adamw_state& state = found->second;
      state.step += 1;
      const auto t = static_cast<double>(state.step);
      const double bias_correction1 = 1.0 - std::pow(config_.beta1, t);
      const double bias_correction2 = 1.0 - std::pow(config_.beta2, t);
      const detail::adamw_scalars<float> scalars{
          static_cast<float>(1.0 - lr * config_.weight_decay),
          static_cast<float>(1.0 - config_.beta1),
          static_cast<float>(config_.beta2),
          static_cast<float>(1.0 - config_.beta2),
          static_cast<float>(std::sqrt(bias_correction2)),
          static_cast<float>(config_.eps),
          static_cast<float>(-(lr / bias_correction1)),
      };
      const bool decay = p.decay && config_.weight_decay != 0;
      const index_t n = p.value.numel();
      if (n == 0) continue;
      C* copy = with_copies ? copies[i].data() : nullptr;
      constexpr int threads = 256;
      detail::cuda_impl::adamw_kernel<C><<<detail::cuda_plan::grid_size(n, threads), threads, 0, device.stream>>>(
          p.value.data(), p.grad.data(), state.exp_avg.data(), state.exp_avg_sq.data(), n, scalars, decay, copy);
      detail::cuda_impl::check_launch();
    }
  }

  static void check_memory(std::string_view function, const std::string& name, const any_view& view) {
    if (view.data == nullptr && view.shape.product() != 0)
      throw_argument_error(function, name, "a null pointer", "a view of allocated memory");
  }

  // A device copy of a stored moment after the CPU's checks (dtype float32 without conversion,
  // the parameter's shape, finite values, >= 0 for the second moment).
  template <class Lookup>
  static tensor<float, cuda> load_moment(const cuda& device, std::string_view function, Lookup& lookup,
                                         const std::string& name, const dims& shape, bool second_moment) {
    const any_view found = std::invoke(lookup, name);
    check_memory(function, name, found);
    if (found.type != dtype::f32)
      throw_argument_error(
          function, name, std::string("dtype ") + std::string(to_string(found.type)),
          "dtype float32 (optimizer state is restored without conversion, for a bit-identical resume)");
    if (found.shape != shape)
      throw_argument_error(function, name, "shape " + to_string(found.shape),
                           "shape " + to_string(shape) + ", the parameter's shape");
    tensor<float, cpu> host(cpu{}, shape);
    if (found.where.kind == device_kind::cpu) {
      copy(cpu{}, view_cast<const float, cpu>(found, name), host.view());
    } else {
      copy(device, view_cast<const float, cuda>(found, name), host.view());
      synchronize(device);
    }
    const float* data = host.data();
    for (index_t i = 0, n = host.numel(); i < n; ++i) {
      const bool ok = std::isfinite(data[i]) && (!second_moment || data[i] >= 0.0f);
      if (!ok)
        throw_argument_error(function, name, "element " + std::to_string(i) + " = " + std::to_string(data[i]),
                             second_moment ? "finite values >= 0 (a running mean of squared gradients)"
                                           : "finite values (a running mean of gradients)");
    }
    return to_device(device, host.view().as_const());  // a pageable source is staged before this returns
  }

  adamw_config config_;
  std::map<std::string, cuda_adamw_state, std::less<>> states_;
};

}  // namespace meap
