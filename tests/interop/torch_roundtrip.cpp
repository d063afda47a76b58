// torch_roundtrip: the C++ half of the PyTorch interop test (tests/interop/torch_llama.py).
//   torch_roundtrip write DIR   a small GQA model saved as a Hugging Face directory, plus the
//                               logits meap computes for fixed tokens (DIR/logits.f32, DIR/tokens.i32)
//   torch_roundtrip check DIR   loads a directory PyTorch wrote, computes the logits of its tokens
//                               and compares them with the ones PyTorch computed (DIR/logits.f32)
// Exit 0 when everything matches to 1e-4 (max |difference| / max(1, max |logit|)).
#include <meap/meap.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

template <class T>
void write_raw(const std::filesystem::path& path, const T* data, std::size_t count) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(count * sizeof(T)));
}

template <class T>
std::vector<T> read_raw(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw meap::error("torch_roundtrip: cannot read " + path.string());
  const auto bytes = static_cast<std::size_t>(in.tellg());
  std::vector<T> values(bytes / sizeof(T));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(T)));
  return values;
}

constexpr int batch = 2, length = 11;

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: torch_roundtrip write|check DIR\n");
    return 2;
  }
  const std::string mode = argv[1];
  const std::filesystem::path dir = argv[2];
  try {
    if (mode == "write") {
      meap::nn::llama_config config{.vocab = 37, .d_model = 48, .layers = 2, .heads = 6, .kv_heads = 2, .ffn = 80,
                                    .max_seq = 32, .rope_theta = 500000.0, .norm_eps = 1e-5};
      meap::nn::llama_model<meap::fp32> model(config);
      model.initialize(2024);
      // Make the norm gains non-trivial so the check covers them too.
      for (auto& p : model.parameters())
        if (p.value.rank() == 1)
          for (meap::index_t i = 0; i < p.value.numel(); ++i) p.value.data()[i] = 1.0f + 0.01f * static_cast<float>(i % 7);
      meap::train::save_model(dir, model);
      std::vector<std::int32_t> tokens(batch * length);
      for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<std::int32_t>((i * 7 + 3) % 37);
      const auto logits = model.logits(meap::cpu{}, model.forward(meap::cpu{}, meap::make_view(std::span<const std::int32_t>(tokens), {batch, length})));
      write_raw(dir / "tokens.i32", tokens.data(), tokens.size());
      write_raw(dir / "logits.f32", logits.data(), static_cast<std::size_t>(logits.numel()));
      std::printf("torch_roundtrip: wrote %s (%lld logits)\n", dir.c_str(), static_cast<long long>(logits.numel()));
      return 0;
    }
    if (mode == "check") {
      auto model = meap::train::load_pretrained<meap::fp32>(dir);
      const auto tokens = read_raw<std::int32_t>(dir / "tokens.i32");
      const auto expected = read_raw<float>(dir / "logits.f32");
      const auto logits = model.logits(
          meap::cpu{}, model.forward(meap::cpu{}, meap::make_view(std::span<const std::int32_t>(tokens), {batch, static_cast<meap::index_t>(tokens.size()) / batch})));
      if (expected.size() != static_cast<std::size_t>(logits.numel())) throw meap::error("torch_roundtrip: logit count differs");
      double worst = 0, scale = 1;
      for (std::size_t i = 0; i < expected.size(); ++i) {
        worst = std::max(worst, std::fabs(double(expected[i]) - logits.data()[i]));
        scale = std::max(scale, std::fabs(double(expected[i])));
      }
      std::printf("torch_roundtrip: %s: max |meap - torch| = %.3g (scale %.3g)\n", dir.c_str(), worst, scale);
      return worst / scale < 1e-4 ? 0 : 1;
    }
  } catch (const meap::error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "usage: torch_roundtrip write|check DIR\n");
  return 2;
}
