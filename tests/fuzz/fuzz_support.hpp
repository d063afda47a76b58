// tests/fuzz/fuzz_support.hpp: what the four fuzz targets share.
//
// The library promises that bad input only ever throws meap::error. A target therefore swallows
// meap::error and nothing else: any other exception escapes LLVMFuzzerTestOneInput (libFuzzer
// reports it as a crash; replay_main.cpp names the file), and a broken invariant the target
// checks itself (a round trip that changes a value) prints what broke and traps.
#pragma once

#include <meap/core/error.hpp>

#include <cstdio>

namespace meap_fuzz {

// Runs f(), ignoring a meap::error (the expected answer to bad input). True when f returned.
template <class F>
bool expect_meap_error(F&& f) {
  try {
    f();
    return true;
  } catch (const meap::error&) {
    return false;
  }
}

// An invariant of the library that a fuzz input broke: say which, then crash.
[[noreturn]] inline void invariant_broken(const char* what) {
  std::fprintf(stderr, "meap fuzz: invariant broken: %s\n", what);
  std::fflush(stderr);
  __builtin_trap();
}

inline void check(bool condition, const char* what) {
  if (!condition) invariant_broken(what);
}

}  // namespace meap_fuzz
