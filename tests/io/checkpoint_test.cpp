// A training checkpoint through a safetensors file: parameters and AdamW state saved, loaded
// into a fresh optimizer, and the next steps bit-identical to the uninterrupted run.
#include <meap/core/philox.hpp>
#include <meap/core/tensor.hpp>
#include <meap/io/safetensors.hpp>
#include <meap/nn/parameter_store.hpp>
#include <meap/optim/adamw.hpp>
#include <meap/optim/clip.hpp>

#include "io/support.hpp"

#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace {

using store_type = meap::nn::parameter_store<meap::fp32, meap::cpu>;
using optimizer_type = meap::adamw<meap::fp32, meap::cpu>;

// A toy model: named parameters in a store, and deterministic gradients.
struct toy_model {
  std::vector<std::string> names{"model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight", "model.norm.weight"};
  std::vector<meap::dims> shapes{{8, 4}, {6, 4}, {4}};
  store_type store;

  toy_model() {
    for (std::size_t k = 0; k < names.size(); ++k) store.declare(names[k], shapes[k], k != 2);
    store.allocate(meap::cpu{});
    for (meap::index_t k = 0; k < store.size(); ++k)
      meap::fill(meap::cpu{}, store.master(k), 0.1f * static_cast<float>(k + 1));
  }
  // Deterministic gradients for `step`.
  void backward(std::uint64_t step) {
    for (meap::index_t k = 0; k < store.size(); ++k) {
      meap::philox_stream random(77 + static_cast<std::uint64_t>(k), step);
      const auto g = store.grad(k);
      for (meap::index_t i = 0; i < g.numel(); ++i) g.data()[i] = 4.0f * (random.next_float() - 0.5f);
    }
  }
};

void train(toy_model& model, optimizer_type& opt, std::uint64_t first, std::uint64_t last) {
  const auto params = model.store.parameters();
  for (std::uint64_t step = first; step < last; ++step) {
    model.backward(step);
    const auto clip = meap::clip_grad_norm(meap::cpu{}, params, 1.0);
    BOOST_REQUIRE(clip.finite);
    opt.step(meap::cpu{}, model.store, 1e-2 / static_cast<double>(step + 1));
  }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(checkpoint)

BOOST_AUTO_TEST_CASE(resume_from_a_safetensors_checkpoint_is_bit_identical) {
  io_test::scratch_directory dir;
  const meap::adamw_config config{.lr = 1e-2, .weight_decay = 0.1};
  toy_model uninterrupted;
  optimizer_type uninterrupted_opt(config);
  train(uninterrupted, uninterrupted_opt, 0, 4);

  {  // Save: parameters under their own names, optimizer state under "optimizer.*", step in metadata.
    meap::safetensors_writer writer;
    for (const auto& p : uninterrupted.store.parameters()) writer.add(p.name, p.value.as_const());
    for (const auto& s : uninterrupted_opt.state_views(uninterrupted.store)) writer.add(s.name, s.view);
    writer.add_metadata("step", "4");
    writer.save(dir / "step4.safetensors");
  }
  BOOST_TEST(dir.listing() == std::vector<std::string>{"step4.safetensors"}, boost::test_tools::per_element());

  toy_model resumed;  // different initial values: everything must come from the file
  meap::fill(meap::cpu{}, resumed.store.master_flat(), -7.0f);
  optimizer_type resumed_opt(config);
  {
    const meap::safetensors_file file(dir / "step4.safetensors");
    BOOST_TEST(file.size() == 3u * 4u);
    BOOST_TEST(file.metadata().at("step") == "4");
    for (const auto& p : resumed.store.parameters()) file.load_into(p.name, p.value);
    resumed_opt.load_state(meap::cpu{}, resumed.store, [&](const std::string& name) { return file.view(name); });
  }
  train(uninterrupted, uninterrupted_opt, 4, 8);
  train(resumed, resumed_opt, 4, 8);
  for (meap::index_t k = 0; k < resumed.store.size(); ++k) {
    const auto a = uninterrupted.store.master(k), b = resumed.store.master(k);
    BOOST_TEST(std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.numel()) * sizeof(float)) == 0,
               resumed.store.entry(k).name);
  }
  BOOST_TEST(uninterrupted_opt.steps() == 8);
  BOOST_TEST(resumed_opt.steps() == 8);
  BOOST_TEST(std::memcmp(uninterrupted_opt.exp_avg_sq().data(), resumed_opt.exp_avg_sq().data(),
                         static_cast<std::size_t>(resumed_opt.exp_avg_sq().numel()) * sizeof(float)) == 0);
}

// Weights saved as bf16 (half the bytes) load back into float within bf16 precision.
BOOST_AUTO_TEST_CASE(bf16_weights_load_into_float) {
  auto weights = meap::zeros<float>(meap::cpu{}, {3, 5});
  for (meap::index_t i = 0; i < weights.numel(); ++i) weights.data()[i] = 0.37f * static_cast<float>(i) - 2.0f;
  auto half_weights = meap::zeros<meap::bfloat16>(meap::cpu{}, {3, 5});
  for (meap::index_t i = 0; i < weights.numel(); ++i) half_weights.data()[i] = meap::bfloat16(weights.data()[i]);
  meap::safetensors_writer writer;
  writer.add("lm_head.weight", half_weights);
  const auto file = meap::safetensors_file::from_bytes(writer.serialize());
  BOOST_TEST((file.entry("lm_head.weight").type == meap::dtype::bf16));
  const auto loaded = file.load<float>("lm_head.weight", {3, 5});
  for (meap::index_t i = 0; i < weights.numel(); ++i)
    BOOST_TEST(loaded.data()[i] == weights.data()[i], boost::test_tools::tolerance(1.0f / 128));
}

BOOST_AUTO_TEST_SUITE_END()
