// meap inside LibTorch (meap/interop/torch.hpp): the fused selective cross-entropy as an autograd
// function against LibTorch's own full-logits cross_entropy, MEAP masking on LibTorch tensors, and
// DLPack both ways through at::toDLPack / at::fromDLPack.
#define BOOST_TEST_MODULE meap torch interop
#include <boost/test/unit_test.hpp>

#include <meap/interop/torch.hpp>
#include <meap/masking/fixed_ratio.hpp>

#include <support/errors.hpp>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace {

using meap_test::error_says;
namespace F = torch::nn::functional;

// max |a - b| / max |b|: the relative error of a whole tensor.
double relative_error(const at::Tensor& a, const at::Tensor& b) {
  const double scale = b.abs().max().item<double>();
  return (a - b).abs().max().item<double>() / (scale > 0 ? scale : 1.0);
}

struct problem {
  at::Tensor hidden, weight, labels;
};

// N rows of width d, vocabulary V; every third label is -100.
problem make_problem(std::int64_t N, std::int64_t d, std::int64_t V, at::ScalarType type, std::uint64_t seed) {
  torch::manual_seed(seed);
  const auto options = at::TensorOptions().dtype(type);
  problem p{torch::randn({N, d}, options), torch::randn({V, d}, options) * 0.5,
            torch::randint(0, V, {N}, at::TensorOptions().dtype(at::kLong))};
  for (std::int64_t i = 0; i < N; i += 3) p.labels[i] = -100;
  p.hidden.set_requires_grad(true);
  p.weight.set_requires_grad(true);
  return p;
}

struct result {
  double loss;
  at::Tensor d_hidden, d_weight;
};

result with_meap(const problem& p, const meap::interop::torch_cross_entropy_options& options = {}) {
  const auto h = p.hidden.detach().clone().set_requires_grad(true), w = p.weight.detach().clone().set_requires_grad(true);
  const at::Tensor loss = meap::interop::linear_cross_entropy(h, w, p.labels, options);
  loss.backward();
  return {loss.item<double>(), h.grad(), w.grad()};
}

result with_full_logits(const problem& p, double label_smoothing = 0.0) {
  const auto h = p.hidden.detach().clone().set_requires_grad(true), w = p.weight.detach().clone().set_requires_grad(true);
  const at::Tensor loss = F::cross_entropy(torch::matmul(h, w.t()), p.labels,
                                           F::CrossEntropyFuncOptions().ignore_index(-100).label_smoothing(label_smoothing));
  loss.backward();
  return {loss.item<double>(), h.grad(), w.grad()};
}

void check_close(const result& meap_result, const result& torch_result, double tolerance) {
  BOOST_TEST(std::abs(meap_result.loss - torch_result.loss) <= tolerance * std::abs(torch_result.loss),
             "loss meap " << meap_result.loss << " torch " << torch_result.loss);
  BOOST_TEST(relative_error(meap_result.d_hidden, torch_result.d_hidden) <= tolerance);
  BOOST_TEST(relative_error(meap_result.d_weight, torch_result.d_weight) <= tolerance);
}

}  // namespace

BOOST_AUTO_TEST_CASE(fused_loss_and_gradients_equal_full_logits_cross_entropy) {
  for (const auto type : {at::kFloat, at::kDouble}) {
    const auto p = make_problem(96, 32, 500, type, 1);
    const double tolerance = type == at::kFloat ? 1e-5 : 1e-12;
    check_close(with_meap(p), with_full_logits(p), tolerance);
    // Label smoothing: meap's (1 - eps)(L - z_y) + eps (L - mean z) is torch's definition.
    check_close(with_meap(p, {.label_smoothing = 0.1}), with_full_logits(p, 0.1), tolerance);
  }
}

