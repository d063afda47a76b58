// Fine-tuning on the CPU: the batches the fine-tuner builds against rows written out by hand
// (both layouts, NTP, packed and padded), the short-answer rule, packing equal to one sequence
// per row (loss and gradients), masks redrawn each epoch, the loss falling, a bit-identical
// resume, refused inputs; and the Hugging Face side: sharded bfloat16 checkpoints, growing the
// vocabulary for [MASK] without changing any old logit.
#include <meap/nn/vocabulary.hpp>
#include <meap/train/checkpoint.hpp>
#include <meap/train/finetune.hpp>

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <vector>

#include "io/support.hpp"
#include "support/errors.hpp"

namespace finetune {

const meap::cpu host;
using meap_test::error_says;
using meap::data::instruction_example;
using ids = std::vector<std::int32_t>;
constexpr std::int32_t I = meap::ignore_index;
constexpr std::int32_t M = 31;  // [MASK]

meap::nn::llama_config tiny_config(bool tied = false) {
  meap::nn::llama_config c;
  c.vocab = 32;
  c.d_model = 32;
  c.layers = 2;
  c.heads = 2;
  c.kv_heads = 1;
  c.ffn = 64;
  c.max_seq = 64;
  c.tied_head = tied;
  return c;
}

// ex0 has a 3-token answer (duplicated when min_answer_tokens < 3), ex1 and ex2 short ones.
std::vector<instruction_example> three_examples() {
  return {{{1, 2}, {3, 4, 5}, 1}, {{6}, {7, 8}, 2}, {{9, 10, 11}, {12}, 3}};
}

meap::train::finetune_options hand_options() {
  meap::train::finetune_options o;
  o.copy.ratio = 0.5;  // k = max(1, floor(0.5 n)): one of 2 or 3 answer tokens masked
  o.copy.min_answer_tokens = 2;
  o.mask_id = M;
  o.pad_id = 0;
  o.row_length = 16;
  o.rows_per_step = 2;
  o.shuffle = false;
  o.seed = 3;
  o.training.optimizer.lr = 1e-3;
  o.training.schedule = {1e-3, 1e-4, 0, 10};
  return o;
}

ids row_of(const meap::tensor<std::int32_t, meap::cpu>& t, meap::index_t r) {
  const auto v = t.view();
  ids out;
  for (meap::index_t i = 0; i < v.size(1); ++i) out.push_back(v(r, i));
  return out;
}

ids concat(std::initializer_list<ids> parts) {
  ids out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}
// The answer as the masked copy shows it, and the copy's labels (the original token one position
// earlier, at the masked token only), given which answer token was masked (read from the batch:
// the draw itself is duplicated_copy's, tested in test_masking).
ids masked_copy(const ids& answer, std::size_t hidden) {
  ids out = answer;
  out[hidden] = M;
  return out;
}
ids copy_labels(std::size_t prompt_length, const ids& answer, std::size_t hidden) {  // over [P, A']
  ids out(prompt_length + answer.size(), I);
  out[prompt_length - 1 + hidden] = answer[hidden];
  return out;
}
// Where M is in row r between columns [from, to), as an index from `from`; fails unless exactly one.
std::size_t only_mask(const meap::tensor<std::int32_t, meap::cpu>& t, meap::index_t r, meap::index_t from, meap::index_t to) {
  std::size_t found = 0, n = 0;
  for (meap::index_t c = from; c < to; ++c)
    if (t.view()(r, c) == M) found = static_cast<std::size_t>(c - from), ++n;
  BOOST_TEST_REQUIRE(n == 1u);
  return found;
}

ids repeat(std::int32_t value, int n) { return ids(static_cast<std::size_t>(n), value); }
ids count(int n) {
  ids out;
  for (int i = 0; i < n; ++i) out.push_back(i);
  return out;
}

#define CHECK_ROW(tensor, r, expected)                                 \
  do {                                                                 \
    const ids got_ = row_of(tensor, r), want_ = (expected);            \
    BOOST_TEST(got_ == want_, boost::test_tools::per_element());       \
  } while (0)

// A learnable fine-tuning set: the answer continues the chain x -> (5x + 3) mod 15 (+1) from the
// prompt's last token, so every answer token follows from the one before it.
std::vector<instruction_example> chain_examples(int n, int answer_length, std::uint64_t seed) {
  std::vector<instruction_example> out;
  meap::philox_stream rng(seed, 0);
  for (int i = 0; i < n; ++i) {
    instruction_example e;
    const int prompt_length = 2 + static_cast<int>(rng.next_below(4));
    for (int t = 0; t < prompt_length; ++t) e.prompt.push_back(1 + static_cast<std::int32_t>(rng.next_below(15)));
    std::int32_t x = e.prompt.back() - 1;
    for (int t = 0; t < answer_length; ++t) {
      x = (5 * x + 3) % 15;
      e.answer.push_back(x + 1);
    }
    e.line = static_cast<std::uint64_t>(i + 1);
    out.push_back(std::move(e));
  }
  return out;
}

using temp_dir = io_test::scratch_directory;

}  // namespace finetune

