// meap/dist/launch.hpp: how a program runs under mpirun (docs/distributed.md).
//
//   meap::dist::launch ranks;                      // before anything that can fail
//   return ranks.finish(meap::run::guarded_main("my_trainer", hint, [&] {
//     auto* host = ranks.start("my_trainer", argc, argv, 300.0);   // nullptr: one process
//     ...                                                          // the CPU group, or on CUDA:
//     meap::dist::gpu_rank gpu("my_trainer", "cuda:0", 0, host);   // GPU <0 + local rank>, NCCL
//   }));
//
// launch::start begins MPI and the host group when the program was started by mpirun with
// several ranks; launch::finish ends every rank of the job when the program failed, so no rank
// waits for one that stopped. Built without MPI (meap::dist, which defines MEAP_HAS_MPI), a launch
// of several ranks is refused instead of running N independent copies of the run. gpu_rank (nvcc
// only) puts each rank on its GPU and builds the NCCL group over the host one (meap::nccl, which
// defines MEAP_HAS_NCCL).
#pragma once

#include <meap/core/error.hpp>
#include <meap/dist/process_group.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#if defined(MEAP_HAS_MPI)
#include <meap/dist/mpi.hpp>
#endif
#if defined(__CUDACC__)
#include <meap/core/cuda/runtime.hpp>
#if defined(MEAP_HAS_NCCL)
#include <meap/dist/nccl.hpp>
#endif
#endif

namespace meap::dist {

class launch {
 public:
  // The host group when launched by mpirun with several ranks (nullptr otherwise);
  // `timeout_seconds`: how long a rank waits for the others before the run is ended.
  process_group<cpu>* start(const char* program, int& argc, char**& argv, double timeout_seconds) {
    if (!launched_by_mpi()) return nullptr;
#if defined(MEAP_HAS_MPI)
    (void)program;
    mpi_.emplace(argc, argv);
    group_.emplace(MPI_COMM_WORLD, std::chrono::milliseconds(static_cast<std::int64_t>(timeout_seconds * 1000)));
    return &*group_;
#else
    (void)argc;
    (void)argv;
    (void)timeout_seconds;
    throw_argument_error(program, "mpirun", "a launch of several ranks",
                         std::string("a ") + program + " built with MPI (libopenmpi-dev; meap::dist) for data-parallel runs");
#endif
  }

  // After main's body, with its exit code: a failure (already printed) ends every rank of the job.
  int finish(int code) {
#if defined(MEAP_HAS_MPI)
    if (code != 0 && mpi_) return abort_if_running(code);
#endif
    return code;
  }

 private:
#if defined(MEAP_HAS_MPI)
  std::optional<mpi_environment> mpi_;
  std::optional<mpi_group> group_;
#endif
};

#if defined(__CUDACC__)
// Makes CUDA device `ordinal` current after checking that it exists; `device` (the --device text)
// names it in the message.
inline void select_cuda_device(const char* program, const std::string& device, int ordinal) {
  const int devices = cuda_device_count();
  if (ordinal >= devices)
    throw_argument_error(program, "--device", device,
                         "a CUDA device in [0, " + std::to_string(devices) + ") (" + std::to_string(devices) + " found)");
  MEAP_CUDA_CHECK(cudaSetDevice(ordinal));
}

// A rank's GPU: `ordinal` (from --device) plus its local rank under mpirun, made current; with a
// host group, the NCCL group over it (group() then returns it).
class gpu_rank {
 public:
  gpu_rank(const char* program, const std::string& device, int ordinal, process_group<cpu>* host)
      : ordinal_(host != nullptr ? ordinal + local_rank() : ordinal) {
    select_cuda_device(program, device, ordinal_);
    if (host == nullptr) return;
#if defined(MEAP_HAS_NCCL)
    nccl_.emplace(*host);
#else
    throw_argument_error(program, "--device", device, "cpu under mpirun: this program was built without NCCL (meap::nccl)");
#endif
  }
  int ordinal() const noexcept { return ordinal_; }
  process_group<cuda>* group() {
#if defined(MEAP_HAS_NCCL)
    if (nccl_) return &*nccl_;
#endif
    return nullptr;
  }

 private:
  int ordinal_;
#if defined(MEAP_HAS_NCCL)
  std::optional<nccl_group> nccl_;
#endif
};
#endif

}  // namespace meap::dist
