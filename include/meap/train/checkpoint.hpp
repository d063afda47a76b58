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
//                       metadata: the step to run next, the seed, the run's settings (meap.run)
// meap's files record the CRC-32 of their tensor bytes (meap.data_crc32), verified on every
// read. Every file is written atomically (temporary file + rename); the model and trainer files
// record the same step, and a directory whose two files disagree is rejected on load rather than
// resumed from a mix of two steps. To commit the files of one checkpoint as a unit, write it
// through a checkpoint_series (train/checkpoint_series.hpp), as pretrainer::save does.
#pragma once

#include <meap/io/atomic_file.hpp>
#include <meap/io/json_fields.hpp>
#include <meap/io/safetensors.hpp>
#include <meap/core/precision.hpp>
#include <meap/core/tensor.hpp>
#include <meap/nn/llama.hpp>
#include <meap/optim/adamw.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

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

// The model shape a config.json's text describes (the inverse of hugging_face_config); `source`
// names it in messages. Integers must be JSON integers in range (never a float, a string or a
// number beyond 64 bits); the shape is validated before anything is derived from it. Throws
// meap::error naming the source and the missing or invalid field.
inline nn::llama_config parse_hugging_face_config(std::string_view text, const std::string& source) {
  constexpr std::string_view function = "meap::train::read_hugging_face_config";
  const nlohmann::json j = parse_json(text, function, source);
  const json_fields fields(j, function, source);
  constexpr std::int64_t count_limit = std::int64_t{1} << 40;  // any larger count is a corrupt file
  nn::llama_config c;
  c.vocab = fields.integer("vocab_size", 1, count_limit);
  c.d_model = fields.integer("hidden_size", 1, count_limit);
  c.layers = fields.integer("num_hidden_layers", 1, count_limit);
  c.heads = fields.integer("num_attention_heads", 1, count_limit);
  c.kv_heads = fields.integer_or("num_key_value_heads", c.heads, 1, count_limit);
  c.ffn = fields.integer("intermediate_size", 1, count_limit);
  c.max_seq = fields.integer("max_position_embeddings", 1, count_limit);
  c.rope_theta = fields.number_or("rope_theta", 10000.0);
  c.norm_eps = fields.number_or("rms_norm_eps", 1e-6);
  c.tied_head = fields.boolean_or("tie_word_embeddings", false);
  c.validate();
  if (fields.contains("head_dim")) {
    const auto head_dim = fields.integer("head_dim", 1, count_limit);
    if (head_dim != c.head_dim())
      throw_argument_error(function, "path", source + " with head_dim " + std::to_string(head_dim),
                           "head_dim = hidden_size / num_attention_heads = " + std::to_string(c.head_dim()));
  }
  return c;
}

// The model shape of a config.json file (see parse_hugging_face_config).
inline nn::llama_config read_hugging_face_config(const std::filesystem::path& path) {
  return parse_hugging_face_config(meap::detail::read_small_file("meap::train::read_hugging_face_config", path, 16 << 20, "config.json"), path.string());
}

