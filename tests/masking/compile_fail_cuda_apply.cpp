// Must not compile: host code masks a batch on meap::cuda without <meap/cuda.hpp> (which only
// nvcc compiles). The error must say which header is missing.
#include <meap/masking/apply.hpp>
#include <meap/masking/fixed_ratio.hpp>

#include <cstdint>

int main() {
  std::int32_t* device_tokens = nullptr;  // stands for device memory from elsewhere
  const meap::tensor_view<const std::int32_t, meap::cuda> tokens(device_tokens, {2, 9});
  meap::masking::masked_batch_view<meap::cuda> out{};
  meap::masking::apply(meap::cuda{}, meap::masking::fixed_ratio{}, tokens, {.mask_id = 3}, out);
  return 0;
}
