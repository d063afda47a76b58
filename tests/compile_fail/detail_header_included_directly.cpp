// Must not compile: internal headers refuse direct inclusion.
#include <meap/detail/format.hpp>

int main() { return 0; }
