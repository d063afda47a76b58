// The apps' runs on the CPU, instantiated once (apps/runs.hpp).
#include "runs.hpp"

MEAP_APPS_CPU_RUNS()

#if !defined(MEAP_APPS_WITH_CUDA)
// This build has no CUDA translation unit (MEAP_ENABLE_CUDA=OFF, or no CUDA toolkit found): the
// GPU entry points refuse --device cuda.
namespace {
[[noreturn]] void built_without_cuda(const std::string& program, const std::string& device) {
  meap::throw_argument_error(program, "--device", device,
                             "cpu: this " + program +
                                 " was built without CUDA (configure meap with a CUDA toolkit and MEAP_ENABLE_CUDA=ON)");
}
}  // namespace

int meap_apps::pretrain_on_cuda(meap::run::pretrain_options options, const std::string&, const std::string& device, int,
                                double, meap::dist::process_group<meap::cpu>*) {
  built_without_cuda(options.program, device);
}
int meap_apps::finetune_on_cuda(meap::run::finetune_options options, const meap::text::tokenizer*, const std::string&,
                                const std::string& device, int, meap::dist::process_group<meap::cpu>*) {
  built_without_cuda(options.program, device);
}
int meap_apps::evaluate_on_cuda(const meap::eval::suite_options& options, const std::string&, const std::string& device,
                                int) {
  built_without_cuda(options.program, device);
}
#endif
