// meap/train/checkpoint.hpp: model checkpoints that Hugging Face transformers reads, and training
// checkpoints that resume bit for bit.
//
// A model checkpoint is a directory in Hugging Face layout:
//   config.json         LlamaConfig fields (architectures, hidden_size, num_key_value_heads, ...)
//   model.safetensors   the parameters under LlamaForCausalLM names, [out, in] layouts, in
//                       float32, float64, bfloat16 or float16 (lm_head omitted when tied); or,
//                       for a large model, shards model-0000i-of-0000N.safetensors listed by
//                       model.safetensors.index.json (save_model's max_shard_bytes)
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

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
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
  const auto& s = c.rope_scaling;
  const nlohmann::json rope_scaling =
      s.enabled() ? nlohmann::json{{"rope_type", "llama3"},
                                   {"factor", s.factor},
                                   {"low_freq_factor", s.low_freq_factor},
                                   {"high_freq_factor", s.high_freq_factor},
                                   {"original_max_position_embeddings", s.original_max_position}}
                  : nlohmann::json(nullptr);
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
          {"rope_scaling", rope_scaling},
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
  if (j.contains("rope_scaling") && !j.at("rope_scaling").is_null()) {
    // Llama 3.1's "llama3" scaling; the other kinds transformers knows (linear, dynamic, yarn,
    // longrope, ...) change RoPE in ways meap's kernels do not implement, so they are refused
    // rather than silently ignored.
    const json_fields scaling(j.at("rope_scaling"), function, source + " rope_scaling");
    const std::string kind = scaling.string_or("rope_type", scaling.string_or("type", "(none given)"));
    if (kind != "llama3")
      throw_argument_error(function, "path", source + " with rope_scaling of type \"" + kind + "\"",
                           "no rope_scaling, or rope_scaling of type \"llama3\" (the only kind meap implements)");
    c.rope_scaling.factor = scaling.number("factor");
    c.rope_scaling.low_freq_factor = scaling.number("low_freq_factor");
    c.rope_scaling.high_freq_factor = scaling.number("high_freq_factor");
    c.rope_scaling.original_max_position = scaling.number("original_max_position_embeddings");
    if (c.rope_scaling.factor == 0.0)
      throw_argument_error(function, "path", source + " with rope_scaling.factor 0", "a llama3 rope_scaling factor >= 1");
  }
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

// The weight_map of a model.safetensors.index.json: parameter name -> shard file name. Shard
// names must be plain file names (no directory part), so that an index cannot point outside its
// directory.
inline std::map<std::string, std::string> read_shard_index(std::string_view function, const std::filesystem::path& path) {
  const auto j = parse_json(meap::detail::read_small_file(function, path, 64 << 20, "model.safetensors.index.json"),
                            function, path.string());
  if (!j.is_object() || !j.contains("weight_map") || !j.at("weight_map").is_object())
    throw_argument_error(function, "path", path.string(), "an index whose \"weight_map\" is an object of name -> file");
  std::map<std::string, std::string> map;
  for (const auto& [name, file] : j.at("weight_map").items()) {
    const std::string shard = file.is_string() ? file.get<std::string>() : std::string();
    const std::filesystem::path shard_path(shard);
    if (shard.empty() || shard_path.filename() != shard_path || shard == "." || shard == "..")
      throw_argument_error(function, "path", path.string() + " (weight_map[\"" + name + "\"] = " + file.dump() + ")",
                           "shard entries that are plain file names in the index's directory");
    map.emplace(name, shard);
  }
  return map;
}

// The distinct shard file names an index lists.
inline std::vector<std::string> shard_files(std::string_view function, const std::filesystem::path& index_path) {
  std::vector<std::string> files;
  for (const auto& [name, shard] : read_shard_index(function, index_path))
    if (std::find(files.begin(), files.end(), shard) == files.end()) files.push_back(shard);
  return files;
}

}  // namespace detail

