// meap_eval: evaluates a checkpoint on long-context retrieval, the MEAP attention analysis and
// perplexity, on the CPU or a CUDA GPU, and writes CSV files and PNG plots.
//
//   meap_eval --model run/checkpoints/step-00001000 --out eval/
//   meap_eval --model DIR --suite retrieval,attention --lengths 1024,2048,4096 --rows 50 --out eval/
//   meap_eval --model DIR --suite all --data valid.u16 --device cuda --dtype bf16 --out eval/
//
// --model is any Hugging Face-layout LLaMA directory (config.json + model.safetensors), as
// meap_pretrain writes into <out>/checkpoints/step-N/. Suites: the retrieval tasks of
// meap/eval/tasks.hpp (needle, multikey_needle, multivalue_needle, passkey, mqar, multidoc_qa;
// `retrieval` is all six) over a length x depth grid, `attention` (meap/eval/attention_analysis.hpp
// on needle prompts, clean vs MEAP-masked), `perplexity` on a token file (--data), `all`. Writes
// retrieval.csv, attention.csv, perplexity.csv and, with gnuplot, <task>_heatmap.png,
// accuracy_by_length.png and attention.png into --out, a table on stdout and progress with an ETA
// on stderr. Every argument is checked before the model is loaded; any error ends the program
// with one line on stderr and a non-zero exit. See docs/eval.md, "meap_eval".
//
// This file is the command line only: CLI11 into meap::eval::suite_options, then one call of
// meap::eval::run_suite (meap/eval/suite.hpp), compiled once per device and precision in
// apps/instances/ (apps/runs.hpp).
#include "cli_options.hpp"
#include "runs.hpp"

#include <meap/eval/suite.hpp>
#include <meap/run/program.hpp>

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>

namespace {

constexpr std::int64_t largest_id = (std::int64_t{1} << 31) - 1;
using meap_apps::huge_count;
using meap_apps::unsigned_64;

// The suite's options plus what only the command line decides: the device and the precision.
struct arguments {
  meap::eval::suite_options suite;
  std::string device = "cpu";  // cpu, cuda or cuda:N
  std::string dtype;           // fp32 (CPU default) or bf16 (CUDA default)
  int cuda_ordinal = -1;       // parsed from device
};

[[noreturn]] void bad_argument(const std::string& name, const std::string& value, const std::string& expected) {
  meap::throw_argument_error("meap_eval", name, value, expected);
}

arguments parse(int argc, char** argv, int& exit_code) {
  arguments a;
  auto& o = a.suite;
  // Enumerations as their names on the command line; the library's parsers read them back.
  std::string scoring(meap::eval::to_string(o.method));
  std::string attention_rows(meap::eval::to_string(o.attention_rows));
  CLI::App app{"meap_eval: retrieval, attention and perplexity evaluation of a meap / Hugging Face LLaMA checkpoint"};
  app.add_option("--model", o.model, "checkpoint directory (config.json + model.safetensors)")->required();
  app.add_option("--out", o.out, "output directory for the CSV files and plots")->required();
  app.add_option("--suite", o.suites,
                 "comma-separated: needle, multikey_needle, multivalue_needle, passkey, mqar, multidoc_qa, retrieval "
                 "(all six), attention, perplexity (needs --data), all")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--lengths", o.lengths,
                 "comma-separated context lengths in positions (prompt + answer - 1), each <= max_seq; default: those "
                 "of max_seq/4, max_seq/2, max_seq that every chosen task accepts")
      ->delimiter(',')
      ->check(CLI::Range(std::int64_t{1}, huge_count));
  app.add_option("--depths", o.depths, "comma-separated answer depths in percent of the haystack")
      ->delimiter(',')
      ->check(CLI::Range(0.0, 100.0))
      ->capture_default_str();
  app.add_option("--rows", o.rows, "examples per (task, length, depth) cell; the attention suite takes at most 16")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 20))
      ->capture_default_str();
  app.add_option("--seed", o.seed, "task and mask seed (0 to 2^64 - 1)")->check(unsigned_64)->capture_default_str();
  app.add_option("--scoring", scoring, "exact_match (greedy generation) or log_likelihood (teacher-forced, top-1)")
      ->check(CLI::IsMember({"exact_match", "log_likelihood"}))
      ->capture_default_str();
  app.add_option("--batch", o.batch, "rows per forward pass")->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 20))
      ->capture_default_str();
  app.add_option("--reserved", o.reserved, "ids [0, N) the task vocabulary leaves alone (BOS, EOS, ...)")
      ->check(CLI::Range(std::int64_t{0}, largest_id))
      ->capture_default_str();
  app.add_option("--mask-id", o.mask_id, "the [MASK] id (default: vocab - 1, as meap_pretrain trains); task ids lie below it")
      ->check(CLI::Range(std::int64_t{0}, largest_id));
  app.add_option("--bos", o.bos, "BOS id starting every prompt (-1: none)")->check(CLI::Range(std::int64_t{-1}, largest_id))
      ->capture_default_str();
  app.add_option("--mask-ratio", o.mask_ratio, "the attention suite's MEAP mask ratio, in (0, 1)")->capture_default_str();
  app.add_option("--attention-rows", attention_rows,
                 "the attention suite's query rows for the variance and answer share: all (every prompt position, as "
                 "the MEAP paper measures) or last (the question's end only)")
      ->check(CLI::IsMember({"all", "last"}))
      ->capture_default_str();
  app.add_option("--data", o.data, "token file (.u16 / .u32) for the perplexity suite");
  app.add_option("--perplexity-seq-len", o.perplexity_seq_len, "perplexity window length (default: the model's max_seq)")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 30));
  app.add_option("--perplexity-windows", o.perplexity_windows, "at most this many windows (0: every window of the file)")
      ->check(CLI::Range(std::int64_t{0}, huge_count))
      ->capture_default_str();
  app.add_option("--device", a.device, "cpu, cuda or cuda:N")->capture_default_str();
  app.add_option("--dtype", a.dtype, "fp32 (CPU default) or bf16 (CUDA only, its default)")
      ->check(CLI::IsMember({"fp32", "bf16"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    exit_code = app.exit(e);  // --help: the usage and 0; an error: one line and non-zero
    return a;
  }
  o.method = meap::eval::parse_scoring(scoring);
  o.attention_rows = meap::eval::parse_attention_query_rows(attention_rows);
  a.cuda_ordinal = meap::run::parse_device("meap_eval", a.device);
  o.device_name = a.device;
  if (a.cuda_ordinal >= 0) {
    if (a.dtype.empty()) a.dtype = "bf16";
  } else {
    if (a.dtype.empty()) a.dtype = "fp32";
    if (a.dtype != "fp32") bad_argument("--dtype", a.dtype, "fp32 on the CPU (bf16 needs --device cuda)");
  }
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  return meap::run::guarded_main("meap_eval", "try a smaller --batch or --lengths", [&] {
    int exit_code = -1;
    const auto a = parse(argc, argv, exit_code);
    if (exit_code >= 0) return exit_code;
    // Without CUDA (MEAP_APPS_WITH_CUDA undefined), evaluate_on_cuda refuses --device cuda.
    if (a.cuda_ordinal >= 0) return meap_apps::evaluate_on_cuda(a.suite, a.dtype, a.device, a.cuda_ordinal);
    return meap::eval::run_suite<meap::fp32>(a.suite, meap::cpu{});
  });
}
