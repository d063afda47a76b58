// Bad input and crashes at the io layer: typed JSON fields, the Hugging Face config reader's
// regressions, checksums of safetensors files, readers that never block on a FIFO, the step log
// that follows checkpoints, and checkpoint series committed as one unit.
#include <meap/io/json_fields.hpp>
#include <meap/io/safetensors.hpp>
#include <meap/io/step_log.hpp>
#include <meap/io/token_dataset.hpp>
#include <meap/train/checkpoint.hpp>
#include <meap/train/checkpoint_series.hpp>
#include <meap/train/memory.hpp>

#include "io/support.hpp"

#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace io_test;

namespace {

std::string read_text(const fs::path& path) {
  const auto b = read_bytes(path);
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

// A config.json as transformers writes it for a small model, with `edit` applied.
std::string hf_config(const std::string& edit_key = "", const std::string& edit_value = "") {
  meap::nn::llama_config c;
  c.vocab = 64;
  c.d_model = 64;
  c.layers = 1;
  c.heads = 8;
  c.kv_heads = 8;
  c.ffn = 8;
  c.max_seq = 16;
  auto j = meap::train::hugging_face_config(c, meap::dtype::f32);
  if (!edit_key.empty()) j[edit_key] = nlohmann::json::parse(edit_value);
  return j.dump();
}

}  // namespace

BOOST_AUTO_TEST_SUITE(json_fields)

BOOST_AUTO_TEST_CASE(integers_are_integers_in_range) {
  const auto j = nlohmann::json::parse(
      R"({"a": 64, "big": 18446744073709551615, "huge": 18446744073709551616, "float": 64.9, "exp": 1e30,
          "whole_float": 64.0, "text": "64", "neg": -3, "flag": true, "nothing": null})");
  const meap::json_fields f(j, "test", "doc.json");
  BOOST_TEST(f.integer("a") == 64);
  BOOST_TEST(f.integer("neg") == -3);
  BOOST_TEST(f.integer_or("nothing", 7) == 7);  // null counts as absent
  BOOST_TEST(f.integer_or("missing", 9) == 9);
  BOOST_CHECK_EXCEPTION(f.integer("a", 1, 10), meap::error, error_says("path", {"doc.json with a = a number 64", "an integer in [1, 10]"}));
  BOOST_CHECK_EXCEPTION(f.integer("neg", 0), meap::error, error_says("path", {"neg = a number -3"}));
  for (const char* name : {"big", "huge", "float", "exp", "whole_float", "text", "flag"})
    BOOST_CHECK_EXCEPTION(f.integer(name), meap::error, error_says("path", {std::string("with ") + name + " = "}));
  BOOST_CHECK_EXCEPTION(f.integer("missing"), meap::error, error_says("path", {"with the field 'missing'"}));
  BOOST_TEST(f.number("float") == 64.9);
  BOOST_TEST(f.number("a") == 64.0);
  BOOST_CHECK_EXCEPTION(f.number("text"), meap::error, error_says("path", {"text = a string \"64\"", "a number"}));
  BOOST_TEST(f.boolean_or("flag", false));
  BOOST_CHECK_EXCEPTION(f.boolean_or("a", false), meap::error, error_says("path", {"true or false"}));
}

BOOST_AUTO_TEST_CASE(documents_that_are_not_objects_are_refused) {
  for (const char* text : {"[1, 2]", "null", "3", "\"x\""})
    BOOST_CHECK_EXCEPTION(meap::json_fields(nlohmann::json::parse(text), "test", "doc.json"), meap::error,
                          error_says("path", {"expected a JSON object of fields"}));
  BOOST_CHECK_EXCEPTION(meap::parse_json("{\"a\": ", "test", "doc.json"), meap::error, error_says("path", {"valid JSON"}));
}

