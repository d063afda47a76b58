// meap_demo: does MEAP help a model find a key in a haystack? Trains two tiny LLaMA-style models
// from the same initialization on the same data, one with plain next-token prediction (NTP) and
// one with MEAP (15% of input tokens replaced by [MASK], same NTP loss), on a synthetic multi-query
// associative recall task, then measures retrieval accuracy by context length and needle depth.
//
//   meap_demo [--steps N] [--seed S] [--out DIR] [--quick]
//
// Prints the table, writes DIR/meap_demo.csv and, when gnuplot is installed, DIR/meap_demo.png.
// The task, the vocabulary and the settings are explained in docs/demo.md.
#include <meap/meap.hpp>
#include <meap/nn/llama.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace {

// ---------------------------------------------------------------------------------------------
// Vocabulary. Each hidden key-value pair is ONE token, a "pair token" that binds key k to value v
// (one of key_count * value_count ids), so a single attention layer can retrieve it: the query
// key must attend to the pair token that carries it and read its value. (The two-token MQAR
// layout "k v" needs a two-layer induction circuit, which the 10-minute CPU budget does not
// train; docs/demo.md has the numbers.) Keys, values, filler and pair tokens are disjoint ranges,
// so a key occurs exactly once in the haystack and the only way to answer is to find that pair.
constexpr std::int32_t bos_id = 0;
constexpr std::int32_t query_id = 1;  // starts the query block
constexpr std::int32_t mask_id = 2;   // [MASK]: written only by the MEAP policy, never by the generator
constexpr std::int32_t key_count = 16, value_count = 16, filler_count = 16;
constexpr std::int32_t first_key = 3;
constexpr std::int32_t first_value = first_key + key_count;
constexpr std::int32_t first_filler = first_value + value_count;
constexpr std::int32_t first_pair = first_filler + filler_count;
constexpr std::int32_t vocab_size = first_pair + key_count * value_count;

constexpr std::int32_t pair_token(std::int32_t key, std::int32_t value) {
  return first_pair + (key - first_key) * value_count + (value - first_value);
}

// Each sequence hides `pairs` key-value pairs in the haystack and asks for all of them, in a random
// order, after the QUERY marker: several queries per row give more learning signal per token
// (as in Zoology's MQAR), and evaluation scores only the needle's query.
constexpr int pairs = 8;
constexpr int queries = pairs;

// Lengths T (inputs per row; a row holds T + 1 tokens). Training cycles over train_lengths;
// evaluation covers two of them and two longer ones (256, 512) that no training row had: there
// the same 8 pairs hide in 2x and 4x more filler, which tests whether retrieval holds up as the
// haystack grows beyond what the model saw.
constexpr std::array<meap::index_t, 4> train_lengths{32, 64, 96, 128};
constexpr std::array<meap::index_t, 4> lengths{64, 128, 256, 512};  // evaluated
constexpr std::array<int, 5> depths_percent{0, 25, 50, 75, 100};

