// meap/eval/suite.hpp: the evaluation sweep of meap_eval, for every device and precision: the
// retrieval tasks over a length x depth grid, the MEAP attention analysis on needle prompts (clean
// against MEAP-masked) and perplexity on a token file, from a checkpoint directory to CSV files,
// gnuplot plots, a table on stdout and progress with an ETA on stderr.
//
//   meap::eval::suite_options options;
//   options.model = "run/checkpoints/step-00001000";
//   options.out = "eval";
//   options.suites = {"retrieval", "attention"};
//   meap::eval::run_suite<meap::fp32>(options, meap::cpu{});
//
// run_suite is a plain (not inline) function template, so that a program can declare it
// `extern template` and link one explicit instantiation per (precision, device): the model and
// every kernel under it are then compiled once, not in every translation unit that calls it.
//
// A "length" counts the positions the model reads: the prompt plus the answer but its last token
// (greedy generation feeds back every answer token but the last; log-likelihood scoring
// teacher-forces the same ones). So a length of max_seq fills the model's window, and each task's
// prompt is `length - (answer tokens - 1)` tokens. The attention suite reads a prompt only: there
// the prompt is `length` tokens.
//
// Errors: every check (the options against the model's config, the output directory, the token
// file) runs before the model is loaded. They are meap::errors from `options.program` naming the
// command-line option a user of meap_eval would change ("--lengths", "--suite", ...), so that the
// program passes them on unchanged. docs/eval.md, "meap_eval", describes the sweep and its files.
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/error.hpp>
#include <meap/core/precision.hpp>
#include <meap/core/tensor.hpp>
#include <meap/eval/attention_analysis.hpp>
#include <meap/eval/likelihood.hpp>
#include <meap/eval/scoring.hpp>
#include <meap/eval/tasks.hpp>
#include <meap/io/atomic_file.hpp>
#include <meap/io/token_dataset.hpp>
#include <meap/masking/apply.hpp>
#include <meap/masking/fixed_ratio.hpp>
#include <meap/nn/config.hpp>
#include <meap/run/progress.hpp>
#include <meap/train/checkpoint.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace meap::eval {

// Which query rows the attention suite's variance and answer share read. `all` (every prompt
// position) is the paper's measure: its variance is over whole sequences. `last` reads the
// question's end alone, the position whose attention answers the question.
enum class attention_query_rows { all, last };

inline std::string_view to_string(attention_query_rows rows) { return rows == attention_query_rows::all ? "all" : "last"; }

inline attention_query_rows parse_attention_query_rows(std::string_view name) {
  if (name == "all") return attention_query_rows::all;
  if (name == "last") return attention_query_rows::last;
  throw_argument_error("meap::eval::parse_attention_query_rows", "rows", std::string(name), "all or last");
}

// Everything meap_eval's command line sets but the device, which the caller passes to run_suite.
struct suite_options {
  std::string model;  // a Hugging Face-layout checkpoint directory
  std::string out;    // output directory, created if missing
  // Task names (needle, multikey_needle, multivalue_needle, passkey, mqar, multidoc_qa),
  // retrieval (all six), attention, perplexity (needs data), all.
  std::vector<std::string> suites{"needle", "attention"};
  std::vector<std::int64_t> lengths;  // empty: those of max_seq / 4, / 2, / 1 that every chosen task accepts
  std::vector<double> depths{0, 25, 50, 75, 100};  // percent of the haystack
  std::int64_t rows = 20;                           // examples per (task, length, depth) cell
  std::uint64_t seed = 1234;                        // the tasks' and the attention mask's
  scoring method = scoring::exact_match;
  std::int64_t batch = 8;     // rows per forward pass (retrieval and perplexity)
  std::int64_t reserved = 1;  // ids [0, reserved) the task vocabulary leaves alone
  std::int64_t mask_id = -1;  // -1: vocab - 1, as meap_pretrain trains
  std::int64_t bos = -1;      // -1: no BOS
  double mask_ratio = 0.15;   // the attention suite's MEAP mask
  attention_query_rows attention_rows = attention_query_rows::all;
  std::string data;                     // token file for the perplexity suite
  std::int64_t perplexity_seq_len = 0;  // 0: the model's max_seq
  std::int64_t perplexity_windows = 0;  // 0: every window of the file
  std::string device_name = "cpu";      // printed with the results only; the device is run_suite's argument
  // The program the errors and the table's first line name; the errors name its options
  // (--lengths, ...), so another front end should keep meap_eval's option names.
  const char* program = "meap_eval";
};

// The attention suite's prompts: at most this many (the analysis holds one T x T matrix per head
// and batch row at a time, but its host loops grow with every row).
inline constexpr std::int64_t attention_prompt_limit = 16;

// XORed into the seed of the attention suite's mask, so that the mask's Philox streams are not
// the tasks' own: unsalted, the mask of prompt 0 (stream (seed, 0, 0)) drew from the very stream
// that drew prompt 0's question key (a needle example's (seed, row 0, kind 0)), and its first
// masked position followed the key id. The bytes spell "meap-msk".
inline constexpr std::uint64_t attention_mask_seed_salt = 0x6d6561702d6d736bull;

