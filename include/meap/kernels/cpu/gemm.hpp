// meap/kernels/cpu/gemm.hpp: the one general matrix product the large CPU GEMMs go through.
//
//   C (m, n) = alpha * op(A) (m, k) * op(B) (k, n) + beta * C      every matrix row-major
//
// op(X) is X or X^T; ld* are the row strides (elements) of the matrices as stored. With
// MEAP_HAS_CBLAS (set by meap::meap when CMake found an optimized BLAS, see cmake/meapBlas.cmake)
// float and double go to cblas_sgemm / cblas_dgemm; otherwise, and for sizes beyond a 32-bit
// BLAS, to Eigen's blocked GEMM. Call it from serial code: both backends parallelize a call
// themselves (Eigen over the OpenMP team; OpenBLAS's OpenMP build in that same team, its pthread
// build in a pool of its own, which is why the OpenMP build is the one to install).
// beta = 0 never reads C, so C may hold garbage (NaN) then, as BLAS specifies.
#pragma once

#include <meap/core/dims.hpp>

#include <meap/kernels/cpu/eigen.hpp>

#include <climits>
#include <type_traits>

#if defined(MEAP_HAS_CBLAS)
#include <cblas.h>
#endif

namespace meap::detail::cpu_impl {

enum class transpose : bool { no = false, yes = true };

template <class T>
void eigen_gemm(transpose trans_a, transpose trans_b, index_t m, index_t n, index_t k, T alpha, const T* a,
                index_t lda, const T* b, index_t ldb, T beta, T* c, index_t ldc) {
  using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using const_map = Eigen::Map<const matrix, Eigen::Unaligned, Eigen::OuterStride<>>;
  Eigen::Map<matrix, Eigen::Unaligned, Eigen::OuterStride<>> cm(c, m, n, Eigen::OuterStride<>(ldc));
  // A stored (m, k) or, transposed, (k, m); likewise B.
  const const_map am(a, trans_a == transpose::yes ? k : m, trans_a == transpose::yes ? m : k,
                     Eigen::OuterStride<>(lda));
  const const_map bm(b, trans_b == transpose::yes ? n : k, trans_b == transpose::yes ? k : n,
                     Eigen::OuterStride<>(ldb));
  auto product = [&](const auto& lhs, const auto& rhs) {
    if (beta == T(0)) {
      cm.noalias() = alpha * (lhs * rhs);
    } else {
      if (beta != T(1)) cm *= beta;
      cm.noalias() += alpha * (lhs * rhs);
    }
  };
  if (trans_a == transpose::no && trans_b == transpose::no) product(am, bm);
  else if (trans_a == transpose::no) product(am, bm.transpose());
  else if (trans_b == transpose::no) product(am.transpose(), bm);
  else product(am.transpose(), bm.transpose());
}

template <class T>
void gemm(transpose trans_a, transpose trans_b, index_t m, index_t n, index_t k, T alpha, const T* a, index_t lda,
          const T* b, index_t ldb, T beta, T* c, index_t ldc) {
  if (m == 0 || n == 0) return;
#if defined(MEAP_HAS_CBLAS)
  constexpr index_t blas_max = INT_MAX;
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    if (m <= blas_max && n <= blas_max && k <= blas_max && lda <= blas_max && ldb <= blas_max && ldc <= blas_max) {
      const auto ta = trans_a == transpose::yes ? CblasTrans : CblasNoTrans;
      const auto tb = trans_b == transpose::yes ? CblasTrans : CblasNoTrans;
      // k = 0 is a plain scaling of C, which BLAS handles; lda must still be >= 1.
      const auto ld = [](index_t x) { return static_cast<int>(x > 0 ? x : 1); };
      if constexpr (std::is_same_v<T, float>)
        cblas_sgemm(CblasRowMajor, ta, tb, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a,
                    ld(lda), b, ld(ldb), beta, c, ld(ldc));
      else
        cblas_dgemm(CblasRowMajor, ta, tb, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a,
                    ld(lda), b, ld(ldb), beta, c, ld(ldc));
      return;
    }
  }
#endif
  eigen_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// Which backend gemm() uses for float and double, for reports: "CBLAS" or "Eigen".
inline const char* gemm_backend() noexcept {
#if defined(MEAP_HAS_CBLAS)
  return "CBLAS";
#else
  return "Eigen";
#endif
}

}  // namespace meap::detail::cpu_impl
