// Uses meap as a downstream project would: views, tensors, Philox, and an error it can catch.
#include <meap/meap.hpp>

#include <cstdio>
#include <vector>

int main() {
  std::vector<float> data(12, 1.0f);
  const auto view = meap::make_view(std::span<float>(data), {3, 4});
  auto copy = meap::clone(meap::cpu{}, view);
  meap::philox_stream rng(7, 0);
  try {
    (void)view.reshape({5, 5});
    return 1;
  } catch (const meap::error& e) {
    std::printf("consumer: caught %s\n", e.what());
  }
  std::printf("consumer: meap %d.%d.%d, %lld elements copied, first draw %u\n", meap::version.major,
              meap::version.minor, meap::version.patch, static_cast<long long>(copy.numel()), rng.next_u32());
  return copy.view()(2, 3) == 1.0f ? 0 : 1;
}
