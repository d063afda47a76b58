// meap/interop/torch.hpp: MEAP inside a LibTorch trainer. meap's masking and its fused selective
// cross-entropy on LibTorch tensors, through DLPack (meap/interop/dlpack.hpp), without copies.
//
//   auto batch = meap::interop::mask_batch(meap::masking::fixed_ratio{0.15}, tokens, masking_options);
//   at::Tensor hidden = model->forward(batch.input_ids.to(torch::kLong));     // (B, T, d)
//   at::Tensor loss = meap::interop::linear_cross_entropy(hidden.view({-1, d}), head_weight,
//                                                         batch.labels.view({-1}));
//   loss.backward();                                                           // autograd as usual
//
// linear_cross_entropy is a torch::autograd::Function whose forward runs meap's fused LM head +
// cross-entropy (kernels/cross_entropy.hpp) on the tensors' own memory: it computes the loss and
// both gradients in one pass over the selected rows, block by block, so the (N, V) logits and
// their gradient never exist; backward only scales the saved gradients by the incoming one.
// What it keeps between forward and backward is d_hidden (N, d) and d_weight (V, d): the size of
// the inputs, where autograd over full logits keeps (N, V) twice.
//
// Copies: none for contiguous float/double hidden and weight and int32 labels. A non-contiguous
// input is made contiguous first (torch's .contiguous(), a copy), int64 labels are narrowed to
// int32 (a copy of N ids). CPU tensors only: Debian's LibTorch has no CUDA, so the CUDA branch
// could not be built here (meap/interop/dlpack.hpp itself maps CUDA tensors to meap::cuda).
//
// Needs LibTorch (Debian: libtorch-dev; CMake: find_package(Torch)) and meap::meap.
#pragma once

#include <ATen/DLConvertor.h>
#include <torch/torch.h>

#include <meap/interop/dlpack.hpp>

#include <meap/core/device.hpp>
#include <meap/core/error.hpp>
#include <meap/kernels/cross_entropy.hpp>
#include <meap/masking/apply.hpp>
#include <meap/masking/policy.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace meap::interop {

// A LibTorch tensor as an imported DLPack tensor: the view aliases the tensor's memory and the
// dlpack_tensor keeps the tensor alive.
inline dlpack_tensor from_torch(const at::Tensor& tensor, std::string_view argument = "tensor") {
  return dlpack_tensor(at::toDLPack(tensor), argument);
}

// A meap tensor handed to LibTorch without a copy; LibTorch frees it through the DLPack deleter.
template <class T, device Device>
at::Tensor to_torch(tensor<T, Device>&& owned) {
  return at::fromDLPack(to_dlpack(std::move(owned)));
}

struct torch_cross_entropy_options {
  double label_smoothing = 0.0;  // eps in [0, 1), as kernels/cross_entropy.hpp
  double z_loss = 0.0;           // weight of L^2 (PaLM's z-loss)
};