// Writes config.json and the master weights into `directory` (created if missing), as transformers
// does: one model.safetensors, or, when max_shard_bytes > 0 and the weights exceed it, shards
// model-0000i-of-0000N.safetensors of at most max_shard_bytes each (a larger single tensor gets a
// shard of its own) listed by model.safetensors.index.json. `step` is recorded in the metadata so
// a trainer file can be matched to it. A model on CUDA is copied to the host first (waiting for
// its stream). Every file is written atomically; the layout not written (a stale single file, or
// a stale index) is removed, so that a directory never offers two versions of the weights.
template <class P, class Device>
void save_model(const std::filesystem::path& directory, const nn::llama_model<P, Device>& model,
                dtype stored = dtype_of<typename P::master_t>, std::uint64_t step = 0,
                std::uint64_t max_shard_bytes = 0) {
  constexpr std::string_view function = "meap::train::save_model";
  check_argument(is_floating(stored), function, "stored", std::string(to_string(stored)),
                 "float32, float64, bfloat16 or float16");
  std::error_code ec;
  std::filesystem::create_directories(directory, ec);
  if (ec) throw_argument_error(function, "directory", directory.string(), "a directory that can be created (" + ec.message() + ")");
  const auto& store = model.store();
  const auto master = detail::host_copy(store.device(), store.master_flat());
  const std::string config = hugging_face_config(model.config(), stored).dump(2) + "\n";
  write_file_atomically(directory / "config.json",
                        std::span<const std::byte>(reinterpret_cast<const std::byte*>(config.data()), config.size()));
  // The shards: entries in store order, a new shard when the next entry would overflow this one.
  const auto element = static_cast<std::uint64_t>(size_of(stored));
  std::vector<std::vector<nn::parameter_entry>> shards(1);
  std::uint64_t shard_bytes = 0, total_bytes = 0;
  for (const auto& e : store.entries()) {
    const std::uint64_t bytes = static_cast<std::uint64_t>(e.numel) * element;
    if (max_shard_bytes > 0 && !shards.back().empty() && shard_bytes + bytes > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(e);
    shard_bytes += bytes;
    total_bytes += bytes;
  }
  const auto write = [&](const std::vector<nn::parameter_entry>& entries, const std::filesystem::path& path) {
    safetensors_writer writer;
    std::vector<tensor<std::uint8_t, cpu>> keep_alive;
    detail::add_parameters(writer, entries, master.data(), stored, keep_alive);
    writer.add_metadata("format", "pt");  // transformers checks this key
    writer.add_metadata("meap.step", detail::step_text(step));
    writer.add_data_checksum();
    writer.save(path);
  };
  const auto index_path = directory / "model.safetensors.index.json";
  if (shards.size() == 1) {
    write(shards.front(), directory / "model.safetensors");
    if (std::filesystem::exists(index_path, ec)) {
      for (const auto& shard : detail::shard_files(function, index_path)) std::filesystem::remove(directory / shard, ec);
      std::filesystem::remove(index_path, ec);
    }
    return;
  }
  nlohmann::json weight_map = nlohmann::json::object();
  const auto count = shards.size();
  for (std::size_t i = 0; i < count; ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, count);
    write(shards[i], directory / name);
    for (const auto& e : shards[i]) weight_map[e.name] = name;
  }
  // The index last: until it exists the shards are not a model; a stale single file goes first,
  // so that a reader never prefers it to the new shards.
  std::filesystem::remove(directory / "model.safetensors", ec);
  const nlohmann::json index = {{"metadata", {{"total_size", total_bytes}, {"meap.step", detail::step_text(step)}}},
                                {"weight_map", weight_map}};
  const std::string text = index.dump(2) + "\n";
  write_file_atomically(index_path, std::span<const std::byte>(reinterpret_cast<const std::byte*>(text.data()), text.size()));
}

namespace detail {

// Host master weights (flat, store layout) into `model`'s master weights, then its compute copy.
template <class P, class Device>
void upload_master(nn::llama_model<P, Device>& model, const tensor<typename P::master_t, cpu>& host) {
  auto& store = model.store();
  const Device& device = store.device();
  copy(device, host.view().as_const(), store.master_flat());
  store.refresh_compute(device);
  synchronize(device);  // the caller's `host` may die after this
}

// load_model from an opened file.
template <class P, class Device>
std::uint64_t load_model_from(const safetensors_file& file, nn::llama_model<P, Device>& model) {
  using M = typename P::master_t;
  auto host = zeros<M>(cpu{}, dims{model.store().flat_size()});
  for (const auto& e : model.store().entries())
    file.load_into(e.name, tensor_view<M, cpu>(host.data() + e.offset, e.shape));
  upload_master(model, host);
  const auto& metadata = file.metadata();
  return metadata.count("meap.step") ? parse_step("meap::train::load_model", file.path(), metadata) : 0;
}

}  // namespace detail

