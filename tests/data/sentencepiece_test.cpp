// sentencepiece_tokenizer over a model trained here with spm_train (BPE, 200 pieces, [MASK] as a
// user-defined symbol), refusals of missing, empty, corrupt and truncated model files, and
// instruction records read through it. Compiled only when meap finds SentencePiece; the cases
// that need a trained model are skipped when spm_train is missing (Debian package sentencepiece).
#include <meap/data/instruction.hpp>
#include <meap/text/sentencepiece.hpp>

#include "data/support.hpp"

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using data_test::concat;
using data_test::error_at;
using ids = std::vector<std::int32_t>;

std::string spm_train_program() {
  if (const char* path = std::getenv("MEAP_SPM_TRAIN"); path && *path) return path;
#ifdef MEAP_TEST_SPM_TRAIN
  return MEAP_TEST_SPM_TRAIN;
#else
  return {};
#endif
}

std::string quoted(const std::string& text) {
  std::string out = "'";
  for (const char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// A corpus of made-up words (deterministic) and the chat markup the tests encode, so that every
// character the tests use is in the model.
std::string corpus() {
  static const char* const syllables[] = {"ka", "ri", "to", "mu", "ne", "sa", "lo", "pe", "di", "ba",
                                          "fu", "go", "hi", "ja", "ze", "vo", "qu", "wy", "xe", "ci"};
  std::mt19937 random(7);
  std::vector<std::string> words = {"the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog",
                                    "hello", "world", "answer", "question", "user", "system", "assistant"};
  for (int i = 0; i < 300; ++i) {
    std::string word;
    for (unsigned s = 0, n = 1 + random() % 3; s < n; ++s) word += syllables[random() % 20];
    words.push_back(word);
  }
  std::string text;
  for (int line = 0; line < 400; ++line) {
    for (int w = 0; w < 12; ++w) text += (w ? " " : "") + words[random() % words.size()];
    text += line % 10 == 0 ? " <|user|> <|assistant|> <|system|> 0123456789 ?!.,:;'\"()-+=\n" : "\n";
  }
  return text;
}

// The model, trained once for the whole test program (about 0.1 s).
struct trained_model {
  data_test::scratch_directory dir;
  fs::path model;
  std::string problem;  // why there is no model
  trained_model() {
    const std::string program = spm_train_program();
    if (program.empty()) {
      problem = "spm_train not found (set MEAP_SPM_TRAIN or install the Debian package sentencepiece)";
      return;
    }
    data_test::write_text(dir / "corpus.txt", corpus());
    const std::string command =
        quoted(program) + " --input=" + quoted((dir / "corpus.txt").string()) +
        " --model_prefix=" + quoted((dir / "test").string()) +
        " --vocab_size=200 --model_type=bpe --character_coverage=1.0 '--user_defined_symbols=[MASK]'"
        " --bos_id=1 --eos_id=2 --pad_id=3 --unk_id=0 --num_threads=1 > " +
        quoted((dir / "spm_train.log").string()) + " 2>&1";
    const int status = std::system(command.c_str());
    model = dir / "test.model";
    if (status != 0 || !fs::exists(model)) {
      std::ifstream log(dir / "spm_train.log");
      problem = "spm_train failed (" + command + "): " +
                std::string(std::istreambuf_iterator<char>(log), std::istreambuf_iterator<char>());
    }
  }
};

const trained_model& model() {
  static const trained_model instance;
  return instance;
}

struct needs_model {
  boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
    boost::test_tools::assertion_result result(model().problem.empty());
    result.message() << model().problem;
    return result;
  }
};

std::string read_all(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

const char* const function = "meap::text::sentencepiece_tokenizer";

}  // namespace

BOOST_AUTO_TEST_SUITE(sentencepiece)

BOOST_AUTO_TEST_CASE(encode_decode_and_special_ids, *boost::unit_test::precondition(needs_model())) {
  const meap::text::sentencepiece_tokenizer tokenizer(model().model);
  BOOST_TEST(tokenizer.path() == model().model);
  BOOST_TEST(tokenizer.vocab_size() == 200);
  BOOST_TEST(tokenizer.unk_id() == 0);
  BOOST_TEST(tokenizer.bos_id() == 1);
  BOOST_TEST(tokenizer.eos_id() == 2);
  BOOST_TEST(tokenizer.pad_id() == 3);
  BOOST_TEST(tokenizer.mask_id() == 4);  // the first id after the control symbols
  BOOST_TEST(tokenizer.piece_id("[MASK]") == 4);
  BOOST_TEST(tokenizer.piece(4) == "[MASK]");
  BOOST_TEST(tokenizer.piece_id("<unk>") == 0);
  BOOST_TEST(tokenizer.piece_id("<s>") == 1);
  BOOST_TEST(tokenizer.piece_id("</s>") == 2);
  BOOST_TEST(tokenizer.piece_id("no such piece") == -1);  // not the unknown id
  BOOST_TEST(tokenizer.piece_id("") == -1);

  for (const std::string text : {"hello world", "the quick brown fox jumps over the lazy dog",
                                 "kari tomu? 42 (user) = answer!", "x"}) {
    const auto encoded = tokenizer.encode(text);
    BOOST_TEST(!encoded.empty());
    for (const auto id : encoded) BOOST_TEST((id >= 0 && id < 200));
    BOOST_TEST(tokenizer.decode(encoded) == text);
  }
  // [MASK] is one piece in text; control ids decode to nothing; no BOS / EOS is added.
  const auto masked = tokenizer.encode("hello [MASK] world");
  BOOST_TEST(std::count(masked.begin(), masked.end(), 4) == 1);
  BOOST_TEST(masked.front() != 1);
  BOOST_TEST(masked.back() != 2);
  BOOST_TEST(tokenizer.decode(concat({{1}, tokenizer.encode("hello"), {2, 3}})) == "hello");
  BOOST_TEST(tokenizer.encode("").empty());
  BOOST_TEST(tokenizer.decode(ids{}).empty());

  // Unknown characters become the unknown id; invalid UTF-8 is encoded, not refused.
  const auto unknown = tokenizer.encode("\xe2\x82\xac");  // the euro sign: not in the corpus
  BOOST_TEST(std::count(unknown.begin(), unknown.end(), 0) == 1);
  BOOST_CHECK_NO_THROW(tokenizer.encode(std::string("a\xff\xfe b", 5)));

  BOOST_CHECK_EXCEPTION(tokenizer.decode(ids{5, 200}), meap::error,
                        meap_test::error_says("meap::text::sentencepiece_tokenizer::decode", "ids",
                                              {"ids[1] = 200", "[0, 200)"}));
  BOOST_CHECK_EXCEPTION(tokenizer.decode(ids{-1}), meap::error, meap_test::error_says("ids", {"ids[0] = -1"}));
  BOOST_CHECK_EXCEPTION(tokenizer.piece(200), meap::error, meap_test::error_says("id", {"200"}));

  // Moves keep the model; the interface works through a base pointer.
  meap::text::sentencepiece_tokenizer moved(model().model);
  const std::unique_ptr<meap::text::tokenizer> base =
      std::make_unique<meap::text::sentencepiece_tokenizer>(std::move(moved));
  BOOST_TEST(base->encode("hello world") == tokenizer.encode("hello world"), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(unusable_model_files) {
  data_test::scratch_directory dir;
  const auto refused = [&](const fs::path& path, std::vector<std::string> fragments) {
    fragments.push_back(function);
    BOOST_CHECK_EXCEPTION(meap::text::sentencepiece_tokenizer{path}, meap::error,
                          error_at(path.string(), 0, fragments));
  };
  refused(dir / "missing.model", {"cannot open", "No such file"});
  refused(dir.path(), {"not a regular file"});
  data_test::write_text(dir / "empty.model", "");
  refused(dir / "empty.model", {"is empty", "expected a SentencePiece model"});
  std::mt19937 random(15);
  for (const std::size_t size : {1u, 7u, 100u, 4096u, 100000u}) {
    std::string bytes(size, '\0');
    for (auto& c : bytes) c = static_cast<char>(random());
    data_test::write_text(dir / "random.model", bytes);
    refused(dir / "random.model", {"expected a SentencePiece model"});
  }
  data_test::write_text(dir / "text.model", "this is not a model\n");
  refused(dir / "text.model", {"expected a SentencePiece model"});
  // A well-formed protobuf that is not a model (one field 2 of 3 bytes: an empty trainer spec).
  data_test::write_text(dir / "no_pieces.model", std::string("\x12\x03\x08\x01\x10", 5));
  refused(dir / "no_pieces.model", {"expected a SentencePiece model"});
}

BOOST_AUTO_TEST_CASE(truncated_models, *boost::unit_test::precondition(needs_model())) {
  data_test::scratch_directory dir;
  const std::string whole = read_all(model().model);
  BOOST_REQUIRE(whole.size() > 1000u);
  // Every prefix of the first 600 bytes (cuts between pieces among them: they still parse as a
  // protobuf), then a stride through the rest, and one byte short.
  std::vector<std::size_t> sizes;
  for (std::size_t n = 1; n <= 600; ++n) sizes.push_back(n);
  for (std::size_t n = 601; n < whole.size(); n += 997) sizes.push_back(n);
  sizes.push_back(whole.size() - 1);
  const auto path = dir / "truncated.model";
  for (const auto size : sizes) {
    data_test::write_text(path, std::string_view(whole).substr(0, size));
    try {
      meap::text::sentencepiece_tokenizer tokenizer(path);
      BOOST_ERROR("a model cut to " << size << " of " << whole.size() << " bytes was accepted");
    } catch (const meap::error& e) {
      const std::string what = e.what();
      if (what.find(path.string()) == std::string::npos || what.find("expected a SentencePiece model") == std::string::npos)
        BOOST_ERROR("cut to " << size << " bytes: " << what);
    }
  }
  // The whole file loads from a copy too.
  data_test::write_text(path, whole);
  BOOST_TEST(meap::text::sentencepiece_tokenizer(path).vocab_size() == 200);
}

BOOST_AUTO_TEST_CASE(instruction_records_through_sentencepiece, *boost::unit_test::precondition(needs_model())) {
  const meap::text::sentencepiece_tokenizer tokenizer(model().model);
  const std::string text =
      "{\"prompt\": \"hello world\", \"answer\": \"the lazy dog\"}\r\n"
      "\r\n"
      R"({"messages": [{"role": "system", "content": "kari tomu"}, {"role": "user", "content": "question?"},)"
      R"( {"role": "assistant", "content": "answer one"}, {"role": "user", "content": "more"},)"
      R"( {"role": "assistant", "content": "answer two"}]})"
      "\n";
  const auto data = meap::data::parse_instruction_jsonl(text, "sp.jsonl", {.tokenizer = &tokenizer, .vocab = 200});
  BOOST_TEST(data.lines == 3u);
  BOOST_TEST(data.blank_lines == 1u);
  BOOST_REQUIRE(data.examples.size() == 3u);

  const auto e = [&](std::string_view piece) { return tokenizer.encode(piece); };
  BOOST_TEST(data.examples[0].prompt == concat({{1}, e("hello world")}), boost::test_tools::per_element());
  BOOST_TEST(data.examples[0].answer == concat({e("the lazy dog"), {2}}), boost::test_tools::per_element());
  BOOST_TEST(data.examples[0].line == 1u);

  // Each piece is encoded on its own: header, content, "\n" (which this model's normalization
  // turns into nothing), so the expected ids are built the same way by hand.
  const auto turn = [&](std::string_view role, std::string_view content) {
    return concat({e("<|" + std::string(role) + "|>\n"), e(content), e("\n")});
  };
  const ids header = e("<|assistant|>\n");
  BOOST_TEST(!header.empty());
  BOOST_TEST(data.examples[1].prompt == concat({{1}, turn("system", "kari tomu"), turn("user", "question?"), header}),
             boost::test_tools::per_element());
  BOOST_TEST(data.examples[1].answer == concat({e("answer one"), {2}}), boost::test_tools::per_element());
  BOOST_TEST(data.examples[2].prompt == concat({{1}, turn("system", "kari tomu"), turn("user", "question?"),
                                                turn("assistant", "answer one"), turn("user", "more"), header}),
             boost::test_tools::per_element());
  BOOST_TEST(data.examples[2].answer == concat({e("answer two"), {2}}), boost::test_tools::per_element());
  BOOST_TEST(data.examples[2].line == 3u);
  BOOST_TEST(tokenizer.decode(data.examples[2].answer) == "answer two");

  // Whitespace alone encodes to nothing: an empty answer, at its line.
  BOOST_CHECK_EXCEPTION(
      meap::data::parse_instruction_jsonl(text + "{\"prompt\": \"hello\", \"answer\": \"   \"}\n", "sp.jsonl",
                                          {.tokenizer = &tokenizer}),
      meap::error, error_at("sp.jsonl", 4, {"an answer of at least one token"}));
  // A vocabulary smaller than the tokenizer's is enforced on the encoded text.
  BOOST_CHECK_EXCEPTION(meap::data::parse_instruction_jsonl(text, "sp.jsonl", {.tokenizer = &tokenizer, .vocab = 5}),
                        meap::error, error_at("sp.jsonl", 1, {"encoded prompt[0]", "options.vocab = 5"}));
}

BOOST_AUTO_TEST_SUITE_END()
