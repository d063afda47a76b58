// meap/nn/parameter_store.hpp: every trainable tensor of a model in three flat buffers.
//
// Modules declare their parameters (name, shape, weight decay, initial value) while they are
// built, and keep only an id; the model then allocates the store once on its device:
//   master   P::master_t   what the optimizer updates and checkpoints store
//   compute  P::compute_t  what forward and backward read (the master buffer itself when the two
//                          types agree; a rounded copy, refreshed by AdamW, when they do not)
//   grad     P::grad_t     where backward accumulates
// Parameters sit in declaration order (a model declares layer by layer, so a layer's gradients
// are one contiguous range: what an all-reduce during backward wants), each at an offset aligned
// to 64 elements (256 bytes of float: every parameter starts where cuBLASLt and vector loads like
// it). The gaps stay zero in every buffer. One flat buffer per role buys one AdamW launch, one
// gradient-norm reduction and one zero fill per step; the entry table keeps the Hugging Face
// names for checkpoints.
//
// A store is neither copyable nor movable: modules point to it. Declare everything, then
// allocate(); views are valid from then on, for the store's lifetime.
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/error.hpp>
#include <meap/core/precision.hpp>
#include <meap/core/tensor.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/elementwise.hpp>
#include <meap/optim/parameter.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <vector>

namespace meap::nn {

// The value a parameter holds after allocate(), before any initialization or checkpoint.
enum class initial_value : std::uint8_t { zeros, ones };

struct parameter_entry {
  std::string name;       // Hugging Face name, e.g. "model.layers.0.self_attn.q_proj.weight"
  dims shape;
  bool decay = true;      // decoupled weight decay applies (matrices, embeddings; not norm gains)
  initial_value initial = initial_value::zeros;
  index_t offset = 0;     // first element in the flat buffers
  index_t numel = 0;
};

// A parameter's three views.
template <class P, class Device>
struct parameter_views {
  tensor_view<typename P::master_t, Device> master;
  tensor_view<const typename P::compute_t, Device> compute;
  tensor_view<typename P::grad_t, Device> grad;
};

template <class P, device Device>
  requires device_precision<P, Device>
class parameter_store {
 public:
  using precision_type = P;
  using master_t = typename P::master_t;
  using compute_t = typename P::compute_t;
  using grad_t = typename P::grad_t;
  static constexpr index_t alignment = 64;  // elements

  parameter_store() = default;
  parameter_store(const parameter_store&) = delete;
  parameter_store& operator=(const parameter_store&) = delete;

  // Declares a parameter before allocate(); returns its id (0, 1, ... in declaration order).
  index_t declare(std::string name, const dims& shape, bool decay, initial_value initial = initial_value::zeros) {
    constexpr std::string_view function = "meap::nn::parameter_store::declare";
    check_argument(!allocated(), function, "name", name, "a declaration before allocate()");
    check_argument(!name.empty(), function, "name", "\"\"", "a non-empty parameter name");
    check_argument(!ids_.contains(name), function, "name", name, "a name not declared before");
    index_t numel = 1;
    for (int i = 0; i < shape.rank(); ++i) {
      check_argument(shape[i] >= 0, function, "shape", to_string(shape), "non-negative extents");
      numel *= shape[i];
    }
    const index_t id = static_cast<index_t>(entries_.size());
    entries_.push_back({name, shape, decay, initial, flat_size_, numel});
    flat_size_ += (numel + alignment - 1) / alignment * alignment;
    ids_.emplace(std::move(name), id);
    return id;
  }

  // Allocates the flat buffers on `device` (its stream, on CUDA: the model's work queue). Master
  // and gradients hold zeros, or ones where declared so; compute holds the master values.
  void allocate(const Device& device) {
    check_argument(!allocated(), "meap::nn::parameter_store::allocate", "this", "an allocated store",
                   "a store allocated once");
    device_ = device;
    master_ = zeros<master_t>(device, dims{flat_size_});
    grad_ = zeros<grad_t>(device, dims{flat_size_});
    for (const auto& e : entries_)
      if (e.initial == initial_value::ones && e.numel > 0)
        fill(device, master_.view().slice(0, e.offset, e.offset + e.numel), master_t(1));
    if constexpr (P::mixed) compute_ = zeros<compute_t>(device, dims{flat_size_});
    allocated_ = true;
    refresh_compute(device);
  }

