// Fuzz target: meap::train::parse_hugging_face_config (the config.json reader). On success it
// computes the figures derived from the shape and checks the round trip: the config.json that
// hugging_face_config() writes for the parsed shape must parse back to the same shape.
#include <meap/core/dtype.hpp>
#include <meap/train/checkpoint.hpp>

#include "fuzz_support.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

namespace {

using meap_fuzz::check;
using meap_fuzz::expect_meap_error;

bool same_shape(const meap::nn::llama_config& a, const meap::nn::llama_config& b) {
  return a.vocab == b.vocab && a.d_model == b.d_model && a.layers == b.layers && a.heads == b.heads &&
         a.kv_heads == b.kv_heads && a.ffn == b.ffn && a.max_seq == b.max_seq && a.rope_theta == b.rope_theta &&
         a.norm_eps == b.norm_eps && a.tied_head == b.tied_head && a.rope_scaling == b.rope_scaling;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::optional<meap::nn::llama_config> parsed;
  expect_meap_error([&] { parsed.emplace(meap::train::parse_hugging_face_config(text, "fuzz config.json")); });
  if (!parsed) return 0;
  const meap::nn::llama_config& config = *parsed;

  config.validate();  // what the reader returns is valid: this must not throw
  check(config.head_dim() >= 1 && config.head_dim() * config.heads == config.d_model, "head_dim() * heads = d_model");
  check(config.parameter_count() > 0, "parameter_count() is positive");
  const double flops = config.training_flops_per_token(16);
  check(std::isfinite(flops) && flops > 0, "training_flops_per_token(16) is finite and positive");

  for (const meap::dtype stored : {meap::dtype::f32, meap::dtype::bf16}) {
    const std::string written = meap::train::hugging_face_config(config, stored).dump();
    std::optional<meap::nn::llama_config> again;
    try {
      again.emplace(meap::train::parse_hugging_face_config(written, "round trip"));
    } catch (const meap::error& e) {
      std::fprintf(stderr, "meap fuzz: %s\n", e.what());
      meap_fuzz::invariant_broken("the config.json written for a parsed config does not parse");
    }
    check(same_shape(config, *again), "the config.json round trip keeps the shape");
  }
  return 0;
}
