// meap/core/cuda/tensor.hpp: the CUDA twins of core/tensor.hpp: device memory (stream-ordered
// allocation), fill, and copies within the device and between host and device.
// Part of <meap/cuda.hpp>; compiled by nvcc only.
#pragma once
#if !defined(__CUDACC__)
#error "meap/core/cuda/*.hpp (and <meap/cuda.hpp>) must be compiled by nvcc: put this code in a .cu file"
#endif

#include <meap/core/cuda/runtime.hpp>
#include <meap/core/device.hpp>
#include <meap/core/tensor.hpp>
#include <meap/core/tensor_view.hpp>

#include <cuda_runtime.h>

#include <string>
#include <string_view>

namespace meap {

// Stream-ordered allocation (cudaMallocAsync): memory is ready for work enqueued on the same
// stream, and freeing it waits for that work, so tensors can be dropped without a sync.
template <>
struct device_traits<cuda> {
  static void* allocate(const cuda& device, std::size_t bytes) {
    if (bytes == 0) return nullptr;
    void* pointer = nullptr;
    MEAP_CUDA_CHECK(cudaMallocAsync(&pointer, bytes, device.stream));
    return pointer;
  }
  static void deallocate(const cuda& device, void* pointer, std::size_t) noexcept {
    if (pointer != nullptr && cudaFreeAsync(pointer, device.stream) != cudaSuccess) (void)cudaGetLastError();
  }
  static void zero(const cuda& device, void* pointer, std::size_t bytes) {
    if (bytes != 0) MEAP_CUDA_CHECK(cudaMemsetAsync(pointer, 0, bytes, device.stream));
  }
  static device_location location(const cuda&) {
    int ordinal = 0;
    MEAP_CUDA_CHECK(cudaGetDevice(&ordinal));
    return {device_kind::cuda, ordinal};
  }
  // Page-locked host memory: cudaMemcpyAsync from it neither waits for the stream (a pageable
  // upload does) nor blocks the host.
  static void* allocate_host(const cuda&, std::size_t bytes) {
    if (bytes == 0) return nullptr;
    void* pointer = nullptr;
    MEAP_CUDA_CHECK(cudaMallocHost(&pointer, bytes));
    return pointer;
  }
  static void deallocate_host(const cuda&, void* pointer, std::size_t) noexcept {
    if (pointer != nullptr && cudaFreeHost(pointer) != cudaSuccess) (void)cudaGetLastError();
  }
  // Memory of another GPU than the current one would be read through the wrong device's page
  // tables (or fault): the current device must be the one the views were made on. cudaGetDevice
  // reads a thread-local value; it does not wait for the device.
  // Without a usable device (no driver, no GPU) there is nothing to compare with: the operation's
  // first CUDA call reports that instead.
  static void check_current(std::string_view function, std::string_view argument, const device_location& where) {
    int current = 0;
    if (cudaGetDevice(&current) != cudaSuccess) {
      (void)cudaGetLastError();
      return;
    }
    if (where.kind == device_kind::cuda && where.ordinal == current) return;
    std::string expected("memory on the current CUDA device cuda:");
    expected.append(std::to_string(current));
    if (where.kind == device_kind::cuda)
      expected.append(" (call cudaSetDevice(").append(std::to_string(where.ordinal)).append(") before the call)");
    std::string got("memory on ");
    got.append(to_string(where));
    throw_argument_error(function, argument, got, expected);
  }
};

namespace detail {

// dst: any shape and strides, rank <= max_rank. One thread per element (grid-stride).
template <class T>
__global__ void fill_kernel(tensor_view<T, cuda> dst, T value) {
  const index_t count = dst.numel();
  for (index_t linear = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; linear < count;
       linear += static_cast<index_t>(gridDim.x) * blockDim.x) {
    index_t rest = linear;
    index_t offset = 0;
    for (int axis = dst.rank() - 1; axis >= 0; --axis) {
      offset += (rest % dst.size(axis)) * dst.stride(axis);
      rest /= dst.size(axis);
    }
    dst.data()[offset] = value;
  }
}

inline cudaMemcpyKind copy_kind(device_kind from, device_kind to) {
  if (from == device_kind::cpu) return to == device_kind::cpu ? cudaMemcpyHostToHost : cudaMemcpyHostToDevice;
  return to == device_kind::cpu ? cudaMemcpyDeviceToHost : cudaMemcpyDeviceToDevice;
}

}  // namespace detail

// dst[i] = value on the stream of `device`.
template <class T>
void fill(const cuda& device, const tensor_view<T, cuda>& dst, std::type_identity_t<T> value) {
  static_assert(!std::is_const_v<T>, "meap::fill: dst must be a view of mutable elements");
  if (dst.empty()) return;
  constexpr int threads = 256;
  const index_t wanted = (dst.numel() + threads - 1) / threads;
  const int blocks = static_cast<int>(wanted < 65535 ? wanted : 65535);
  detail::fill_kernel<T><<<blocks, threads, 0, device.stream>>>(dst, value);
  MEAP_CUDA_CHECK(cudaGetLastError());
}

// Copy between any two of host and device memory, enqueued on the stream of `device`. Both views
// must be contiguous and of the same shape. A copy to pageable host memory returns when the data
// has arrived; otherwise it is asynchronous with respect to the host.
template <class S, class SD, class D, class DD>
  requires std::is_same_v<std::remove_const_t<S>, D>
void copy(const cuda& device, const tensor_view<S, SD>& src, const tensor_view<D, DD>& dst) {
  if (src.shape() != dst.shape())
    throw_argument_error("meap::copy", "dst", "shape " + to_string(dst.shape()),
                         "shape " + to_string(src.shape()) + ", the shape of 'src' (size mismatch)");
  check_contiguous("meap::copy", "src", src);
  check_contiguous("meap::copy", "dst", dst);
  if (src.empty()) return;
  MEAP_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), static_cast<std::size_t>(src.numel()) * sizeof(D),
                                  detail::copy_kind(SD::kind, DD::kind), device.stream));
}

// A device tensor holding a copy of host data.
template <class T>
tensor<std::remove_const_t<T>, cuda> to_device(const cuda& device, const tensor_view<T, cpu>& src) {
  tensor<std::remove_const_t<T>, cuda> result(device, src.shape());
  if (src.is_contiguous()) {
    copy(device, src, result.view());
  } else {
    const auto staged = clone(cpu{}, src);
    copy(device, staged.view(), result.view());
    synchronize(device);  // `staged` dies at the end of this scope
  }
  return result;
}

// A host tensor holding a copy of device data; waits for the stream.
template <class T>
tensor<std::remove_const_t<T>, cpu> to_host(const cuda& device, const tensor_view<T, cuda>& src) {
  tensor<std::remove_const_t<T>, cpu> result(cpu{}, src.shape());
  copy(device, src, result.view());
  synchronize(device);
  return result;
}

}  // namespace meap
