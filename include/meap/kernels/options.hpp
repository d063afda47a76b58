// meap/kernels/options.hpp: the options and results of the front doors that have them
// (attention, cross-entropy), shared by the doors and their per-device backends.
#pragma once

#include <meap/core/deferred_checks.hpp>
#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/dtype.hpp>
#include <meap/core/tensor.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/backend.hpp>
#include <meap/kernels/cuda/plan.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>

namespace meap {

// ---------------------------------------------------------------------------------------------
// Attention (kernels/attention.hpp).

// Head dimensions the kernels accept: 1 ..= max_attention_head_dim.
inline constexpr index_t max_attention_head_dim = 256;

// Which kernels meap::cuda runs (the CPU has one implementation and ignores this).
enum class attention_path : std::uint8_t {
  // Tensor cores (mma.sync) for half / bfloat16 with D % 8 == 0 and 16-byte-aligned views, when
  // the kernels were compiled for sm_80 or newer; the float-FMA kernels otherwise.
  automatic,
  // Tensor cores or a meap::error that says why they cannot run (dtype, head dim, alignment, or
  // a build without sm_80+ code): for callers that must not silently run the slow path.
  tensor_cores,
  // The float-FMA kernels, always.
  fma,
};

template <class Device>
struct attention_options {
  // Multiplies q . k before the softmax; unset means 1 / sqrt(D).
  std::optional<double> scale{};
  // (B, T) document ids; a query attends only to earlier keys with the same id. A default
  // (rank-0) view means one document per batch row.
  tensor_view<const std::int32_t, Device> segment_ids{};
  // meap::cuda: the kernels to run (see attention_path); attention_kernel_path() tells which
  // ones a call would take.
  attention_path path = attention_path::automatic;
};

template <class T, class Device = cpu>
struct attention_result {
  tensor<T, Device> out;                 // (B, T, Hq, D)
  tensor<accumulate_t<T>, Device> lse;   // (B, Hq, T)
};

// ---------------------------------------------------------------------------------------------
// Cross-entropy (kernels/cross_entropy.hpp).

template <class Device = cpu>
struct cross_entropy_options {
  double label_smoothing = 0.0;  // eps in [0, 1)
  double z_loss = 0.0;           // lambda >= 0, weight of L^2 (PaLM's z-loss)
  // The loss is the sum of the selected rows' losses divided by `normalizer`, and the gradients
  // are those of that quotient. 0 (the default) divides by the number of selected rows: the mean.
  // Gradient accumulation passes the selected count of the whole global batch, so that the
  // micro-batches' gradients add up to the gradient of the global mean.
  double normalizer = 0.0;
  // Multiplies the gradients, not the loss: the loss scale of fp16 training (a power of two, so
  // that unscaling is exact).
  double gradient_scale = 1.0;
  // linear_cross_entropy: overwrite d_weight (default) or add to it (a tied head, micro-batches).
  gradient_write d_weight_write = gradient_write::overwrite;
  // The number of selected rows (labels other than -100), when the caller knows it. It is checked
  // (deferred with `checks`). On meap::cuda, knowing it spares linear_cross_entropy the read-back
  // of the count that its tiling needs.
  std::optional<index_t> selected_rows{};
  // (2) doubles on the device: [0] += the loss (sum of row losses / normalizer), [1] += the number
  // of selected rows. With it, meap::cuda does not read the loss back (no wait for the stream when
  // selected_rows is given too; the result's loss is then NaN): the caller reads the sums when it
  // synchronizes anyway, once per training step.
  tensor_view<double, Device> loss_sum{};
  // Where meap::cuda records an invalid label (and a wrong selected_rows) instead of waiting.
  deferred_checks<Device> checks{};
  // meap::cuda: the device memory one block of logits (and their gradient) may take in the fused
  // version; smaller budgets chunk the vocabulary (an online log-sum-exp, and a recomputation of
  // each chunk for the gradient). The CPU ignores it.
  std::size_t logits_budget_bytes = detail::cuda_plan::cross_entropy_default_budget;
};

struct cross_entropy_result {
  double loss = 0.0;     // sum of row losses / normalizer (the mean by default); 0 when no row is selected
  index_t selected = 0;  // rows whose label is not ignore_index
};

}  // namespace meap
