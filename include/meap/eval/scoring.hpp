// meap/eval/scoring.hpp: scoring retrieval examples (eval/tasks.hpp) with a model, on every device.
//
//   exact_match:     greedy generation of answer.size() tokens after the prompt (eval/generate.hpp,
//                    KV cache); correct when they equal the answer, token for token.
//   log_likelihood:  one teacher-forced pass over prompt + answer (eval/likelihood.hpp): the log
//                    probability of the answer's tokens given what precedes them; correct when every
//                    answer token and every inline target (MQAR's earlier queries) is the model's
//                    top-1 choice at its position.
// Inputs are clean, as at inference. Examples run `batch_rows` at a time (any lengths).
#pragma once

#include <meap/core/error.hpp>
#include <meap/eval/generate.hpp>
#include <meap/eval/likelihood.hpp>
#include <meap/eval/tasks.hpp>
#include <meap/nn/llama.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace meap::eval {

enum class scoring { exact_match, log_likelihood };

inline std::string_view to_string(scoring method) {
  return method == scoring::exact_match ? "exact_match" : "log_likelihood";
}

inline scoring parse_scoring(std::string_view name) {
  if (name == "exact_match" || name == "generate") return scoring::exact_match;
  if (name == "log_likelihood" || name == "likelihood") return scoring::log_likelihood;
  throw_argument_error("meap::eval::parse_scoring", "scoring", std::string(name),
                       "exact_match (or generate) or log_likelihood (or likelihood)");
}

struct example_score {
  bool correct = false;
  // log_likelihood scoring: sum of log p over the answer's tokens (nats); NaN under exact_match.
  double answer_log_likelihood = std::numeric_limits<double>::quiet_NaN();
  std::vector<std::int32_t> generated;  // exact_match: what the model wrote
};

template <class P, device Device>
std::vector<example_score> score_examples(const Device& device, const nn::llama_model<P, Device>& model,
                                          const std::vector<task_example>& examples, scoring method,
                                          index_t batch_rows = 8) {
  constexpr std::string_view function = "meap::eval::score_examples";
  check_argument(batch_rows >= 1, function, "batch_rows", batch_rows, "at least one example per forward pass");
  for (std::size_t e = 0; e < examples.size(); ++e) {
    const auto& example = examples[e];
    check_argument(!example.prompt.empty() && !example.answer.empty(), function, "examples",
                   "example " + std::to_string(e) + " with a prompt of " + std::to_string(example.prompt.size()) +
                       " and an answer of " + std::to_string(example.answer.size()) + " tokens",
                   "a non-empty prompt and answer");
    const auto needed = static_cast<index_t>(example.prompt.size() + example.answer.size() - 1);
    check_argument(needed <= model.config().max_seq, function, "examples",
                   "example " + std::to_string(e) + " needing " + std::to_string(needed) + " positions",
                   "prompt + answer - 1 <= max_seq = " + std::to_string(model.config().max_seq));
  }
  std::vector<example_score> result(examples.size());
  const auto batch = static_cast<std::size_t>(batch_rows);
  for (std::size_t first = 0; first < examples.size(); first += batch) {
    const std::size_t count = std::min(batch, examples.size() - first);
    if (method == scoring::exact_match) {
      std::vector<std::vector<std::int32_t>> prompts;
      std::size_t longest_answer = 0;
      for (std::size_t i = 0; i < count; ++i) {
        prompts.push_back(examples[first + i].prompt);
        longest_answer = std::max(longest_answer, examples[first + i].answer.size());
      }
      generation_options options;
      options.max_new_tokens = static_cast<index_t>(longest_answer);
      const auto generated = generate(device, model, prompts, options);
      for (std::size_t i = 0; i < count; ++i) {
        const auto& answer = examples[first + i].answer;
        auto& out = result[first + i];
        out.generated.assign(generated[i].tokens.begin(),
                             generated[i].tokens.begin() +
                                 static_cast<std::ptrdiff_t>(std::min(answer.size(), generated[i].tokens.size())));
        out.correct = out.generated == answer;
      }
    } else {
      std::vector<scored_sequence> sequences(count);
      for (std::size_t i = 0; i < count; ++i) {
        const auto& example = examples[first + i];
        auto& sequence = sequences[i];
        sequence.tokens = example.prompt;
        sequence.tokens.insert(sequence.tokens.end(), example.answer.begin(), example.answer.end() - 1);
        for (std::size_t k = 0; k < example.answer.size(); ++k)
          sequence.targets.push_back({static_cast<index_t>(example.prompt.size() - 1 + k), example.answer[k]});
        for (const auto& [position, id] : example.inline_targets) sequence.targets.push_back({position, id});
      }
      const auto scores = score_targets(device, model, sequences, batch_rows);
      for (std::size_t i = 0; i < count; ++i) {
        const std::size_t answer_tokens = examples[first + i].answer.size();
        double answer = 0.0;
        for (std::size_t k = 0; k < answer_tokens; ++k) answer += scores[i].log_likelihood[k];
        result[first + i].answer_log_likelihood = answer;
        result[first + i].correct = scores[i].all_top1();
      }
    }
  }
  return result;
}

}  // namespace meap::eval
