// meap/eval/tasks.hpp: deterministic retrieval tasks (RULER's needles and passkey, Zoology's MQAR,
// lost-in-the-middle multi-document QA) over any vocabulary: token ids the caller chooses, or text
// through the caller's tokenizer.
//
//   enum class task_kind { needle, multikey_needle, multivalue_needle, passkey, mqar, multidoc_qa };
//   std::string_view to_string(task_kind);
//   task_kind parse_task(std::string_view name);             // meap::error naming 'task'
//   const std::vector<task_kind>& all_tasks();
//   struct id_range { first, count; end(); contains(id); };  // [first, first + count)
//   struct id_vocabulary { bos, query, separator; id_range filler, keys, values;
//                          void validate(std::int32_t model_vocab) const; };
//   id_vocabulary default_id_vocabulary(std::int32_t model_vocab, std::int32_t reserved);
//   struct text_tokenizer { std::function<std::vector<std::int32_t>(std::string_view)> encode; bos; };
//   struct task_request { kind, context_length, depth, seed, row, + per-task knobs };
//   struct token_span { begin, end; size(); };
//   struct task_example { kind, prompt, answer, evidence, inline_targets, haystack, depth };
//   task_example make_example(const task_request&, const id_vocabulary&);
//   task_example make_example(const task_request&, const text_tokenizer&);
//
// An example is a pure function of the request: (seed, kind, row) choose the random stream, and
// the keys and values are drawn from it first, before anything that depends on context_length or
// depth. So row r asks the same key for the same value at every length and depth, and only the
// haystack around it changes: a depth x length sweep compares like with like.
//
// Id mode (prompt length == context_length exactly; `[bos]` only when vocabulary.bos >= 0; K a key
// id, v a value of request.value_tokens ids, f filler ids, SEP/QUERY the markers):
//   needle             [bos] f..f (K SEP v) f..f                           QUERY K SEP -> v
//   multikey_needle    as needle with request.needle_keys needles of distinct keys, one queried
//   multivalue_needle  request.needle_values needles (K SEP v_i) of one key -> every v_i, in the
//                      order they appear in the prompt, concatenated
//   passkey            [bos] f..f (SEP d1..dn) f..f                        QUERY SEP -> d1..dn
//                      (digit d is the id values.first + d; the first digit is never 0)
//   mqar               [bos] K1 v1 .. KN vN, then filler with the keys asked again at power-law
//                      gaps, each followed by its value (inline_targets), the last one -> its value
//                      (single-token keys and values: Zoology's layout)
//   multidoc_qa        [bos] D documents (SEP K_j f..v_j..f), the gold one at
//                      round(depth * (D - 1))                              QUERY K_gold SEP -> v_gold
// The haystack is everything between [bos] and the question. The needle that carries the answer
// (needle 0) starts exactly round(depth * (haystack - needle)) tokens into it; distractor needles
// sit at random places that overlap neither it nor each other.
//
// Text mode writes RULER's sentences ("One of the special magic numbers for {key} is: {value}.",
// the noise "The grass is green. The sky is blue. ..." repeated), keys as adjective-noun words and
// values as 7-digit numbers, and encodes it in pieces (instruction, each noise sentence, each
// needle, the question), so every span is exact whatever the tokenizer; the pieces read as one
// text when joined. The prompt is at most context_length tokens, filled with noise down to one
// word; needles go between noise sentences, at the boundary closest to the requested depth.
// `encode` must not add BOS or EOS (text_tokenizer::bos is prepended when >= 0).
#pragma once

#include <meap/core/dims.hpp>
#include <meap/core/error.hpp>
#include <meap/core/philox.hpp>
#include <meap/eval/token_span.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <limits>
#include <numeric>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace meap::eval {

enum class task_kind { needle, multikey_needle, multivalue_needle, passkey, mqar, multidoc_qa };

inline const std::vector<task_kind>& all_tasks() {
  static const std::vector<task_kind> tasks{task_kind::needle,  task_kind::multikey_needle, task_kind::multivalue_needle,
                                            task_kind::passkey, task_kind::mqar,            task_kind::multidoc_qa};
  return tasks;
}

inline std::string_view to_string(task_kind kind) {
  switch (kind) {
    case task_kind::needle: return "needle";
    case task_kind::multikey_needle: return "multikey_needle";
    case task_kind::multivalue_needle: return "multivalue_needle";
    case task_kind::passkey: return "passkey";
    case task_kind::mqar: return "mqar";
    case task_kind::multidoc_qa: return "multidoc_qa";
  }
  return "unknown";
}

inline task_kind parse_task(std::string_view name) {
  std::string names;
  for (const task_kind kind : all_tasks()) {
    if (to_string(kind) == name) return kind;
    names.append(names.empty() ? "" : ", ").append(to_string(kind));
  }
  throw_argument_error("meap::eval::parse_task", "task", "\"" + std::string(name) + "\"", "one of " + names);
}

struct id_range {
  std::int32_t first = 0;
  std::int32_t count = 0;

  // One past the last id, in 64 bits so that first + count cannot overflow.
  std::int64_t end() const { return std::int64_t{first} + count; }
  bool contains(std::int64_t id) const { return id >= first && id < end(); }
};

inline std::string describe(const id_range& range) {
  return "[" + std::to_string(range.first) + ", " + std::to_string(range.end()) + ")";
}

struct id_vocabulary;
namespace detail {
inline void check_vocabulary(const id_vocabulary& vocabulary, std::int64_t model_vocab, std::string_view function,
                             const std::string& prefix);
}  // namespace detail

// Caller-chosen ids. The markers are -1 (unset) until chosen: default_id_vocabulary carves a
// working set out of a model vocabulary.
struct id_vocabulary {
  std::int32_t bos = -1;        // -1: no BOS token
  std::int32_t query = -1;      // starts the question
  std::int32_t separator = -1;  // binds a key to its value in a needle, starts a document
  id_range filler;              // haystack noise
  id_range keys;                // needle keys, document titles, MQAR keys
  id_range values;              // needle values, passkey digits (values.first + digit), MQAR values

  // meap::error when an id lies outside [0, model_vocab), two markers coincide, a marker lies in
  // a range, two ranges overlap, or a range is empty (values: fewer than the 10 passkey digits).
  void validate(std::int32_t model_vocab) const {
    constexpr const char* function = "meap::eval::id_vocabulary::validate";
    check_argument(model_vocab > 0, function, "model_vocab", model_vocab, "a positive vocabulary size");
    detail::check_vocabulary(*this, model_vocab, function, "");
  }
};

