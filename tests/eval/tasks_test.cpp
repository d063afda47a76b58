// eval/tasks: the retrieval task generators. Determinism, exact prompt lengths, the needle (or the
// gold document) where the request puts it, every id in its range and every key once per row,
// MQAR's layout and inline targets, text mode through a byte tokenizer, and every rejection.
#include <meap/eval/tasks.hpp>

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "support/errors.hpp"

namespace {

namespace me = meap::eval;
using meap::index_t;
using meap_test::error_says;

constexpr const char* make_example = "meap::eval::make_example";

// 3 reserved ids (BOS = 0, EOS, MASK), the rest carved by default_id_vocabulary.
me::id_vocabulary test_vocabulary() {
  me::id_vocabulary vocabulary = me::default_id_vocabulary(200, 3);
  vocabulary.bos = 0;
  return vocabulary;
}

me::task_request request_for(me::task_kind kind, index_t length, double depth = 0.5, std::uint64_t row = 0) {
  me::task_request request;
  request.kind = kind;
  request.context_length = length;
  request.depth = depth;
  request.seed = 7;
  request.row = row;
  return request;
}

// The shortest id-mode prompt of each task with the default knobs and a BOS: the layouts of
// meap/eval/tasks.hpp counted by hand.
index_t minimum_length(me::task_kind kind) {
  switch (kind) {
    case me::task_kind::needle: return 1 + 4 + 3;              // BOS, needle K SEP v v, QUERY K SEP
    case me::task_kind::multikey_needle: return 1 + 5 * 4 + 3;  // 4 needles + one needle of filler
    case me::task_kind::multivalue_needle: return 1 + 5 * 4 + 3;
    case me::task_kind::passkey: return 1 + 6 + 2;     // SEP d d d d d, QUERY SEP
    case me::task_kind::mqar: return 1 + 4 * 8 - 1;    // 8 pairs, 8 queries, the last without value
    case me::task_kind::multidoc_qa: return 1 + 10 * 4 + 3;  // 10 documents of SEP K v v
  }
  return 0;
}

// The needle's length in id mode with the default knobs.
index_t needle_size(me::task_kind kind) { return kind == me::task_kind::passkey ? 6 : 4; }

bool same(const me::task_example& a, const me::task_example& b) {
  return a.prompt == b.prompt && a.answer == b.answer && a.evidence == b.evidence &&
         a.inline_targets == b.inline_targets && a.haystack == b.haystack && a.depth == b.depth;
}

// Walks an id-mode prompt and checks that every id is where its role allows: BOS first, filler,
// needles (K SEP values / SEP digits), documents, MQAR pairs and queries, the question last.
// Returns how often each key occurs in the haystack.
std::map<std::int32_t, int> check_layout(const me::task_request& request, const me::id_vocabulary& v,
                                         const me::task_example& example) {
  const auto& prompt = example.prompt;
  const auto at = [&](index_t t) { return prompt[static_cast<std::size_t>(t)]; };
  BOOST_TEST_REQUIRE(static_cast<index_t>(prompt.size()) == request.context_length);
  BOOST_TEST(prompt.front() == v.bos);
  std::map<std::int32_t, int> key_count;
  const index_t m = request.value_tokens;
  const auto values_at = [&](index_t t, index_t n) {
    for (index_t i = 0; i < n; ++i)
      if (!v.values.contains(at(t + i))) return false;
    return true;
  };
  index_t t = example.haystack.begin;
  BOOST_TEST(t == 1);
  switch (request.kind) {
    case me::task_kind::needle:
    case me::task_kind::multikey_needle:
    case me::task_kind::multivalue_needle:
    case me::task_kind::passkey: {
      const bool passkey = request.kind == me::task_kind::passkey;
      while (t < example.haystack.end) {
        if (passkey && at(t) == v.separator) {
          BOOST_TEST_REQUIRE(values_at(t + 1, request.passkey_digits));
          BOOST_TEST(at(t + 1) != v.values.first);  // no leading zero
          t += 1 + request.passkey_digits;
        } else if (!passkey && v.keys.contains(at(t))) {
          ++key_count[at(t)];
          BOOST_TEST_REQUIRE(at(t + 1) == v.separator);
          BOOST_TEST_REQUIRE(values_at(t + 2, m));
          t += 2 + m;
        } else {
          BOOST_TEST_REQUIRE(v.filler.contains(at(t)), "id " << at(t) << " at " << t << " is neither filler nor a needle");
          ++t;
        }
      }
      BOOST_TEST(t == example.haystack.end);  // no needle runs past the haystack
      BOOST_TEST(at(t) == v.query);
      if (passkey) {
        BOOST_TEST(at(t + 1) == v.separator);
        BOOST_TEST(t + 2 == request.context_length);
      } else {
        BOOST_TEST(v.keys.contains(at(t + 1)));
        BOOST_TEST(at(t + 2) == v.separator);
        BOOST_TEST(t + 3 == request.context_length);
      }
      break;
    }
    case me::task_kind::mqar: {
      std::map<std::int32_t, std::int32_t> value_of;
      for (std::int32_t p = 0; p < request.mqar_pairs; ++p, t += 2) {
        BOOST_TEST_REQUIRE(v.keys.contains(at(t)));
        BOOST_TEST_REQUIRE(v.values.contains(at(t + 1)));
        ++key_count[at(t)];
        value_of[at(t)] = at(t + 1);
      }
      std::set<std::int32_t> asked;
      while (t < request.context_length - 1) {
        if (v.keys.contains(at(t))) {
          BOOST_TEST(asked.insert(at(t)).second);
          BOOST_TEST_REQUIRE(value_of.count(at(t)) == 1u);
          BOOST_TEST(at(t + 1) == value_of[at(t)]);
          t += 2;
        } else {
          BOOST_TEST_REQUIRE(v.filler.contains(at(t)));
          ++t;
        }
      }
      BOOST_TEST_REQUIRE(t == request.context_length - 1);  // the last query key ends the prompt
      BOOST_TEST(asked.insert(at(t)).second);
      BOOST_TEST(static_cast<std::int32_t>(asked.size()) == request.mqar_pairs);  // every key asked once
      BOOST_TEST(example.answer == std::vector<std::int32_t>{value_of[at(t)]});
      break;
    }
    case me::task_kind::multidoc_qa: {
      std::int32_t documents = 0;
      while (t < example.haystack.end) {
        BOOST_TEST_REQUIRE(at(t) == v.separator);
        BOOST_TEST_REQUIRE(v.keys.contains(at(t + 1)));
        ++key_count[at(t + 1)];
        ++documents;
        index_t end = t + 2;
        while (end < example.haystack.end && at(end) != v.separator) ++end;
        index_t value_ids = 0;
        for (index_t i = t + 2; i < end; ++i) {
          if (v.values.contains(at(i))) {
            BOOST_TEST((value_ids == 0 || v.values.contains(at(i - 1))));  // one contiguous value
            ++value_ids;
          } else {
            BOOST_TEST_REQUIRE(v.filler.contains(at(i)));
          }
        }
        BOOST_TEST(value_ids == m);
        t = end;
      }
      BOOST_TEST(documents == request.documents);
      BOOST_TEST(at(t) == v.query);
      BOOST_TEST(at(t + 2) == v.separator);
      break;
    }
  }
  return key_count;
}

// Text mode: bytes -> ids 3..258 (0: BOS), so decoding is exact.
me::text_tokenizer byte_tokenizer() {
  me::text_tokenizer tokenizer;
  tokenizer.bos = 0;
  tokenizer.encode = [](std::string_view text) {
    std::vector<std::int32_t> ids;
    for (const char c : text) ids.push_back(3 + static_cast<std::int32_t>(static_cast<unsigned char>(c)));
    return ids;
  };
  return tokenizer;
}

std::string decode(const std::vector<std::int32_t>& ids, index_t begin = 0, index_t end = -1) {
  if (end < 0) end = static_cast<index_t>(ids.size());
  std::string text;
  for (index_t t = begin; t < end; ++t) {
    const std::int32_t id = ids[static_cast<std::size_t>(t)];
    if (id >= 3) text.push_back(static_cast<char>(static_cast<unsigned char>(id - 3)));
  }
  return text;
}

std::vector<std::string> numbers_in(const std::string& text) {
  std::vector<std::string> numbers;
  std::string current;
  for (const char c : text + " ") {
    if (c >= '0' && c <= '9') {
      current.push_back(c);
    } else if (!current.empty()) {
      numbers.push_back(current);
      current.clear();
    }
  }
  return numbers;
}

const std::vector<double> depths{0.0, 0.1, 0.25, 1.0 / 3.0, 0.5, 0.7, 0.9, 1.0};

}  // namespace

