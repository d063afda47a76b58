// meap/nn/vocabulary.hpp: growing a trained model's vocabulary, which is how a pretrained model
// gets the [MASK] token MEAP fine-tuning needs:
//
//   auto grown = meap::nn::grow_vocabulary(model, 1);   // on the model's device
//   const std::int32_t mask_id = static_cast<std::int32_t>(model.config().vocab);  // the new row
//
// Every parameter is copied; the embedding (and an untied LM head) gains `added` rows, each the
// mean of the existing rows. Why the mean: a new row drawn at random would give the new token an
// arbitrary logit, which can be large enough to pull probability away from every real token (the
// model's outputs change before any training); with the head row at the mean of the head rows,
// the new token's logit is the mean of the old logits, so the old tokens keep almost all their
// probability, and the input row at the mean embedding starts the new token in the span the
// model has learned to read (Hewitt, "Initializing New Word Embeddings for Pretrained Language
// Models", 2021). The old tokens' logits do not change at all.
#pragma once

#include <meap/nn/llama.hpp>

#include <algorithm>
#include <string>
#include <vector>

namespace meap::nn {

template <class P, class Device>
llama_model<P, Device> grow_vocabulary(const llama_model<P, Device>& model, index_t added = 1) {
  constexpr std::string_view function = "meap::nn::grow_vocabulary";
  const auto& old_config = model.config();
  check_argument(added >= 1, function, "added", added, "at least one new token");
  check_argument(added <= (index_t{1} << 31) - 1 - old_config.vocab, function, "added", added,
                 "a count that keeps the vocabulary's ids in int32 (vocab is " + std::to_string(old_config.vocab) + ")");
  llama_config config = old_config;
  config.vocab += added;
  const Device& device = model.store().device();
  llama_model<P, Device> grown(config, device);

  using M = typename P::master_t;
  const auto old_master = to_host(device, model.store().master_flat());
  auto master = zeros<M>(cpu{}, dims{grown.store().flat_size()});
  const auto& old_entries = model.store().entries();
  for (const auto& e : grown.store().entries()) {
    const auto found = std::find_if(old_entries.begin(), old_entries.end(), [&](const auto& o) { return o.name == e.name; });
    if (found == old_entries.end())
      throw_argument_error(function, "model", "a model without parameter '" + e.name + "'",
                           "a model with every parameter of its config's shape");
    const M* from = old_master.data() + found->offset;
    M* to = master.data() + e.offset;
    if (found->shape == e.shape) {
      std::copy(from, from + e.numel, to);
      continue;
    }
    // A vocabulary matrix (vocab, d): the old rows, then `added` copies of their mean (in double).
    const index_t rows = found->shape[0], d = found->shape[1];
    std::copy(from, from + rows * d, to);
    std::vector<double> mean(static_cast<std::size_t>(d), 0.0);
    for (index_t r = 0; r < rows; ++r)
      for (index_t j = 0; j < d; ++j) mean[static_cast<std::size_t>(j)] += static_cast<double>(from[r * d + j]);
    for (index_t r = rows; r < rows + added; ++r)
      for (index_t j = 0; j < d; ++j) to[r * d + j] = static_cast<M>(mean[static_cast<std::size_t>(j)] / static_cast<double>(rows));
  }
  copy(device, master.view().as_const(), grown.store().master_flat());
  grown.store().refresh_compute(device);
  synchronize(device);  // `master` dies here
  return grown;
}

}  // namespace meap::nn