inline std::uint64_t attention_mask_seed(std::uint64_t seed) { return seed ^ attention_mask_seed_salt; }

namespace detail {

// Refusals of the options: from options.program, naming the command-line option.
[[noreturn]] inline void suite_error(const suite_options& options, const std::string& name, const std::string& value,
                                     const std::string& expected) {
  throw_argument_error(options.program, name, value, expected);
}

// CSV numbers: enough digits to compare runs; NaN (an undefined ratio) as "nan".
inline std::string suite_number(double x) {
  if (std::isnan(x)) return "nan";
  char text[40];
  std::snprintf(text, sizeof text, "%.6g", x);
  return text;
}

inline std::string suite_percent(double fraction) {
  if (std::isnan(fraction)) return "nan";
  char text[40];
  std::snprintf(text, sizeof text, "%.1f", 100.0 * fraction);
  return text;
}

inline std::string suite_task_names() {
  std::string names;
  for (const auto kind : all_tasks()) names.append(names.empty() ? "" : ", ").append(to_string(kind));
  return names;
}

inline std::string suite_names() { return suite_task_names() + ", retrieval, attention, perplexity, all"; }

inline task_request suite_request(task_kind kind, index_t prompt_length, double depth, std::uint64_t seed,
                                  std::uint64_t row) {
  task_request request;
  request.kind = kind;
  request.context_length = prompt_length;
  request.depth = depth;
  request.seed = seed;
  request.row = row;
  return request;
}

}  // namespace detail

// What a task needs of a length, found by asking its generator (the shortest prompt depends on the
// task's knobs and on BOS, so the generator is the one authority on it).
struct suite_task {
  task_kind kind = task_kind::needle;
  index_t shortest_prompt = 0;
  index_t answer_tokens = 0;

  index_t shortest_length() const { return shortest_prompt + answer_tokens - 1; }
  index_t prompt_length(index_t length) const { return length - (answer_tokens - 1); }
  bool has_depth() const { return kind != task_kind::mqar; }  // MQAR's queries have no depth
};

namespace detail {

// The shortest prompt the generator accepts, by binary search: only the length check depends on
// the length, so acceptance is monotone in it. The search starts at `fitting` (the longest prompt
// the model could read) and doubles past it only to name the shortest in an error message.
inline suite_task measure_suite_task(const suite_options& options, task_kind kind, const id_vocabulary& vocabulary,
                                     index_t fitting) {
  const auto accepts = [&](index_t prompt) -> std::optional<task_example> {
    try {
      return make_example(suite_request(kind, prompt, 0.5, 0, 0), vocabulary);
    } catch (const error& e) {
      if (e.argument() != "request.context_length") throw;
      return std::nullopt;
    }
  };
  constexpr index_t longest_probe = index_t{1} << 20;
  index_t low = 1, high = std::max<index_t>(fitting, 1);
  auto accepted = accepts(high);
  while (!accepted && high < longest_probe) {
    low = high + 1;
    high = std::min(2 * high, longest_probe);
    accepted = accepts(high);
  }
  if (!accepted)
    suite_error(options, "--suite", std::string(to_string(kind)), "tasks whose prompts fit 2^20 tokens");
  while (low < high) {
    const index_t middle = low + (high - low) / 2;
    if (auto example = accepts(middle)) {
      high = middle;
      accepted = std::move(example);
    } else {
      low = middle + 1;
    }
  }
  return {kind, high, static_cast<index_t>(accepted->answer.size())};
}

}  // namespace detail

// Everything the options and the model's config decide, validated before any work starts.
struct suite_plan {
  std::vector<suite_task> tasks;  // retrieval, in all_tasks() order
  bool attention = false;
  bool perplexity = false;
  std::optional<suite_task> attention_task;  // the needle, when attention is chosen
  std::vector<index_t> lengths;              // ascending
  std::vector<double> depths;                // percent, ascending
  id_vocabulary vocabulary;
  std::int32_t mask_id = 0;
  index_t perplexity_seq_len = 0;
  index_t attention_prompts = 0;  // min(rows, attention_prompt_limit)
};

