// meap_pretrain: a command-line MEAP (or NTP) pretraining run on the CPU.
//
//   meap_pretrain --data synthetic --policy meap --steps 200 --out run/
//   meap_pretrain --data tokens.u16 --config model.json --policy meap --mask-ratio 0.15
//                 --steps 10000 --checkpoint-every 500 --out run/ [--resume]
//
// Data: a flat binary token file (.u16 / .u32, see docs/io.md) sampled in random windows keyed by
// (seed, step), or `synthetic`: the built-in affine-recurrence task, documents where
// x[t+1] = (a x[t] + c) mod n with (a, c) drawn per document, so a model must read the context to
// predict. Writes <out>/loss.csv (step, loss, lr, grad_norm, masked, tokens/s) and, every
// --checkpoint-every steps and at the end, a training checkpoint in <out>/checkpoint (Hugging Face
// layout + trainer state); --resume continues from it bit for bit. Progress with an ETA goes to
// stderr. The model config is a JSON file with the fields of meap::nn::llama_config (vocab,
// d_model, layers, heads, kv_heads, ffn, max_seq, rope_theta, norm_eps, tied_head); missing
// fields keep their defaults.
#include <meap/io/token_dataset.hpp>
#include <meap/masking/span.hpp>
#include <meap/train/pretrain.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>

namespace {

struct arguments {
  std::string data = "synthetic";
  std::string config_path;
  std::string policy = "meap";
  double mask_ratio = 0.15;
  std::int64_t steps = 200;
  std::int64_t batch = 8;
  std::int64_t length = 128;
  std::uint64_t seed = 1234;
  double lr = 1e-3;
  std::int64_t warmup = 20;
  std::int64_t checkpoint_every = 0;
  std::string out = "meap_pretrain_out";
  bool resume = false;
};

constexpr const char* usage =
    "usage: meap_pretrain [--data synthetic|FILE.u16|FILE.u32] [--config model.json] [--policy ntp|meap|span]\n"
    "                     [--mask-ratio 0.15] [--steps 200] [--batch 8] [--seq-len 128] [--seed 1234]\n"
    "                     [--lr 1e-3] [--warmup 20] [--checkpoint-every 0] [--out DIR] [--resume]\n";

[[noreturn]] void bad_argument(const std::string& name, const std::string& value, const std::string& expected) {
  meap::throw_argument_error("meap_pretrain", name, value, expected);
}

template <class T>
T parse_number(const std::string& name, const std::string& text) {
  try {
    std::size_t used = 0;
    T value;
    if constexpr (std::is_floating_point_v<T>) value = static_cast<T>(std::stod(text, &used));
    else value = static_cast<T>(std::stoll(text, &used));
    if (used == text.size()) return value;
  } catch (const std::exception&) {
  }
  bad_argument(name, text, std::is_floating_point_v<T> ? "a number" : "an integer");
}

arguments parse(int argc, char** argv) {
  arguments a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--resume") {
      a.resume = true;
      continue;
    }
    if (flag == "--help" || flag == "-h") {
      std::fputs(usage, stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) bad_argument(flag, "(nothing)", "a value after the flag");
    const std::string value = argv[++i];
    if (flag == "--data") a.data = value;
    else if (flag == "--config") a.config_path = value;
    else if (flag == "--policy") a.policy = value;
    else if (flag == "--mask-ratio") a.mask_ratio = parse_number<double>(flag, value);
    else if (flag == "--steps") a.steps = parse_number<std::int64_t>(flag, value);
    else if (flag == "--batch") a.batch = parse_number<std::int64_t>(flag, value);
    else if (flag == "--seq-len") a.length = parse_number<std::int64_t>(flag, value);
    else if (flag == "--seed") a.seed = parse_number<std::uint64_t>(flag, value);
    else if (flag == "--lr") a.lr = parse_number<double>(flag, value);
    else if (flag == "--warmup") a.warmup = parse_number<std::int64_t>(flag, value);
    else if (flag == "--checkpoint-every") a.checkpoint_every = parse_number<std::int64_t>(flag, value);
    else if (flag == "--out") a.out = value;
    else bad_argument("flag", flag, "one of the flags in --help");
  }
  if (a.policy != "ntp" && a.policy != "meap" && a.policy != "span") bad_argument("--policy", a.policy, "ntp, meap or span");
  if (a.steps < 1) bad_argument("--steps", std::to_string(a.steps), "at least 1");
  if (a.batch < 1) bad_argument("--batch", std::to_string(a.batch), "at least 1");
  if (a.length < 2) bad_argument("--seq-len", std::to_string(a.length), "at least 2");
  if (a.checkpoint_every < 0) bad_argument("--checkpoint-every", std::to_string(a.checkpoint_every), "0 (only at the end) or more");
  return a;
}

