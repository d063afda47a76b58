// meap_finetune_study: does MEAP fine-tuning help multi-document QA, and does it help most with
// the gold document in the middle ("lost in the middle")? For each seed: pretrain one tiny
// LLaMA-style base model with plain next-token prediction on synthetic multi-document rows of 2 to
// D/2 documents, fine-tune two copies of it on the same D-document (prompt, answer) examples, one
// with plain NTP ([P, A], loss on A) and one with MEAP ([P, A, P, A'], A' = A with a fraction of
// its tokens replaced by [MASK]; loss on A and on the masked tokens of A'), and measure greedy
// exact match of both (and of the base model) with the gold document at every position 1..D.
// Over several seeds: mean, spread and paired tests per position.
//
//   meap_finetune_study [--seeds N] [--seed S] [--out DIR] [--quick] [sizes: see --help]
//
// Prints the per-seed tables and the summary (progress and ETA on stderr); writes, atomically and
// after every seed, DIR/finetune_study.csv (every seed, model and gold position),
// DIR/finetune_study_summary.csv (per position over the seeds) and DIR/finetune_study_runs.csv
// (per seed and objective: steps, tokens processed, labels, [MASK] inputs, loss, time).
//
// Everything a seed does is a pure function of the seed (given the machine and the thread count):
// the base model's initialization, the pretraining rows, the fine-tuning examples, their order and
// masks, and the evaluation rows, which come from separate Philox streams. The seed loop, the paired
// statistics and the CSV files are the studies' harness (studies/harness.hpp).
#include "harness.hpp"

#include <meap/core/parallel.hpp>
#include <meap/eval/scoring.hpp>
#include <meap/eval/tasks.hpp>
#include <meap/meap.hpp>
#include <meap/nn/llama.hpp>
#include <meap/nn/vocabulary.hpp>
#include <meap/run/program.hpp>
#include <meap/run/progress.hpp>

#include <CLI/CLI.hpp>

#include "command_line.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace {

using meap::index_t;
using model_t = meap::nn::llama_model<meap::fp32, meap::cpu>;
constexpr const char* program = "meap_finetune_study";

// ---------------------------------------------------------------------------------------------
// Settings and command line.
struct settings {
  std::uint64_t seed = 1;  // the first seed
  int seeds = 4;           // seeds seed, seed + 1, ...
  // The task (meap::eval's multidoc_qa in id mode).
  int documents = 10;
  int answer_tokens = 4;
  int filler = 0;  // filler tokens in each document besides separator, title key and value
  // The base model's pretraining: rows of 2 .. pretrain_documents documents.
  std::int64_t pretrain_steps = 2500;
  int pretrain_rows = 16;
  int pretrain_documents = 0;  // 0: max(2, documents / 2)
  double pretrain_lr = 3e-3;
  // Fine-tuning (both objectives alike).
  int train_examples = 512;
  int epochs = 2;
  int batch = 16;  // examples (rows) per step
  double lr = 1e-3;
  double mask_ratio = 0.10;
  // Evaluation.
  int eval_rows = 64;  // held-out rows per gold position
  int threads = 1;
  std::filesystem::path out = ".";
  bool quick = false;
};

