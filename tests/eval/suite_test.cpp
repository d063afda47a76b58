// meap::eval::run_suite and its plan (meap/eval/suite.hpp) on the CPU: every refusal of the
// options with meap_eval's message, a whole sweep over a small random model saved with save_model
// (the CSV files, their headers and row counts, nothing written when the options are refused),
// the attention suite's query-row choice against analyze_attention run by hand, and the attention
// mask's salted seed (its stream is no longer the one that draws the question key).
#include <meap/eval/suite.hpp>
#include <meap/nn/nn.hpp>
#include <meap/train/checkpoint.hpp>

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "io/support.hpp"
#include "support/errors.hpp"
#include "support/tiny_model.hpp"

namespace suite_test {

namespace me = meap::eval;
using meap::index_t;
using meap_test::error_says;

const meap::cpu cpu_device;

// The smallest model the tasks' ids fit: default_id_vocabulary needs reserved (1) + 62 ids below
// the mask id (vocab - 1).
meap::nn::llama_config suite_config() { return meap_test::tiny_llama(72, 64, 16, 24); }

me::suite_options options_for(std::vector<std::string> suites) {
  me::suite_options o;
  o.suites = std::move(suites);
  o.rows = 2;
  return o;
}

me::suite_plan plan_of(const me::suite_options& o) { return me::plan_suite(o, suite_config()); }

// The lines of a text file.
std::vector<std::string> lines_of(const std::filesystem::path& path) {
  std::ifstream in(path);
  BOOST_REQUIRE_MESSAGE(in, "no " << path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::vector<std::string> fields_of(const std::string& line) {
  std::vector<std::string> fields;
  std::stringstream in(line);
  for (std::string field; std::getline(in, field, ',');) fields.push_back(field);
  if (!line.empty() && line.back() == ',') fields.emplace_back();
  return fields;
}

// Pearson's correlation of two samples.
double correlation(const std::vector<double>& x, const std::vector<double>& y) {
  const auto n = static_cast<double>(x.size());
  double mx = 0, my = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    mx += x[i] / n;
    my += y[i] / n;
  }
  double sxy = 0, sxx = 0, syy = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  return sxy / std::sqrt(sxx * syy);
}

// A saved random model and a token file, shared by the runs below.
struct saved_model {
  io_test::scratch_directory dir;
  std::filesystem::path model, tokens;

  saved_model() : model(dir / "model"), tokens(dir / "tokens.u16") {
    meap::nn::llama_model<meap::fp32> m(suite_config());
    m.initialize(7);
    meap::train::save_model(model, m);
    io_test::bytes bytes;
    for (int i = 0; i < 300; ++i) {  // ids cycling over 1 .. 60, little-endian uint16
      bytes.push_back(static_cast<std::byte>(1 + i % 60));
      bytes.push_back(std::byte{0});
    }
    io_test::write_bytes(tokens, bytes);
  }
};

BOOST_AUTO_TEST_SUITE(suite)

BOOST_AUTO_TEST_CASE(plan_resolves_the_defaults) {
  auto o = options_for({"needle", "attention"});
  o.rows = 40;
  o.depths = {75, 0, 75, 25};
  const auto p = plan_of(o);
  BOOST_TEST(p.tasks.size() == 1u);
  BOOST_TEST(p.attention);
  BOOST_TEST(!p.perplexity);
  BOOST_TEST(p.attention_prompts == 16);  // min(rows, 16)
  BOOST_TEST(p.lengths == (std::vector<index_t>{16, 32, 64}));  // max_seq / 4, / 2, / 1
  BOOST_TEST(p.depths == (std::vector<double>{0, 25, 75}));     // sorted, once each
  BOOST_TEST(p.mask_id == 71);                                  // vocab - 1
  // `all` takes every task, the attention suite, and perplexity when a token file is given.
  auto all = options_for({"all"});
  all.data = "tokens.u16";
  all.lengths = {64};
  const auto q = plan_of(all);
  BOOST_TEST(q.tasks.size() == me::all_tasks().size());
  BOOST_TEST(q.attention);
  BOOST_TEST(q.perplexity);
  BOOST_TEST(q.perplexity_seq_len == 64);
}

BOOST_AUTO_TEST_CASE(plan_refuses_bad_options_with_meap_evals_messages) {
  const auto refused = [](const me::suite_options& o, const std::string& option, std::vector<std::string> fragments) {
    BOOST_CHECK_EXCEPTION(plan_of(o), meap::error, error_says("meap_eval", option, std::move(fragments)));
  };
  refused(options_for({"needle", "bogus"}), "--suite",
          {"argument '--suite' = bogus: expected a comma-separated list of needle, ",
           "mqar, multidoc_qa, retrieval, attention, perplexity, all"});
  refused(options_for({}), "--suite", {"(empty)", "at least one of"});
  refused(options_for({"perplexity"}), "--suite", {"argument '--suite' = perplexity: expected --data"});
  auto data_unread = options_for({"needle"});
  data_unread.data = "tokens.u16";
  refused(data_unread, "--data", {"a suite that reads it"});

  auto too_long = options_for({"needle"});
  too_long.lengths = {32, 65};
  refused(too_long, "--lengths", {"argument '--lengths' = 65: expected lengths of at most the model's max_seq = 64"});
  auto too_short = options_for({"multidoc_qa"});
  too_short.lengths = {20};
  refused(too_short, "--lengths", {"argument '--lengths' = 20: expected lengths of at least ", "positions for multidoc_qa"});

  auto mask = options_for({"needle"});
  mask.mask_id = 72;
  refused(mask, "--mask-id", {"an id in [0, vocab = 72)"});
  auto bos_on_mask = options_for({"needle"});
  bos_on_mask.bos = 71;
  refused(bos_on_mask, "--bos", {"other than the mask id 71"});
  auto bos_in_tasks = options_for({"needle"});
  bos_in_tasks.bos = 40;  // inside [reserved, mask id): a task id
  refused(bos_in_tasks, "--bos", {"an id outside the task vocabulary"});
  auto crowded = options_for({"needle"});
  crowded.reserved = 20;  // 71 - 20 ids: fewer than the 62 the tasks take
  refused(crowded, "--model", {"expected a vocabulary the tasks' ids fit in: meap::eval::default_id_vocabulary"});
  auto ratio = options_for({"attention"});
  ratio.mask_ratio = 1.0;
  refused(ratio, "--mask-ratio", {"a ratio in the open interval (0, 1)"});
  auto windows = options_for({"perplexity"});
  windows.data = "tokens.u16";
  windows.perplexity_seq_len = 65;
  refused(windows, "--perplexity-seq-len", {"windows of at most the model's max_seq = 64 tokens"});

  // Another front end's name, same options.
  auto renamed = too_long;
  renamed.program = "my_eval";
  BOOST_CHECK_EXCEPTION(plan_of(renamed), meap::error, error_says("my_eval", "--lengths", {"my_eval: argument '--lengths'"}));
}

BOOST_AUTO_TEST_CASE(the_attention_mask_stream_is_not_the_question_keys) {
  auto o = options_for({"attention"});
  o.lengths = {64};
  const auto p = plan_of(o);
  const auto batch = me::make_attention_batch(p, o);
  BOOST_TEST(batch.clean.size(0) == 2);
  BOOST_TEST(batch.clean.size(1) == 64);

  // The batch's mask is apply()'s with the salted seed, and another than the unsalted seed gives.
  auto tokens = meap::zeros<std::int32_t>(cpu_device, meap::dims{2, 65});
  for (index_t b = 0; b < 2; ++b) {
    for (index_t t = 0; t < 64; ++t) tokens.data()[b * 65 + t] = batch.clean.data()[b * 64 + t];
    tokens.data()[b * 65 + 64] = me::make_example(me::detail::suite_request(me::task_kind::needle, 64, 0.5, o.seed,
                                                                            static_cast<std::uint64_t>(b)),
                                                  p.vocabulary)
                                     .answer[0];
  }
  meap::masking::pretraining_options masking;
  masking.mask_id = p.mask_id;
  masking.special_ids = {p.vocabulary.query, p.vocabulary.separator};
  const auto masked_with = [&](std::uint64_t seed) {
    masking.seed = seed;
    const auto m = meap::masking::apply(cpu_device, meap::masking::fixed_ratio{.ratio = o.mask_ratio},
                                        tokens.view().as_const(), masking);
    return std::vector<std::int32_t>(m.input_ids.data(), m.input_ids.data() + m.input_ids.numel());
  };
  const std::vector<std::int32_t> masked(batch.masked.data(), batch.masked.data() + batch.masked.numel());
  BOOST_TEST((masked == masked_with(me::attention_mask_seed(o.seed))));
  BOOST_TEST((masked != masked_with(o.seed)));

  // Over many seeds: prompt 0's question key against the first draw of prompt 0's mask stream
  // (apply() draws row b from philox_stream(seed, step 0, b)). Unsalted, the two came from one
  // stream and correlate almost perfectly; salted, they are independent (|r| ~ 1 / sqrt(n)).
  std::vector<double> keys, salted, unsalted;
  for (std::uint64_t seed = 1; seed < 1500; ++seed) {
    const auto example = me::make_example(me::detail::suite_request(me::task_kind::needle, 64, 0.5, seed, 0), p.vocabulary);
    keys.push_back(example.prompt[example.prompt.size() - 2]);  // QUERY K SEP: the key asked
    salted.push_back(meap::philox_stream(me::attention_mask_seed(seed), 0, 0).next_u32());
    unsalted.push_back(meap::philox_stream(seed, 0, 0).next_u32());
  }
  const double r_unsalted = correlation(keys, unsalted), r_salted = correlation(keys, salted);
  BOOST_TEST_MESSAGE("key vs first mask draw over 1499 seeds: unsalted r = " << r_unsalted << ", salted r = " << r_salted);
  BOOST_TEST(r_unsalted > 0.99);  // the flaw the salt removes, still visible without it
  BOOST_TEST(std::fabs(r_salted) < 0.1);
}

BOOST_AUTO_TEST_CASE(attention_query_rows_choose_the_analysis_rows) {
  auto o = options_for({"attention"});
  o.lengths = {32};
  const auto p = plan_of(o);
  o.attention_rows = me::attention_query_rows::all;
  const auto every = me::make_attention_batch(p, o);
  BOOST_TEST(every.analysis.query_rows.empty());  // analyze_attention: every position
  BOOST_TEST(every.analysis.answer_spans.size() == 2u);
  o.attention_rows = me::attention_query_rows::last;
  const auto last = me::make_attention_batch(p, o);
  BOOST_TEST((last.analysis.query_rows == std::vector<std::vector<index_t>>{{31}, {31}}));
  // Only the rows differ: the same prompts, the same mask.
  BOOST_TEST(std::equal(every.masked.data(), every.masked.data() + every.masked.numel(), last.masked.data()));

  BOOST_TEST((me::parse_attention_query_rows("all") == me::attention_query_rows::all));
  BOOST_TEST((me::parse_attention_query_rows("last") == me::attention_query_rows::last));
  BOOST_CHECK_EXCEPTION(me::parse_attention_query_rows("first"), meap::error, error_says("rows", {"all or last"}));
}

BOOST_AUTO_TEST_CASE(a_sweep_writes_every_file) {
  const saved_model saved;
  const auto out = saved.dir / "eval";
  auto o = options_for({"needle", "mqar", "attention", "perplexity"});
  o.model = saved.model.string();
  o.out = out.string();
  o.data = saved.tokens.string();
  o.lengths = {48, 64};
  o.depths = {0, 50, 100};
  o.batch = 3;
  o.perplexity_seq_len = 32;
  o.perplexity_windows = 3;
  BOOST_TEST(me::run_suite<meap::fp32>(o, cpu_device) == 0);

  // needle: 2 lengths x 3 depths; mqar: one cell per length, without a depth.
  const auto retrieval = lines_of(out / "retrieval.csv");
  BOOST_TEST(retrieval.size() == 1u + 6u + 2u);
  BOOST_TEST(retrieval[0] == me::retrieval_csv_header);
  for (std::size_t i = 1; i < retrieval.size(); ++i) {
    const auto fields = fields_of(retrieval[i]);
    BOOST_TEST_REQUIRE(fields.size() == 7u);
    BOOST_TEST(fields[3] == "2");  // rows
    const bool mqar = fields[0] == "mqar";
    BOOST_TEST(fields[2].empty() == mqar);
    BOOST_TEST(fields[6].empty());  // exact_match: no log-likelihood
  }
  BOOST_TEST(retrieval[7].starts_with("mqar,48,,2,"));
  // 2 layers x 2 heads, one row per layer, one overall.
  const auto attention = lines_of(out / "attention.csv");
  BOOST_TEST(attention.size() == 1u + 4u + 2u + 1u);
  BOOST_TEST(attention[0] == me::attention_csv_header);
  BOOST_TEST(attention.back().starts_with("all,all,"));
  BOOST_TEST(fields_of(attention.back()).size() == 11u);
  // 3 windows of 32 predictions.
  const auto perplexity = lines_of(out / "perplexity.csv");
  BOOST_TEST(perplexity.size() == 2u);
  BOOST_TEST(perplexity[0] == me::perplexity_csv_header);
  BOOST_TEST(perplexity[1].starts_with("\"" + saved.tokens.string() + "\",32,3,96,"));
  BOOST_TEST(!std::filesystem::exists(out / ".meap_eval.write_test"));

  // Refused options write nothing, not even the output directory's files.
  auto bad = o;
  bad.out = (saved.dir / "refused").string();
  bad.lengths = {48, 80};
  BOOST_CHECK_EXCEPTION(me::run_suite<meap::fp32>(bad, cpu_device), meap::error, error_says("meap_eval", "--lengths", {"= 80"}));
  BOOST_TEST(!std::filesystem::exists(saved.dir / "refused"));
  bad = o;
  bad.model = (saved.dir / "nowhere").string();
  BOOST_CHECK_EXCEPTION(me::run_suite<meap::fp32>(bad, cpu_device), meap::error,
                        error_says("meap_eval", "--model", {"expected a checkpoint directory"}));
}

BOOST_AUTO_TEST_CASE(the_attention_csv_is_the_analysis_of_the_chosen_rows) {
  const saved_model saved;
  const auto model = meap::train::load_pretrained<meap::fp32>(saved.model, cpu_device);
  for (const auto rows : {me::attention_query_rows::all, me::attention_query_rows::last}) {
    auto o = options_for({"attention"});
    o.model = saved.model.string();
    o.out = (saved.dir / std::string(me::to_string(rows))).string();
    o.lengths = {64};
    o.attention_rows = rows;
    BOOST_TEST_REQUIRE(me::run_suite<meap::fp32>(o, cpu_device) == 0);
    BOOST_TEST(!std::filesystem::exists(std::filesystem::path(o.out) / "retrieval.csv"));

    const auto batch = me::make_attention_batch(plan_of(o), o);
    const auto report = me::analyze_attention(cpu_device, model, batch.clean.view().as_const(),
                                              batch.masked.view().as_const(), batch.analysis);
    // all: every position with two unmasked keys up to it counts for the variance; last: one per
    // prompt.
    index_t expected_rows = 0;
    for (index_t b = 0; b < 2; ++b) {
      index_t unmasked = 0;
      for (index_t i = 0; i < 64; ++i) {
        unmasked += batch.masked.data()[b * 64 + i] == batch.clean.data()[b * 64 + i] ? 1 : 0;
        expected_rows += (rows == me::attention_query_rows::all || i == 63) && unmasked >= 2 ? 1 : 0;
      }
    }
    BOOST_TEST(report.variance_rows == expected_rows);
    if (rows == me::attention_query_rows::all) BOOST_TEST(report.variance_rows > 100);  // of 2 x 64 positions
    else BOOST_TEST(report.variance_rows == 2);
    const auto overall = fields_of(lines_of(std::filesystem::path(o.out) / "attention.csv").back());
    BOOST_TEST_REQUIRE(overall.size() == 11u);
    const auto close = [](const std::string& text, double expected) {
      return std::fabs(std::stod(text) - expected) <= 1e-5 * std::fabs(expected);  // the CSV's 6 digits
    };
    BOOST_TEST(close(overall[6], report.overall.variance_clean), overall[6] << " vs " << report.overall.variance_clean);
    BOOST_TEST(close(overall[7], report.overall.variance_masked));
    BOOST_TEST(close(overall[9], report.overall.answer_share_clean));
  }
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace suite_test