BOOST_AUTO_TEST_SUITE(finetune)

BOOST_AUTO_TEST_CASE(concatenated_packed_rows_match_the_hand_written_batch) {
  meap::nn::llama_model<meap::fp32> model(tiny_config());
  meap::train::finetuner tuner(model, three_examples(), hand_options());
  BOOST_TEST(tuner.plan().duplicated(0));
  BOOST_TEST(!tuner.plan().duplicated(1));  // 2 answer tokens: not more than min_answer_tokens = 2
  BOOST_TEST(tuner.plan().steps_in_epoch(0) == 1);
  const auto b = tuner.plan().batch(0);
  // Row 0: [P, A, P, A'] of ex0 (10), then [P, A] of ex1 (3), then padding; ex2 (4) needs a new row.
  // The label of the last prompt token of the copy is the first answer token only when masked.
  const std::size_t h = only_mask(b.input_ids, 0, 7, 10);
  const ids answer{3, 4, 5};
  CHECK_ROW(b.input_ids, 0, concat({{1, 2, 3, 4, 5, 1, 2}, masked_copy(answer, h), {6, 7, 8}, repeat(0, 3)}));
  CHECK_ROW(b.labels, 0, concat({{I, 3, 4, 5, I}, copy_labels(2, answer, h), {7, 8, I}, repeat(I, 3)}));
  CHECK_ROW(b.position_ids, 0, concat({count(10), count(3), count(3)}));
  CHECK_ROW(b.segment_ids, 0, concat({repeat(0, 10), repeat(1, 3), repeat(2, 3)}));
  CHECK_ROW(b.input_ids, 1, concat({{9, 10, 11, 12}, repeat(0, 12)}));
  CHECK_ROW(b.labels, 1, concat({{I, I, 12, I}, repeat(I, 12)}));
  CHECK_ROW(b.position_ids, 1, concat({count(4), count(12)}));
  CHECK_ROW(b.segment_ids, 1, concat({repeat(0, 4), repeat(1, 12)}));
  BOOST_TEST(b.examples == 3);
  BOOST_TEST(b.duplicated == 1);
  BOOST_TEST(b.masked == 1);
}

