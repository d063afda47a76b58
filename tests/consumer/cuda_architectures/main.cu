#include <meap/cuda.hpp>
int main() { return meap::has_cuda_device() ? 0 : 0; }