namespace detail {

inline std::string torch_shape(const at::Tensor& t) {
  std::string text = "(";
  for (std::int64_t i = 0; i < t.dim(); ++i) text += (i ? ", " : "") + std::to_string(t.size(i));
  return text + ")";
}

inline std::string torch_type(const at::Tensor& t) { return std::string(c10::toString(t.scalar_type())); }

// The autograd node of linear_cross_entropy (see the top of this file).
class fused_linear_cross_entropy : public torch::autograd::Function<fused_linear_cross_entropy> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight,
                            const at::Tensor& labels, double label_smoothing, double z_loss) {
    const at::Tensor h = hidden.contiguous(), w = weight.contiguous();
    const at::Tensor ids = labels.scalar_type() == at::kInt ? labels.contiguous() : labels.to(at::kInt).contiguous();
    const bool want_hidden = hidden.requires_grad(), want_weight = weight.requires_grad();
    at::Tensor d_hidden = want_hidden ? at::empty_like(h) : at::Tensor();
    at::Tensor d_weight = want_weight ? at::empty_like(w) : at::Tensor();

    cross_entropy_options<cpu> options;
    options.label_smoothing = label_smoothing;
    options.z_loss = z_loss;
    const auto run = [&]<class T>() {
      const dlpack_tensor h_import = from_torch(h, "hidden"), w_import = from_torch(w, "weight"),
                          l_import = from_torch(ids, "labels");
      tensor_view<T, cpu> dh_view, dw_view;
      dlpack_tensor dh_import, dw_import;
      if (want_hidden) {
        dh_import = from_torch(d_hidden, "d_hidden");
        dh_view = dh_import.view<T, cpu>("d_hidden");
      }
      if (want_weight) {
        dw_import = from_torch(d_weight, "d_weight");
        dw_view = dw_import.view<T, cpu>("d_weight");
      }
      return meap::linear_cross_entropy<T, T>(cpu{}, h_import.view<const T, cpu>("hidden"),
                                              w_import.view<const T, cpu>("weight"),
                                              l_import.view<const std::int32_t, cpu>("labels"), dh_view, dw_view,
                                              options)
          .loss;
    };
    const double loss = h.scalar_type() == at::kDouble ? run.template operator()<double>()
                                                        : run.template operator()<float>();
    ctx->saved_data["d_hidden"] = d_hidden;
    ctx->saved_data["d_weight"] = d_weight;
    return at::scalar_tensor(loss, hidden.options().requires_grad(false));
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const at::Tensor d_hidden = ctx->saved_data["d_hidden"].toTensor();
    const at::Tensor d_weight = ctx->saved_data["d_weight"].toTensor();
    const at::Tensor& scale = grad_outputs.at(0);
    // loss.backward() passes exactly 1: hand the saved gradients over as they are.
    const bool unit = scale.numel() == 1 && scale.item<double>() == 1.0;
    const auto scaled = [&](const at::Tensor& g) { return !g.defined() || unit ? g : g * scale; };
    return {scaled(d_hidden), scaled(d_weight), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace detail

// The mean cross-entropy over the rows whose label is not -100 of logits = hidden weight^T,
// computed by meap's fused kernel without the logits (see the top of this file), with autograd.
//   hidden (N, d) and weight (V, d): float32 or float64, the same dtype, CPU tensors;
//   labels (N): int32 or int64 class ids in [0, V) or -100.
// Arguments are checked here, and again by meap's kernel (an id outside [0, V), say), each as a
// meap::error naming the argument.
inline at::Tensor linear_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
                                       const torch_cross_entropy_options& options = {}) {
  constexpr std::string_view function = "meap::interop::linear_cross_entropy";
  check_argument(hidden.defined() && weight.defined() && labels.defined(), function, "hidden, weight, labels",
                 "an undefined tensor", "three defined tensors");
  check_argument(hidden.dim() == 2, function, "hidden", "shape " + detail::torch_shape(hidden), "a matrix (N, d)");
  check_argument(weight.dim() == 2 && weight.size(1) == hidden.size(1) && weight.size(0) >= 1, function, "weight",
                 "shape " + detail::torch_shape(weight),
                 "(V, d) with V >= 1 and d = " + std::to_string(hidden.size(1)) + ", the columns of hidden");
  check_argument(labels.dim() == 1 && labels.size(0) == hidden.size(0), function, "labels",
                 "shape " + detail::torch_shape(labels), "(N) with N = " + std::to_string(hidden.size(0)));
  check_argument(hidden.scalar_type() == at::kFloat || hidden.scalar_type() == at::kDouble, function, "hidden",
                 "dtype " + detail::torch_type(hidden), "float32 or float64");
  check_argument(weight.scalar_type() == hidden.scalar_type(), function, "weight", "dtype " + detail::torch_type(weight),
                 "the dtype of hidden, " + detail::torch_type(hidden));
  check_argument(labels.scalar_type() == at::kInt || labels.scalar_type() == at::kLong, function, "labels",
                 "dtype " + detail::torch_type(labels), "int32 or int64 class ids");
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"hidden", &hidden}, {"weight", &weight},
                                {"labels", &labels}})
    check_argument(t->device().is_cpu(), function, name, "a tensor on " + t->device().str(),
                   "a CPU tensor (the CUDA branch needs a LibTorch built with CUDA; see meap/interop/torch.hpp)");
  return detail::fused_linear_cross_entropy::apply(hidden, weight, labels, options.label_smoothing, options.z_loss);
}

// A MEAP batch as LibTorch tensors: input_ids (B, T) int32, labels (B, T) int32 (-100 where no
// target), mask (B, T) uint8 (1 where [MASK] was written); from tokens (B, T + 1) int32 or int64
// on the CPU, masked by `policy` exactly as masking::apply does (same Philox keys, so the same
// masks as meap's own trainer for the same seed, step and rows).
struct torch_masked_batch {
  at::Tensor input_ids, labels, mask;
};

template <masking::pretraining_policy Policy>
torch_masked_batch mask_batch(const Policy& policy, const at::Tensor& tokens, const masking::pretraining_options& options) {
  constexpr std::string_view function = "meap::interop::mask_batch";
  check_argument(tokens.defined() && tokens.dim() == 2 && tokens.size(1) >= 2, function, "tokens",
                 tokens.defined() ? "shape " + detail::torch_shape(tokens) : std::string("an undefined tensor"),
                 "(B, T + 1) token ids with T >= 1");
  check_argument(tokens.scalar_type() == at::kInt || tokens.scalar_type() == at::kLong, function, "tokens",
                 "dtype " + detail::torch_type(tokens), "int32 or int64 token ids");
  check_argument(tokens.device().is_cpu(), function, "tokens", "a tensor on " + tokens.device().str(), "a CPU tensor");
  const at::Tensor ids = tokens.scalar_type() == at::kInt ? tokens : tokens.to(at::kInt);
  const auto B = ids.size(0), T = ids.size(1) - 1;
  const auto int_options = at::TensorOptions().dtype(at::kInt);
  torch_masked_batch out{at::empty({B, T}, int_options), at::empty({B, T}, int_options),
                         at::empty({B, T}, at::TensorOptions().dtype(at::kByte))};
  const auto source = from_torch(ids, "tokens");
  const auto input_ids = from_torch(out.input_ids, "input_ids"), labels = from_torch(out.labels, "labels"),
             mask = from_torch(out.mask, "mask");
  masking::apply(cpu{}, policy, source.view<const std::int32_t, cpu>("tokens"), options,
                 masking::masked_batch_view<cpu>{input_ids.view<std::int32_t, cpu>("input_ids"),
                                                 labels.view<std::int32_t, cpu>("labels"),
                                                 mask.view<std::uint8_t, cpu>("mask")});
  return out;
}

}  // namespace meap::interop