// One row of T + 1 tokens:
//   BOS, haystack (filler with the pair tokens inserted), QUERY, k_1 v_1, ..., k_Q v_Q.
// needle_depth < 0: the pairs sit at uniformly random places. Otherwise pair 0 (the needle) sits
// at that fraction of the haystack (0 = first thing after BOS, 1 = last thing before QUERY) and is
// queried first; the other pairs are random distractors. Everything is drawn from `random`.
void generate_row(std::int32_t* row, meap::index_t length, meap::philox_stream& random, double needle_depth) {
  const auto draw = [&](int bound) { return static_cast<int>(random.next_below(static_cast<std::uint32_t>(bound))); };
  const int total = static_cast<int>(length) + 1;
  const int haystack = total - 2 - 2 * queries;  // minus BOS, QUERY and the query block
  const int fillers = haystack - pairs;

  // Distinct keys (partial Fisher-Yates), values drawn freely.
  std::array<std::int32_t, key_count> keys{};
  for (int i = 0; i < key_count; ++i) keys[static_cast<std::size_t>(i)] = first_key + i;
  std::array<std::int32_t, pairs> values{};
  for (int i = 0; i < pairs; ++i) {
    std::swap(keys[static_cast<std::size_t>(i)], keys[static_cast<std::size_t>(i + draw(key_count - i))]);
    values[static_cast<std::size_t>(i)] = first_value + draw(value_count);
  }

  // The haystack is a sequence of `units`: fillers + pairs, one token each.
  // slot[u] = pair index, or -1 for a filler.
  const int units = fillers + pairs;
  std::vector<int> slot(static_cast<std::size_t>(units), -1);
  int first_random_pair = 0;
  if (needle_depth >= 0) {
    slot[static_cast<std::size_t>(static_cast<int>(needle_depth * (units - 1) + 0.5))] = 0;
    first_random_pair = 1;
  }
  for (int p = first_random_pair; p < pairs; ++p) {
    int u = draw(units);
    while (slot[static_cast<std::size_t>(u)] >= 0) u = draw(units);  // few pairs among many units: rare
    slot[static_cast<std::size_t>(u)] = p;
  }
  int t = 0;
  row[t++] = bos_id;
  for (const int p : slot) {
    if (p < 0) {
      row[t++] = first_filler + draw(filler_count);
    } else {
      row[t++] = pair_token(keys[static_cast<std::size_t>(p)], values[static_cast<std::size_t>(p)]);
    }
  }

  // Query order: a random permutation, with the needle first when there is one.
  std::array<int, pairs> order{};
  for (int i = 0; i < pairs; ++i) order[static_cast<std::size_t>(i)] = i;
  for (int i = first_random_pair; i < pairs - 1; ++i)
    std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(i + draw(pairs - i))]);
  row[t++] = query_id;
  for (int q = 0; q < queries; ++q) {
    row[t++] = keys[static_cast<std::size_t>(order[static_cast<std::size_t>(q)])];
    row[t++] = values[static_cast<std::size_t>(order[static_cast<std::size_t>(q)])];
  }
}

// The input position whose next-token prediction is the first query's value: the first query key.
meap::index_t first_answer_position(meap::index_t length) { return length + 1 - 2 * queries; }

// ---------------------------------------------------------------------------------------------
struct settings {
  std::int64_t steps = 4000;
  std::uint64_t seed = 1;
  std::filesystem::path out = ".";
  int eval_rows = 128;  // held-out rows per (length, depth) cell
  bool quick = false;
  bool answers_only = false;  // --loss answers: labels only on the query answers (Zoology's MQAR loss)
};

// The command line through CLI11: --help, typed and range-checked options, errors that name the
// option. Sets `exit_code` (0 for --help, non-zero for an error) when the program should stop.
settings parse_arguments(int argc, char** argv, int& exit_code) {
  settings s;
  std::int64_t steps = 0;
  std::string loss = "full";
  std::string out = ".";
  CLI::App app{"meap_demo: NTP against MEAP on multi-query associative recall, trained and evaluated on the CPU"};
  app.add_option("--steps", steps, "optimizer steps per model (default 4000; --quick: 400)")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 40));
  app.add_option("--seed", s.seed, "initialization, data and masking seed")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            if (!text.empty() && text.size() <= 20 && text.find_first_not_of("0123456789") == std::string::npos) return {};
            return "Value " + text + " is not an integer from 0 to 18446744073709551615";
          },
          "UINT64"))
      ->capture_default_str();
  app.add_option("--out", out, "where meap_demo.csv and meap_demo.png go")->capture_default_str();
  app.add_option("--loss", loss,
                 "full: next-token loss on every position, as the method trains; answers: only the query answers "
                 "carry a label, as Zoology trains MQAR")
      ->check(CLI::IsMember({"full", "answers"}))
      ->capture_default_str();
  app.add_flag("--quick", s.quick, "a ~1 minute smoke run: fewer steps and evaluation rows");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    exit_code = app.exit(e);
    return s;
  }
  if (out.empty()) meap::throw_argument_error("meap_demo", "--out", "\"\"", "a directory");
  s.out = out;
  s.answers_only = loss == "answers";
  if (s.quick) s.eval_rows = 32;
  s.steps = steps > 0 ? steps : (s.quick ? 400 : s.steps);
  return s;
}

// ---------------------------------------------------------------------------------------------
meap::nn::llama_config model_config() {
  meap::nn::llama_config c;
  c.vocab = vocab_size;
  c.d_model = 64;
  c.layers = 2;  // recall needs an induction circuit: at least two attention layers
  c.heads = 4;
  c.kv_heads = 4;
  c.ffn = 176;
  c.max_seq = lengths.back();  // the longest evaluated length
  return c;
}

