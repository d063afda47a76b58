// An installed meap's DLPack exchange: a meap tensor handed out and taken back, same memory.
#include <meap/interop/dlpack.hpp>

#include <cstdio>

int main() {
  meap::tensor<float, meap::cpu> owned(meap::cpu{}, meap::dims{2, 3});
  for (int i = 0; i < 6; ++i) owned.data()[i] = static_cast<float>(i);
  const float* address = owned.data();
  meap::interop::dlpack_tensor back(meap::interop::to_dlpack(std::move(owned)));
  const auto view = back.view<const float, meap::cpu>();
  if (view.data() != address || view(1, 2) != 5.0f) {
    std::printf("consumer_dlpack: the round trip changed the tensor\n");
    return 1;
  }
  std::printf("consumer_dlpack: DLPack round trip of a (2, 3) float32 tensor, same memory\n");
  return 0;
}