// Reads the weights in `directory` into `model`'s master weights (and refreshes its compute
// copy): model.safetensors, or else the shards model.safetensors.index.json lists (as
// transformers writes them). Every parameter must be present with the model's shape (any
// floating dtype; converted). Returns the step recorded in the file (0 if none). Loads on any
// device, whatever device wrote the file.
template <class P, class Device>
std::uint64_t load_model(const std::filesystem::path& directory, nn::llama_model<P, Device>& model) {
  constexpr std::string_view function = "meap::train::load_model";
  std::error_code ec;
  const auto single = directory / "model.safetensors";
  if (std::filesystem::exists(single, ec)) return detail::load_model_from(safetensors_file(single), model);
  const auto index_path = directory / "model.safetensors.index.json";
  if (!std::filesystem::exists(index_path, ec))
    throw_argument_error(function, "directory", directory.string(),
                         "a model directory holding model.safetensors or model.safetensors.index.json");
  const auto index = detail::read_shard_index(function, index_path);
  // Check that each parameter is listed, then read the shards one at a time (a shard's whole
  // file is in memory while it is read).
  std::map<std::string, std::vector<const nn::parameter_entry*>> by_shard;
  for (const auto& e : model.store().entries()) {
    const auto found = index.find(e.name);
    if (found == index.end())
      throw_argument_error(function, "directory", index_path.string() + " (no entry for '" + e.name + "')",
                           "an index whose weight_map lists every parameter of the model");
    by_shard[found->second].push_back(&e);
  }
  using M = typename P::master_t;
  auto host = zeros<M>(cpu{}, dims{model.store().flat_size()});
  std::uint64_t step = 0;
  for (const auto& [shard, entries] : by_shard) {
    const safetensors_file file(directory / shard);
    for (const auto* e : entries) file.load_into(e->name, tensor_view<M, cpu>(host.data() + e->offset, e->shape));
    if (file.metadata().count("meap.step")) step = detail::parse_step(function, file.path(), file.metadata());
  }
  detail::upload_master(model, host);
  return step;
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
  compare("rope_scaling.factor", stored.rope_scaling.factor, now.rope_scaling.factor);
  compare("rope_scaling.low_freq_factor", stored.rope_scaling.low_freq_factor, now.rope_scaling.low_freq_factor);
  compare("rope_scaling.high_freq_factor", stored.rope_scaling.high_freq_factor, now.rope_scaling.high_freq_factor);
  compare("rope_scaling.original_max_position_embeddings", stored.rope_scaling.original_max_position,
          now.rope_scaling.original_max_position);
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
//
// This form takes AdamW's moments as whole flat host buffers in the store's layout (empty views:
// no optimizer state yet) and its step count: what a ZeRO-1 trainer, whose optimizer holds one
// shard, gathers before writing (train/pretrain.hpp). The form after it takes the optimizer.
template <class P, class Device>
void save_training_checkpoint(const std::filesystem::path& directory, const nn::llama_model<P, Device>& model,
                              const tensor_view<const typename P::master_t, cpu>& m,
                              const tensor_view<const typename P::master_t, cpu>& v, std::int64_t steps,
                              const trainer_state& state) {
  using M = typename P::master_t;
  constexpr std::string_view function = "meap::train::save_training_checkpoint";
  const auto& store = model.store();
  for (const auto& [name, moment] : {std::pair{"exp_avg", &m}, std::pair{"exp_avg_sq", &v}})
    if (moment->numel() != 0) {
      check_shape(function, name, *moment, dims{store.flat_size()});
      check_contiguous(function, name, *moment);
    }
  check_argument(m.numel() == v.numel(), function, "exp_avg_sq", "shape " + to_string(v.shape()),
                 "the shape of exp_avg, " + to_string(m.shape()));
  save_model(directory, model, dtype_of<M>, state.next_step);
  safetensors_writer writer;
  if (m.numel() != 0) {
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

template <class P, class Device>
void save_training_checkpoint(const std::filesystem::path& directory, const nn::llama_model<P, Device>& model,
                              const adamw<P, Device>& optimizer, const trainer_state& state) {
  using M = typename P::master_t;
  tensor<M, cpu> m, v;
  if (optimizer.exp_avg().numel() != 0) {
    m = detail::host_copy(model.store().device(), optimizer.exp_avg());
    v = detail::host_copy(model.store().device(), optimizer.exp_avg_sq());
  }
  save_training_checkpoint(directory, model, m.view().as_const(), v.view().as_const(), optimizer.steps(), state);
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