BOOST_AUTO_TEST_CASE(decimal_counts_are_digits_only) {
  BOOST_TEST(meap::parse_decimal_u64("0").value() == 0u);
  BOOST_TEST(meap::parse_decimal_u64("18446744073709551615").value() == std::numeric_limits<std::uint64_t>::max());
  for (const char* bad : {"", "-1", "+1", " 1", "1 ", "1e3", "0x10", "18446744073709551616", "abc"})
    BOOST_TEST(!meap::parse_decimal_u64(bad).has_value(), bad);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(hugging_face_config)

BOOST_AUTO_TEST_CASE(bad_fields_throw_meap_error_never_crash) {
  BOOST_TEST(meap::train::parse_hugging_face_config(hf_config(), "config.json").head_dim() == 8);
  // The regressions of the reliability campaign: SIGFPE (zero heads with head_dim), a string
  // head_dim (nlohmann::type_error), 1e30 / 2^64 / 64.9 converted to int64.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"num_attention_heads", "0"}, {"head_dim", "\"8\""},           {"max_position_embeddings", "1e30"},
      {"max_position_embeddings", "18446744073709551616"},               {"max_position_embeddings", "64.9"},
      {"hidden_size", "\"64\""},    {"hidden_size", "null"},          {"vocab_size", "-5"},
      {"num_key_value_heads", "3"}, {"head_dim", "16"},              {"rope_theta", "\"big\""},
      {"tie_word_embeddings", "1"}, {"num_hidden_layers", "1099511627777"}};
  for (const auto& [key, value] : cases) {
    BOOST_TEST_CONTEXT(key << " = " << value) {
      BOOST_CHECK_THROW(meap::train::parse_hugging_face_config(hf_config(key, value), "config.json"), meap::error);
    }
  }
  BOOST_CHECK_EXCEPTION(meap::train::parse_hugging_face_config(hf_config("num_attention_heads", "0"), "config.json"),
                        meap::error, error_says("path", {"num_attention_heads = a number 0"}));
  for (const char* text : {"[1,2]", "null", "", "{"})
    BOOST_CHECK_THROW(meap::train::parse_hugging_face_config(text, "config.json"), meap::error);
}

BOOST_AUTO_TEST_CASE(a_fifo_is_refused_without_blocking) {
  scratch_directory dir;
  const auto fifo = dir / "config.json";
  BOOST_REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  BOOST_CHECK_EXCEPTION(meap::train::read_hugging_face_config(fifo), meap::error, error_says("path", {"is not a regular file"}));
  BOOST_CHECK_EXCEPTION(meap::safetensors_file{fifo}, meap::error, error_says("path", {"is not a regular file"}));
  const auto tokens = dir / "data.u16";
  BOOST_REQUIRE(::mkfifo(tokens.c_str(), 0600) == 0);
  BOOST_CHECK_EXCEPTION((meap::token_dataset{tokens, meap::token_dataset_options{4}}), meap::error,
                        error_says("path", {"is not a regular file"}));
}

BOOST_AUTO_TEST_CASE(parameter_count_cannot_overflow) {
  meap::nn::llama_config c;
  c.vocab = std::int64_t{1} << 30;
  c.d_model = std::int64_t{1} << 30;
  c.heads = std::int64_t{1} << 23;
  c.kv_heads = c.heads;
  BOOST_CHECK_EXCEPTION(c.validate(), meap::error, error_says("config", {"fewer than 2^56 parameters"}));
  c.d_model = 4096;
  c.heads = 32;
  c.kv_heads = 8;
  c.vocab = 128256;
  c.validate();
  BOOST_TEST(c.parameter_count() > 0);
  meap::nn::llama_config zero;
  zero.heads = 0;
  BOOST_TEST(zero.head_dim() == 0);  // no division by zero before validate() refuses it
  BOOST_CHECK_THROW(zero.validate(), meap::error);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(safetensors_checksum)

BOOST_AUTO_TEST_CASE(a_changed_byte_is_detected) {
  std::vector<float> values(100);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i) * 0.5f;
  meap::safetensors_writer writer;
  writer.add("w", meap::tensor_view<const float, meap::cpu>(values.data(), meap::dims{100})).add_data_checksum();
  auto image = writer.serialize();
  const auto file = meap::safetensors_file::from_bytes(image);
  BOOST_TEST(file.metadata().count(std::string(meap::safetensors_checksum_key)) == 1u);
  // Every single flipped bit in the data buffer is caught.
  const std::size_t data_start = image.size() - values.size() * sizeof(float);
  for (std::size_t at = data_start; at < image.size(); at += 37) {
    auto corrupt = image;
    corrupt[at] ^= std::byte{0x10};
    BOOST_CHECK_EXCEPTION(meap::safetensors_file::from_bytes(corrupt), meap::error,
                          error_says("path", {"CRC-32", "the file is corrupt"}));
  }
  // A file without the key (transformers' own) is read as before.
  meap::safetensors_writer plain;
  plain.add("w", meap::tensor_view<const float, meap::cpu>(values.data(), meap::dims{100}));
  BOOST_TEST(meap::safetensors_file::from_bytes(plain.serialize()).metadata().empty());
}