namespace detail {

// The host copy a checkpoint is written from: the buffer itself on the CPU, a copy from the
// device (waiting for it) on CUDA.
template <class T, class Device>
tensor<std::remove_const_t<T>, cpu> host_copy(const Device& device, const tensor_view<T, Device>& view) {
  return to_host(device, view);
}

// Adds every parameter of `store` to `writer` from `master` (the store's flat master buffer on the
// host), converted to `stored` (float32/64, bfloat16, float16). `keep_alive` holds the converted
// copies until the writer has written them.
template <class M>
void add_parameters(safetensors_writer& writer, const std::vector<nn::parameter_entry>& entries, const M* master,
                    dtype stored, std::vector<tensor<std::uint8_t, cpu>>& keep_alive) {
  for (const auto& e : entries) {
    const M* values = master + e.offset;
    if (stored == dtype_of<M>) {
      writer.add(e.name, tensor_view<const M, cpu>(values, e.shape));
      continue;
    }
    dispatch_floating(stored, "dtype", [&]<class S>(type_tag<S>) {
      tensor<std::uint8_t, cpu> bytes(cpu{}, dims{e.numel * static_cast<index_t>(sizeof(S))});
      auto* out = reinterpret_cast<S*>(bytes.data());
      for (index_t i = 0; i < e.numel; ++i) out[i] = S(values[i]);  // round to nearest even
      writer.add(e.name, any_view{out, stored, {device_kind::cpu, 0}, e.shape, contiguous_strides(e.shape)});
      keep_alive.push_back(std::move(bytes));
    });
  }
}

inline std::string step_text(std::uint64_t step) { return std::to_string(step); }

inline std::uint64_t parse_count(std::string_view function, const std::filesystem::path& file,
                                 const std::map<std::string, std::string>& metadata, const std::string& key) {
  const auto it = metadata.find(key);
  if (it == metadata.end())
    throw_argument_error(function, "directory", file.string(), "a file whose metadata records '" + key + "'");
  const auto value = parse_decimal_u64(it->second);
  if (!value)
    throw_argument_error(function, "directory", file.string() + " with " + key + " = \"" + it->second + "\"",
                         "a decimal count (digits only, below 2^64)");
  return *value;
}

inline std::uint64_t parse_step(std::string_view function, const std::filesystem::path& file,
                                const std::map<std::string, std::string>& metadata) {
  return parse_count(function, file, metadata, "meap.step");
}

inline double parse_number(std::string_view function, const std::filesystem::path& file,
                           const std::map<std::string, std::string>& metadata, const std::string& key, double fallback) {
  const auto it = metadata.find(key);
  if (it == metadata.end()) return fallback;
  double value = 0;
  std::istringstream in(it->second);
  if (!(in >> value) || !in.eof() || !std::isfinite(value))
    throw_argument_error(function, "directory", file.string() + " with " + key + " = \"" + it->second + "\"",
                         "a finite number");
  return value;
}

}  // namespace detail

// Writes config.json and model.safetensors (the master weights) into `directory` (created if
// missing). `step` is recorded in the metadata so a trainer file can be matched to it. A model on
// CUDA is copied to the host first (waiting for its stream).
template <class P, class Device>
void save_model(const std::filesystem::path& directory, const nn::llama_model<P, Device>& model,
                dtype stored = dtype_of<typename P::master_t>, std::uint64_t step = 0) {
  constexpr std::string_view function = "meap::train::save_model";
  check_argument(is_floating(stored), function, "stored", std::string(to_string(stored)),
                 "float32, float64, bfloat16 or float16");
  std::error_code ec;
  std::filesystem::create_directories(directory, ec);
  if (ec) throw_argument_error(function, "directory", directory.string(), "a directory that can be created (" + ec.message() + ")");
  const auto& store = model.store();
  const auto master = detail::host_copy(store.device(), store.master_flat());
  safetensors_writer writer;
  std::vector<tensor<std::uint8_t, cpu>> keep_alive;
  detail::add_parameters(writer, store.entries(), master.data(), stored, keep_alive);
  writer.add_metadata("format", "pt");  // transformers checks this key
  writer.add_metadata("meap.step", detail::step_text(step));
  writer.add_data_checksum();
  const std::string config = hugging_face_config(model.config(), stored).dump(2) + "\n";
  write_file_atomically(directory / "config.json",
                        std::span<const std::byte>(reinterpret_cast<const std::byte*>(config.data()), config.size()));
  writer.save(directory / "model.safetensors");
}

namespace detail {

// load_model from an opened file.
template <class P, class Device>
std::uint64_t load_model_from(const safetensors_file& file, nn::llama_model<P, Device>& model) {
  using M = typename P::master_t;
  auto& store = model.store();
  auto host = zeros<M>(cpu{}, dims{store.flat_size()});
  for (const auto& e : store.entries()) file.load_into(e.name, tensor_view<M, cpu>(host.data() + e.offset, e.shape));
  const Device& device = store.device();
  copy(device, host.view().as_const(), store.master_flat());
  store.refresh_compute(device);
  synchronize(device);  // `host` dies here
  const auto& metadata = file.metadata();
  return metadata.count("meap.step") ? parse_step("meap::train::load_model", file.path(), metadata) : 0;
}

}  // namespace detail

