// meap/optim/adamw.hpp: AdamW (Loshchilov & Hutter, decoupled weight decay) with the semantics of
// PyTorch's torch.optim.AdamW, over a model's parameter_store, on every device.
//
// For each parameter p with gradient g, at step t (1 on the first update):
//   p  <- p * (1 - lr * weight_decay)                       (only where the parameter has decay)
//   m  <- lerp(m, g, 1 - beta1)       = beta1 m + (1 - beta1) g
//   v  <- v * beta2 + (1 - beta2) g g
//   p  <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// which is p -= lr * mhat / (sqrt(vhat) + eps) with mhat = m / (1 - beta1^t), vhat = v / (1 - beta2^t).
// The per-element operations run in the master type, in the order of PyTorch's single-tensor
// implementation (CUDA with round-to-nearest intrinsics, so that no multiply-add is fused: the
// same bits as the CPU); the scalars are computed in double and rounded once, as PyTorch does with
// Python floats. See docs/optim.md.
//
// The update runs over the store's flat buffers (nn/parameter_store.hpp) in one pass (one kernel
// launch on CUDA), with a segment table for weight decay, and writes the compute copy of a
// mixed-precision model (bfloat16 / half weights) in the same pass. m and v are flat buffers of
// the master type beside the master weights; all parameters share one step count.
//
//   meap::adamw<meap::bf16_mixed, meap::cuda> optimizer({.lr = 3e-4, .weight_decay = 0.1});
//   optimizer.step(device, model.store(), schedule(step));            // applied now
//   optimizer.step(device, model.store(), lr, status);               // applied on the device if status says so
//   ... read status ...; optimizer.finish_step(applied);
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/error.hpp>
#include <meap/core/precision.hpp>
#include <meap/core/tensor.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/backend.hpp>
#include <meap/nn/parameter_store.hpp>
#include <meap/optim/cpu/adamw.hpp>
#include <meap/optim/parameter.hpp>
#include <meap/optim/status.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <algorithm>
#include <functional>
#include <optional>
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

template <class P, device Device>
  requires device_precision<P, Device>
class adamw {
 public:
  using precision_type = P;
  using master_t = typename P::master_t;
  using compute_t = typename P::compute_t;
  using store_type = nn::parameter_store<P, Device>;

  // Names of the exported state tensors: "optimizer.<parameter>.exp_avg" (master type, the
  // parameter's shape), "optimizer.<parameter>.exp_avg_sq" (same) and "optimizer.<parameter>.step"
  // (int64, shape (); every parameter has the same count).
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
  // Updates applied so far (the t of the last one).
  std::int64_t steps() const noexcept { return steps_; }
  // True between a step() given a status and its finish_step().
  bool pending() const noexcept { return pending_; }

