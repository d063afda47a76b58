// meap/nn/config.hpp: the shape of a LLaMA-style decoder, validated at the door.
#pragma once

#include <meap/core/dims.hpp>
#include <meap/core/error.hpp>
#include <meap/kernels/attention.hpp>
#include <meap/kernels/rope_frequency.hpp>

#include <cmath>
#include <string>

namespace meap::nn {

struct llama_config {
  index_t vocab = 4096;
  index_t d_model = 256;
  index_t layers = 4;
  index_t heads = 8;      // query heads
  index_t kv_heads = 8;   // key/value heads; heads % kv_heads == 0 (GQA when smaller)
  index_t ffn = 688;      // SwiGLU hidden size
  index_t max_seq = 256;  // longest sequence forward accepts
  double rope_theta = 10000.0;
  meap::rope_scaling rope_scaling{};  // Llama 3.1's frequency scaling (off: factor 0)
  double norm_eps = 1e-5;
  bool tied_head = false;  // LM head shares the embedding matrix

  // d_model / heads (0 for a config whose head count is not positive, which validate() refuses).
  index_t head_dim() const { return heads > 0 ? d_model / heads : 0; }

  // Throws meap::error naming the first invalid field.
  void validate() const {
    constexpr std::string_view function = "meap::nn::llama_config";
    check_argument(vocab >= 2 && vocab <= (index_t{1} << 31) - 1, function, "vocab", vocab,
                   "at least 2 tokens and ids that fit in int32");
    check_argument(d_model >= 2, function, "d_model", d_model, "a model width of at least 2");
    check_argument(layers >= 1, function, "layers", layers, "at least one layer");
    check_argument(heads >= 1 && d_model % heads == 0, function, "heads", heads,
                   "a head count that divides d_model = " + std::to_string(d_model));
    check_argument(kv_heads >= 1 && heads % kv_heads == 0, function, "kv_heads", kv_heads,
                   "a kv head count that divides heads = " + std::to_string(heads));
    check_argument(head_dim() % 2 == 0 && head_dim() <= max_attention_head_dim, function, "heads", heads,
                   "a head dim d_model / heads that is even (RoPE) and at most " +
                       std::to_string(max_attention_head_dim) + ", got " + std::to_string(head_dim()));
    check_argument(ffn >= 1, function, "ffn", ffn, "a positive SwiGLU width");
    // Every size computed from the config (parameter_count(), the flat parameter buffers and
    // their byte counts) must fit in index_t: refuse a shape whose parameter count alone
    // reaches 2^56 (ten thousand times the largest models trained today).
    check_argument(exact_parameter_count() < static_cast<long double>(max_parameters), function, "config",
                   "vocab " + std::to_string(vocab) + ", d_model " + std::to_string(d_model) + ", layers " +
                       std::to_string(layers) + ", ffn " + std::to_string(ffn),
                   "a model of fewer than 2^56 parameters (this shape has about " +
                       meap::detail::value_to_string(static_cast<double>(exact_parameter_count())) + ")");
    check_argument(max_seq >= 1, function, "max_seq", max_seq, "a positive maximum sequence length");
    check_argument(std::isfinite(rope_theta) && rope_theta > 1.0, function, "rope_theta", rope_theta,
                   "a finite RoPE base above 1");
    check_rope_scaling(function, "rope_scaling", rope_scaling);
    check_argument(std::isfinite(norm_eps) && norm_eps > 0.0, function, "norm_eps", norm_eps,
                   "a finite positive RMSNorm epsilon");
  }

  // FLOPs one training step spends per token at sequence length `length`, the usual estimate
  // (PaLM, appendix B; Chinchilla): 6 per weight of every matrix multiply (forward 2, backward 4;
  // the embedding lookup is no multiply, the LM head is) plus causal attention, 6 L d T (half of
  // the 12 L d T of a full T x T attention). What MFU divides by the hardware's peak.
  double training_flops_per_token(index_t length) const {
    const double d = static_cast<double>(d_model), kv = static_cast<double>(kv_heads * head_dim());
    const double per_layer = 2 * d * d + 2 * d * kv + 3 * d * static_cast<double>(ffn);
    const double matmul = static_cast<double>(layers) * per_layer + static_cast<double>(vocab) * d;
    return 6.0 * matmul + 6.0 * static_cast<double>(layers) * d * static_cast<double>(length);
  }

  static constexpr index_t max_parameters = index_t{1} << 56;

  // Trainable parameters (the head counted once when tied). Exact for every config validate()
  // accepts.
  index_t parameter_count() const {
    const index_t kv = kv_heads * head_dim();
    const index_t per_layer = 2 * d_model + 2 * d_model * d_model + 2 * d_model * kv + 3 * d_model * ffn;
    return vocab * d_model * (tied_head ? 1 : 2) + layers * per_layer + d_model;
  }

 private:
  // The same count in long double, which cannot overflow for any index_t fields.
  long double exact_parameter_count() const {
    const long double d = static_cast<long double>(d_model), kv = static_cast<long double>(kv_heads) * static_cast<long double>(head_dim());
    const long double per_layer = 2 * d + 2 * d * d + 2 * d * kv + 3 * d * static_cast<long double>(ffn);
    return static_cast<long double>(vocab) * d * (tied_head ? 1 : 2) + static_cast<long double>(layers) * per_layer + d;
  }
};

}  // namespace meap::nn
