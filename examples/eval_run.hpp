// examples/eval_run.hpp: the evaluation of meap_eval, written once for every device and
// precision. meap_eval.cpp parses the command line and runs it on the CPU; on CUDA,
// meap_eval_cuda.cu instantiates the same run for meap::cuda (fp32 or bf16).
//
// A "length" counts the positions the model reads: the prompt plus the answer but its last token
// (greedy generation feeds back every answer token but the last; log-likelihood scoring
// teacher-forces the same ones). So a length of max_seq fills the model's window, and each task's
// prompt is `length - (answer tokens - 1)` tokens. The attention suite reads a prompt only: there
// the prompt is `length` tokens.
#pragma once

#include "run_support.hpp"

#include <meap/eval/attention_analysis.hpp>
#include <meap/eval/likelihood.hpp>
#include <meap/eval/scoring.hpp>
#include <meap/eval/tasks.hpp>
#include <meap/io/atomic_file.hpp>
#include <meap/io/token_dataset.hpp>
#include <meap/masking/apply.hpp>
#include <meap/masking/fixed_ratio.hpp>
#include <meap/train/checkpoint.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace meap_eval {

struct arguments {
  std::string model;  // a Hugging Face-layout checkpoint directory
  std::string out;
  std::vector<std::string> suite{"needle", "attention"};
  std::vector<std::int64_t> lengths;  // empty: those of max_seq / 4, / 2, / 1 that every chosen task accepts
  std::vector<double> depths{0, 25, 50, 75, 100};
  std::int64_t rows = 20;
  std::uint64_t seed = 1234;
  std::string scoring = "exact_match";
  std::int64_t batch = 8;
  std::int64_t reserved = 1;
  std::int64_t mask_id = -1;  // -1: vocab - 1, as meap_pretrain trains
  std::int64_t bos = -1;      // -1: no BOS
  double mask_ratio = 0.15;
  std::string data;                      // token file for the perplexity suite
  std::int64_t perplexity_seq_len = 0;   // 0: the model's max_seq
  std::int64_t perplexity_windows = 0;   // 0: every window of the file
  std::string device = "cpu";
  std::string dtype;     // fp32 (CPU default) or bf16 (CUDA default)
  int cuda_ordinal = -1;  // parsed from device
};

[[noreturn]] inline void bad_argument(const std::string& name, const std::string& value, const std::string& expected) {
  meap::throw_argument_error("meap_eval", name, value, expected);
}

using meap_examples::format_duration;

// CSV numbers: enough digits to compare runs; NaN (an undefined ratio) as "nan".
inline std::string format_number(double x) {
  if (std::isnan(x)) return "nan";
  char text[40];
  std::snprintf(text, sizeof text, "%.6g", x);
  return text;
}

inline std::string format_percent(double fraction) {
  if (std::isnan(fraction)) return "nan";
  char text[40];
  std::snprintf(text, sizeof text, "%.1f", 100.0 * fraction);
  return text;
}

inline std::string task_names() {
  std::string names;
  for (const auto kind : meap::eval::all_tasks()) names.append(names.empty() ? "" : ", ").append(meap::eval::to_string(kind));
  return names;
}

// What a task needs of a length, found by asking its generator (the shortest prompt depends on the
// task's knobs and on BOS, so the generator is the one authority on it).
struct task_shape {
  meap::eval::task_kind kind = meap::eval::task_kind::needle;
  meap::index_t shortest_prompt = 0;
  meap::index_t answer_tokens = 0;

  meap::index_t shortest_length() const { return shortest_prompt + answer_tokens - 1; }
  meap::index_t prompt_length(meap::index_t length) const { return length - (answer_tokens - 1); }
  bool has_depth() const { return kind != meap::eval::task_kind::mqar; }  // MQAR's queries have no depth
};

inline meap::eval::task_request make_request(meap::eval::task_kind kind, meap::index_t prompt_length, double depth,
                                             std::uint64_t seed, std::uint64_t row) {
  meap::eval::task_request request;
  request.kind = kind;
  request.context_length = prompt_length;
  request.depth = depth;
  request.seed = seed;
  request.row = row;
  return request;
}

