// meap/data/instruction.hpp: instruction-tuning data (prompt -> answer pairs) from JSONL files,
// as token ids for the fine-tuning trainer.
//
//   struct instruction_example { std::vector<std::int32_t> prompt, answer; std::uint64_t line; };
//   struct instruction_read_options { tokenizer, add_bos, append_eos, vocab, max_length, chat_role_format };
//   struct instruction_dataset { examples; lines, blank_lines, skipped_overlong_prompt; };
//   instruction_dataset read_instruction_jsonl(const std::filesystem::path&, const instruction_read_options& = {});
//   instruction_dataset parse_instruction_jsonl(std::string_view text, const std::string& source,
//                                               const instruction_read_options& = {});
//
// One JSON object per line; blank lines (nothing but spaces, tabs and a final \r) are allowed and
// counted; "\r\n" line ends are fine. Two record forms:
//
//   {"prompt": "text", "answer": "text"}     text, encoded with options.tokenizer; or
//   {"prompt": [ids], "answer": [ids]}       integer token ids (no tokenizer needed). Mixing text
//                                            and ids in one record is an error; other fields are
//                                            ignored.
//   {"messages": [{"role": "system" | "user" | "assistant", "content": "text" or [ids]}, ...]}
//       a chat: every assistant turn becomes one example. Its answer is that turn's content; its
//       prompt is every earlier turn (earlier assistant turns included) followed by the assistant
//       role header. With text content a turn inside the prompt is
//         encode(header(role)) + encode(content) + encode("\n")
//       where header(role) is options.chat_role_format with every "{role}" replaced by the role
//       ("<|user|>\n" by default), and the prompt ends with encode(header("assistant")). Each
//       piece is encoded on its own (a SentencePiece model's dummy prefix, and its normalization
//       of "\n", apply to each). With ids content the turns are concatenated as they are: no
//       role header, no separator, no BOS or EOS. All turns of one chat hold text, or all hold
//       ids. A chat without an assistant turn, or with another role, is an error.
//
// Text records and text chats: the prompt starts with tokenizer->bos_id() when add_bos and the
// tokenizer has one (>= 0), and every answer ends with tokenizer->eos_id() when append_eos and it
// has one. Ids records are taken as they are.
//
// Checks, each a meap::error naming the source (the file) and the 1-based line, with what was
// found and what was expected: a line that is not valid JSON or not an object; an object with
// neither prompt/answer nor messages, or with both; a missing field or a field of the wrong type;
// an id that is not an integer or is out of range (options.vocab > 0: [0, vocab), the encoded
// text and the BOS / EOS ids included; 0: >= 0; ids must fit int32 either way); a text record
// without a tokenizer; an empty prompt or an empty answer (after encoding, before BOS / EOS are
// added); a file with no records at all. A file that cannot be opened is a meap::error naming the
// path. No input crashes or throws anything but meap::error.
//
// options.max_length > 0: an example whose prompt alone (BOS included) has >= max_length tokens
// leaves no room for any answer token and is skipped and counted in skipped_overlong_prompt;
// nothing is truncated here (the trainer truncates answers). A dataset whose every example was
// skipped is returned empty, not refused.
#pragma once

#include <meap/core/error.hpp>
#include <meap/io/json_fields.hpp>
#include <meap/text/tokenizer.hpp>

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#pragma push_macro("MEAP_DETAIL_ALLOWED")
#define MEAP_DETAIL_ALLOWED 1
#include <meap/io/detail/posix_file.hpp>
#pragma pop_macro("MEAP_DETAIL_ALLOWED")