// The haystack noise, and what text mode writes (RULER's noise haystack, split at its sentences
// so that needles can go between them).
inline constexpr std::array<std::string_view, 5> noise_sentences{
    " The grass is green.", " The sky is blue.", " The sun is yellow.", " Here we go.", " There and back again."};

struct text_tokenizer {
  std::function<std::vector<std::int32_t>(std::string_view)> encode;  // no BOS, no EOS
  std::int32_t bos = -1;                                              // -1: no BOS token
};

struct task_request {
  task_kind kind = task_kind::needle;
  index_t context_length = 0;  // id mode: the prompt's length exactly; text mode: at most this
  double depth = 0.5;          // where the answer's needle / the gold document sits, in [0, 1]
  std::uint64_t seed = 0;
  std::uint64_t row = 0;  // example index

  // Per-task knobs; every one is checked whatever the task, so a typo never passes silently.
  std::int32_t value_tokens = 2;    // id mode: ids per needle / document value
  std::int32_t needle_keys = 4;     // multikey_needle: needles, each its own key (RULER: 4)
  std::int32_t needle_values = 4;   // multivalue_needle: values under the one key (RULER: 4)
  std::int32_t passkey_digits = 5;  // passkey: digits of the number, 1 to 18
  std::int32_t mqar_pairs = 8;      // mqar: key-value pairs, all asked again (Zoology: 8)
  double mqar_power_a = 0.01;       // mqar: P(gap g) ~ a * (g + 1)^(a - 1); 1 = uniform (Zoology: 0.01)
  std::int32_t documents = 10;      // multidoc_qa: documents, one gold (lost in the middle: 10/20/30)
};

struct task_example {
  task_kind kind = task_kind::needle;
  std::vector<std::int32_t> prompt;  // what the model reads; ends right before the answer
  std::vector<std::int32_t> answer;  // what it must produce next
  // Where the answer is in the prompt, in prompt order: the queried needle, every needle of a
  // multivalue key, MQAR's pair "K v" in the key-value block, the gold document.
  std::vector<token_span> evidence;
  // Teacher-forced targets inside the prompt (MQAR's earlier queries): the prediction at input
  // position `first` must be `second`; prompt[first + 1] == second.
  std::vector<std::pair<index_t, std::int32_t>> inline_targets;
  // What depth is measured in: the filler and needles, the documents; MQAR: all after [bos] and
  // (text) the instruction.
  token_span haystack;
  // Depth realised: (start of the answer's needle - haystack.begin) / (haystack - needle), the
  // gold document's index / (D - 1) for multidoc_qa (0 when either denominator is 0); -1 for mqar.
  double depth = -1.0;
};

