// meap/detail/format.hpp: message building for meap::error. Internal.
#pragma once
#ifndef MEAP_DETAIL_ALLOWED
#error "meap/detail/* headers are internal: include <meap/meap.hpp> (or <meap/cuda.hpp>) instead"
#endif

#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>

namespace meap::detail {

template <class T>
void append_value(std::ostringstream& out, const T& value) {
  if constexpr (std::is_same_v<T, bool>) {
    out << (value ? "true" : "false");
  } else if constexpr (std::is_convertible_v<const T&, std::string_view>) {
    out << std::string_view(value);  // already a description, e.g. "shape (2, 3)"
  } else if constexpr (std::is_integral_v<T> && sizeof(T) == 1) {
    out << static_cast<int>(value);
  } else if constexpr (requires { to_string(value); }) {
    out << to_string(value);
  } else {
    out << value;
  }
}

template <class T>
std::string value_to_string(const T& value) {
  std::ostringstream out;
  append_value(out, value);
  return out.str();
}

// "meap::make_view: argument 'strides' = (4, 1, 0): expected one stride per dimension"
inline std::string argument_message(std::string_view function, std::string_view argument,
                                    std::string_view value, std::string_view expected) {
  std::string text;
  text.reserve(function.size() + argument.size() + value.size() + expected.size() + 40);
  text.append(function).append(": argument '").append(argument).append("' = ").append(value);
  text.append(": expected ").append(expected);
  return text;
}

}  // namespace meap::detail
