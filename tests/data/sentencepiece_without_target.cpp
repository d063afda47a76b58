// Compile-fail test: meap/text/sentencepiece.hpp in a program that does not link
// meap::sentencepiece must stop the build with a message that names the target.
#include <meap/text/sentencepiece.hpp>

int main() { return 0; }
