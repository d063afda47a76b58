// Training end to end on the CPU: the loss falls, checkpoints reload exactly, a resume continues
// bit for bit, non-finite values skip the update, micro-batches give the step of the whole batch,
// packed documents train, an invalid token id changes nothing, and bad options are rejected.
#include <meap/train/pretrain.hpp>

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <tuple>
#include <vector>

#include "io/support.hpp"
#include "support/errors.hpp"
#include "support/tiny_model.hpp"

namespace {

const meap::cpu host;
using meap_test::error_says;

meap::nn::llama_config small_config() { return meap_test::tiny_llama(16, 32, 32, 64); }

// A learnable stream: x_{t+1} = (5 x_t + 3) mod 15, tokens 0..14; token 15 is [MASK].
meap::tensor<std::int32_t, meap::cpu> pattern_batch(std::uint64_t step, int rows = 8, int length = 17) {
  auto tokens = meap::zeros<std::int32_t>(host, {rows, length});
  meap::philox_stream rng(99, step);
  for (int b = 0; b < rows; ++b) {
    std::int32_t x = static_cast<std::int32_t>(rng.next_below(15));
    for (int t = 0; t < length; ++t) {
      tokens.view()(b, t) = x;
      x = (5 * x + 3) % 15;
    }
  }
  return tokens;
}

using cpu_trainer = meap::train::pretrainer<meap::fp32, meap::cpu>;

meap::train::pretrain_options options(std::int64_t total_steps) {
  meap::train::pretrain_options o;
  o.optimizer.lr = 1e-2;
  o.optimizer.weight_decay = 0.0;
  o.schedule = {1e-2, 1e-3, std::min<std::int64_t>(10, total_steps), total_steps};
  o.masking.seed = 5;
  o.masking.mask_id = 15;
  return o;
}

using temp_dir = io_test::scratch_directory;

bool same_parameters(meap::nn::llama_model<meap::fp32>& a, meap::nn::llama_model<meap::fp32>& b) {
  const auto pa = a.parameters(), pb = b.parameters();
  for (std::size_t i = 0; i < pa.size(); ++i)
    if (std::memcmp(pa[i].value.data(), pb[i].value.data(), static_cast<std::size_t>(pa[i].value.numel()) * sizeof(float)) != 0)
      return false;
  return true;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(train)

BOOST_AUTO_TEST_CASE(loss_falls_with_ntp_and_with_meap) {
  for (const bool meap_policy : {false, true}) {
    meap::nn::llama_model<meap::fp32> model(small_config());
    model.initialize(1);
    std::optional<meap::masking::fixed_ratio> policy;
    if (meap_policy) policy = meap::masking::fixed_ratio{};
    meap::train::pretrainer<meap::fp32, meap::cpu> trainer(model, policy, options(150));
    double first = 0, last = 0;
    for (int s = 0; s < 150; ++s) {
      const auto report = trainer.step(pattern_batch(static_cast<std::uint64_t>(s)).view());
      BOOST_TEST_REQUIRE(!report.skipped);
      if (s == 0) first = report.loss;
      last = report.loss;
      if (meap_policy) BOOST_TEST_REQUIRE(report.masked == 8 * 2);  // floor(0.15 * 15 eligible) per row
    }
    BOOST_TEST_MESSAGE((meap_policy ? "MEAP" : "NTP") << ": loss " << first << " -> " << last);
    BOOST_TEST(first > 2.0);  // about log(15) at the start
    // The rule is learnable exactly; a masked input leaves its target predictable from the
    // token before it, so MEAP's loss falls too (less far: the first position's target is not).
    BOOST_TEST(last < (meap_policy ? 0.6 : 0.3));
  }
}

BOOST_AUTO_TEST_CASE(save_then_load_gives_identical_logits) {
  temp_dir dir;
  auto config = small_config();
  config.tied_head = true;
  meap::nn::llama_model<meap::fp32> model(config);
  model.initialize(3);
  meap::train::save_model(dir / "f32", model);
  meap::train::save_model(dir / "bf16", model, meap::dtype::bf16);
  auto loaded = meap::train::load_pretrained<meap::fp32>(dir / "f32");
  BOOST_TEST(loaded.config().tied_head);
  BOOST_TEST(loaded.config().kv_heads == 1);
  const auto tokens = pattern_batch(0, 2, 9);
  const auto ids = tokens.view().as_const();
  const auto a = model.logits(host, model.forward(host, ids));
  const auto b = loaded.logits(host, loaded.forward(host, ids));
  BOOST_TEST(std::memcmp(a.data(), b.data(), a.bytes()) == 0);
  // bfloat16 weights: logits close, not equal.
  auto rounded = meap::train::load_pretrained<meap::fp32>(dir / "bf16");
  const auto c = rounded.logits(host, rounded.forward(host, ids));
  double worst = 0;
  for (meap::index_t i = 0; i < a.numel(); ++i) worst = std::max(worst, double(std::fabs(a.data()[i] - c.data()[i])));
  BOOST_TEST(worst > 0.0);
  BOOST_TEST(worst < 0.05);
  // The directory is in Hugging Face layout.
  std::ifstream config_json(dir / "f32" / "config.json");
  const auto json = nlohmann::json::parse(config_json);
  BOOST_TEST(json.at("architectures")[0].get<std::string>() == "LlamaForCausalLM");
  BOOST_TEST(json.at("num_key_value_heads").get<int>() == 1);
  const meap::safetensors_file weights(dir / "f32" / "model.safetensors");
  BOOST_TEST(weights.contains("model.layers.1.mlp.down_proj.weight"));
  BOOST_TEST(!weights.contains("lm_head.weight"));  // tied: transformers re-ties it on load
  BOOST_TEST(weights.entry("model.layers.0.self_attn.k_proj.weight").shape[0] == 16);  // [out = Hkv * D, in]
  // A model of another shape refuses the file, naming the tensor.
  auto other = small_config();
  other.ffn = 48;
  meap::nn::llama_model<meap::fp32> wrong(other);
  BOOST_CHECK_THROW(meap::train::load_model(dir / "f32", wrong), meap::error);
}

BOOST_AUTO_TEST_CASE(resume_continues_bit_for_bit) {
  temp_dir dir;
  const int total = 8, split = 4;
  // Uninterrupted.
  meap::nn::llama_model<meap::fp32> straight(small_config());
  straight.initialize(11);
  meap::train::pretrainer<meap::fp32, meap::cpu> straight_trainer(straight, meap::masking::fixed_ratio{}, options(total));
  std::vector<double> straight_losses;
  for (int s = 0; s < total; ++s) straight_losses.push_back(straight_trainer.step(pattern_batch(s).view()).loss);
  // Interrupted after `split` steps, resumed into a fresh model and trainer.
  {
    meap::nn::llama_model<meap::fp32> first(small_config());
    first.initialize(11);
    meap::train::pretrainer<meap::fp32, meap::cpu> trainer(first, meap::masking::fixed_ratio{}, options(total));
    for (int s = 0; s < split; ++s) (void)trainer.step(pattern_batch(s).view());
    trainer.save(dir.path());
  }
  meap::nn::llama_model<meap::fp32> resumed(small_config());
  resumed.initialize(999);  // overwritten by the checkpoint
  meap::train::pretrainer<meap::fp32, meap::cpu> trainer(resumed, meap::masking::fixed_ratio{}, options(total));
  trainer.resume(dir.path());
  BOOST_TEST(trainer.next_step() == static_cast<std::uint64_t>(split));
  for (int s = split; s < total; ++s) {
    const auto report = trainer.step(pattern_batch(static_cast<std::uint64_t>(trainer.next_step())).view());
    BOOST_TEST(report.loss == straight_losses[static_cast<std::size_t>(s)]);  // exactly
  }
  BOOST_TEST(same_parameters(straight, resumed));
  // A trainer with another seed refuses the checkpoint.
  auto other = options(total);
  other.masking.seed = 6;
  meap::train::pretrainer<meap::fp32, meap::cpu> wrong_seed(resumed, meap::masking::fixed_ratio{}, other);
  BOOST_CHECK_EXCEPTION(wrong_seed.resume(dir.path()), meap::error,
                        error_says("directory", {"masking.seed: checkpoint 5, now 6"}));
  // The same with resume_changes::allow: resumed, the difference reported.
  const auto changes = wrong_seed.resume(dir.path(), meap::train::resume_changes::allow);
  BOOST_TEST(changes.size() == 1u);
  BOOST_TEST(changes.at(0) == "masking.seed: checkpoint 5, now 6");
  BOOST_TEST(wrong_seed.next_step() == static_cast<std::uint64_t>(split));
  // Another learning rate and another policy: every difference is named; the model is untouched.
  auto other_lr = options(total);
  other_lr.optimizer.lr *= 2;
  meap::nn::llama_model<meap::fp32> untouched(small_config());
  untouched.initialize(999);
  const auto before = meap::to_host(meap::cpu{}, untouched.store().master_flat().as_const());
  meap::train::pretrainer<meap::fp32, meap::cpu> changed(untouched, meap::masking::fixed_ratio{.ratio = 0.3}, other_lr);
  BOOST_CHECK_EXCEPTION(changed.resume(dir.path()), meap::error,
                        error_says("directory", {"optimizer.lr: checkpoint", "policy: checkpoint \"fixed_ratio(ratio=0.14999999999999999",
                                                 "now \"fixed_ratio(ratio=0.29999999999999999"}));
  const auto after = meap::to_host(meap::cpu{}, untouched.store().master_flat().as_const());
  BOOST_TEST(std::memcmp(before.data(), after.data(), sizeof(float) * static_cast<std::size_t>(before.numel())) == 0);
  BOOST_TEST(changed.next_step() == 0u);
  // A model whose RoPE base differs is reported as a change, not silently resumed.
  auto rope = small_config();
  rope.rope_theta = 500000.0;
  meap::nn::llama_model<meap::fp32> other_rope(rope);
  meap::train::pretrainer<meap::fp32, meap::cpu> rope_trainer(other_rope, meap::masking::fixed_ratio{}, options(total));
  BOOST_CHECK_EXCEPTION(rope_trainer.resume(dir.path()), meap::error,
                        error_says("directory", {"rope_theta: checkpoint 10000.0, now 500000.0"}));
  // A model of another shape is refused even with resume_changes::allow.
  auto wide = small_config();
  wide.ffn += 2;
  meap::nn::llama_model<meap::fp32> other_shape(wide);
  meap::train::pretrainer<meap::fp32, meap::cpu> shape_trainer(other_shape, meap::masking::fixed_ratio{}, options(total));
  BOOST_CHECK_EXCEPTION(shape_trainer.resume(dir.path(), meap::train::resume_changes::allow), meap::error,
                        error_says("directory", {"intermediate_size"}));
  // A model file from another step than the trainer file (a crash between the writes) is refused.
  meap::train::save_model(dir.path(), resumed, meap::dtype::f32, 123);
  BOOST_CHECK_EXCEPTION(trainer.resume(dir.path()), meap::error, error_says("directory", {"model step 123", "trainer step 4"}));
  // A truncated trainer file is refused with a clear error.
  std::filesystem::resize_file(dir / "trainer.safetensors", 100);
  BOOST_CHECK_THROW(trainer.resume(dir.path()), meap::error);
}

BOOST_AUTO_TEST_CASE(non_finite_values_skip_the_update) {
  meap::nn::llama_model<meap::fp32> model(small_config());
  model.initialize(2);
  meap::train::pretrainer<meap::fp32, meap::cpu> trainer(model, std::nullopt, options(10));
  auto params = model.parameters();
  params[5].value.data()[3] = std::numeric_limits<float>::infinity();  // poisons the forward pass
  const auto before = meap::clone(host, params[2].value);
  const auto report = trainer.step(pattern_batch(0).view());
  BOOST_TEST(report.skipped);
  BOOST_TEST(!report.skip_reason.empty());
  BOOST_TEST_MESSAGE("skip reason: " << report.skip_reason);
  BOOST_TEST(std::memcmp(before.data(), params[2].value.data(), before.bytes()) == 0);
  BOOST_TEST(trainer.next_step() == 1u);
}

BOOST_AUTO_TEST_CASE(invalid_options_are_rejected) {
  meap::nn::llama_model<meap::fp32> model(small_config());
  auto o = options(10);
  o.clip_norm = 0;
  BOOST_CHECK_EXCEPTION(cpu_trainer(model, std::nullopt, o), meap::error, error_says("clip_norm", {}));
  o = options(10);
  o.optimizer.beta1 = 1.0;
  BOOST_CHECK_EXCEPTION(cpu_trainer(model, std::nullopt, o), meap::error, error_says("beta1", {}));
  o = options(10);
  o.schedule.total_steps = 0;
  BOOST_CHECK_EXCEPTION(cpu_trainer(model, std::nullopt, o), meap::error, error_says("total_steps", {}));
  BOOST_CHECK_EXCEPTION(cpu_trainer(model, meap::masking::fixed_ratio{1.5}, options(10)), meap::error,
                        error_says("ratio", {"1.5"}));
  meap::train::pretrainer<meap::fp32, meap::cpu> trainer(model, meap::masking::fixed_ratio{}, options(10));
  auto one_column = meap::zeros<std::int32_t>(host, {2, 1});
  BOOST_CHECK_EXCEPTION(trainer.step(one_column.view()), meap::error, error_says("tokens", {"T >= 1"}));
  auto with_mask_id = pattern_batch(0);
  with_mask_id.view()(1, 4) = 15;
  BOOST_CHECK_EXCEPTION(trainer.step(with_mask_id.view()), meap::error, error_says("options.mask_id", {"row 1, position 4"}));
}

// The global batch in 4 micro-batches: the same masks (rows keyed by their global index), the same
// loss (the mean over the global batch), the same update up to float summation order.
BOOST_AUTO_TEST_CASE(micro_batches_give_the_step_of_the_whole_batch) {
  meap::nn::llama_model<meap::fp32> whole(small_config()), split(small_config());
  whole.initialize(4);
  split.initialize(4);
  auto split_options = options(10);
  split_options.micro_batches = 4;
  meap::train::pretrainer<meap::fp32, meap::cpu> a(whole, meap::masking::fixed_ratio{}, options(10));
  meap::train::pretrainer<meap::fp32, meap::cpu> b(split, meap::masking::fixed_ratio{}, split_options);
  for (int s = 0; s < 3; ++s) {
    const auto tokens = pattern_batch(static_cast<std::uint64_t>(s));
    const auto ra = a.step(tokens.view());
    const auto rb = b.step(tokens.view());
    BOOST_TEST(rb.micro_batches == 4);
    BOOST_TEST(ra.masked == rb.masked);
    BOOST_TEST(ra.loss_tokens == rb.loss_tokens);
    BOOST_TEST(rb.loss == ra.loss, boost::test_tools::tolerance(1e-5));
    BOOST_TEST(rb.grad_norm == ra.grad_norm, boost::test_tools::tolerance(1e-4));
  }
  const auto pa = whole.parameters(), pb = split.parameters();
  double worst = 0;
  for (std::size_t k = 0; k < pa.size(); ++k)
    for (meap::index_t i = 0; i < pa[k].value.numel(); ++i)
      worst = std::max(worst, double(std::fabs(pa[k].value.data()[i] - pb[k].value.data()[i])));
  BOOST_TEST(worst < 1e-5);
  // The row count must split evenly.
  auto seven = meap::zeros<std::int32_t>(host, {7, 17});
  BOOST_CHECK_EXCEPTION(b.step(seven.view()), meap::error, error_says("tokens", {"multiple of micro_batches = 4"}));
}

// Packed documents: attention and masking stay within each document, the loss still falls.
BOOST_AUTO_TEST_CASE(packed_documents_train) {
  meap::nn::llama_model<meap::fp32> model(small_config());
  model.initialize(6);
  meap::train::pretrainer<meap::fp32, meap::cpu> trainer(model, meap::masking::fixed_ratio{}, options(60));
  auto segments = meap::zeros<std::int32_t>(host, {8, 17});
  for (int b = 0; b < 8; ++b)
    for (int t = 0; t < 17; ++t) segments.view()(b, t) = t < 9 ? 0 : 1;
  double first = 0, last = 0;
  for (int s = 0; s < 60; ++s) {
    const auto report = trainer.step(pattern_batch(static_cast<std::uint64_t>(s)).view(), segments.view());
    if (s == 0) first = report.loss;
    last = report.loss;
    // The last input of each of the two documents is never masked: floor(0.15 * 14) per row.
    BOOST_TEST_REQUIRE(report.masked == 8 * 2);
  }
  BOOST_TEST(last < first * 0.5);
  auto wrong = meap::zeros<std::int32_t>(host, {8, 5});
  BOOST_CHECK_EXCEPTION(trainer.step(pattern_batch(0).view(), wrong.view()), meap::error,
                        error_says("segment_ids", {"shape (8, 5)"}));
}

// A token id outside the vocabulary throws, and the step changes nothing.
BOOST_AUTO_TEST_CASE(an_invalid_token_id_throws_and_changes_nothing) {
  meap::nn::llama_model<meap::fp32> model(small_config());
  model.initialize(8);
  meap::train::pretrainer<meap::fp32, meap::cpu> trainer(model, std::nullopt, options(10));
  auto tokens = pattern_batch(0);
  tokens.view()(2, 5) = 99;
  const auto before = meap::clone(host, model.parameters()[3].value);
  BOOST_CHECK_EXCEPTION(trainer.step(tokens.view()), meap::error,
                        error_says("meap::embedding_forward", "tokens", {"token 99", "[0, 16)"}));
  BOOST_TEST(trainer.next_step() == 0u);
  BOOST_TEST(trainer.optimizer().steps() == 0);
  BOOST_TEST(std::memcmp(before.data(), model.parameters()[3].value.data(), before.bytes()) == 0);
  const auto report = trainer.step(pattern_batch(0).view());  // the trainer is still usable
  BOOST_TEST(!report.skipped);
  BOOST_TEST(trainer.optimizer().steps() == 1);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_CASE(corrupt_trainer_metadata_is_refused) {
  temp_dir dir;
  meap::nn::llama_model<meap::fp32> model(small_config());
  model.initialize(3);
  meap::train::pretrainer<meap::fp32, meap::cpu> trainer(model, meap::masking::fixed_ratio{}, options(4));
  (void)trainer.step(pattern_batch(0).view());
  trainer.save(dir.path());
  const auto trainer_path = dir / "trainer.safetensors";
  const auto original = io_test::read_bytes(trainer_path);
  // Rewrites trainer.safetensors with one metadata value replaced (the tensors and their checksum
  // stay valid: only the metadata is wrong).
  const auto rewrite = [&](const std::string& key, const std::string& value) {
    const auto file = meap::safetensors_file::from_bytes(original, trainer_path.string());
    meap::safetensors_writer writer;
    for (const auto& e : file.entries()) writer.add(e.name, file.view(e.name));
    for (const auto& [k, v] : file.metadata()) writer.add_metadata(k, k == key ? value : v);
    writer.save(trainer_path);
  };
  const std::vector<std::tuple<std::string, std::string, std::string>> cases = {
      {"meap.seed", "abc", "meap.seed = \"abc\""},
      {"meap.seed", "-1", "meap.seed = \"-1\""},
      {"meap.step", "-1", "meap.step = \"-1\""},
      {"meap.step", "18446744073709551616", "a decimal count"},
      {"meap.loss_scale", "nan", "a finite number"},
      {"meap.run", "[1,2]", "meap.run metadata is a JSON object"},
      {"meap.run", "{", "meap.run metadata is a JSON object"}};
  for (const auto& [key, value, fragment] : cases) {
    BOOST_TEST_CONTEXT(key << " = " << value) {
      rewrite(key, value);
      meap::nn::llama_model<meap::fp32> target(small_config());
      meap::train::pretrainer<meap::fp32, meap::cpu> resumer(target, meap::masking::fixed_ratio{}, options(4));
      BOOST_CHECK_EXCEPTION(resumer.resume(dir.path()), meap::error, error_says("directory", {fragment}));
      BOOST_TEST(resumer.next_step() == 0u);
    }
  }
}

BOOST_AUTO_TEST_CASE(a_series_resumes_from_its_newest_checkpoint) {
  temp_dir dir;
  const int total = 6;
  meap::nn::llama_model<meap::fp32> straight(small_config());
  straight.initialize(11);
  meap::train::pretrainer<meap::fp32, meap::cpu> straight_trainer(straight, meap::masking::fixed_ratio{}, options(total));
  for (int s = 0; s < total; ++s) (void)straight_trainer.step(pattern_batch(s).view());
  {
    meap::nn::llama_model<meap::fp32> first(small_config());
    first.initialize(11);
    meap::train::pretrainer<meap::fp32, meap::cpu> trainer(first, meap::masking::fixed_ratio{}, options(total));
    meap::train::checkpoint_series series(dir / "checkpoints", 2);
    BOOST_CHECK_EXCEPTION(trainer.resume(series), meap::error, error_says("series", {"at least one complete checkpoint"}));
    for (int s = 0; s < 4; ++s) {
      (void)trainer.step(pattern_batch(s).view());
      const auto entry = trainer.save(series);
      BOOST_TEST(entry.step == static_cast<std::uint64_t>(s + 1));
    }
    BOOST_TEST(series.list().size() == 2u);
  }
  meap::train::checkpoint_series series(dir / "checkpoints", 2);
  meap::nn::llama_model<meap::fp32> resumed(small_config());
  meap::train::pretrainer<meap::fp32, meap::cpu> trainer(resumed, meap::masking::fixed_ratio{}, options(total));
  BOOST_TEST(trainer.resume(series).empty());
  BOOST_TEST(trainer.next_step() == 4u);
  while (trainer.next_step() < static_cast<std::uint64_t>(total))
    (void)trainer.step(pattern_batch(trainer.next_step()).view());
  BOOST_TEST(same_parameters(straight, resumed));
}