meap::nn::llama_config read_config(const arguments& a, std::int32_t data_vocab) {
  meap::nn::llama_config c;
  c.vocab = data_vocab + 1;  // one more id for [MASK]
  c.d_model = 128;
  c.layers = 2;
  c.heads = 4;
  c.kv_heads = 2;
  c.ffn = 344;
  c.max_seq = a.length;
  if (!a.config_path.empty()) {
    std::ifstream in(a.config_path);
    if (!in) bad_argument("--config", a.config_path, "a readable JSON file");
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      bad_argument("--config", a.config_path, std::string("valid JSON (") + e.what() + ")");
    }
    c.vocab = j.value("vocab", c.vocab);
    c.d_model = j.value("d_model", c.d_model);
    c.layers = j.value("layers", c.layers);
    c.heads = j.value("heads", c.heads);
    c.kv_heads = j.value("kv_heads", c.kv_heads);
    c.ffn = j.value("ffn", c.ffn);
    c.max_seq = j.value("max_seq", c.max_seq);
    c.rope_theta = j.value("rope_theta", c.rope_theta);
    c.norm_eps = j.value("norm_eps", c.norm_eps);
    c.tied_head = j.value("tied_head", c.tied_head);
  }
  c.validate();
  if (c.vocab <= data_vocab)
    bad_argument("--config", "vocab = " + std::to_string(c.vocab),
                 "a vocabulary of at least " + std::to_string(data_vocab + 1) + " (the data's ids plus one for [MASK])");
  if (c.max_seq < a.length)
    bad_argument("--seq-len", std::to_string(a.length), "at most the config's max_seq = " + std::to_string(c.max_seq));
  return c;
}

// The built-in task: documents of the affine recurrence x[t+1] = (a x[t] + c) mod n.
constexpr std::int32_t synthetic_vocab = 64;

void synthetic_batch(std::uint64_t seed, std::uint64_t step, const meap::tensor_view<std::int32_t, meap::cpu>& out) {
  for (meap::index_t b = 0; b < out.size(0); ++b) {
    meap::philox_stream rng(seed ^ 0x73796e7468ull, step, static_cast<std::uint32_t>(b));
    meap::index_t t = 0;
    while (t < out.size(1)) {  // documents of 16..48 tokens back to back
      const std::int32_t a = 1 + 2 * static_cast<std::int32_t>(rng.next_below(synthetic_vocab / 2));  // odd: a bijection
      const std::int32_t c = static_cast<std::int32_t>(rng.next_below(synthetic_vocab));
      std::int32_t x = static_cast<std::int32_t>(rng.next_below(synthetic_vocab));
      const meap::index_t end = std::min<meap::index_t>(out.size(1), t + 16 + rng.next_below(33));
      for (; t < end; ++t) {
        out(b, t) = x;
        x = (a * x + c) % synthetic_vocab;
      }
    }
  }
}

std::string format_duration(double seconds) {
  const auto s = static_cast<long long>(seconds + 0.5);
  char text[32];
  std::snprintf(text, sizeof text, "%lld:%02lld:%02lld", s / 3600, (s / 60) % 60, s % 60);
  return text;
}