settings parse_arguments(int argc, char** argv, int& exit_code) {
  settings s;
  std::string out = ".";
  CLI::App app{"meap_finetune_study: NTP against MEAP fine-tuning on multi-document QA (lost in the middle), "
               "several seeds, trained and evaluated on the CPU"};
  auto* seeds = meap_studies::add_seed_options(
      app, s.seed, s.seeds, out, s.quick,
      {.seed = "the first seed (each seed: initialization, data, masks)",
       .seeds = "how many seeds, from --seed on (--quick: 2)",
       .out = "where the CSV files go",
       .quick = "a smoke run of a few seconds: tiny settings (options given explicitly still win)"});
  auto* documents = app.add_option("--documents", s.documents, "documents per prompt, one of them gold (default 10; "
                                                               "--quick: 4)")
                        ->check(CLI::Range(2, 40));
  app.add_option("--answer-tokens", s.answer_tokens, "value tokens per document = answer length")
      ->check(CLI::Range(1, 16))
      ->capture_default_str();
  app.add_option("--filler", s.filler,
                 "filler tokens per document besides separator, title key and value (0: each document is "
                 "SEP key value)")
      ->check(CLI::Range(0, 64))
      ->capture_default_str();
  auto* pretrain_steps = app.add_option("--pretrain-steps", s.pretrain_steps,
                                        "the base model's pretraining steps (default 2500; --quick: 40)")
                             ->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 30));
  app.add_option("--pretrain-rows", s.pretrain_rows, "pretraining rows per step")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--pretrain-documents", s.pretrain_documents,
                 "pretraining rows hold 2 to this many documents (default: half of --documents, at least 2)")
      ->check(CLI::Range(2, 40));
  app.add_option("--pretrain-lr", s.pretrain_lr, "pretraining peak learning rate")
      ->check(CLI::Range(1e-6, 1.0))
      ->capture_default_str();
  auto* train_examples = app.add_option("--train-examples", s.train_examples,
                                        "fine-tuning examples (default 512; --quick: 64); a multiple of --batch")
                             ->check(CLI::Range(1, 1 << 22));
  auto* epochs = app.add_option("--epochs", s.epochs, "fine-tuning epochs, both objectives (default 2; --quick: 1)")
                     ->check(CLI::Range(1, 1000));
  app.add_option("--batch", s.batch, "fine-tuning examples per step, both objectives")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--lr", s.lr, "fine-tuning peak learning rate, both objectives")
      ->check(CLI::Range(1e-7, 1.0))
      ->capture_default_str();
  app.add_option("--mask-ratio", s.mask_ratio,
                 "MEAP: fraction of the answer copy's tokens replaced by [MASK] (at least one token)")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            try {
              const double ratio = std::stod(text);
              if (ratio > 0.0 && ratio < 1.0) return {};
            } catch (const std::exception&) {
            }
            return "Value " + text + " is not a ratio in the open interval (0, 1)";
          },
          "RATIO"))
      ->capture_default_str();
  auto* eval_rows = app.add_option("--eval-rows", s.eval_rows,
                                   "held-out rows per gold position (default 64; --quick: 8)")
                        ->check(CLI::Range(1, 1 << 20));
  app.add_option("--threads", s.threads,
                 "CPU threads (default 1: this model is so small that a second thread does not speed it up, and "
                 "with libgomp's default spinning wait policy on a busy machine it slows it down many times)")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  if (const auto stop = meap_studies::parse_command_line(app, argc, argv)) {
    exit_code = *stop;
    return s;
  }
  s.out = out;
  if (s.quick) {
    if (seeds->count() == 0) s.seeds = 2;
    if (documents->count() == 0) s.documents = 4;
    if (pretrain_steps->count() == 0) s.pretrain_steps = 40;
    if (train_examples->count() == 0) s.train_examples = 64;
    if (epochs->count() == 0) s.epochs = 1;
    if (eval_rows->count() == 0) s.eval_rows = 8;
  }
  if (s.pretrain_documents == 0) s.pretrain_documents = std::max(2, s.documents / 2);
  if (s.pretrain_documents > s.documents)
    meap::throw_argument_error(program, "--pretrain-documents", s.pretrain_documents,
                               "at most --documents = " + std::to_string(s.documents));
  if (s.train_examples % s.batch != 0)
    meap::throw_argument_error(program, "--train-examples", s.train_examples,
                               "a multiple of --batch = " + std::to_string(s.batch) +
                                   " (so that every step of both objectives holds --batch examples, none padding)");
  return s;
}

// ---------------------------------------------------------------------------------------------
// The task. Token ids of the base model (vocab 128): 0 BOS, then meap::eval's default id
// vocabulary (query 1, separator 2, keys, values, filler: a third each of the rest). [MASK] is
// added for fine-tuning by meap::nn::grow_vocabulary: id 128, the last.
constexpr std::int32_t base_vocab = 128;
constexpr std::int32_t bos_id = 0;

struct task {
  int documents = 0;
  int answer_tokens = 0;
  int filler = 0;
  meap::eval::id_vocabulary vocabulary;
  index_t context_length = 0;  // the prompt: BOS, D documents, QUERY key SEP

  index_t example_length() const { return context_length + answer_tokens; }  // [P, A]
  index_t documents_end() const { return context_length - 3; }               // BOS and the documents
  // A pretraining row: the documents, then every document's question and answer (T + 1 tokens).
  index_t pretrain_row_length() const { return documents_end() + index_t{documents} * (3 + answer_tokens); }
  // The same task with `d` documents.
  task with_documents(int d) const {
    task t = *this;
    t.documents = d;
    t.context_length = 1 + index_t{d} * (2 + answer_tokens + filler) + 3;
    return t;
  }
};

task make_task(const settings& s) {
  task t;
  t.documents = s.documents;
  t.answer_tokens = s.answer_tokens;
  t.filler = s.filler;
  t.vocabulary = meap::eval::default_id_vocabulary(base_vocab, 1);
  t.vocabulary.bos = bos_id;
  // Every document: separator, title key, `filler` filler ids and the value (its place among the
  // filler drawn per document); then the 3-token question.
  t = t.with_documents(s.documents);
  const auto values = t.vocabulary.values.count;
  if (std::int64_t{s.documents} * s.answer_tokens > values)
    meap::throw_argument_error(program, "--documents", s.documents,
                               "documents x --answer-tokens <= " + std::to_string(values) +
                                   " (the distinct value ids of the vocabulary; --answer-tokens is " +
                                   std::to_string(s.answer_tokens) + ")");
  return t;
}

meap::eval::task_request request(const task& t, std::uint64_t stream, std::uint64_t row, int gold) {
  meap::eval::task_request r;
  r.kind = meap::eval::task_kind::multidoc_qa;
  r.context_length = t.context_length;
  r.depth = static_cast<double>(gold) / static_cast<double>(t.documents - 1);
  r.seed = stream;
  r.row = row;
  r.value_tokens = t.answer_tokens;
  r.documents = t.documents;
  return r;
}

