// meap/train/checkpoint.hpp: model checkpoints that Hugging Face transformers reads, and training
// checkpoints that resume bit for bit.
//
// A model checkpoint is a directory in Hugging Face layout:
//   config.json         LlamaConfig fields (architectures, hidden_size, num_key_value_heads, ...)
//   model.safetensors   the parameters under LlamaForCausalLM names, [out, in] layouts, in
//                       float32, float64, bfloat16 or float16 (lm_head omitted when tied)
// so `LlamaForCausalLM.from_pretrained(dir)` loads it, and a model saved by transformers (as
// safetensors) loads here. A training checkpoint adds
//   trainer.safetensors the optimizer state (optimizer.<param>.exp_avg / exp_avg_sq / step) and
//                       metadata: the step to run next, the seed, and the model checkpoint's step
// Every file is written atomically (temporary file + rename). The model and trainer files record
// the same step; a directory whose two files disagree (a crash between the two writes) is
// rejected on load rather than resumed from a mix of two steps.
#pragma once

#include <meap/io/atomic_file.hpp>
#include <meap/io/safetensors.hpp>
#include <meap/nn/llama.hpp>
#include <meap/optim/adamw.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace meap::train {

// The config.json transformers expects for a LlamaForCausalLM of this shape.
inline nlohmann::json hugging_face_config(const nn::llama_config& c, dtype stored) {
  const char* torch_dtype = stored == dtype::bf16 ? "bfloat16" : stored == dtype::f16 ? "float16"
                            : stored == dtype::f64 ? "float64" : "float32";
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"vocab_size", c.vocab},
          {"hidden_size", c.d_model},
          {"num_hidden_layers", c.layers},
          {"num_attention_heads", c.heads},
          {"num_key_value_heads", c.kv_heads},
          {"head_dim", c.head_dim()},
          {"intermediate_size", c.ffn},
          {"max_position_embeddings", c.max_seq},
          {"rope_theta", c.rope_theta},
          {"rms_norm_eps", c.norm_eps},
          {"tie_word_embeddings", c.tied_head},
          {"hidden_act", "silu"},
          {"attention_bias", false},
          {"mlp_bias", false},
          {"torch_dtype", torch_dtype}};
}

// The model shape a config.json describes (the inverse of hugging_face_config). Throws
// meap::error naming the file and the missing or invalid field.
inline nn::llama_config read_hugging_face_config(const std::filesystem::path& path) {
  constexpr std::string_view function = "meap::train::read_hugging_face_config";
  std::ifstream in(path);
  if (!in) throw_argument_error(function, "path", path.string(), "a readable config.json");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw_argument_error(function, "path", path.string(), std::string("valid JSON (") + e.what() + ")");
  }
  const auto field = [&](const char* name) -> const nlohmann::json& {
    if (!j.is_object() || !j.contains(name))
      throw_argument_error(function, "path", path.string(), std::string("a config.json with the field '") + name + "'");
    return j.at(name);
  };
  nn::llama_config c;
  try {
    c.vocab = field("vocab_size").get<index_t>();
    c.d_model = field("hidden_size").get<index_t>();
    c.layers = field("num_hidden_layers").get<index_t>();
    c.heads = field("num_attention_heads").get<index_t>();
    c.kv_heads = j.contains("num_key_value_heads") ? j.at("num_key_value_heads").get<index_t>() : c.heads;
    c.ffn = field("intermediate_size").get<index_t>();
    c.max_seq = field("max_position_embeddings").get<index_t>();
    c.rope_theta = j.value("rope_theta", 10000.0);
    c.norm_eps = j.value("rms_norm_eps", 1e-6);
    c.tied_head = j.value("tie_word_embeddings", false);
  } catch (const nlohmann::json::exception& e) {
    throw_argument_error(function, "path", path.string(), std::string("numeric LlamaConfig fields (") + e.what() + ")");
  }
  if (j.contains("head_dim") && !j.at("head_dim").is_null() && j.at("head_dim").get<index_t>() != c.head_dim())
    throw_argument_error(function, "path", path.string() + " with head_dim " + j.at("head_dim").dump(),
                         "head_dim = hidden_size / num_attention_heads = " + std::to_string(c.head_dim()));
  c.validate();
  return c;
}

namespace detail {

// Adds every parameter to `writer`, converted to `stored` (float32/64, bfloat16, float16).
// `keep_alive` holds the converted copies until the writer has written them.
template <class T>
void add_parameters(safetensors_writer& writer, nn::llama_model<T>& model, dtype stored,
                    std::vector<tensor<std::uint8_t, cpu>>& keep_alive) {
  for (auto& p : model.parameters()) {
    if (stored == dtype_of<T>) {
      writer.add(p.name, p.value.as_const());
      continue;
    }
    dispatch_floating(stored, "dtype", [&]<class S>(type_tag<S>) {
      tensor<std::uint8_t, cpu> bytes(cpu{}, dims{p.value.numel() * static_cast<index_t>(sizeof(S))});
      auto* out = reinterpret_cast<S*>(bytes.data());
      for (index_t i = 0; i < p.value.numel(); ++i) out[i] = S(p.value.data()[i]);  // round to nearest even
      writer.add(p.name, any_view{out, stored, {device_kind::cpu, 0}, p.value.shape(), contiguous_strides(p.value.shape())});
      keep_alive.push_back(std::move(bytes));
    });
  }
}

inline std::string step_text(std::uint64_t step) { return std::to_string(step); }

inline std::uint64_t parse_step(std::string_view function, const std::filesystem::path& file,
                                const std::map<std::string, std::string>& metadata) {
  const auto it = metadata.find("meap.step");
  if (it == metadata.end())
    throw_argument_error(function, "directory", file.string(), "a file whose metadata records 'meap.step'");
  std::uint64_t step = 0;
  std::istringstream in(it->second);
  if (!(in >> step) || !in.eof())
    throw_argument_error(function, "directory", file.string() + " with meap.step = " + it->second,
                         "a decimal step count");
  return step;
}

}  // namespace detail

