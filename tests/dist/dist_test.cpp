// Data-parallel training over MPI (dist/mpi.hpp, pretrainer::distribute), run by CTest as
// `mpirun -np 2 --oversubscribe test_dist`: real OpenMPI ranks on one machine. Each rank also
// trains a one-process reference on the whole global batch, so every comparison is made on
// every rank, and a failed check on either rank fails the run (non-zero exit from mpirun).
#define BOOST_TEST_MODULE meap dist
#define BOOST_TEST_NO_MAIN
#define BOOST_TEST_ALTERNATIVE_INIT_API
#include <boost/test/unit_test.hpp>

#include <meap/dist/agreement.hpp>
#include <meap/dist/mpi.hpp>
#include <meap/masking/fixed_ratio.hpp>
#include <meap/train/finetune.hpp>
#include <meap/train/pretrain.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "support/errors.hpp"

namespace {

const meap::cpu host;
using meap::index_t;
using cpu_trainer = meap::train::pretrainer<meap::fp32, meap::cpu>;
using model_type = meap::nn::llama_model<meap::fp32, meap::cpu>;

meap::dist::mpi_group& group() {
  static meap::dist::mpi_group instance(MPI_COMM_WORLD, std::chrono::seconds(60));
  return instance;
}

meap::nn::llama_config config() {
  meap::nn::llama_config c;
  c.vocab = 24;
  c.d_model = 32;
  c.layers = 2;
  c.heads = 2;
  c.kv_heads = 1;
  c.ffn = 64;
  c.max_seq = 32;
  return c;
}

// Global batch `step` of G rows: x_{t+1} = (5 x_t + 3) mod 23, tokens 0..22; 23 is [MASK].
meap::tensor<std::int32_t, meap::cpu> global_batch(std::uint64_t step, index_t rows = 8, index_t length = 17) {
  auto tokens = meap::zeros<std::int32_t>(host, {rows, length});
  meap::philox_stream rng(7, step);
  for (index_t b = 0; b < rows; ++b) {
    std::int32_t x = static_cast<std::int32_t>(rng.next_below(23));
    for (index_t t = 0; t < length; ++t) {
      tokens.view()(b, t) = x;
      x = (5 * x + 3) % 23;
    }
  }
  return tokens;
}

meap::train::pretrain_options options(index_t micro_batches = 1) {
  meap::train::pretrain_options o;
  o.optimizer.lr = 1e-2;
  o.schedule = {1e-2, 1e-3, 4, 20};
  o.masking.seed = 11;
  o.masking.mask_id = 23;
  o.micro_batches = micro_batches;
  return o;
}

std::unique_ptr<model_type> new_model(std::uint64_t seed = 3) {
  auto model = std::make_unique<model_type>(config());
  model->initialize(seed);
  return model;
}

double largest_difference(const model_type& a, const model_type& b) {
  const auto x = a.store().master_flat(), y = b.store().master_flat();
  double worst = 0;
  for (index_t i = 0; i < x.numel(); ++i)
    worst = std::max(worst, std::abs(static_cast<double>(x.data()[i]) - static_cast<double>(y.data()[i])));
  return worst;
}

bool same_bits(const model_type& a, const model_type& b) {
  const auto x = a.store().master_flat(), y = b.store().master_flat();
  return std::memcmp(x.data(), y.data(), static_cast<std::size_t>(x.numel()) * sizeof(float)) == 0;
}

// A directory every rank sees (rank 0 names it).
std::filesystem::path shared_directory(const std::string& name) {
  std::string path = (std::filesystem::temp_directory_path() / ("meap-dist-" + name + "-" + std::to_string(::getpid())))
                         .string();
  group().broadcast_host(path, 0);
  if (group().rank() == 0) {
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  group().barrier();
  return path;
}

// 20 steps distributed against 20 steps of one process on the whole batch: the loss within 1e-6
// relative at every step, the parameters within 1e-5 at the end, and the same bits on every rank.
void compare_with_one_process(meap::dist::sharding sharding, index_t micro_batches) {
  auto reference_model = new_model(), model = new_model(group().rank() == 0 ? 3 : 99);  // rank 0's weights win
  cpu_trainer reference(*reference_model, meap::masking::fixed_ratio{0.2}, options(micro_batches));
  cpu_trainer trainer(*model, meap::masking::fixed_ratio{0.2}, options(micro_batches));
  trainer.distribute(group(), sharding);
  BOOST_TEST(same_bits(*model, *reference_model));
  double worst_loss = 0;
  for (std::uint64_t step = 0; step < 20; ++step) {
    const auto tokens = global_batch(step);
    const auto expected = reference.step(tokens.view().as_const());
    const auto got = trainer.step(tokens.view().as_const());
    BOOST_TEST(got.loss_tokens == expected.loss_tokens);
    BOOST_TEST(got.masked == expected.masked);
    BOOST_TEST(got.tokens == expected.tokens);
    worst_loss = std::max(worst_loss, std::abs(got.loss - expected.loss) / std::abs(expected.loss));
    BOOST_TEST(std::abs(got.grad_norm - expected.grad_norm) <= 1e-5 * expected.grad_norm);
  }
  BOOST_TEST_MESSAGE("rank " << group().rank() << ": largest relative loss difference " << worst_loss
                             << ", largest parameter difference " << largest_difference(*model, *reference_model));
  BOOST_TEST(worst_loss <= 1e-6);
  BOOST_TEST(largest_difference(*model, *reference_model) <= 1e-5);
  // Every rank holds the same parameters, bit for bit.
  auto gathered = meap::clone(host, model->store().master_flat().as_const());
  std::vector<index_t> from_rank0(static_cast<std::size_t>(group().size()) + 1, gathered.numel());
  from_rank0[0] = 0;
  group().all_gather(host, meap::to_any(gathered.view()), from_rank0);
  BOOST_TEST(std::memcmp(gathered.data(), model->store().master_flat().data(), gathered.bytes()) == 0);
}

}  // namespace

BOOST_AUTO_TEST_CASE(runs_on_two_ranks) {
  BOOST_TEST_REQUIRE(group().size() == 2);
  BOOST_TEST_MESSAGE("rank " << group().rank() << " of " << group().size());
}

BOOST_AUTO_TEST_CASE(collectives_give_every_rank_the_same_result) {
  const int r = group().rank(), n = group().size();
  std::vector<float> x{1.5f * static_cast<float>(r + 1), -2.0f, 0.25f * static_cast<float>(r), 7.0f};
  group().all_reduce(host, meap::to_any(meap::make_view(std::span<float>(x), {4})), meap::dist::reduce_op::sum);
  BOOST_TEST(x[0] == 1.5f * static_cast<float>(n * (n + 1) / 2));
  BOOST_TEST(x[1] == -2.0f * static_cast<float>(n));
  std::vector<std::uint64_t> words{r == 1 ? 5ull : ~0ull, 9ull + static_cast<std::uint64_t>(r)};
  group().all_reduce(host, meap::to_any(meap::make_view(std::span<std::uint64_t>(words), {2})), meap::dist::reduce_op::min);
  BOOST_TEST(words[0] == 5ull);
  BOOST_TEST(words[1] == 9ull);

  // Uneven shards: 10 elements, rank 0 owns 7.
  const std::vector<index_t> bounds{0, 7, 10};
  std::vector<double> y(10);
  for (int i = 0; i < 10; ++i) y[static_cast<std::size_t>(i)] = i + 100.0 * r;
  group().reduce_scatter(host, meap::to_any(meap::make_view(std::span<double>(y), {10})), bounds);
  for (index_t i = bounds[static_cast<std::size_t>(r)]; i < bounds[static_cast<std::size_t>(r) + 1]; ++i)
    BOOST_TEST(y[static_cast<std::size_t>(i)] == 2.0 * static_cast<double>(i) + 100.0);
  group().all_gather(host, meap::to_any(meap::make_view(std::span<double>(y), {10})), bounds);
  for (int i = 0; i < 10; ++i) BOOST_TEST(y[static_cast<std::size_t>(i)] == 2.0 * i + 100.0);

  std::int64_t counts[2] = {r + 1, 10};
  group().all_reduce_host(counts);
  BOOST_TEST(counts[0] == 3);
  BOOST_TEST(counts[1] == 20);
  std::string text = r == 0 ? "from rank 0" : "";
  group().broadcast_host(text, 0);
  BOOST_TEST(text == "from rank 0");

  const auto shards = meap::dist::shard_bounds(1000, 3);
  BOOST_TEST((shards == std::vector<index_t>{0, 384, 704, 1000}));
  BOOST_TEST((meap::dist::shard_bounds(100, 4) == std::vector<index_t>{0, 64, 100, 100, 100}));
}

// The rank-0 agreement the trainer's save and the run layer use: rank 0's decision reaches every
// rank, and a failure there stops every rank with its message instead of leaving one waiting.
BOOST_AUTO_TEST_CASE(rank0_agreement_shares_rank0s_decision_and_its_failure) {
  const meap::dist::rank0_agreement ranks(&group());
  BOOST_TEST(ranks.distributed());
  BOOST_TEST(ranks.lead() == (group().rank() == 0));
  int decided = 0;
  const auto text = ranks.agree([&] {
    ++decided;
    return std::string("checkpoints/step-00000007");
  });
  BOOST_TEST(text == "checkpoints/step-00000007");
  BOOST_TEST(decided == (group().rank() == 0 ? 1 : 0));
  try {
    (void)ranks.agree([]() -> std::string { meap::throw_argument_error("prog", "--out", "run/", "a writable directory"); },
                      "prog: rank 0 stopped the run");
    BOOST_FAIL("agree returned after rank 0 failed");
  } catch (const meap::error& e) {
    const std::string what = e.what();
    if (group().rank() == 0) {
      BOOST_TEST(e.argument() == "--out");  // rank 0 gets its own error back
    } else {
      BOOST_TEST(what.find("prog: rank 0 stopped the run: ") == 0u);
      BOOST_TEST(what.find("a writable directory") != std::string::npos);
    }
  }
  // Still in step: the next collective pairs up.
  BOOST_TEST(ranks.agree([] { return std::string("after"); }) == "after");
}

BOOST_AUTO_TEST_CASE(two_ranks_with_half_the_rows_each_equal_one_process) {
  compare_with_one_process(meap::dist::sharding::replicated, 1);
}

BOOST_AUTO_TEST_CASE(micro_batches_on_two_ranks_equal_one_process) {
  compare_with_one_process(meap::dist::sharding::replicated, 2);
}

BOOST_AUTO_TEST_CASE(zero1_equals_one_process) { compare_with_one_process(meap::dist::sharding::zero1, 1); }

BOOST_AUTO_TEST_CASE(zero1_equals_plain_data_parallel) {
  auto plain_model = new_model(), zero_model = new_model();
  cpu_trainer plain(*plain_model, meap::masking::fixed_ratio{0.2}, options());
  cpu_trainer zero(*zero_model, meap::masking::fixed_ratio{0.2}, options());
  plain.distribute(group());
  zero.distribute(group(), meap::dist::sharding::zero1);
  for (std::uint64_t step = 0; step < 20; ++step) {
    const auto tokens = global_batch(step);
    const auto a = plain.step(tokens.view().as_const()), b = zero.step(tokens.view().as_const());
    BOOST_TEST(std::abs(a.loss - b.loss) <= 1e-6 * a.loss);
  }
  BOOST_TEST(largest_difference(*plain_model, *zero_model) <= 1e-5);
  // The optimizer holds one shard: its moments are about half the parameters.
  const auto shard = zero.optimizer().exp_avg().numel(), whole = plain.optimizer().exp_avg().numel();
  BOOST_TEST(shard < whole);
  BOOST_TEST(shard >= whole / 2 - 64);
}

namespace {
// The MPI group claiming to overlap: the trainer then sums buckets of finished gradients from the
// backward pass (as it does over NCCL), which this group runs at once and records.
class overlapping_group final : public meap::dist::process_group<meap::cpu> {
 public:
  int rank() const noexcept override { return group().rank(); }
  int size() const noexcept override { return group().size(); }
  std::chrono::milliseconds timeout() const noexcept override { return group().timeout(); }
  void all_reduce(const meap::cpu& d, const meap::any_view& x, meap::dist::reduce_op op) override {
    group().all_reduce(d, x, op);
  }
  void reduce_scatter(const meap::cpu& d, const meap::any_view& x, std::span<const index_t> b) override {
    group().reduce_scatter(d, x, b);
  }
  void all_gather(const meap::cpu& d, const meap::any_view& x, std::span<const index_t> b) override {
    group().all_gather(d, x, b);
  }
  void synchronize(const meap::cpu& d) override { group().synchronize(d); }
  void all_reduce_host(std::span<std::int64_t> v) override { group().all_reduce_host(v); }
  void broadcast_host(std::string& b, int root) override { group().broadcast_host(b, root); }
  void barrier() override { group().barrier(); }
  bool overlaps_backward() const noexcept override { return true; }
  void start_all_reduce(const meap::cpu& d, const meap::any_view& x) override {
    buckets.push_back(x.shape[0]);
    ends.push_back(static_cast<const float*>(x.data) + x.shape[0]);
    group().all_reduce(d, x, meap::dist::reduce_op::sum);
  }
  void finish_started(const meap::cpu&) override { ++finished; }
  std::vector<index_t> buckets;
  std::vector<const float*> ends;
  int finished = 0;
};
}  // namespace

// Buckets started from the backward pass (the NCCL path's overlap, run here over MPI) tile the
// gradient buffer from the top down and give the same bits as one all-reduce after it.
BOOST_AUTO_TEST_CASE(overlapped_buckets_equal_one_all_reduce) {
  overlapping_group overlapping;
  auto plain_model = new_model(), model = new_model();
  cpu_trainer plain(*plain_model, meap::masking::fixed_ratio{0.2}, options(2));
  cpu_trainer trainer(*model, meap::masking::fixed_ratio{0.2}, options(2));
  plain.distribute(group());
  trainer.distribute(overlapping, meap::dist::sharding::replicated, 16 * 1024);  // 16 KiB buckets: several
  for (std::uint64_t step = 0; step < 5; ++step) {
    const auto tokens = global_batch(step);
    const auto a = plain.step(tokens.view().as_const()), b = trainer.step(tokens.view().as_const());
    BOOST_TEST(a.loss == b.loss);
    BOOST_TEST(a.grad_norm == b.grad_norm);
  }
  BOOST_TEST(same_bits(*model, *plain_model));
  BOOST_TEST(overlapping.finished == 5);
  // Each step's buckets cover the whole buffer, top down, without gaps or overlaps.
  const index_t n = model->store().flat_size();
  const float* top = model->store().grad_flat().data() + n;
  const std::size_t per_step = overlapping.buckets.size() / 5;
  BOOST_TEST_REQUIRE(per_step >= 3u);
  for (std::size_t step = 0; step < 5; ++step) {
    const float* expected_end = top;
    index_t covered = 0;
    for (std::size_t k = step * per_step; k < (step + 1) * per_step; ++k) {
      BOOST_TEST(overlapping.ends[k] == expected_end);
      expected_end -= overlapping.buckets[k];
      covered += overlapping.buckets[k];
    }
    BOOST_TEST(covered == n);
  }
}

// A checkpoint written by 2 ranks (ZeRO-1) resumes on 2 ranks bit for bit, and on one process
// (the whole state was gathered) within the tolerance of a different reduction order.
BOOST_AUTO_TEST_CASE(a_two_rank_checkpoint_resumes_on_two_ranks_and_on_one) {
  const auto directory = shared_directory("resume");
  auto model = new_model();
  cpu_trainer trainer(*model, meap::masking::fixed_ratio{0.2}, options());
  trainer.distribute(group(), meap::dist::sharding::zero1);
  for (std::uint64_t step = 0; step < 6; ++step) (void)trainer.step(global_batch(step).view().as_const());
  trainer.save(directory / "step-6");
  BOOST_TEST(std::filesystem::exists(directory / "step-6" / "trainer.safetensors"));
  std::vector<double> uninterrupted;
  for (std::uint64_t step = 6; step < 12; ++step) uninterrupted.push_back(trainer.step(global_batch(step).view().as_const()).loss);

  // Two ranks again, one as replicated this time: the state is whole in the file.
  for (const auto sharding : {meap::dist::sharding::zero1, meap::dist::sharding::replicated}) {
    auto again = new_model(42);
    cpu_trainer resumed(*again, meap::masking::fixed_ratio{0.2}, options());
    resumed.distribute(group(), sharding);
    resumed.resume(directory / "step-6");
    BOOST_TEST(resumed.next_step() == 6u);
    for (std::uint64_t step = 6; step < 12; ++step) {
      const double loss = resumed.step(global_batch(step).view().as_const()).loss;
      if (sharding == meap::dist::sharding::zero1) BOOST_TEST(loss == uninterrupted[step - 6]);  // bit for bit
      else BOOST_TEST(std::abs(loss - uninterrupted[step - 6]) <= 1e-6 * loss);
    }
    BOOST_TEST(largest_difference(*again, *model) <= (sharding == meap::dist::sharding::zero1 ? 0.0 : 1e-5));
  }

  // One process (no group) on the whole batch.
  auto single = new_model(42);
  cpu_trainer alone(*single, meap::masking::fixed_ratio{0.2}, options());
  alone.resume(directory / "step-6");
  for (std::uint64_t step = 6; step < 12; ++step) {
    const double loss = alone.step(global_batch(step).view().as_const()).loss;
    BOOST_TEST(std::abs(loss - uninterrupted[step - 6]) <= 1e-6 * loss);
  }
  BOOST_TEST(largest_difference(*single, *model) <= 1e-5);
  group().barrier();
  if (group().rank() == 0) std::filesystem::remove_all(directory);
}

// A checkpoint series on rank 0: save(&series) there, save(nullptr) elsewhere; a wrong call is
// refused on the rank that made it.
BOOST_AUTO_TEST_CASE(rank_zero_commits_the_series) {
  const auto directory = shared_directory("series");
  auto model = new_model();
  cpu_trainer trainer(*model, meap::masking::fixed_ratio{0.2}, options());
  trainer.distribute(group());
  (void)trainer.step(global_batch(0).view().as_const());
  std::optional<meap::train::checkpoint_series> series;
  if (group().rank() == 0) series.emplace(directory / "checkpoints");
  const auto entry = trainer.save(series ? &*series : nullptr);
  BOOST_TEST(entry.has_value() == (group().rank() == 0));
  group().barrier();
  BOOST_TEST(std::filesystem::exists(directory / "checkpoints" / "step-00000001" / "model.safetensors"));
  BOOST_CHECK_EXCEPTION((void)trainer.save(group().rank() == 0 ? nullptr : &*series), meap::error,
                        meap_test::error_says("meap::train::pretrainer::save", "series", {"rank 0 writes"}));
  group().barrier();
  if (group().rank() == 0) std::filesystem::remove_all(directory);
}

// Bad batches throw on every rank alike, before any collective (no rank is left waiting).
BOOST_AUTO_TEST_CASE(a_bad_batch_fails_on_every_rank) {
  auto model = new_model();
  cpu_trainer trainer(*model, meap::masking::fixed_ratio{0.2}, options(2));
  trainer.distribute(group());
  BOOST_CHECK_EXCEPTION((void)trainer.step(global_batch(0, 6).view().as_const()), meap::error,
                        meap_test::error_says("tokens", {"multiple of micro_batches = 2 times the 2 ranks"}));
  auto bad = global_batch(0);
  bad.view()(7, 3) = 30;  // rank 1's row; out of the vocabulary
  BOOST_CHECK_EXCEPTION((void)trainer.step(bad.view().as_const()), meap::error,
                        meap_test::error_says("tokens", {"token 30 at (7, 3)", "[0, 24)"}));
  // Both ranks go on together.
  BOOST_TEST(std::isfinite(trainer.step(global_batch(1).view().as_const()).loss));
}

// The fine-tuner over two ranks equals the fine-tuner on one process.
BOOST_AUTO_TEST_CASE(fine_tuning_on_two_ranks_equals_one_process) {
  std::vector<meap::data::instruction_example> examples;
  for (int i = 0; i < 12; ++i) {
    meap::data::instruction_example e;
    for (int t = 0; t < 5; ++t) e.prompt.push_back((i + t) % 20);
    for (int t = 0; t < 4; ++t) e.answer.push_back((3 * i + t) % 20);
    examples.push_back(e);
  }
  meap::train::finetune_options o;
  o.mask_id = 23;
  o.row_length = 24;
  o.rows_per_step = 4;
  o.training = options();
  o.copy.min_answer_tokens = 0;
  o.copy.ratio = 0.5;
  auto reference_model = new_model(), model = new_model();
  meap::train::finetuner<meap::fp32, meap::cpu> reference(*reference_model, examples, o);
  meap::train::finetuner<meap::fp32, meap::cpu> tuner(*model, examples, o);
  tuner.distribute(group());
  while (!reference.done()) {
    const auto a = reference.step(), b = tuner.step();
    BOOST_TEST(std::abs(a.loss - b.loss) <= 1e-6 * a.loss);
    BOOST_TEST(a.masked == b.masked);
  }
  BOOST_TEST(tuner.done());
  // 1e-4: 15 steps at lr 1e-2 on 5-token answers, where AdamW's division by sqrt(v) magnifies
  // the last bits of gradients summed in another order (the losses above agree to 1e-6).
  BOOST_TEST(largest_difference(*model, *reference_model) <= 1e-4);
}

int main(int argc, char* argv[]) {
  meap::dist::mpi_environment mpi(argc, argv);
  // Each rank writes its own log; rank 1 prints only on failure (Boost.Test's report).
  const int status = boost::unit_test::unit_test_main(&init_unit_test, argc, argv);
  // Every rank's result decides: a failure on either fails both.
  std::int64_t failed[1] = {status != 0 ? 1 : 0};
  group().all_reduce_host(failed);
  return failed[0] != 0 ? 1 : 0;
}