BOOST_AUTO_TEST_SUITE(tasks)

BOOST_AUTO_TEST_CASE(task_names_round_trip) {
  BOOST_TEST(me::all_tasks().size() == 6u);
  for (const me::task_kind kind : me::all_tasks()) BOOST_TEST((me::parse_task(me::to_string(kind)) == kind));
  BOOST_CHECK_EXCEPTION(me::parse_task("haystack"), meap::error,
                        error_says("meap::eval::parse_task", "task",
                                   {"\"haystack\"", "needle, multikey_needle, multivalue_needle, passkey, mqar, multidoc_qa"}));
}

BOOST_AUTO_TEST_CASE(same_request_same_example_and_other_rows_or_seeds_differ) {
  const auto vocabulary = test_vocabulary();
  const auto tokenizer = byte_tokenizer();
  for (const me::task_kind kind : me::all_tasks()) {
    BOOST_TEST_CONTEXT(me::to_string(kind)) {
      const auto request = request_for(kind, 120, 0.3, 5);
      BOOST_TEST(same(me::make_example(request, vocabulary), me::make_example(request, vocabulary)));
      auto other_row = request;
      other_row.row = 6;
      BOOST_TEST(!same(me::make_example(request, vocabulary), me::make_example(other_row, vocabulary)));
      auto other_seed = request;
      other_seed.seed = 8;
      BOOST_TEST(!same(me::make_example(request, vocabulary), me::make_example(other_seed, vocabulary)));

      auto text = request;
      text.context_length = 2000;
      BOOST_TEST(same(me::make_example(text, tokenizer), me::make_example(text, tokenizer)));
      auto text_row = text;
      text_row.row = 6;
      BOOST_TEST(!same(me::make_example(text, tokenizer), me::make_example(text_row, tokenizer)));
    }
  }
}

