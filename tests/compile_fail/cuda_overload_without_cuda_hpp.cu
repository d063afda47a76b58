// Must not compile: a CUDA translation unit uses a meap::cuda overload (device memory and a copy
// on a CUDA stream) without #include <meap/cuda.hpp>. The error must say which header is missing.
#include <meap/meap.hpp>

int main() {
  meap::tensor<float, meap::cuda> device_buffer(meap::cuda{}, {4});
  meap::tensor<float, meap::cpu> host_buffer(meap::cpu{}, {4});
  meap::copy(meap::cuda{}, host_buffer.view(), device_buffer.view());
  return 0;
}
