// meap_demo: does MEAP help a model find a key in a haystack? Trains two tiny LLaMA-style models
// from the same initialization on the same data, one with plain next-token prediction (NTP) and
// one with MEAP (15% of input tokens replaced by [MASK], same NTP loss), on a synthetic multi-query
// associative recall task, then measures retrieval accuracy by context length and needle depth.
//
//   meap_demo [--steps N] [--seed S] [--seeds N] [--out DIR] [--quick]
//
// Prints the table, writes DIR/meap_demo.csv and, when gnuplot is installed, DIR/meap_demo.png.
// The task, the vocabulary and the settings are explained in docs/demo.md. Both models train
// through the library's trainer (meap::train::pretrainer); the seed loop, the paired statistics,
// the CSV files and the plot are the studies' harness (studies/harness.hpp).
#include "harness.hpp"

#include <meap/eval/attention_analysis.hpp>
#include <meap/eval/likelihood.hpp>
#include <meap/meap.hpp>
#include <meap/nn/llama.hpp>
#include <meap/run/program.hpp>
#include <meap/train/pretrain.hpp>

#include <CLI/CLI.hpp>

#include "command_line.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace {

// ---------------------------------------------------------------------------------------------
// Vocabulary. Each hidden key-value pair is ONE token, a "pair token" that binds key k to value v
// (one of key_count * value_count ids), so a single attention layer can retrieve it: the query
// key must attend to the pair token that carries it and read its value. (The two-token MQAR
// layout "k v" needs a two-layer induction circuit, which the 10-minute CPU budget does not
// train; docs/demo.md has the numbers.) Keys, values, filler and pair tokens are disjoint ranges,
// so a key occurs exactly once in the haystack and the only way to answer is to find that pair.
constexpr std::int32_t bos_id = 0;
constexpr std::int32_t query_id = 1;  // starts the query block
constexpr std::int32_t mask_id = 2;   // [MASK]: written only by the MEAP policy, never by the generator
constexpr std::int32_t key_count = 16, value_count = 16, filler_count = 16;
constexpr std::int32_t first_key = 3;
constexpr std::int32_t first_value = first_key + key_count;
constexpr std::int32_t first_filler = first_value + value_count;
constexpr std::int32_t first_pair = first_filler + filler_count;
constexpr std::int32_t vocab_size = first_pair + key_count * value_count;

constexpr std::int32_t pair_token(std::int32_t key, std::int32_t value) {
  return first_pair + (key - first_key) * value_count + (value - first_value);
}

// Each sequence hides `pairs` key-value pairs in the haystack and asks for all of them, in a random
// order, after the QUERY marker: several queries per row give more learning signal per token
// (as in Zoology's MQAR), and evaluation scores only the needle's query.
constexpr int pairs = 8;
constexpr int queries = pairs;

// Lengths T (inputs per row; a row holds T + 1 tokens). Training cycles over train_lengths;
// evaluation covers two of them and two longer ones (256, 512) that no training row had: there
// the same 8 pairs hide in 2x and 4x more filler, which tests whether retrieval holds up as the
// haystack grows beyond what the model saw.
constexpr std::array<meap::index_t, 4> train_lengths{32, 64, 96, 128};
constexpr std::array<meap::index_t, 4> lengths{64, 128, 256, 512};  // evaluated
constexpr std::array<int, 5> depths_percent{0, 25, 50, 75, 100};

