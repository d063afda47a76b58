// meap/train/finetune_metadata.hpp: the token ids a fine-tuning run trains with, and the file that
// tells a user of the fine-tuned model what they were.
//
// choose_token_roles decides the [MASK] id (an id the caller names, else the tokenizer's "[MASK]"
// piece, else a new id: the vocabulary grows by one row, nn::grow_vocabulary), the id of padding
// inputs (named, else the tokenizer's pad, else its EOS, else 0) and the answer ids never masked
// (named ones plus the tokenizer's EOS). write_finetune_metadata stores them with the objective as
// meap_finetune.json beside the model's config.json (atomically); read_finetune_metadata reads it
// back with type and range checks:
//   {"objective": "meap", "mask_id": 32000, "vocab_grown": true, "pad_id": 0,
//    "special_ids": [2], "tokenizer": "spm.model"}
#pragma once

#include <meap/core/error.hpp>
#include <meap/io/atomic_file.hpp>
#pragma push_macro("MEAP_DETAIL_ALLOWED")
#define MEAP_DETAIL_ALLOWED 1
#include <meap/io/detail/posix_file.hpp>
#pragma pop_macro("MEAP_DETAIL_ALLOWED")
#include <meap/io/json_fields.hpp>
#include <meap/nn/config.hpp>
#include <meap/text/tokenizer.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace meap::train {

struct token_roles {
  std::int32_t mask_id = -1;  // -1: no [MASK] (NTP)
  bool grow = false;          // mask_id is a new id: the model's vocabulary grows by one row
  std::int32_t pad_id = 0;
  std::vector<std::int32_t> special_ids;
};

// What the caller asks for (-1: choose); `program` and the option names (--mask-id, --pad-id,
// --special-ids, --tokenizer) name the messages.
struct token_role_request {
  const char* program = "meap::train::choose_token_roles";
  bool needs_mask = true;               // the MEAP objective; NTP needs none
  std::int64_t mask_id = -1;
  std::int64_t pad_id = -1;
  std::vector<std::int64_t> special_ids;
  std::string tokenizer_name;           // for messages
};

inline token_roles choose_token_roles(const token_role_request& r, const nn::llama_config& config,
                                      const text::tokenizer* tokenizer) {
  token_roles roles;
  if (tokenizer != nullptr && tokenizer->vocab_size() > config.vocab)
    throw_argument_error(r.program, "--tokenizer", r.tokenizer_name + " (" + std::to_string(tokenizer->vocab_size()) + " pieces)",
                         "a tokenizer whose ids fit the model's vocabulary of " + std::to_string(config.vocab));
  if (r.needs_mask) {
    if (r.mask_id >= 0) {
      if (r.mask_id >= config.vocab)
        throw_argument_error(r.program, "--mask-id", std::to_string(r.mask_id),
                             "an id below the model's vocabulary of " + std::to_string(config.vocab) +
                                 " (leave it out to add a [MASK] token)");
      roles.mask_id = static_cast<std::int32_t>(r.mask_id);
    } else if (const std::int32_t piece = tokenizer != nullptr ? tokenizer->piece_id("[MASK]") : -1; piece >= 0) {
      roles.mask_id = piece;
    } else {
      roles.mask_id = static_cast<std::int32_t>(config.vocab);  // a new row
      roles.grow = true;
    }
  }
  if (r.pad_id >= 0) {
    roles.pad_id = static_cast<std::int32_t>(r.pad_id);
  } else if (tokenizer != nullptr) {
    roles.pad_id = tokenizer->pad_id() >= 0 ? tokenizer->pad_id() : std::max(tokenizer->eos_id(), 0);
  }
  for (const auto id : r.special_ids) {
    if (id < 0 || id >= config.vocab)
      throw_argument_error(r.program, "--special-ids", std::to_string(id), "ids in [0, " + std::to_string(config.vocab) + ")");
    roles.special_ids.push_back(static_cast<std::int32_t>(id));
  }
  if (tokenizer != nullptr && tokenizer->eos_id() >= 0) roles.special_ids.push_back(tokenizer->eos_id());
  if (roles.mask_id >= 0 && roles.mask_id == roles.pad_id)
    throw_argument_error(r.program, "--pad-id", std::to_string(roles.pad_id),
                         "an id other than the [MASK] id " + std::to_string(roles.mask_id));
  return roles;
}

// The contents of meap_finetune.json.
struct finetune_metadata {
  std::string objective;  // "meap" or "ntp"
  token_roles roles;
  std::string tokenizer;  // the tokenizer file the run used ("" for token-id data)
};

inline constexpr const char* finetune_metadata_file = "meap_finetune.json";

// Writes <model_dir>/meap_finetune.json atomically.
inline void write_finetune_metadata(const std::filesystem::path& model_dir, const finetune_metadata& m) {
  const nlohmann::json j = {{"objective", m.objective},         {"mask_id", m.roles.mask_id},
                            {"vocab_grown", m.roles.grow},      {"pad_id", m.roles.pad_id},
                            {"special_ids", m.roles.special_ids}, {"tokenizer", m.tokenizer}};
  const std::string text = j.dump(2) + "\n";
  write_file_atomically(model_dir / finetune_metadata_file,
                        std::span<const std::byte>(reinterpret_cast<const std::byte*>(text.data()), text.size()));
}

// Reads <model_dir>/meap_finetune.json; a missing, oversized or malformed file, a field of the
// wrong type or an id out of int32 range throws meap::error naming the file and the field.
inline finetune_metadata read_finetune_metadata(const std::filesystem::path& model_dir) {
  constexpr std::string_view function = "meap::train::read_finetune_metadata";
  const auto path = model_dir / finetune_metadata_file;
  const auto j = parse_json(meap::detail::read_small_file(function, path, 1 << 20, finetune_metadata_file), function,
                            path.string());
  const json_fields fields(j, function, path.string());
  constexpr std::int64_t id_limit = (std::int64_t{1} << 31) - 1;
  finetune_metadata m;
  m.objective = fields.string_or("objective", "");
  if (m.objective != "meap" && m.objective != "ntp")
    throw_argument_error(function, "path", path.string() + " with objective \"" + m.objective + "\"", "objective meap or ntp");
  m.roles.mask_id = static_cast<std::int32_t>(fields.integer("mask_id", -1, id_limit));
  m.roles.grow = fields.boolean_or("vocab_grown", false);
  m.roles.pad_id = static_cast<std::int32_t>(fields.integer("pad_id", 0, id_limit));
  m.tokenizer = fields.string_or("tokenizer", "");
  if (j.contains("special_ids")) {
    const auto& ids = j.at("special_ids");
    if (!ids.is_array())
      throw_argument_error(function, "path", path.string() + " with special_ids " + ids.dump(), "an array of token ids");
    for (const auto& id : ids) {
      if (!id.is_number_integer() || id.get<std::int64_t>() < 0 || id.get<std::int64_t>() > id_limit)
        throw_argument_error(function, "path", path.string() + " with special id " + id.dump(),
                             "token ids in [0, 2^31 - 1]");
      m.roles.special_ids.push_back(static_cast<std::int32_t>(id.get<std::int64_t>()));
    }
  }
  return m;
}

}  // namespace meap::train