namespace detail {

inline constexpr const char* make_example_function = "meap::eval::make_example";
// Longest context accepted: next_below and the offsets stay in 32 bits.
inline constexpr index_t max_context_length = index_t{1} << 30;

inline void check_vocabulary(const id_vocabulary& vocabulary, std::int64_t model_vocab, std::string_view function,
                             const std::string& prefix) {
  const bool bounded = model_vocab < std::numeric_limits<std::int32_t>::max();
  const std::string inside = bounded ? "inside [0, " + std::to_string(model_vocab) + ")" : "of non-negative ids";
  const auto id_ok = [&](std::int32_t id) { return id >= 0 && id < model_vocab; };
  if (vocabulary.bos != -1)
    check_argument(id_ok(vocabulary.bos), function, prefix + "bos", vocabulary.bos, "-1 (no BOS) or an id " + inside);
  check_argument(id_ok(vocabulary.query), function, prefix + "query", vocabulary.query, "a marker id " + inside);
  check_argument(id_ok(vocabulary.separator), function, prefix + "separator", vocabulary.separator,
                 "a marker id " + inside);
  check_argument(vocabulary.separator != vocabulary.query, function, prefix + "separator", vocabulary.separator,
                 "an id different from query (" + std::to_string(vocabulary.query) + ")");
  if (vocabulary.bos != -1) {
    check_argument(vocabulary.bos != vocabulary.query && vocabulary.bos != vocabulary.separator, function,
                   prefix + "bos", vocabulary.bos, "an id different from query and separator");
  }

  const std::array<std::pair<const char*, const id_range*>, 3> ranges{
      {{"filler", &vocabulary.filler}, {"keys", &vocabulary.keys}, {"values", &vocabulary.values}}};
  for (const auto& [name, range] : ranges) {
    const std::int32_t least = range == &vocabulary.values ? 10 : 1;  // values hold the passkey's 10 digits
    check_argument(range->count >= least && range->first >= 0 && range->end() <= model_vocab, function,
                   prefix + name, describe(*range),
                   "a range of at least " + std::to_string(least) + (least == 1 ? " id " : " ids ") + inside);
  }
  for (std::size_t i = 0; i < ranges.size(); ++i) {
    for (std::size_t j = i + 1; j < ranges.size(); ++j) {
      const id_range& a = *ranges[i].second;
      const id_range& b = *ranges[j].second;
      check_argument(a.end() <= b.first || b.end() <= a.first, function, prefix + ranges[j].first, describe(b),
                     std::string("a range disjoint from ") + ranges[i].first + " " + describe(a));
    }
  }
  const std::array<std::pair<const char*, std::int32_t>, 3> markers{
      {{"bos", vocabulary.bos}, {"query", vocabulary.query}, {"separator", vocabulary.separator}}};
  for (const auto& [name, id] : markers) {
    if (id == -1) continue;
    for (const auto& [range_name, range] : ranges)
      check_argument(!range->contains(id), function, prefix + name, id,
                     std::string("a marker outside ") + range_name + " " + describe(*range));
  }
}

// Distinct ids of a request: keys and value ids each example draws (without replacement).
struct id_needs {
  std::int32_t keys = 0;
  std::int64_t values = 0;
};

inline id_needs ids_needed(const task_request& request) {
  const std::int64_t value_tokens = request.value_tokens;
  switch (request.kind) {
    case task_kind::needle: return {1, value_tokens};
    case task_kind::multikey_needle: return {request.needle_keys, request.needle_keys * value_tokens};
    case task_kind::multivalue_needle: return {1, request.needle_values * value_tokens};
    case task_kind::passkey: return {0, 10};
    case task_kind::mqar: return {request.mqar_pairs, request.mqar_pairs};
    case task_kind::multidoc_qa: return {request.documents, request.documents * value_tokens};
  }
  return {};
}

inline void check_request(const task_request& request, bool text_mode) {
  constexpr const char* function = make_example_function;
  check_argument(std::find(all_tasks().begin(), all_tasks().end(), request.kind) != all_tasks().end(), function,
                 "request.kind", static_cast<int>(request.kind), "a task_kind");
  check_argument(request.context_length > 0 && request.context_length <= max_context_length, function,
                 "request.context_length", request.context_length,
                 "a prompt length in tokens in [1, " + std::to_string(max_context_length) + "]");
  check_argument(std::isfinite(request.depth) && request.depth >= 0.0 && request.depth <= 1.0, function,
                 "request.depth", request.depth, "a depth in [0, 1] (0 = start of the haystack, 1 = end)");
  // Text keys are adjective-noun pairs from 32 x 32 words.
  const std::int32_t max_keys = text_mode ? 1024 : (1 << 20);
  const std::string key_limit = std::to_string(max_keys) + (text_mode ? " (the text keys)" : "");
  check_argument(request.value_tokens >= 1 && request.value_tokens <= 1024, function, "request.value_tokens",
                 request.value_tokens, "1 to 1024 ids per value");
  check_argument(request.needle_keys >= 1 && request.needle_keys <= max_keys, function, "request.needle_keys",
                 request.needle_keys, "1 to " + key_limit + " needles");
  check_argument(request.needle_values >= 1 && request.needle_values <= (1 << 20), function, "request.needle_values",
                 request.needle_values, "1 to 1048576 values");
  check_argument(request.passkey_digits >= 1 && request.passkey_digits <= 18, function, "request.passkey_digits",
                 request.passkey_digits, "1 to 18 digits");
  check_argument(request.mqar_pairs >= 1 && request.mqar_pairs <= max_keys, function, "request.mqar_pairs",
                 request.mqar_pairs, "1 to " + key_limit + " key-value pairs");
  check_argument(std::isfinite(request.mqar_power_a) && request.mqar_power_a > 0.0, function, "request.mqar_power_a",
                 request.mqar_power_a, "a positive, finite power-law exponent (1 = uniform gaps)");
  check_argument(request.documents >= 1 && request.documents <= max_keys, function, "request.documents",
                 request.documents, "1 to " + key_limit + " documents");
}

inline void check_long_enough(const task_request& request, index_t minimum, std::string_view why) {
  if (request.context_length < minimum)
    throw_argument_error(make_example_function, "request.context_length", request.context_length,
                         "at least " + std::to_string(minimum) + " tokens for " + std::string(to_string(request.kind)) +
                             " (" + std::string(why) + ")");
}

// The example's random stream: substream = task, stream = row. Nothing else feeds it.
inline philox_stream example_stream(const task_request& request) {
  return philox_stream(request.seed, request.row, static_cast<std::uint32_t>(request.kind));
}

inline std::int64_t draw_below(philox_stream& random, std::int64_t bound) {  // bound in [1, 2^32]
  return static_cast<std::int64_t>(random.next_below(static_cast<std::uint32_t>(bound)));
}

// `how_many` distinct integers of [0, count), in random order (partial Fisher-Yates; the map holds
// only the swapped positions, so a vocabulary of 100k ids costs nothing).
inline std::vector<std::int64_t> draw_distinct(philox_stream& random, std::int64_t count, std::int64_t how_many) {
  std::unordered_map<std::int64_t, std::int64_t> moved;
  const auto at = [&](std::int64_t i) {
    const auto found = moved.find(i);
    return found == moved.end() ? i : found->second;
  };
  std::vector<std::int64_t> drawn;
  drawn.reserve(static_cast<std::size_t>(how_many));
  for (std::int64_t i = 0; i < how_many; ++i) {
    const std::int64_t j = i + draw_below(random, count - i);
    const std::int64_t picked = at(j);
    moved[j] = at(i);
    drawn.push_back(picked);
  }
  return drawn;
}

inline std::vector<std::int32_t> draw_ids(philox_stream& random, const id_range& range, std::int64_t how_many) {
  std::vector<std::int32_t> ids;
  for (const std::int64_t offset : draw_distinct(random, range.count, how_many))
    ids.push_back(static_cast<std::int32_t>(range.first + offset));
  return ids;
}

// Passkey digits: the first never 0, so the number has exactly `digits` digits.
inline std::vector<std::int32_t> draw_digits(philox_stream& random, std::int32_t digits) {
  std::vector<std::int32_t> drawn;
  for (std::int32_t i = 0; i < digits; ++i)
    drawn.push_back(i == 0 ? 1 + static_cast<std::int32_t>(draw_below(random, 9))
                           : static_cast<std::int32_t>(draw_below(random, 10)));
  return drawn;
}

// `how_many` distinct gaps of [0, slots) with P(g) ~ (g + 1)^(a - 1), without replacement
// (Zoology's MQAR query positions), in increasing order.
inline std::vector<std::int64_t> draw_power_law_gaps(philox_stream& random, std::int64_t slots, std::int64_t how_many,
                                                     double power_a) {
  std::vector<double> weight(static_cast<std::size_t>(slots));
  for (std::int64_t g = 0; g < slots; ++g)
    weight[static_cast<std::size_t>(g)] = std::pow(static_cast<double>(g + 1), power_a - 1.0);
  std::vector<std::int64_t> gaps;
  for (std::int64_t n = 0; n < how_many; ++n) {
    // Summed afresh each draw: subtracting the taken weights would drift.
    const double total = std::accumulate(weight.begin(), weight.end(), 0.0);
    const double target = random.next_double() * total;
    double running = 0.0;
    std::int64_t chosen = -1;
    for (std::int64_t g = 0; g < slots; ++g) {
      const double w = weight[static_cast<std::size_t>(g)];
      if (w == 0.0) continue;
      chosen = g;  // the last untaken gap, should rounding leave target beyond the sum
      running += w;
      if (target < running) break;
    }
    weight[static_cast<std::size_t>(chosen)] = 0.0;
    gaps.push_back(chosen);
  }
  std::sort(gaps.begin(), gaps.end());
  return gaps;
}

inline index_t depth_offset(double depth, index_t room) {
  return static_cast<index_t>(std::llround(depth * static_cast<double>(room)));
}

inline double realised_depth(index_t offset, index_t room) {
  return room > 0 ? static_cast<double>(offset) / static_cast<double>(room) : 0.0;
}

// Offsets, within a haystack of `haystack` tokens, of `count` needles of `size` tokens: needle 0
// at `primary`, the others at random places overlapping neither it nor each other. Each distractor
// takes a side with probability proportional to the free room there; within a side the filler is
// split at sorted random points (stars and bars). Needs haystack >= (count + 1) * size when
// count > 1: then floor(left / size) + floor(right / size) >= count - 1.
inline std::vector<index_t> place_needles(philox_stream& random, index_t haystack, index_t size, std::int32_t count,
                                          index_t primary) {
  std::array<index_t, 2> side_begin{0, primary + size};
  std::array<index_t, 2> side_length{primary, haystack - primary - size};
  std::array<index_t, 2> free = side_length;
  std::array<std::vector<std::int32_t>, 2> side_needles;
  for (std::int32_t needle = 1; needle < count; ++needle) {
    const bool fits_left = free[0] >= size;
    const bool fits_right = free[1] >= size;
    const bool left = fits_left && (!fits_right || draw_below(random, free[0] + free[1]) < free[0]);
    const std::size_t side = left ? 0 : 1;
    free[side] -= size;
    side_needles[side].push_back(needle);
  }
  std::vector<index_t> offsets(static_cast<std::size_t>(count));
  offsets[0] = primary;
  for (std::size_t side = 0; side < 2; ++side) {
    const auto& needles = side_needles[side];
    const index_t fillers = side_length[side] - static_cast<index_t>(needles.size()) * size;
    std::vector<index_t> cuts;
    for (std::size_t i = 0; i < needles.size(); ++i) cuts.push_back(draw_below(random, fillers + 1));
    std::sort(cuts.begin(), cuts.end());
    for (std::size_t i = 0; i < needles.size(); ++i)
      offsets[static_cast<std::size_t>(needles[i])] = side_begin[side] + cuts[i] + static_cast<index_t>(i) * size;
  }
  return offsets;
}

inline void append(std::vector<std::int32_t>& to, const std::vector<std::int32_t>& tokens) {
  to.insert(to.end(), tokens.begin(), tokens.end());
}

// ----------------------------------------------------------------------------------------------
// Id mode

inline task_example id_needles(const task_request& request, const id_vocabulary& vocabulary, philox_stream& random) {
  const task_kind kind = request.kind;
  const std::int32_t count = kind == task_kind::multikey_needle     ? request.needle_keys
                             : kind == task_kind::multivalue_needle ? request.needle_values
                                                                    : 1;
  const std::int32_t value_length = kind == task_kind::passkey ? request.passkey_digits : request.value_tokens;

  // Draws that depend on neither length nor depth come first.
  std::vector<std::vector<std::int32_t>> needles(static_cast<std::size_t>(count));
  std::vector<std::vector<std::int32_t>> values(static_cast<std::size_t>(count));
  std::vector<std::int32_t> question;
  if (kind == task_kind::passkey) {
    for (const std::int32_t digit : draw_digits(random, request.passkey_digits))
      values[0].push_back(vocabulary.values.first + digit);
    needles[0] = {vocabulary.separator};
    question = {vocabulary.query, vocabulary.separator};
  } else {
    const auto keys = draw_ids(random, vocabulary.keys, kind == task_kind::multikey_needle ? count : 1);
    const auto value_ids = draw_ids(random, vocabulary.values, std::int64_t{count} * value_length);
    for (std::size_t i = 0; i < needles.size(); ++i) {
      needles[i] = {keys[kind == task_kind::multikey_needle ? i : 0], vocabulary.separator};
      values[i].assign(value_ids.begin() + static_cast<std::ptrdiff_t>(i) * value_length,
                       value_ids.begin() + static_cast<std::ptrdiff_t>(i + 1) * value_length);
    }
    question = {vocabulary.query, keys[0], vocabulary.separator};  // needle 0 is the one asked
  }
  for (std::size_t i = 0; i < needles.size(); ++i) append(needles[i], values[i]);

  const index_t size = static_cast<index_t>(needles[0].size());
  const index_t prefix = vocabulary.bos >= 0 ? 1 : 0;
  const index_t fixed = prefix + static_cast<index_t>(question.size());
  // A multi-needle haystack keeps one needle's worth of filler spare, so that the distractors fit
  // on the two sides of needle 0 wherever it sits.
  const index_t minimum_haystack = count == 1 ? size : (index_t{count} + 1) * size;
  check_long_enough(request, fixed + minimum_haystack,
                    std::to_string(count) + (count == 1 ? " needle" : " needles") + " of " + std::to_string(size) +
                        " tokens" + (count == 1 ? "" : " plus one needle's worth of filler") + ", " +
                        std::to_string(question.size()) + " of question" + (prefix ? ", BOS" : ""));

  const index_t haystack = request.context_length - fixed;
  const index_t primary = depth_offset(request.depth, haystack - size);
  const auto offsets = place_needles(random, haystack, size, count, primary);

  task_example example;
  example.kind = kind;
  auto& prompt = example.prompt;
  prompt.resize(static_cast<std::size_t>(request.context_length));
  if (prefix) prompt[0] = vocabulary.bos;
  for (index_t t = 0; t < haystack; ++t)
    prompt[static_cast<std::size_t>(prefix + t)] =
        vocabulary.filler.first + static_cast<std::int32_t>(draw_below(random, vocabulary.filler.count));
  for (std::size_t i = 0; i < needles.size(); ++i)
    std::copy(needles[i].begin(), needles[i].end(), prompt.begin() + static_cast<std::ptrdiff_t>(prefix + offsets[i]));
  std::copy(question.begin(), question.end(), prompt.begin() + static_cast<std::ptrdiff_t>(prefix + haystack));

  example.haystack = {prefix, prefix + haystack};
  example.depth = realised_depth(offsets[0], haystack - size);
  if (kind == task_kind::multivalue_needle) {
    // Every value is asked for, in the order the prompt shows them.
    std::vector<std::size_t> order(needles.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return offsets[a] < offsets[b]; });
    for (const std::size_t i : order) {
      append(example.answer, values[i]);
      example.evidence.push_back({prefix + offsets[i], prefix + offsets[i] + size});
    }
  } else {
    example.answer = values[0];
    example.evidence.push_back({prefix + offsets[0], prefix + offsets[0] + size});
  }
  return example;
}