// The shortest prompt the generator accepts, by binary search: only the length check depends on
// the length, so acceptance is monotone in it. The search starts at `fitting` (the longest prompt
// the model could read) and doubles past it only to name the shortest in an error message.
inline task_shape measure_task(meap::eval::task_kind kind, const meap::eval::id_vocabulary& vocabulary,
                               meap::index_t fitting) {
  const auto accepts = [&](meap::index_t prompt) -> std::optional<meap::eval::task_example> {
    try {
      return meap::eval::make_example(make_request(kind, prompt, 0.5, 0, 0), vocabulary);
    } catch (const meap::error& e) {
      if (e.argument() != "request.context_length") throw;
      return std::nullopt;
    }
  };
  constexpr meap::index_t longest_probe = meap::index_t{1} << 20;
  meap::index_t low = 1, high = std::max<meap::index_t>(fitting, 1);
  auto accepted = accepts(high);
  while (!accepted && high < longest_probe) {
    low = high + 1;
    high = std::min(2 * high, longest_probe);
    accepted = accepts(high);
  }
  if (!accepted)
    bad_argument("--suite", std::string(meap::eval::to_string(kind)), "tasks whose prompts fit 2^20 tokens");
  while (low < high) {
    const meap::index_t middle = low + (high - low) / 2;
    if (auto example = accepts(middle)) {
      high = middle;
      accepted = std::move(example);
    } else {
      low = middle + 1;
    }
  }
  return {kind, high, static_cast<meap::index_t>(accepted->answer.size())};
}

// Everything the arguments and the model's config decide, validated before any work starts.
struct plan {
  std::vector<task_shape> tasks;  // retrieval, in all_tasks() order
  bool attention = false;
  bool perplexity = false;
  std::optional<task_shape> attention_task;  // the needle, when attention is chosen
  std::vector<meap::index_t> lengths;        // ascending
  std::vector<double> depths;                // percent, ascending
  meap::eval::scoring method = meap::eval::scoring::exact_match;
  meap::eval::id_vocabulary vocabulary;
  std::int32_t mask_id = 0;
  meap::index_t perplexity_seq_len = 0;
  meap::index_t attention_rows = 0;
};

inline std::string suite_names() { return task_names() + ", retrieval, attention, perplexity, all"; }