meap::eval::task_example example(const task& t, std::uint64_t stream, std::uint64_t row, int gold) {
  auto e = meap::eval::make_example(request(t, stream, row, gold), t.vocabulary);
  // The gold document must be the one asked for (depth g / (D - 1) rounds back to g).
  const auto realised = std::llround(e.depth * (t.documents - 1));
  if (realised != gold || static_cast<index_t>(e.prompt.size()) != t.context_length)
    throw meap::error(std::string(program) + ": internal error: make_example put the gold document at " +
                      std::to_string(realised) + " instead of " + std::to_string(gold));
  return e;
}

// Data streams of a seed, one per use, so that no pretraining row, fine-tuning example or
// evaluation row is drawn from another's stream. (Pretraining rows hold 2 .. D/2 documents, so they
// cannot equal a D-document example anyway; fine-tuning and evaluation examples could coincide
// only if the same D keys and D x V value ids were drawn, which at these sizes does not happen.)
struct streams {
  std::uint64_t pretrain, pretrain_order, pretrain_documents, finetune, finetune_gold, evaluation;
};
streams streams_of(std::uint64_t seed) {
  meap::philox_stream random(seed, 0x66742d7374756479ULL);  // "ft-study"
  streams st{};
  for (std::uint64_t* stream : {&st.pretrain, &st.pretrain_order, &st.pretrain_documents, &st.finetune,
                                &st.finetune_gold, &st.evaluation})
    *stream = random.next_u64();
  return st;
}

// ---------------------------------------------------------------------------------------------
// Pretraining. Step s draws d, the documents of its rows, uniformly from 2 .. pretrain_documents.
// Row r: BOS and the d documents of multidoc_qa row r (pretraining stream), then all d questions
// in a random order, each followed by its answer:
//   BOS (SEP K_1 v_1) ... (SEP K_d v_d)  QUERY K_g1 SEP v_g1  QUERY K_g2 SEP v_g2 ...
// make_example draws the documents before placing the gold one, so the d examples of one row
// (gold 0 .. d - 1) share their documents and differ only in the question: one row teaches the
// format and retrieval d times. The labels sit on the answer tokens only; the row's first question
// has exactly the layout of a fine-tuning or evaluation prompt.
//
// Why so (the settings that did not work, measured with this program on 2 cores): with a label on
// every position (plain language modelling of the rows; the random documents then dominate the
// loss) or with 10-document rows only, the retrieval circuit (an induction head: find the title
// that matches the question's key, copy the value after it) did not form within 4000 steps, and
// the base model stayed at the level of copying a random document's value. With answer labels and
// 2 .. 5 documents it forms within about 1500 steps on every seed tried, and the base model is then
// weak on 10 documents (0 to 30% exact match), which leaves fine-tuning something to do.
struct pretrain_batch {
  meap::tensor<std::int32_t, meap::cpu> input_ids, labels;  // (rows, L)
  int documents = 0;
};

pretrain_batch make_pretrain_batch(const task& full, const streams& st, const settings& s, std::uint64_t step) {
  meap::philox_stream draw(st.pretrain_documents, step);
  const int d = 2 + static_cast<int>(draw.next_below(static_cast<std::uint32_t>(s.pretrain_documents - 1)));
  const task t = full.with_documents(d);
  const index_t L = t.pretrain_row_length() - 1;  // inputs: all but the last token
  pretrain_batch batch;
  batch.documents = d;
  batch.input_ids = meap::zeros<std::int32_t>(meap::cpu{}, meap::dims{s.pretrain_rows, L});
  batch.labels = meap::full<std::int32_t>(meap::cpu{}, meap::dims{s.pretrain_rows, L}, meap::ignore_index);
  std::vector<std::int32_t> row_tokens(static_cast<std::size_t>(L + 1));
  std::vector<char> is_answer(static_cast<std::size_t>(L + 1), 0);
  for (index_t b = 0; b < s.pretrain_rows; ++b) {
    const std::uint64_t row = step * static_cast<std::uint64_t>(s.pretrain_rows) + static_cast<std::uint64_t>(b);
    std::vector<int> order(static_cast<std::size_t>(d));
    for (int i = 0; i < d; ++i) order[static_cast<std::size_t>(i)] = i;
    meap::philox_stream random(st.pretrain_order, row);
    for (auto i = static_cast<std::size_t>(d); i > 1; --i)
      std::swap(order[i - 1], order[random.next_below(static_cast<std::uint32_t>(i))]);
    const auto documents_end = static_cast<std::ptrdiff_t>(t.documents_end());
    std::size_t at = 0;
    for (std::size_t q = 0; q < order.size(); ++q) {
      const auto e = example(t, st.pretrain, row, order[q]);
      if (q == 0) {
        at = static_cast<std::size_t>(std::copy(e.prompt.begin(), e.prompt.begin() + documents_end, row_tokens.begin()) -
                                      row_tokens.begin());
      } else if (!std::equal(e.prompt.begin(), e.prompt.begin() + documents_end, row_tokens.begin())) {
        throw meap::error(std::string(program) + ": internal error: the examples of one row have different documents");
      }
      for (auto i = e.prompt.begin() + documents_end; i != e.prompt.end(); ++i) is_answer[at] = 0, row_tokens[at++] = *i;
      for (const std::int32_t id : e.answer) is_answer[at] = 1, row_tokens[at++] = id;
    }
    for (index_t i = 0; i < L; ++i) {
      const auto next = static_cast<std::size_t>(i + 1);
      batch.input_ids.data()[b * L + i] = row_tokens[static_cast<std::size_t>(i)];
      if (is_answer[next]) batch.labels.data()[b * L + i] = row_tokens[next];
    }
  }
  return batch;
}