// Zoology's MQAR: the pairs, then a query region of two-token slots aligned to the end of the
// prompt; the earlier queries take power-law gaps among all slots but the last, the answer's
// query takes the last slot, whose value is the answer.
inline task_example id_mqar(const task_request& request, const id_vocabulary& vocabulary, philox_stream& random) {
  const std::int64_t pairs = request.mqar_pairs;
  const auto keys = draw_ids(random, vocabulary.keys, pairs);
  const auto values = draw_ids(random, vocabulary.values, pairs);
  const std::int64_t asked = draw_below(random, pairs);
  std::vector<std::int64_t> earlier;  // the other pairs, in the random order they are asked
  for (const std::int64_t i : draw_distinct(random, pairs, pairs))
    if (i != asked) earlier.push_back(i);

  const index_t prefix = vocabulary.bos >= 0 ? 1 : 0;
  // The region needs one slot per query; its last slot's value falls just past the prompt.
  check_long_enough(request, prefix + 4 * pairs - 1,
                    std::to_string(pairs) + " key-value pairs and " + std::to_string(pairs) + " two-token queries" +
                        ", the last without its value" + (prefix ? ", BOS" : ""));

  const index_t region = request.context_length - prefix - 2 * pairs;
  const index_t slots = (region + 1) / 2;
  const index_t lead = region + 1 - 2 * slots;  // 1 when the region is even: one filler first
  const auto gaps = draw_power_law_gaps(random, slots - 1, pairs - 1, request.mqar_power_a);

  task_example example;
  example.kind = task_kind::mqar;
  auto& prompt = example.prompt;
  prompt.resize(static_cast<std::size_t>(request.context_length));
  if (prefix) prompt[0] = vocabulary.bos;
  for (std::int64_t i = 0; i < pairs; ++i) {
    prompt[static_cast<std::size_t>(prefix + 2 * i)] = keys[static_cast<std::size_t>(i)];
    prompt[static_cast<std::size_t>(prefix + 2 * i + 1)] = values[static_cast<std::size_t>(i)];
  }
  const index_t region_begin = prefix + 2 * pairs;
  for (index_t t = 0; t < region; ++t)
    prompt[static_cast<std::size_t>(region_begin + t)] =
        vocabulary.filler.first + static_cast<std::int32_t>(draw_below(random, vocabulary.filler.count));
  for (std::size_t q = 0; q < earlier.size(); ++q) {
    const index_t at = region_begin + lead + 2 * gaps[q];
    const auto pair = static_cast<std::size_t>(earlier[q]);
    prompt[static_cast<std::size_t>(at)] = keys[pair];
    prompt[static_cast<std::size_t>(at + 1)] = values[pair];
    example.inline_targets.emplace_back(at, values[pair]);
  }
  prompt.back() = keys[static_cast<std::size_t>(asked)];

  example.answer = {values[static_cast<std::size_t>(asked)]};
  example.evidence.push_back({prefix + 2 * asked, prefix + 2 * asked + 2});
  example.haystack = {prefix, request.context_length};
  example.depth = -1.0;
  return example;
}

