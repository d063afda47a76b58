// meap/kernels/cuda/gemm.hpp: row-major GEMMs on CUDA through cuBLASLt.
//
//   C (m, n) = alpha op(A) (m, k) op(B) (k, n) + beta C         every matrix row-major
//
// Element types (A and B share one; C may be wider): float x float -> float, and half or
// bfloat16 inputs with C of the same type or float. Products accumulate in float
// (CUBLAS_COMPUTE_32F; gemm_options::allow_tf32 lets float inputs use TF32 tensor cores).
// beta = 0 never reads C, so C may hold garbage (NaN), as BLAS specifies.
//
// cuBLASLt is column-major: the call computes C^T = op(B)^T op(A)^T, which is the same memory
// (kernels/cuda/plan.hpp: to_column_major, tested on the host). One cublasLt handle per device is
// created on first use and cached for the process, as is, per shape, dtype and pointer alignment,
// the matmul descriptor and the algorithm the heuristic picked: a repeated GEMM costs one
// cublasLtMatmul call, and always runs the same algorithm, so results are bitwise reproducible
// run to run on one GPU. A 32 MiB workspace is kept per (device, stream) (two streams running at
// once must not share one): at most 8 of them, the least recently used freed when a ninth stream
// comes; meap::release_stream_resources(stream) (called by meap::cuda_stream's destructor) frees a
// stream's at once. release_cublaslt_resources() frees every cache (e.g. before a leak check);
// otherwise they live until the process ends, because CUDA objects must not be destroyed from
// static destructors that run after the runtime has shut down.
// Part of <meap/cuda.hpp>; compiled by nvcc only.
#pragma once
#if !defined(__CUDACC__)
#error "meap/kernels/cuda/*.hpp (and <meap/cuda.hpp>) must be compiled by nvcc: put this code in a .cu file"
#endif

#include <meap/core/cuda/runtime.hpp>
#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/dtype.hpp>
#include <meap/core/error.hpp>
#include <meap/core/tensor_view.hpp>
#include <meap/kernels/cuda/plan.hpp>
#include <meap/kernels/cuda/support.hpp>

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cmath>
#include <compare>
#include <cstdint>
#include <iterator>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace meap {

// A failed cuBLASLt call: what() names the call, the place and cuBLASLt's status.
class cublas_error : public error {
 public:
  cublas_error(cublasStatus_t code, const std::string& message) : error(message), code_(code) {}
  cublasStatus_t code() const noexcept { return code_; }

 private:
  cublasStatus_t code_;
};

namespace detail {
inline void throw_on_cublas_error(cublasStatus_t code, const char* expression, const char* file, int line) {
  if (code == CUBLAS_STATUS_SUCCESS) return;
  throw cublas_error(code, std::string("meap: cuBLASLt call ") + expression + " failed at " + file + ":" +
                               std::to_string(line) + ": " + cublasLtGetStatusName(code) + ": " +
                               cublasLtGetStatusString(code));
}
}  // namespace detail

}  // namespace meap

#define MEAP_CUBLAS_CHECK(expression) \
  ::meap::detail::throw_on_cublas_error((expression), #expression, __FILE__, __LINE__)

namespace meap {

enum class gemm_transpose : bool { no = false, yes = true };

// (A/B element, C element) pairs cuBLASLt supports with float accumulation and float scalars.
template <class T, class C>
concept cuda_gemm_types = (std::is_same_v<T, float> && std::is_same_v<C, float>) ||
                          ((std::is_same_v<T, half> || std::is_same_v<T, bfloat16>) &&
                           (std::is_same_v<C, T> || std::is_same_v<C, float>));

struct gemm_options {
  float alpha = 1.0f;
  float beta = 0.0f;
  // float inputs only: let cuBLASLt round A and B to TF32 on tensor cores (CUBLAS_COMPUTE_32F_FAST_TF32),
  // about 8x faster on A100/H100 with a 10-bit mantissa. Off: full float products.
  bool allow_tf32 = false;
};

namespace detail::cuda_impl {

template <class T>
constexpr cudaDataType_t cuda_data_type() {
  if constexpr (std::is_same_v<T, float>) return CUDA_R_32F;
  else if constexpr (std::is_same_v<T, half>) return CUDA_R_16F;
  else return CUDA_R_16BF;
}

// Everything a matmul descriptor and the algorithm choice depend on.
struct gemm_key {
  int device = 0;
  int a_type = 0;
  int c_type = 0;
  int compute = 0;
  bool trans_a = false;  // cuBLASLt's (column-major) operands
  bool trans_b = false;
  std::uint64_t m = 0, n = 0, k = 0;
  std::int64_t lda = 0, ldb = 0, ldc = 0;
  std::uint32_t align_a = 0, align_b = 0, align_c = 0;
  friend auto operator<=>(const gemm_key&, const gemm_key&) = default;
};

// A matmul descriptor, its three layouts (C doubles as D) and the algorithm the heuristic chose.
struct gemm_plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};

  gemm_plan() = default;
  gemm_plan(const gemm_plan&) = delete;
  gemm_plan& operator=(const gemm_plan&) = delete;
  ~gemm_plan() {
    if (c != nullptr) (void)cublasLtMatrixLayoutDestroy(c);
    if (b != nullptr) (void)cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) (void)cublasLtMatrixLayoutDestroy(a);
    if (desc != nullptr) (void)cublasLtMatmulDescDestroy(desc);
  }
};

