// meap/core/labels.hpp: the label convention used throughout meap.
//
// Labels are *shifted*: labels[t] is the target of the logits at position t, i.e. the token that
// follows input position t. A position that carries no loss holds meap::ignore_index (-100, as in
// PyTorch's cross_entropy and Hugging Face's labels).
#pragma once

#include <cstdint>

namespace meap {

inline constexpr std::int32_t ignore_index = -100;

}  // namespace meap
