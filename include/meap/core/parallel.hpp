// meap/core/parallel.hpp: OpenMP spelled so that a build without it compiles cleanly.
//
// The CPU kernels split work with OpenMP when the compiler has it enabled (meap::meap links
// OpenMP::OpenMP_CXX when MEAP_ENABLE_OPENMP is ON). Without -fopenmp a bare `#pragma omp` would
// trip -Wunknown-pragmas (part of -Wall), so the pragmas go through MEAP_OMP, which expands to
// nothing there; the kernels then run serially and give the same results.
#pragma once

#include <meap/core/config.hpp>

#if defined(_OPENMP)
#include <omp.h>
#define MEAP_OMP(directive) _Pragma(#directive)
#else
#define MEAP_OMP(directive)
#endif

namespace meap::detail::cpu_impl {

// Threads a parallel region started here would use (1 without OpenMP).
inline int max_threads() noexcept {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// This thread's index inside the current parallel region (0 outside one or without OpenMP).
inline int thread_index() noexcept {
#if defined(_OPENMP)
  return omp_get_thread_num();
#else
  return 0;
#endif
}

}  // namespace meap::detail::cpu_impl