BOOST_AUTO_TEST_CASE(autograd_scales_strided_inputs_and_int32_labels) {
  const auto p = make_problem(40, 16, 97, at::kFloat, 2);
  const auto reference = with_full_logits(p);

  // hidden as a non-contiguous view (the transpose of a (d, N) tensor), labels as int32, and a
  // loss used twice: the gradients arrive through autograd scaled by 2.
  const auto storage = p.hidden.detach().t().contiguous().set_requires_grad(true);
  const auto w = p.weight.detach().clone().set_requires_grad(true);
  const at::Tensor loss = meap::interop::linear_cross_entropy(storage.t(), w, p.labels.to(at::kInt));
  (loss * 2.0).backward();
  BOOST_TEST(std::abs(loss.item<double>() - reference.loss) <= 1e-5 * reference.loss);
  BOOST_TEST(relative_error(storage.grad().t(), reference.d_hidden * 2.0) <= 1e-5);
  BOOST_TEST(relative_error(w.grad(), reference.d_weight * 2.0) <= 1e-5);

  // A frozen head: only d_hidden is computed and returned.
  const auto h = p.hidden.detach().clone().set_requires_grad(true);
  meap::interop::linear_cross_entropy(h, p.weight.detach(), p.labels).backward();
  BOOST_TEST(relative_error(h.grad(), reference.d_hidden) <= 1e-5);

  // No selected row: loss 0 and zero gradients, never NaN.
  const auto h0 = p.hidden.detach().clone().set_requires_grad(true);
  const at::Tensor none = meap::interop::linear_cross_entropy(h0, p.weight, torch::full({40}, -100, at::kLong));
  none.backward();
  BOOST_TEST(none.item<double>() == 0.0);
  BOOST_TEST(h0.grad().abs().max().item<double>() == 0.0);
}

BOOST_AUTO_TEST_CASE(bad_arguments_are_meap_errors_naming_them) {
  const auto p = make_problem(8, 4, 11, at::kFloat, 3);
  const std::string function = "meap::interop::linear_cross_entropy";
  const auto refused = [&](const at::Tensor& h, const at::Tensor& w, const at::Tensor& l, const std::string& argument,
                           std::vector<std::string> fragments) {
    BOOST_CHECK_EXCEPTION(meap::interop::linear_cross_entropy(h, w, l), meap::error,
                          error_says(function, argument, std::move(fragments)));
  };
  refused(p.hidden.view({2, 4, 4}), p.weight, p.labels, "hidden", {"shape (2, 4, 4)", "a matrix (N, d)"});
  refused(p.hidden, p.weight.narrow(1, 0, 3), p.labels, "weight", {"shape (11, 3)", "d = 4"});
  refused(p.hidden, p.weight, p.labels.narrow(0, 0, 5), "labels", {"shape (5)", "N = 8"});
  refused(p.hidden.to(at::kInt), p.weight, p.labels, "hidden", {"dtype Int", "float32 or float64"});
  refused(p.hidden, p.weight.to(at::kDouble), p.labels, "weight", {"dtype Double", "the dtype of hidden"});
  refused(p.hidden, p.weight, p.labels.to(at::kFloat), "labels", {"dtype Float", "int32 or int64"});
  // An id outside [0, V) is found by meap's kernel, which names the argument the same way.
  auto bad = p.labels.clone();
  bad[1] = 11;
  BOOST_CHECK_EXCEPTION(meap::interop::linear_cross_entropy(p.hidden, p.weight, bad), meap::error,
                        error_says("labels", {"11"}));
}

