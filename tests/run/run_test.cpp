// The run layer (meap/run/, dist/agreement.hpp, data/synthetic.hpp, nn/config_json.hpp,
// train/finetune_metadata.hpp) at the library level: what meap's apps call, tested without them.
#define BOOST_TEST_MODULE meap_run
#include <meap/data/synthetic.hpp>
#include <meap/dist/agreement.hpp>
#include <meap/nn/config_json.hpp>
#include <meap/run/pretrain.hpp>
#include <meap/run/program.hpp>
#include <meap/run/progress.hpp>
#include <meap/run/run_directory.hpp>
#include <meap/run/training_loop.hpp>
#include <meap/train/finetune_metadata.hpp>

#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <new>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/support.hpp"
#include "support/errors.hpp"
#include "support/tiny_model.hpp"

namespace {

namespace fs = std::filesystem;
using io_test::scratch_directory;
using meap_test::error_says;

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::stringstream s(text);
  for (std::string line; std::getline(s, line);) lines.push_back(line);
  return lines;
}

meap::nn::llama_config tiny_config() { return meap_test::tiny_llama(meap::data::affine_vocab + 1, 16, 16, 32, 1); }

// A tiny pretrainer on the affine-recurrence task, and the step function training_loop calls.
struct tiny_run {
  meap::nn::llama_model<meap::fp32> model{tiny_config()};
  meap::train::pretrainer<meap::fp32, meap::cpu, meap::masking::fixed_ratio> trainer;
  meap::tensor<std::int32_t, meap::cpu> tokens = meap::zeros<std::int32_t>(meap::cpu{}, {4, 17});

