// examples/dist_launch.hpp: how the training programs (meap_pretrain, meap_finetune) run under
// mpirun (docs/distributed.md). On the host side, rank_group starts MPI and the group when the
// program was launched with several ranks, and ends every rank when the program fails; a program
// built without MPI (MEAP_EXAMPLES_WITH_MPI undefined) refuses such a launch instead of running N
// independent copies. In their .cu halves, gpu_ranks puts each rank on its GPU and builds the
// NCCL group over the host one (MEAP_EXAMPLES_WITH_NCCL).
#pragma once

#include <meap/core/error.hpp>
#include <meap/dist/process_group.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#if defined(MEAP_EXAMPLES_WITH_MPI)
#include <meap/dist/mpi.hpp>
#endif
#if defined(__CUDACC__)
#include "cuda_device.hpp"
#if defined(MEAP_EXAMPLES_WITH_NCCL)
#include <meap/dist/nccl.hpp>
#endif
#endif

namespace meap_examples {

class rank_group {
 public:
  // The host group when launched by mpirun with several ranks (nullptr otherwise); `timeout`: how
  // long a rank waits for the others.
  meap::dist::process_group<meap::cpu>* start(const char* program, int& argc, char**& argv, double timeout_seconds) {
    if (!meap::dist::launched_by_mpi()) return nullptr;
#if defined(MEAP_EXAMPLES_WITH_MPI)
    (void)program;
    mpi_.emplace(argc, argv);
    group_.emplace(MPI_COMM_WORLD, std::chrono::milliseconds(static_cast<std::int64_t>(timeout_seconds * 1000)));
    return &*group_;
#else
    (void)argc;
    (void)argv;
    (void)timeout_seconds;
    meap::throw_argument_error(program, "mpirun", "a launch of several ranks",
                               std::string("a ") + program +
                                   " built with MPI (libopenmpi-dev; MEAP_ENABLE_MPI) for data-parallel runs");
#endif
  }

  // After main's body: a failure (already printed) ends every rank of the job.
  int finish(int code) {
#if defined(MEAP_EXAMPLES_WITH_MPI)
    if (code != 0 && mpi_) return meap::dist::abort_if_running(code);
#endif
    return code;
  }

 private:
#if defined(MEAP_EXAMPLES_WITH_MPI)
  std::optional<meap::dist::mpi_environment> mpi_;
  std::optional<meap::dist::mpi_group> group_;
#endif
};

#if defined(__CUDACC__)
// A rank's GPU: the one --device names plus its local rank under mpirun, made current; with a
// host group, the NCCL group over it (group() then returns it).
class gpu_ranks {
 public:
  gpu_ranks(const char* program, const std::string& device, int ordinal,
            meap::dist::process_group<meap::cpu>* host)
      : ordinal_(host != nullptr ? ordinal + meap::dist::local_rank() : ordinal) {
    select_cuda_device(program, device, ordinal_);
    if (host == nullptr) return;
#if defined(MEAP_EXAMPLES_WITH_NCCL)
    nccl_.emplace(*host);
#else
    meap::throw_argument_error(program, "--device", device,
                               "cpu under mpirun: this program was built without NCCL (meap::nccl)");
#endif
  }
  int ordinal() const noexcept { return ordinal_; }
  meap::dist::process_group<meap::cuda>* group() {
#if defined(MEAP_EXAMPLES_WITH_NCCL)
    if (nccl_) return &*nccl_;
#endif
    return nullptr;
  }

 private:
  int ordinal_;
#if defined(MEAP_EXAMPLES_WITH_NCCL)
  std::optional<meap::dist::nccl_group> nccl_;
#endif
};
#endif

}  // namespace meap_examples