BOOST_AUTO_TEST_CASE(a_zero_extent_does_not_hide_overflowing_strides) {
  // Found by reading the fuzz target: the element count is 0, but row-major strides of
  // (0, 2^62, 4) overflow int64. The reader refuses the shape.
  const std::string header = R"({"z":{"dtype":"F32","shape":[0,4611686018427387904,4],"data_offsets":[0,0]}})";
  bytes image = le_u64(header.size());
  append(image, text_bytes(header));
  BOOST_CHECK_EXCEPTION(meap::safetensors_file::from_bytes(image), meap::error,
                        error_says("path", {"spans more bytes than 64-bit sizes can count"}));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(step_log)

BOOST_AUTO_TEST_CASE(resume_keeps_exactly_the_rows_before_the_checkpoint) {
  scratch_directory dir;
  const auto path = dir / "loss.csv";
  {
    auto log = meap::step_log::create(path, "step,loss");
    for (std::uint64_t s = 0; s < 10; ++s) log.append(s, std::to_string(s * 2));
    log.sync();
    BOOST_TEST(read_text(path).substr(0, 14) == "step,loss\n0,0\n");
  }
  // A torn last line and a repeated block of steps (what appending on resume used to produce).
  std::string text = read_text(path) + "4,8\n5,10\n6,1";
  write_bytes(path, text_bytes(text));
  {
    auto log = meap::step_log::resume(path, "step,loss", 6);
    BOOST_TEST(log.missing_rows() == 0u);
    BOOST_TEST(read_text(path) == "step,loss\n0,0\n1,2\n2,4\n3,6\n4,8\n5,10\n");
    log.append(6, "12");
  }  // the destructor writes what is buffered
  BOOST_TEST(read_text(path) == "step,loss\n0,0\n1,2\n2,4\n3,6\n4,8\n5,10\n6,12\n");
  // Another header: refused (another program's file).
  BOOST_CHECK_EXCEPTION(meap::step_log::resume(path, "step,loss,lr", 3), meap::error,
                        error_says("path", {"does not start with the header line 'step,loss,lr'"}));
  // A missing log restarts with the header and says how many rows are lost.
  fs::remove(path);
  const auto fresh = meap::step_log::resume(path, "step,loss", 4);
  BOOST_TEST(fresh.missing_rows() == 4u);
  BOOST_TEST(read_text(path) == "step,loss\n");
}

BOOST_AUTO_TEST_CASE(a_symbolic_link_is_replaced_not_followed) {
  scratch_directory dir;
  write_bytes(dir / "victim", text_bytes("keep"));
  fs::create_symlink(dir / "victim", dir / "loss.csv");
  {
    auto log = meap::step_log::create(dir / "loss.csv", "step,loss");
    log.append(0, "1");
  }
  BOOST_TEST(read_text(dir / "victim") == "keep");
  BOOST_TEST(!fs::is_symlink(dir / "loss.csv"));
  BOOST_TEST(read_text(dir / "loss.csv") == "step,loss\n0,1\n");
  BOOST_CHECK_EXCEPTION(meap::step_log::create(dir / "no_such_dir" / "loss.csv", "step"), meap::error,
                        error_says("path", {"cannot create a temporary file"}));
}

BOOST_AUTO_TEST_CASE(temporaries_of_dead_writers_are_removed) {
  scratch_directory dir;
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  int status = 0;
  BOOST_REQUIRE(::waitpid(child, &status, 0) == child);  // `child` is now a pid without a process
  const auto dead = dir / (".loss.csv.tmp." + std::to_string(child) + ".3");
  const auto live = dir / ".loss.csv.tmp.1.0";  // init: always running
  const auto other = dir / (".other.csv.tmp." + std::to_string(child) + ".0");
  for (const auto& p : {dead, live, other}) write_bytes(p, text_bytes("x"));
  auto log = meap::step_log::create(dir / "loss.csv", "step,loss");
  BOOST_TEST(!fs::exists(dead));
  BOOST_TEST(fs::exists(live));
  BOOST_TEST(fs::exists(other));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(checkpoint_series)

BOOST_AUTO_TEST_CASE(commits_are_units_kept_pruned_and_linked) {
  scratch_directory dir;
  const auto root = dir / "checkpoints";
  meap::train::checkpoint_series series(root, 2);
  BOOST_TEST(!series.newest().has_value());
  const auto write = [](std::uint64_t step) {
    return [step](const fs::path& d) { write_bytes(d / "state", text_bytes(std::to_string(step))); };
  };
  for (std::uint64_t step : {10u, 20u, 30u}) series.commit(step, write(step));
  const auto all = series.list();
  BOOST_REQUIRE(all.size() == 2u);
  BOOST_TEST(all[0].step == 20u);
  BOOST_TEST(all[1].step == 30u);
  BOOST_TEST(fs::read_symlink(root / "latest") == fs::path("step-00000030"));
  BOOST_TEST(read_text(root / "latest" / "state") == "30");
  // A second commit of a step that exists keeps the first.
  series.commit(30, [](const fs::path& d) { write_bytes(d / "state", text_bytes("other")); });
  BOOST_TEST(read_text(root / "step-00000030" / "state") == "30");
  // A writer that throws leaves nothing behind.
  BOOST_CHECK_THROW(series.commit(40, [](const fs::path& d) {
                      write_bytes(d / "state", text_bytes("half"));
                      throw meap::error("disk full");
                    }),
                    meap::error);
  BOOST_TEST(series.newest()->step == 30u);
  const std::vector<std::string> expected = {".lock", "latest", "step-00000020", "step-00000030"};
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(root)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  BOOST_TEST(names == expected, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(orphans_are_removed_and_a_second_writer_is_refused) {
  scratch_directory dir;
  const auto root = dir / "checkpoints";
  {
    meap::train::checkpoint_series series(root, 3);
    series.commit(5, [](const fs::path& d) { write_bytes(d / "state", text_bytes("5")); });
    // A second process (or object) writing the same series is refused while the first holds it.
    BOOST_CHECK_EXCEPTION(meap::train::checkpoint_series(root, 3), meap::error,
                          error_says("root", {"another run holds its lock"}));
  }
  // What a killed writer leaves: a temporary checkpoint, a half-removed old one, a link temporary
  // and an atomic_file temporary. A plain directory named like a checkpoint but partial cannot
  // exist: commits rename complete directories only.
  fs::create_directories(root / ".step-00000006.tmp.4242");
  write_bytes(root / ".step-00000006.tmp.4242" / "model.safetensors", text_bytes("partial"));
  fs::create_directories(root / ".step-00000001.deleting.4242");
  fs::create_symlink("step-00000006", root / ".latest.tmp.4242");
  write_bytes(root / ".config.json.tmp.4242.0", text_bytes("{"));
  write_bytes(root / "notes.txt", text_bytes("the user's own file"));
  meap::train::checkpoint_series reopened(root, 3);
  BOOST_TEST(reopened.orphans_removed() == 4u);
  BOOST_TEST(reopened.newest()->step == 5u);
  BOOST_TEST(fs::exists(root / "notes.txt"));  // not ours: left alone
  BOOST_TEST(meap::train::checkpoint_series::step_of("step-00000005").value() == 5u);
  BOOST_TEST(!meap::train::checkpoint_series::step_of("step--1").has_value());
  BOOST_TEST(!meap::train::checkpoint_series::step_of(".step-00000006.tmp.1").has_value());
  BOOST_CHECK_EXCEPTION(meap::train::checkpoint_series(dir / "a_file_as_root" / "x", 0), meap::error,
                        error_says("keep_last", {"at least 1"}));
  write_bytes(dir / "a_file", text_bytes(""));
  BOOST_CHECK_EXCEPTION(meap::train::checkpoint_series(dir / "a_file" / "checkpoints", 2), meap::error,
                        error_says("root", {"a directory that exists or can be created"}));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(memory_estimate)

BOOST_AUTO_TEST_CASE(estimates_grow_with_the_run_and_stay_finite) {
  meap::nn::llama_config c;
  const auto small = meap::train::estimate_training_memory<meap::fp32>(c, 8, 128);
  const auto longer = meap::train::estimate_training_memory<meap::fp32>(c, 8, 256);
  const auto mixed = meap::train::estimate_training_memory<meap::bf16_mixed>(c, 8, 128);
  // fp32: master + gradient, 4 + 4 bytes per parameter; AdamW 8 more.
  BOOST_TEST(small.parameters == 8.0 * static_cast<double>(c.parameter_count() - c.d_model - 2 * c.layers * c.d_model),
             boost::test_tools::tolerance(1e-12));
  BOOST_TEST(small.optimizer == small.parameters);
  BOOST_TEST(longer.activations == 2.0 * small.activations, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(mixed.activations < small.activations);  // bf16 activations
  BOOST_TEST(mixed.parameters > small.parameters);    // the bf16 compute copy (4 + 2 + 4 > 8)
  c.vocab = std::int64_t{1} << 40;
  BOOST_TEST(std::isfinite(meap::train::estimate_training_memory<meap::fp32>(c, 1 << 30, 1 << 30).total()));
  const auto available = meap::train::available_host_memory();
  BOOST_TEST(available.has_value());  // Linux: /proc/meminfo
  BOOST_TEST(*available > 0.0);
  BOOST_TEST(meap::train::format_bytes(1536.0) == "1.5 KiB");
  BOOST_TEST(meap::train::format_bytes(3.0 * 1024 * 1024 * 1024) == "3.0 GiB");
}

BOOST_AUTO_TEST_SUITE_END()