// The process-wide cuBLASLt state; every member function takes the lock.
class cublaslt_cache {
 public:
  static constexpr std::size_t workspace_bytes = std::size_t{32} << 20;  // NVIDIA's recommendation for Hopper
  static constexpr std::size_t max_workspaces = 8;                      // streams; beyond that, the least recent goes
  static constexpr std::size_t max_plans = 4096;                        // shapes; beyond that, start over

  static cublaslt_cache& instance() {
    // Never destroyed: see the top of this file.
    static cublaslt_cache* cache = new cublaslt_cache;
    return *cache;
  }

  cublasLtHandle_t handle(int device) {
    const std::lock_guard lock(mutex_);
    return handle_locked(device);
  }

  // The workspace of (device, stream). Shared: a GEMM holds it while it enqueues, so that an
  // eviction meanwhile frees it only afterwards (cudaFree waits for the work that uses it).
  std::shared_ptr<void> workspace(int device, cudaStream_t stream) {
    add_stream_release_hook(&release_stream_hook);
    const std::lock_guard lock(mutex_);
    auto& entry = workspaces_[{device, stream}];
    entry.last_use = ++clock_;
    if (entry.memory != nullptr) return entry.memory;
    if (workspaces_.size() > max_workspaces) {
      auto oldest = workspaces_.end();
      for (auto it = workspaces_.begin(); it != workspaces_.end(); ++it)
        if (it->second.memory != nullptr && (oldest == workspaces_.end() || it->second.last_use < oldest->second.last_use))
          oldest = it;
      if (oldest != workspaces_.end()) workspaces_.erase(oldest);
    }
    void* pointer = nullptr;
    MEAP_CUDA_CHECK(cudaMalloc(&pointer, workspace_bytes));
    entry.memory = std::shared_ptr<void>(pointer, [device](void* p) {
      int current = 0;
      if (cudaGetDevice(&current) == cudaSuccess && cudaSetDevice(device) == cudaSuccess) {
        (void)cudaFree(p);
        (void)cudaSetDevice(current);
      }
      (void)cudaGetLastError();
    });
    return entry.memory;
  }

  // Frees the workspaces of `stream` (on every device), once no GEMM holds them.
  void release_stream(cudaStream_t stream) {
    const std::lock_guard lock(mutex_);
    for (auto it = workspaces_.begin(); it != workspaces_.end();)
      it = it->first.second == stream ? workspaces_.erase(it) : std::next(it);
  }

  std::size_t workspace_count() {
    const std::lock_guard lock(mutex_);
    return workspaces_.size();
  }

  // The plan for `key`, made on first use by `make(handle, plan)`. Shared: a caller keeps its plan
  // alive even if another thread starts the cache over meanwhile.
  template <class Make>
  std::shared_ptr<const gemm_plan> plan(const gemm_key& key, Make&& make) {
    const std::lock_guard lock(mutex_);
    if (const auto found = plans_.find(key); found != plans_.end()) return found->second;
    if (plans_.size() >= max_plans) plans_.clear();
    auto made = std::make_shared<gemm_plan>();
    make(handle_locked(key.device), *made);
    plans_.emplace(key, made);
    return made;
  }

  // Frees handles, workspaces and plans after waiting for every device that has a workspace.
  void release() {
    const std::lock_guard lock(mutex_);
    plans_.clear();
    int current = 0;
    MEAP_CUDA_CHECK(cudaGetDevice(&current));
    for (const auto& [where, entry] : workspaces_) {
      MEAP_CUDA_CHECK(cudaSetDevice(where.first));
      MEAP_CUDA_CHECK(cudaDeviceSynchronize());
    }
    MEAP_CUDA_CHECK(cudaSetDevice(current));
    workspaces_.clear();
    for (auto& [device, h] : handles_) MEAP_CUBLAS_CHECK(cublasLtDestroy(h));
    handles_.clear();
  }

 private:
  struct workspace_entry {
    std::shared_ptr<void> memory;
    std::uint64_t last_use = 0;
  };