BOOST_AUTO_TEST_CASE(separate_rows_padded_and_ntp_match_the_hand_written_batches) {
  meap::nn::llama_model<meap::fp32> model(tiny_config());
  {  // separate_rows, packed: [P, A] and [P, A'] are two segments.
    auto o = hand_options();
    o.copy.layout = meap::masking::layout::separate_rows;
    meap::train::finetuner tuner(model, three_examples(), o);
    const auto b = tuner.plan().batch(0);
    const std::size_t h = only_mask(b.input_ids, 0, 7, 10);
    const ids answer{3, 4, 5};
    CHECK_ROW(b.input_ids, 0, concat({{1, 2, 3, 4, 5}, {1, 2}, masked_copy(answer, h), {6, 7, 8}, repeat(0, 3)}));
    CHECK_ROW(b.labels, 0, concat({{I, 3, 4, 5, I}, copy_labels(2, answer, h), {7, 8, I}, repeat(I, 3)}));
    CHECK_ROW(b.position_ids, 0, concat({count(5), count(5), count(3), count(3)}));
    CHECK_ROW(b.segment_ids, 0, concat({repeat(0, 5), repeat(1, 5), repeat(2, 3), repeat(3, 3)}));
    CHECK_ROW(b.input_ids, 1, concat({{9, 10, 11, 12}, repeat(0, 12)}));
  }
  {  // padded: one sequence per row; 3 sequences in rows of a 2-row step: 2 steps, the last
     // filled up with a padding row.
    auto o = hand_options();
    o.filling = meap::train::row_filling::padded;
    meap::train::finetuner tuner(model, three_examples(), o);
    BOOST_TEST(tuner.plan().steps_in_epoch(0) == 2);
    const auto first = tuner.plan().batch(0), second = tuner.plan().batch(1);
    const std::size_t h = only_mask(first.input_ids, 0, 7, 10);
    CHECK_ROW(first.input_ids, 0, concat({{1, 2, 3, 4, 5, 1, 2}, masked_copy({3, 4, 5}, h), repeat(0, 6)}));
    CHECK_ROW(first.labels, 0, concat({{I, 3, 4, 5, I}, copy_labels(2, {3, 4, 5}, h), repeat(I, 6)}));
    CHECK_ROW(first.input_ids, 1, concat({{6, 7, 8}, repeat(0, 13)}));
    CHECK_ROW(first.segment_ids, 1, concat({repeat(0, 3), repeat(1, 13)}));
    CHECK_ROW(second.input_ids, 0, concat({{9, 10, 11, 12}, repeat(0, 12)}));
    CHECK_ROW(second.input_ids, 1, repeat(0, 16));
    CHECK_ROW(second.labels, 1, repeat(I, 16));
    BOOST_TEST(second.examples == 1);
  }
  {  // ntp: [P, A] for every example, whatever its answer's length; no mask id needed.
    auto o = hand_options();
    o.objective = meap::train::finetune_objective::ntp;
    o.mask_id = -1;
    meap::train::finetuner tuner(model, three_examples(), o);
    BOOST_TEST(!tuner.plan().duplicated(0));
    const auto b = tuner.plan().batch(0);
    CHECK_ROW(b.input_ids, 0, concat({{1, 2, 3, 4, 5}, {6, 7, 8}, {9, 10, 11, 12}, repeat(0, 4)}));
    CHECK_ROW(b.labels, 0, concat({{I, 3, 4, 5, I}, {7, 8, I}, {I, I, 12, I}, repeat(I, 4)}));
    BOOST_TEST(b.masked == 0);
  }
  {  // The short-answer rule is the caller's: min_answer_tokens = 1 duplicates ex1 too.
    auto o = hand_options();
    o.copy.min_answer_tokens = 1;
    meap::train::finetuner tuner(model, three_examples(), o);
    BOOST_TEST(tuner.plan().duplicated(1));
    BOOST_TEST(!tuner.plan().duplicated(2));
    const auto b = tuner.plan().batch(0);
    // ex0 (10 tokens) and ex1 duplicated, [6, 7, 8, 6, A'] (6 tokens), fill row 0 exactly.
    const std::size_t h0 = only_mask(b.input_ids, 0, 7, 10), h1 = only_mask(b.input_ids, 0, 14, 16);
    CHECK_ROW(b.input_ids, 0,
              concat({{1, 2, 3, 4, 5, 1, 2}, masked_copy({3, 4, 5}, h0), {6, 7, 8, 6}, masked_copy({7, 8}, h1)}));
    CHECK_ROW(b.labels, 0,
              concat({{I, 3, 4, 5, I}, copy_labels(2, {3, 4, 5}, h0), {7, 8, I}, copy_labels(1, {7, 8}, h1)}));
    CHECK_ROW(b.segment_ids, 0, concat({repeat(0, 10), repeat(1, 6)}));
    CHECK_ROW(b.position_ids, 0, concat({count(10), count(6)}));
    CHECK_ROW(b.input_ids, 1, concat({{9, 10, 11, 12}, repeat(0, 12)}));
  }
}

BOOST_AUTO_TEST_CASE(answers_are_cut_to_the_row_never_the_prompt) {
  meap::nn::llama_model<meap::fp32> model(tiny_config());
  auto o = hand_options();
  o.row_length = 8;
  // ex0 duplicated needs 2 (2 + 3) = 10 > 8: the answer is cut to floor(8 / 2) - 2 = 2 tokens,
  // which is not more than min_answer_tokens: one plain row [P, A] = [1, 2, 3, 4, 5].
  std::vector<instruction_example> data{{{1, 2}, {3, 4, 5}, 1}, {{1, 2, 3, 4, 5}, {6, 7, 8, 9, 10, 11}, 2}};
  meap::train::finetuner tuner(model, data, o);
  BOOST_TEST(!tuner.plan().duplicated(0));
  const auto b = tuner.plan().batch(0);
  CHECK_ROW(b.input_ids, 0, ids({1, 2, 3, 4, 5, 0, 0, 0}));
  CHECK_ROW(b.input_ids, 1, ids({1, 2, 3, 4, 5, 6, 7, 8}));  // plain, answer cut to 3 tokens
  CHECK_ROW(b.labels, 1, ids({I, I, I, I, 6, 7, 8, I}));
}