namespace meap::data {

struct instruction_example {
  std::vector<std::int32_t> prompt;
  std::vector<std::int32_t> answer;
  std::uint64_t line = 0;  // 1-based line of the record in the source (every turn of a chat shares it)
};

struct instruction_read_options {
  const text::tokenizer* tokenizer = nullptr;  // needed for text records; ids records work without it
  bool add_bos = true;      // prepend tokenizer->bos_id() to the prompt (text only, when the tokenizer has one)
  bool append_eos = true;   // append tokenizer->eos_id() to each answer (text only, when it has one)
  std::int64_t vocab = 0;   // > 0: every id must be in [0, vocab) (ids and encoded text); 0: ids must be >= 0
  std::int64_t max_length = 0;  // > 0: an example whose prompt has >= max_length tokens is skipped and counted
  std::string chat_role_format = "<|{role}|>\n";  // a chat turn's header; "{role}" becomes the role
};

struct instruction_dataset {
  std::vector<instruction_example> examples;  // in file order (a chat's turns in order)
  std::uint64_t lines = 0;                    // lines in the source, blank ones included
  std::uint64_t blank_lines = 0;
  std::uint64_t skipped_overlong_prompt = 0;  // examples left out by options.max_length
};

// The largest JSONL file read_instruction_jsonl accepts (it reads the whole file into memory).
inline constexpr std::uint64_t max_instruction_file_bytes = std::uint64_t{16} << 30;

namespace detail {

// A JSON value for a message, without recursing into containers (nesting may be arbitrarily deep).
inline std::string describe_json(const nlohmann::json& value) {
  const auto count = [](std::size_t n, const char* what) {
    return std::to_string(n) + " " + what + (n == 1 ? "" : "s");
  };
  if (value.is_array()) return "an array of " + count(value.size(), "element");
  if (value.is_object()) return "an object of " + count(value.size(), "field");
  return json_fields::describe(value);
}

// `text` with control characters and bytes >= 0x80 written as \xNN (nlohmann's parse errors
// quote the input, which may be invalid UTF-8).
inline std::string printable(std::string_view text) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte < 0x7f) {
      out.push_back(c);
    } else {
      out.append("\\x").push_back(hex[byte >> 4]);
      out.push_back(hex[byte & 15]);
    }
  }
  return out;
}

class instruction_parser {
 public:
  instruction_parser(std::string_view function, std::string_view argument, std::string source,
                     const instruction_read_options& options)
      : function_(function), argument_(argument), source_(std::move(source)), options_(options) {
    check_argument(options.vocab >= 0 && options.vocab <= (std::int64_t{1} << 31), function, "options.vocab",
                   options.vocab, "0 (ids only checked to be >= 0) or a vocabulary size in [1, 2^31]");
    check_argument(options.max_length >= 0, function, "options.max_length", options.max_length,
                   "0 (no limit) or a positive length in tokens");
    id_limit_ = options.vocab > 0 ? options.vocab : std::int64_t{std::numeric_limits<std::int32_t>::max()} + 1;
  }

  instruction_dataset parse(std::string_view text) {
    instruction_dataset dataset;
    std::uint64_t records = 0;
    std::size_t start = 0;
    while (start < text.size()) {
      const std::size_t newline = text.find('\n', start);
      const std::size_t end = newline == std::string_view::npos ? text.size() : newline;
      std::string_view content = text.substr(start, end - start);
      start = newline == std::string_view::npos ? text.size() : newline + 1;
      line_ = ++dataset.lines;
      if (!content.empty() && content.back() == '\r') content.remove_suffix(1);
      if (content.find_first_not_of(" \t\r") == std::string_view::npos) {
        ++dataset.blank_lines;
        continue;
      }
      ++records;
      parse_record(content, dataset);
    }
    line_ = 0;
    if (records == 0)
      throw_argument_error(function_, argument_,
                           source_ + " (" + std::to_string(dataset.lines) + " lines, " +
                               std::to_string(dataset.blank_lines) + " blank)",
                           "at least one JSON record (an empty file)");
    return dataset;
  }

 private:
  enum class form { text, ids };

  [[noreturn]] void fail(const std::string& found, const std::string& expected) const {
    throw_argument_error(function_, argument_, source_ + " line " + std::to_string(line_) + found, expected);
  }