BOOST_AUTO_TEST_CASE(a_row_asks_the_same_thing_at_every_length_and_depth) {
  // Keys and values are drawn before the layout, so a sweep moves the needle and nothing else.
  const auto vocabulary = test_vocabulary();
  for (const me::task_kind kind : {me::task_kind::needle, me::task_kind::multikey_needle, me::task_kind::passkey}) {
    const auto reference = me::make_example(request_for(kind, 300, 0.5, 3), vocabulary);
    for (const index_t length : {index_t{100}, index_t{1000}})
      for (const double depth : depths) {
        const auto example = me::make_example(request_for(kind, length, depth, 3), vocabulary);
        BOOST_TEST(example.answer == reference.answer);
        BOOST_TEST(example.prompt[example.prompt.size() - 2] == reference.prompt[reference.prompt.size() - 2]);
      }
  }
}

BOOST_AUTO_TEST_CASE(id_prompts_have_the_exact_length_and_every_id_in_its_place) {
  const auto vocabulary = test_vocabulary();
  for (const me::task_kind kind : me::all_tasks()) {
    const index_t least = minimum_length(kind);
    for (index_t length = least; length < least + 14; ++length)
      for (const index_t longer : {index_t{0}, index_t{200}, index_t{1000}})
        for (const double depth : depths)
          for (std::uint64_t row = 0; row < 3; ++row) {
            BOOST_TEST_CONTEXT(me::to_string(kind) << " length " << length + longer << " depth " << depth << " row "
                                                   << row) {
              const auto request = request_for(kind, length + longer, depth, row);
              const auto example = me::make_example(request, vocabulary);
              BOOST_TEST((example.kind == kind));
              const auto keys = check_layout(request, vocabulary, example);
              for (const std::int32_t id : example.answer) BOOST_TEST(vocabulary.values.contains(id));
              for (const auto& span : example.evidence) {
                BOOST_TEST(span.begin >= example.haystack.begin);
                BOOST_TEST(span.end <= example.haystack.end);
              }
              // No key reused within a row: distinct keys for distinct needles / pairs / documents.
              if (kind == me::task_kind::multivalue_needle) {
                BOOST_TEST(keys.size() == 1u);
                BOOST_TEST(keys.begin()->second == request.needle_values);
              } else {
                for (const auto& [key, count] : keys) BOOST_TEST(count == 1, "key " << key << " occurs " << count << " times");
              }
              const std::map<me::task_kind, std::size_t> expected_keys{
                  {me::task_kind::needle, 1},      {me::task_kind::multikey_needle, 4}, {me::task_kind::multivalue_needle, 1},
                  {me::task_kind::passkey, 0},     {me::task_kind::mqar, 8},            {me::task_kind::multidoc_qa, 10}};
              BOOST_TEST(keys.size() == expected_keys.at(kind));
            }
          }
  }
}