BOOST_AUTO_TEST_CASE(packing_gives_the_loss_and_gradients_of_one_sequence_per_row) {
  const auto data = chain_examples(6, 12, 4);
  std::vector<float> gradients[2];
  double losses[2] = {0, 0};
  for (const auto filling : {meap::train::row_filling::packed, meap::train::row_filling::padded}) {
    meap::nn::llama_model<meap::fp32> model(tiny_config());
    model.initialize(11);
    auto o = hand_options();
    o.copy.ratio = 0.3;
    o.copy.min_answer_tokens = 4;
    o.row_length = 64;
    o.rows_per_step = 6;  // one step holds every example either way
    o.filling = filling;
    meap::train::finetuner tuner(model, data, o);
    BOOST_TEST_REQUIRE(tuner.plan().steps_in_epoch(0) == 1);
    const auto report = tuner.step();
    BOOST_TEST_REQUIRE(!report.skipped);
    const int k = filling == meap::train::row_filling::packed ? 0 : 1;
    losses[k] = report.loss;
    const auto g = model.store().grad_flat();
    gradients[k].assign(g.data(), g.data() + g.numel());
  }
  BOOST_TEST(std::fabs(losses[0] - losses[1]) <= 1e-6 * std::fabs(losses[1]));
  double worst = 0, scale = 0;
  for (std::size_t i = 0; i < gradients[0].size(); ++i) {
    worst = std::max(worst, double(std::fabs(gradients[0][i] - gradients[1][i])));
    scale = std::max(scale, double(std::fabs(gradients[1][i])));
  }
  BOOST_TEST_MESSAGE("packed vs padded: loss " << losses[0] << " / " << losses[1] << ", gradient max diff " << worst
                                               << " of max " << scale);
  BOOST_TEST(scale > 0.0);
  BOOST_TEST(worst <= 1e-5 * scale);
}

BOOST_AUTO_TEST_CASE(masks_are_redrawn_each_epoch_and_the_order_is_reshuffled) {
  meap::nn::llama_model<meap::fp32> model(tiny_config());
  auto o = hand_options();
  o.copy.ratio = 0.25;
  o.copy.min_answer_tokens = 4;
  o.row_length = 64;
  o.rows_per_step = 8;
  o.filling = meap::train::row_filling::padded;
  o.shuffle = false;
  const auto data = chain_examples(8, 16, 5);
  meap::train::finetuner tuner(model, data, o);
  BOOST_TEST_REQUIRE(tuner.plan().steps_in_epoch(0) == 1);
  const auto e0 = tuner.plan().batch(0), e1 = tuner.plan().batch(1), again = tuner.plan().batch(0);
  BOOST_TEST(e0.epoch == 0u);
  BOOST_TEST(e1.epoch == 1u);
  BOOST_TEST(std::memcmp(e0.input_ids.data(), again.input_ids.data(), e0.input_ids.bytes()) == 0);  // a pure function
  int differing_rows = 0;
  for (meap::index_t r = 0; r < 8; ++r) differing_rows += row_of(e0.input_ids, r) != row_of(e1.input_ids, r);
  BOOST_TEST(differing_rows >= 6);  // same examples in the same order, new masks
  BOOST_TEST(e0.masked == e1.masked);  // k per example is fixed
  // With shuffling, epochs visit the examples in different orders (the same multiset of rows).
  o.shuffle = true;
  meap::train::finetuner shuffled(model, data, o);
  const auto rows0 = shuffled.plan().rows_of_epoch(0), rows1 = shuffled.plan().rows_of_epoch(1);
  std::vector<meap::index_t> order0, order1;
  for (const auto& row : rows0) order0.push_back(row.front().example);
  for (const auto& row : rows1) order1.push_back(row.front().example);
  BOOST_TEST(order0 != order1);
  std::sort(order0.begin(), order0.end());
  std::sort(order1.begin(), order1.end());
  BOOST_TEST(order0 == order1);
}