inline task_example id_multidoc(const task_request& request, const id_vocabulary& vocabulary, philox_stream& random) {
  const std::int64_t documents = request.documents;
  const std::int32_t value_length = request.value_tokens;
  const auto keys = draw_ids(random, vocabulary.keys, documents);
  const auto value_ids = draw_ids(random, vocabulary.values, documents * value_length);
  const auto gold = static_cast<std::int64_t>(depth_offset(request.depth, documents - 1));

  const index_t prefix = vocabulary.bos >= 0 ? 1 : 0;
  const index_t question = 3;
  const index_t least_document = 2 + value_length;  // SEP, title key, value
  check_long_enough(request, prefix + documents * least_document + question,
                    std::to_string(documents) + " documents of at least " + std::to_string(least_document) +
                        " tokens (separator, title, value), 3 of question" + (prefix ? ", BOS" : ""));

  const index_t haystack = request.context_length - prefix - question;
  task_example example;
  example.kind = task_kind::multidoc_qa;
  auto& prompt = example.prompt;
  if (prefix) prompt.push_back(vocabulary.bos);
  for (std::int64_t d = 0; d < documents; ++d) {
    // Equal lengths, the first (haystack % documents) one token longer.
    const index_t length = haystack / documents + (d < haystack % documents ? 1 : 0);
    const index_t body = length - 2;
    const index_t value_at = draw_below(random, body - value_length + 1);
    const auto begin = static_cast<index_t>(prompt.size());
    prompt.push_back(vocabulary.separator);
    prompt.push_back(keys[static_cast<std::size_t>(d)]);
    for (index_t t = 0; t < body; ++t) {
      if (t >= value_at && t < value_at + value_length) {
        prompt.push_back(value_ids[static_cast<std::size_t>(d * value_length + (t - value_at))]);
      } else {
        prompt.push_back(vocabulary.filler.first + static_cast<std::int32_t>(draw_below(random, vocabulary.filler.count)));
      }
    }
    if (d == gold) example.evidence.push_back({begin, begin + length});
  }
  prompt.insert(prompt.end(), {vocabulary.query, keys[static_cast<std::size_t>(gold)], vocabulary.separator});

  example.answer.assign(value_ids.begin() + static_cast<std::ptrdiff_t>(gold * value_length),
                        value_ids.begin() + static_cast<std::ptrdiff_t>((gold + 1) * value_length));
  example.haystack = {prefix, prefix + haystack};
  example.depth = realised_depth(gold, documents - 1);
  return example;
}

// ----------------------------------------------------------------------------------------------
// Text mode

// Adjective-noun keys (RULER's "words" keys). Every key is written after a space and no noun is a
// prefix of another, so no key occurs inside another.
inline constexpr std::array<std::string_view, 32> key_adjectives{
    "amber", "brave", "calm",  "dusty", "eager",  "faint", "gentle", "hollow", "icy",    "jolly", "keen",
    "lively", "misty", "noble", "olive", "proud", "quiet", "rapid",  "silent", "tidy",   "urban", "vivid",
    "witty", "young", "zesty", "bold",  "crisp",  "dim",   "fierce", "grand",  "humble", "lucky"};
