// apps/cli_options.hpp: the CLI11 validators meap's programs share (meap_pretrain,
// meap_finetune, meap_eval, meap_demo, meap_finetune_study).
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>

namespace meap_apps {

// Integer counts from 1 (or 0) up to a bound no run reaches, with a readable message.
inline constexpr std::int64_t huge_count = std::int64_t{1} << 40;
inline const CLI::Range at_least_one(std::int64_t{1}, huge_count);
inline const CLI::Range at_least_zero(std::int64_t{0}, huge_count);

// Digits only: CLI11 would otherwise read "-1" as 2^64 - 1 for an unsigned option.
inline const CLI::Validator unsigned_64(
    [](std::string& text) -> std::string {
      if (!text.empty() && text.size() <= 20 && text.find_first_not_of("0123456789") == std::string::npos) return {};
      return "Value " + text + " is not an integer from 0 to 18446744073709551615";
    },
    "UINT64");

}  // namespace meap_apps