BOOST_AUTO_TEST_CASE(fine_tuning_loss_falls_with_ntp_and_with_meap) {
  for (const auto objective : {meap::train::finetune_objective::ntp, meap::train::finetune_objective::meap}) {
    meap::nn::llama_model<meap::fp32> model(tiny_config());
    model.initialize(2);
    auto o = hand_options();
    o.objective = objective;
    o.copy.ratio = 0.2;
    o.copy.min_answer_tokens = 4;
    o.row_length = 64;
    o.rows_per_step = 4;
    o.training.optimizer.lr = 1e-2;
    o.training.optimizer.weight_decay = 0.0;
    o.epochs = 6;
    o.training.schedule = {1e-2, 1e-3, 5, 0};  // total_steps: the plan's
    meap::train::finetuner tuner(model, chain_examples(32, 10, 6), o);
    const auto total = tuner.total_steps();
    BOOST_TEST(total == tuner.plan().total_steps(6));
    double first = 0, last = 0;
    for (std::uint64_t s = 0; s < total; ++s) {
      const auto report = tuner.step();
      BOOST_TEST_REQUIRE(!report.skipped);
      if (s == 0) first = report.loss;
      last = report.loss;
    }
    BOOST_TEST_MESSAGE(meap::train::objective_name(objective) << ": " << total << " steps, loss " << first << " -> " << last);
    BOOST_TEST(first > 2.0);
    BOOST_TEST(last < 0.5 * first);
  }
}

BOOST_AUTO_TEST_CASE(resume_is_bit_identical_across_epochs) {
  temp_dir dir;
  const auto data = chain_examples(10, 8, 7);
  auto o = hand_options();
  o.copy.ratio = 0.3;
  o.copy.min_answer_tokens = 3;
  o.row_length = 32;
  o.rows_per_step = 2;
  o.training.micro_batches = 2;
  const auto run = [&](std::uint64_t from, std::uint64_t to, meap::nn::llama_model<meap::fp32>& model,
                       const std::filesystem::path* resume_from, const std::filesystem::path* save_to) {
    meap::train::finetuner tuner(model, data, o);
    if (resume_from != nullptr) tuner.resume(*resume_from);
    BOOST_TEST_REQUIRE(tuner.next_step() == from);
    std::vector<double> losses;
    while (tuner.next_step() < to) losses.push_back(tuner.step().loss);
    if (save_to != nullptr) tuner.save(*save_to);
    return losses;
  };
  o.epochs = 3;
  const meap::train::finetune_plan plan(data, o, tiny_config());
  const std::uint64_t total = plan.total_steps(), split = static_cast<std::uint64_t>(plan.steps_in_epoch(0)) + 1;  // in epoch 1
  meap::nn::llama_model<meap::fp32> straight(tiny_config());
  straight.initialize(8);
  BOOST_TEST_REQUIRE(total > split + 2);
  const auto all = run(0, total, straight, nullptr, nullptr);

  meap::nn::llama_model<meap::fp32> first(tiny_config());
  first.initialize(8);
  const auto checkpoint = dir.path() / "ckpt";
  const auto head = run(0, split, first, nullptr, &checkpoint);
  meap::nn::llama_model<meap::fp32> second(tiny_config());
  const auto tail = run(split, total, second, &checkpoint, nullptr);
  std::vector<double> joined = head;
  joined.insert(joined.end(), tail.begin(), tail.end());
  BOOST_TEST(joined == all, boost::test_tools::per_element());
  const auto a = straight.store().master_flat(), b = second.store().master_flat();
  BOOST_TEST(std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.numel()) * sizeof(float)) == 0);

  // Other data or other options: the resume is refused, naming the difference.
  meap::nn::llama_model<meap::fp32> third(tiny_config());
  auto other_data = data;
  other_data[3].answer[0] = 2;
  meap::train::finetuner wrong_data(third, other_data, o);
  BOOST_CHECK_EXCEPTION(wrong_data.resume(checkpoint), meap::error, error_says("directory", {"run.finetune.data"}));
  auto other = o;
  other.copy.ratio = 0.2;
  meap::train::finetuner wrong_ratio(third, data, other);
  BOOST_CHECK_EXCEPTION(wrong_ratio.resume(checkpoint), meap::error, error_says("directory", {"run.finetune.copy"}));
}

