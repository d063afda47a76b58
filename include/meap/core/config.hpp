// meap/core/config.hpp: version and the few annotations every header needs.
#pragma once

#define MEAP_VERSION_MAJOR 0
#define MEAP_VERSION_MINOR 1
#define MEAP_VERSION_PATCH 0

// Functions usable from host and device code. Under nvcc these are __host__ __device__; a host
// compiler sees plain inline functions. This annotates; it never changes a type or a result.
#if defined(__CUDACC__)
#define MEAP_HOST_DEVICE __host__ __device__
#else
#define MEAP_HOST_DEVICE
#endif

#if __cplusplus < 202002L && !(defined(_MSVC_LANG) && _MSVC_LANG >= 202002L)
#error "meap needs C++20: compile with -std=c++20 (CMake: target_compile_features(... cxx_std_20))"
#endif

namespace meap {

struct version_info {
  int major;
  int minor;
  int patch;
};

inline constexpr version_info version{MEAP_VERSION_MAJOR, MEAP_VERSION_MINOR, MEAP_VERSION_PATCH};

}  // namespace meap
