// meap/eval/token_span.hpp: a [begin, end) range of token positions in one sequence (a needle in
// a prompt, an answer span), shared by the task generators and the attention analysis.
#pragma once

#include <meap/core/dims.hpp>

namespace meap::eval {

struct token_span {
  index_t begin = 0;
  index_t end = 0;
  index_t size() const { return end - begin; }
  friend bool operator==(const token_span&, const token_span&) = default;
};

}  // namespace meap::eval