// Reads model.safetensors from `directory` into `model`'s master weights (and refreshes its
// compute copy): every parameter must be present with the model's shape (any floating dtype;
// converted). Returns the step recorded in the file (0 if none). Loads on any device, whatever
// device wrote the file.
template <class P, class Device>
std::uint64_t load_model(const std::filesystem::path& directory, nn::llama_model<P, Device>& model) {
  return detail::load_model_from(safetensors_file(directory / "model.safetensors"), model);
}

// The model in `directory`, shaped by its config.json, on `device`.
template <class P = fp32, class Device = cpu>
nn::llama_model<P, Device> load_pretrained(const std::filesystem::path& directory, const Device& device = {}) {
  nn::llama_model<P, Device> model(read_hugging_face_config(directory / "config.json"), device);
  (void)load_model(directory, model);
  return model;
}

// What a training checkpoint restores besides the weights.
struct trainer_state {
  std::uint64_t next_step = 0;
  std::uint64_t seed = 0;
  double loss_scale = 0.0;  // fp16 training's dynamic loss scale; 0: none recorded
  // The settings that decide the run's trajectory (a JSON object of name -> value; see
  // pretrainer::run_settings), recorded so that a resume can compare them. Empty: none recorded.
  std::string run_settings;
  // Filled by load_training_checkpoint: how the checkpoint's config.json differs from the model
  // it was loaded into in fields that do not change the tensors' shapes (rope_theta, norm_eps,
  // max_seq), one "name: checkpoint X, now Y" line each.
  std::vector<std::string> changes;
};

namespace detail {

// "name: checkpoint X, now Y" for each field of a shape-compatible config that differs; throws
// meap::error when a field that shapes the tensors differs.
inline std::vector<std::string> compare_configs(std::string_view function, const std::filesystem::path& file,
                                                const nn::llama_config& stored, const nn::llama_config& now) {
  const auto shape = [&](const char* name, index_t a, index_t b) {
    if (a != b)
      throw_argument_error(function, "directory", file.string() + " with " + name + " = " + std::to_string(a),
                           std::string("a checkpoint of the model being resumed (") + name + " = " + std::to_string(b) + ")");
  };
  shape("vocab_size", stored.vocab, now.vocab);
  shape("hidden_size", stored.d_model, now.d_model);
  shape("num_hidden_layers", stored.layers, now.layers);
  shape("num_attention_heads", stored.heads, now.heads);
  shape("num_key_value_heads", stored.kv_heads, now.kv_heads);
  shape("intermediate_size", stored.ffn, now.ffn);
  shape("tie_word_embeddings", stored.tied_head, now.tied_head);
  std::vector<std::string> changes;
  const auto compare = [&](const char* name, double a, double b) {
    if (a != b)
      changes.push_back(std::string(name) + ": checkpoint " + nlohmann::json(a).dump() + ", now " + nlohmann::json(b).dump());
  };
  compare("rope_theta", stored.rope_theta, now.rope_theta);
  compare("rms_norm_eps", stored.norm_eps, now.norm_eps);
  compare("max_position_embeddings", static_cast<double>(stored.max_seq), static_cast<double>(now.max_seq));
  return changes;
}

}  // namespace detail