BOOST_AUTO_TEST_CASE(the_needle_sits_at_the_requested_depth) {
  const auto vocabulary = test_vocabulary();
  for (const me::task_kind kind : {me::task_kind::needle, me::task_kind::multikey_needle,
                                   me::task_kind::multivalue_needle, me::task_kind::passkey}) {
    for (const index_t length : {minimum_length(kind), minimum_length(kind) + 1, index_t{64}, index_t{257},
                                 index_t{1024}, index_t{4096}})
      for (const double depth : depths) {
        BOOST_TEST_CONTEXT(me::to_string(kind) << " length " << length << " depth " << depth) {
          const auto request = request_for(kind, length, depth, 11);
          const auto example = me::make_example(request, vocabulary);
          const index_t size = needle_size(kind);
          const index_t room = example.haystack.size() - size;
          const index_t expected = static_cast<index_t>(std::llround(depth * static_cast<double>(room)));
          bool found = false;  // multivalue: one of its needles is the one placed by depth
          for (const auto& span : example.evidence) {
            BOOST_TEST(span.size() == size);
            found = found || span.begin - example.haystack.begin == expected;
          }
          BOOST_TEST(found, "no needle at offset " << expected << " of a haystack of " << example.haystack.size());
          BOOST_TEST(example.depth == (room > 0 ? static_cast<double>(expected) / static_cast<double>(room) : 0.0));

          const auto& prompt = example.prompt;
          const auto& needle = example.evidence.front();
          if (kind == me::task_kind::passkey) {
            const std::vector<std::int32_t> digits(prompt.begin() + needle.begin + 1, prompt.begin() + needle.end);
            BOOST_TEST(digits == example.answer);
          } else {
            // The question's key is the needle's key, and the answer is what follows its separator.
            BOOST_TEST(prompt[static_cast<std::size_t>(needle.begin)] == prompt[prompt.size() - 2]);
            std::vector<std::int32_t> values;
            for (const auto& span : example.evidence) values.insert(values.end(), prompt.begin() + span.begin + 2, prompt.begin() + span.end);
            BOOST_TEST(values == example.answer);
          }
        }
      }
  }
}

BOOST_AUTO_TEST_CASE(the_gold_document_sits_at_the_requested_depth) {
  const auto vocabulary = test_vocabulary();
  for (const std::int32_t documents : {1, 2, 5, 10, 20})
    for (const index_t length : {index_t{1 + 4 * 20 + 3}, index_t{300}, index_t{2000}})
      for (const double depth : depths) {
        BOOST_TEST_CONTEXT(documents << " documents, length " << length << " depth " << depth) {
          auto request = request_for(me::task_kind::multidoc_qa, length, depth, 2);
          request.documents = documents;
          const auto example = me::make_example(request, vocabulary);
          check_layout(request, vocabulary, example);
          const auto gold = std::llround(depth * (documents - 1));
          // Documents are equal in length, the first (haystack % D) one longer.
          const index_t haystack = example.haystack.size();
          const index_t begin =
              example.haystack.begin + gold * (haystack / documents) + std::min<index_t>(gold, haystack % documents);
          BOOST_TEST_REQUIRE(example.evidence.size() == 1u);
          BOOST_TEST(example.evidence[0].begin == begin);
          BOOST_TEST(example.depth == (documents > 1 ? static_cast<double>(gold) / (documents - 1) : 0.0));
          const auto& prompt = example.prompt;
          BOOST_TEST(prompt[static_cast<std::size_t>(begin + 1)] == prompt[prompt.size() - 2]);  // its title is asked
          const auto answer_at = std::search(prompt.begin() + begin, prompt.begin() + example.evidence[0].end,
                                             example.answer.begin(), example.answer.end());
          BOOST_TEST((answer_at != prompt.begin() + example.evidence[0].end));
        }
      }
}

