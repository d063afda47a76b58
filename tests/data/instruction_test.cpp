// instruction data: ids and text records, chats, blank lines and CRLF, max_length skips, every
// error with its line, and inputs that must produce meap::error and nothing else.
#include <meap/data/instruction.hpp>

#include "data/support.hpp"

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace {

using data_test::byte_tokenizer;
using data_test::concat;
using data_test::error_at;
using ids = std::vector<std::int32_t>;
using meap::data::instruction_read_options;
using meap::data::parse_instruction_jsonl;

ids bytes_of(std::string_view text) { return byte_tokenizer().encode(text); }

}  // namespace

BOOST_AUTO_TEST_SUITE(instruction)

BOOST_AUTO_TEST_CASE(ids_records) {
  const std::string text =
      "{\"prompt\": [5, 6, 7], \"answer\": [8], \"source\": \"ignored\", \"id\": 12}\n"
      "\n"
      "   \t\n"
      "{\"answer\": [0, 1], \"prompt\": [9]}\n";
  const byte_tokenizer tokenizer;  // ids records take no BOS / EOS even with a tokenizer
  for (const auto* with : {static_cast<const meap::text::tokenizer*>(nullptr),
                           static_cast<const meap::text::tokenizer*>(&tokenizer)}) {
    const auto data = parse_instruction_jsonl(text, "ids.jsonl", {.tokenizer = with});
    BOOST_TEST(data.lines == 4u);
    BOOST_TEST(data.blank_lines == 2u);
    BOOST_TEST(data.skipped_overlong_prompt == 0u);
    BOOST_REQUIRE(data.examples.size() == 2u);
    BOOST_TEST(data.examples[0].prompt == (ids{5, 6, 7}), boost::test_tools::per_element());
    BOOST_TEST(data.examples[0].answer == (ids{8}), boost::test_tools::per_element());
    BOOST_TEST(data.examples[0].line == 1u);
    BOOST_TEST(data.examples[1].prompt == (ids{9}), boost::test_tools::per_element());
    BOOST_TEST(data.examples[1].answer == (ids{0, 1}), boost::test_tools::per_element());
    BOOST_TEST(data.examples[1].line == 4u);
  }
  // The largest int32 id without a vocabulary; vocab bounds it otherwise.
  const auto big = parse_instruction_jsonl("{\"prompt\": [2147483647], \"answer\": [0]}", "big.jsonl");
  BOOST_TEST(big.examples.at(0).prompt.at(0) == 2147483647);
  const auto in_vocab = parse_instruction_jsonl("{\"prompt\": [99], \"answer\": [0]}", "v.jsonl", {.vocab = 100});
  BOOST_TEST(in_vocab.examples.size() == 1u);
}

