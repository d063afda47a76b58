// tests/support/gpu_main.hpp: main() for a `gpu`-labelled Boost.Test executable.
// Include after <boost/test/unit_test.hpp> with BOOST_TEST_NO_MAIN and
// BOOST_TEST_ALTERNATIVE_INIT_API defined. Without a CUDA device the executable prints why and
// exits with 77, which CTest (SKIP_RETURN_CODE) reports as skipped, never as passed.
// Two uses need no device: --list_content (Boost.Test lists the cases, so scripts can check the
// case names they use on any machine) and --help. `--device_probe` alone exits 0 when a device
// is there (and 77, as above, when not) without running anything.
#pragma once

#include <meap/cuda.hpp>

#include <cstdio>
#include <string_view>

int main(int argc, char* argv[]) {
  bool listing = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view argument = argv[i];
    listing = listing || argument.starts_with("--list_content") || argument == "--help";
  }
  if (!listing && !meap::has_cuda_device()) {
    std::printf("SKIPPED: no CUDA device is available; this GPU test did not run\n");
    return 77;
  }
  if (argc == 2 && std::string_view(argv[1]) == "--device_probe") return 0;
  if (!listing) {
    cudaDeviceProp properties{};
    if (cudaGetDeviceProperties(&properties, 0) == cudaSuccess)
      std::printf("CUDA device 0: %s (sm_%d%d)\n", properties.name, properties.major, properties.minor);
  }
  return boost::unit_test::unit_test_main(&init_unit_test, argc, argv);
}