BOOST_AUTO_TEST_CASE(mqar_follows_zoology_and_its_inline_targets_point_at_the_values) {
  const auto vocabulary = test_vocabulary();
  for (const std::int32_t pairs : {1, 2, 8, 16})
    for (const index_t extra : {index_t{0}, index_t{1}, index_t{2}, index_t{37}, index_t{400}}) {
      auto request = request_for(me::task_kind::mqar, 1 + 4 * pairs - 1 + extra, 0.5, static_cast<std::uint64_t>(extra));
      request.mqar_pairs = pairs;
      const auto example = me::make_example(request, vocabulary);
      check_layout(request, vocabulary, example);
      const auto& prompt = example.prompt;
      BOOST_TEST(example.inline_targets.size() == static_cast<std::size_t>(pairs - 1));
      for (const auto& [position, id] : example.inline_targets) {
        BOOST_TEST(vocabulary.keys.contains(prompt[static_cast<std::size_t>(position)]));
        BOOST_TEST(prompt[static_cast<std::size_t>(position + 1)] == id);
        BOOST_TEST(position >= 1 + 2 * pairs);  // in the query region, not the key-value block
      }
      BOOST_TEST_REQUIRE(example.evidence.size() == 1u);
      const auto& pair = example.evidence[0];
      BOOST_TEST(pair.size() == 2);
      BOOST_TEST(prompt[static_cast<std::size_t>(pair.begin)] == prompt.back());
      BOOST_TEST(prompt[static_cast<std::size_t>(pair.begin + 1)] == example.answer[0]);
      BOOST_TEST(example.depth == -1.0);
    }

  // The power law: with a = 0.01 the queries crowd the start of the region; a = 1 spreads them.
  const auto mean_gap = [&](double power_a) {
    double total = 0.0;
    int count = 0;
    for (std::uint64_t row = 0; row < 200; ++row) {
      auto request = request_for(me::task_kind::mqar, 1 + 16 + 400, 0.5, row);
      request.mqar_power_a = power_a;
      for (const auto& target : me::make_example(request, vocabulary).inline_targets) {
        total += static_cast<double>(target.first - 17);
        ++count;
      }
    }
    return total / count;
  };
  const double crowded = mean_gap(0.01);
  const double uniform = mean_gap(1.0);
  BOOST_TEST_MESSAGE("mean query offset: a = 0.01 -> " << crowded << ", a = 1 -> " << uniform);
  BOOST_TEST(crowded < 0.6 * uniform);
  BOOST_TEST(uniform > 150.0);  // about half of the 400-token region
}

BOOST_AUTO_TEST_CASE(default_vocabulary_serves_every_task_and_validates) {
  for (const std::int32_t reserved : {0, 3}) {
    const std::int32_t least = reserved + 62;
    const auto vocabulary = me::default_id_vocabulary(least, reserved);
    BOOST_CHECK_NO_THROW(vocabulary.validate(least));
    BOOST_TEST(vocabulary.query >= reserved);
    BOOST_TEST(vocabulary.keys.count == vocabulary.values.count);  // MQAR's two halves
    for (const me::task_kind kind : me::all_tasks())
      BOOST_CHECK_NO_THROW(me::make_example(request_for(kind, minimum_length(kind) + 50), vocabulary));
    BOOST_CHECK_EXCEPTION(me::default_id_vocabulary(least - 1, reserved), meap::error,
                          error_says("meap::eval::default_id_vocabulary", "model_vocab",
                                     {"at least " + std::to_string(least)}));
  }
  const auto big = me::default_id_vocabulary(32000, 3);
  BOOST_CHECK_NO_THROW(big.validate(32000));
  BOOST_TEST(big.filler.end() == 32000);
  BOOST_CHECK_EXCEPTION(me::default_id_vocabulary(100, -1), meap::error, error_says("reserved", {"-1"}));
}