meap::nn::llama_config base_config(const task& t, const settings& s) {
  meap::nn::llama_config c;
  c.vocab = base_vocab;
  c.d_model = 64;
  c.layers = 2;  // retrieval needs an induction circuit: two attention layers
  c.heads = 4;
  c.kv_heads = 4;  // with 2 (grouped-query) the retrieval circuit formed on fewer seeds within the budget
  c.ffn = 172;
  // MEAP's rows [P, A, P, A'] (2 (p + a) positions) and the longest pretraining rows must fit.
  c.max_seq = std::max(2 * t.example_length(), t.with_documents(s.pretrain_documents).pretrain_row_length() - 1);
  return c;
}

// Plain NTP (no masking policy) through meap::train::pretrainer, on the rows above. Returns the
// mean loss of the last tenth of the steps.
double pretrain(model_t& model, const task& t, const streams& st, const settings& s) {
  meap::train::pretrain_options options;
  options.optimizer.lr = s.pretrain_lr;
  options.optimizer.weight_decay = 0.01;
  options.schedule = {s.pretrain_lr, s.pretrain_lr / 10, std::min<std::int64_t>(100, s.pretrain_steps / 10),
                      s.pretrain_steps};
  meap::train::pretrainer<meap::fp32, meap::cpu> trainer(model, std::nullopt, options);
  const auto steps = static_cast<std::uint64_t>(s.pretrain_steps);
  const meap_studies::step_progress progress("pretrain", steps, "steps");
  const auto every = std::max<std::uint64_t>(1, steps / 5);
  const auto tail = std::max<std::uint64_t>(1, steps / 10);
  double smoothed = 0, tail_loss = 0;
  for (std::uint64_t step = 0; step < steps; ++step) {
    const auto batch = make_pretrain_batch(t, st, s, step);
    const auto r = trainer.step(meap::train::prepared_batch{batch.input_ids.view().as_const(), batch.labels.view().as_const()});
    if (r.skipped) std::fprintf(stderr, "  pretrain step %llu skipped: %s\n", static_cast<unsigned long long>(step),
                                r.skip_reason.c_str());
    smoothed = step == 0 ? r.loss : 0.95 * smoothed + 0.05 * r.loss;
    if (step + tail >= steps) tail_loss += r.loss;
    if ((step + 1) % every == 0) progress.print(step + 1, smoothed, static_cast<double>(step + 1));
  }
  return tail_loss / static_cast<double>(tail);
}

// ---------------------------------------------------------------------------------------------
// Fine-tuning: train_examples D-document examples of the fine-tuning stream, the gold document's
// position drawn uniformly from 1..D for each, as meap::data::instruction_example {prompt, answer}.
std::vector<meap::data::instruction_example> finetune_examples(const task& t, const streams& st, const settings& s) {
  std::vector<meap::data::instruction_example> examples;
  examples.reserve(static_cast<std::size_t>(s.train_examples));
  for (int i = 0; i < s.train_examples; ++i) {
    meap::philox_stream random(st.finetune_gold, static_cast<std::uint64_t>(i));
    const int gold = static_cast<int>(random.next_below(static_cast<std::uint32_t>(t.documents)));
    auto e = example(t, st.finetune, static_cast<std::uint64_t>(i), gold);
    examples.push_back({std::move(e.prompt), std::move(e.answer), 0});
  }
  return examples;
}

struct run_summary {
  std::uint64_t steps = 0;
  std::int64_t tokens = 0;       // input positions processed (rows x row length)
  std::int64_t loss_tokens = 0;  // positions with a label
  std::int64_t masked = 0;       // inputs replaced by [MASK]
  std::int64_t duplicated = 0;   // examples trained with a masked copy (per epoch)
  index_t row_length = 0;
  double final_loss = 0;  // the mean loss of the last epoch's steps
  double seconds = 0;
};

