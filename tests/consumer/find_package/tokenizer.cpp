// Uses meap::sentencepiece from an installed meap: the header compiles, the library links, and a
// model file that is not there is a meap::error naming it.
#include <meap/text/sentencepiece.hpp>

#include <cstdio>
#include <string>

int main() {
  try {
    meap::text::sentencepiece_tokenizer tokenizer("no-such-tokenizer.model");
    return 1;
  } catch (const meap::error& e) {
    const std::string what = e.what();
    std::printf("consumer_tokenizer: caught %s\n", e.what());
    return what.find("no-such-tokenizer.model") != std::string::npos ? 0 : 1;
  }
}
