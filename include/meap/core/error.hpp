// meap/core/error.hpp: the one exception type meap throws, and the checks that build its messages.
//
// Every public entry point validates its arguments and throws meap::error whose message names
// the function, the argument, the value it got and what was expected, e.g.
//   meap::make_view: argument 'strides' = (4, 1, 0): expected one stride per dimension (rank 2)
#pragma once

#include <meap/core/config.hpp>

#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#pragma push_macro("MEAP_DETAIL_ALLOWED")
#define MEAP_DETAIL_ALLOWED 1
#include <meap/detail/format.hpp>
#pragma pop_macro("MEAP_DETAIL_ALLOWED")

namespace meap {

class error : public std::runtime_error {
 public:
  explicit error(const std::string& message) : std::runtime_error(message) {}
  error(std::string function, std::string argument, const std::string& message)
      : std::runtime_error(message), function_(std::move(function)), argument_(std::move(argument)) {}

  // The public function that rejected its input ("" for failures not tied to an argument).
  const std::string& function() const noexcept { return function_; }
  // The name of the offending argument, as the function's documentation spells it.
  const std::string& argument() const noexcept { return argument_; }

 private:
  std::string function_;
  std::string argument_;
};

// Throws meap::error("<function>: argument '<argument>' = <value>: expected <expected>").
template <class Value>
[[noreturn]] void throw_argument_error(std::string_view function, std::string_view argument,
                                       const Value& value, std::string_view expected) {
  throw error(std::string(function), std::string(argument),
              detail::argument_message(function, argument, detail::value_to_string(value), expected));
}

// check_argument(k > 0, "meap::f", "k", k, "a positive count"): throws when the condition fails.
template <class Value>
void check_argument(bool condition, std::string_view function, std::string_view argument,
                    const Value& value, std::string_view expected) {
  if (!condition) throw_argument_error(function, argument, value, expected);
}

}  // namespace meap
