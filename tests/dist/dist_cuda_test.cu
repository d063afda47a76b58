// Data parallel on CUDA over NCCL (dist/nccl.hpp), one GPU: a one-rank NCCL communicator (host
// side: single_process_group, so no MPI is needed on the GPU machine) runs every collective for
// real, and a distributed trainer, replicated or ZeRO-1, takes the same steps as the plain one,
// bit for bit, in fp32 and bf16. Label `gpu`: skipped (exit 77) without a device. With several
// GPUs, the same trainer under `mpirun -np N` with an mpi_group host is the multi-GPU run.
#define BOOST_TEST_MODULE meap dist cuda
#define BOOST_TEST_NO_MAIN
#define BOOST_TEST_ALTERNATIVE_INIT_API
#include <boost/test/unit_test.hpp>

#include <meap/cuda.hpp>
#include <meap/dist/nccl.hpp>
#include <meap/masking/fixed_ratio.hpp>
#include <meap/train/pretrain.hpp>

#include <cstdint>
#include <vector>

#include "support/cuda.hpp"
#include "support/errors.hpp"
#include "support/gpu_main.hpp"

namespace {

using meap::dims;
using meap::index_t;
const meap::cpu host;

meap::nn::llama_config config() {
  return {.vocab = 29, .d_model = 32, .layers = 2, .heads = 4, .kv_heads = 2, .ffn = 48, .max_seq = 32};
}

meap::tensor<std::int32_t, meap::cpu> batch_of(std::uint64_t step) {
  auto tokens = meap::zeros<std::int32_t>(host, {8, 25});
  meap::philox_stream rng(41, step);
  for (index_t b = 0; b < 8; ++b) {
    std::int32_t x = static_cast<std::int32_t>(rng.next_below(28));
    for (index_t t = 0; t < 25; ++t) {
      tokens.view()(b, t) = x;
      x = (3 * x + 5) % 28;
    }
  }
  return tokens;
}

meap::train::pretrain_options options() {
  meap::train::pretrain_options o;
  o.optimizer.lr = 1e-2;
  o.schedule = {1e-2, 1e-3, 2, 6};
  o.masking.seed = 17;
  o.masking.mask_id = 28;
  return o;
}

template <class P>
void distributed_equals_plain(const meap::cuda& device, meap::dist::sharding sharding) {
  meap::dist::single_process_group solo;
  meap::dist::nccl_group group(solo);
  meap::nn::llama_model<P, meap::cuda> plain_model(config(), device), model(config(), device);
  plain_model.initialize(5);
  model.initialize(5);
  meap::train::pretrainer plain(plain_model, meap::masking::fixed_ratio{}, options());
  meap::train::pretrainer trainer(model, meap::masking::fixed_ratio{}, options());
  trainer.distribute(group, sharding);
  for (std::uint64_t step = 0; step < 6; ++step) {
    const auto tokens = batch_of(step);
    const auto a = plain.step(tokens.view().as_const()), b = trainer.step(tokens.view().as_const());
    BOOST_TEST(a.loss == b.loss);
    BOOST_TEST(a.grad_norm == b.grad_norm);
  }
  BOOST_TEST(meap_test::bitwise_equal(meap_test::values_of(device, plain_model.store().master_flat()),
                                      meap_test::values_of(device, model.store().master_flat())));
}

}  // namespace

BOOST_FIXTURE_TEST_SUITE(dist_cuda, meap_test::stream_fixture)

BOOST_AUTO_TEST_CASE(one_rank_collectives_run_through_nccl) {
  meap::dist::single_process_group solo;
  meap::dist::nccl_group group(solo);
  BOOST_TEST(group.size() == 1);
  const std::vector<float> values{1.0f, -2.0f, 3.5f, 0.25f, 8.0f};
  auto data = meap_test::upload<float>(device, values, dims{5});
  const std::vector<index_t> bounds{0, 5};
  group.all_reduce(device, meap::to_any(data.view()), meap::dist::reduce_op::sum);
  group.reduce_scatter(device, meap::to_any(data.view()), bounds);
  group.all_gather(device, meap::to_any(data.view()), bounds);
  group.synchronize(device);
  BOOST_TEST(meap_test::values_of(device, data.view().as_const()) == values, boost::test_tools::per_element());
  // Host memory is refused by the device collectives.
  std::vector<float> on_host(values);
  BOOST_CHECK_EXCEPTION(group.all_reduce(device, meap::to_any(meap::make_view(std::span<float>(on_host), {5})),
                                         meap::dist::reduce_op::sum),
                        meap::error, meap_test::error_says("data", {"CUDA memory"}));
}

BOOST_AUTO_TEST_CASE(replicated_fp32_equals_the_plain_trainer) {
  distributed_equals_plain<meap::fp32>(device, meap::dist::sharding::replicated);
}
BOOST_AUTO_TEST_CASE(zero1_bf16_equals_the_plain_trainer) {
  distributed_equals_plain<meap::bf16_mixed>(device, meap::dist::sharding::zero1);
}

BOOST_AUTO_TEST_SUITE_END()
