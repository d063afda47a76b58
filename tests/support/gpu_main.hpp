// tests/support/gpu_main.hpp: main() for a `gpu`-labelled Boost.Test executable.
// Include after <boost/test/included/unit_test.hpp> with BOOST_TEST_NO_MAIN and
// BOOST_TEST_ALTERNATIVE_INIT_API defined. Without a CUDA device the executable prints why and
// exits with 77, which CTest (SKIP_RETURN_CODE) reports as skipped, never as passed.
#pragma once

#include <meap/cuda.hpp>

#include <cstdio>

int main(int argc, char* argv[]) {
  if (!meap::has_cuda_device()) {
    std::printf("SKIPPED: no CUDA device is available; this GPU test did not run\n");
    return 77;
  }
  cudaDeviceProp properties{};
  if (cudaGetDeviceProperties(&properties, 0) == cudaSuccess)
    std::printf("CUDA device 0: %s (sm_%d%d)\n", properties.name, properties.major, properties.minor);
  return boost::unit_test::unit_test_main(&init_unit_test, argc, argv);
}