BOOST_AUTO_TEST_CASE(bad_examples_and_options_are_refused) {
  meap::nn::llama_model<meap::fp32> model(tiny_config());
  const auto o = hand_options();
  const auto refuse = [&](std::vector<instruction_example> data, const meap::train::finetune_options& options,
                          const std::string& argument, std::vector<std::string> fragments) {
    BOOST_CHECK_EXCEPTION(meap::train::finetuner(model, std::move(data), options), meap::error,
                          error_says(argument, std::move(fragments)));
  };
  refuse({}, o, "examples", {"0 examples"});
  refuse({{{1}, {}, 7}}, o, "examples", {"example 0 (line 7)", "empty answer"});
  refuse({{{}, {2}, 7}}, o, "examples", {"empty prompt"});
  refuse({{repeat(1, 16), {2}, 9}}, o, "examples", {"line 9", "16-token prompt", "row_length = 16"});
  refuse({{{1, M}, {2}, 4}}, o, "examples", {"line 4", "token id 31", "mask_id = 31"});
  refuse({{{1, 40}, {2}, 4}}, o, "examples", {"token id 40", "vocab = 32"});
  auto bad = o;
  bad.mask_id = 32;
  refuse(three_examples(), bad, "mask_id", {"32", "grow_vocabulary"});
  bad = o;
  bad.mask_id = -1;
  refuse(three_examples(), bad, "mask_id", {"-1"});
  bad = o;
  bad.row_length = 65;
  refuse(three_examples(), bad, "row_length", {"65", "max_seq = 64"});
  bad = o;
  bad.training.micro_batches = 4;
  refuse(three_examples(), bad, "rows_per_step", {"micro_batches = 4"});
  bad = o;
  bad.copy.ratio = 0.0;
  refuse(three_examples(), bad, "ratio", {"0"});
}

BOOST_AUTO_TEST_CASE(a_prepared_batch_trains_as_the_pretrainer_masks_its_own_rows) {
  // Plain NTP through step(tokens) and the same rows through step(prepared_batch): the same step.
  auto tokens = meap::zeros<std::int32_t>(host, {4, 17});
  for (meap::index_t i = 0; i < tokens.numel(); ++i) tokens.data()[i] = static_cast<std::int32_t>((11 * i + 5) % 31);
  meap::train::pretrain_options o;
  o.schedule = {1e-3, 1e-4, 0, 10};
  o.micro_batches = 2;
  double losses[2] = {0, 0};
  std::vector<float> weights[2];
  for (const bool prepared : {false, true}) {
    meap::nn::llama_model<meap::fp32> model(tiny_config());
    model.initialize(6);
    meap::train::pretrainer trainer(model, std::nullopt, o);
    const auto inputs = meap::clone(host, tokens.view().slice(1, 0, 16)), labels = meap::clone(host, tokens.view().slice(1, 1, 17));
    const auto report = prepared ? trainer.step(meap::train::prepared_batch{inputs.view().as_const(), labels.view().as_const()})
                                 : trainer.step(tokens.view().as_const());
    losses[prepared ? 1 : 0] = report.loss;
    const auto w = model.store().master_flat();
    weights[prepared ? 1 : 0].assign(w.data(), w.data() + w.numel());
    BOOST_TEST(report.loss_tokens == 64);
  }
  BOOST_TEST(losses[0] == losses[1]);
  BOOST_TEST((weights[0] == weights[1]));

  // Every argument is checked before any device work, naming it.
  meap::nn::llama_model<meap::fp32> model(tiny_config());
  meap::train::pretrainer trainer(model, std::nullopt, o);
  auto input_ids = meap::zeros<std::int32_t>(host, {4, 8});
  auto labels = meap::full<std::int32_t>(host, {4, 8}, I);
  auto positions = meap::zeros<std::int32_t>(host, {4, 8});
  const auto step = [&](meap::train::prepared_batch batch) { return trainer.step(batch); };
  const auto fn = "meap::train::pretrainer::step (prepared_batch)";
  BOOST_CHECK_EXCEPTION(step({input_ids.view().slice(0, 0, 3).as_const(), labels.view().slice(0, 0, 3).as_const()}), meap::error,
                        error_says(fn, "batch.input_ids", {"multiple of micro_batches = 2"}));
  BOOST_CHECK_EXCEPTION(step({input_ids.view().as_const(), labels.view().slice(1, 0, 7).as_const()}), meap::error,
                        error_says(fn, "batch.labels", {"shape (4, 7)"}));
  labels.view()(2, 3) = 32;
  BOOST_CHECK_EXCEPTION(step({input_ids.view().as_const(), labels.view().as_const()}), meap::error,
                        error_says(fn, "batch.labels", {"32 at (2, 3)", "[0, 32)"}));
  labels.view()(2, 3) = 5;
  positions.view()(1, 1) = 64;
  BOOST_CHECK_EXCEPTION(step({input_ids.view().as_const(), labels.view().as_const(), positions.view().as_const()}), meap::error,
                        error_says(fn, "batch.position_ids", {"64 at (1, 1)", "max_seq = 64"}));
  BOOST_TEST(trainer.next_step() == 0u);  // nothing ran
}

// ---- Hugging Face checkpoints: shards, vocabulary growth -------------------------------------