  // One update of every parameter of `store` at learning rate `lr` (a schedule's value for this
  // step), on `device`'s stream. Gradients are read, not cleared.
  //  - Without a status the update is applied as is and steps() advances.
  //  - With a status (clip_factor() filled it on the device) the gradients are multiplied by its
  //    grad_factor and the update happens only where status says `update`, decided on the device;
  //    steps() advances when the caller, having read the status, calls finish_step(true).
  // State (m, v: zeros) is created on the first step, on `device`.
  void step(const Device& device, store_type& store, double lr, const step_status<Device>& status = {}) {
    constexpr std::string_view function = "meap::adamw::step";
    check_argument(std::isfinite(lr) && lr >= 0, function, "lr", lr, "a finite learning rate >= 0");
    check_argument(!pending_, function, "this", "a step waiting for finish_step()",
                   "finish_step(applied) after the previous step() given a status");
    const bool with_status = status.values.rank() != 0;
    if (with_status) detail::check_status(function, status);
    check_store(function, store);
    check_colocated<Device>(function, {at("store", store.master_flat()), at("status.values", status.values)});
    prepare(device, store);
    const auto t = static_cast<double>(steps_ + 1);
    const double bias_correction1 = 1.0 - std::pow(config_.beta1, t);
    const double bias_correction2 = 1.0 - std::pow(config_.beta2, t);
    const detail::adamw_scalars<master_t> scalars{
        static_cast<master_t>(1.0 - lr * config_.weight_decay),
        static_cast<master_t>(1.0 - config_.beta1),
        static_cast<master_t>(config_.beta2),
        static_cast<master_t>(1.0 - config_.beta2),
        static_cast<master_t>(std::sqrt(bias_correction2)),
        static_cast<master_t>(config_.eps),
        static_cast<master_t>(-(lr / bias_correction1)),
    };
    const auto copy = store.compute_copy();
    const auto [begin, end] = range(store);
    // PyTorch skips the decay multiply when weight_decay == 0; so do we (it is exact either way).
    if (end > begin)  // an empty shard (more ranks than alignment units) has nothing to update
      detail::adamw_kernels<Device>::template update<master_t, compute_t>(
        device, segments(), end - begin, store.master_flat().data() + begin, store.grad_flat().data() + begin,
        exp_avg_.data(), exp_avg_sq_.data(), copy.data() != nullptr ? copy.data() + begin : nullptr, scalars,
        config_.weight_decay != 0, with_status ? status.values.data() : nullptr);
    if (with_status) pending_ = true;
    else ++steps_;
  }

  // Creates the state (m, v: zeros) and the segment table for `store` on `device`, which the first
  // step() would do. Copying the table to a GPU waits for the stream; a trainer calls this before
  // its first step so that no step waits.
  void prepare(const Device& device, const store_type& store) {
    constexpr std::string_view function = "meap::adamw::prepare";
    check_store(function, store);
    if (owner_ != &store) {
      check_argument(owner_ == nullptr, function, "store", "another parameter store",
                     "the store this optimizer has state for (one optimizer per model)");
      const auto [begin, end] = range(store);
      exp_avg_ = zeros<master_t>(device, dims{end - begin});
      exp_avg_sq_ = zeros<master_t>(device, dims{end - begin});
      owner_ = &store;
    }
    make_segments(device, store);
  }

  // After a step() given a status: whether the device applied it (status value `update`).
  void finish_step(bool applied) {
    check_argument(pending_, "meap::adamw::finish_step", "this", "no step waiting",
                   "a call after step() given a status");
    pending_ = false;
    if (applied) ++steps_;
  }

  // ZeRO-1 (dist/): keep state for, and update, only elements [begin, end) of the store's flat
  // buffers (a rank's shard; the other ranks update the rest). Before any state exists (a fresh
  // optimizer, or after reset()); load_state() then keeps the shard of a full checkpoint.
  void shard(index_t begin, index_t end) {
    constexpr std::string_view function = "meap::adamw::shard";
    check_argument(owner_ == nullptr, function, "this", "an optimizer with state",
                   "a call before the first step (or after reset())");
    check_argument(begin >= 0 && end >= begin, function, "end", end, "a range [begin, end) with 0 <= begin <= end");
    shard_ = {begin, end};
  }
  bool sharded() const noexcept { return shard_.has_value(); }
  // The elements this optimizer updates: its shard, or all of `store`.
  std::pair<index_t, index_t> range(const store_type& store) const {
    if (!shard_) return {0, store.flat_size()};
    check_argument(shard_->second <= store.flat_size(), "meap::adamw", "store", std::to_string(store.flat_size()) +
                   " elements", "a store holding the shard [" + std::to_string(shard_->first) + ", " +
                   std::to_string(shard_->second) + ")");
    return *shard_;
  }

  // The moments (flat, the store's layout; a sharded optimizer's: its range only), or empty views
  // before the first step.
  tensor_view<const master_t, Device> exp_avg() const { return exp_avg_.view(); }
  tensor_view<const master_t, Device> exp_avg_sq() const { return exp_avg_sq_.view(); }

