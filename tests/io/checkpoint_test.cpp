// A training checkpoint through a safetensors file: parameters and AdamW state saved, loaded
// into a fresh optimizer, and the next steps bit-identical to the uninterrupted run.
#include <meap/core/philox.hpp>
#include <meap/core/tensor.hpp>
#include <meap/io/safetensors.hpp>
#include <meap/optim/adamw.hpp>
#include <meap/optim/clip.hpp>

#include "io/support.hpp"

#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace {

// A toy model: named parameters and gradients held in tensors.
struct toy_model {
  std::vector<std::string> names{"model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight", "model.norm.weight"};
  std::vector<meap::dims> shapes{{8, 4}, {6, 4}, {4}};
  std::vector<meap::tensor<float, meap::cpu>> values, grads;

  toy_model() {
    for (std::size_t k = 0; k < names.size(); ++k) {
      values.push_back(meap::full<float>(meap::cpu{}, shapes[k], 0.1f * static_cast<float>(k + 1)));
      grads.push_back(meap::zeros<float>(meap::cpu{}, shapes[k]));
    }
  }
  std::vector<meap::named_parameter<float, meap::cpu>> parameters() {
    std::vector<meap::named_parameter<float, meap::cpu>> params;
    for (std::size_t k = 0; k < names.size(); ++k)
      params.push_back({names[k], values[k].view(), grads[k].view(), k != 2});
    return params;
  }
  // Deterministic gradients for `step`.
  void backward(std::uint64_t step) {
    for (std::size_t k = 0; k < names.size(); ++k) {
      meap::philox_stream random(77 + k, step);
      float* g = grads[k].data();
      for (meap::index_t i = 0; i < grads[k].numel(); ++i) g[i] = 4.0f * (random.next_float() - 0.5f);
    }
  }
};

void train(toy_model& model, meap::adamw<float>& opt, std::uint64_t first, std::uint64_t last) {
  const auto params = model.parameters();
  for (std::uint64_t step = first; step < last; ++step) {
    model.backward(step);
    const auto clip = meap::clip_grad_norm(meap::cpu{}, params, 1.0);
    BOOST_REQUIRE(clip.finite);
    opt.step(meap::cpu{}, params, 1e-2 / static_cast<double>(step + 1));
  }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(checkpoint)

BOOST_AUTO_TEST_CASE(resume_from_a_safetensors_checkpoint_is_bit_identical) {
  io_test::scratch_directory dir;
  const meap::adamw_config config{.lr = 1e-2, .weight_decay = 0.1};
  toy_model uninterrupted;
  meap::adamw<float> uninterrupted_opt(config);
  train(uninterrupted, uninterrupted_opt, 0, 4);

  {  // Save: parameters under their own names, optimizer state under "optimizer.*", step in metadata.
    meap::safetensors_writer writer;
    const auto params = uninterrupted.parameters();
    for (const auto& p : params) writer.add(p.name, p.value);
    for (const auto& s : uninterrupted_opt.state_views()) writer.add(s.name, s.view);
    writer.add_metadata("step", "4");
    writer.save(dir / "step4.safetensors");
  }
  BOOST_TEST(dir.listing() == std::vector<std::string>{"step4.safetensors"}, boost::test_tools::per_element());

  toy_model resumed;  // different initial values: everything must come from the file
  for (auto& v : resumed.values) meap::fill(meap::cpu{}, v.view(), -7.0f);
  meap::adamw<float> resumed_opt(config);
  {
    const meap::safetensors_file file(dir / "step4.safetensors");
    BOOST_TEST(file.size() == 3u * 4u);
    BOOST_TEST(file.metadata().at("step") == "4");
    const auto params = resumed.parameters();
    for (const auto& p : params) file.load_into(p.name, p.value);
    resumed_opt.load_state(params, [&](const std::string& name) { return file.view(name); });
  }
  train(uninterrupted, uninterrupted_opt, 4, 8);
  train(resumed, resumed_opt, 4, 8);
  for (std::size_t k = 0; k < resumed.names.size(); ++k) {
    BOOST_TEST(std::memcmp(resumed.values[k].data(), uninterrupted.values[k].data(), resumed.values[k].bytes()) == 0,
               resumed.names[k]);
    const auto* a = uninterrupted_opt.state(resumed.names[k]);
    const auto* b = resumed_opt.state(resumed.names[k]);
    BOOST_TEST(a->step == 8);
    BOOST_TEST(b->step == 8);
    BOOST_TEST(std::memcmp(a->exp_avg_sq.data(), b->exp_avg_sq.data(), a->exp_avg_sq.bytes()) == 0);
  }
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