BOOST_AUTO_TEST_CASE(sharded_bfloat16_checkpoints_load_like_single_files) {
  for (const bool tied : {false, true}) {
    temp_dir dir;
    meap::nn::llama_model<meap::fp32> model(tiny_config(tied));
    model.initialize(5);
    meap::train::save_model(dir.path() / "one", model, meap::dtype::bf16);
    // Each matrix is 32 x 32 or larger (2 KiB and up in bfloat16): 4 KiB shards hold one or two.
    meap::train::save_model(dir.path() / "sharded", model, meap::dtype::bf16, 0, 4096);
    BOOST_TEST(!std::filesystem::exists(dir.path() / "sharded" / "model.safetensors"));
    std::ifstream index_file(dir.path() / "sharded" / "model.safetensors.index.json");
    const auto index = nlohmann::json::parse(index_file);
    std::set<std::string> shards;
    for (const auto& [name, file] : index.at("weight_map").items()) shards.insert(file.get<std::string>());
    BOOST_TEST(shards.size() > 3u);
    BOOST_TEST(shards.count("model-00001-of-" + std::string(5 - std::to_string(shards.size()).size(), '0') +
                            std::to_string(shards.size()) + ".safetensors") == 1u);
    BOOST_TEST(index.at("weight_map").contains("lm_head.weight") == !tied);
    const auto one = meap::train::load_pretrained<meap::fp32>(dir.path() / "one");
    const auto sharded = meap::train::load_pretrained<meap::fp32>(dir.path() / "sharded");
    const auto a = one.store().master_flat(), b = sharded.store().master_flat();
    BOOST_TEST(std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.numel()) * sizeof(float)) == 0);
    // Saving a single file over the shards removes them (one version of the weights per directory).
    meap::train::save_model(dir.path() / "sharded", model, meap::dtype::bf16);
    BOOST_TEST(!std::filesystem::exists(dir.path() / "sharded" / "model.safetensors.index.json"));
    BOOST_TEST(!std::filesystem::exists(dir.path() / "sharded" / *shards.begin()));
  }
}

BOOST_AUTO_TEST_CASE(a_broken_shard_index_is_a_clear_error) {
  temp_dir dir;
  meap::nn::llama_model<meap::fp32> model(tiny_config());
  model.initialize(5);
  const auto root = dir.path() / "m";
  meap::train::save_model(root, model, meap::dtype::bf16, 0, 4096);
  const auto index_path = root / "model.safetensors.index.json";
  std::ifstream in(index_path);
  const auto index = nlohmann::json::parse(in);
  in.close();
  const auto write_index = [&](const nlohmann::json& j) { std::ofstream(index_path) << j.dump(); };
  meap::nn::llama_model<meap::fp32> target(tiny_config());
  auto j = index;
  j["weight_map"]["model.norm.weight"] = "../elsewhere.safetensors";
  write_index(j);
  BOOST_CHECK_EXCEPTION(meap::train::load_model(root, target), meap::error,
                        error_says("path", {"model.norm.weight", "plain file names"}));
  j = index;
  j["weight_map"].erase("model.norm.weight");
  write_index(j);
  BOOST_CHECK_EXCEPTION(meap::train::load_model(root, target), meap::error,
                        error_says("directory", {"no entry for 'model.norm.weight'"}));
  j = index;
  j["weight_map"]["model.norm.weight"] = "model-99999-of-99999.safetensors";
  write_index(j);
  BOOST_CHECK_THROW(meap::train::load_model(root, target), meap::error);
  write_index(nlohmann::json::array());
  BOOST_CHECK_EXCEPTION(meap::train::load_model(root, target), meap::error, error_says("path", {"weight_map"}));
  std::filesystem::remove(index_path);
  BOOST_CHECK_EXCEPTION(meap::train::load_model(root, target), meap::error,
                        error_says("directory", {"model.safetensors or model.safetensors.index.json"}));
}