  // Forget all state (the next step is the first). A shard set with shard() stays.
  void reset() {
    exp_avg_ = {};
    exp_avg_sq_ = {};
    table_ = {};
    segment_count_ = 0;
    owner_ = nullptr;  // a shard (ZeRO-1) stays: it is where this optimizer works, not state
    steps_ = 0;
    pending_ = false;
  }

  // Views of the whole state, three per parameter of `store` in its order (see the names above),
  // none before the first step. exp_avg and exp_avg_sq alias the optimizer's memory on its device
  // (copy them to the host to write a checkpoint); the steps are host int64 scalars.
  std::vector<named_view> state_views(const store_type& store) const {
    std::vector<named_view> views;
    if (owner_ == nullptr) return views;
    check_argument(!shard_, "meap::adamw::state_views", "this", "a sharded optimizer (ZeRO-1)",
                   "an optimizer with the whole state (gather the shards first: pretrainer::save does)");
    check_argument(owner_ == &store, "meap::adamw::state_views", "store", "another parameter store",
                   "the store this optimizer has state for");
    views.reserve(3 * static_cast<std::size_t>(store.size()));
    for (const auto& e : store.entries()) {
      const auto piece = [&](const tensor<master_t, Device>& flat) {
        return to_any(flat.view().slice(0, e.offset, e.offset + e.numel).reshape(e.shape));
      };
      views.push_back({exp_avg_name(e.name), piece(exp_avg_)});
      views.push_back({exp_avg_sq_name(e.name), piece(exp_avg_sq_)});
      views.push_back({step_name(e.name), to_any(tensor_view<const std::int64_t, cpu>(&steps_, dims{}))});
    }
    return views;
  }

  // Replaces the state with the one `lookup` finds for each parameter of `store`: lookup(name)
  // returns the host any_view stored under that name (or throws when it has none), e.g.
  //   optimizer.load_state(device, store, [&](const std::string& name) { return file.view(name); });
  // Every parameter needs all three tensors, with the master dtype (int64 for the step) and the
  // parameter's shape; exp_avg must be finite, exp_avg_sq finite and >= 0, and every step count
  // the same. Data are copied without conversion, so a resume continues bit for bit. On any error
  // the current state is left as it was.
  template <class Lookup>
    requires std::is_invocable_r_v<any_view, Lookup&, const std::string&>
  void load_state(const Device& device, store_type& store, Lookup&& lookup) {
    constexpr std::string_view function = "meap::adamw::load_state";
    check_store(function, store);
    auto m = zeros<master_t>(cpu{}, dims{store.flat_size()});
    auto v = zeros<master_t>(cpu{}, dims{store.flat_size()});
    std::int64_t steps = -1;
    std::string first_name;
    for (const auto& e : store.entries()) {
      load_moment(function, lookup, exp_avg_name(e.name), e, m.data() + e.offset, false);
      load_moment(function, lookup, exp_avg_sq_name(e.name), e, v.data() + e.offset, true);
      const std::string step_tensor = step_name(e.name);
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
      if (steps < 0) {
        steps = step;
        first_name = step_tensor;
      }
      check_argument(step == steps, function, step_tensor, step,
                     "the step count of every other parameter, " + std::to_string(steps) + " ('" + first_name +
                         "'): one optimizer step counts for all parameters");
    }
    const auto [begin, end] = range(store);
    auto device_m = to_device(device, m.view().slice(0, begin, end).as_const());
    auto device_v = to_device(device, v.view().slice(0, begin, end).as_const());
    if constexpr (!std::is_same_v<Device, cpu>) synchronize(device);  // the host copies die here
    check_argument(owner_ == nullptr || owner_ == &store, function, "store", "another parameter store",
                   "the store this optimizer has state for (one optimizer per model)");
    exp_avg_ = std::move(device_m);
    exp_avg_sq_ = std::move(device_v);
    owner_ = &store;
    make_segments(device, store);
    steps_ = steps < 0 ? 0 : steps;
    pending_ = false;
  }