// One row of T + 1 tokens:
//   BOS, haystack (filler with the pair tokens inserted), QUERY, k_1 v_1, ..., k_Q v_Q.
// needle_depth < 0: the pairs sit at uniformly random places. Otherwise pair 0 (the needle) sits
// at that fraction of the haystack (0 = first thing after BOS, 1 = last thing before QUERY) and is
// queried first; the other pairs are random distractors. Everything is drawn from `random`.
void generate_row(std::int32_t* row, meap::index_t length, meap::philox_stream& random, double needle_depth) {
  const auto draw = [&](int bound) { return static_cast<int>(random.next_below(static_cast<std::uint32_t>(bound))); };
  const int total = static_cast<int>(length) + 1;
  const int haystack = total - 2 - 2 * queries;  // minus BOS, QUERY and the query block
  const int fillers = haystack - pairs;

  // Distinct keys (partial Fisher-Yates), values drawn freely.
  std::array<std::int32_t, key_count> keys{};
  for (int i = 0; i < key_count; ++i) keys[static_cast<std::size_t>(i)] = first_key + i;
  std::array<std::int32_t, pairs> values{};
  for (int i = 0; i < pairs; ++i) {
    std::swap(keys[static_cast<std::size_t>(i)], keys[static_cast<std::size_t>(i + draw(key_count - i))]);
    values[static_cast<std::size_t>(i)] = first_value + draw(value_count);
  }

  // The haystack is a sequence of `units`: fillers + pairs, one token each.
  // slot[u] = pair index, or -1 for a filler.
  const int units = fillers + pairs;
  std::vector<int> slot(static_cast<std::size_t>(units), -1);
  int first_random_pair = 0;
  if (needle_depth >= 0) {
    slot[static_cast<std::size_t>(static_cast<int>(needle_depth * (units - 1) + 0.5))] = 0;
    first_random_pair = 1;
  }
  for (int p = first_random_pair; p < pairs; ++p) {
    int u = draw(units);
    while (slot[static_cast<std::size_t>(u)] >= 0) u = draw(units);  // few pairs among many units: rare
    slot[static_cast<std::size_t>(u)] = p;
  }
  int t = 0;
  row[t++] = bos_id;
  for (const int p : slot) {
    if (p < 0) {
      row[t++] = first_filler + draw(filler_count);
    } else {
      row[t++] = pair_token(keys[static_cast<std::size_t>(p)], values[static_cast<std::size_t>(p)]);
    }
  }

  // Query order: a random permutation, with the needle first when there is one.
  std::array<int, pairs> order{};
  for (int i = 0; i < pairs; ++i) order[static_cast<std::size_t>(i)] = i;
  for (int i = first_random_pair; i < pairs - 1; ++i)
    std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(i + draw(pairs - i))]);
  row[t++] = query_id;
  for (int q = 0; q < queries; ++q) {
    row[t++] = keys[static_cast<std::size_t>(order[static_cast<std::size_t>(q)])];
    row[t++] = values[static_cast<std::size_t>(order[static_cast<std::size_t>(q)])];
  }
}

// The input position whose next-token prediction is the first query's value: the first query key.
meap::index_t first_answer_position(meap::index_t length) { return length + 1 - 2 * queries; }

// ---------------------------------------------------------------------------------------------
struct settings {
  std::int64_t steps = 4000;
  std::uint64_t seed = 1;  // the first seed
  int seeds = 1;           // seeds seed, seed + 1, ...: each trains both models from its own init and data
  std::filesystem::path out = ".";
  int eval_rows = 128;  // held-out rows per (length, depth) cell
  bool quick = false;
  bool answers_only = false;  // --loss answers: labels only on the query answers (Zoology's MQAR loss)
};

// The command line through CLI11: --help, typed and range-checked options, errors that name the
// option. Sets `exit_code` (0 for --help, non-zero for an error) when the program should stop.
settings parse_arguments(int argc, char** argv, int& exit_code) {
  settings s;
  std::int64_t steps = 0;
  std::string loss = "full";
  std::string out = ".";
  CLI::App app{"meap_demo: NTP against MEAP on multi-query associative recall, trained and evaluated on the CPU"};
  app.add_option("--steps", steps, "optimizer steps per model (default 4000; --quick: 400)")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 40));
  meap_studies::add_seed_options(
      app, s.seed, s.seeds, out, s.quick,
      {.seed = "initialization, data and masking seed",
       .seeds = "how many seeds, from --seed on: 1 shows one pair of models; the study (docs/fidelity.md) runs 5 or "
                "more and reports mean, spread and paired tests",
       .out = "where meap_demo.csv and meap_demo.png go",
       .quick = "a ~1 minute smoke run: fewer steps and evaluation rows"});
  app.add_option("--loss", loss,
                 "full: next-token loss on every position, as the method trains; answers: only the query answers "
                 "carry a label, as Zoology trains MQAR")
      ->check(CLI::IsMember({"full", "answers"}))
      ->capture_default_str();
  if (const auto stop = meap_studies::parse_command_line(app, argc, argv)) {
    exit_code = *stop;
    return s;
  }
  s.out = out;
  s.answers_only = loss == "answers";
  if (s.quick) s.eval_rows = 32;
  s.steps = steps > 0 ? steps : (s.quick ? 400 : s.steps);
  return s;
}