// A full training checkpoint in `directory`: config.json and the model's master weights
// (exact), then trainer.safetensors with the optimizer state and trainer_state, each file
// with the CRC-32 of its tensors. After load_training_checkpoint on the same device, the next
// step is bit-identical to the one an uninterrupted run would take. The files are written one
// after the other: use a checkpoint_series (train/checkpoint_series.hpp) to commit them as one
// unit.
template <class P, class Device>
void save_training_checkpoint(const std::filesystem::path& directory, const nn::llama_model<P, Device>& model,
                              const adamw<P, Device>& optimizer, const trainer_state& state) {
  using M = typename P::master_t;
  save_model(directory, model, dtype_of<M>, state.next_step);
  const auto& store = model.store();
  safetensors_writer writer;
  tensor<M, cpu> m, v;
  std::int64_t steps = optimizer.steps();
  if (optimizer.exp_avg().numel() != 0) {
    m = detail::host_copy(store.device(), optimizer.exp_avg());
    v = detail::host_copy(store.device(), optimizer.exp_avg_sq());
    for (const auto& e : store.entries()) {
      writer.add(adamw<P, Device>::exp_avg_name(e.name), tensor_view<const M, cpu>(m.data() + e.offset, e.shape));
      writer.add(adamw<P, Device>::exp_avg_sq_name(e.name), tensor_view<const M, cpu>(v.data() + e.offset, e.shape));
      writer.add(adamw<P, Device>::step_name(e.name), tensor_view<const std::int64_t, cpu>(&steps, dims{}));
    }
  }
  writer.add_metadata("format", "meap-trainer");
  writer.add_metadata("meap.step", detail::step_text(state.next_step));
  writer.add_metadata("meap.seed", std::to_string(state.seed));
  if (state.loss_scale > 0) writer.add_metadata("meap.loss_scale", meap::detail::value_to_string(state.loss_scale));
  if (!state.run_settings.empty()) writer.add_metadata("meap.run", state.run_settings);
  writer.add_data_checksum();
  writer.save(directory / "trainer.safetensors");
}

// Restores a checkpoint written by save_training_checkpoint into `model` and `optimizer`. Checks
// before touching either: config.json is present and describes the model's shape (other
// differences are returned in trainer_state::changes), the files' checksums hold, and the model
// and trainer files record the same step (two files of different checkpoints are refused).
// `before_loading` (optional) sees the state once all of that holds and before anything is
// loaded: it may throw to refuse the checkpoint with the model untouched.
template <class P, class Device>
trainer_state load_training_checkpoint(const std::filesystem::path& directory, nn::llama_model<P, Device>& model,
                                       adamw<P, Device>& optimizer,
                                       const std::function<void(const trainer_state&)>& before_loading = {}) {
  constexpr std::string_view function = "meap::train::load_training_checkpoint";
  std::error_code ec;
  if (!std::filesystem::is_directory(directory, ec))
    throw_argument_error(function, "directory", directory.string(), "a checkpoint directory that exists");
  const auto config_path = directory / "config.json";
  if (!std::filesystem::exists(config_path, ec))
    throw_argument_error(function, "directory", directory.string(), "a checkpoint with its config.json");
  trainer_state state;
  state.changes = detail::compare_configs(function, config_path, read_hugging_face_config(config_path), model.config());
  const auto trainer_path = directory / "trainer.safetensors";
  const safetensors_file trainer(trainer_path);
  state.next_step = detail::parse_step(function, trainer_path, trainer.metadata());
  state.seed = detail::parse_count(function, trainer_path, trainer.metadata(), "meap.seed");
  state.loss_scale = detail::parse_number(function, trainer_path, trainer.metadata(), "meap.loss_scale", 0.0);
  if (const auto run = trainer.metadata().find("meap.run"); run != trainer.metadata().end()) state.run_settings = run->second;
  // Check the two files belong together before touching the model.
  const safetensors_file model_file(directory / "model.safetensors");
  const auto model_step = model_file.metadata().count("meap.step")
                              ? detail::parse_step(function, directory / "model.safetensors", model_file.metadata())
                              : ~std::uint64_t{0};
  if (model_step != state.next_step)
    throw_argument_error(function, "directory", directory.string() + " (model step " + std::to_string(model_step) +
                                                    ", trainer step " + std::to_string(state.next_step) + ")",
                         "a checkpoint whose model and trainer files were written at the same step");
  if (before_loading) before_loading(state);
  (void)detail::load_model_from(model_file, model);
  if (state.next_step > 0 && !trainer.entries().empty())
    optimizer.load_state(model.store().device(), model.store(), [&](const std::string& name) { return trainer.view(name); });
  else
    optimizer.reset();
  return state;
}

}  // namespace meap::train
