// meap/core/device.hpp: device tags. The device is a tag type chosen by overload, as Thrust's
// execution policies are: meap::cpu{} runs on the host, meap::cuda{stream} enqueues work on a
// CUDA stream. Operations on meap::cuda are defined in <meap/cuda.hpp>, which only nvcc compiles;
// without it, using a CUDA overload stops compilation with a message that says so.
#pragma once

#include <meap/core/config.hpp>
#include <meap/core/host_memory.hpp>

#include <cstddef>
#include <cstring>
#include <new>
#include <string>
#include <string_view>
#include <type_traits>

// The CUDA runtime's cudaStream_t is `CUstream_st*`; naming the incomplete struct keeps this
// header free of CUDA includes while the tag still carries a real stream.
struct CUstream_st;

namespace meap {

enum class device_kind { cpu, cuda };

constexpr std::string_view to_string(device_kind kind) noexcept {
  return kind == device_kind::cpu ? "cpu" : "cuda";
}

// Host execution (Eigen + OpenMP in the kernels). Stateless.
struct cpu {
  static constexpr device_kind kind = device_kind::cpu;
};

// CUDA execution on `stream` (nullptr: the legacy default stream). Memory belongs to the device
// that is current when it is allocated, as in the CUDA runtime.
struct cuda {
  static constexpr device_kind kind = device_kind::cuda;
  CUstream_st* stream = nullptr;

  constexpr cuda() = default;
  constexpr explicit cuda(CUstream_st* s) : stream(s) {}
};

template <class T>
inline constexpr bool is_device_v = std::is_same_v<T, cpu> || std::is_same_v<T, cuda>;

template <class T>
concept device = is_device_v<T>;

// A location: device kind plus ordinal (always 0 for the CPU). Views carry one so that mixing
// memory from two places is caught at the door.
struct device_location {
  device_kind kind = device_kind::cpu;
  int ordinal = 0;

  friend constexpr bool operator==(const device_location&, const device_location&) = default;
};

// "cpu" or "cuda:1". Built with append: GCC 12 at -O3 reports a bogus -Wrestrict in an inlined
// `"literal" + std::string&&`, and nvcc's host pass cannot be given -Wno-restrict by meap.
inline std::string to_string(const device_location& where) {
  std::string text(to_string(where.kind));
  if (where.kind != device_kind::cpu) {
    text.append(":");
    text.append(std::to_string(where.ordinal));
  }
  return text;
}

namespace detail {
template <class>
inline constexpr bool dependent_false = false;
}  // namespace detail

// Memory management per device: allocate, deallocate, zero. The CPU specialization is here; the
// CUDA one lives in <meap/cuda.hpp>. The primary template is what a translation unit sees when it
// uses meap::cuda without that header.
template <class Device>
struct device_traits {
  static_assert(detail::dependent_false<Device>,
                "meap: operations on meap::cuda need #include <meap/cuda.hpp> "
                "(in a CUDA translation unit compiled by nvcc, linked to meap::cuda)");
};

// What every device_traits<Device> provides: allocate / deallocate / zero raw memory, the
// location of new allocations, and check_current(function, argument, where), which throws
// meap::error when memory at `where` cannot be used by work enqueued on this device now (on
// CUDA: memory of another GPU than the current one). Front doors call it once, after their
// shared checks.
template <>
struct device_traits<cpu> {
  // 64-byte alignment: one cache line, and enough for any SIMD load Eigen emits. Large blocks
  // are cached for reuse (core/host_memory.hpp).
  static constexpr std::size_t alignment = detail::host_block_cache::alignment;

  static void* allocate(const cpu&, std::size_t bytes) {
    if (bytes == 0) return nullptr;
    return detail::host_block_cache::instance().allocate(bytes);
  }
  static void deallocate(const cpu&, void* pointer, std::size_t bytes) noexcept {
    if (pointer != nullptr) detail::host_block_cache::instance().deallocate(pointer, bytes);
  }
  static void zero(const cpu&, void* pointer, std::size_t bytes) noexcept {
    if (bytes != 0) std::memset(pointer, 0, bytes);
  }
  static device_location location(const cpu&) noexcept { return {device_kind::cpu, 0}; }
  static void check_current(std::string_view, std::string_view, const device_location&) noexcept {}
  // Host memory the device copies from and to without waiting (core/tensor.hpp: host_staging).
  static void* allocate_host(const cpu& device, std::size_t bytes) { return allocate(device, bytes); }
  static void deallocate_host(const cpu& device, void* pointer, std::size_t bytes) noexcept {
    deallocate(device, pointer, bytes);
  }
};

// Waits until the work enqueued on `device` is done: nothing to wait for on the CPU (the CUDA
// overload is in <meap/cuda.hpp>). Generic code calls it where a CUDA stream must be waited for.
inline void synchronize(const cpu&) noexcept {}

}  // namespace meap
