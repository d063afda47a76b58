// tensor_tour: meap's core in one page: element types, views over your own memory, owning
// tensors, checked construction, and the counter-based RNG that keys every random mask.
#include <meap/meap.hpp>

#include <cstdio>
#include <exception>
#include <numeric>
#include <vector>

static int run() {
  // 16-bit floats are storage types that round to nearest even and compute in float.
  const meap::half h = 0.1f;
  const meap::bfloat16 b = 0.1f;
  std::printf("0.1 as float16 = %.8f (bits 0x%04x), as bfloat16 = %.8f (bits 0x%04x)\n", static_cast<float>(h),
              h.bits, static_cast<float>(b), b.bits);

  // A view over memory you own: (batch 2, time 3, features 4), row-major.
  std::vector<float> activations(2 * 3 * 4);
  std::iota(activations.begin(), activations.end(), 0.0f);
  const auto x = meap::make_view(std::span<float>(activations), {2, 3, 4});
  const auto last_step = x.select(1, 2);  // (2, 4)
  std::printf("x%s, x[:, 2, :]%s strides %s, x[1, 2, 3] = %.0f\n", meap::to_string(x.shape()).c_str(),
              meap::to_string(last_step.shape()).c_str(), meap::to_string(last_step.strides()).c_str(),
              last_step(1, 3));

  // Owning tensors copy explicitly; a strided view copies element by element.
  meap::cpu host;
  auto transposed = meap::zeros<float>(host, {4, 3});
  meap::copy(host, x.select(0, 0).transpose(0, 1).as_const(), transposed.view());
  std::printf("x[0]^T row 1: %.0f %.0f %.0f\n", transposed.view()(1, 0), transposed.view()(1, 1),
              transposed.view()(1, 2));

  // Bad input is rejected at the door with a message that names the argument.
  try {
    (void)meap::make_view(activations.data(), 24, {5, 5}, {5, 1});
  } catch (const meap::error& e) {
    std::printf("rejected: %s\n", e.what());
  }

  // Philox: the same (seed, step, row) gives the same draws on any device, in any order.
  meap::philox_stream step7_row0(/*seed=*/1234, /*stream=step*/ 7, /*substream=row*/ 0);
  std::printf("masked positions drawn for step 7, row 0, T = 64:");
  for (int i = 0; i < 6; ++i) std::printf(" %u", step7_row0.next_below(64));
  std::printf("\n");
  return 0;
}

// Anything unexpected ends the program with one line and a non-zero exit.
int main() {
  try {
    return run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", "tensor_tour", e.what());
  } catch (...) {
    std::fprintf(stderr, "%s: unknown error\n", "tensor_tour");
  }
  return 1;
}
