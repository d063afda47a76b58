// meap/kernels/cuda/attention_mma.cuh: the raw sm_80 instructions the tensor-core attention
// kernels are built from (CuTe's split: instruction here, layouts in attention_plan.hpp, the
// algorithm in attention_tc.cuh): mma.sync m16n8k16 with f32 accumulators, ldmatrix, cp.async,
// and float -> 16-bit packing. Internal to <meap/kernels/cuda/attention.hpp>; nvcc only.
//
// The instructions exist from sm_80 on. Compiled for an older architecture, a kernel that reaches
// one traps; the host code never launches them there (it checks the compute capability first and
// throws meap::error).
#pragma once
#if !defined(__CUDACC__)
#error "meap/kernels/cuda/*.cuh must be compiled by nvcc: include <meap/cuda.hpp> from a .cu file"
#endif

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace meap::detail::cuda_attention {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define MEAP_ATTENTION_SM80_OR_TRAP(...) __trap()
#else
#define MEAP_ATTENTION_SM80_OR_TRAP(...) __VA_ARGS__
#endif

// 32-bit shared-memory address of a generic pointer into shared memory.
__device__ __forceinline__ std::uint32_t smem_address(const void* pointer) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(pointer));
}

// d += a b for one 16 x 8 x 16 tile: a = 4 registers (8 x 16-bit), b = 2 registers, d = 4 floats.
template <class E>
__device__ __forceinline__ void mma_16816(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                          std::uint32_t b1) {
  static_assert(std::is_same_v<E, __half> || std::is_same_v<E, __nv_bfloat16>);
  if constexpr (std::is_same_v<E, __half>) {
    MEAP_ATTENTION_SM80_OR_TRAP(asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1)));
  } else {
    MEAP_ATTENTION_SM80_OR_TRAP(asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1)));
  }
}

// Four 8 x 8 matrices of 16-bit elements; this lane gives the address of one row (see ldmatrix_x4
// in attention_plan.hpp for which).
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], const void* row) {
  MEAP_ATTENTION_SM80_OR_TRAP(asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                                           : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                                           : "r"(smem_address(row))));
}
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* row) {
  MEAP_ATTENTION_SM80_OR_TRAP(asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                                           : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                                           : "r"(smem_address(row))));
}

// 16 bytes global -> shared, asynchronous, bypassing L1; when !valid the 16 bytes are zero-filled
// and nothing is read (`source` must still be a valid address, so callers pass a tensor's base).
__device__ __forceinline__ void cp_async_16(void* destination, const void* source, bool valid) {
  MEAP_ATTENTION_SM80_OR_TRAP(asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_address(destination)),
                                           "l"(source), "r"(valid ? 16 : 0)
                                           : "memory"));
}
// 4 bytes (a float), zero-filled when !valid.
__device__ __forceinline__ void cp_async_4(void* destination, const void* source, bool valid) {
  MEAP_ATTENTION_SM80_OR_TRAP(asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_address(destination)),
                                           "l"(source), "r"(valid ? 4 : 0)
                                           : "memory"));
}
__device__ __forceinline__ void cp_async_commit() {
  MEAP_ATTENTION_SM80_OR_TRAP(asm volatile("cp.async.commit_group;\n" ::: "memory"));
}
// Waits until at most `Pending` of this thread's committed groups are still in flight.
template <int Pending>
__device__ __forceinline__ void cp_async_wait() {
  MEAP_ATTENTION_SM80_OR_TRAP(asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending) : "memory"));
}

// Two floats -> one register of two 16-bit values, lo in the low half (round to nearest even).
template <class E>
__device__ __forceinline__ std::uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same_v<E, __half>) {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const std::uint32_t*>(&v);
  } else {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const std::uint32_t*>(&v);
  }
}

// Loads and stores of one element as float, for the 16-bit native types and float.
template <class E>
__device__ __forceinline__ float to_float(E value) {
  if constexpr (std::is_same_v<E, __half>)
    return __half2float(value);
  else if constexpr (std::is_same_v<E, __nv_bfloat16>)
    return __bfloat162float(value);
  else
    return static_cast<float>(value);
}
template <class E>
__device__ __forceinline__ E from_float(float value) {
  if constexpr (std::is_same_v<E, __half>)
    return __float2half_rn(value);
  else if constexpr (std::is_same_v<E, __nv_bfloat16>)
    return __float2bfloat16_rn(value);
  else
    return static_cast<E>(value);
}

// Reductions over the 4 lanes of a quad (the lanes that share accumulator rows).
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

}  // namespace meap::detail::cuda_attention

#undef MEAP_ATTENTION_SM80_OR_TRAP