// Checks the options against the model's config and resolves the defaults; every refusal is a
// meap::error from options.program naming the option to change.
inline suite_plan plan_suite(const suite_options& a, const nn::llama_config& config) {
  using detail::suite_error;
  suite_plan p;
  std::vector<bool> wants_tasks(all_tasks().size(), false);
  bool all = false;
  for (const auto& name : a.suites) {
    if (name == "all") {
      all = true;
      wants_tasks.assign(wants_tasks.size(), true);
      p.attention = true;
    } else if (name == "retrieval") {
      wants_tasks.assign(wants_tasks.size(), true);
    } else if (name == "attention") {
      p.attention = true;
    } else if (name == "perplexity") {
      p.perplexity = true;
    } else {
      const auto& tasks = all_tasks();
      const auto found = std::find_if(tasks.begin(), tasks.end(), [&](auto kind) { return to_string(kind) == name; });
      if (found == tasks.end()) suite_error(a, "--suite", name, "a comma-separated list of " + detail::suite_names());
      wants_tasks[static_cast<std::size_t>(found - tasks.begin())] = true;
    }
  }
  if (p.perplexity && a.data.empty())
    suite_error(a, "--suite", "perplexity", "--data FILE.u16|.u32 with it (the token file to measure perplexity on)");
  if (all && !a.data.empty()) p.perplexity = true;
  if (!a.data.empty() && !p.perplexity)
    suite_error(a, "--data", a.data, "a suite that reads it: add perplexity (or all) to --suite");

  // The task vocabulary: carved from [reserved, mask id), so no prompt ever holds the mask id.
  const std::int64_t vocab = config.vocab;
  const std::int64_t mask_id = a.mask_id >= 0 ? a.mask_id : vocab - 1;
  if (mask_id >= vocab)
    suite_error(a, "--mask-id", std::to_string(mask_id), "an id in [0, vocab = " + std::to_string(vocab) + ")");
  p.mask_id = static_cast<std::int32_t>(mask_id);
  if (a.bos >= vocab || a.bos == mask_id)
    suite_error(a, "--bos", std::to_string(a.bos),
                "-1 (none) or an id in [0, vocab = " + std::to_string(vocab) + ") other than the mask id " +
                    std::to_string(mask_id));
  try {
    p.vocabulary = default_id_vocabulary(p.mask_id, static_cast<std::int32_t>(a.reserved));
  } catch (const error& e) {
    suite_error(a, "--model",
                a.model + " (vocab " + std::to_string(vocab) + ", task ids from [" + std::to_string(a.reserved) +
                    ", mask id " + std::to_string(mask_id) + "))",
                std::string("a vocabulary the tasks' ids fit in: ") + e.what());
  }
  p.vocabulary.bos = static_cast<std::int32_t>(a.bos);
  try {
    p.vocabulary.validate(static_cast<std::int32_t>(vocab));
  } catch (const error& e) {
    suite_error(a, "--bos", std::to_string(a.bos), std::string("an id outside the task vocabulary: ") + e.what());
  }

  for (std::size_t i = 0; i < all_tasks().size(); ++i)
    if (wants_tasks[i]) p.tasks.push_back(detail::measure_suite_task(a, all_tasks()[i], p.vocabulary, config.max_seq));
  if (p.attention) {
    p.attention_task = detail::measure_suite_task(a, task_kind::needle, p.vocabulary, config.max_seq);
    p.attention_prompts = std::min<index_t>(a.rows, attention_prompt_limit);
    try {
      masking::fixed_ratio{.ratio = a.mask_ratio}.validate();
    } catch (const error&) {
      suite_error(a, "--mask-ratio", detail::suite_number(a.mask_ratio), "a ratio in the open interval (0, 1)");
    }
  }
  if (p.tasks.empty() && !p.attention && !p.perplexity)
    suite_error(a, "--suite", "(empty)", "at least one of " + detail::suite_names());

  // Lengths: each must fit the model and every chosen task.
  struct need {
    std::string what;
    index_t shortest;
  };
  std::vector<need> needs;
  for (const auto& task : p.tasks)
    needs.push_back({std::string(to_string(task.kind)) + " (a prompt of " + std::to_string(task.shortest_prompt) +
                         " tokens and an answer of " + std::to_string(task.answer_tokens) + ")",
                     task.shortest_length()});
  if (p.attention_task)
    needs.push_back({"attention (needle prompts of at least " + std::to_string(p.attention_task->shortest_prompt) +
                         " tokens)",
                     p.attention_task->shortest_prompt});
  const index_t max_seq = config.max_seq;
  const auto accepted = [&](index_t length) {
    return std::all_of(needs.begin(), needs.end(), [&](const need& n) { return length >= n.shortest; });
  };
  if (a.lengths.empty()) {
    for (const index_t length : {max_seq / 4, max_seq / 2, max_seq})
      if (length >= 1 && accepted(length)) p.lengths.push_back(length);
    if (p.lengths.empty() && !needs.empty()) {
      const auto longest = *std::max_element(needs.begin(), needs.end(), [](const need& x, const need& y) {
        return x.shortest < y.shortest;
      });
      suite_error(a, "--suite", longest.what,
                  "tasks that fit the model's max_seq = " + std::to_string(max_seq) + " (this one needs at least " +
                      std::to_string(longest.shortest) + " positions)");
    }
  } else {
    for (const std::int64_t length : a.lengths) {
      if (length > max_seq)
        suite_error(a, "--lengths", std::to_string(length),
                    "lengths of at most the model's max_seq = " + std::to_string(max_seq));
      for (const auto& n : needs)
        if (length < n.shortest)
          suite_error(a, "--lengths", std::to_string(length),
                      "lengths of at least " + std::to_string(n.shortest) + " positions for " + n.what);
      p.lengths.push_back(length);
    }
  }
  std::sort(p.lengths.begin(), p.lengths.end());
  p.lengths.erase(std::unique(p.lengths.begin(), p.lengths.end()), p.lengths.end());
  p.depths = a.depths;
  std::sort(p.depths.begin(), p.depths.end());
  p.depths.erase(std::unique(p.depths.begin(), p.depths.end()), p.depths.end());
  if (p.depths.empty()) p.depths = {50};

  if (p.perplexity) {
    p.perplexity_seq_len = a.perplexity_seq_len > 0 ? a.perplexity_seq_len : max_seq;
    if (p.perplexity_seq_len > max_seq)
      suite_error(a, "--perplexity-seq-len", std::to_string(p.perplexity_seq_len),
                  "windows of at most the model's max_seq = " + std::to_string(max_seq) + " tokens");
  }
  return p;
}