  void parse_record(std::string_view content, instruction_dataset& dataset) {
    nlohmann::json record;
    try {
      record = nlohmann::json::parse(content);
    } catch (const nlohmann::json::exception& e) {
      // nlohmann counts lines within this one line: keep its column, drop its "line 1".
      std::string what = e.what();
      const std::string_view own_line = "at line 1, column";
      if (const auto at = what.find(own_line); at != std::string::npos) what.replace(at, own_line.size(), "at column");
      fail("", "a line of valid JSON (" + printable(what) + ")");
    }
    try {
      if (!record.is_object()) fail(" = " + describe_json(record), "a JSON object (one record per line)");
      const auto* messages = field(record, "messages");
      const auto* prompt = field(record, "prompt");
      const auto* answer = field(record, "answer");
      if (messages && (prompt || answer))
        fail(" with both messages and " + std::string(prompt ? "prompt" : "answer"),
             "either a prompt/answer record or a chat (messages), not both");
      if (messages) {
        parse_chat(*messages, dataset);
      } else if (prompt || answer) {
        parse_pair(prompt, answer, dataset);
      } else {
        fail(" = " + describe_json(record),
             "a record with the fields prompt and answer, or with messages (a chat)");
      }
    } catch (const nlohmann::json::exception& e) {  // not expected: every access is checked first
      fail("", std::string("a well-formed record (") + e.what() + ")");
    }
  }

  static const nlohmann::json* field(const nlohmann::json& object, const char* name) {
    const auto it = object.find(name);
    return it == object.end() || it->is_null() ? nullptr : &*it;
  }

  // "text" or "ids" for a field's value; anything else is an error.
  form form_of(const nlohmann::json& value, const std::string& name) const {
    if (value.is_string()) return form::text;
    if (value.is_array()) return form::ids;
    fail(" with " + name + " = " + describe_json(value), name + " as a string of text or an array of integer token ids");
  }

  void parse_pair(const nlohmann::json* prompt, const nlohmann::json* answer, instruction_dataset& dataset) {
    if (!prompt) fail(" without prompt", "a record with the field prompt (next to answer)");
    if (!answer) fail(" without answer", "a record with the field answer (next to prompt)");
    const form prompt_form = form_of(*prompt, "prompt");
    const form answer_form = form_of(*answer, "answer");
    if (prompt_form != answer_form)
      fail(" with prompt as " + std::string(prompt_form == form::text ? "text" : "ids") + " and answer as " +
               (answer_form == form::text ? "text" : "ids"),
           "prompt and answer both text or both arrays of token ids");
    instruction_example example;
    example.line = line_;
    if (prompt_form == form::ids) {
      example.prompt = ids_of(*prompt, "prompt");
      example.answer = ids_of(*answer, "answer");
      check_not_empty(example.prompt, example.answer, "prompt", "answer");
    } else {
      const auto& tokenizer = require_tokenizer();
      example.prompt = encode(tokenizer, prompt->get_ref<const std::string&>(), "prompt");
      example.answer = encode(tokenizer, answer->get_ref<const std::string&>(), "answer");
      check_not_empty(example.prompt, example.answer, "prompt", "answer");
      finish_text(tokenizer, example, "prompt", "answer");
    }
    keep(std::move(example), dataset);
  }