// ---------------------------------------------------------------------------------------------
meap::nn::llama_config model_config() {
  meap::nn::llama_config c;
  c.vocab = vocab_size;
  c.d_model = 64;
  c.layers = 2;  // recall needs an induction circuit: at least two attention layers
  c.heads = 4;
  c.kv_heads = 4;
  c.ffn = 176;
  c.max_seq = lengths.back();  // the longest evaluated length
  return c;
}

// Rows per step: about the same number of tokens whatever the step's length.
constexpr meap::index_t tokens_per_step = 1024;

// Training step s uses length train_lengths[s % 4], and the
// same data reach both models (the generator is keyed by (data seed, step, row) only).
meap::tensor<std::int32_t, meap::cpu> training_batch(std::uint64_t seed, std::uint64_t step) {
  const meap::index_t length = train_lengths[step % train_lengths.size()];
  const meap::index_t rows = tokens_per_step / length;
  auto tokens = meap::zeros<std::int32_t>(meap::cpu{}, {rows, length + 1});
  for (meap::index_t b = 0; b < rows; ++b) {
    meap::philox_stream random(seed, step, static_cast<std::uint32_t>(b));
    generate_row(tokens.data() + b * (length + 1), length, random, -1.0);
  }
  return tokens;
}

// Trains `model` for s.steps steps through the library's trainer (meap::train::pretrainer: forward,
// fused selective cross-entropy, backward, gradient-norm clipping, AdamW, the schedule), the
// trainer the method's runs use. The demo builds each step's batch itself and hands it over as a
// prepared_batch: the inputs, masked here by meap::masking::apply with the MEAP policy (the same
// call, keyed the same way, that pretrainer::step(tokens) makes), and the labels, which --loss
// answers restricts to the query answers, a choice step(tokens) does not offer. With --loss full
// (the default) every position carries its next token as the label, exactly the method's loss;
// most targets here (filler, pair tokens, query keys) are random and unpredictable, so the loss
// stays high and only the answers can be learned. --loss answers labels only the query answers, as
// Zoology trains MQAR. Both models get the same labels either way.
void train(const char* name, meap::nn::llama_model<meap::fp32, meap::cpu>& model,
           std::optional<meap::masking::fixed_ratio> policy, const settings& s, std::uint64_t seed) {
  meap::train::pretrain_options options;
  options.optimizer.weight_decay = 0.01;
  options.schedule = {3e-3, 3e-4, std::min<std::int64_t>(60, s.steps), s.steps};
  options.clip_norm = 1.0;
  meap::train::pretrainer<meap::fp32, meap::cpu> trainer(model, std::nullopt, options);  // masks come prepared
  meap::masking::pretraining_options masking;
  masking.seed = seed;
  masking.mask_id = mask_id;
  // BOS and the query marker are structure, not content: never masked. Keys and values are
  // masked uniformly, as the method does, in the haystack and in the query block alike.
  masking.special_ids = {bos_id, query_id};

  const auto steps = static_cast<std::uint64_t>(s.steps);
  const meap_studies::step_progress progress(name, steps, "tokens");
  double smoothed = 0.0, tokens = 0.0;
  for (std::uint64_t step = 0; step < steps; ++step) {
    const auto batch = training_batch(seed + 1000, step);
    const meap::index_t rows = batch.size(0), length = batch.size(1) - 1;
    meap::tensor<std::int32_t, meap::cpu> input_ids;
    meap::index_t masked = 0;
    if (policy) {
      masking.step = step;
      auto masked_batch = meap::masking::apply(meap::cpu{}, *policy, batch.view(), masking);
      for (meap::index_t i = 0; i < masked_batch.mask.numel(); ++i) masked += masked_batch.mask.data()[i];
      input_ids = std::move(masked_batch.input_ids);
    } else {
      input_ids = meap::clone(meap::cpu{}, batch.view().slice(1, 0, length).as_const());
    }
    auto labels = meap::full<std::int32_t>(meap::cpu{}, meap::dims{rows, length}, meap::ignore_index);
    for (meap::index_t b = 0; b < rows; ++b) {
      if (s.answers_only) {
        for (int q = 0; q < queries; ++q) {
          const meap::index_t at = first_answer_position(length) + 2 * q;  // a query key; its target is the value
          labels.data()[b * length + at] = batch.view()(b, at + 1);
        }
      } else {
        for (meap::index_t t = 0; t < length; ++t) labels.data()[b * length + t] = batch.view()(b, t + 1);
      }
    }

    const auto report = trainer.step(
        meap::train::prepared_batch{input_ids.view().as_const(), labels.view().as_const(), {}, {}, masked});
    if (report.skipped)
      std::fprintf(stderr, "  %s step %llu: update skipped (%s)\n", name, static_cast<unsigned long long>(step),
                   report.skip_reason.c_str());

    smoothed = step == 0 ? report.loss : 0.95 * smoothed + 0.05 * report.loss;
    tokens += static_cast<double>(report.tokens);
    if ((step + 1) % 100 == 0 || step + 1 == steps) progress.print(step + 1, smoothed, tokens, report.lr);
  }
}