// ---------------------------------------------------------------------------------------------
// The attention suite's batch

// Needle prompts of the plan's largest length (depth 50%), a MEAP-masked copy and the analysis
// options: the needle as each row's answer span, the query rows options.attention_rows chooses.
struct attention_batch {
  tensor<std::int32_t, cpu> clean;   // (prompts, T)
  tensor<std::int32_t, cpu> masked;  // (prompts, T): clean with the mask id at the masked positions
  attention_analysis_options analysis;
};

inline attention_batch make_attention_batch(const suite_plan& p, const suite_options& a) {
  check_argument(p.attention && p.attention_prompts >= 1 && !p.lengths.empty(), "meap::eval::make_attention_batch",
                 "plan", "a plan without the attention suite", "a plan_suite() result with attention chosen");
  const index_t B = p.attention_prompts, T = p.lengths.back();
  auto clean = zeros<std::int32_t>(cpu{}, dims{B, T});
  // apply() reads T + 1 tokens per row (inputs and their next tokens); the next token after the
  // prompt is the answer's first. Its default keeps position T - 1, the question's end, unmasked.
  auto tokens = zeros<std::int32_t>(cpu{}, dims{B, T + 1});
  attention_analysis_options analysis;
  analysis.mask_id = p.mask_id;
  for (index_t b = 0; b < B; ++b) {
    const auto example =
        make_example(detail::suite_request(task_kind::needle, T, 0.5, a.seed, static_cast<std::uint64_t>(b)), p.vocabulary);
    for (index_t t = 0; t < T; ++t) {
      clean.data()[b * T + t] = example.prompt[static_cast<std::size_t>(t)];
      tokens.data()[b * (T + 1) + t] = example.prompt[static_cast<std::size_t>(t)];
    }
    tokens.data()[b * (T + 1) + T] = example.answer[0];
    analysis.answer_spans.push_back(example.evidence[0]);
    // all: no list, which analyze_attention reads as every position.
    if (a.attention_rows == attention_query_rows::last) analysis.query_rows.push_back({T - 1});
  }
  masking::pretraining_options masking;
  masking.seed = attention_mask_seed(a.seed);
  masking.mask_id = p.mask_id;
  masking.special_ids = {p.vocabulary.query, p.vocabulary.separator};
  if (p.vocabulary.bos >= 0) masking.special_ids.push_back(p.vocabulary.bos);
  auto masked = masking::apply(cpu{}, masking::fixed_ratio{.ratio = a.mask_ratio}, tokens.view().as_const(), masking);
  return {std::move(clean), std::move(masked.input_ids), std::move(analysis)};
}

// ---------------------------------------------------------------------------------------------
// Results

struct retrieval_cell {
  task_kind kind = task_kind::needle;
  index_t length = 0;
  std::optional<double> depth_percent;  // none for MQAR
  index_t rows = 0;
  index_t correct = 0;
  double mean_answer_log_likelihood = std::numeric_limits<double>::quiet_NaN();  // log_likelihood scoring only

  double accuracy() const { return rows > 0 ? static_cast<double>(correct) / static_cast<double>(rows) : 0.0; }
};

// The mean accuracy of a task at a length over its depths.
inline double mean_accuracy(const std::vector<retrieval_cell>& cells, task_kind kind, index_t length) {
  double sum = 0;
  int count = 0;
  for (const auto& cell : cells)
    if (cell.kind == kind && cell.length == length) {
      sum += cell.accuracy();
      ++count;
    }
  return count > 0 ? sum / count : std::numeric_limits<double>::quiet_NaN();
}

struct suite_perplexity {
  index_t seq_len = 0;
  perplexity_result result;
};

namespace detail {

inline void write_suite_text(const std::filesystem::path& path, const std::string& text) {
  write_file_atomically(path, std::span<const std::byte>(reinterpret_cast<const std::byte*>(text.data()), text.size()));
}

}  // namespace detail

inline constexpr const char* retrieval_csv_header = "task,length,depth_percent,rows,correct,accuracy,mean_answer_log_likelihood";
inline constexpr const char* attention_csv_header =
    "layer,head,masked_mass_clean,masked_mass_masked,decay,pooled_decay,variance_clean,variance_masked,"
    "variance_change,answer_share_clean,answer_share_masked";
inline constexpr const char* perplexity_csv_header = "data,seq_len,windows,tokens,mean_nll,perplexity";

inline void write_retrieval_csv(const std::filesystem::path& path, const std::vector<retrieval_cell>& cells) {
  using detail::suite_number;
  std::ostringstream csv;
  csv << retrieval_csv_header << '\n';
  for (const auto& c : cells)
    csv << to_string(c.kind) << ',' << c.length << ',' << (c.depth_percent ? suite_number(*c.depth_percent) : "") << ','
        << c.rows << ',' << c.correct << ',' << suite_number(c.accuracy()) << ','
        << (std::isnan(c.mean_answer_log_likelihood) ? "" : suite_number(c.mean_answer_log_likelihood)) << '\n';
  detail::write_suite_text(path, csv.str());
}