BOOST_AUTO_TEST_CASE(rope_scaling_llama3_round_trips_and_other_kinds_are_refused) {
  temp_dir dir;
  auto config = tiny_config();
  config.rope_scaling = {8.0, 1.0, 4.0, 32.0};
  meap::nn::llama_model<meap::fp32> model(config);
  model.initialize(4);
  meap::train::save_model(dir.path() / "m", model);
  std::ifstream in(dir.path() / "m" / "config.json");
  const auto j = nlohmann::json::parse(in);
  BOOST_TEST(j.at("rope_scaling").at("rope_type").get<std::string>() == "llama3");
  BOOST_TEST(j.at("rope_scaling").at("original_max_position_embeddings").get<double>() == 32.0);
  const auto loaded = meap::train::load_pretrained<meap::fp32>(dir.path() / "m");
  BOOST_TEST((loaded.config().rope_scaling == config.rope_scaling));
  // The scaling reaches the attention: positions beyond the original window give other logits
  // than the same model without it.
  auto tokens = meap::zeros<std::int32_t>(host, {1, 48});
  for (meap::index_t i = 0; i < 48; ++i) tokens.data()[i] = static_cast<std::int32_t>((5 * i + 1) % 32);
  auto plain_config = config;
  plain_config.rope_scaling = {};
  meap::nn::llama_model<meap::fp32> plain(plain_config);
  plain.initialize(4);
  const auto a = loaded.logits(host, loaded.forward(host, tokens.view().as_const()));
  const auto b = plain.logits(host, plain.forward(host, tokens.view().as_const()));
  BOOST_TEST(std::memcmp(a.data(), b.data(), a.bytes()) != 0);
  // A config without rope_scaling, with null, with llama3 (also under the older key "type").
  const std::string shape = R"("vocab_size": 32, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                               "intermediate_size": 64, "max_position_embeddings": 64)";
  const auto parse = [&](const std::string& extra) {
    return meap::train::parse_hugging_face_config("{" + shape + extra + "}", "config.json");
  };
  BOOST_TEST(!parse("").rope_scaling.enabled());
  BOOST_TEST(!parse(R"(, "rope_scaling": null)").rope_scaling.enabled());
  const auto llama3 = parse(R"(, "rope_scaling": {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})");
  BOOST_TEST(llama3.rope_scaling.factor == 8.0);
  BOOST_TEST(llama3.rope_scaling.original_max_position == 8192.0);
  BOOST_CHECK_EXCEPTION(parse(R"(, "rope_scaling": {"rope_type": "linear", "factor": 2.0})"), meap::error,
                        error_says("path", {"rope_scaling of type \"linear\"", "llama3"}));
  BOOST_CHECK_EXCEPTION(parse(R"(, "rope_scaling": {"rope_type": "llama3", "factor": 8.0})"), meap::error,
                        error_says("path", {"low_freq_factor"}));
  BOOST_CHECK_EXCEPTION(parse(R"(, "rope_scaling": {"rope_type": "llama3", "factor": 0.5, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})"),
                        meap::error, error_says("rope_scaling.factor", {"0.5"}));
  BOOST_CHECK_EXCEPTION(parse(R"(, "rope_scaling": "llama3")"), meap::error, error_says("path", {"rope_scaling"}));
}

BOOST_AUTO_TEST_CASE(growing_the_vocabulary_keeps_every_old_logit) {
  for (const bool tied : {false, true}) {
    meap::nn::llama_model<meap::fp32> model(tiny_config(tied));
    model.initialize(9);
    const auto grown = meap::nn::grow_vocabulary(model, 1);
    BOOST_TEST(grown.config().vocab == 33);
    BOOST_TEST(grown.config().tied_head == tied);
    auto tokens = meap::zeros<std::int32_t>(host, {2, 12});
    for (meap::index_t i = 0; i < tokens.numel(); ++i) tokens.data()[i] = static_cast<std::int32_t>((7 * i + 3) % 32);
    const auto before = model.logits(host, model.forward(host, tokens.view().as_const()));
    const auto after = grown.logits(host, grown.forward(host, tokens.view().as_const()));
    double worst = 0, scale = 0;
    for (meap::index_t n = 0; n < before.size(0); ++n)
      for (meap::index_t v = 0; v < 32; ++v) {
        worst = std::max(worst, double(std::fabs(before.view()(n, v) - after.view()(n, v))));
        scale = std::max(scale, double(std::fabs(before.view()(n, v))));
      }
    BOOST_TEST(worst <= 1e-6 * scale);
    // The new rows are the mean of the old ones, so the new logit is the mean of the old logits.
    for (meap::index_t n = 0; n < before.size(0); ++n) {
      double mean = 0;
      for (meap::index_t v = 0; v < 32; ++v) mean += before.view()(n, v);
      BOOST_TEST(std::fabs(after.view()(n, 32) - mean / 32) <= 1e-5 * scale);
    }
    BOOST_CHECK_EXCEPTION((void)meap::nn::grow_vocabulary(model, 0), meap::error, error_says("added", {"0"}));
  }
}

BOOST_AUTO_TEST_SUITE_END()