  void parse_chat(const nlohmann::json& messages, instruction_dataset& dataset) {
    if (!messages.is_array() || messages.empty())
      fail(" with messages = " + describe_json(messages),
           "messages as a non-empty array of {\"role\": ..., \"content\": ...} objects");
    struct turn {
      std::string_view role;
      const nlohmann::json* content;
    };
    std::vector<turn> turns;
    turns.reserve(messages.size());
    bool any_assistant = false;
    form chat_form = form::text;
    for (std::size_t i = 0; i < messages.size(); ++i) {
      const std::string name = "messages[" + std::to_string(i) + "]";
      const auto& message = messages[i];
      if (!message.is_object())
        fail(" with " + name + " = " + describe_json(message), name + " as an object with role and content");
      const auto* role = field(message, "role");
      const auto* content = field(message, "content");
      if (!role) fail(" with " + name + " without role", name + " with the field role");
      if (!content) fail(" with " + name + " without content", name + " with the field content");
      if (!role->is_string())
        fail(" with " + name + ".role = " + describe_json(*role), name + ".role as \"system\", \"user\" or \"assistant\"");
      const std::string& role_name = role->get_ref<const std::string&>();
      if (role_name != "system" && role_name != "user" && role_name != "assistant")
        fail(" with " + name + ".role = " + describe_json(*role), name + ".role as \"system\", \"user\" or \"assistant\"");
      const form content_form = form_of(*content, name + ".content");
      if (i == 0) chat_form = content_form;
      if (content_form != chat_form)
        fail(" with " + name + ".content as " + (content_form == form::text ? "text" : "ids") +
                 " after messages[0].content as " + (chat_form == form::text ? "text" : "ids"),
             "every content of a chat as text, or every one as an array of token ids");
      any_assistant = any_assistant || role_name == "assistant";
      turns.push_back({role_name, content});
    }
    if (!any_assistant)
      fail(" with " + std::to_string(turns.size()) + " messages and no assistant turn",
           "a chat with at least one turn of role \"assistant\" (each one becomes an example)");

    const text::tokenizer* tokenizer = chat_form == form::text ? &require_tokenizer() : nullptr;
    std::vector<std::int32_t> newline;
    if (tokenizer) newline = encode(*tokenizer, "\n", "the turn separator \"\\n\"");
    std::vector<std::int32_t> history;  // the rendering of the turns so far
    for (std::size_t i = 0; i < turns.size(); ++i) {
      const std::string name = "messages[" + std::to_string(i) + "].content";
      std::vector<std::int32_t> content =
          tokenizer ? encode(*tokenizer, turns[i].content->get_ref<const std::string&>(), name)
                    : ids_of(*turns[i].content, name);
      std::vector<std::int32_t> header;
      if (tokenizer) header = encode(*tokenizer, role_header(turns[i].role), "the header of " + name);
      if (turns[i].role == "assistant") {
        instruction_example example;
        example.line = line_;
        example.prompt = history;
        example.prompt.insert(example.prompt.end(), header.begin(), header.end());
        example.answer = content;
        check_not_empty(example.prompt, example.answer, "prompt before " + name, name);
        if (tokenizer) finish_text(*tokenizer, example, "the prompt before " + name, name);
        keep(std::move(example), dataset);
      }
      history.insert(history.end(), header.begin(), header.end());
      history.insert(history.end(), content.begin(), content.end());
      history.insert(history.end(), newline.begin(), newline.end());
    }
  }

  std::string role_header(std::string_view role) const {
    constexpr std::string_view placeholder = "{role}";
    std::string header;
    std::string_view format = options_.chat_role_format;
    for (;;) {
      const std::size_t at = format.find(placeholder);
      if (at == std::string_view::npos) break;
      header.append(format.substr(0, at)).append(role);
      format.remove_prefix(at + placeholder.size());
    }
    header.append(format);
    return header;
  }

  const text::tokenizer& require_tokenizer() const {
    if (!options_.tokenizer)
      fail(" with text", "options.tokenizer for records of text (without one, only arrays of token ids are read)");
    return *options_.tokenizer;
  }

  std::vector<std::int32_t> encode(const text::tokenizer& tokenizer, std::string_view text,
                                   const std::string& name) const {
    std::vector<std::int32_t> ids;
    try {
      ids = tokenizer.encode(text);
    } catch (const std::exception& e) {
      fail(" with " + name, std::string("text the tokenizer can encode (") + e.what() + ")");
    }
    for (std::size_t i = 0; i < ids.size(); ++i) check_id(ids[i], "encoded " + name + "[" + std::to_string(i) + "]");
    return ids;
  }

