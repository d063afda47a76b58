// examples/cuda_device.hpp: the CUDA device the command-line examples run on (nvcc only: included
// by their .cu halves). Checks the ordinal of --device against the devices present and makes it
// current; the caller then creates its stream there.
#pragma once

#include <meap/cuda.hpp>

#include <string>

namespace meap_examples {

inline void select_cuda_device(const char* program, const std::string& device, int ordinal) {
  const int devices = meap::cuda_device_count();
  if (ordinal >= devices)
    meap::throw_argument_error(program, "--device", device,
                               "a CUDA device in [0, " + std::to_string(devices) + ") (" + std::to_string(devices) +
                                   " found)");
  MEAP_CUDA_CHECK(cudaSetDevice(ordinal));
}

}  // namespace meap_examples
