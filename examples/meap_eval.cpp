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
#include "cli_options.hpp"
#include "eval_run.hpp"
#include "program_main.hpp"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <new>
#include <string>

namespace {

constexpr std::int64_t huge = meap_examples::huge_count;
constexpr std::int64_t largest_id = (std::int64_t{1} << 31) - 1;
using meap_examples::unsigned_64;

meap_eval::arguments parse(int argc, char** argv, int& exit_code) {
  meap_eval::arguments a;
  CLI::App app{"meap_eval: retrieval, attention and perplexity evaluation of a meap / Hugging Face LLaMA checkpoint"};
  app.add_option("--model", a.model, "checkpoint directory (config.json + model.safetensors)")->required();
  app.add_option("--out", a.out, "output directory for the CSV files and plots")->required();
  app.add_option("--suite", a.suite,
                 "comma-separated: needle, multikey_needle, multivalue_needle, passkey, mqar, multidoc_qa, retrieval "
                 "(all six), attention, perplexity (needs --data), all")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--lengths", a.lengths,
                 "comma-separated context lengths in positions (prompt + answer - 1), each <= max_seq; default: those "
                 "of max_seq/4, max_seq/2, max_seq that every chosen task accepts")
      ->delimiter(',')
      ->check(CLI::Range(std::int64_t{1}, huge));
  app.add_option("--depths", a.depths, "comma-separated answer depths in percent of the haystack")
      ->delimiter(',')
      ->check(CLI::Range(0.0, 100.0))
      ->capture_default_str();
  app.add_option("--rows", a.rows, "examples per (task, length, depth) cell; the attention suite takes at most 16")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 20))
      ->capture_default_str();
  app.add_option("--seed", a.seed, "task and mask seed (0 to 2^64 - 1)")->check(unsigned_64)->capture_default_str();
  app.add_option("--scoring", a.scoring, "exact_match (greedy generation) or log_likelihood (teacher-forced, top-1)")
      ->check(CLI::IsMember({"exact_match", "log_likelihood"}))
      ->capture_default_str();
  app.add_option("--batch", a.batch, "rows per forward pass")->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 20))
      ->capture_default_str();
  app.add_option("--reserved", a.reserved, "ids [0, N) the task vocabulary leaves alone (BOS, EOS, ...)")
      ->check(CLI::Range(std::int64_t{0}, largest_id))
      ->capture_default_str();
  app.add_option("--mask-id", a.mask_id, "the [MASK] id (default: vocab - 1, as meap_pretrain trains); task ids lie below it")
      ->check(CLI::Range(std::int64_t{0}, largest_id));
  app.add_option("--bos", a.bos, "BOS id starting every prompt (-1: none)")->check(CLI::Range(std::int64_t{-1}, largest_id))
      ->capture_default_str();
  app.add_option("--mask-ratio", a.mask_ratio, "the attention suite's MEAP mask ratio, in (0, 1)")->capture_default_str();
  app.add_option("--data", a.data, "token file (.u16 / .u32) for the perplexity suite");
  app.add_option("--perplexity-seq-len", a.perplexity_seq_len, "perplexity window length (default: the model's max_seq)")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 30));
  app.add_option("--perplexity-windows", a.perplexity_windows, "at most this many windows (0: every window of the file)")
      ->check(CLI::Range(std::int64_t{0}, huge))
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
  a.cuda_ordinal = meap_examples::cuda_ordinal_of("meap_eval", a.device);
  if (a.cuda_ordinal >= 0) {
    if (a.dtype.empty()) a.dtype = "bf16";
  } else {
    if (a.dtype.empty()) a.dtype = "fp32";
    if (a.dtype != "fp32") meap_eval::bad_argument("--dtype", a.dtype, "fp32 on the CPU (bf16 needs --device cuda)");
  }
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  return meap_examples::guarded_main("meap_eval", "try a smaller --batch or --lengths", [&] {
    int exit_code = -1;
    const auto a = parse(argc, argv, exit_code);
    if (exit_code >= 0) return exit_code;
    if (a.cuda_ordinal >= 0) return meap_eval::run_cuda(a);
    return meap_eval::run<meap::fp32>(a, meap::cpu{});
  });
}

#if !defined(MEAP_EVAL_WITH_CUDA)
// This build has no CUDA translation unit (MEAP_ENABLE_CUDA=OFF, or no CUDA toolkit found).
int meap_eval::run_cuda(const arguments& a) {
  bad_argument("--device", a.device, "cpu: this meap_eval was built without CUDA (configure meap with a CUDA "
                                     "toolkit and MEAP_ENABLE_CUDA=ON)");
}
#endif