BOOST_AUTO_TEST_CASE(text_records_bos_and_eos) {
  const std::string text = "{\"prompt\": \"Hi?\", \"answer\": \"Yo\"}";
  const byte_tokenizer tokenizer;
  const auto data = parse_instruction_jsonl(text, "text.jsonl", {.tokenizer = &tokenizer});
  BOOST_TEST(data.lines == 1u);
  BOOST_REQUIRE(data.examples.size() == 1u);
  BOOST_TEST(data.examples[0].prompt == concat({{1}, bytes_of("Hi?")}), boost::test_tools::per_element());
  BOOST_TEST(data.examples[0].answer == concat({bytes_of("Yo"), {2}}), boost::test_tools::per_element());

  const auto plain = parse_instruction_jsonl(text, "text.jsonl",
                                             {.tokenizer = &tokenizer, .add_bos = false, .append_eos = false});
  BOOST_TEST(plain.examples.at(0).prompt == bytes_of("Hi?"), boost::test_tools::per_element());
  BOOST_TEST(plain.examples.at(0).answer == bytes_of("Yo"), boost::test_tools::per_element());

  const byte_tokenizer no_specials(-1, -1, -1);  // asked for, but the tokenizer has none
  const auto bare = parse_instruction_jsonl(text, "text.jsonl", {.tokenizer = &no_specials});
  BOOST_TEST(bare.examples.at(0).prompt == bytes_of("Hi?"), boost::test_tools::per_element());
  BOOST_TEST(bare.examples.at(0).answer == bytes_of("Yo"), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(chat_text_rendering) {
  const std::string text =
      R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},)"
      R"( {"role": "assistant", "content": "4"}, {"role": "user", "content": "3+3?"},)"
      R"( {"role": "assistant", "content": "6"}], "meta": {"x": 1}})";
  const byte_tokenizer tokenizer;
  const auto data = parse_instruction_jsonl(text, "chat.jsonl", {.tokenizer = &tokenizer});
  BOOST_REQUIRE(data.examples.size() == 2u);
  const auto turn = [&](std::string_view role, std::string_view content) {
    return concat({bytes_of("<|" + std::string(role) + "|>\n"), bytes_of(content), bytes_of("\n")});
  };
  const ids first_prompt = concat({{1}, turn("system", "Be brief."), turn("user", "2+2?"), bytes_of("<|assistant|>\n")});
  BOOST_TEST(data.examples[0].prompt == first_prompt, boost::test_tools::per_element());
  BOOST_TEST(data.examples[0].answer == concat({bytes_of("4"), {2}}), boost::test_tools::per_element());
  BOOST_TEST(data.examples[0].line == 1u);
  // The earlier assistant turn is part of the second prompt (its header, content and "\n"; no EOS).
  const ids second_prompt = concat({{1}, turn("system", "Be brief."), turn("user", "2+2?"), turn("assistant", "4"),
                                    turn("user", "3+3?"), bytes_of("<|assistant|>\n")});
  BOOST_TEST(data.examples[1].prompt == second_prompt, boost::test_tools::per_element());
  BOOST_TEST(data.examples[1].answer == concat({bytes_of("6"), {2}}), boost::test_tools::per_element());
  BOOST_TEST(data.examples[1].line == 1u);

  // Another format: every {role} is replaced; no BOS / EOS when not asked for.
  const auto custom = parse_instruction_jsonl(
      R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})", "chat.jsonl",
      {.tokenizer = &tokenizer, .add_bos = false, .append_eos = false, .chat_role_format = "[{role}/{role}] "});
  BOOST_REQUIRE(custom.examples.size() == 1u);
  BOOST_TEST(custom.examples[0].prompt == concat({bytes_of("[user/user] "), bytes_of("a"), bytes_of("\n"),
                                                  bytes_of("[assistant/assistant] ")}),
             boost::test_tools::per_element());
  BOOST_TEST(custom.examples[0].answer == bytes_of("b"), boost::test_tools::per_element());

  // An assistant turn first: the prompt is its header alone.
  const auto opening = parse_instruction_jsonl(R"({"messages": [{"role": "assistant", "content": "Hello"}]})",
                                               "chat.jsonl", {.tokenizer = &tokenizer, .add_bos = false});
  BOOST_TEST(opening.examples.at(0).prompt == bytes_of("<|assistant|>\n"), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(chat_ids_concatenated) {
  const std::string text =
      R"({"messages": [{"role": "user", "content": [10, 11]}, {"role": "assistant", "content": [12]},)"
      R"( {"role": "user", "content": [13]}, {"role": "assistant", "content": [14, 15]}]})";
  const byte_tokenizer tokenizer;  // no headers, separators, BOS or EOS for ids, tokenizer or not
  const auto data = parse_instruction_jsonl(text, "chat_ids.jsonl", {.tokenizer = &tokenizer});
  BOOST_REQUIRE(data.examples.size() == 2u);
  BOOST_TEST(data.examples[0].prompt == (ids{10, 11}), boost::test_tools::per_element());
  BOOST_TEST(data.examples[0].answer == (ids{12}), boost::test_tools::per_element());
  BOOST_TEST(data.examples[1].prompt == (ids{10, 11, 12, 13}), boost::test_tools::per_element());
  BOOST_TEST(data.examples[1].answer == (ids{14, 15}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(crlf_blank_lines_and_last_line) {
  const std::string text =
      "{\"prompt\": [1], \"answer\": [2]}\r\n"
      "\r\n"
      "{\"prompt\": [3], \"answer\": [4]}\r\n"
      "{\"prompt\": [5], \"answer\": [6]}";  // no final newline
  const auto data = parse_instruction_jsonl(text, "crlf.jsonl");
  BOOST_TEST(data.lines == 4u);
  BOOST_TEST(data.blank_lines == 1u);
  BOOST_REQUIRE(data.examples.size() == 3u);
  BOOST_TEST(data.examples[2].line == 4u);
  BOOST_TEST(data.examples[2].answer == (ids{6}), boost::test_tools::per_element());
  // Text through CRLF: the \r is not part of the record.
  const byte_tokenizer tokenizer;
  const auto text_data = parse_instruction_jsonl("{\"prompt\": \"p\", \"answer\": \"a\"}\r\n", "crlf.jsonl",
                                                 {.tokenizer = &tokenizer, .add_bos = false, .append_eos = false});
  BOOST_TEST(text_data.lines == 1u);
  BOOST_TEST(text_data.examples.at(0).answer == bytes_of("a"), boost::test_tools::per_element());
  // A trailing blank line after the final newline is counted once.
  BOOST_TEST(parse_instruction_jsonl("{\"prompt\": [1], \"answer\": [2]}\n\n", "x.jsonl").lines == 2u);
}

BOOST_AUTO_TEST_CASE(max_length_skips_overlong_prompts) {
  const std::string text =
      "{\"prompt\": [1, 2, 3], \"answer\": [4, 5, 6, 7, 8]}\n"  // prompt 3 < 4: kept (answers are not checked)
      "{\"prompt\": [1, 2, 3, 4], \"answer\": [5]}\n"          // prompt 4 >= 4: skipped
      "{\"prompt\": [1, 2, 3, 4, 5], \"answer\": [6]}\n";      // skipped
  const auto data = parse_instruction_jsonl(text, "long.jsonl", {.max_length = 4});
  BOOST_TEST(data.examples.size() == 1u);
  BOOST_TEST(data.examples.at(0).answer.size() == 5u);  // never truncated here
  BOOST_TEST(data.skipped_overlong_prompt == 2u);
  BOOST_TEST(parse_instruction_jsonl(text, "long.jsonl").skipped_overlong_prompt == 0u);

  // BOS counts; chat turns are judged one by one.
  const byte_tokenizer tokenizer;
  const auto text_data = parse_instruction_jsonl("{\"prompt\": \"abc\", \"answer\": \"d\"}", "long.jsonl",
                                                 {.tokenizer = &tokenizer, .max_length = 4});
  BOOST_TEST(text_data.examples.empty());  // BOS + 3 bytes = 4: all skipped is no error
  BOOST_TEST(text_data.skipped_overlong_prompt == 1u);
  const auto chat = parse_instruction_jsonl(
      R"({"messages": [{"role": "user", "content": [1]}, {"role": "assistant", "content": [2]},)"
      R"( {"role": "assistant", "content": [3]}]})",
      "long.jsonl", {.max_length = 2});
  BOOST_REQUIRE(chat.examples.size() == 1u);  // prompts [1] (kept) and [1, 2] (skipped)
  BOOST_TEST(chat.examples[0].answer == (ids{2}), boost::test_tools::per_element());
  BOOST_TEST(chat.skipped_overlong_prompt == 1u);
}

BOOST_AUTO_TEST_CASE(errors_name_the_source_and_line) {
  const byte_tokenizer tokenizer;
  const instruction_read_options with_tokenizer{.tokenizer = &tokenizer};
  struct bad_case {
    std::string record;
    std::string fragment;
    instruction_read_options options;
  };
  const std::string good = "{\"prompt\": [1], \"answer\": [2]}";
  const std::vector<bad_case> cases = {
      {"{\"prompt\": [1], \"answer\": [2]", "valid JSON", {}},
      {"not json", "valid JSON", {}},
      {"[1, 2]", "a JSON object", {}},
      {"\"text\"", "a JSON object", {}},
      {"{\"question\": \"q\"}", "prompt and answer, or with messages", {}},
      {"{\"prompt\": [1]}", "the field answer", {}},
      {"{\"answer\": [1]}", "the field prompt", {}},
      {"{\"prompt\": null, \"answer\": [1]}", "the field prompt", {}},
      {"{\"prompt\": 5, \"answer\": [1]}", "prompt as a string of text or an array", {}},
      {"{\"prompt\": [1], \"answer\": {\"a\": 1}}", "answer as a string of text or an array", {}},
      {"{\"prompt\": \"text\", \"answer\": [1]}", "both text or both arrays", with_tokenizer},
      {"{\"prompt\": [1, 2.5], \"answer\": [1]}", "prompt[1]", {}},
      {"{\"prompt\": [1], \"answer\": [\"1\"]}", "answer[0]", {}},
      {"{\"prompt\": [-1], \"answer\": [1]}", "integer token ids in [0, 2^31)", {}},
      {"{\"prompt\": [1e30], \"answer\": [1]}", "prompt[0] = a number 1e+30", {}},
      {"{\"prompt\": [2147483648], \"answer\": [1]}", "prompt[0]", {}},
      {"{\"prompt\": [18446744073709551615], \"answer\": [1]}", "prompt[0]", {}},
      {"{\"prompt\": [99999999999999999999999], \"answer\": [1]}", "prompt[0]", {}},
      {"{\"prompt\": [[1, 2]], \"answer\": [1]}", "prompt[0] = an array of 2 elements", {}},
      {"{\"prompt\": [1], \"answer\": [100]}", "in [0, options.vocab = 100)", {.vocab = 100}},
      {"{\"prompt\": \"text\", \"answer\": \"more\"}", "options.tokenizer", {}},
      {"{\"prompt\": [], \"answer\": [1]}", "a prompt of at least one token", {}},
      {"{\"prompt\": [1], \"answer\": []}", "an answer of at least one token", {}},
      {"{\"prompt\": \"\", \"answer\": \"a\"}", "a prompt of at least one token", with_tokenizer},
      {"{\"prompt\": \"p\", \"answer\": \"\"}", "an answer of at least one token", with_tokenizer},
      // Encoded text and the special ids are range-checked too (byte ids reach 259).
      {"{\"prompt\": \"p\", \"answer\": \"a\\u00ff\"}", "encoded answer[1]", {.tokenizer = &tokenizer, .vocab = 196}},
      {"{\"prompt\": \"p\", \"answer\": \"a\"}", "encoded prompt[0] = 116", {.tokenizer = &tokenizer, .vocab = 100}},
      // Chats.
      {"{\"messages\": [], \"x\": 1}", "messages as a non-empty array", {}},
      {"{\"messages\": \"hi\"}", "messages as a non-empty array", {}},
      {"{\"messages\": [{\"role\": \"user\", \"content\": [1]}], \"prompt\": [1]}", "not both", {}},
      {"{\"messages\": [{\"role\": \"user\", \"content\": [1]}]}", "no assistant turn", {}},
      {"{\"messages\": [{\"role\": \"tool\", \"content\": [1]}, {\"role\": \"assistant\", \"content\": [2]}]}",
       "messages[0].role = a string \"tool\"", {}},
      {"{\"messages\": [{\"role\": 1, \"content\": [1]}]}", "messages[0].role", {}},
      {"{\"messages\": [{\"content\": [1]}]}", "messages[0] with the field role", {}},
      {"{\"messages\": [{\"role\": \"user\"}]}", "messages[0] with the field content", {}},
      {"{\"messages\": [[1]]}", "messages[0] as an object", {}},
      {"{\"messages\": [{\"role\": \"user\", \"content\": 3}]}", "messages[0].content as a string", {}},
      {"{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": [2]}]}",
       "every content of a chat as text", with_tokenizer},
      {"{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}]}",
       "options.tokenizer", {}},
      {"{\"messages\": [{\"role\": \"assistant\", \"content\": [1]}]}", "a prompt of at least one token", {}},
      {"{\"messages\": [{\"role\": \"user\", \"content\": [1]}, {\"role\": \"assistant\", \"content\": []}]}",
       "an answer of at least one token", {}},
      {"{\"messages\": [{\"role\": \"user\", \"content\": [1, -5]}, {\"role\": \"assistant\", \"content\": [1]}]}",
       "messages[0].content[1]", {}},
      {"{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": \"\"}]}",
       "an answer of at least one token", with_tokenizer},
  };
  for (const auto& c : cases) {
    BOOST_TEST_CONTEXT("record " << c.record) {
      // The bad record on line 3, after a good record and a blank line.
      const std::string text = good + "\n\n" + c.record + "\n" + good + "\n";
      BOOST_CHECK_EXCEPTION(parse_instruction_jsonl(text, "bad.jsonl", c.options), meap::error,
                            error_at("bad.jsonl", 3, {"meap::data::parse_instruction_jsonl", c.fragment}));
    }
  }
  // nlohmann's own "line 1" (within the one line) does not reach the message.
  try {
    parse_instruction_jsonl(good + "\n{oops}\n", "bad.jsonl");
    BOOST_ERROR("no error");
  } catch (const meap::error& e) {
    BOOST_TEST(std::string(e.what()).find("line 1") == std::string::npos, e.what());
    BOOST_TEST(std::string(e.what()).find("bad.jsonl line 2") != std::string::npos, e.what());
  }
}

BOOST_AUTO_TEST_CASE(empty_sources_and_bad_options) {
  for (const std::string text : {"", "\n", "  \r\n\t\n"})
    BOOST_CHECK_EXCEPTION(parse_instruction_jsonl(text, "empty.jsonl"), meap::error,
                          error_at("empty.jsonl", 0, {"at least one JSON record"}));
  const std::string good = "{\"prompt\": [1], \"answer\": [2]}";
  BOOST_CHECK_EXCEPTION(parse_instruction_jsonl(good, "x.jsonl", {.vocab = -1}), meap::error,
                        meap_test::error_says("meap::data::parse_instruction_jsonl", "options.vocab", {"-1"}));
  BOOST_CHECK_EXCEPTION(parse_instruction_jsonl(good, "x.jsonl", {.max_length = -3}), meap::error,
                        meap_test::error_says("meap::data::parse_instruction_jsonl", "options.max_length", {"-3"}));
}

BOOST_AUTO_TEST_CASE(read_from_file) {
  data_test::scratch_directory dir;
  const auto file = dir / "train.jsonl";
  data_test::write_text(file, "{\"prompt\": [1, 2], \"answer\": [3]}\r\n\r\n{\"prompt\": [4], \"answer\": [5]}\r\n");
  const auto data = meap::data::read_instruction_jsonl(file);
  BOOST_TEST(data.lines == 3u);
  BOOST_TEST(data.blank_lines == 1u);
  BOOST_REQUIRE(data.examples.size() == 2u);
  BOOST_TEST(data.examples[1].line == 3u);

  const auto bad = dir / "bad.jsonl";
  data_test::write_text(bad, "{\"prompt\": [1], \"answer\": [2]}\n{\"prompt\": [1]}\n");
  BOOST_CHECK_EXCEPTION(meap::data::read_instruction_jsonl(bad), meap::error,
                        error_at(bad.string(), 2, {"meap::data::read_instruction_jsonl", "'path'", "answer"}));
  const auto empty = dir / "empty.jsonl";
  data_test::write_text(empty, "");
  BOOST_CHECK_EXCEPTION(meap::data::read_instruction_jsonl(empty), meap::error,
                        error_at(empty.string(), 0, {"at least one JSON record"}));
  BOOST_CHECK_EXCEPTION(meap::data::read_instruction_jsonl(dir / "missing.jsonl"), meap::error,
                        error_at((dir / "missing.jsonl").string(), 0, {"cannot open", "No such file"}));
  BOOST_CHECK_EXCEPTION(meap::data::read_instruction_jsonl(dir.path()), meap::error,
                        error_at(dir.path().string(), 0, {"not a regular file"}));
}

BOOST_AUTO_TEST_CASE(hostile_input_only_meap_errors) {
  const byte_tokenizer tokenizer;
  const instruction_read_options options{.tokenizer = &tokenizer, .vocab = 260};
  const auto only_meap_error = [&](const std::string& text) {
    try {
      parse_instruction_jsonl(text, "hostile.jsonl", options);
    } catch (const meap::error&) {
    } catch (const std::exception& e) {
      BOOST_ERROR("not a meap::error: " << e.what());
    }
  };
  // Invalid UTF-8 in a string, an overlong encoding, a lone surrogate escape, a NUL byte.
  only_meap_error(std::string("{\"prompt\": \"a\xff\xfe\", \"answer\": \"b\"}"));
  only_meap_error(std::string("{\"prompt\": \"\xc0\xaf\", \"answer\": \"b\"}"));
  only_meap_error("{\"prompt\": \"\\ud800\", \"answer\": \"b\"}");
  only_meap_error(std::string("{\"prompt\": [1],\0 \"answer\": [2]}", 31));
  // The message quotes the bad bytes escaped: it is plain ASCII.
  try {
    parse_instruction_jsonl(std::string("{\"prompt\": \"a\xff\", \"answer\": \"b\"}"), "utf8.jsonl");
    BOOST_ERROR("no error");
  } catch (const meap::error& e) {
    const std::string what = e.what();
    BOOST_TEST(std::all_of(what.begin(), what.end(), [](char c) { return c >= 0x20 && c < 0x7f; }), what);
    BOOST_TEST(what.find("\\xff") != std::string::npos, what);
  }
  // Deep nesting, inside an id array and inside a chat.
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  only_meap_error("{\"prompt\": [" + deep + "], \"answer\": [1]}");
  only_meap_error("{\"messages\": [{\"role\": \"user\", \"content\": " + deep + "}]}");
  only_meap_error(deep);
  // Random bytes, and random edits of a valid record.
  std::mt19937 random(20240615);
  const std::string valid =
      R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [1, 2]}], "prompt": [3]})";
  for (int round = 0; round < 2000; ++round) {
    std::string text = valid;
    if (round % 2 == 0) {
      text.assign(1 + random() % 80, '\0');
      for (auto& c : text) c = static_cast<char>(random());
    } else {
      for (int edit = 0; edit < 3; ++edit) text[random() % text.size()] = static_cast<char>(random());
    }
    only_meap_error(text);
  }
}

BOOST_AUTO_TEST_SUITE_END()