 private:
  static void check_store(std::string_view function, const store_type& store) {
    check_argument(store.allocated(), function, "store", "a store before allocate()", "an allocated parameter store");
  }

  static void check_host(std::string_view function, const std::string& name, const any_view& view) {
    if (view.where.kind != device_kind::cpu)
      throw_argument_error(function, name, "memory on " + to_string(view.where), "host memory");
    if (view.data == nullptr && view.shape.product() != 0)
      throw_argument_error(function, name, "a null pointer", "a view of allocated memory");
  }

  template <class Lookup>
  static void load_moment(std::string_view function, Lookup& lookup, const std::string& name,
                          const nn::parameter_entry& e, master_t* destination, bool second_moment) {
    const any_view found = std::invoke(lookup, name);
    check_host(function, name, found);
    if (found.type != dtype_of<master_t>)
      throw_argument_error(function, name, std::string("dtype ") + std::string(to_string(found.type)),
                           std::string("dtype ") + std::string(to_string(dtype_of<master_t>)) +
                               " (optimizer state is restored without conversion, for a bit-identical resume)");
    if (found.shape != e.shape)
      throw_argument_error(function, name, "shape " + to_string(found.shape),
                           "shape " + to_string(e.shape) + ", the parameter's shape");
    copy(cpu{}, view_cast<const master_t, cpu>(found, name), tensor_view<master_t, cpu>(destination, e.shape));
    for (index_t i = 0; i < e.numel; ++i) {
      const bool ok = std::isfinite(destination[i]) && (!second_moment || destination[i] >= master_t(0));
      if (!ok)
        throw_argument_error(function, name, "element " + std::to_string(i) + " = " + std::to_string(destination[i]),
                             second_moment ? "finite values >= 0 (a running mean of squared gradients)"
                                           : "finite values (a running mean of gradients)");
    }
  }

  // The segment table of the store's layout, on the device (made once: a store's layout is fixed).
  void make_segments(const Device& device, const store_type& store) {
    if (table_.numel() != 0) return;
    // Segment k spans from entry k's offset to the next entry's (alignment gaps included); a
    // shard's table keeps the segments that meet [begin, end), relative to begin.
    const auto& entries = store.entries();
    const auto [begin, end] = range(store);
    std::vector<std::int64_t> starts, decays;
    for (std::size_t k = 0; k < entries.size(); ++k) {
      const index_t first = entries[k].offset;
      const index_t last = k + 1 < entries.size() ? entries[k + 1].offset : store.flat_size();
      if (last <= begin || first >= end) continue;
      starts.push_back(std::max(first, begin) - begin);
      decays.push_back(entries[k].decay ? 1 : 0);
    }
    const auto count = static_cast<index_t>(starts.size());
    auto host = zeros<std::int64_t>(cpu{}, dims{2 * count + 1});
    for (index_t k = 0; k < count; ++k) {
      host.data()[k] = starts[static_cast<std::size_t>(k)];
      host.data()[count + 1 + k] = decays[static_cast<std::size_t>(k)];
    }
    host.data()[count] = end - begin;
    table_ = to_device(device, host.view().as_const());
    if constexpr (!std::is_same_v<Device, cpu>) synchronize(device);  // `host` dies here
    segment_count_ = static_cast<int>(count);
  }
  detail::adamw_segments segments() const { return {table_.data(), segment_count_}; }

  adamw_config config_;
  std::int64_t steps_ = 0;
  bool pending_ = false;
  const store_type* owner_ = nullptr;
  tensor<master_t, Device> exp_avg_;
  tensor<master_t, Device> exp_avg_sq_;
  tensor<std::int64_t, Device> table_;
  int segment_count_ = 0;
  std::optional<std::pair<index_t, index_t>> shard_;
};

}  // namespace meap