inline constexpr std::array<std::string_view, 32> key_nouns{
    "anchor", "badger", "canyon", "dolphin", "ember",  "falcon", "glacier", "harbor", "island", "jungle", "kettle",
    "lantern", "meadow", "nebula", "orchard", "pebble", "quartz", "river",  "summit", "tunnel", "valley", "willow",
    "zephyr", "beacon", "cactus", "desert",  "forest", "garden", "hammer", "lagoon", "mirror", "planet"};

inline std::vector<std::string> draw_text_keys(philox_stream& random, std::int64_t how_many) {
  std::vector<std::string> keys;
  for (const std::int64_t i : draw_distinct(random, 1024, how_many))
    keys.push_back(std::string(key_adjectives[static_cast<std::size_t>(i / 32)]) + "-" +
                   std::string(key_nouns[static_cast<std::size_t>(i % 32)]));
  return keys;
}

// Distinct 7-digit numbers (RULER's values).
inline std::vector<std::string> draw_numbers(philox_stream& random, std::int64_t how_many) {
  std::vector<std::string> numbers;
  for (const std::int64_t i : draw_distinct(random, 9000000, how_many)) numbers.push_back(std::to_string(1000000 + i));
  return numbers;
}

using token_ids = std::vector<std::int32_t>;

// The caller's encode, checked: every piece of text must give at least one non-negative id.
class piece_encoder {
 public:
  explicit piece_encoder(const text_tokenizer& tokenizer) : tokenizer_(tokenizer) {}

  token_ids operator()(std::string_view text) const {
    token_ids ids = tokenizer_.encode(text);
    const bool ok = !ids.empty() && std::all_of(ids.begin(), ids.end(), [](std::int32_t id) { return id >= 0; });
    check_argument(ok, make_example_function, "tokenizer.encode", "the ids of \"" + std::string(text) + "\"",
                   "at least one id for non-empty text, every id >= 0");
    return ids;
  }

 private:
  const text_tokenizer& tokenizer_;
};

// Noise text: whole sentences, cycling from the first, then the longest word prefix of the next
// sentence that still fits (the tail). Needles go between sentences; the tail always ends the
// noise, as a passage cut at its length would (lost in the middle's passages are 100-word cuts).
struct noise {
  std::vector<token_ids> sentences;
  token_ids tail;
};

// Each noise sentence encoded once per example.
class noise_filler {
 public:
  explicit noise_filler(const piece_encoder& encode) : encode_(encode) {
    for (const std::string_view sentence : noise_sentences) sentences_.push_back(encode_(sentence));
  }

  // At most `budget` tokens of noise, as many as fit.
  noise fill(index_t budget) const {
    noise filled;
    std::size_t next = 0;
    while (static_cast<index_t>(sentences_[next].size()) <= budget) {
      budget -= static_cast<index_t>(sentences_[next].size());
      filled.sentences.push_back(sentences_[next]);
      next = (next + 1) % sentences_.size();
    }
    // The words of the next sentence: " The grass is green." -> " The", " The grass", " The grass is".
    const std::string_view sentence = noise_sentences[next];
    for (std::size_t space = sentence.find(' ', 1); space != std::string_view::npos;
         space = sentence.find(' ', space + 1)) {
      token_ids words = encode_(sentence.substr(0, space));
      if (static_cast<index_t>(words.size()) > budget) break;
      filled.tail = std::move(words);
    }
    return filled;
  }

 private:
  const piece_encoder& encode_;
  std::vector<token_ids> sentences_;
};

inline index_t total_size(const std::vector<token_ids>& pieces) {
  index_t total = 0;
  for (const auto& piece : pieces) total += static_cast<index_t>(piece.size());
  return total;
}

inline std::string join_numbers(const std::vector<std::string>& numbers) {
  std::string joined;
  for (const auto& number : numbers) joined.append(joined.empty() ? " " : ", ").append(number);
  return joined;
}

inline task_example text_needles(const task_request& request, const text_tokenizer& tokenizer,
                                 const piece_encoder& encode, philox_stream& random) {
  const task_kind kind = request.kind;
  const std::int32_t count = kind == task_kind::multikey_needle     ? request.needle_keys
                             : kind == task_kind::multivalue_needle ? request.needle_values
                                                                    : 1;
  std::string instruction;
  std::vector<std::string> needle_texts, values;
  std::string question;
  if (kind == task_kind::passkey) {
    std::string digits;
    for (const std::int32_t digit : draw_digits(random, request.passkey_digits))
      digits.push_back(static_cast<char>('0' + digit));
    values = {digits};
    instruction =
        "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
        "I will quiz you about the important information there.";
    needle_texts = {" The pass key is " + digits + ". Remember it. " + digits + " is the pass key."};
    question = "\nWhat is the pass key? The pass key is";
  } else {
    const auto keys = draw_text_keys(random, kind == task_kind::multikey_needle ? count : 1);
    values = draw_numbers(random, count);
    instruction =
        "Some special magic numbers are hidden within the following text. Make sure to memorize it. "
        "I will quiz you about the numbers afterwards.";
    for (std::size_t i = 0; i < values.size(); ++i)
      needle_texts.push_back(" One of the special magic numbers for " + keys[kind == task_kind::multikey_needle ? i : 0] +
                             " is: " + values[i] + ".");
    question = kind == task_kind::multivalue_needle
                   ? "\nWhat are all the special magic numbers for " + keys[0] +
                         " mentioned in the provided text? The special magic numbers for " + keys[0] +
                         " mentioned in the provided text are"
                   : "\nWhat is the special magic number for " + keys[0] +
                         " mentioned in the provided text? The special magic number for " + keys[0] +
                         " mentioned in the provided text is";
  }

  const token_ids instruction_ids = encode(instruction);
  const token_ids question_ids = encode(question);
  std::vector<token_ids> needles;
  for (const auto& text : needle_texts) needles.push_back(encode(text));
  const index_t prefix = (tokenizer.bos >= 0 ? 1 : 0) + static_cast<index_t>(instruction_ids.size());
  const index_t fixed = prefix + static_cast<index_t>(question_ids.size()) + total_size(needles);
  check_long_enough(request, fixed, "its instruction, needles and question with this tokenizer");

  const noise filled = noise_filler(encode).fill(request.context_length - fixed);
  const auto& units = filled.sentences;
  const auto& tail = filled.tail;
  const std::size_t boundaries = units.size() + 1;  // before sentence b, or after the last
  std::vector<std::size_t> distractor_at(needles.size(), 0);
  for (std::size_t i = 1; i < needles.size(); ++i)
    distractor_at[i] = static_cast<std::size_t>(draw_below(random, static_cast<std::int64_t>(boundaries)));

  // Needle 0 goes at the boundary whose offset is closest to the requested one; it precedes any
  // distractor at the same boundary.
  const index_t haystack = total_size(units) + static_cast<index_t>(tail.size()) + total_size(needles);
  const auto needle_size = static_cast<index_t>(needles[0].size());
  const index_t target = depth_offset(request.depth, haystack - needle_size);
  std::size_t primary_at = 0;
  index_t best = std::numeric_limits<index_t>::max();
  index_t offset = 0;
  for (std::size_t b = 0; b < boundaries; ++b) {
    if (std::abs(offset - target) < best) {
      best = std::abs(offset - target);
      primary_at = b;
    }
    for (std::size_t i = 1; i < needles.size(); ++i)
      if (distractor_at[i] == b) offset += static_cast<index_t>(needles[i].size());
    if (b < units.size()) offset += static_cast<index_t>(units[b].size());
  }

  task_example example;
  example.kind = kind;
  auto& prompt = example.prompt;
  if (tokenizer.bos >= 0) prompt.push_back(tokenizer.bos);
  append(prompt, instruction_ids);
  std::vector<token_span> spans(needles.size());
  const auto place = [&](std::size_t i) {
    const auto begin = static_cast<index_t>(prompt.size());
    append(prompt, needles[i]);
    spans[i] = {begin, static_cast<index_t>(prompt.size())};
  };
  for (std::size_t b = 0; b < boundaries; ++b) {
    if (b == primary_at) place(0);
    for (std::size_t i = 1; i < needles.size(); ++i)
      if (distractor_at[i] == b) place(i);
    if (b < units.size()) append(prompt, units[b]);
  }
  append(prompt, tail);
  append(prompt, question_ids);

  example.haystack = {prefix, prefix + haystack};
  example.depth = realised_depth(spans[0].begin - prefix, haystack - needle_size);
  if (kind == task_kind::multivalue_needle) {
    std::vector<std::size_t> order(needles.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return spans[a].begin < spans[b].begin; });
    std::vector<std::string> in_prompt_order;
    for (const std::size_t i : order) {
      in_prompt_order.push_back(values[i]);
      example.evidence.push_back(spans[i]);
    }
    example.answer = encode(join_numbers(in_prompt_order));
  } else {
    example.answer = encode(" " + values[0]);
    example.evidence.push_back(spans[0]);
  }
  return example;
}

