// meap/kernels/rope_frequency.hpp: the rotary embedding's frequencies, shared by the CPU and CUDA
// kernels: theta^(-2i/D) for pair i of a head of D dimensions, optionally rescaled as Llama 3.1
// does ("rope_type": "llama3" in a Hugging Face config).
#pragma once

#include <meap/core/config.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/error.hpp>

#include <cmath>
#include <string>
#include <string_view>

namespace meap {

// Llama 3.1's frequency scaling, which stretches a model trained at original_max_position to a
// longer context: with wavelength w = 2 pi / frequency, pairs of short wavelength (w below
// original_max_position / high_freq_factor) keep their frequency, pairs of long wavelength (w
// above original_max_position / low_freq_factor) have it divided by `factor`, and the pairs in
// between blend the two linearly in original_max_position / w. factor = 0 turns it off.
struct rope_scaling {
  double factor = 0.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  double original_max_position = 8192.0;

  MEAP_HOST_DEVICE constexpr bool enabled() const { return factor > 0.0; }
  bool operator==(const rope_scaling&) const = default;
};

// The angle per position of pair i (i < D/2), computed in double (as transformers computes it,
// but in float32 there: the two differ by float rounding).
MEAP_HOST_DEVICE inline double rope_inverse_frequency(index_t i, index_t head_dim, double theta, const rope_scaling& s) {
  const double frequency = pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
  if (!s.enabled()) return frequency;
  const double wavelength = 2.0 * 3.14159265358979323846 / frequency;
  if (wavelength < s.original_max_position / s.high_freq_factor) return frequency;
  if (wavelength > s.original_max_position / s.low_freq_factor) return frequency / s.factor;
  const double smooth = (s.original_max_position / wavelength - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
  return (1.0 - smooth) * frequency / s.factor + smooth * frequency;
}

// Throws meap::error unless `s` is off or a valid llama3 scaling; `argument` names it.
inline void check_rope_scaling(std::string_view function, std::string_view argument, const rope_scaling& s) {
  if (s.factor == 0.0) return;
  const std::string name(argument);
  check_argument(std::isfinite(s.factor) && s.factor >= 1.0, function, name + ".factor", s.factor,
                 "a finite factor >= 1 (0 turns the scaling off)");
  check_argument(std::isfinite(s.low_freq_factor) && s.low_freq_factor > 0.0, function, name + ".low_freq_factor",
                 s.low_freq_factor, "a finite positive factor");
  check_argument(std::isfinite(s.high_freq_factor) && s.high_freq_factor > s.low_freq_factor, function,
                 name + ".high_freq_factor", s.high_freq_factor,
                 "a finite factor above low_freq_factor = " + std::to_string(s.low_freq_factor));
  check_argument(std::isfinite(s.original_max_position) && s.original_max_position >= 1.0, function,
                 name + ".original_max_position", s.original_max_position, "a finite context length >= 1");
}

}  // namespace meap