// Writes config.json and model.safetensors into `directory` (created if missing). `step` is
// recorded in the metadata so a trainer file can be matched to it.
template <host_compute_type T>
void save_model(const std::filesystem::path& directory, nn::llama_model<T>& model, dtype stored = dtype_of<T>,
                std::uint64_t step = 0) {
  constexpr std::string_view function = "meap::train::save_model";
  check_argument(is_floating(stored), function, "stored", std::string(to_string(stored)),
                 "float32, float64, bfloat16 or float16");
  std::error_code ec;
  std::filesystem::create_directories(directory, ec);
  if (ec) throw_argument_error(function, "directory", directory.string(), "a directory that can be created (" + ec.message() + ")");
  safetensors_writer writer;
  std::vector<tensor<std::uint8_t, cpu>> keep_alive;
  detail::add_parameters(writer, model, stored, keep_alive);
  writer.add_metadata("format", "pt");  // transformers checks this key
  writer.add_metadata("meap.step", detail::step_text(step));
  const std::string config = hugging_face_config(model.config(), stored).dump(2) + "\n";
  write_file_atomically(directory / "config.json",
                        std::span<const std::byte>(reinterpret_cast<const std::byte*>(config.data()), config.size()));
  writer.save(directory / "model.safetensors");
}

// Reads model.safetensors from `directory` into `model`: every parameter must be present with the
// model's shape (any floating dtype; converted). Returns the step recorded in the file (0 if none).
template <host_compute_type T>
std::uint64_t load_model(const std::filesystem::path& directory, nn::llama_model<T>& model) {
  const safetensors_file file(directory / "model.safetensors");
  for (auto& p : model.parameters()) file.load_into(p.name, p.value);
  const auto& metadata = file.metadata();
  return metadata.count("meap.step") ? detail::parse_step("meap::train::load_model", directory / "model.safetensors", metadata) : 0;
}

// The model in `directory`, shaped by its config.json.
template <host_compute_type T>
nn::llama_model<T> load_pretrained(const std::filesystem::path& directory) {
  nn::llama_model<T> model(read_hugging_face_config(directory / "config.json"));
  (void)load_model(directory, model);
  return model;
}

// What a training checkpoint restores besides the weights.
struct trainer_state {
  std::uint64_t next_step = 0;
  std::uint64_t seed = 0;
};

// A full training checkpoint: the model in float32/64 (exact), then the optimizer state and
// trainer_state. After load_training_checkpoint, the next step is bit-identical to the one an
// uninterrupted run would take.
template <host_compute_type T>
void save_training_checkpoint(const std::filesystem::path& directory, nn::llama_model<T>& model,
                              const adamw<T>& optimizer, const trainer_state& state) {
  save_model(directory, model, dtype_of<T>, state.next_step);
  safetensors_writer writer;
  for (const auto& v : optimizer.state_views()) writer.add(v.name, v.view);
  writer.add_metadata("format", "meap-trainer");
  writer.add_metadata("meap.step", detail::step_text(state.next_step));
  writer.add_metadata("meap.seed", std::to_string(state.seed));
  writer.save(directory / "trainer.safetensors");
}

template <host_compute_type T>
trainer_state load_training_checkpoint(const std::filesystem::path& directory, nn::llama_model<T>& model,
                                       adamw<T>& optimizer) {
  constexpr std::string_view function = "meap::train::load_training_checkpoint";
  const auto trainer_path = directory / "trainer.safetensors";
  const safetensors_file trainer(trainer_path);
  trainer_state state;
  state.next_step = detail::parse_step(function, trainer_path, trainer.metadata());
  const auto seed = trainer.metadata().find("meap.seed");
  if (seed == trainer.metadata().end())
    throw_argument_error(function, "directory", trainer_path.string(), "a trainer file whose metadata records 'meap.seed'");
  state.seed = std::stoull(seed->second);
  // Check the two files belong together before touching the model.
  const safetensors_file model_file(directory / "model.safetensors");
  const auto model_step = model_file.metadata().count("meap.step")
                              ? detail::parse_step(function, directory / "model.safetensors", model_file.metadata())
                              : ~std::uint64_t{0};
  if (model_step != state.next_step)
    throw_argument_error(function, "directory", directory.string() + " (model step " + std::to_string(model_step) +
                                                    ", trainer step " + std::to_string(state.next_step) + ")",
                         "a checkpoint whose model and trainer files were written at the same step");
  (void)load_model(directory, model);
  const auto params = model.parameters();
  if (state.next_step > 0 && !trainer.entries().empty())
    optimizer.load_state(std::span<const named_parameter<T, cpu>>(params),
                         [&](const std::string& name) { return trainer.view(name); });
  else
    optimizer.reset();
  return state;
}

}  // namespace meap::train
