// meap/kernels/cpu/eigen.hpp: Eigen as the CPU kernels use it.
//
// The CPU kernels call Eigen from host code only. Under nvcc, Eigen marks its functions
// __host__ __device__ and nvcc then warns at every instantiation (#20015, "calling a constexpr
// __host__ function from a __host__ __device__ function"), which -Werror turns into a failed
// build of any .cu file that includes <meap/cuda.hpp>. EIGEN_NO_CUDA makes Eigen host-only in
// such a translation unit; the host code it compiles is the same. A translation unit that
// included Eigen before meap keeps its own configuration.
#pragma once

#if defined(__CUDACC__) && !defined(EIGEN_WORLD_VERSION) && !defined(EIGEN_NO_CUDA)
#define EIGEN_NO_CUDA
#endif

#include <Eigen/Core>