run_summary finetune(model_t& model, meap::train::finetune_objective objective,
                     const std::vector<meap::data::instruction_example>& examples, const task& t, std::uint64_t seed,
                     std::int32_t mask_id, const settings& s) {
  meap::train::finetune_options o;
  o.objective = objective;
  o.copy.ratio = s.mask_ratio;
  // The paper copies only answers longer than 50 tokens; these answers have answer_tokens (4)
  // tokens, so that rule would turn MEAP into NTP here. 0: every answer gets its masked copy.
  o.copy.min_answer_tokens = 0;
  o.copy.layout = meap::masking::layout::concatenated;
  o.seed = seed;
  o.mask_id = mask_id;
  o.pad_id = bos_id;
  // One example per row for both objectives ([P, A] or [P, A, P, A']), so that both take the same
  // steps over the same examples in the same order; MEAP's rows are twice as long.
  o.row_length = objective == meap::train::finetune_objective::meap ? 2 * t.example_length() : t.example_length();
  o.rows_per_step = s.batch;
  o.filling = meap::train::row_filling::padded;
  o.epochs = static_cast<std::uint32_t>(s.epochs);
  o.training.optimizer.lr = s.lr;
  o.training.optimizer.weight_decay = 0.01;
  o.training.schedule = {s.lr, s.lr / 10, 20, 0};  // total_steps from the plan
  meap::train::finetuner tuner(model, examples, o);

  run_summary r;
  r.row_length = o.row_length;
  for (std::size_t i = 0; i < examples.size(); ++i) r.duplicated += tuner.plan().duplicated(static_cast<index_t>(i));
  const char* name = objective == meap::train::finetune_objective::meap ? "MEAP" : "NTP";
  const std::uint64_t total = tuner.total_steps();
  const std::uint64_t last_epoch_steps = static_cast<std::uint64_t>(tuner.plan().steps_in_epoch(o.epochs - 1));
  const auto every = std::max<std::uint64_t>(1, total / 4);
  const meap_studies::step_progress progress(name, total, "steps");
  double smoothed = 0, last_epoch_loss = 0;
  while (!tuner.done()) {
    const auto report = tuner.step();
    if (report.skipped) std::fprintf(stderr, "  %s step %llu skipped: %s\n", name,
                                     static_cast<unsigned long long>(report.step), report.skip_reason.c_str());
    r.tokens += report.tokens;
    r.loss_tokens += report.loss_tokens;
    r.masked += report.masked;
    smoothed = report.step == 0 ? report.loss : 0.9 * smoothed + 0.1 * report.loss;
    if (report.step + last_epoch_steps >= total) last_epoch_loss += report.loss;
    ++r.steps;
    if (r.steps % every == 0) progress.print(r.steps, smoothed, static_cast<double>(r.steps));
  }
  r.final_loss = last_epoch_loss / static_cast<double>(last_epoch_steps);
  r.seconds = progress.seconds();
  return r;
}

// ---------------------------------------------------------------------------------------------
// Evaluation: eval_rows held-out rows, each asked at every gold position (the same documents,
// a different question), greedy generation of the answer's length, exact match.
struct position_score {
  int correct = 0;
  int first_token = 0;  // the first answer token right (the retrieval step; the rest is copying)
};
using scores = std::vector<position_score>;  // per gold position

std::vector<std::vector<meap::eval::task_example>> evaluation_set(const task& t, const streams& st, const settings& s) {
  std::vector<std::vector<meap::eval::task_example>> by_position(static_cast<std::size_t>(t.documents));
  for (int g = 0; g < t.documents; ++g)
    for (int r = 0; r < s.eval_rows; ++r)
      by_position[static_cast<std::size_t>(g)].push_back(example(t, st.evaluation, static_cast<std::uint64_t>(r), g));
  return by_position;
}