template <class Policy>
int run(const arguments& a, std::optional<Policy> policy) {
  std::optional<meap::token_dataset> dataset;
  std::int32_t data_vocab = synthetic_vocab;
  if (a.data != "synthetic") {
    dataset.emplace(a.data, meap::token_dataset_options{a.length});
    std::int32_t largest = 0;
    for (meap::index_t i = 0; i < dataset->size(); ++i) largest = std::max(largest, static_cast<std::int32_t>(dataset->token(i)));
    data_vocab = largest + 1;
  }
  const auto config = read_config(a, data_vocab);
  const std::int32_t mask_id = static_cast<std::int32_t>(config.vocab - 1);

  meap::nn::llama_model<float> model(config);
  model.initialize(a.seed);
  meap::train::pretrain_options options;
  options.optimizer.lr = a.lr;
  options.schedule = {a.lr, a.lr / 10, std::min(a.warmup, a.steps), a.steps};
  options.masking.seed = a.seed;
  options.masking.mask_id = mask_id;
  meap::train::pretrainer<float, Policy> trainer(model, policy, options);

  const std::filesystem::path out(a.out);
  std::filesystem::create_directories(out);
  const auto checkpoint = out / "checkpoint";
  if (a.resume) {
    trainer.resume(checkpoint);
    std::fprintf(stderr, "resumed from %s at step %llu\n", checkpoint.c_str(),
                 static_cast<unsigned long long>(trainer.next_step()));
  }
  std::ofstream csv(out / "loss.csv", a.resume ? std::ios::app : std::ios::trunc);
  if (!a.resume) csv << "step,loss,lr,grad_norm,masked,tokens_per_second,skipped\n";
  std::fprintf(stderr, "model: %lld parameters (vocab %lld, d %lld, %lld layers); policy %s; %lld steps of %lld x %lld\n",
               static_cast<long long>(config.parameter_count()), static_cast<long long>(config.vocab),
               static_cast<long long>(config.d_model), static_cast<long long>(config.layers), a.policy.c_str(),
               static_cast<long long>(a.steps), static_cast<long long>(a.batch), static_cast<long long>(a.length));

  auto tokens = meap::zeros<std::int32_t>(meap::cpu{}, {a.batch, a.length + 1});
  const auto start = std::chrono::steady_clock::now();
  const std::uint64_t first = trainer.next_step();
  double smoothed = 0;
  int skipped = 0;
  while (trainer.next_step() < static_cast<std::uint64_t>(a.steps)) {
    const std::uint64_t step = trainer.next_step();
    if (dataset) dataset->sample_batch(meap::cpu{}, a.seed, step, tokens.view());
    else synthetic_batch(a.seed, step, tokens.view());
    const auto r = trainer.step(tokens.view());
    skipped += r.skipped;
    if (r.skipped) std::fprintf(stderr, "\nstep %llu skipped: %s\n", static_cast<unsigned long long>(step), r.skip_reason.c_str());
    csv << step << ',' << r.loss << ',' << r.lr << ',' << r.grad_norm << ',' << r.masked << ',' << r.tokens_per_second
        << ',' << r.skipped << '\n';
    smoothed = step == first ? r.loss : 0.9 * smoothed + 0.1 * r.loss;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double done = static_cast<double>(step + 1 - first);
    const double eta = elapsed / done * static_cast<double>(static_cast<std::uint64_t>(a.steps) - step - 1);
    std::fprintf(stderr, "\rstep %6llu/%lld  loss %.4f (avg %.4f)  lr %.2e  |g| %.3f  %7.0f tok/s  ETA %s ",
                 static_cast<unsigned long long>(step + 1), static_cast<long long>(a.steps), r.loss, smoothed, r.lr,
                 r.grad_norm, r.tokens_per_second, format_duration(eta).c_str());
    if (a.checkpoint_every > 0 && (step + 1) % static_cast<std::uint64_t>(a.checkpoint_every) == 0) trainer.save(checkpoint);
  }
  trainer.save(checkpoint);
  std::fprintf(stderr, "\ndone: final loss (avg) %.4f, %d skipped steps; loss curve %s, checkpoint %s\n", smoothed, skipped,
               (out / "loss.csv").c_str(), checkpoint.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const arguments a = parse(argc, argv);
    if (a.policy == "ntp") return run<meap::masking::fixed_ratio>(a, std::nullopt);
    if (a.policy == "span") return run<meap::masking::span>(a, meap::masking::span{.ratio = a.mask_ratio});
    return run<meap::masking::fixed_ratio>(a, meap::masking::fixed_ratio{.ratio = a.mask_ratio});
  } catch (const meap::error& e) {
    std::fprintf(stderr, "%s\n%s", e.what(), usage);
    return 2;
  }
}
