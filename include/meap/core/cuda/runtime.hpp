// meap/core/cuda/runtime.hpp: CUDA runtime errors, device queries and 16-bit type interop.
// Part of <meap/cuda.hpp>; compiled by nvcc only.
#pragma once
#if !defined(__CUDACC__)
#error "meap/core/cuda/*.hpp (and <meap/cuda.hpp>) must be compiled by nvcc: put this code in a .cu file"
#endif

#include <meap/core/device.hpp>
#include <meap/core/dtype.hpp>
#include <meap/core/error.hpp>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>
#include <type_traits>

namespace meap {

// A failed CUDA runtime call. what() names the call, where it was made and the runtime's message.
class cuda_error : public error {
 public:
  cuda_error(cudaError_t code, const std::string& message) : error(message), code_(code) {}
  cudaError_t code() const noexcept { return code_; }

 private:
  cudaError_t code_;
};

namespace detail {
inline void throw_on_cuda_error(cudaError_t code, const char* expression, const char* file, int line) {
  if (code == cudaSuccess) return;
  (void)cudaGetLastError();  // clear the sticky-free error state so later calls are not blamed
  throw cuda_error(code, std::string("meap: CUDA call ") + expression + " failed at " + file + ":" +
                             std::to_string(line) + ": " + cudaGetErrorName(code) + ": " + cudaGetErrorString(code));
}
}  // namespace detail

}  // namespace meap

// Throws meap::cuda_error when a CUDA runtime call fails.
#define MEAP_CUDA_CHECK(expression) ::meap::detail::throw_on_cuda_error((expression), #expression, __FILE__, __LINE__)

namespace meap {

static_assert(sizeof(half) == sizeof(__half) && alignof(half) == alignof(__half),
              "meap::half must be layout-compatible with __half");
static_assert(sizeof(bfloat16) == sizeof(__nv_bfloat16) && alignof(bfloat16) == alignof(__nv_bfloat16),
              "meap::bfloat16 must be layout-compatible with __nv_bfloat16");

// meap's 16-bit types and CUDA's, converted by bit pattern (no rounding involved).
MEAP_HOST_DEVICE inline __half to_native(half value) {
  __half_raw raw;
  raw.x = value.bits;
  return __half(raw);
}
MEAP_HOST_DEVICE inline __nv_bfloat16 to_native(bfloat16 value) {
  __nv_bfloat16_raw raw;
  raw.x = value.bits;
  return __nv_bfloat16(raw);
}
MEAP_HOST_DEVICE inline half from_native(__half value) {
  return half::from_bits(static_cast<__half_raw>(value).x);
}
MEAP_HOST_DEVICE inline bfloat16 from_native(__nv_bfloat16 value) {
  return bfloat16::from_bits(static_cast<__nv_bfloat16_raw>(value).x);
}

// The CUDA type with the same bits as a meap element type (T itself for the non-16-bit types).
template <class T>
struct native_type {
  using type = T;
};
template <>
struct native_type<half> {
  using type = __half;
};
template <>
struct native_type<bfloat16> {
  using type = __nv_bfloat16;
};
template <class T>
using native_t = typename native_type<T>::type;

// Number of usable CUDA devices; 0 when there is no device or no driver (never throws).
inline int cuda_device_count() noexcept {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return count;
}

inline bool has_cuda_device() noexcept { return cuda_device_count() > 0; }

inline void synchronize(const cuda& device) { MEAP_CUDA_CHECK(cudaStreamSynchronize(device.stream)); }

}  // namespace meap
