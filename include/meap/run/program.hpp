// meap/run/program.hpp: what every command-line program built on meap needs at its main():
// guarded_main, so that any failure ends the program with one line on stderr and a non-zero
// exit (never `terminate called`), and parse_device, the --device spelling meap's programs share.
//
//   int main(int argc, char** argv) {
//     return meap::run::guarded_main("my_trainer", "try a smaller --batch", [&] { ...; return 0; });
//   }
#pragma once

#include <meap/core/error.hpp>

#include <cstdio>
#include <exception>
#include <new>
#include <string>
#include <utility>

namespace meap::run {

// Runs body() and returns its exit code; a failure prints one line and returns 1: a meap::error as
// it is (its message starts with the function or program that refused), std::bad_alloc with
// `out_of_memory_hint` (what to make smaller), anything else as "<program>: <what>".
template <class F>
int guarded_main(const char* program, const char* out_of_memory_hint, F&& body) noexcept {
  try {
    return std::forward<F>(body)();
  } catch (const meap::error& e) {
    std::fprintf(stderr, "%s\n", e.what());
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "%s: out of memory (std::bad_alloc); %s\n", program, out_of_memory_hint);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", program, e.what());
  } catch (...) {
    std::fprintf(stderr, "%s: unknown error\n", program);
  }
  return 1;
}

// --device: "cpu" -> -1, "cuda" -> 0, "cuda:N" -> N; anything else is a meap::error naming
// `program` and the option.
inline int parse_device(const char* program, const std::string& device) {
  if (device == "cpu") return -1;
  if (device == "cuda") return 0;
  const std::string ordinal = device.rfind("cuda:", 0) == 0 ? device.substr(5) : "";
  if (ordinal.empty() || ordinal.find_first_not_of("0123456789") != std::string::npos || ordinal.size() > 4)
    throw_argument_error(program, "--device", device, "cpu, cuda or cuda:N");
  return std::stoi(ordinal);
}

}  // namespace meap::run
