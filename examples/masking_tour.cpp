// masking_tour: what each masking policy does to a short sequence. Pretraining: fixed_ratio
// (per_row and per_batch), span, packed documents; fine-tuning: duplicated_copy in both layouts
// and the plain next-token row for short answers. Token ids are printed as words.
#include <meap/meap.hpp>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <span>
#include <string>
#include <vector>

namespace {

namespace mm = meap::masking;

constexpr std::int32_t pad = 0, bos = 1, eos = 2, mask = 3;
const std::vector<std::string> words{"<pad>", "<s>", "</s>", "[M]", "the", "cat", "sat", "on", "a", "mat",
                                     "and", "then", "it", "slept", "all", "day", "Q:", "what", "did", "do", "A:"};

std::string word(std::int32_t id) {
  if (id == mm::ignore_index) return ".";
  return id >= 0 && id < static_cast<std::int32_t>(words.size()) ? words[static_cast<std::size_t>(id)] : std::to_string(id);
}

template <class T>
void print_row(const char* name, const meap::tensor_view<T, meap::cpu>& ids, meap::index_t row) {
  std::printf("  %-10s", name);
  for (meap::index_t t = 0; t < ids.size(1); ++t) std::printf(" %s", word(static_cast<std::int32_t>(ids(row, t))).c_str());
  std::printf("\n");
}

void print_batch(const char* title, mm::masked_batch<meap::cpu>& batch) {
  std::printf("%s\n", title);
  for (meap::index_t b = 0; b < batch.input_ids.size(0); ++b) {
    std::printf(" row %lld\n", static_cast<long long>(b));
    print_row("input_ids", batch.input_ids.view(), b);
    print_row("labels", batch.labels.view(), b);
  }
}

void print_example(const char* title, mm::finetuning_example& example) {
  std::printf("%s (%s, %lld answer tokens, %lld masked)\n", title, example.duplicated ? "duplicated" : "plain NTP",
              static_cast<long long>(example.answer_tokens), static_cast<long long>(example.masked_tokens));
  for (meap::index_t r = 0; r < example.input_ids.size(0); ++r) {
    print_row("input_ids", example.input_ids.view(), r);
    print_row("labels", example.labels.view(), r);
    std::printf("  %-10s", "positions");
    for (meap::index_t t = 0; t < example.position_ids.size(1); ++t) std::printf(" %d", example.position_ids.view()(r, t));
    std::printf("\n");
  }
}

}  // namespace

static int run() {
  // Two rows of (T + 1) = 17 tokens: inputs are the first 16, labels the last 16.
  //   <s> the cat sat on a mat and then it slept all day </s> <pad> <pad> <pad>
  //   <s> a cat sat on the mat then it slept </s> <pad> ...
  const std::vector<std::int32_t> tokens{bos, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, eos, pad, pad, pad,
                                         bos, 8, 5, 6, 7, 4, 9, 11, 12, 13, eos, pad, pad, pad, pad, pad, pad};
  const auto batch = meap::make_view(std::span<const std::int32_t>(tokens), {2, 17});
  const mm::pretraining_options options{.seed = 2025, .step = 0, .mask_id = mask, .pad_id = pad, .special_ids = {bos, eos}};
  std::printf("Labels are shifted: labels[t] is the target of the logits at t; '.' is ignore_index (-100).\n");
  std::printf("Never masked: padding, <s>, </s>, and the last input of each document.\n\n");

  auto per_row = mm::apply(meap::cpu{}, mm::fixed_ratio{.ratio = 0.3}, batch, options);
  print_batch("fixed_ratio{.ratio = 0.3} (per_row: each row draws its own positions)", per_row);
  auto per_batch = mm::apply(meap::cpu{}, mm::fixed_ratio{.ratio = 0.3, .sharing = mm::sharing::per_batch}, batch, options);
  print_batch("\nfixed_ratio{.ratio = 0.3, .sharing = per_batch} (one set for the batch, as the official code)", per_batch);
  auto spans = mm::apply(meap::cpu{}, mm::span{.ratio = 0.3, .mean_length = 2.0, .max_length = 4}, batch, options);
  print_batch("\nspan{.ratio = 0.3, .mean_length = 2, .max_length = 4}", spans);

  // Packed documents: segment ids mark where a document ends; its last input is never masked.
  const std::vector<std::int32_t> packed{4, 5, 6, 7, 8, 9, 12, 13, 14, 15, 4, 5, 6, 7, 8, 9, 10};
  const std::vector<std::int32_t> segments{0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2};
  auto documents = mm::apply(meap::cpu{}, mm::fixed_ratio{.ratio = 0.5}, meap::make_view(std::span<const std::int32_t>(packed), {1, 17}),
                             options, meap::make_view(std::span<const std::int32_t>(segments), {1, 17}));
  print_batch("\nfixed_ratio{.ratio = 0.5} on packed documents (segments 0 0 0 0 0 0 1 1 1 1 2 ...)", documents);

  // Fine-tuning: prompt "Q: what did the cat do" and answer "A: it sat on a mat </s>".
  const std::vector<std::int32_t> prompt{16, 17, 18, 4, 5, 19};
  const std::vector<std::int32_t> answer{20, 12, 6, 7, 8, 9, eos};
  const auto prompt_view = meap::make_view(std::span<const std::int32_t>(prompt), {6});
  const auto answer_view = meap::make_view(std::span<const std::int32_t>(answer), {7});
  const mm::finetuning_options sft{.seed = 2025, .example = 0, .mask_id = mask, .special_ids = {eos}};
  std::printf("\n");
  auto concatenated = mm::apply(meap::cpu{}, mm::duplicated_copy{.ratio = 0.3, .min_answer_tokens = 4}, prompt_view,
                                answer_view, sft);
  print_example("duplicated_copy{.ratio = 0.3, .min_answer_tokens = 4} concatenated", concatenated);
  auto separate = mm::apply(meap::cpu{},
                            mm::duplicated_copy{.ratio = 0.3, .min_answer_tokens = 4, .layout = mm::layout::separate_rows},
                            prompt_view, answer_view, sft);
  print_example("\nduplicated_copy separate_rows", separate);
  auto plain = mm::apply(meap::cpu{}, mm::duplicated_copy{}, prompt_view, answer_view, sft);
  print_example("\nduplicated_copy{} (7 answer tokens <= min_answer_tokens = 50)", plain);

  // Bad input is rejected at the door.
  try {
    (void)mm::apply(meap::cpu{}, mm::fixed_ratio{.ratio = 1.5}, batch, options);
  } catch (const meap::error& e) {
    std::printf("\nrejected: %s\n", e.what());
  }
  return 0;
}

// Anything unexpected ends the program with one line and a non-zero exit.
int main() {
  try {
    return run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", "masking_tour", e.what());
  } catch (...) {
    std::fprintf(stderr, "%s: unknown error\n", "masking_tour");
  }
  return 1;
}