  bool allocated() const noexcept { return allocated_; }
  const Device& device() const noexcept { return device_; }

  index_t size() const noexcept { return static_cast<index_t>(entries_.size()); }
  const std::vector<parameter_entry>& entries() const noexcept { return entries_; }
  const parameter_entry& entry(index_t id) const { return entries_.at(static_cast<std::size_t>(id)); }
  // Elements in each flat buffer, alignment gaps included.
  index_t flat_size() const noexcept { return flat_size_; }
  // Elements of every parameter, gaps excluded.
  index_t parameter_count() const noexcept {
    index_t total = 0;
    for (const auto& e : entries_) total += e.numel;
    return total;
  }

  std::optional<index_t> find(std::string_view name) const {
    const auto found = ids_.find(std::string(name));
    if (found == ids_.end()) return std::nullopt;
    return found->second;
  }

  tensor_view<master_t, Device> master(index_t id) const { return piece(master_view(), id); }
  tensor_view<const compute_t, Device> compute(index_t id) const { return piece(compute_flat(), id); }
  tensor_view<grad_t, Device> grad(index_t id) const { return piece(grad_view(), id); }
  parameter_views<P, Device> views(index_t id) const { return {master(id), compute(id), grad(id)}; }

  // The whole buffers.
  tensor_view<master_t, Device> master_flat() const { return master_view(); }
  tensor_view<const compute_t, Device> compute_flat() const {
    require_allocated();
    if constexpr (P::mixed) return tensor_view<const compute_t, Device>(compute_.data(), compute_.shape(), compute_.location());
    else return master_view();
  }
  // The rounded compute copy AdamW writes, or a default view when compute is master.
  tensor_view<compute_t, Device> compute_copy() const {
    require_allocated();
    if constexpr (P::mixed) return tensor_view<compute_t, Device>(const_cast<compute_t*>(compute_.data()), compute_.shape(),
                                                                  compute_.location());
    else return {};
  }
  tensor_view<grad_t, Device> grad_flat() const { return grad_view(); }

  // Every parameter with its master values and gradient, in declaration order.
  std::vector<named_parameter<master_t, Device>> parameters() const {
    std::vector<named_parameter<master_t, Device>> list;
    list.reserve(entries_.size());
    for (index_t id = 0; id < size(); ++id) list.push_back({entry(id).name, master(id), grad(id), entry(id).decay});
    return list;
  }

  // grad = 0: one fill of the flat buffer.
  void zero_grad(const Device& device) {
    require_allocated();
    device_traits<Device>::zero(device, grad_.data(), grad_.bytes());
  }

  // compute = round(master), after the master weights changed outside AdamW (initialization, a
  // checkpoint, a user's edit). Nothing to do when compute is master.
  void refresh_compute(const Device& device) {
    require_allocated();
    if constexpr (P::mixed) convert(device, master_.view().as_const(), compute_.view());
  }

 private:
  void require_allocated() const {
    check_argument(allocated_, "meap::nn::parameter_store", "this", "a store before allocate()",
                   "an allocated store (call allocate(device) after declaring every parameter)");
  }
  tensor_view<master_t, Device> master_view() const {
    require_allocated();
    return tensor_view<master_t, Device>(const_cast<master_t*>(master_.data()), master_.shape(), master_.location());
  }
  tensor_view<grad_t, Device> grad_view() const {
    require_allocated();
    return tensor_view<grad_t, Device>(const_cast<grad_t*>(grad_.data()), grad_.shape(), grad_.location());
  }
  template <class T>
  tensor_view<T, Device> piece(const tensor_view<T, Device>& flat, index_t id) const {
    const parameter_entry& e = entry(id);
    return flat.slice(0, e.offset, e.offset + e.numel).reshape(e.shape);
  }

  std::vector<parameter_entry> entries_;
  std::unordered_map<std::string, index_t> ids_;
  index_t flat_size_ = 0;
  bool allocated_ = false;
  Device device_{};
  tensor<master_t, Device> master_;
  tensor<compute_t, Device> compute_;  // empty unless P::mixed
  tensor<grad_t, Device> grad_;
};

}  // namespace meap::nn