scores evaluate(const model_t& model, const std::vector<std::vector<meap::eval::task_example>>& by_position) {
  scores result(by_position.size());
  for (std::size_t g = 0; g < by_position.size(); ++g) {
    const auto scored = meap::eval::score_examples(meap::cpu{}, model, by_position[g], meap::eval::scoring::exact_match, 32);
    for (std::size_t i = 0; i < scored.size(); ++i) {
      result[g].correct += scored[i].correct ? 1 : 0;
      result[g].first_token += !scored[i].generated.empty() && scored[i].generated[0] == by_position[g][i].answer[0];
    }
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
struct seed_result {
  std::uint64_t seed = 0;
  scores base, ntp, meap;
  run_summary ntp_run, meap_run;
  double pretrain_loss = 0;  // mean over the last tenth of the pretraining steps
  double pretrain_seconds = 0, seconds = 0;
};

double percent(int correct, int total) { return 100.0 * correct / total; }

// Accuracy (%) at gold position g, or over all positions (nullopt).
double accuracy(const scores& sc, int rows, std::optional<std::size_t> g) {
  if (g) return percent(sc[*g].correct, rows);
  int correct = 0;
  for (const auto& p : sc) correct += p.correct;
  return percent(correct, rows * static_cast<int>(sc.size()));
}
double first_token_accuracy(const scores& sc, int rows, std::optional<std::size_t> g) {
  if (g) return percent(sc[*g].first_token, rows);
  int correct = 0;
  for (const auto& p : sc) correct += p.first_token;
  return percent(correct, rows * static_cast<int>(sc.size()));
}

std::string position_label(std::size_t g, int documents) {
  char text[32];
  std::snprintf(text, sizeof text, "%2zu (%3.0f%%)", g + 1, 100.0 * static_cast<double>(g) / (documents - 1));
  return text;
}

void print_seed_table(const seed_result& r, const settings& s) {
  const int rows = s.eval_rows;
  std::printf("\nSeed %llu: exact match (%%) by gold document position, %d held-out rows per position "
              "(first answer token right in parentheses)\n\n",
              static_cast<unsigned long long>(r.seed), rows);
  std::printf("%-11s | %15s | %15s | %15s | %10s\n", "gold (depth)", "base", "NTP", "MEAP", "MEAP - NTP");
  for (std::size_t g = 0; g <= r.ntp.size(); ++g) {
    const bool all = g == r.ntp.size();
    const auto at = all ? std::nullopt : std::optional<std::size_t>(g);
    const std::string label = all ? "all" : position_label(g, s.documents);
    std::printf("%-12s | %5.1f (%5.1f)   | %5.1f (%5.1f)   | %5.1f (%5.1f)   | %+10.1f\n", label.c_str(),
                accuracy(r.base, rows, at), first_token_accuracy(r.base, rows, at), accuracy(r.ntp, rows, at),
                first_token_accuracy(r.ntp, rows, at), accuracy(r.meap, rows, at), first_token_accuracy(r.meap, rows, at),
                accuracy(r.meap, rows, at) - accuracy(r.ntp, rows, at));
  }
  const auto run_line = [](const char* name, const run_summary& run) {
    std::printf("  %-4s %4llu steps, rows of %3lld tokens: %9lld tokens processed, %7lld labels, %6lld [MASK] inputs, "
                "last-epoch loss %.3f, %.0f s\n",
                name, static_cast<unsigned long long>(run.steps), static_cast<long long>(run.row_length),
                static_cast<long long>(run.tokens), static_cast<long long>(run.loss_tokens),
                static_cast<long long>(run.masked), run.final_loss, run.seconds);
  };
  std::printf("Pretraining: final answer loss %.3f, %.0f s. Fine-tuning:\n", r.pretrain_loss, r.pretrain_seconds);
  run_line("NTP", r.ntp_run);
  run_line("MEAP", r.meap_run);
}

// Over the seeds, at gold position g (or over all positions): NTP against MEAP (paired), the base
// model's mean and sd, and the seeds with MEAP ahead/behind/level.
struct position_statistics {
  meap_studies::paired_result fine_tuned;
  meap_studies::summary base;
  meap_studies::seed_tally tally;
};

position_statistics statistics_at(const std::vector<seed_result>& results, int rows, std::optional<std::size_t> g) {
  const auto measure = [&](const scores& sc) { return accuracy(sc, rows, g); };
  return {meap_studies::compare_over_seeds(results, &seed_result::ntp, &seed_result::meap, measure),
          meap_studies::summarize_over_seeds(results, [&](const seed_result& r) { return measure(r.base); }),
          meap_studies::tally_over_seeds(results, &seed_result::ntp, &seed_result::meap, measure)};
}

void print_summary(const std::vector<seed_result>& results, const settings& s) {
  using meap_studies::format_statistic;
  const std::size_t n = results.size();
  const int rows = s.eval_rows;
  std::printf("\nOver %zu seeds (per seed: one base model, both fine-tuned from it on the same examples in the same "
              "order; %d rows per position): exact match %% mean +- sd, MEAP - NTP per seed, paired t-test, exact "
              "sign-flip test (smallest possible p with %zu seeds: %.3f), seeds with MEAP ahead/behind/level\n\n",
              n, rows, n, meap_studies::smallest_sign_flip_p(n));
  std::printf("%-12s | %14s | %14s | %14s | %14s | %6s | %6s | %8s | %s\n", "gold (depth)", "base", "NTP", "MEAP",
              "MEAP - NTP", "t", "p (t)", "p (flip)", "ahead/behind/level");
  const auto D = static_cast<std::size_t>(s.documents);
  for (std::size_t g = 0; g <= D; ++g) {
    const bool all = g == D;
    const auto [c, b, k] = statistics_at(results, rows, all ? std::nullopt : std::optional<std::size_t>(g));
    const std::string label = all ? "all" : position_label(g, s.documents);
    std::printf("%-12s | %5.1f +- %5.1f | %5.1f +- %5.1f | %5.1f +- %5.1f | %+5.1f +- %5.1f | %6s | %6s | %8s | "
                "%d/%d/%d\n",
                label.c_str(), b.mean, b.sd, c.a.mean, c.a.sd, c.b.mean, c.b.sd, c.difference.mean, c.difference.sd,
                format_statistic(c.t, "%.2f").c_str(), format_statistic(c.t_p, "%.3f").c_str(),
                format_statistic(c.sign_flip_p, "%.3f").c_str(), k.ahead, k.behind, k.level);
  }
  std::printf("(p-values are per line and not corrected for the %zu positions tested: at p < 0.05 about one line in "
              "twenty differs by chance alone)\n",
              D);
  // The lost-in-the-middle contrast: the middle positions against the two ends, per model.
  if (D >= 3) {
    const auto middle_minus_ends = [&](const scores& sc) {
      double ends = (accuracy(sc, rows, 0) + accuracy(sc, rows, D - 1)) / 2, middle = 0;
      for (std::size_t g = 1; g + 1 < D; ++g) middle += accuracy(sc, rows, g);
      return middle / static_cast<double>(D - 2) - ends;
    };
    const auto c = meap_studies::compare_over_seeds(results, &seed_result::ntp, &seed_result::meap, middle_minus_ends);
    std::printf("\nMiddle positions (2 .. %zu) minus the two ends (1 and %zu), points: NTP %+.1f +- %.1f, MEAP %+.1f +- "
                "%.1f; MEAP - NTP %+.1f +- %.1f (t %s, p %s; sign-flip p %s)\n",
                D - 1, D, c.a.mean, c.a.sd, c.b.mean, c.b.sd, c.difference.mean, c.difference.sd,
                format_statistic(c.t, "%.2f").c_str(), format_statistic(c.t_p, "%.3f").c_str(),
                format_statistic(c.sign_flip_p, "%.3f").c_str());
  }
  const auto mean_over_seeds = [&](auto value) { return meap_studies::summarize_over_seeds(results, value).mean; };
  const double ntp_tokens = mean_over_seeds([](const seed_result& r) { return r.ntp_run.tokens; });
  const double meap_tokens = mean_over_seeds([](const seed_result& r) { return r.meap_run.tokens; });
  std::printf("Fine-tuning cost per seed: NTP %.0f tokens processed in %.0f s, MEAP %.0f tokens in %.0f s (%.2fx the "
              "tokens; same steps, examples and order)\n",
              ntp_tokens, mean_over_seeds([](const seed_result& r) { return r.ntp_run.seconds; }), meap_tokens,
              mean_over_seeds([](const seed_result& r) { return r.meap_run.seconds; }), meap_tokens / ntp_tokens);
}

// ---------------------------------------------------------------------------------------------
// The three CSV files, each written atomically.
void write_csvs(const std::filesystem::path& directory, const std::vector<seed_result>& results, const settings& s) {
  const int rows = s.eval_rows;
  const auto D = static_cast<std::size_t>(s.documents);
  meap_studies::csv_table cells("seed,model,gold_position,depth,correct,first_token_correct,total,accuracy");
  for (const auto& r : results)
    for (const auto& [name, sc] : {std::pair<const char*, const scores*>{"base", &r.base},
                                   std::pair<const char*, const scores*>{"NTP", &r.ntp},
                                   std::pair<const char*, const scores*>{"MEAP", &r.meap}})
      for (std::size_t g = 0; g < D; ++g)
        cells.row(r.seed, name, g + 1, static_cast<double>(g) / static_cast<double>(D - 1), (*sc)[g].correct,
                  (*sc)[g].first_token, rows, static_cast<double>((*sc)[g].correct) / rows);
  cells.write(directory / "finetune_study.csv");

  meap_studies::csv_table summary(
      "gold_position,seeds,base_mean,base_sd,ntp_mean,ntp_sd,meap_mean,meap_sd,difference_mean,difference_sd,t,p_t,"
      "p_sign_flip,meap_ahead,meap_behind,level");
  for (std::size_t g = 0; g <= D; ++g) {
    const bool all = g == D;
    const auto [c, b, k] = statistics_at(results, rows, all ? std::nullopt : std::optional<std::size_t>(g));
    summary.row(all ? std::string("all") : std::to_string(g + 1), results.size(), b, c, k.ahead, k.behind, k.level);
  }
  summary.write(directory / "finetune_study_summary.csv");

  meap_studies::csv_table runs(
      "seed,objective,steps,row_length,tokens,loss_tokens,masked,duplicated_examples,last_epoch_loss,seconds,"
      "pretrain_loss,pretrain_seconds");
  for (const auto& r : results)
    for (const auto& [name, run] : {std::pair<const char*, const run_summary*>{"ntp", &r.ntp_run},
                                    std::pair<const char*, const run_summary*>{"meap", &r.meap_run}})
      runs.row(r.seed, name, run->steps, run->row_length, run->tokens, run->loss_tokens, run->masked, run->duplicated,
               run->final_loss, run->seconds, r.pretrain_loss, r.pretrain_seconds);
  runs.write(directory / "finetune_study_runs.csv");
}

// ---------------------------------------------------------------------------------------------
int run(int argc, char** argv) {
  int exit_code = -1;
  const settings s = parse_arguments(argc, argv, exit_code);
  if (exit_code >= 0) return exit_code;
  meap_studies::keep_freed_memory();
  meap_studies::prepare_output_directory(program, "--out", s.out);
  const task t = make_task(s);
  const auto config = base_config(t, s);
  const std::int32_t mask_id = base_vocab;  // the row grow_vocabulary adds
#if defined(_OPENMP)
  omp_set_num_threads(s.threads);
#endif
  const auto V = t.vocabulary.values;
  std::printf("meap_finetune_study: multidoc_qa (id mode), %d documents of %lld tokens (SEP, title key, %d value "
              "tokens%s), prompt %lld tokens, answer %d tokens; the gold document at every position 1..%d\n",
              s.documents, static_cast<long long>((t.documents_end() - 1) / s.documents), s.answer_tokens,
              s.filler > 0 ? (", " + std::to_string(s.filler) + " filler").c_str() : "",
              static_cast<long long>(t.context_length), s.answer_tokens, s.documents);
  const task longest_pretraining = t.with_documents(s.pretrain_documents);
  std::printf("base model: %s with %lld kv heads, ffn %lld and max_seq %lld, pretrained with plain NTP for %lld steps "
              "of %d rows, each row %s documents and all their questions with answers (up to %lld tokens), labels on "
              "the answers only\n",
              meap_studies::describe_model(config).c_str(), static_cast<long long>(config.kv_heads),
              static_cast<long long>(config.ffn), static_cast<long long>(config.max_seq),
              static_cast<long long>(s.pretrain_steps), s.pretrain_rows,
              (s.pretrain_documents == 2 ? std::string("2") : "2 to " + std::to_string(s.pretrain_documents)).c_str(),
              static_cast<long long>(longest_pretraining.pretrain_row_length() - 1));
  std::printf("fine-tuning: vocab grown to %lld ([MASK] = %d); %d examples (gold position uniform), %d epoch%s of %d "
              "steps of %d examples, lr %.1e; NTP rows [P, A] (%lld tokens), MEAP rows [P, A, P, A'] (%lld tokens), "
              "mask ratio %.2f of the answer copy = %d of %d tokens\n",
              static_cast<long long>(config.vocab + 1), mask_id, s.train_examples, s.epochs, s.epochs == 1 ? "" : "s",
              s.train_examples / s.batch, s.batch, s.lr, static_cast<long long>(t.example_length()),
              static_cast<long long>(2 * t.example_length()), s.mask_ratio,
              std::max(1, static_cast<int>(std::floor(s.mask_ratio * s.answer_tokens))), s.answer_tokens);
  std::printf("MEAP's min_answer_tokens is 0 here: the paper copies only answers longer than 50 tokens, and every answer "
              "here has %d, so that rule would make MEAP plain NTP.\n",
              s.answer_tokens);
  std::printf("evaluation: %d held-out rows x %d gold positions per model (each row asked at every position), greedy "
              "exact match; %d seed%s from %llu; %d CPU thread%s\n",
              s.eval_rows, s.documents, s.seeds, s.seeds == 1 ? "" : "s", static_cast<unsigned long long>(s.seed),
              s.threads, s.threads == 1 ? "" : "s");
  const auto study = meap_studies::run_seeds<seed_result>(
      s.seed, s.seeds,
      [&](const meap_studies::seed_context& seed, seed_result& r) {
        const auto seed_start = std::chrono::steady_clock::now();
        const streams st = streams_of(seed.seed);
        seed.say("pretraining the base model");
        model_t base(config);
        base.initialize(seed.seed);
        r.pretrain_loss = pretrain(base, t, st, s);
        r.pretrain_seconds = meap::run::seconds_since(seed_start);
        const auto evaluation = evaluation_set(t, st, s);
        r.base = evaluate(base, evaluation);

        const auto examples = finetune_examples(t, st, s);
        for (const auto objective : {meap::train::finetune_objective::ntp, meap::train::finetune_objective::meap}) {
          const bool is_meap = objective == meap::train::finetune_objective::meap;
          seed.say(is_meap ? "fine-tuning MEAP" : "fine-tuning NTP");
          // Both copies: the base model with [MASK] added, the same for both objectives.
          auto model = meap::nn::grow_vocabulary(base, 1);
          auto summary = finetune(model, objective, examples, t, seed.seed, mask_id, s);
          (is_meap ? r.meap_run : r.ntp_run) = summary;
          (is_meap ? r.meap : r.ntp) = evaluate(model, evaluation);
        }
      },
      [&](const std::vector<seed_result>& so_far) {
        print_seed_table(so_far.back(), s);
        write_csvs(s.out, so_far, s);
      });

  std::printf("\nChance: a uniform guess of the %d-token answer among the %d value ids is right with probability "
              "%.1e (first token %.1f%%); copying the value of a document chosen at random, without matching the "
              "question's key to the title, is right %.1f%% of the time (1 / %d documents).\n",
              s.answer_tokens, V.count, std::pow(1.0 / V.count, s.answer_tokens), 100.0 / V.count,
              100.0 / s.documents, s.documents);
  if (s.seeds > 1) {
    print_summary(study.results, s);
  } else {
    std::printf("One seed shows what this seed's models did, not whether MEAP helps: the seed-to-seed spread is larger "
                "than most differences in the table. For the comparison run several seeds (--seeds 4 or more).\n");
  }
  std::printf("\nThis is what %d seed%s of a %lld-parameter model measured on this machine, on a synthetic task; it is "
              "not a general claim about MEAP. Floating-point differences between machines and thread counts change "
              "the trajectories, and per-position differences within the seed-to-seed spread are not evidence either "
              "way.\n",
              s.seeds, s.seeds == 1 ? "" : "s", static_cast<long long>(config.parameter_count()));
  std::printf("wrote %s, finetune_study_summary.csv and finetune_study_runs.csv\n",
              (s.out / "finetune_study.csv").string().c_str());
  std::printf("time: %s (%.0f s) for %d seed%s\n", meap::run::format_duration(study.seconds).c_str(), study.seconds,
              s.seeds, s.seeds == 1 ? "" : "s");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return meap::run::guarded_main(program, "use fewer --eval-rows or a smaller --pretrain-rows / --batch",
                                 [&] { return run(argc, argv); });
}