// MQAR in words: " {key}: {value}." pairs, then noise sentences with the keys asked again in the
// same form at power-law gaps (counted in noise sentences; queries may share a gap), the last one
// " {key}:" -> " {value}".
inline task_example text_mqar(const task_request& request, const text_tokenizer& tokenizer, const piece_encoder& encode,
                              philox_stream& random) {
  const std::int64_t pairs = request.mqar_pairs;
  const auto keys = draw_text_keys(random, pairs);
  const auto values = draw_numbers(random, pairs);
  const std::int64_t asked = draw_below(random, pairs);
  std::vector<std::size_t> earlier;
  for (const std::int64_t i : draw_distinct(random, pairs, pairs))
    if (i != asked) earlier.push_back(static_cast<std::size_t>(i));

  const token_ids instruction = encode(
      "Each word below is paired with a number. Later the words are asked again; answer each with its number.");
  const token_ids period = encode(".");
  std::vector<token_ids> key_ids, value_ids;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    key_ids.push_back(encode(" " + keys[i] + ":"));
    value_ids.push_back(encode(" " + values[i]));
  }
  const index_t prefix = (tokenizer.bos >= 0 ? 1 : 0) + static_cast<index_t>(instruction.size());
  const auto period_size = static_cast<index_t>(period.size());
  const index_t pair_tokens = total_size(key_ids) + total_size(value_ids) + pairs * period_size;
  const auto asked_at = static_cast<std::size_t>(asked);
  const index_t fixed = prefix + 2 * pair_tokens - static_cast<index_t>(value_ids[asked_at].size()) - period_size;
  check_long_enough(request, fixed, "its instruction, pairs and queries with this tokenizer");

  const noise filled = noise_filler(encode).fill(request.context_length - fixed);
  const auto& units = filled.sentences;
  const auto& tail = filled.tail;
  std::vector<std::int64_t> gaps;  // with replacement: the noise may have fewer gaps than queries
  for (std::size_t q = 0; q < earlier.size(); ++q)
    gaps.push_back(draw_power_law_gaps(random, static_cast<std::int64_t>(units.size()) + 1, 1, request.mqar_power_a)[0]);
  std::sort(gaps.begin(), gaps.end());

  task_example example;
  example.kind = task_kind::mqar;
  auto& prompt = example.prompt;
  if (tokenizer.bos >= 0) prompt.push_back(tokenizer.bos);
  append(prompt, instruction);
  const auto write_pair = [&](std::size_t i, bool teach) {
    append(prompt, key_ids[i]);
    const auto value_begin = static_cast<index_t>(prompt.size());
    append(prompt, value_ids[i]);
    for (std::size_t t = 0; teach && t < value_ids[i].size(); ++t)
      example.inline_targets.emplace_back(value_begin + static_cast<index_t>(t) - 1, value_ids[i][t]);
    append(prompt, period);
    return value_begin;
  };
  for (std::size_t i = 0; i < keys.size(); ++i) {
    const auto begin = static_cast<index_t>(prompt.size());
    write_pair(i, false);
    if (i == asked_at) example.evidence.push_back({begin, static_cast<index_t>(prompt.size())});
  }
  std::size_t q = 0;
  for (std::size_t b = 0; b <= units.size(); ++b) {
    for (; q < earlier.size() && gaps[q] == static_cast<std::int64_t>(b); ++q) write_pair(earlier[q], true);
    if (b < units.size()) append(prompt, units[b]);
  }
  append(prompt, tail);
  append(prompt, key_ids[asked_at]);

  example.answer = value_ids[asked_at];
  example.haystack = {prefix, static_cast<index_t>(prompt.size())};
  example.depth = -1.0;
  return example;
}

