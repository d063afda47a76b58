// tests/support/errors.hpp: checking meap::error messages in Boost.Test predicates.
#pragma once

#include <meap/core/error.hpp>

#include <boost/test/unit_test.hpp>

#include <string>
#include <utility>
#include <vector>

namespace meap_test {

// For BOOST_CHECK_EXCEPTION: passes when the error comes from `function` (any, if empty), names
// `argument` and its message contains every fragment; otherwise logs what it got.
inline auto error_says(std::string function, std::string argument, std::vector<std::string> fragments) {
  return [function = std::move(function), argument = std::move(argument),
          fragments = std::move(fragments)](const meap::error& e) {
    const std::string what = e.what();
    if ((!function.empty() && e.function() != function) || e.argument() != argument) {
      BOOST_TEST_MESSAGE("error from '" << e.function() << "' about '" << e.argument() << "', expected '" << function
                                        << "' about '" << argument << "': " << what);
      return false;
    }
    for (const auto& fragment : fragments)
      if (what.find(fragment) == std::string::npos) {
        BOOST_TEST_MESSAGE("message lacks '" << fragment << "': " << what);
        return false;
      }
    return true;
  };
}

inline auto error_says(std::string argument, std::vector<std::string> fragments) {
  return error_says(std::string(), std::move(argument), std::move(fragments));
}

// The message of the meap::error f() throws, or "(no error)": for comparing two calls' errors.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const meap::error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace meap_test