inline plan make_plan(const arguments& a, const meap::nn::llama_config& config) {
  plan p;
  std::vector<bool> wants_tasks(meap::eval::all_tasks().size(), false);
  bool all = false;
  for (const auto& name : a.suite) {
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
      const auto& tasks = meap::eval::all_tasks();
      const auto found = std::find_if(tasks.begin(), tasks.end(), [&](auto kind) { return meap::eval::to_string(kind) == name; });
      if (found == tasks.end()) bad_argument("--suite", name, "a comma-separated list of " + suite_names());
      wants_tasks[static_cast<std::size_t>(found - tasks.begin())] = true;
    }
  }
  if (p.perplexity && a.data.empty())
    bad_argument("--suite", "perplexity", "--data FILE.u16|.u32 with it (the token file to measure perplexity on)");
  if (all && !a.data.empty()) p.perplexity = true;
  if (!a.data.empty() && !p.perplexity)
    bad_argument("--data", a.data, "a suite that reads it: add perplexity (or all) to --suite");
  p.method = meap::eval::parse_scoring(a.scoring);

  // The task vocabulary: carved from [reserved, mask id), so no prompt ever holds the mask id.
  const std::int64_t vocab = config.vocab;
  const std::int64_t mask_id = a.mask_id >= 0 ? a.mask_id : vocab - 1;
  if (mask_id >= vocab) bad_argument("--mask-id", std::to_string(mask_id), "an id in [0, vocab = " + std::to_string(vocab) + ")");
  p.mask_id = static_cast<std::int32_t>(mask_id);
  if (a.bos >= vocab || a.bos == mask_id)
    bad_argument("--bos", std::to_string(a.bos),
                 "-1 (none) or an id in [0, vocab = " + std::to_string(vocab) + ") other than the mask id " +
                     std::to_string(mask_id));
  try {
    p.vocabulary = meap::eval::default_id_vocabulary(p.mask_id, static_cast<std::int32_t>(a.reserved));
  } catch (const meap::error& e) {
    bad_argument("--model", a.model + " (vocab " + std::to_string(vocab) + ", task ids from [" +
                                std::to_string(a.reserved) + ", mask id " + std::to_string(mask_id) + "))",
                 std::string("a vocabulary the tasks' ids fit in: ") + e.what());
  }
  p.vocabulary.bos = static_cast<std::int32_t>(a.bos);
  try {
    p.vocabulary.validate(static_cast<std::int32_t>(vocab));
  } catch (const meap::error& e) {
    bad_argument("--bos", std::to_string(a.bos), std::string("an id outside the task vocabulary: ") + e.what());
  }

  for (std::size_t i = 0; i < meap::eval::all_tasks().size(); ++i)
    if (wants_tasks[i]) p.tasks.push_back(measure_task(meap::eval::all_tasks()[i], p.vocabulary, config.max_seq));
  if (p.attention) {
    p.attention_task = measure_task(meap::eval::task_kind::needle, p.vocabulary, config.max_seq);
    p.attention_rows = std::min<meap::index_t>(a.rows, 16);
    try {
      meap::masking::fixed_ratio{.ratio = a.mask_ratio}.validate();
    } catch (const meap::error&) {
      bad_argument("--mask-ratio", format_number(a.mask_ratio), "a ratio in the open interval (0, 1)");
    }
  }
  if (p.tasks.empty() && !p.attention && !p.perplexity) bad_argument("--suite", "(empty)", "at least one of " + suite_names());

  // Lengths: each must fit the model and every chosen task.
  struct need {
    std::string what;
    meap::index_t shortest;
  };
  std::vector<need> needs;
  for (const auto& task : p.tasks)
    needs.push_back({std::string(meap::eval::to_string(task.kind)) + " (a prompt of " + std::to_string(task.shortest_prompt) +
                         " tokens and an answer of " + std::to_string(task.answer_tokens) + ")",
                     task.shortest_length()});
  if (p.attention_task)
    needs.push_back({"attention (needle prompts of at least " + std::to_string(p.attention_task->shortest_prompt) +
                         " tokens)",
                     p.attention_task->shortest_prompt});
  const meap::index_t max_seq = config.max_seq;
  const auto accepted = [&](meap::index_t length) {
    return std::all_of(needs.begin(), needs.end(), [&](const need& n) { return length >= n.shortest; });
  };
  if (a.lengths.empty()) {
    for (const meap::index_t length : {max_seq / 4, max_seq / 2, max_seq})
      if (length >= 1 && accepted(length)) p.lengths.push_back(length);
    if (p.lengths.empty() && !needs.empty()) {
      const auto longest = *std::max_element(needs.begin(), needs.end(), [](const need& x, const need& y) {
        return x.shortest < y.shortest;
      });
      bad_argument("--suite", longest.what,
                   "tasks that fit the model's max_seq = " + std::to_string(max_seq) + " (this one needs at least " +
                       std::to_string(longest.shortest) + " positions)");
    }
  } else {
    for (const std::int64_t length : a.lengths) {
      if (length > max_seq)
        bad_argument("--lengths", std::to_string(length), "lengths of at most the model's max_seq = " + std::to_string(max_seq));
      for (const auto& n : needs)
        if (length < n.shortest)
          bad_argument("--lengths", std::to_string(length),
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
      bad_argument("--perplexity-seq-len", std::to_string(p.perplexity_seq_len),
                   "windows of at most the model's max_seq = " + std::to_string(max_seq) + " tokens");
  }
  return p;
}

// ---------------------------------------------------------------------------------------------
// Results

struct cell_result {
  meap::eval::task_kind kind = meap::eval::task_kind::needle;
  meap::index_t length = 0;
  std::optional<double> depth_percent;  // none for MQAR
  meap::index_t rows = 0;
  meap::index_t correct = 0;
  double mean_answer_log_likelihood = std::numeric_limits<double>::quiet_NaN();  // log_likelihood scoring only

  double accuracy() const { return rows > 0 ? static_cast<double>(correct) / static_cast<double>(rows) : 0.0; }
};

// The mean accuracy of a task at a length over its depths.
inline double mean_accuracy(const std::vector<cell_result>& cells, meap::eval::task_kind kind, meap::index_t length) {
  double sum = 0;
  int count = 0;
  for (const auto& cell : cells)
    if (cell.kind == kind && cell.length == length) {
      sum += cell.accuracy();
      ++count;
    }
  return count > 0 ? sum / count : std::numeric_limits<double>::quiet_NaN();
}

struct perplexity_summary {
  meap::index_t seq_len = 0;
  meap::eval::perplexity_result result;
};

inline void write_text(const std::filesystem::path& path, const std::string& text) {
  meap::write_file_atomically(path, std::span<const std::byte>(reinterpret_cast<const std::byte*>(text.data()), text.size()));
}

inline void write_retrieval_csv(const std::filesystem::path& path, const std::vector<cell_result>& cells) {
  std::ostringstream csv;
  csv << "task,length,depth_percent,rows,correct,accuracy,mean_answer_log_likelihood\n";
  for (const auto& c : cells)
    csv << meap::eval::to_string(c.kind) << ',' << c.length << ',' << (c.depth_percent ? format_number(*c.depth_percent) : "")
        << ',' << c.rows << ',' << c.correct << ',' << format_number(c.accuracy()) << ','
        << (std::isnan(c.mean_answer_log_likelihood) ? "" : format_number(c.mean_answer_log_likelihood)) << '\n';
  write_text(path, csv.str());
}

inline void write_attention_csv(const std::filesystem::path& path, const meap::eval::attention_report& report) {
  std::ostringstream csv;
  csv << "layer,head,masked_mass_clean,masked_mass_masked,decay,pooled_decay,variance_clean,variance_masked,"
         "variance_change,answer_share_clean,answer_share_masked\n";
  // One head's pooled decay is its decay: the pool holds that head alone.
  for (const auto& h : report.heads)
    csv << h.layer << ',' << h.head << ',' << format_number(h.masked_mass_clean) << ',' << format_number(h.masked_mass_masked)
        << ',' << format_number(h.decay) << ',' << format_number(h.decay) << ',' << format_number(h.variance_clean) << ','
        << format_number(h.variance_masked) << ',' << format_number(h.variance_change) << ','
        << format_number(h.answer_share_clean) << ',' << format_number(h.answer_share_masked) << '\n';
  const auto averages = [&](const std::string& layer, const meap::eval::attention_averages& x) {
    csv << layer << ",all," << format_number(x.masked_mass_clean) << ',' << format_number(x.masked_mass_masked) << ','
        << format_number(x.decay) << ',' << format_number(x.pooled_decay) << ',' << format_number(x.variance_clean) << ','
        << format_number(x.variance_masked) << ',' << format_number(x.variance_change) << ','
        << format_number(x.answer_share_clean) << ',' << format_number(x.answer_share_masked) << '\n';
  };
  for (std::size_t l = 0; l < report.layers.size(); ++l) averages(std::to_string(l), report.layers[l]);
  averages("all", report.overall);
  write_text(path, csv.str());
}

inline void write_perplexity_csv(const std::filesystem::path& path, const std::string& data, const perplexity_summary& p) {
  std::ostringstream csv;
  csv << "data,seq_len,windows,tokens,mean_nll,perplexity\n";
  std::string quoted = data;  // a CSV field: quoted, inner quotes doubled
  for (std::size_t at = quoted.find('"'); at != std::string::npos; at = quoted.find('"', at + 2)) quoted.insert(at, "\"");
  csv << '"' << quoted << "\"," << p.seq_len << ',' << p.result.windows << ',' << p.result.tokens << ','
      << format_number(p.result.mean_nll) << ',' << format_number(p.result.perplexity) << '\n';
  write_text(path, csv.str());
}

// ---------------------------------------------------------------------------------------------
// Plots: one gnuplot script from inline data; each PNG is written to a temporary and renamed, so
// a PNG's name only ever holds a complete plot.

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

inline void write_plots(const std::filesystem::path& out, const plan& p, const arguments& a,
                        const std::vector<cell_result>& cells, const std::optional<meap::eval::attention_report>& attention,
                        std::vector<std::string>& written) {
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
  const std::string rows_note = std::string(meap::eval::to_string(p.method)) + ", " + std::to_string(a.rows) +
                                (a.rows == 1 ? " row" : " rows") + " per cell";
  std::string length_tics;
  for (std::size_t i = 0; i < p.lengths.size(); ++i)
    length_tics += (i ? ", '" : "'") + std::to_string(p.lengths[i]) + "' " + std::to_string(i);

  for (const auto& task : p.tasks) {
    if (!task.has_depth()) continue;
    const std::string name(meap::eval::to_string(task.kind));
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
      depth_tics += (i ? ", '" : "'") + format_number(p.depths[i]) + "' " + std::to_string(i);
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
         << gnuplot_quoted(std::string(meap::eval::to_string(p.tasks[t].kind)));
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
      gp << l << ' ' << format_number(100.0 * attention->layers[l].decay) << ' '
         << format_number(100.0 * attention->layers[l].variance_change) << '\n';
    gp << "EOD\n";
    begin_plot("attention.png", "900,500");
    gp << "set title " << gnuplot_quoted("MEAP-masked (ratio " + format_number(a.mask_ratio) +
                                             ") vs clean input, mean over each layer's heads; pooled decay " +
                                             format_percent(attention->overall.pooled_decay) + "%") << "\n"
       << "set xlabel 'layer'\nset ylabel 'change (%)'\nset grid ytics\nset key outside top center horizontal\n"
       << "set style data histograms\nset style histogram clustered gap 1\nset style fill solid 0.8 border -1\n"
       << "set xzeroaxis\n"
       << "plot $layers using 2:xtic(1) title 'attention decay on masked positions', "
       << "'' using 3 title 'variance change over unmasked keys'\n";
  }
  if (pngs.empty()) return;
  gp << "unset output\n";

  const auto script = out / "plots.gp";
  write_text(script, gp.str());
  const std::string command = "gnuplot " + shell_quoted(script.string());
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
class progress {
 public:
  explicit progress(double total_work) : total_(total_work), start_(std::chrono::steady_clock::now()) {}

  void finished(double work, const std::string& what) {
    done_ += work;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double eta = done_ > 0 ? elapsed / done_ * std::max(0.0, total_ - done_) : 0.0;
    std::fprintf(stderr, "%s  elapsed %s  ETA %s\n", what.c_str(), format_duration(elapsed).c_str(),
                 format_duration(eta).c_str());
  }
  double elapsed() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }

 private:
  double total_ = 0, done_ = 0;
  std::chrono::steady_clock::time_point start_;
};

template <class P, class Device>
int run(const arguments& a, const Device& device) {
  // Everything that can be refused is refused here, before the model is loaded: the config, the
  // plan, the output directory, the token file.
  const std::filesystem::path model_directory(a.model);
  if (!std::filesystem::is_directory(model_directory))
    bad_argument("--model", a.model, "a checkpoint directory (config.json and model.safetensors)");
  const auto config = meap::train::read_hugging_face_config(model_directory / "config.json");
  const plan p = make_plan(a, config);

  const std::filesystem::path out(a.out);
  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (ec || !std::filesystem::is_directory(out))
    bad_argument("--out", a.out, "a directory that exists or can be created" + (ec ? " (" + ec.message() + ")" : std::string()));
  write_text(out / ".meap_eval.write_test", "probe\n");  // writable: found now, not after the evaluation
  std::filesystem::remove(out / ".meap_eval.write_test", ec);

  std::optional<meap::token_dataset> dataset;
  if (p.perplexity) {
    meap::token_dataset_options options;
    options.seq_len = p.perplexity_seq_len;
    options.vocab_size = config.vocab;
    dataset.emplace(a.data, options);
  }
  const auto model = meap::train::load_pretrained<P>(model_directory, device);

  std::fprintf(stderr, "model: %s, %lld parameters (vocab %lld, d %lld, %lld layers x %lld heads, max_seq %lld); %s on %s\n",
               a.model.c_str(), static_cast<long long>(config.parameter_count()), static_cast<long long>(config.vocab),
               static_cast<long long>(config.d_model), static_cast<long long>(config.layers),
               static_cast<long long>(config.heads), static_cast<long long>(config.max_seq),
               std::string(meap::precision_name<P>()).c_str(), a.device.c_str());

  // The work of each part in examples x positions, for the ETA.
  const auto depth_count = [&](const task_shape& task) { return task.has_depth() ? p.depths.size() : std::size_t{1}; };
  std::size_t total_cells = 0;
  double total_work = 0;
  for (const auto& task : p.tasks)
    for (const auto length : p.lengths) {
      total_cells += depth_count(task);
      total_work += static_cast<double>(depth_count(task) * static_cast<std::size_t>(a.rows) * static_cast<std::size_t>(length));
    }
  const double attention_work = p.attention ? 2.0 * static_cast<double>(p.attention_rows * p.lengths.back()) : 0.0;
  meap::index_t perplexity_windows = 0;
  if (dataset)
    perplexity_windows = a.perplexity_windows > 0 ? std::min<meap::index_t>(a.perplexity_windows, dataset->windows())
                                                  : dataset->windows();
  const double perplexity_work = static_cast<double>(perplexity_windows * p.perplexity_seq_len);
  progress tracker(total_work + attention_work + perplexity_work);

  // Retrieval: every depth of a (task, length) in one list, so the batches stay full.
  std::vector<cell_result> cells;
  std::size_t cells_done = 0;
  for (const auto& task : p.tasks) {
    const std::string name(meap::eval::to_string(task.kind));
    for (const auto length : p.lengths) {
      std::vector<meap::eval::task_example> examples;
      std::vector<std::optional<double>> depths;
      if (task.has_depth()) depths.assign(p.depths.begin(), p.depths.end());
      else depths.push_back(std::nullopt);
      for (const auto& depth : depths)
        for (std::int64_t row = 0; row < a.rows; ++row)
          examples.push_back(meap::eval::make_example(
              make_request(task.kind, task.prompt_length(length), depth.value_or(50.0) / 100.0, a.seed,
                           static_cast<std::uint64_t>(row)),
              p.vocabulary));
      const auto scores = meap::eval::score_examples(device, model, examples, p.method, a.batch);
      for (std::size_t d = 0; d < depths.size(); ++d) {
        cell_result cell;
        cell.kind = task.kind;
        cell.length = length;
        cell.depth_percent = depths[d];
        cell.rows = a.rows;
        double log_likelihood = 0;
        for (std::int64_t row = 0; row < a.rows; ++row) {
          const auto& score = scores[d * static_cast<std::size_t>(a.rows) + static_cast<std::size_t>(row)];
          cell.correct += score.correct ? 1 : 0;
          log_likelihood += score.answer_log_likelihood;
        }
        if (p.method == meap::eval::scoring::log_likelihood)
          cell.mean_answer_log_likelihood = log_likelihood / static_cast<double>(a.rows);
        cells.push_back(cell);
      }
      cells_done += depths.size();
      char what[160];
      std::snprintf(what, sizeof what, "%-17s length %6lld: accuracy %5.1f%%  cells %zu/%zu", name.c_str(),
                    static_cast<long long>(length), 100.0 * mean_accuracy(cells, task.kind, length), cells_done, total_cells);
      tracker.finished(static_cast<double>(depths.size() * static_cast<std::size_t>(a.rows) * static_cast<std::size_t>(length)),
                       what);
    }
  }

  // Attention: needle prompts at the largest length, clean against MEAP-masked.
  std::optional<meap::eval::attention_report> attention;
  meap::index_t attention_length = 0;
  if (p.attention) {
    const meap::index_t B = p.attention_rows, T = p.lengths.back();
    attention_length = T;
    auto clean = meap::zeros<std::int32_t>(meap::cpu{}, meap::dims{B, T});
    // apply() reads T + 1 tokens per row (inputs and their next tokens); the next token after the
    // prompt is the answer's first. Its default keeps position T - 1, the question's end, unmasked.
    auto tokens = meap::zeros<std::int32_t>(meap::cpu{}, meap::dims{B, T + 1});
    meap::eval::attention_analysis_options options;
    options.mask_id = p.mask_id;
    for (meap::index_t b = 0; b < B; ++b) {
      const auto example = meap::eval::make_example(
          make_request(meap::eval::task_kind::needle, T, 0.5, a.seed, static_cast<std::uint64_t>(b)), p.vocabulary);
      for (meap::index_t t = 0; t < T; ++t) {
        clean.data()[b * T + t] = example.prompt[static_cast<std::size_t>(t)];
        tokens.data()[b * (T + 1) + t] = example.prompt[static_cast<std::size_t>(t)];
      }
      tokens.data()[b * (T + 1) + T] = example.answer[0];
      options.answer_spans.push_back(example.evidence[0]);
      options.query_rows.push_back({T - 1});
    }
    meap::masking::pretraining_options masking;
    masking.seed = a.seed;
    masking.mask_id = p.mask_id;
    masking.special_ids = {p.vocabulary.query, p.vocabulary.separator};
    if (p.vocabulary.bos >= 0) masking.special_ids.push_back(p.vocabulary.bos);
    const auto masked = meap::masking::apply(meap::cpu{}, meap::masking::fixed_ratio{.ratio = a.mask_ratio},
                                             tokens.view().as_const(), masking);
    attention = meap::eval::analyze_attention(device, model, clean.view().as_const(), masked.input_ids.view().as_const(),
                                              options);
    char what[160];
    std::snprintf(what, sizeof what, "attention         length %6lld: %lld rows, %lld masked positions, pooled decay %s%%",
                  static_cast<long long>(T), static_cast<long long>(B), static_cast<long long>(attention->masked_positions),
                  format_percent(attention->overall.pooled_decay).c_str());
    tracker.finished(attention_work, what);
  }

  std::optional<perplexity_summary> perplexity;
  if (dataset) {
    meap::eval::perplexity_options options;
    options.batch_rows = a.batch;
    options.max_windows = perplexity_windows;
    perplexity = perplexity_summary{p.perplexity_seq_len, meap::eval::perplexity(device, model, *dataset, options)};
    char what[160];
    std::snprintf(what, sizeof what, "perplexity        length %6lld: %lld windows, perplexity %.4g",
                  static_cast<long long>(p.perplexity_seq_len), static_cast<long long>(perplexity->result.windows),
                  perplexity->result.perplexity);
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
  if (perplexity) {
    write_perplexity_csv(out / "perplexity.csv", a.data, *perplexity);
    written.push_back("perplexity.csv");
  }

  // The table on stdout.
  std::printf("meap_eval: %s (%lld parameters, vocab %lld, max_seq %lld), %s on %s, seed %llu\n", a.model.c_str(),
              static_cast<long long>(config.parameter_count()), static_cast<long long>(config.vocab),
              static_cast<long long>(config.max_seq), std::string(meap::precision_name<P>()).c_str(), a.device.c_str(),
              static_cast<unsigned long long>(a.seed));
  if (!p.tasks.empty()) {
    std::string depths;
    for (const double d : p.depths) depths += (depths.empty() ? "" : ",") + format_number(d);
    std::printf("\nretrieval accuracy (%%), %s, %lld row%s per cell, mean over depths %s (mqar: no depth)\n",
                std::string(meap::eval::to_string(p.method)).c_str(), static_cast<long long>(a.rows), a.rows == 1 ? "" : "s",
                depths.c_str());
    std::printf("%-18s", "task \\ length");
    for (const auto length : p.lengths) std::printf("%8lld", static_cast<long long>(length));
    std::printf("\n");
    for (const auto& task : p.tasks) {
      std::printf("%-18s", std::string(meap::eval::to_string(task.kind)).c_str());
      for (const auto length : p.lengths) std::printf("%8.1f", 100.0 * mean_accuracy(cells, task.kind, length));
      std::printf("\n");
    }
  }
  if (attention) {
    std::printf("\nattention: %lld needle prompt%s of %lld tokens, MEAP mask ratio %s (%lld masked positions), "
                "query = the last prompt position\n",
                static_cast<long long>(p.attention_rows), p.attention_rows == 1 ? "" : "s",
                static_cast<long long>(attention_length),
                format_number(a.mask_ratio).c_str(), static_cast<long long>(attention->masked_positions));
    std::printf("%-7s %9s %9s %12s %14s %14s\n", "layer", "decay%", "pooled%", "var.change%", "share.clean%",
                "share.masked%");
    const auto line = [](const std::string& layer, const meap::eval::attention_averages& x) {
      std::printf("%-7s %9s %9s %12s %14s %14s\n", layer.c_str(), format_percent(x.decay).c_str(),
                  format_percent(x.pooled_decay).c_str(), format_percent(x.variance_change).c_str(),
                  format_percent(x.answer_share_clean).c_str(), format_percent(x.answer_share_masked).c_str());
    };
    for (std::size_t l = 0; l < attention->layers.size(); ++l) line(std::to_string(l), attention->layers[l]);
    line("all", attention->overall);
  }
  if (perplexity)
    std::printf("\nperplexity: %.4f (mean NLL %.4f nats over %lld tokens, %lld windows of %lld)\n",
                perplexity->result.perplexity, perplexity->result.mean_nll, static_cast<long long>(perplexity->result.tokens),
                static_cast<long long>(perplexity->result.windows), static_cast<long long>(perplexity->seq_len));
  std::printf("\n");
  write_plots(out, p, a, cells, attention, written);
  std::string files;
  for (const auto& name : written) files += (files.empty() ? "" : ", ") + name;
  std::printf("wrote into %s: %s (%s)\n", a.out.c_str(), files.c_str(), format_duration(tracker.elapsed()).c_str());
  return 0;
}

// Defined in meap_eval_cuda.cu when meap is built with CUDA.
int run_cuda(const arguments& a);

}  // namespace meap_eval