// ---------------------------------------------------------------------------------------------
// Needle accuracy (argmax of the logits at the answer position, no masking at inference) for
// every (length, depth) cell on held-out rows: a data seed no training step uses.
using grid = std::array<std::array<int, depths_percent.size()>, lengths.size()>;  // correct answers

// Held-out rows of one (length, depth) cell: a data seed no training step uses.
meap::tensor<std::int32_t, meap::cpu> evaluation_rows(const settings& s, std::uint64_t seed, std::size_t li,
                                                      std::size_t di) {
  const meap::index_t rows = s.eval_rows, length = lengths[li];
  auto tokens = meap::zeros<std::int32_t>(meap::cpu{}, {rows, length + 1});
  for (meap::index_t b = 0; b < rows; ++b) {
    meap::philox_stream random(seed + 0xe7a1'0000ull, li * depths_percent.size() + di, static_cast<std::uint32_t>(b));
    generate_row(tokens.data() + b * (length + 1), length, random, depths_percent[di] / 100.0);
  }
  return tokens;
}

// The scoring is meap::eval::score_targets: one target per row (the needle's value at its query
// key), top-1 over the whole vocabulary, through the cached inference path (nothing is kept for a
// backward pass, so 128 rows of T = 512 fit in a few MB).
grid evaluate(const meap::nn::llama_model<meap::fp32, meap::cpu>& model, const settings& s, std::uint64_t seed) {
  grid correct{};
  for (std::size_t li = 0; li < lengths.size(); ++li) {
    const meap::index_t length = lengths[li], at = first_answer_position(length);
    for (std::size_t di = 0; di < depths_percent.size(); ++di) {
      const auto tokens = evaluation_rows(s, seed, li, di);
      std::vector<meap::eval::scored_sequence> sequences(static_cast<std::size_t>(s.eval_rows));
      for (meap::index_t b = 0; b < s.eval_rows; ++b) {
        auto& sequence = sequences[static_cast<std::size_t>(b)];
        sequence.tokens.assign(tokens.data() + b * (length + 1), tokens.data() + b * (length + 1) + length);
        sequence.targets = {{at, tokens.view()(b, at + 1)}};
      }
      for (const auto& score : meap::eval::score_targets(meap::cpu{}, model, sequences, 16))
        correct[li][di] += score.top1[0] ? 1 : 0;
    }
  }
  return correct;
}

double percent(int correct, int total) { return total > 0 ? 100.0 * correct / total : 0.0; }

// ---------------------------------------------------------------------------------------------
// The paper's attention analysis (meap::eval::analyze_attention, definitions in docs/eval.md) on
// held-out rows of T = 128 with the needle at 50% depth: each row as it is, and the same row under
// the MEAP policy the training used. The query row is the needle's query key (where the answer is
// predicted); the answer span is the needle's pair token.
struct attention_summary {
  double pooled_decay = 0;      // attention the masked positions lose, pooled over layers and heads
  double variance_change = 0;   // relative change of the variance over unmasked keys (mean of heads)
  double answer_share_clean = 0, answer_share_masked = 0;  // attention the query puts on the needle
};

attention_summary analyze(const meap::nn::llama_model<meap::fp32, meap::cpu>& model, const settings& s,
                          std::uint64_t seed) {
  constexpr std::size_t length_index = 1, depth_index = 2;  // T = 128, 50%
  const meap::index_t length = lengths[length_index], rows = std::min<meap::index_t>(32, s.eval_rows);
  const auto tokens = evaluation_rows(s, seed + 77, length_index, depth_index);
  const auto sample = meap::clone(meap::cpu{}, tokens.view().slice(0, 0, rows).as_const());
  meap::masking::pretraining_options masking;
  masking.seed = seed + 0xa77e'0000ull;  // a masking stream no training step used
  masking.mask_id = mask_id;
  masking.special_ids = {bos_id, query_id};
  const auto masked = meap::masking::apply(meap::cpu{}, meap::masking::fixed_ratio{0.15}, sample.view().as_const(), masking);
  const auto clean = meap::clone(meap::cpu{}, sample.view().slice(1, 0, length).as_const());
  meap::eval::attention_analysis_options options;
  options.mask_id = mask_id;
  const meap::index_t query = first_answer_position(length);
  for (meap::index_t b = 0; b < rows; ++b) {
    // The needle is the pair token that carries the first query key (keys are distinct in a row).
    const std::int32_t key = sample.view()(b, query);
    meap::index_t needle = 0;
    for (meap::index_t t = 1; t < query && needle == 0; ++t) {
      const std::int32_t id = sample.view()(b, t);
      if (id >= first_pair && first_key + (id - first_pair) / value_count == key) needle = t;
    }
    options.answer_spans.push_back({needle, needle + 1});
    options.query_rows.push_back({query});
  }
  const auto report = meap::eval::analyze_attention(meap::cpu{}, model, clean.view().as_const(),
                                                    masked.input_ids.view().as_const(), options);
  return {report.overall.pooled_decay, report.overall.variance_change, report.overall.answer_share_clean,
          report.overall.answer_share_masked};
}

// ---------------------------------------------------------------------------------------------
struct seed_result {
  std::uint64_t seed = 0;
  grid ntp{}, meap{};
  attention_summary ntp_attention, meap_attention;
  double seconds = 0;
};

int cell_sum(const grid& g, std::optional<std::size_t> length, std::optional<std::size_t> depth) {
  int sum = 0;
  for (std::size_t li = 0; li < lengths.size(); ++li)
    for (std::size_t di = 0; di < depths_percent.size(); ++di)
      if ((!length || *length == li) && (!depth || *depth == di)) sum += g[li][di];
  return sum;
}

// Accuracy (%) of a grid over a length (or all) and a depth (or all).
double accuracy(const grid& g, int rows, std::optional<std::size_t> length, std::optional<std::size_t> depth) {
  const int cells = (length ? 1 : static_cast<int>(lengths.size())) * (depth ? 1 : static_cast<int>(depths_percent.size()));
  return percent(cell_sum(g, length, depth), rows * cells);
}

void print_seed_table(const seed_result& r, int rows) {
  std::printf("\nSeed %llu: needle retrieval accuracy (%%), %d held-out rows per cell, NTP / MEAP:\n\n",
              static_cast<unsigned long long>(r.seed), rows);
  std::printf("%8s", "T \\ depth");
  for (const int d : depths_percent) std::printf(" | %11d%%", d);
  std::printf(" | %12s\n", "all depths");
  for (std::size_t li = 0; li < lengths.size(); ++li) {
    std::printf("%9lld", static_cast<long long>(lengths[li]));
    for (std::size_t di = 0; di < depths_percent.size(); ++di)
      std::printf(" | %5.1f / %5.1f", accuracy(r.ntp, rows, li, di), accuracy(r.meap, rows, li, di));
    std::printf(" | %5.1f / %5.1f\n", accuracy(r.ntp, rows, li, {}), accuracy(r.meap, rows, li, {}));
  }
  std::printf("%9s", "all T");
  for (std::size_t di = 0; di < depths_percent.size(); ++di)
    std::printf(" | %5.1f / %5.1f", accuracy(r.ntp, rows, {}, di), accuracy(r.meap, rows, {}, di));
  std::printf(" | %5.1f / %5.1f\n", accuracy(r.ntp, rows, {}, {}), accuracy(r.meap, rows, {}, {}));
  std::printf("Attention (T = 128, clean vs 15%% masked input): decay at masked positions NTP %.1f%% / MEAP %.1f%%; "
              "variance over unmasked keys %+.1f%% / %+.1f%%; needle share of the query's attention %.1f%% / %.1f%%\n",
              100 * r.ntp_attention.pooled_decay, 100 * r.meap_attention.pooled_decay,
              100 * r.ntp_attention.variance_change, 100 * r.meap_attention.variance_change,
              100 * r.ntp_attention.answer_share_clean, 100 * r.meap_attention.answer_share_clean);
}

// One line of the multi-seed summary: mean +- sd of each model over the seeds, the paired
// difference and its tests (studies/statistics.hpp).
meap_studies::paired_result compare(const std::vector<seed_result>& results, int rows,
                                    std::optional<std::size_t> length, std::optional<std::size_t> depth) {
  return meap_studies::compare_over_seeds(results, &seed_result::ntp, &seed_result::meap,
                                          [&](const grid& g) { return accuracy(g, rows, length, depth); });
}

void print_summary(const std::vector<seed_result>& results, int rows) {
  const std::size_t n = results.size();
  std::printf("\nOver %zu seeds (same initialization and data per seed; %d rows per cell): accuracy %% mean +- sd, "
              "MEAP - NTP per seed, paired t-test and exact sign-flip test (smallest possible p with %zu seeds: %.3f)\n\n",
              n, rows, n, meap_studies::smallest_sign_flip_p(n));
  std::printf("%10s | %15s | %15s | %15s | %7s | %7s | %9s\n", "T", "NTP", "MEAP", "MEAP - NTP", "t", "p (t)",
              "p (flip)");
  const auto line = [](const char* label, const meap_studies::paired_result& c) {
    std::printf("%10s | %6.1f +- %5.1f | %6.1f +- %5.1f | %+6.1f +- %5.1f | %7.2f | %7.3f | %9.3f\n", label, c.a.mean,
                c.a.sd, c.b.mean, c.b.sd, c.difference.mean, c.difference.sd, c.t, c.t_p, c.sign_flip_p);
  };
  for (std::size_t li = 0; li <= lengths.size(); ++li) {
    const bool all = li == lengths.size();
    const auto r = compare(results, rows, all ? std::nullopt : std::optional<std::size_t>(li), std::nullopt);
    const std::string label = all ? "all T" : std::to_string(lengths[li]) + (lengths[li] > train_lengths.back() ? "*" : "");
    line(label.c_str(), r);
  }
  std::printf("(* longer than any training row)\n");
  const auto attention_line = [&](const char* name, auto field) {
    const auto c = meap_studies::compare_over_seeds(results, &seed_result::ntp_attention, &seed_result::meap_attention,
                                                    [&](const attention_summary& a) { return 100 * field(a); });
    std::printf("%-38s | %6.1f +- %5.1f | %6.1f +- %5.1f | %+6.1f +- %5.1f | %7.2f | %7.3f | %9.3f\n", name, c.a.mean,
                c.a.sd, c.b.mean, c.b.sd, c.difference.mean, c.difference.sd, c.t, c.t_p, c.sign_flip_p);
  };
  std::printf("\nAttention (%%, T = 128, needle at 50%%)     | NTP             | MEAP            | MEAP - NTP\n");
  attention_line("decay at masked positions", [](const attention_summary& a) { return a.pooled_decay; });
  attention_line("variance change over unmasked keys", [](const attention_summary& a) { return a.variance_change; });
  attention_line("needle share of the query (clean)", [](const attention_summary& a) { return a.answer_share_clean; });
}

// Every cell of every seed, the per-length summary, and the attention metrics per seed; each file
// written atomically.
void write_csvs(const std::filesystem::path& directory, const std::vector<seed_result>& results, int rows) {
  meap_studies::csv_table cells("seed,model,length,depth_percent,correct,total,accuracy");
  for (const auto& r : results)
    for (int m = 0; m < 2; ++m)
      for (std::size_t li = 0; li < lengths.size(); ++li)
        for (std::size_t di = 0; di < depths_percent.size(); ++di) {
          const int c = (m == 0 ? r.ntp : r.meap)[li][di];
          cells.row(r.seed, m == 0 ? "NTP" : "MEAP", lengths[li], depths_percent[di], c, rows,
                    static_cast<double>(c) / rows);
        }
  cells.write(directory / "meap_demo.csv");
  meap_studies::csv_table summary(
      "length,seeds,ntp_mean,ntp_sd,meap_mean,meap_sd,difference_mean,difference_sd,t,p_t,p_sign_flip");
  for (std::size_t li = 0; li <= lengths.size(); ++li) {
    const bool all = li == lengths.size();
    summary.row(all ? std::string("all") : std::to_string(lengths[li]), results.size(),
                compare(results, rows, all ? std::nullopt : std::optional<std::size_t>(li), std::nullopt));
  }
  summary.write(directory / "meap_demo_summary.csv");
  meap_studies::csv_table attention("seed,model,pooled_decay,variance_change,answer_share_clean,answer_share_masked");
  for (const auto& r : results)
    for (int m = 0; m < 2; ++m) {
      const auto& a = m == 0 ? r.ntp_attention : r.meap_attention;
      attention.row(r.seed, m == 0 ? "NTP" : "MEAP", a.pooled_decay, a.variance_change, a.answer_share_clean,
                    a.answer_share_masked);
    }
  attention.write(directory / "meap_demo_attention.csv");
}

// Two panels, accuracy by length (averaged over depths) and by depth (averaged over lengths),
// mean over the seeds with +- one standard deviation as error bars when there are several.
void write_plot(const std::filesystem::path& directory, const std::vector<seed_result>& results, int rows) {
  meap_studies::gnuplot_figure figure;
  std::ostringstream data;
  data << "$by_length << EOD\n";
  for (std::size_t li = 0; li < lengths.size(); ++li) {
    const auto c = compare(results, rows, li, std::nullopt);
    data << lengths[li] << ' ' << c.a.mean << ' ' << c.a.sd << ' ' << c.b.mean << ' ' << c.b.sd << '\n';
  }
  data << "EOD\n$by_depth << EOD\n";
  for (std::size_t di = 0; di < depths_percent.size(); ++di) {
    const auto c = compare(results, rows, std::nullopt, di);
    data << depths_percent[di] << ' ' << c.a.mean << ' ' << c.a.sd << ' ' << c.b.mean << ' ' << c.b.sd << '\n';
  }
  data << "EOD\n";
  figure.data = data.str();
  const std::string seeds = results.size() == 1 ? "seed " + std::to_string(results[0].seed)
                                                : std::to_string(results.size()) + " seeds, mean +- sd";
  const char* style = results.size() == 1 ? "with linespoints" : "with yerrorlines";
  std::ostringstream gp;
  gp << "set multiplot layout 1,2 title 'meap\\_demo: needle retrieval accuracy, NTP vs MEAP (same init, same data; "
     << seeds << ")'\n"
     << "set yrange [0:105]\nset ylabel 'accuracy (%)'\nset grid\nset key bottom left\n"
     << "set xlabel 'context length T (averaged over depths; trained on T <= " << train_lengths.back() << ")'\n"
     << "set logscale x 2\nset xrange [" << lengths[0] * 3 / 4 << ":" << lengths[3] * 4 / 3 << "]\nset xtics (" << lengths[0] << ", " << lengths[1] << ", " << lengths[2] << ", " << lengths[3]
     << ")\n"
     << "plot $by_length using 1:2:3 " << style << " lw 2 pt 7 title 'NTP', $by_length using 1:4:5 " << style
     << " lw 2 pt 5 title 'MEAP'\n"
     << "unset logscale x\nset xlabel 'needle depth in the haystack (%), averaged over lengths'\nset xtics 0,25,100\n"
     << "set xrange [-5:105]\n"
     << "plot $by_depth using 1:2:3 " << style << " lw 2 pt 7 title 'NTP', $by_depth using 1:4:5 " << style
     << " lw 2 pt 5 title 'MEAP'\n"
     << "unset multiplot\n";
  figure.commands = gp.str();
  meap_studies::plot_png(directory, "meap_demo", figure);
}

int run(int argc, char** argv) {
  int exit_code = -1;
  const settings s = parse_arguments(argc, argv, exit_code);
  if (exit_code >= 0) return exit_code;
  meap_studies::keep_freed_memory();
  meap_studies::prepare_output_directory("meap_demo", "--out", s.out);
  const auto config = model_config();
  std::printf("meap_demo: %s, %lld steps of ~%lld tokens per model, T cycling over %lld/%lld/%lld/%lld; evaluated at "
              "T = 64, 128, 256, 512; %d seed%s from %llu\n",
              meap_studies::describe_model(config).c_str(), static_cast<long long>(s.steps),
              static_cast<long long>(tokens_per_step), static_cast<long long>(train_lengths[0]),
              static_cast<long long>(train_lengths[1]), static_cast<long long>(train_lengths[2]),
              static_cast<long long>(train_lengths[3]), s.seeds, s.seeds == 1 ? "" : "s",
              static_cast<unsigned long long>(s.seed));
  const auto study = meap_studies::run_seeds<seed_result>(
      s.seed, s.seeds,
      [&](const meap_studies::seed_context& seed, seed_result& r) {
        // Same initialization and same batches for both; only the masking differs.
        meap::nn::llama_model<meap::fp32, meap::cpu> ntp(config), meap_model(config);
        ntp.initialize(seed.seed);
        meap_model.initialize(seed.seed);
        seed.say("training NTP");
        train("NTP", ntp, std::nullopt, s, seed.seed);
        seed.say("training MEAP (15% of inputs masked)");
        train("MEAP", meap_model, meap::masking::fixed_ratio{0.15}, s, seed.seed);
        seed.say("evaluating");
        r.ntp = evaluate(ntp, s, seed.seed);
        r.meap = evaluate(meap_model, s, seed.seed);
        r.ntp_attention = analyze(ntp, s, seed.seed);
        r.meap_attention = analyze(meap_model, s, seed.seed);
      },
      [&](const std::vector<seed_result>& so_far) {
        print_seed_table(so_far.back(), s.eval_rows);
        write_csvs(s.out, so_far, s.eval_rows);
      });
  std::printf("\nChance: %.1f%% for a uniform guess among the %d values, %.1f%% for a guess among the %d values "
              "in the row.\n", 100.0 / value_count, value_count, 100.0 / pairs, pairs);
  if (s.seeds > 1) {
    print_summary(study.results, s.eval_rows);
  } else {
    std::printf("One seed shows what this seed's two models did, not whether MEAP helps: floating-point differences "
                "between machines change the trajectories, and seed-to-seed spread is larger than most gaps in the "
                "table. For the comparison run the study: meap_demo --seeds 8 (docs/fidelity.md).\n");
  }
  std::printf("wrote %s, meap_demo_summary.csv and meap_demo_attention.csv\n", (s.out / "meap_demo.csv").string().c_str());
  write_plot(s.out, study.results, s.eval_rows);
  std::printf("time: %.0f s for %d seed%s\n", study.seconds, s.seeds, s.seeds == 1 ? "" : "s");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Its memory is the same for every option (a 140k-parameter model, 16 evaluation rows at a time).
  return meap::run::guarded_main("meap_demo", "it needs well under 1 GB: free some memory",
                                 [&] { return run(argc, argv); });
}
