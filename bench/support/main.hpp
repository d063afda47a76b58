// bench/support/main.hpp: the one shape of every benchmark's main. The command line goes through
// CLI11 (--help, typed and range-checked options, errors that name the option), and the body runs
// under guarded_main, so that every failure ends the program with one line on stderr and a
// non-zero exit, never `terminate called`:
//
//   int main(int argc, char** argv) {
//     return meap_bench::guarded_main("bench_x", [&] {
//       CLI::App app{"bench_x: what it measures", "bench_x"};
//       app.add_option("rows", rows, "...")->check(CLI::Range(1, 1 << 20))->capture_default_str();
//       if (const int code = meap_bench::parse(app, argc, argv); code >= 0) return code;
//       ...
//       return 0;
//     });
//   }
//
// Exit codes: 0 (done, or --help), 1 (a failure while running), 2 (a bad command line).
#pragma once

#include <CLI/CLI.hpp>

#include <meap/core/error.hpp>

#include <cmath>
#include <cstdio>
#include <exception>
#include <new>
#include <string>
#include <utility>

namespace meap_bench {

// Runs body() and returns what it returns; any exception ends the program with one line on stderr
// and exit code 1: a meap::error as it is (its message starts with the function that threw it),
// anything else as "<program>: <what>".
template <class F>
int guarded_main(const char* program, F&& body) noexcept {
  try {
    return std::forward<F>(body)();
  } catch (const meap::error& e) {
    std::fprintf(stderr, "%s\n", e.what());
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "%s: out of memory\n", program);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", program, e.what());
  } catch (...) {
    std::fprintf(stderr, "%s: unknown error\n", program);
  }
  return 1;
}

// Parses argv with app (constructed with the program's name: CLI::App{"description", "bench_x"}).
// Returns -1 when the program should go on; otherwise the exit code to return at once: 0 after
// printing --help, 2 after printing a bad command line's error as one line on stderr
// ("<program>: <option>: <problem> (see --help)"; CLI11's own handler would add a second line).
inline int parse(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
    return -1;
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);  // --help
    std::fprintf(stderr, "%s: %s (see --help)\n", app.get_name().c_str(), e.what());
    return 2;
  }
}

// A validator for floating-point options that must be > 0 (CLI::PositiveNumber's message prints
// the largest double in full).
inline CLI::Validator positive_real() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        double value = 0;
        if (!CLI::detail::lexical_cast(text, value) || !std::isfinite(value)) return "Value " + text + " is not a number";
        if (!(value > 0)) return "Value " + text + " is not a positive number";
        return {};
      },
      "POSITIVE");
}

// A validator for a fraction in (0, 1].
inline CLI::Validator fraction() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        double value = 0;
        if (!CLI::detail::lexical_cast(text, value)) return "Value " + text + " is not a number";
        if (!(value > 0 && value <= 1)) return "Value " + text + " is not in (0, 1]";
        return {};
      },
      "in (0, 1]");
}

}  // namespace meap_bench