inline void write_attention_csv(const std::filesystem::path& path, const attention_report& report) {
  using detail::suite_number;
  std::ostringstream csv;
  csv << attention_csv_header << '\n';
  // One head's pooled decay is its decay: the pool holds that head alone.
  for (const auto& h : report.heads)
    csv << h.layer << ',' << h.head << ',' << suite_number(h.masked_mass_clean) << ',' << suite_number(h.masked_mass_masked)
        << ',' << suite_number(h.decay) << ',' << suite_number(h.decay) << ',' << suite_number(h.variance_clean) << ','
        << suite_number(h.variance_masked) << ',' << suite_number(h.variance_change) << ','
        << suite_number(h.answer_share_clean) << ',' << suite_number(h.answer_share_masked) << '\n';
  const auto averages = [&](const std::string& layer, const attention_averages& x) {
    csv << layer << ",all," << suite_number(x.masked_mass_clean) << ',' << suite_number(x.masked_mass_masked) << ','
        << suite_number(x.decay) << ',' << suite_number(x.pooled_decay) << ',' << suite_number(x.variance_clean) << ','
        << suite_number(x.variance_masked) << ',' << suite_number(x.variance_change) << ','
        << suite_number(x.answer_share_clean) << ',' << suite_number(x.answer_share_masked) << '\n';
  };
  for (std::size_t l = 0; l < report.layers.size(); ++l) averages(std::to_string(l), report.layers[l]);
  averages("all", report.overall);
  detail::write_suite_text(path, csv.str());
}

inline void write_perplexity_csv(const std::filesystem::path& path, const std::string& data, const suite_perplexity& p) {
  std::ostringstream csv;
  csv << perplexity_csv_header << '\n';
  std::string quoted = data;  // a CSV field: quoted, inner quotes doubled
  for (std::size_t at = quoted.find('"'); at != std::string::npos; at = quoted.find('"', at + 2)) quoted.insert(at, "\"");
  csv << '"' << quoted << "\"," << p.seq_len << ',' << p.result.windows << ',' << p.result.tokens << ','
      << detail::suite_number(p.result.mean_nll) << ',' << detail::suite_number(p.result.perplexity) << '\n';
  detail::write_suite_text(path, csv.str());
}

// ---------------------------------------------------------------------------------------------
// Plots: one gnuplot script from inline data; each PNG is written to a temporary and renamed, so
// a PNG's name only ever holds a complete plot.

