// Uses meap as a downstream project would: views, tensors, Philox, a linear layer (the GEMM
// backend the package chose: OpenBLAS through CBLAS when found, so the link is checked too), and
// an error it can catch.
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
  // y (3, 2) = x (3, 4) W^T with W all ones: every element is 4.
  std::vector<float> weight(8, 1.0f), out(6, 0.0f);
  meap::linear_forward<float>(meap::cpu{}, view.as_const(), meap::make_view(std::span<const float>(weight), {2, 4}),
                              meap::make_view(std::span<float>(out), {3, 2}));
  if (out[5] != 4.0f) return 1;
  std::printf("consumer: linear_forward through %s\n", meap::detail::cpu_impl::gemm_backend());
  std::printf("consumer: meap %d.%d.%d, %lld elements copied, first draw %u\n", meap::version.major,
              meap::version.minor, meap::version.patch, static_cast<long long>(copy.numel()), rng.next_u32());
  return copy.view()(2, 3) == 1.0f ? 0 : 1;
}