  static void release_stream_hook(cudaStream_t stream) noexcept {
    try {
      instance().release_stream(stream);
    } catch (...) {
    }
  }

  cublasLtHandle_t handle_locked(int device) {
    auto& h = handles_[device];
    if (h == nullptr) MEAP_CUBLAS_CHECK(cublasLtCreate(&h));
    return h;
  }

  std::mutex mutex_;
  std::map<int, cublasLtHandle_t> handles_;
  std::map<std::pair<int, cudaStream_t>, workspace_entry> workspaces_;
  std::uint64_t clock_ = 0;
  std::map<gemm_key, std::shared_ptr<const gemm_plan>> plans_;
};

// C (m, n) *= beta (beta = 0 writes zeros, never reading C): what a GEMM with k = 0 does.
// Grid-stride over the m x n elements of a matrix with row stride ldc.
template <class C>
__global__ void scale_matrix_kernel(C* c, index_t m, index_t n, index_t ldc, float beta) {
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < m * n;
       i += static_cast<index_t>(gridDim.x) * blockDim.x) {
    C& x = c[(i / n) * ldc + i % n];
    x = beta == 0.0f ? from_float<C>(0.0f) : from_float<C>(beta * to_float(x));
  }
}

// Unchecked: row-major C (m, n) = alpha op(A) op(B) + beta C with row strides lda, ldb, ldc.
template <class T, class C>
  requires cuda_gemm_types<T, C>
void gemm(const cuda& device, gemm_transpose trans_a, gemm_transpose trans_b, index_t m, index_t n, index_t k,
          const T* a, index_t lda, const T* b, index_t ldb, C* c, index_t ldc, const gemm_options& options = {}) {
  if (m == 0 || n == 0 || (k == 0 && options.beta == 1.0f)) return;
  if (k == 0) {
    constexpr int threads = 256;
    scale_matrix_kernel<C><<<cuda_plan::grid_size(m * n, threads), threads, 0, device.stream>>>(c, m, n, ldc,
                                                                                              options.beta);
    check_launch();
    return;
  }
  const auto layout = cuda_plan::to_column_major(trans_a == gemm_transpose::yes, trans_b == gemm_transpose::yes, m, n,
                                                 k, lda, ldb, ldc);
  const bool tf32 = std::is_same_v<T, float> && options.allow_tf32;
  gemm_key key;
  MEAP_CUDA_CHECK(cudaGetDevice(&key.device));
  key.a_type = static_cast<int>(cuda_data_type<T>());
  key.c_type = static_cast<int>(cuda_data_type<C>());
  key.compute = static_cast<int>(tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F);
  key.trans_a = layout.a.transposed;
  key.trans_b = layout.b.transposed;
  key.m = layout.m;
  key.n = layout.n;
  key.k = layout.k;
  key.lda = layout.a.ld;
  key.ldb = layout.b.ld;
  key.ldc = layout.c.ld;
  // cuBLASLt's A is meap's b, its B meap's a (see plan.hpp).
  key.align_a = cuda_plan::pointer_alignment(reinterpret_cast<std::uintptr_t>(b));
  key.align_b = cuda_plan::pointer_alignment(reinterpret_cast<std::uintptr_t>(a));
  key.align_c = cuda_plan::pointer_alignment(reinterpret_cast<std::uintptr_t>(c));

  auto& cache = cublaslt_cache::instance();
  const std::shared_ptr<void> workspace_memory = cache.workspace(key.device, device.stream);
  const std::pair<void*, std::size_t> workspace{workspace_memory.get(), cublaslt_cache::workspace_bytes};
  const auto plan = cache.plan(key, [&](cublasLtHandle_t handle, gemm_plan& made) {
    MEAP_CUBLAS_CHECK(cublasLtMatmulDescCreate(&made.desc, static_cast<cublasComputeType_t>(key.compute), CUDA_R_32F));
    const cublasOperation_t op_a = key.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_b = key.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    MEAP_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(made.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a));
    MEAP_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(made.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b));
    MEAP_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&made.a, cuda_data_type<T>(), layout.a.rows, layout.a.columns,
                                                 layout.a.ld));
    MEAP_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&made.b, cuda_data_type<T>(), layout.b.rows, layout.b.columns,
                                                 layout.b.ld));
    MEAP_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&made.c, cuda_data_type<C>(), layout.c.rows, layout.c.columns,
                                                 layout.c.ld));
    cublasLtMatmulPreference_t preference = nullptr;
    MEAP_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&preference));
    const auto destroy = [&] { (void)cublasLtMatmulPreferenceDestroy(preference); };
    try {
      const std::size_t bytes = workspace.second;
      MEAP_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                             &bytes, sizeof bytes));
      const std::pair<cublasLtMatmulPreferenceAttributes_t, std::uint32_t> alignments[] = {
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_a},
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_b},
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_c},
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_c}};
      for (const auto& [attribute, value] : alignments)
        MEAP_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(preference, attribute, &value, sizeof value));
      cublasLtMatmulHeuristicResult_t result{};
      int found = 0;
      MEAP_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(handle, made.desc, made.a, made.b, made.c, made.c, preference, 1,
                                                       &result, &found));
      if (found == 0 || result.state != CUBLAS_STATUS_SUCCESS)
        throw cublas_error(CUBLAS_STATUS_NOT_SUPPORTED,
                           "meap::gemm: cuBLASLt has no algorithm for (m, n, k) = (" + std::to_string(m) + ", " +
                               std::to_string(n) + ", " + std::to_string(k) + ") with these types and alignments");
      made.algo = result.algo;
    } catch (...) {
      destroy();
      throw;
    }
    destroy();
  });
  MEAP_CUBLAS_CHECK(cublasLtMatmul(cache.handle(key.device), plan->desc, &options.alpha, b, plan->a, a, plan->b,
                                   &options.beta, c, plan->c, c, plan->c, &plan->algo, workspace.first,
                                   workspace.second, device.stream));
}