// Lost in the middle: "Document [j](Title: {key})" with noise and the fact " The special magic
// number for {key} is {value}." at a random sentence boundary; the gold one at round(depth * (D - 1)).
inline task_example text_multidoc(const task_request& request, const text_tokenizer& tokenizer,
                                  const piece_encoder& encode, philox_stream& random) {
  const std::int64_t documents = request.documents;
  const auto keys = draw_text_keys(random, documents);
  const auto values = draw_numbers(random, documents);
  const auto gold = static_cast<std::size_t>(depth_offset(request.depth, documents - 1));

  const token_ids instruction = encode(
      "Write a high-quality answer for the given question using only the provided search results "
      "(some of which might be irrelevant).");
  const token_ids question = encode("\n\nQuestion: What is the special magic number for " + keys[gold] + "?\nAnswer:");
  std::vector<token_ids> headers, facts;
  for (std::size_t d = 0; d < keys.size(); ++d) {
    headers.push_back(encode("\n\nDocument [" + std::to_string(d + 1) + "](Title: " + keys[d] + ")"));
    facts.push_back(encode(" The special magic number for " + keys[d] + " is " + values[d] + "."));
  }
  const index_t prefix = (tokenizer.bos >= 0 ? 1 : 0) + static_cast<index_t>(instruction.size());
  const index_t fixed = prefix + static_cast<index_t>(question.size()) + total_size(headers) + total_size(facts);
  check_long_enough(request, fixed, "its instruction, document titles and facts, and question with this tokenizer");

  const index_t noise_tokens = request.context_length - fixed;
  const noise_filler filler(encode);
  task_example example;
  example.kind = task_kind::multidoc_qa;
  auto& prompt = example.prompt;
  if (tokenizer.bos >= 0) prompt.push_back(tokenizer.bos);
  append(prompt, instruction);
  for (std::size_t d = 0; d < keys.size(); ++d) {
    const auto index = static_cast<index_t>(d);
    const noise filled = filler.fill(noise_tokens / documents + (index < noise_tokens % documents ? 1 : 0));
    const auto& units = filled.sentences;
    const auto& tail = filled.tail;
    const auto fact_at = static_cast<std::size_t>(draw_below(random, static_cast<std::int64_t>(units.size()) + 1));
    const auto begin = static_cast<index_t>(prompt.size());
    append(prompt, headers[d]);
    for (std::size_t b = 0; b <= units.size(); ++b) {
      if (b == fact_at) append(prompt, facts[d]);
      if (b < units.size()) append(prompt, units[b]);
    }
    append(prompt, tail);
    if (d == gold) example.evidence.push_back({begin, static_cast<index_t>(prompt.size())});
  }
  const auto documents_end = static_cast<index_t>(prompt.size());
  append(prompt, question);

  example.answer = encode(" " + values[gold]);
  example.haystack = {prefix, documents_end};
  example.depth = realised_depth(static_cast<index_t>(gold), documents - 1);
  return example;
}

}  // namespace detail

// A default id vocabulary out of a model vocabulary of `model_vocab` ids, leaving [0, reserved)
// (BOS, EOS, MASK, ...) untouched: query = reserved, separator = reserved + 1, then keys, values
// and filler, a third each of the rest (keys and values equal: MQAR's two halves). bos stays -1;
// set it to the model's BOS to start prompts with it. Big enough for every task's default knobs.
inline id_vocabulary default_id_vocabulary(std::int32_t model_vocab, std::int32_t reserved) {
  constexpr const char* function = "meap::eval::default_id_vocabulary";
  check_argument(reserved >= 0, function, "reserved", reserved, "a non-negative count of ids to leave alone");
  // The largest range any task needs with the default knobs.
  std::int64_t largest = 10;
  for (const task_kind kind : all_tasks()) {
    task_request request;
    request.kind = kind;
    const auto needs = detail::ids_needed(request);
    largest = std::max({largest, std::int64_t{needs.keys}, needs.values});
  }
  const std::int64_t minimum = std::int64_t{reserved} + 2 + 3 * largest;
  check_argument(model_vocab >= minimum, function, "model_vocab", model_vocab,
                 "at least " + std::to_string(minimum) + " ids: " + std::to_string(reserved) +
                     " reserved, 2 markers and " + std::to_string(largest) + " each for keys, values and filler");
  const std::int32_t rest = model_vocab - reserved - 2;
  const std::int32_t third = rest / 3;
  id_vocabulary vocabulary;
  vocabulary.query = reserved;
  vocabulary.separator = reserved + 1;
  vocabulary.keys = {reserved + 2, third};
  vocabulary.values = {reserved + 2 + third, third};
  vocabulary.filler = {reserved + 2 + 2 * third, rest - 2 * third};
  return vocabulary;
}

inline task_example make_example(const task_request& request, const id_vocabulary& vocabulary) {
  detail::check_request(request, false);
  detail::check_vocabulary(vocabulary, std::numeric_limits<std::int32_t>::max(), detail::make_example_function,
                           "vocabulary.");
  const auto needs = detail::ids_needed(request);
  const std::string task(to_string(request.kind));
  check_argument(vocabulary.keys.count >= needs.keys, detail::make_example_function, "vocabulary.keys",
                 describe(vocabulary.keys),
                 "at least " + std::to_string(needs.keys) + " key ids: " + task + " draws that many distinct keys");
  check_argument(vocabulary.values.count >= needs.values, detail::make_example_function, "vocabulary.values",
                 describe(vocabulary.values),
                 "at least " + std::to_string(needs.values) + " value ids: " + task + " draws that many distinct ids");

  philox_stream random = detail::example_stream(request);
  switch (request.kind) {
    case task_kind::mqar: return detail::id_mqar(request, vocabulary, random);
    case task_kind::multidoc_qa: return detail::id_multidoc(request, vocabulary, random);
    default: return detail::id_needles(request, vocabulary, random);
  }
}

inline task_example make_example(const task_request& request, const text_tokenizer& tokenizer) {
  detail::check_request(request, true);
  check_argument(static_cast<bool>(tokenizer.encode), detail::make_example_function, "tokenizer.encode", "empty",
                 "a function from text to ids");
  check_argument(tokenizer.bos >= -1, detail::make_example_function, "tokenizer.bos", tokenizer.bos,
                 "-1 (no BOS) or a non-negative id");
  const detail::piece_encoder encode(tokenizer);
  philox_stream random = detail::example_stream(request);
  switch (request.kind) {
    case task_kind::mqar: return detail::text_mqar(request, tokenizer, encode, random);
    case task_kind::multidoc_qa: return detail::text_multidoc(request, tokenizer, encode, random);
    default: return detail::text_needles(request, tokenizer, encode, random);
  }
}

}  // namespace meap::eval
