// studies/command_line.hpp: the options every seed study has (--seed, --seeds, --out, --quick),
// through CLI11, and the parse that stops a study on --help or a bad option. Apart from harness.hpp
// so that the harness (and its test) need no CLI11.
#pragma once

#include <CLI/CLI.hpp>

#include "cli_options.hpp"

#include <cstdint>
#include <optional>
#include <string>

namespace meap_studies {

// The help texts of the shared options: each study says what a seed, --out and --quick mean for it.
struct seed_options_help {
  std::string seed, seeds, out, quick;
};

// Adds --seed (the first seed, any 64-bit value), --seeds (1 to 24: the sign-flip test enumerates
// 2^seeds sign patterns), --out and --quick. Returns --seeds, whose count() tells whether it was
// given (a study may give --quick its own default).
inline CLI::Option* add_seed_options(CLI::App& app, std::uint64_t& seed, int& seeds, std::string& out, bool& quick,
                                     const seed_options_help& help) {
  app.add_option("--seed", seed, help.seed)->check(meap_apps::unsigned_64)->capture_default_str();
  auto* seeds_option = app.add_option("--seeds", seeds, help.seeds)->check(CLI::Range(1, 24))->capture_default_str();
  app.add_option("--out", out, help.out)->capture_default_str();
  app.add_flag("--quick", quick, help.quick);
  return seeds_option;
}

// Parses the command line. Returns the exit code when the study should stop there: 0 after --help,
// CLI11's code after a bad option (its message names the option).
inline std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return std::nullopt;
}

}  // namespace meap_studies