namespace detail {

inline std::string gnuplot_quoted(const std::string& text) {  // a single-quoted gnuplot string
  std::string quoted = "'";
  for (const char c : text) quoted += c == '\'' ? std::string("''") : std::string(1, c);
  return quoted + "'";
}

inline std::string shell_quoted(const std::string& text) {
  std::string quoted = "'";
  for (const char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

}  // namespace detail

// Draws <task>_heatmap.png, accuracy_by_length.png and attention.png into `out` with gnuplot
// (skipped, with a line on stdout, when gnuplot is not installed) and appends the names of the
// PNGs it wrote to `written`.
inline void write_suite_plots(const std::filesystem::path& out, const suite_plan& p, const suite_options& a,
                              const std::vector<retrieval_cell>& cells, const std::optional<attention_report>& attention,
                              std::vector<std::string>& written) {
  using detail::gnuplot_quoted;
  using detail::suite_number;
  if (std::system("command -v gnuplot > /dev/null 2>&1") != 0) {
    std::printf("gnuplot not found: skipping the plots (install it with: apt-get install gnuplot-nox)\n");
    return;
  }
  std::ostringstream gp;
  std::vector<std::string> pngs;  // final names; each plot writes "." + name + ".tmp" first
  const auto begin_plot = [&](const std::string& name, const char* size) {
    pngs.push_back(name);
    // noenhanced: task names' underscores are text, not subscripts.
    gp << "reset\nset terminal pngcairo noenhanced size " << size << " font 'sans,11'\n"
       << "set output " << gnuplot_quoted((out / ("." + name + ".tmp")).string()) << "\n"
       << "set datafile missing 'nan'\n";
  };
  const std::string rows_note = std::string(to_string(a.method)) + ", " + std::to_string(a.rows) +
                                (a.rows == 1 ? " row" : " rows") + " per cell";
  std::string length_tics;
  for (std::size_t i = 0; i < p.lengths.size(); ++i)
    length_tics += (i ? ", '" : "'") + std::to_string(p.lengths[i]) + "' " + std::to_string(i);

  for (const auto& task : p.tasks) {
    if (!task.has_depth()) continue;
    const std::string name(to_string(task.kind));
    gp << "$" << name << " << EOD\n";
    for (const auto& c : cells)
      if (c.kind == task.kind) {
        const auto x = std::find(p.lengths.begin(), p.lengths.end(), c.length) - p.lengths.begin();
        const auto y = std::find(p.depths.begin(), p.depths.end(), *c.depth_percent) - p.depths.begin();
        gp << x << ' ' << y << ' ' << 100.0 * c.accuracy() << '\n';
      }
    gp << "EOD\n";
    begin_plot(name + "_heatmap.png", "800,520");
    std::string depth_tics;
    for (std::size_t i = 0; i < p.depths.size(); ++i)
      depth_tics += (i ? ", '" : "'") + suite_number(p.depths[i]) + "' " + std::to_string(i);
    gp << "set title " << gnuplot_quoted(name + ": accuracy (%) by context length and depth (" + rows_note + ")") << "\n"
       << "set xlabel 'context length (positions)'\nset ylabel 'answer depth in the haystack (%)'\n"
       << "set xtics (" << length_tics << ")\nset ytics (" << depth_tics << ")\n"
       << "set xrange [-0.5:" << p.lengths.size() - 0.5 << "]\n"
       << "set yrange [" << p.depths.size() - 0.5 << ":-0.5]\n"  // depth 0 at the top, as needle heatmaps are drawn
       << "set cbrange [0:100]\nset cblabel 'accuracy (%)'\n"
       << "set palette defined (0 '#d73027', 50 '#fee08b', 100 '#1a9850')\nunset key\n"
       << "plot $" << name << " using 1:2:(0.5):(0.5):3 with boxxyerror fillcolor palette fillstyle solid 1.0 noborder, "
       << "$" << name << " using 1:2:(sprintf('%.0f', $3)) with labels\n";
  }

  if (!p.tasks.empty()) {
    begin_plot("accuracy_by_length.png", "800,500");
    gp << "set title " << gnuplot_quoted("retrieval accuracy by context length, mean over depths (" + rows_note + ")") << "\n"
       << "set xlabel 'context length (positions)'\nset ylabel 'accuracy (%)'\nset yrange [-3:103]\nset grid\n"
       << "set xtics (" << length_tics << ")\nset xrange [-0.3:" << p.lengths.size() - 0.7 << "]\n"
       << "set key outside right\nplot ";
    for (std::size_t t = 0; t < p.tasks.size(); ++t) {
      gp << (t ? ", " : "") << "'-' using 1:2 with linespoints lw 2 pt 7 title "
         << gnuplot_quoted(std::string(to_string(p.tasks[t].kind)));
    }
    gp << "\n";
    for (const auto& task : p.tasks) {
      for (std::size_t i = 0; i < p.lengths.size(); ++i)
        gp << i << ' ' << 100.0 * mean_accuracy(cells, task.kind, p.lengths[i]) << '\n';
      gp << "e\n";
    }
  }

  if (attention) {
    gp << "$layers << EOD\n";
    for (std::size_t l = 0; l < attention->layers.size(); ++l)
      gp << l << ' ' << suite_number(100.0 * attention->layers[l].decay) << ' '
         << suite_number(100.0 * attention->layers[l].variance_change) << '\n';
    gp << "EOD\n";
    begin_plot("attention.png", "900,500");
    gp << "set title " << gnuplot_quoted("MEAP-masked (ratio " + suite_number(a.mask_ratio) +
                                             ") vs clean input, mean over each layer's heads; pooled decay " +
                                             detail::suite_percent(attention->overall.pooled_decay) + "%") << "\n"
       << "set xlabel 'layer'\nset ylabel 'change (%)'\nset grid ytics\nset key outside top center horizontal\n"
       << "set style data histograms\nset style histogram clustered gap 1\nset style fill solid 0.8 border -1\n"
       << "set xzeroaxis\n"
       << "plot $layers using 2:xtic(1) title 'attention decay on masked positions', "
       << "'' using 3 title 'variance change over unmasked keys'\n";
  }
  if (pngs.empty()) return;
  gp << "unset output\n";

  const auto script = out / "plots.gp";
  detail::write_suite_text(script, gp.str());
  const std::string command = "gnuplot " + detail::shell_quoted(script.string());
  const bool plotted = std::system(command.c_str()) == 0;
  std::error_code ec;
  for (const auto& name : pngs) {
    const auto temporary = out / ("." + name + ".tmp");
    if (plotted && std::filesystem::exists(temporary, ec) && (std::filesystem::rename(temporary, out / name, ec), !ec)) {
      written.push_back(name);
    } else {
      std::filesystem::remove(temporary, ec);
      std::printf("gnuplot failed on %s: %s not written\n", script.string().c_str(), name.c_str());
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The run

// Progress on stderr, with an ETA from the work done so far (examples x positions).
class suite_progress {
 public:
  explicit suite_progress(double total_work) : total_(total_work), start_(std::chrono::steady_clock::now()) {}

  void finished(double work, const std::string& what) {
    done_ += work;
    const double elapsed = run::seconds_since(start_);
    // The work is an estimate: past it, the ETA is 0, never negative.
    const double eta = run::eta_seconds(elapsed, done_, std::max(total_, done_));
    std::fprintf(stderr, "%s  elapsed %s  ETA %s\n", what.c_str(), run::format_duration(elapsed).c_str(),
                 run::format_duration(eta).c_str());
  }
  double elapsed() const { return run::seconds_since(start_); }

 private:
  double total_ = 0, done_ = 0;
  std::chrono::steady_clock::time_point start_;
};

// The whole sweep on `device` in precision P: checks, loads options.model, runs the chosen suites,
// writes the files into options.out and the table on stdout; returns 0 (a program's exit code).
// Not inline: see the top of this file.
template <class P, class Device>
int run_suite(const suite_options& a, const Device& device) {
  using detail::suite_number;
  using detail::suite_percent;
  using detail::suite_error;
  // Everything that can be refused is refused here, before the model is loaded: the config, the
  // plan, the output directory, the token file.
  const std::filesystem::path model_directory(a.model);
  if (!std::filesystem::is_directory(model_directory))
    suite_error(a, "--model", a.model, "a checkpoint directory (config.json and model.safetensors)");
  const auto config = train::read_hugging_face_config(model_directory / "config.json");
  const suite_plan p = plan_suite(a, config);

  const std::filesystem::path out(a.out);
  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (ec || !std::filesystem::is_directory(out))
    suite_error(a, "--out", a.out,
                "a directory that exists or can be created" + (ec ? " (" + ec.message() + ")" : std::string()));
  const auto probe = out / ("." + std::string(a.program) + ".write_test");
  detail::write_suite_text(probe, "probe\n");  // writable: found now, not after the evaluation
  std::filesystem::remove(probe, ec);

  std::optional<token_dataset> dataset;
  if (p.perplexity) {
    token_dataset_options options;
    options.seq_len = p.perplexity_seq_len;
    options.vocab_size = config.vocab;
    dataset.emplace(a.data, options);
  }
  const auto model = train::load_pretrained<P>(model_directory, device);

  std::fprintf(stderr, "model: %s, %lld parameters (vocab %lld, d %lld, %lld layers x %lld heads, max_seq %lld); %s on %s\n",
               a.model.c_str(), static_cast<long long>(config.parameter_count()), static_cast<long long>(config.vocab),
               static_cast<long long>(config.d_model), static_cast<long long>(config.layers),
               static_cast<long long>(config.heads), static_cast<long long>(config.max_seq),
               std::string(precision_name<P>()).c_str(), a.device_name.c_str());

  // The work of each part in examples x positions, for the ETA.
  const auto depth_count = [&](const suite_task& task) { return task.has_depth() ? p.depths.size() : std::size_t{1}; };
  const auto rows = static_cast<std::size_t>(a.rows);
  std::size_t total_cells = 0;
  double total_work = 0;
  for (const auto& task : p.tasks)
    for (const auto length : p.lengths) {
      total_cells += depth_count(task);
      total_work += static_cast<double>(depth_count(task) * rows * static_cast<std::size_t>(length));
    }
  const double attention_work = p.attention ? 2.0 * static_cast<double>(p.attention_prompts * p.lengths.back()) : 0.0;
  index_t perplexity_windows = 0;
  if (dataset)
    perplexity_windows = a.perplexity_windows > 0 ? std::min<index_t>(a.perplexity_windows, dataset->windows())
                                                  : dataset->windows();
  const double perplexity_work = static_cast<double>(perplexity_windows * p.perplexity_seq_len);
  suite_progress tracker(total_work + attention_work + perplexity_work);

  // Retrieval: every depth of a (task, length) in one list, so the batches stay full.
  std::vector<retrieval_cell> cells;
  std::size_t cells_done = 0;
  for (const auto& task : p.tasks) {
    const std::string name(to_string(task.kind));
    for (const auto length : p.lengths) {
      std::vector<task_example> examples;
      std::vector<std::optional<double>> depths;
      if (task.has_depth()) depths.assign(p.depths.begin(), p.depths.end());
      else depths.push_back(std::nullopt);
      for (const auto& depth : depths)
        for (std::int64_t row = 0; row < a.rows; ++row)
          examples.push_back(make_example(detail::suite_request(task.kind, task.prompt_length(length),
                                                                depth.value_or(50.0) / 100.0, a.seed,
                                                                static_cast<std::uint64_t>(row)),
                                          p.vocabulary));
      const auto scores = score_examples(device, model, examples, a.method, a.batch);
      for (std::size_t d = 0; d < depths.size(); ++d) {
        retrieval_cell cell;
        cell.kind = task.kind;
        cell.length = length;
        cell.depth_percent = depths[d];
        cell.rows = a.rows;
        double log_likelihood = 0;
        for (std::size_t row = 0; row < rows; ++row) {
          const auto& score = scores[d * rows + row];
          cell.correct += score.correct ? 1 : 0;
          log_likelihood += score.answer_log_likelihood;
        }
        if (a.method == scoring::log_likelihood) cell.mean_answer_log_likelihood = log_likelihood / static_cast<double>(a.rows);
        cells.push_back(cell);
      }
      cells_done += depths.size();
      char what[160];
      std::snprintf(what, sizeof what, "%-17s length %6lld: accuracy %5.1f%%  cells %zu/%zu", name.c_str(),
                    static_cast<long long>(length), 100.0 * mean_accuracy(cells, task.kind, length), cells_done, total_cells);
      tracker.finished(static_cast<double>(depths.size() * rows * static_cast<std::size_t>(length)), what);
    }
  }

  // Attention: needle prompts at the largest length, clean against MEAP-masked.
  std::optional<attention_report> attention;
  index_t attention_length = 0;
  if (p.attention) {
    const auto batch = make_attention_batch(p, a);
    attention_length = batch.clean.size(1);
    attention = analyze_attention(device, model, batch.clean.view().as_const(), batch.masked.view().as_const(),
                                  batch.analysis);
    char what[160];
    std::snprintf(what, sizeof what, "attention         length %6lld: %lld rows, %lld masked positions, pooled decay %s%%",
                  static_cast<long long>(attention_length), static_cast<long long>(p.attention_prompts),
                  static_cast<long long>(attention->masked_positions), suite_percent(attention->overall.pooled_decay).c_str());
    tracker.finished(attention_work, what);
  }

  std::optional<suite_perplexity> perplexity_summary;
  if (dataset) {
    perplexity_options options;
    options.batch_rows = a.batch;
    options.max_windows = perplexity_windows;
    perplexity_summary = suite_perplexity{p.perplexity_seq_len, perplexity(device, model, *dataset, options)};
    char what[160];
    std::snprintf(what, sizeof what, "perplexity        length %6lld: %lld windows, perplexity %.4g",
                  static_cast<long long>(p.perplexity_seq_len), static_cast<long long>(perplexity_summary->result.windows),
                  perplexity_summary->result.perplexity);
    tracker.finished(perplexity_work, what);
  }

  // Outputs.
  std::vector<std::string> written;
  if (!p.tasks.empty()) {
    write_retrieval_csv(out / "retrieval.csv", cells);
    written.push_back("retrieval.csv");
  }
  if (attention) {
    write_attention_csv(out / "attention.csv", *attention);
    written.push_back("attention.csv");
  }
  if (perplexity_summary) {
    write_perplexity_csv(out / "perplexity.csv", a.data, *perplexity_summary);
    written.push_back("perplexity.csv");
  }

  // The table on stdout.
  std::printf("%s: %s (%lld parameters, vocab %lld, max_seq %lld), %s on %s, seed %llu\n", a.program, a.model.c_str(),
              static_cast<long long>(config.parameter_count()), static_cast<long long>(config.vocab),
              static_cast<long long>(config.max_seq), std::string(precision_name<P>()).c_str(), a.device_name.c_str(),
              static_cast<unsigned long long>(a.seed));
  if (!p.tasks.empty()) {
    std::string depths;
    for (const double d : p.depths) depths += (depths.empty() ? "" : ",") + suite_number(d);
    std::printf("\nretrieval accuracy (%%), %s, %lld row%s per cell, mean over depths %s (mqar: no depth)\n",
                std::string(to_string(a.method)).c_str(), static_cast<long long>(a.rows), a.rows == 1 ? "" : "s",
                depths.c_str());
    std::printf("%-18s", "task \\ length");
    for (const auto length : p.lengths) std::printf("%8lld", static_cast<long long>(length));
    std::printf("\n");
    for (const auto& task : p.tasks) {
      std::printf("%-18s", std::string(to_string(task.kind)).c_str());
      for (const auto length : p.lengths) std::printf("%8.1f", 100.0 * mean_accuracy(cells, task.kind, length));
      std::printf("\n");
    }
  }
  if (attention) {
    std::printf("\nattention: %lld needle prompt%s of %lld tokens, MEAP mask ratio %s (%lld masked positions), %s\n",
                static_cast<long long>(p.attention_prompts), p.attention_prompts == 1 ? "" : "s",
                static_cast<long long>(attention_length), suite_number(a.mask_ratio).c_str(),
                static_cast<long long>(attention->masked_positions),
                a.attention_rows == attention_query_rows::all ? "queries = every prompt position"
                                                               : "query = the last prompt position");
    std::printf("%-7s %9s %9s %12s %14s %14s\n", "layer", "decay%", "pooled%", "var.change%", "share.clean%",
                "share.masked%");
    const auto line = [](const std::string& layer, const attention_averages& x) {
      std::printf("%-7s %9s %9s %12s %14s %14s\n", layer.c_str(), suite_percent(x.decay).c_str(),
                  suite_percent(x.pooled_decay).c_str(), suite_percent(x.variance_change).c_str(),
                  suite_percent(x.answer_share_clean).c_str(), suite_percent(x.answer_share_masked).c_str());
    };
    for (std::size_t l = 0; l < attention->layers.size(); ++l) line(std::to_string(l), attention->layers[l]);
    line("all", attention->overall);
  }
  if (perplexity_summary)
    std::printf("\nperplexity: %.4f (mean NLL %.4f nats over %lld tokens, %lld windows of %lld)\n",
                perplexity_summary->result.perplexity, perplexity_summary->result.mean_nll,
                static_cast<long long>(perplexity_summary->result.tokens),
                static_cast<long long>(perplexity_summary->result.windows),
                static_cast<long long>(perplexity_summary->seq_len));
  std::printf("\n");
  write_suite_plots(out, p, a, cells, attention, written);
  std::string files;
  for (const auto& name : written) files += (files.empty() ? "" : ", ") + name;
  std::printf("wrote into %s: %s (%s)\n", a.out.c_str(), files.c_str(), run::format_duration(tracker.elapsed()).c_str());
  std::fflush(stdout);
  return 0;
}

}  // namespace meap::eval