  void check_id(std::int64_t id, const std::string& label) const {
    if (id < 0 || id >= id_limit_) fail(" with " + label + " = " + std::to_string(id), id_expectation());
  }

  std::string id_expectation() const {
    return options_.vocab > 0 ? "token ids in [0, options.vocab = " + std::to_string(options_.vocab) + ")"
                              : "token ids in [0, 2^31) (non-negative int32)";
  }

  std::vector<std::int32_t> ids_of(const nlohmann::json& array, const std::string& name) const {
    std::vector<std::int32_t> ids;
    ids.reserve(array.size());
    for (std::size_t i = 0; i < array.size(); ++i) {
      const auto& value = array[i];
      std::int64_t id = -1;
      bool integer = false;
      if (value.is_number_unsigned()) {
        const auto u = value.get<std::uint64_t>();
        integer = u < static_cast<std::uint64_t>(id_limit_);
        id = integer ? static_cast<std::int64_t>(u) : -1;
      } else if (value.is_number_integer()) {
        id = value.get<std::int64_t>();
        integer = true;
      }
      if (!integer || id < 0 || id >= id_limit_)
        fail(" with " + name + "[" + std::to_string(i) + "] = " + describe_json(value),
             "integer " + id_expectation());
      ids.push_back(static_cast<std::int32_t>(id));
    }
    return ids;
  }

  void check_not_empty(const std::vector<std::int32_t>& prompt, const std::vector<std::int32_t>& answer,
                       const std::string& prompt_name, const std::string& answer_name) const {
    if (prompt.empty()) fail(" with an empty " + prompt_name, "a prompt of at least one token");
    if (answer.empty()) fail(" with an empty " + answer_name, "an answer of at least one token");
  }

  // BOS and EOS of a text record, range-checked like the encoded text.
  void finish_text(const text::tokenizer& tokenizer, instruction_example& example, const std::string& prompt_name,
                   const std::string& answer_name) const {
    if (options_.add_bos) {
      const std::int32_t bos = tokenizer.bos_id();
      if (bos >= 0) {
        check_id(bos, "the BOS id (tokenizer bos_id()) of " + prompt_name);
        example.prompt.insert(example.prompt.begin(), bos);
      }
    }
    if (options_.append_eos) {
      const std::int32_t eos = tokenizer.eos_id();
      if (eos >= 0) {
        check_id(eos, "the EOS id (tokenizer eos_id()) of " + answer_name);
        example.answer.push_back(eos);
      }
    }
  }

  void keep(instruction_example&& example, instruction_dataset& dataset) const {
    if (options_.max_length > 0 && static_cast<std::int64_t>(example.prompt.size()) >= options_.max_length) {
      ++dataset.skipped_overlong_prompt;
      return;
    }
    dataset.examples.push_back(std::move(example));
  }

  std::string_view function_;
  std::string_view argument_;
  std::string source_;
  const instruction_read_options& options_;
  std::int64_t id_limit_ = 0;
  std::uint64_t line_ = 0;
};

}  // namespace detail

// Parses JSONL held in memory; `source` names it in messages (a file name, say).
inline instruction_dataset parse_instruction_jsonl(std::string_view text, const std::string& source,
                                                   const instruction_read_options& options = {}) {
  return detail::instruction_parser("meap::data::parse_instruction_jsonl", "text", source, options).parse(text);
}

// Reads a JSONL file (see the top of this file). The whole file is read into memory first.
inline instruction_dataset read_instruction_jsonl(const std::filesystem::path& file,
                                                  const instruction_read_options& options = {}) {
  constexpr std::string_view function = "meap::data::read_instruction_jsonl";
  const std::string text =
      meap::detail::read_small_file(function, file, max_instruction_file_bytes, "instruction file");
  return detail::instruction_parser(function, "path", file.string(), options).parse(text);
}

}  // namespace meap::data