// Row stride of a matrix view whose last axis is contiguous (a one-row view may have any row stride).
template <class T>
index_t row_stride(const tensor_view<T, cuda>& view) {
  return view.size(0) <= 1 ? (view.size(1) > 0 ? view.size(1) : 1) : view.stride(0);
}

template <class T>
void check_gemm_matrix(std::string_view function, std::string_view argument, const tensor_view<T, cuda>& view) {
  check_argument(view.rank() == 2, function, argument, "shape " + to_string(view.shape()), "a rank-2 (matrix) shape");
  const bool rows_ok = view.size(1) <= 1 || view.stride(1) == 1;
  const bool stride_ok = view.size(0) <= 1 || view.stride(0) >= view.size(1);
  check_argument(rows_ok && stride_ok, function, argument,
                 "shape " + to_string(view.shape()) + " strides " + to_string(view.strides()),
                 "row-major rows: unit column stride and a row stride >= the column count");
}

}  // namespace detail::cuda_impl

// c (m, n) = alpha op(a) op(b) + beta c on the stream of `device`. Each view is a row-major
// matrix whose rows may be padded (unit column stride, row stride >= columns); op(a) must be
// (m, k) and op(b) (k, n). T is given explicitly, C is taken from c.
template <class T, class C>
  requires cuda_gemm_types<T, C>
void gemm(const cuda& device, std::type_identity_t<tensor_view<const T, cuda>> a, gemm_transpose trans_a,
          std::type_identity_t<tensor_view<const T, cuda>> b, gemm_transpose trans_b, const tensor_view<C, cuda>& c,
          const gemm_options& options = {}) {
  constexpr std::string_view function = "meap::gemm";
  detail::cuda_impl::check_gemm_matrix(function, "a", a);
  detail::cuda_impl::check_gemm_matrix(function, "b", b);
  detail::cuda_impl::check_gemm_matrix(function, "c", c);
  const bool ta = trans_a == gemm_transpose::yes, tb = trans_b == gemm_transpose::yes;
  const index_t m = ta ? a.size(1) : a.size(0), k = ta ? a.size(0) : a.size(1);
  const index_t n = tb ? b.size(0) : b.size(1);
  check_argument((tb ? b.size(1) : b.size(0)) == k, function, "b", "shape " + to_string(b.shape()),
                 std::string("op(b) with ") + std::to_string(k) + " rows, the columns of op(a) (a " +
                     to_string(a.shape()) + (ta ? ", transposed)" : ")"));
  check_shape(function, "c", c, dims{m, n});
  check_argument(std::isfinite(options.alpha) && std::isfinite(options.beta), function, "options",
                 "alpha = " + std::to_string(options.alpha) + ", beta = " + std::to_string(options.beta),
                 "finite scalars");
  check_colocated<cuda>(function, {at("a", a), at("b", b), at("c", c)});
  detail::cuda_impl::gemm<T, C>(device, trans_a, trans_b, m, n, k, a.data(), detail::cuda_impl::row_stride(a),
                                b.data(), detail::cuda_impl::row_stride(b), c.data(), detail::cuda_impl::row_stride(c),
                                options);
}

// Frees the cached cuBLASLt handles, workspaces and plans (waiting for the devices first). The
// next GEMM creates them again.
inline void release_cublaslt_resources() { detail::cuda_impl::cublaslt_cache::instance().release(); }

// How many per-stream cuBLASLt workspaces meap holds now (at most 8).
inline std::size_t cublaslt_workspace_count() { return detail::cuda_impl::cublaslt_cache::instance().workspace_count(); }

}  // namespace meap