BOOST_AUTO_TEST_CASE(text_mode_round_trips_through_a_byte_tokenizer) {
  const auto tokenizer = byte_tokenizer();
  for (const me::task_kind kind : me::all_tasks())
    for (const index_t length : {index_t{1500}, index_t{3000}, index_t{6000}})
      for (const double depth : {0.0, 0.5, 1.0}) {
        BOOST_TEST_CONTEXT(me::to_string(kind) << " length " << length << " depth " << depth) {
          const auto request = request_for(kind, length, depth, 4);
          const auto example = me::make_example(request, tokenizer);
          const auto size = static_cast<index_t>(example.prompt.size());
          // At most the length, short of it by less than a noise word (" yellow."), per document.
          const index_t slack = kind == me::task_kind::multidoc_qa ? 8 * request.documents : 8;
          BOOST_TEST(size <= length);
          BOOST_TEST(size > length - slack);
          BOOST_TEST(example.prompt.front() == tokenizer.bos);

          const std::string prompt = decode(example.prompt);
          const std::string answer = decode(example.answer);
          BOOST_TEST(prompt.find("The grass is green.") != std::string::npos);
          const auto numbers = numbers_in(answer);
          BOOST_TEST_REQUIRE(!numbers.empty());
          for (const auto& number : numbers) BOOST_TEST(prompt.find(number) != std::string::npos, number);
          std::string evidence;
          for (const auto& span : example.evidence) evidence += decode(example.prompt, span.begin, span.end);
          BOOST_TEST(numbers_in(evidence).size() >= numbers.size());
          for (const auto& number : numbers) BOOST_TEST(evidence.find(number) != std::string::npos, number);
          if (kind == me::task_kind::multivalue_needle) BOOST_TEST(numbers.size() == 4u);
          if (kind == me::task_kind::passkey) BOOST_TEST(numbers[0].size() == 5u);

          for (const auto& [position, id] : example.inline_targets)
            BOOST_TEST(example.prompt[static_cast<std::size_t>(position + 1)] == id);
          if (kind == me::task_kind::mqar) {
            BOOST_TEST(example.inline_targets.size() == 7u * 8u);  // 7 earlier queries x " 1234567"
            BOOST_TEST(prompt.substr(prompt.size() - 1) == ":");
          }
          if (kind == me::task_kind::needle || kind == me::task_kind::passkey) {
            // Between noise sentences, at most one sentence from the requested offset.
            const index_t room = example.haystack.size() - example.evidence[0].size();
            const double offset = static_cast<double>(example.evidence[0].begin - example.haystack.begin);
            BOOST_TEST(std::abs(offset - depth * static_cast<double>(room)) <= 23.0);
            BOOST_TEST(example.depth == offset / static_cast<double>(room));
          }
        }
      }
}

BOOST_AUTO_TEST_CASE(text_keys_are_never_reused_within_a_row) {
  const auto tokenizer = byte_tokenizer();
  auto request = request_for(me::task_kind::mqar, 6000, 0.5, 9);
  request.mqar_pairs = 64;
  const std::string prompt = decode(me::make_example(request, tokenizer).prompt);
  // The key-value block: " key: 1234567." x 64, right after the instruction.
  std::set<std::string> keys;
  for (std::size_t colon = prompt.find(':'); colon != std::string::npos; colon = prompt.find(':', colon + 1)) {
    const std::size_t space = prompt.rfind(' ', colon);
    keys.insert(prompt.substr(space + 1, colon - space - 1));
  }
  BOOST_TEST(keys.size() == 64u);  // every key asked again with the same spelling, none shared
}