BOOST_AUTO_TEST_CASE(mask_batch_is_masking_apply_on_torch_tensors) {
  torch::manual_seed(4);
  const auto tokens = torch::randint(0, 50, {6, 33}, at::TensorOptions().dtype(at::kLong));
  meap::masking::pretraining_options options;
  options.seed = 7;
  options.step = 3;
  options.mask_id = 50;
  const meap::masking::fixed_ratio policy{0.2};
  const auto batch = meap::interop::mask_batch(policy, tokens, options);

  const auto ids32 = tokens.to(at::kInt).contiguous();
  const auto expected = meap::masking::apply(
      meap::cpu{}, policy,
      meap::tensor_view<const std::int32_t, meap::cpu>(ids32.data_ptr<std::int32_t>(), meap::dims{6, 33}), options);
  const auto same = [](const at::Tensor& got, const auto& want) {
    using T = typename std::remove_cvref_t<decltype(want)>::value_type;
    return std::equal(want.data(), want.data() + want.numel(), got.contiguous().data_ptr<T>());
  };
  BOOST_TEST((batch.input_ids.sizes() == at::IntArrayRef{6, 32}));
  BOOST_TEST(same(batch.input_ids, expected.input_ids.view()));
  BOOST_TEST(same(batch.labels, expected.labels.view()));
  BOOST_TEST(same(batch.mask, expected.mask.view()));
  BOOST_TEST(batch.mask.sum().item<std::int64_t>() > 0);
  BOOST_TEST((batch.input_ids.masked_select(batch.mask.to(at::kBool)) == 50).all().item<bool>());

  BOOST_CHECK_EXCEPTION(meap::interop::mask_batch(policy, tokens.to(at::kFloat), options), meap::error,
                        error_says("meap::interop::mask_batch", "tokens", {"dtype Float"}));
  BOOST_CHECK_EXCEPTION(meap::interop::mask_batch(policy, tokens.narrow(1, 0, 1), options), meap::error,
                        error_says("meap::interop::mask_batch", "tokens", {"shape (6, 1)"}));
}

BOOST_AUTO_TEST_CASE(dlpack_both_ways_with_libtorch_shares_memory) {
  // LibTorch -> meap: plain, transposed, sliced with a step and offset; the same addresses.
  const auto base = torch::arange(48, at::TensorOptions().dtype(at::kFloat)).view({6, 8});
  const auto imported = meap::interop::from_torch(base, "base");
  BOOST_TEST(imported.view().data == base.data_ptr());
  const auto columns = base.slice(1, 1, 8, 2);  // (6, 4), strides (8, 2), data_ptr at element 1
  const auto strided = meap::interop::from_torch(columns, "columns");
  const auto view = strided.view<const float, meap::cpu>("columns");
  BOOST_TEST(static_cast<const void*>(view.data()) == columns.data_ptr());
  BOOST_TEST((view.strides() == meap::dims{8, 2}));
  BOOST_TEST(view(5, 3) == 47.0f);
  const auto transposed = meap::interop::from_torch(base.t(), "transposed").view<const float, meap::cpu>();
  BOOST_TEST(transposed(7, 5) == 47.0f);
  // Every dtype LibTorch and meap share.
  for (const auto type : {at::kDouble, at::kFloat, at::kHalf, at::kBFloat16, at::kLong, at::kInt, at::kShort, at::kChar,
                          at::kByte}) {
    const auto t = torch::ones({3}, at::TensorOptions().dtype(type));
    BOOST_TEST(meap::interop::from_torch(t).view().data == t.data_ptr());
  }
  // A dtype meap has no counterpart for.
  BOOST_CHECK_EXCEPTION(meap::interop::from_torch(torch::ones({2}, at::kComplexFloat), "z"), meap::error,
                        error_says("meap::interop::from_dlpack", "z", {"kDLComplex"}));

  // meap -> LibTorch: a moved tensor, and a view whose owner lives until LibTorch lets go.
  meap::tensor<double, meap::cpu> owned(meap::cpu{}, meap::dims{2, 3});
  for (int i = 0; i < 6; ++i) owned.data()[i] = i;
  const double* address = owned.data();
  const at::Tensor as_torch = meap::interop::to_torch(std::move(owned));
  BOOST_TEST(as_torch.data_ptr<double>() == address);
  BOOST_TEST(as_torch[1][2].item<double>() == 5.0);

  auto owner = std::make_shared<std::vector<float>>(8, 3.0f);
  std::weak_ptr<std::vector<float>> watch = owner;
  {
    at::Tensor shared = at::fromDLPack(meap::interop::to_dlpack(
        meap::tensor_view<float, meap::cpu>(owner->data(), meap::dims{2, 4}), owner));
    owner.reset();
    shared.mul_(2.0);  // writes land in the meap-side memory
    BOOST_TEST(!watch.expired());
    BOOST_TEST(watch.lock()->at(5) == 6.0f);
  }
  BOOST_TEST(watch.expired());  // LibTorch called the deleter when its tensor died
}
