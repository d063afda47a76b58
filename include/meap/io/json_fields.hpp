// meap/io/json_fields.hpp: typed, range-checked reads of JSON fields (config files, checkpoint
// metadata), so that no document a user or a corrupt file supplies reaches a conversion that is
// undefined (1e30 into an int64), silently lossy (64.9 into 64) or that throws anything but
// meap::error (a string where a number belongs, a document that is an array or null).
//
//   const meap::json_fields fields(document, "meap::train::read_hugging_face_config", "config.json");
//   config.vocab = fields.integer("vocab_size", 1, max_vocab);          // required
//   config.rope_theta = fields.number_or("rope_theta", 10000.0);         // optional
//
// Messages name the source, the field, the value found and what was expected.
#pragma once

#include <meap/core/error.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

namespace meap {

class json_fields {
 public:
  // `document` must be a JSON object; `function` and `source` (a file name, say) prefix messages.
  json_fields(const nlohmann::json& document, std::string_view function, std::string source)
      : document_(document), function_(function), source_(std::move(source)) {
    if (!document_.is_object())
      throw_argument_error(function_, "path", source_, "a JSON object of fields, found " + describe(document_));
  }

  bool contains(std::string_view name) const { return find(name) != nullptr; }

  // An integer in [lowest, highest]. JSON numbers with a fraction or an exponent (64.9, 1e30)
  // and integers outside the range are refused, never converted.
  std::int64_t integer(std::string_view name, std::int64_t lowest = std::numeric_limits<std::int64_t>::min(),
                       std::int64_t highest = std::numeric_limits<std::int64_t>::max()) const {
    return integer_value(required(name), name, lowest, highest);
  }
  std::int64_t integer_or(std::string_view name, std::int64_t fallback,
                          std::int64_t lowest = std::numeric_limits<std::int64_t>::min(),
                          std::int64_t highest = std::numeric_limits<std::int64_t>::max()) const {
    const auto* value = find(name);
    return value ? integer_value(*value, name, lowest, highest) : fallback;
  }

  // A finite number (integer or not).
  double number(std::string_view name) const { return number_value(required(name), name); }
  double number_or(std::string_view name, double fallback) const {
    const auto* value = find(name);
    return value ? number_value(*value, name) : fallback;
  }

  bool boolean_or(std::string_view name, bool fallback) const {
    const auto* value = find(name);
    if (!value) return fallback;
    if (!value->is_boolean()) bad(name, *value, "true or false");
    return value->get<bool>();
  }

  std::string string_or(std::string_view name, std::string fallback) const {
    const auto* value = find(name);
    if (!value) return fallback;
    if (!value->is_string()) bad(name, *value, "a string");
    return value->get<std::string>();
  }

  // The field itself (nullptr when absent or null), for shapes this class does not cover.
  const nlohmann::json* find(std::string_view name) const {
    const auto it = document_.find(name);
    return it == document_.end() || it->is_null() ? nullptr : &*it;
  }

  // A short description of a JSON value for messages: the text itself when short.
  static std::string describe(const nlohmann::json& value) {
    if (value.is_null()) return "null";
    std::string text = value.dump();
    if (text.size() > 60) text = text.substr(0, 57) + "...";
    const char* kind = value.is_object() ? "an object" : value.is_array() ? "an array" : value.is_string() ? "a string"
                       : value.is_boolean() ? "a boolean" : value.is_null() ? "null" : "a number";
    return std::string(kind) + " " + text;
  }

 private:
  const nlohmann::json& required(std::string_view name) const {
    const auto* value = find(name);
    if (!value)
      throw_argument_error(function_, "path", source_, "a JSON object with the field '" + std::string(name) + "'");
    return *value;
  }

  [[noreturn]] void bad(std::string_view name, const nlohmann::json& value, const std::string& expected) const {
    throw_argument_error(function_, "path", source_ + " with " + std::string(name) + " = " + describe(value),
                         std::string(name) + " as " + expected);
  }

  std::int64_t integer_value(const nlohmann::json& value, std::string_view name, std::int64_t lowest,
                             std::int64_t highest) const {
    const std::string range = "an integer in [" + std::to_string(lowest) + ", " + std::to_string(highest) + "]";
    if (value.is_number_unsigned()) {
      const auto u = value.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) ||
          static_cast<std::int64_t>(u) > highest || static_cast<std::int64_t>(u) < lowest)
        bad(name, value, range);
      return static_cast<std::int64_t>(u);
    }
    if (value.is_number_integer()) {
      const auto i = value.get<std::int64_t>();
      if (i < lowest || i > highest) bad(name, value, range);
      return i;
    }
    bad(name, value, range);  // floats (a fraction, an exponent, or beyond 64 bits), strings, ...
  }

  double number_value(const nlohmann::json& value, std::string_view name) const {
    if (!value.is_number()) bad(name, value, "a number");
    const double x = value.get<double>();
    if (!std::isfinite(x)) bad(name, value, "a finite number");
    return x;
  }

  const nlohmann::json& document_;
  std::string_view function_;
  std::string source_;
};

// Parses `text` as JSON, throwing meap::error (naming `source`) instead of nlohmann's exceptions.
inline nlohmann::json parse_json(std::string_view text, std::string_view function, const std::string& source) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw_argument_error(function, "path", source, std::string("valid JSON (") + e.what() + ")");
  }
}

// A decimal unsigned integer written as text (checkpoint metadata): digits only, no sign, no
// spaces, no overflow. nullopt for anything else.
inline std::optional<std::uint64_t> parse_decimal_u64(std::string_view text) {
  if (text.empty() || text.size() > 20) return std::nullopt;
  std::uint64_t value = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    const auto digit = static_cast<std::uint64_t>(c - '0');
    if (value > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) return std::nullopt;
    value = value * 10 + digit;
  }
  return value;
}

}  // namespace meap