BOOST_AUTO_TEST_CASE(bad_requests_are_rejected_naming_the_argument) {
  const auto vocabulary = test_vocabulary();
  const auto tokenizer = byte_tokenizer();
  const auto rejects = [&](const me::task_request& request, const std::string& argument,
                           const std::vector<std::string>& fragments) {
    BOOST_TEST_CONTEXT(argument) {
      BOOST_CHECK_EXCEPTION(me::make_example(request, vocabulary), meap::error,
                            error_says(make_example, argument, fragments));
    }
  };
  for (const me::task_kind kind : me::all_tasks()) {
    BOOST_TEST_CONTEXT(me::to_string(kind)) {
      const index_t least = minimum_length(kind);
      BOOST_CHECK_NO_THROW(me::make_example(request_for(kind, least), vocabulary));
      rejects(request_for(kind, least - 1), "request.context_length", {std::to_string(least - 1), "at least " + std::to_string(least)});
    }
  }
  rejects(request_for(me::task_kind::needle, 0), "request.context_length", {"= 0"});
  rejects(request_for(me::task_kind::needle, (index_t{1} << 30) + 1), "request.context_length", {"1073741824"});
  for (const double depth : {-0.01, 1.01, std::numeric_limits<double>::quiet_NaN()})
    rejects(request_for(me::task_kind::needle, 100, depth), "request.depth", {"[0, 1]"});
  rejects(request_for(me::task_kind::mqar, 100, 2.0), "request.depth", {"= 2"});  // checked even where unused

  auto request = request_for(me::task_kind::needle, 100);
  request.value_tokens = 0;
  rejects(request, "request.value_tokens", {"= 0"});
  request = request_for(me::task_kind::multikey_needle, 100);
  request.needle_keys = 0;
  rejects(request, "request.needle_keys", {"= 0"});
  request = request_for(me::task_kind::multivalue_needle, 100);
  request.needle_values = -2;
  rejects(request, "request.needle_values", {"= -2"});
  request = request_for(me::task_kind::passkey, 100);
  request.passkey_digits = 19;
  rejects(request, "request.passkey_digits", {"= 19", "1 to 18"});
  request = request_for(me::task_kind::mqar, 100);
  request.mqar_pairs = 0;
  rejects(request, "request.mqar_pairs", {"= 0"});
  for (const double power_a : {0.0, -1.0, std::numeric_limits<double>::infinity()}) {
    request = request_for(me::task_kind::mqar, 100);
    request.mqar_power_a = power_a;
    rejects(request, "request.mqar_power_a", {"positive"});
  }
  request = request_for(me::task_kind::multidoc_qa, 100);
  request.documents = 0;
  rejects(request, "request.documents", {"= 0"});

  // More distinct keys or values than the vocabulary's ranges hold.
  request = request_for(me::task_kind::multikey_needle, 1000);
  request.needle_keys = vocabulary.keys.count + 1;
  rejects(request, "vocabulary.keys", {"at least " + std::to_string(vocabulary.keys.count + 1), "multikey_needle"});
  request = request_for(me::task_kind::multivalue_needle, 4000);
  request.needle_values = vocabulary.values.count;  // x 2 value tokens
  rejects(request, "vocabulary.values", {"at least " + std::to_string(2 * vocabulary.values.count)});
  request = request_for(me::task_kind::mqar, 1000);
  request.mqar_pairs = vocabulary.keys.count;
  BOOST_CHECK_NO_THROW(me::make_example(request, vocabulary));  // every key once: still fits

  // Text mode: the same request checks, the tokenizer's, and a minimum that depends on it.
  BOOST_CHECK_EXCEPTION(me::make_example(request_for(me::task_kind::needle, 100, 1.5), tokenizer), meap::error,
                        error_says(make_example, "request.depth", {"1.5"}));
  request = request_for(me::task_kind::mqar, 100000);
  request.mqar_pairs = 1025;
  BOOST_CHECK_EXCEPTION(me::make_example(request, tokenizer), meap::error,
                        error_says(make_example, "request.mqar_pairs", {"1024"}));
  BOOST_CHECK_EXCEPTION(me::make_example(request_for(me::task_kind::needle, 100), tokenizer), meap::error,
                        error_says(make_example, "request.context_length", {"= 100", "with this tokenizer"}));
  BOOST_CHECK_EXCEPTION(me::make_example(request_for(me::task_kind::needle, 1000), me::text_tokenizer{}), meap::error,
                        error_says(make_example, "tokenizer.encode", {"a function"}));
  me::text_tokenizer silent = tokenizer;
  silent.encode = [](std::string_view) { return std::vector<std::int32_t>{}; };
  BOOST_CHECK_EXCEPTION(me::make_example(request_for(me::task_kind::needle, 1000), silent), meap::error,
                        error_says(make_example, "tokenizer.encode", {"at least one id"}));
  me::text_tokenizer negative = tokenizer;
  negative.encode = [](std::string_view) { return std::vector<std::int32_t>{5, -1}; };
  BOOST_CHECK_EXCEPTION(me::make_example(request_for(me::task_kind::needle, 1000), negative), meap::error,
                        error_says(make_example, "tokenizer.encode", {">= 0"}));
  me::text_tokenizer bad_bos = tokenizer;
  bad_bos.bos = -2;
  BOOST_CHECK_EXCEPTION(me::make_example(request_for(me::task_kind::needle, 1000), bad_bos), meap::error,
                        error_says(make_example, "tokenizer.bos", {"-2"}));
}

