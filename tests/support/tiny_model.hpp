// tests/support/tiny_model.hpp: the tests' one tiny LLaMA shape. A test names only what matters
// to it (the vocabulary its ids need, the window its rows fill); the rest is the smallest shape
// with grouped-query attention (2 heads over 1 key/value head) and two layers, so every module
// path runs in milliseconds.
#pragma once

#include <meap/nn/config.hpp>

#include <cstdint>

namespace meap_test {

inline meap::nn::llama_config tiny_llama(std::int64_t vocab, std::int64_t max_seq, std::int64_t d_model = 16,
                                         std::int64_t ffn = 32, std::int64_t layers = 2) {
  meap::nn::llama_config c;
  c.vocab = vocab;
  c.d_model = d_model;
  c.layers = layers;
  c.heads = 2;
  c.kv_heads = 1;
  c.ffn = ffn;
  c.max_seq = max_seq;
  return c;
}

}  // namespace meap_test
