// meap/nn/config_json.hpp: a llama_config from meap's own JSON model file, the one meap_pretrain
// --config reads: the fields of llama_config under their own names (vocab, d_model, layers, heads,
// kv_heads, ffn, max_seq, rope_theta, norm_eps, tied_head); a missing field keeps the value of
// `defaults`, an unknown one is refused (a typo must not train the wrong model silently). A Hugging
// Face config.json is read by train::parse_hugging_face_config (train/checkpoint.hpp); both go
// through json_fields, so counts are JSON integers in range and never a float, a string or 1e30.
#pragma once

#include <meap/core/error.hpp>
#include <meap/io/json_fields.hpp>
#include <meap/nn/config.hpp>

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace meap::nn {

// `function`, `argument` and `path` name the caller, its argument and the file in messages
// ("meap_pretrain", "--config", "model.json").
inline llama_config parse_llama_config(std::string_view text, std::string_view function, const std::string& argument,
                                       const std::string& path, llama_config defaults = {}) {
  const std::string source = argument + " " + path;
  const auto j = parse_json(text, function, source);
  const json_fields fields(j, function, source);
  constexpr std::int64_t limit = std::int64_t{1} << 40;  // any larger count is a corrupt file
  llama_config c = defaults;
  c.vocab = fields.integer_or("vocab", c.vocab, 1, limit);
  c.d_model = fields.integer_or("d_model", c.d_model, 1, limit);
  c.layers = fields.integer_or("layers", c.layers, 1, limit);
  c.heads = fields.integer_or("heads", c.heads, 1, limit);
  c.kv_heads = fields.integer_or("kv_heads", c.kv_heads, 1, limit);
  c.ffn = fields.integer_or("ffn", c.ffn, 1, limit);
  c.max_seq = fields.integer_or("max_seq", c.max_seq, 1, limit);
  c.rope_theta = fields.number_or("rope_theta", c.rope_theta);
  c.norm_eps = fields.number_or("norm_eps", c.norm_eps);
  c.tied_head = fields.boolean_or("tied_head", c.tied_head);
  constexpr std::array<std::string_view, 10> known = {"vocab",   "d_model", "layers",     "heads",    "kv_heads",
                                                      "ffn",     "max_seq", "rope_theta", "norm_eps", "tied_head"};
  for (const auto& [key, value] : j.items()) {
    bool found = false;
    for (const auto name : known) found = found || key == name;
    if (!found)
      throw_argument_error(function, argument, path + " with the field '" + key + "'",
                           "the fields vocab, d_model, layers, heads, kv_heads, ffn, max_seq, rope_theta, norm_eps, "
                           "tied_head");
  }
  c.validate();
  return c;
}

}  // namespace meap::nn