  tiny_run()
      : trainer(model, meap::masking::fixed_ratio{.ratio = 0.15}, [] {
          meap::train::pretrain_options o;
          o.masking.mask_id = meap::data::affine_vocab;
          o.masking.seed = 7;
          o.schedule = {1e-2, 1e-3, 2, 12};
          return o;
        }()) {
    model.initialize(7);
  }
  meap::train::step_report step(std::uint64_t index) {
    meap::data::affine_recurrence_batch(7, index, tokens.view());
    return trainer.step(tokens.view());
  }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(program)

BOOST_AUTO_TEST_CASE(guarded_main_turns_every_failure_into_exit_code_1) {
  BOOST_TEST(meap::run::guarded_main("p", "hint", [] { return 3; }) == 3);
  BOOST_TEST(meap::run::guarded_main("p", "hint", []() -> int { throw meap::error("p: bad"); }) == 1);
  BOOST_TEST(meap::run::guarded_main("p", "hint", []() -> int { throw std::bad_alloc(); }) == 1);
  BOOST_TEST(meap::run::guarded_main("p", "hint", []() -> int { throw std::runtime_error("x"); }) == 1);
  BOOST_TEST(meap::run::guarded_main("p", "hint", []() -> int { throw 42; }) == 1);
}

BOOST_AUTO_TEST_CASE(parse_device_reads_cpu_cuda_and_ordinals) {
  BOOST_TEST(meap::run::parse_device("p", "cpu") == -1);
  BOOST_TEST(meap::run::parse_device("p", "cuda") == 0);
  BOOST_TEST(meap::run::parse_device("p", "cuda:3") == 3);
  for (const char* bad : {"gpu", "cuda:", "cuda:-1", "cuda:x", "cuda:123456", "CPU"})
    BOOST_CHECK_EXCEPTION(meap::run::parse_device("p", bad), meap::error, error_says("p", "--device", {"cuda:N"}));
}

BOOST_AUTO_TEST_CASE(progress_formats) {
  BOOST_TEST(meap::run::format_duration(3725.4) == "1:02:05");
  BOOST_TEST(meap::run::format_duration(0.2) == "0:00:00");
  BOOST_TEST(meap::run::log_number(1.0 / 3.0) == "0.333333333");
  BOOST_TEST(meap::run::log_number(0.1) == "0.1");
  BOOST_TEST(meap::run::eta_seconds(10.0, 2.0, 6.0) == 20.0);
  BOOST_TEST(meap::run::eta_seconds(10.0, 0.0, 6.0) == 0.0);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(agreement)

BOOST_AUTO_TEST_CASE(one_process_leads_and_decides_alone) {
  const meap::dist::rank0_agreement ranks;
  BOOST_TEST(ranks.lead());
  BOOST_TEST(!ranks.distributed());
  BOOST_TEST(ranks.agree([] { return std::string("checkpoints/step-00000004"); }) == "checkpoints/step-00000004");
  // Rank 0's own error comes back as it was thrown.
  BOOST_CHECK_EXCEPTION(ranks.agree([]() -> std::string { meap::throw_argument_error("p", "--out", "x", "y"); }),
                        meap::error, error_says("p", "--out", {"x"}));
  const meap::dist::rank0_agreement from_null(static_cast<meap::dist::process_group<meap::cpu>*>(nullptr));
  BOOST_TEST(from_null.lead());
  BOOST_TEST(!from_null.distributed());
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(synthetic_data)

BOOST_AUTO_TEST_CASE(affine_rows_are_keyed_by_seed_step_and_row_and_follow_the_recurrence) {
  auto a = meap::zeros<std::int32_t>(meap::cpu{}, {3, 64});
  auto b = meap::zeros<std::int32_t>(meap::cpu{}, {3, 64});
  meap::data::affine_recurrence_batch(5, 2, a.view());
  meap::data::affine_recurrence_batch(5, 2, b.view());
  BOOST_TEST(a.view()(1, 40) == b.view()(1, 40));
  bool same = true;
  for (int t = 0; t < 64; ++t) same = same && a.view()(0, t) == b.view()(0, t);
  BOOST_TEST(same);
  meap::data::affine_recurrence_batch(5, 3, b.view());
  int differing = 0;
  for (int r = 0; r < 3; ++r)
    for (int t = 0; t < 64; ++t) differing += a.view()(r, t) != b.view()(r, t);
  BOOST_TEST(differing > 32);
  // Ids in range, and the first document (16 tokens at least) follows one (a, c): a is odd, so
  // a and c are determined by three consecutive tokens; check them against the fourth and on.
  for (int r = 0; r < 3; ++r) {
    for (int t = 0; t < 64; ++t) BOOST_TEST((a.view()(r, t) >= 0 && a.view()(r, t) < meap::data::affine_vocab));
    int found = 0;
    for (int am = 1; am < 64; am += 2)
      for (int c = 0; c < 64; ++c) {
        bool fits = true;
        for (int t = 0; t + 1 < 16; ++t) fits = fits && (am * a.view()(r, t) + c) % 64 == a.view()(r, t + 1);
        found += fits;
      }
    BOOST_TEST(found >= 1);
  }
  auto flat = meap::zeros<std::int32_t>(meap::cpu{}, {8});
  BOOST_CHECK_EXCEPTION(meap::data::affine_recurrence_batch(1, 0, flat.view()), meap::error,
                        error_says("meap::data::affine_recurrence_batch", "out", {"rank 1"}));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(config_json)

BOOST_AUTO_TEST_CASE(fields_override_defaults_and_unknown_or_inexact_fields_are_refused) {
  const auto defaults = tiny_config();
  const auto c = meap::nn::parse_llama_config(R"({"d_model": 64, "layers": 3, "tied_head": true, "rope_theta": 500000})",
                                              "prog", "--config", "m.json", defaults);
  BOOST_TEST(c.d_model == 64);
  BOOST_TEST(c.layers == 3);
  BOOST_TEST(c.tied_head);
  BOOST_TEST(c.rope_theta == 500000.0);
  BOOST_TEST(c.vocab == defaults.vocab);
  BOOST_TEST(c.ffn == defaults.ffn);
  BOOST_CHECK_EXCEPTION(meap::nn::parse_llama_config(R"({"d_modle": 64})", "prog", "--config", "m.json", defaults),
                        meap::error, error_says("prog", "--config", {"m.json with the field 'd_modle'", "d_model"}));
  const auto inexact = meap_test::error_of(
      [&] { (void)meap::nn::parse_llama_config(R"({"layers": 2.5})", "prog", "--config", "m.json", defaults); });
  BOOST_TEST(inexact.find("layers") != std::string::npos);
  BOOST_TEST(inexact.find("--config m.json") != std::string::npos);
  BOOST_CHECK_THROW(meap::nn::parse_llama_config(R"([1, 2])", "prog", "--config", "m.json", defaults), meap::error);
  BOOST_CHECK_THROW(meap::nn::parse_llama_config(R"({"heads": 3})", "prog", "--config", "m.json", defaults), meap::error);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(run_directory_and_loop)

BOOST_AUTO_TEST_CASE(a_fresh_run_writes_logs_and_checkpoints_and_refuses_to_start_twice) {
  scratch_directory dir;
  const auto out = (dir / "run").string();
  {
    meap::run::run_directory output("prog", out, 2);
    tiny_run run;
    output.start(run.trainer, false, false);
    std::vector<std::uint64_t> seen;
    const auto result = meap::run::training_loop(
        run.trainer, output, {6, 2}, [&](std::uint64_t step) { return run.step(step); },
        [&](const meap::run::loop_progress& p) {
          seen.push_back(p.step);
          BOOST_TEST(p.total_steps == 6u);
          BOOST_TEST(p.report->step == p.step);
          BOOST_TEST(meap::run::format_progress(p).find("step      " + std::to_string(p.step + 1) + "/6") == 0u);
        });
    BOOST_TEST(seen == (std::vector<std::uint64_t>{0, 1, 2, 3, 4, 5}), boost::test_tools::per_element());
    BOOST_TEST(result.steps_taken == 6u);
    BOOST_TEST(result.skipped_steps == 0u);
    BOOST_TEST(result.final_checkpoint.step == 6u);
  }
  const auto loss = lines_of(read_text(fs::path(out) / "loss.csv"));
  BOOST_REQUIRE(loss.size() == 7u);
  BOOST_TEST(loss[0] == meap::run::loss_header);
  BOOST_TEST(loss[1].rfind("0,", 0) == 0u);
  BOOST_TEST(lines_of(read_text(fs::path(out) / "throughput.csv")).size() == 7u);
  // Every second step and the end: steps 2, 4, 6, of which the newest two are kept.
  std::set<std::string> kept;
  for (const auto& entry : fs::directory_iterator(fs::path(out) / "checkpoints"))
    if (entry.path().filename().string().rfind("step-", 0) == 0) kept.insert(entry.path().filename().string());
  BOOST_TEST(kept == (std::set<std::string>{"step-00000004", "step-00000006"}), boost::test_tools::per_element());

  meap::run::run_directory again("prog", out, 2);
  tiny_run other;
  BOOST_CHECK_EXCEPTION(again.start(other.trainer, false, false), meap::error,
                        error_says("prog", "--out", {"--resume"}));
}

BOOST_AUTO_TEST_CASE(resume_without_a_checkpoint_is_refused) {
  scratch_directory dir;
  meap::run::run_directory output("prog", (dir / "empty").string(), 1);
  tiny_run run;
  BOOST_CHECK_EXCEPTION(output.start(run.trainer, true, false), meap::error,
                        error_says("prog", "--resume", {"checkpoint"}));
  BOOST_CHECK_EXCEPTION(meap::run::run_directory("prog", (dir / "x").string(), 0), meap::error,
                        error_says("prog", "--keep-checkpoints", {"at least 1"}));
}

BOOST_AUTO_TEST_CASE(an_interrupted_and_resumed_loop_writes_the_same_loss_curve_as_one_run) {
  scratch_directory dir;
  const auto whole = (dir / "whole").string(), split = (dir / "split").string();
  const auto step_of = [](tiny_run& run) { return [&run](std::uint64_t step) { return run.step(step); }; };
  const auto quiet = [](const meap::run::loop_progress&) {};
  {
    meap::run::run_directory output("prog", whole, 3);
    tiny_run run;
    output.start(run.trainer, false, false);
    (void)meap::run::training_loop(run.trainer, output, {8, 4}, step_of(run), quiet);
  }
  {
    meap::run::run_directory output("prog", split, 3);
    tiny_run run;
    output.start(run.trainer, false, false);
    (void)meap::run::training_loop(run.trainer, output, {4, 4}, step_of(run), quiet);  // "killed" after step 4
  }
  {
    meap::run::run_directory output("prog", split, 3);
    tiny_run run;
    output.start(run.trainer, true, false);
    BOOST_TEST(run.trainer.next_step() == 4u);
    const auto result = meap::run::training_loop(run.trainer, output, {8, 4}, step_of(run), quiet);
    BOOST_TEST(result.steps_taken == 4u);
  }
  BOOST_TEST(read_text(fs::path(whole) / "loss.csv") == read_text(fs::path(split) / "loss.csv"));
}

BOOST_AUTO_TEST_CASE(pretrain_runs_the_callers_batches_end_to_end) {
  scratch_directory dir;
  std::ofstream(dir / "model.json") << R"({"d_model": 16, "layers": 1, "heads": 2, "kv_heads": 1, "ffn": 32})";
  meap::run::pretrain_options o;
  o.program = "prog";
  o.config_path = (dir / "model.json").string();
  o.steps = 5;
  o.batch = 4;
  o.micro_batches = 2;
  o.length = 12;
  o.warmup = 1;
  o.out = (dir / "run").string();
  std::vector<std::uint64_t> asked;
  o.batches = meap::run::batch_source{10, [&](std::uint64_t step, const meap::tensor_view<std::int32_t, meap::cpu>& t) {
                                        asked.push_back(step);
                                        BOOST_TEST(t.size(0) == 4);
                                        BOOST_TEST(t.size(1) == 13);
                                        for (meap::index_t r = 0; r < t.size(0); ++r)
                                          for (meap::index_t c = 0; c < t.size(1); ++c)
                                            t(r, c) = static_cast<std::int32_t>((r + c + step) % 10);
                                      }};
  BOOST_TEST(meap::run::pretrain<meap::fp32>(o, meap::cpu{}, {}, nullptr) == 0);
  BOOST_TEST(asked == (std::vector<std::uint64_t>{0, 1, 2, 3, 4}), boost::test_tools::per_element());
  BOOST_TEST(lines_of(read_text(dir / "run" / "loss.csv")).size() == 6u);
  BOOST_TEST(fs::exists(dir / "run" / "checkpoints" / "step-00000005" / "model.safetensors"));
  // The model has the callers' 10 ids plus [MASK].
  BOOST_TEST(meap::train::read_hugging_face_config(dir / "run" / "checkpoints" / "step-00000005" / "config.json").vocab ==
             11);

  // Validation at the door: names the option, before any work.
  o.out = (dir / "run2").string();
  o.batch = 5;
  BOOST_CHECK_EXCEPTION(meap::run::pretrain<meap::fp32>(o, meap::cpu{}, {}, nullptr), meap::error,
                        error_says("prog", "--batch", {"multiple of --micro-batches"}));
  o.batch = 4;
  o.policy = "bert";
  BOOST_CHECK_EXCEPTION(meap::run::pretrain<meap::fp32>(o, meap::cpu{}, {}, nullptr), meap::error,
                        error_says("prog", "--policy", {"ntp, meap"}));
  o.policy = "meap";
  o.length = 64;
  std::ofstream(dir / "model.json") << R"({"d_model": 16, "layers": 1, "heads": 2, "kv_heads": 1, "ffn": 32, "max_seq": 32})";
  BOOST_CHECK_EXCEPTION(meap::run::pretrain<meap::fp32>(o, meap::cpu{}, {}, nullptr), meap::error,
                        error_says("prog", "--seq-len", {"max_seq = 32"}));
  o.length = 12;
  BOOST_CHECK_EXCEPTION(meap::run::pretrain<meap::fp32>(o, meap::cpu{}, meap::train::memory_budget{1024.0, "here"}, nullptr),
                        meap::error, error_says("prog", "--batch/--seq-len/--config", {"available here"}));
  BOOST_TEST(!fs::exists(dir / "run2" / "checkpoints" / "step-00000005"));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(finetune_metadata)

// A tokenizer with chosen special ids, for the role choice.
class fake_ids final : public meap::text::tokenizer {
 public:
  fake_ids(std::int32_t vocab, std::int32_t mask, std::int32_t pad, std::int32_t eos)
      : vocab_(vocab), mask_(mask), pad_(pad), eos_(eos) {}
  std::vector<std::int32_t> encode(std::string_view) const override { return {}; }
  std::string decode(std::span<const std::int32_t>) const override { return {}; }
  std::int32_t vocab_size() const override { return vocab_; }
  std::int32_t bos_id() const override { return -1; }
  std::int32_t eos_id() const override { return eos_; }
  std::int32_t pad_id() const override { return pad_; }
  std::int32_t piece_id(std::string_view piece) const override { return piece == "[MASK]" ? mask_ : -1; }

 private:
  std::int32_t vocab_, mask_, pad_, eos_;
};

BOOST_AUTO_TEST_CASE(token_roles_follow_the_request_then_the_tokenizer_then_a_new_id) {
  auto config = tiny_config();
  config.vocab = 100;
  meap::train::token_role_request r;
  r.program = "prog";
  auto roles = meap::train::choose_token_roles(r, config, nullptr);
  BOOST_TEST(roles.mask_id == 100);  // a new row
  BOOST_TEST(roles.grow);
  BOOST_TEST(roles.pad_id == 0);
  const fake_ids with_mask(90, 7, -1, 2);
  roles = meap::train::choose_token_roles(r, config, &with_mask);
  BOOST_TEST(roles.mask_id == 7);
  BOOST_TEST(!roles.grow);
  BOOST_TEST(roles.pad_id == 2);  // no pad piece: EOS
  BOOST_TEST(roles.special_ids == (std::vector<std::int32_t>{2}), boost::test_tools::per_element());
  r.mask_id = 5;
  r.pad_id = 6;
  r.special_ids = {9};
  roles = meap::train::choose_token_roles(r, config, &with_mask);
  BOOST_TEST(roles.mask_id == 5);
  BOOST_TEST(roles.pad_id == 6);
  BOOST_TEST(roles.special_ids == (std::vector<std::int32_t>{9, 2}), boost::test_tools::per_element());
  r.needs_mask = false;
  BOOST_TEST(meap::train::choose_token_roles(r, config, nullptr).mask_id == -1);
  r.needs_mask = true;
  r.pad_id = 5;
  BOOST_CHECK_EXCEPTION(meap::train::choose_token_roles(r, config, nullptr), meap::error,
                        error_says("prog", "--pad-id", {"[MASK] id 5"}));
  r.pad_id = -1;
  r.mask_id = 100;
  BOOST_CHECK_EXCEPTION(meap::train::choose_token_roles(r, config, nullptr), meap::error,
                        error_says("prog", "--mask-id", {"vocabulary of 100"}));
  r.mask_id = -1;
  r.special_ids = {100};
  BOOST_CHECK_EXCEPTION(meap::train::choose_token_roles(r, config, nullptr), meap::error,
                        error_says("prog", "--special-ids", {"[0, 100)"}));
  const fake_ids too_big(101, -1, -1, -1);
  r.special_ids = {};
  BOOST_CHECK_EXCEPTION(meap::train::choose_token_roles(r, config, &too_big), meap::error,
                        error_says("prog", "--tokenizer", {"101 pieces"}));
}

BOOST_AUTO_TEST_CASE(metadata_round_trips_and_a_bad_file_is_refused) {
  scratch_directory dir;
  meap::train::finetune_metadata m;
  m.objective = "meap";
  m.roles = {32000, true, 0, {2, 7}};
  m.tokenizer = "spm.model";
  meap::train::write_finetune_metadata(dir.path(), m);
  const auto back = meap::train::read_finetune_metadata(dir.path());
  BOOST_TEST(back.objective == "meap");
  BOOST_TEST(back.roles.mask_id == 32000);
  BOOST_TEST(back.roles.grow);
  BOOST_TEST(back.roles.pad_id == 0);
  BOOST_TEST(back.roles.special_ids == m.roles.special_ids, boost::test_tools::per_element());
  BOOST_TEST(back.tokenizer == "spm.model");
  const auto bad = [&](const std::string& text) {
    std::ofstream(dir / meap::train::finetune_metadata_file, std::ios::trunc) << text;
    return meap_test::error_of([&] { (void)meap::train::read_finetune_metadata(dir.path()); });
  };
  BOOST_TEST(bad(R"({"objective": "bert", "mask_id": 1, "pad_id": 0})").find("objective meap or ntp") != std::string::npos);
  BOOST_TEST(bad(R"({"objective": "meap", "mask_id": "1", "pad_id": 0})").find("mask_id") != std::string::npos);
  BOOST_TEST(bad(R"({"objective": "meap", "mask_id": 1, "pad_id": 0, "special_ids": [-3]})").find("special id -3") !=
             std::string::npos);
  BOOST_TEST(bad(R"({"objective": "meap", "mask_id": 1, "pad_id": 0, "special_ids": 4})").find("array") != std::string::npos);
  BOOST_TEST(bad(R"({"objective": "meap", )").find("(no error)") == std::string::npos);
  fs::remove(dir / meap::train::finetune_metadata_file);
  BOOST_CHECK_THROW(meap::train::read_finetune_metadata(dir.path()), meap::error);
}

BOOST_AUTO_TEST_SUITE_END()
