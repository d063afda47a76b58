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

#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

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

// The device's name, e.g. "NVIDIA H200".
inline std::string cuda_device_name(int ordinal) {
  cudaDeviceProp properties{};
  MEAP_CUDA_CHECK(cudaGetDeviceProperties(&properties, ordinal));
  return properties.name;
}

// Dense FLOPs per SM and clock, (2 per multiply-add) for a compute capability: on tensor cores
// with 16-bit inputs and float accumulation, or in float32 on the CUDA cores. From NVIDIA's
// architecture whitepapers (A100, H100, B200): 1024 / 2048 / 4096 bf16 multiply-adds per SM and
// clock for sm_8x, sm_90, sm_100; 64 (sm_80) or 128 float multiply-adds otherwise.
constexpr double cuda_flops_per_sm_clock(int major, int minor, bool tensor_cores) {
  if (tensor_cores) return major >= 10 ? 8192.0 : major == 9 ? 4096.0 : 2048.0;
  return (major == 8 && minor == 0) ? 128.0 : 256.0;
}

// Free and total memory of the current CUDA device, in bytes (cudaMemGetInfo).
struct cuda_memory_info {
  std::size_t free = 0;
  std::size_t total = 0;
};
inline cuda_memory_info cuda_memory() {
  cuda_memory_info info;
  MEAP_CUDA_CHECK(cudaMemGetInfo(&info.free, &info.total));
  return info;
}

// The peak dense FLOP/s of device `ordinal`: SMs x its peak clock x cuda_flops_per_sm_clock.
// NVIDIA's spec sheets quote bfloat16 at a lower clock than the one the device reports for some
// parts (989 TFLOP/s for H100 SXM is 132 SMs x 1.83 GHz x 4096), so MFU against this estimate
// errs low; pass the spec sheet's figure where it matters.
inline double cuda_peak_flops(int ordinal, bool tensor_cores) {
  int sms = 0, clock_khz = 0, major = 0, minor = 0;
  MEAP_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, ordinal));
  MEAP_CUDA_CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, ordinal));
  MEAP_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, ordinal));
  MEAP_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, ordinal));
  return static_cast<double>(sms) * static_cast<double>(clock_khz) * 1e3 *
         cuda_flops_per_sm_clock(major, minor, tensor_cores);
}

namespace detail {
// What meap keeps per stream (the cuBLASLt workspace): released by release_stream_resources.
using stream_release_hook = void (*)(cudaStream_t) noexcept;
inline std::vector<stream_release_hook>& stream_release_hooks() {
  static auto* hooks = new std::vector<stream_release_hook>();  // never destroyed: used at exit
  return *hooks;
}
inline std::mutex& stream_release_mutex() {
  static auto* mutex = new std::mutex();
  return *mutex;
}
inline void add_stream_release_hook(stream_release_hook hook) {
  const std::lock_guard lock(stream_release_mutex());
  auto& hooks = stream_release_hooks();
  for (const auto existing : hooks)
    if (existing == hook) return;
  hooks.push_back(hook);
}
}  // namespace detail

// Frees what meap keeps for `stream` (its cuBLASLt workspace), after the stream's work is done.
// Call it before destroying a stream of your own that meap ran GEMMs on; meap::cuda_stream does.
inline void release_stream_resources(cudaStream_t stream) {
  MEAP_CUDA_CHECK(cudaStreamSynchronize(stream));
  const std::lock_guard lock(detail::stream_release_mutex());
  for (const auto hook : detail::stream_release_hooks()) hook(stream);
}

// A CUDA stream on the current device, owned: destroyed (after meap's per-stream resources are
// released) with the object. Non-blocking with respect to the legacy default stream.
class cuda_stream {
 public:
  cuda_stream() { MEAP_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
  cuda_stream(const cuda_stream&) = delete;
  cuda_stream& operator=(const cuda_stream&) = delete;
  ~cuda_stream() {
    try {
      release_stream_resources(stream_);
    } catch (const cuda_error&) {
      // The context is gone or broken; the stream goes with it.
    }
    (void)cudaStreamDestroy(stream_);
  }
  cudaStream_t get() const noexcept { return stream_; }
  meap::cuda device() const noexcept { return meap::cuda(stream_); }

 private:
  cudaStream_t stream_ = nullptr;
};

}  // namespace meap