// Rows per step: about the same number of tokens whatever the step's length.
constexpr meap::index_t tokens_per_step = 1024;

// Training step s uses length train_lengths[s % 4], and the
// same data reach both models (the generator is keyed by (data seed, step, row) only).
meap::tensor<std::int32_t, meap::cpu> training_batch(std::uint64_t seed, std::uint64_t step) {
  const meap::index_t length = train_lengths[step % train_lengths.size()];
  const meap::index_t rows = tokens_per_step / length;
  auto tokens = meap::zeros<std::int32_t>(meap::cpu{}, {rows, length + 1});
  for (meap::index_t b = 0; b < rows; ++b) {
    meap::philox_stream random(seed, step, static_cast<std::uint32_t>(b));
    generate_row(tokens.data() + b * (length + 1), length, random, -1.0);
  }
  return tokens;
}

// One training step, built from the same pieces as meap::train::pretrainer::step (masking::apply,
// forward, fused selective cross-entropy, backward, clipping, AdamW), written out so that a reader
// sees each of them. With --loss full (the default) every position carries its next token as the
// label, exactly the method's loss; most targets here (filler, pair tokens, query keys) are random
// and unpredictable, so the loss stays high and only the answers can be learned. --loss answers
// labels only the query answers, as Zoology trains MQAR. Both models get the same labels either way.
double train(const char* name, meap::nn::llama_model<meap::fp32, meap::cpu>& model, std::optional<meap::masking::fixed_ratio> policy,
             const settings& s) {
  meap::adamw_config optimizer_config;
  optimizer_config.weight_decay = 0.01;
  meap::adamw<meap::fp32, meap::cpu> optimizer(optimizer_config);
  const meap::warmup_cosine schedule({3e-3, 3e-4, std::min<std::int64_t>(60, s.steps), s.steps});
  meap::masking::pretraining_options masking;
  masking.seed = s.seed;
  masking.mask_id = mask_id;
  // BOS and the query marker are structure, not content: never masked. Keys and values are
  // masked uniformly, as the method does, in the haystack and in the query block alike.
  masking.special_ids = {bos_id, query_id};

  const auto start = std::chrono::steady_clock::now();
  double smoothed = 0.0, tokens = 0.0;
  for (std::int64_t step = 0; step < s.steps; ++step) {
    const auto batch = training_batch(s.seed + 1000, static_cast<std::uint64_t>(step));
    const meap::index_t rows = batch.size(0), length = batch.size(1) - 1;
    meap::tensor<std::int32_t, meap::cpu> input_ids;
    if (policy) {
      masking.step = static_cast<std::uint64_t>(step);
      input_ids = std::move(meap::masking::apply(meap::cpu{}, *policy, batch.view(), masking).input_ids);
    } else {
      input_ids = meap::clone(meap::cpu{}, batch.view().slice(1, 0, length).as_const());
    }
    auto labels = meap::zeros<std::int32_t>(meap::cpu{}, {rows * length});
    meap::fill(meap::cpu{}, labels.view(), meap::ignore_index);
    for (meap::index_t b = 0; b < rows; ++b) {
      if (s.answers_only) {
        for (int q = 0; q < queries; ++q) {
          const meap::index_t at = first_answer_position(length) + 2 * q;  // a query key; its target is the value
          labels.data()[b * length + at] = batch.view()(b, at + 1);
        }
      } else {
        for (meap::index_t t = 0; t < length; ++t) labels.data()[b * length + t] = batch.view()(b, t + 1);
      }
    }

    model.zero_grad(meap::cpu{});
    const auto context = model.forward(meap::cpu{}, input_ids.view());
    meap::tensor<float, meap::cpu> d_hidden(meap::cpu{}, context.hidden.shape());
    // The head's gradient goes straight into the model's gradient buffer (added to it).
    const auto loss = meap::linear_cross_entropy<float>(meap::cpu{}, context.hidden.view(), model.head_weight(),
                                                        labels.view(), d_hidden.view(), model.head_grad(),
                                                        {.d_weight_write = meap::gradient_write::accumulate});
    model.backward(meap::cpu{}, context, d_hidden.view());
    const auto params = model.parameters();
    const double lr = schedule(step);
    if (meap::clip_grad_norm(meap::cpu{}, params, 1.0).finite && std::isfinite(loss.loss))
      optimizer.step(meap::cpu{}, model.store(), lr);
    else
      std::fprintf(stderr, "  %s step %lld: non-finite loss or gradient, update skipped\n", name,
                   static_cast<long long>(step));

    smoothed = step == 0 ? loss.loss : 0.95 * smoothed + 0.05 * loss.loss;
    tokens += static_cast<double>(rows * length);
    if ((step + 1) % 100 == 0 || step + 1 == s.steps) {
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double eta = elapsed / static_cast<double>(step + 1) * static_cast<double>(s.steps - step - 1);
      std::fprintf(stderr, "  %s step %5lld/%lld  loss %.3f  lr %.2e  %5.0f tokens/s  ETA %4.0f s\n", name,
                   static_cast<long long>(step + 1), static_cast<long long>(s.steps), smoothed, lr, tokens / elapsed,
                   eta);
    }
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// ---------------------------------------------------------------------------------------------
// Needle accuracy (argmax of the logits at the answer position, no masking at inference) for
// every (length, depth) cell on held-out rows: a data seed no training step uses.
using grid = std::array<std::array<int, depths_percent.size()>, lengths.size()>;  // correct answers

grid evaluate(const meap::nn::llama_model<meap::fp32, meap::cpu>& model, const settings& s) {
  grid correct{};
  const meap::index_t rows = s.eval_rows;
  for (std::size_t li = 0; li < lengths.size(); ++li) {
    const meap::index_t length = lengths[li];
    for (std::size_t di = 0; di < depths_percent.size(); ++di) {
      auto tokens = meap::zeros<std::int32_t>(meap::cpu{}, {rows, length + 1});
      for (meap::index_t b = 0; b < rows; ++b) {
        meap::philox_stream random(s.seed + 0xe7a1'0000ull, li * depths_percent.size() + di,
                                   static_cast<std::uint32_t>(b));
        generate_row(tokens.data() + b * (length + 1), length, random, depths_percent[di] / 100.0);
      }
      // In chunks of rows: forward keeps every activation for a backward pass, so 128 rows of
      // T = 512 at once would hold about 1 GB.
      constexpr meap::index_t chunk_rows = 16;
      const meap::index_t at = first_answer_position(length);
      for (meap::index_t b0 = 0; b0 < rows; b0 += chunk_rows) {
        const meap::index_t n = std::min(chunk_rows, rows - b0);
        const auto inputs = meap::clone(meap::cpu{}, tokens.view().slice(0, b0, b0 + n).slice(1, 0, length).as_const());
        const auto context = model.forward(meap::cpu{}, inputs.view());
        const auto logits = model.logits(meap::cpu{}, context);  // (n * length, vocab)
        for (meap::index_t b = 0; b < n; ++b) {
          const float* row_logits = logits.data() + (b * length + at) * vocab_size;
          const auto best =
              static_cast<std::int32_t>(std::max_element(row_logits, row_logits + vocab_size) - row_logits);
          correct[li][di] += best == tokens.view()(b0 + b, at + 1);
        }
      }
    }
  }
  return correct;
}

double percent(int correct, int total) { return total > 0 ? 100.0 * correct / total : 0.0; }

void print_table(const grid& ntp, const grid& meap_grid, int rows) {
  std::printf("\nNeedle retrieval accuracy (%%), %d held-out rows per cell, NTP / MEAP:\n\n", rows);
  std::printf("%8s", "T \\ depth");
  for (const int d : depths_percent) std::printf(" | %11d%%", d);
  std::printf(" | %12s\n", "all depths");
  const int depth_count = static_cast<int>(depths_percent.size());
  std::array<int, depths_percent.size()> ntp_column{}, meap_column{};
  int ntp_all = 0, meap_all = 0;
  for (std::size_t li = 0; li < lengths.size(); ++li) {
    std::printf("%9lld", static_cast<long long>(lengths[li]));
    int ntp_row = 0, meap_row = 0;
    for (std::size_t di = 0; di < depths_percent.size(); ++di) {
      std::printf(" | %5.1f / %5.1f", percent(ntp[li][di], rows), percent(meap_grid[li][di], rows));
      ntp_row += ntp[li][di];
      meap_row += meap_grid[li][di];
      ntp_column[di] += ntp[li][di];
      meap_column[di] += meap_grid[li][di];
    }
    ntp_all += ntp_row;
    meap_all += meap_row;
    std::printf(" | %5.1f / %5.1f\n", percent(ntp_row, rows * depth_count), percent(meap_row, rows * depth_count));
  }
  const int length_count = static_cast<int>(lengths.size());
  std::printf("%9s", "all T");
  for (std::size_t di = 0; di < depths_percent.size(); ++di)
    std::printf(" | %5.1f / %5.1f", percent(ntp_column[di], rows * length_count),
                percent(meap_column[di], rows * length_count));
  std::printf(" | %5.1f / %5.1f\n", percent(ntp_all, rows * length_count * depth_count),
              percent(meap_all, rows * length_count * depth_count));
  std::printf("\nChance: %.1f%% for a uniform guess among the %d values, %.1f%% for a guess among the %d values "
              "in the row.\n", 100.0 / value_count, value_count, 100.0 / pairs, pairs);
}

// Written atomically: the name holds the previous file or the whole new one, never a part.
void write_csv(const std::filesystem::path& path, const grid& ntp, const grid& meap_grid, int rows) {
  std::ostringstream csv;
  csv << "model,length,depth_percent,correct,total,accuracy\n";
  for (int m = 0; m < 2; ++m)
    for (std::size_t li = 0; li < lengths.size(); ++li)
      for (std::size_t di = 0; di < depths_percent.size(); ++di) {
        const int c = (m == 0 ? ntp : meap_grid)[li][di];
        csv << (m == 0 ? "NTP" : "MEAP") << ',' << lengths[li] << ',' << depths_percent[di] << ',' << c << ','
            << rows << ',' << static_cast<double>(c) / rows << '\n';
      }
  const std::string text = csv.str();
  meap::write_file_atomically(path, std::span<const std::byte>(reinterpret_cast<const std::byte*>(text.data()), text.size()));
}

// Two panels, accuracy by length (averaged over depths) and by depth (averaged over lengths),
// drawn by gnuplot from inline data so the script stands alone.
void write_plot(const std::filesystem::path& directory, const grid& ntp, const grid& meap_grid, int rows) {
  if (std::system("command -v gnuplot > /dev/null 2>&1") != 0) {
    std::printf("gnuplot not found: skipping the plot (install it with: apt-get install gnuplot-nox)\n");
    return;
  }
  const auto script_path = directory / "meap_demo.gp";
  const auto png_path = directory / "meap_demo.png";
  // gnuplot draws into a temporary name, renamed over the PNG once complete.
  const auto png_temporary = directory / ".meap_demo.png.tmp";
  std::ostringstream gp;
  const int length_count = static_cast<int>(lengths.size()), depth_count = static_cast<int>(depths_percent.size());
  gp << "$by_length << EOD\n";
  for (std::size_t li = 0; li < lengths.size(); ++li) {
    int n = 0, m = 0;
    for (std::size_t di = 0; di < depths_percent.size(); ++di) n += ntp[li][di], m += meap_grid[li][di];
    gp << lengths[li] << ' ' << percent(n, rows * depth_count) << ' ' << percent(m, rows * depth_count) << '\n';
  }
  gp << "EOD\n$by_depth << EOD\n";
  for (std::size_t di = 0; di < depths_percent.size(); ++di) {
    int n = 0, m = 0;
    for (std::size_t li = 0; li < lengths.size(); ++li) n += ntp[li][di], m += meap_grid[li][di];
    gp << depths_percent[di] << ' ' << percent(n, rows * length_count) << ' ' << percent(m, rows * length_count)
       << '\n';
  }
  gp << "EOD\n"
     << "set terminal pngcairo size 1100,450 font 'sans,11'\n"
     << "set output '" << png_temporary.string() << "'\n"
     << "set multiplot layout 1,2 title 'meap\\_demo: needle retrieval accuracy, NTP vs MEAP (same init, same data)'\n"
     << "set yrange [0:100]\nset ylabel 'accuracy (%)'\nset grid\nset key bottom left\n"
     << "set xlabel 'context length T (averaged over depths; trained on T <= " << train_lengths.back() << ")'\n"
     << "set logscale x 2\nset xtics (" << lengths[0] << ", " << lengths[1] << ", " << lengths[2] << ", " << lengths[3]
     << ")\n"
     << "plot $by_length using 1:2 with linespoints lw 2 pt 7 title 'NTP', "
        "$by_length using 1:3 with linespoints lw 2 pt 5 title 'MEAP'\n"
     << "unset logscale x\nset xlabel 'needle depth in the haystack (%), averaged over lengths'\nset xtics 0,25,100\n"
     << "plot $by_depth using 1:2 with linespoints lw 2 pt 7 title 'NTP', "
        "$by_depth using 1:3 with linespoints lw 2 pt 5 title 'MEAP'\n"
     << "unset multiplot\n";
  const std::string script = gp.str();
  meap::write_file_atomically(script_path,
                              std::span<const std::byte>(reinterpret_cast<const std::byte*>(script.data()), script.size()));
  const std::string command = "gnuplot '" + script_path.string() + "'";
  std::error_code ec;
  if (std::system(command.c_str()) != 0 || (std::filesystem::rename(png_temporary, png_path, ec), ec)) {
    std::filesystem::remove(png_temporary, ec);
    std::printf("gnuplot failed on %s: no plot written\n", script_path.string().c_str());
  } else {
    std::printf("wrote %s\n", png_path.string().c_str());
  }
}

int run(int argc, char** argv) {
  int exit_code = -1;
  const settings s = parse_arguments(argc, argv, exit_code);
  if (exit_code >= 0) return exit_code;
  std::error_code ec;
  std::filesystem::create_directories(s.out, ec);
  if (ec || !std::filesystem::is_directory(s.out))
    meap::throw_argument_error("meap_demo", "--out", s.out.string(),
                               "a directory that exists or can be created" + (ec ? " (" + ec.message() + ")" : std::string()));
  {  // writable: found now, not after an hour of training
    const std::string probe = "probe\n";
    meap::write_file_atomically(s.out / ".meap_demo.write_test",
                                std::span<const std::byte>(reinterpret_cast<const std::byte*>(probe.data()), probe.size()));
    std::filesystem::remove(s.out / ".meap_demo.write_test", ec);
  }
  const auto config = model_config();
  std::printf("meap_demo: %lld-parameter LLaMA (d_model %lld, %lld layers, %lld heads, vocab %lld), %lld steps of "
              "~%lld tokens per model, T cycling over %lld/%lld/%lld/%lld; evaluated at T = 64, 128, 256, 512\n",
              static_cast<long long>(config.parameter_count()), static_cast<long long>(config.d_model),
              static_cast<long long>(config.layers), static_cast<long long>(config.heads),
              static_cast<long long>(config.vocab), static_cast<long long>(s.steps),
              static_cast<long long>(tokens_per_step), static_cast<long long>(train_lengths[0]),
              static_cast<long long>(train_lengths[1]), static_cast<long long>(train_lengths[2]),
              static_cast<long long>(train_lengths[3]));
  std::fflush(stdout);

  const auto start = std::chrono::steady_clock::now();
  // Same initialization and same batches for both; only the masking differs.
  meap::nn::llama_model<meap::fp32, meap::cpu> ntp(config), meap_model(config);
  ntp.initialize(s.seed);
  meap_model.initialize(s.seed);
  std::fprintf(stderr, "training NTP\n");
  const double ntp_seconds = train("NTP ", ntp, std::nullopt, s);
  std::fprintf(stderr, "training MEAP (15%% of inputs masked)\n");
  const double meap_seconds = train("MEAP", meap_model, meap::masking::fixed_ratio{0.15}, s);
  std::fprintf(stderr, "evaluating\n");
  const grid ntp_grid = evaluate(ntp, s), meap_grid = evaluate(meap_model, s);

  print_table(ntp_grid, meap_grid, s.eval_rows);
  write_csv(s.out / "meap_demo.csv", ntp_grid, meap_grid, s.eval_rows);
  std::printf("wrote %s\n", (s.out / "meap_demo.csv").string().c_str());
  write_plot(s.out, ntp_grid, meap_grid, s.eval_rows);
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("time: NTP training %.0f s, MEAP training %.0f s, total %.0f s\n", ntp_seconds, meap_seconds, total);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const meap::error& e) {  // a bad argument: the message names it
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "meap_demo: %s\n", e.what());
    return 1;
  } catch (...) {
    std::fprintf(stderr, "meap_demo: unknown error\n");
    return 1;
  }
}
