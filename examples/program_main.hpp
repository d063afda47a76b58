// examples/program_main.hpp: the main() of the command-line examples (meap_pretrain, meap_eval).
// The body runs under guarded_main, so that every failure ends the program with one line on
// stderr and exit code 1, never `terminate called`: a meap::error as it is (its message starts
// with the function that refused), std::bad_alloc with a hint of what to make smaller, anything
// else as "<program>: <what>". cuda_ordinal_of reads their shared --device option.
#pragma once

#include <meap/core/error.hpp>

#include <cstdio>
#include <exception>
#include <new>
#include <string>
#include <utility>

namespace meap_examples {

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

// --device: "cpu" -> -1, "cuda" -> 0, "cuda:N" -> N; anything else is a meap::error naming it.
inline int cuda_ordinal_of(const char* program, const std::string& device) {
  if (device == "cpu") return -1;
  if (device == "cuda") return 0;
  const std::string ordinal = device.rfind("cuda:", 0) == 0 ? device.substr(5) : "";
  if (ordinal.empty() || ordinal.find_first_not_of("0123456789") != std::string::npos || ordinal.size() > 4)
    meap::throw_argument_error(program, "--device", device, "cpu, cuda or cuda:N");
  return std::stoi(ordinal);
}

}  // namespace meap_examples