BOOST_AUTO_TEST_CASE(bad_vocabularies_are_rejected_naming_the_field) {
  const auto good = test_vocabulary();
  const std::int32_t v = 200;
  constexpr const char* validate = "meap::eval::id_vocabulary::validate";
  BOOST_CHECK_NO_THROW(good.validate(v));
  BOOST_CHECK_EXCEPTION(good.validate(v - 1), meap::error,
                        error_says(validate, "filler", {describe(good.filler), "inside [0, 199)"}));
  BOOST_CHECK_EXCEPTION(good.validate(0), meap::error, error_says(validate, "model_vocab", {"= 0"}));

  const auto rejects = [&](me::id_vocabulary vocabulary, const std::string& field,
                           const std::vector<std::string>& fragments) {
    BOOST_TEST_CONTEXT(field) {
      BOOST_CHECK_EXCEPTION(vocabulary.validate(v), meap::error, error_says(validate, field, fragments));
      // make_example checks the same, naming the field as vocabulary.<field>.
      BOOST_CHECK_EXCEPTION(me::make_example(request_for(me::task_kind::needle, 100), vocabulary), meap::error,
                            error_says(make_example, "vocabulary." + field, fragments));
    }
  };
  auto vocabulary = good;
  vocabulary.query = -1;
  rejects(vocabulary, "query", {"= -1", "marker"});
  vocabulary = good;
  vocabulary.separator = good.query;
  rejects(vocabulary, "separator", {"different from query"});
  vocabulary = good;
  vocabulary.bos = good.separator;
  rejects(vocabulary, "bos", {"different from query and separator"});
  vocabulary = good;
  vocabulary.bos = 250;
  BOOST_CHECK_EXCEPTION(vocabulary.validate(v), meap::error, error_says(validate, "bos", {"= 250", "[0, 200)"}));
  vocabulary = good;
  vocabulary.keys.count = 0;
  rejects(vocabulary, "keys", {"at least 1 id"});
  vocabulary = good;
  vocabulary.values.count = 9;
  rejects(vocabulary, "values", {"at least 10 ids"});
  vocabulary = good;
  vocabulary.filler.first = -3;
  rejects(vocabulary, "filler", {"[-3, "});
  vocabulary = good;
  vocabulary.values.first = good.keys.first + 1;
  rejects(vocabulary, "values", {"disjoint from keys " + describe(good.keys)});
  vocabulary = good;
  vocabulary.filler = good.values;
  rejects(vocabulary, "values", {"disjoint from filler"});
  vocabulary = good;
  vocabulary.query = good.filler.first + 2;
  rejects(vocabulary, "query", {"outside filler"});
  vocabulary = good;
  vocabulary.separator = good.keys.first;
  rejects(vocabulary, "separator", {"outside keys"});
}

BOOST_AUTO_TEST_SUITE_END()
