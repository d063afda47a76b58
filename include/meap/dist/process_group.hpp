// meap/dist/process_group.hpp: what data-parallel training needs from a group of processes, as
// an interface the trainer calls (train/pretrain.hpp) without including MPI or NCCL.
//
// Implementations: dist/mpi.hpp (mpi_group: process_group<cpu>, OpenMPI collectives on host
// memory) and dist/nccl.hpp (nccl_group: process_group<cuda>, NCCL on the device's stream, MPI for
// starting up and for the host collectives). Each process is one rank; rank r of N trains rows
// [r G / N, (r + 1) G / N) of every global batch of G rows (docs/distributed.md).
//
// Every collective is called by every rank in the same order. None waits forever: when a rank
// died or hangs, the others end within the group's timeout with a message that says so (the MPI
// group's watchdog reports and exits; the NCCL group aborts its communicator and throws
// meap::error, which the program prints before dist::abort_if_running() ends every rank).
#pragma once

#include <meap/core/device.hpp>
#include <meap/core/dims.hpp>
#include <meap/core/error.hpp>
#include <meap/core/tensor_view.hpp>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

namespace meap::dist {

// True when this process was started by an MPI launcher (mpirun, srun) with more than one rank;
// read from the launcher's environment, before (and without) MPI: what a program checks to
// decide whether to start MPI at all, or to refuse a launch it was not built for.
inline bool launched_by_mpi() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_NTASKS"})
    if (const char* value = std::getenv(name); value != nullptr && std::string(value) != "1") return true;
  return false;
}

// This process's rank among those of its machine under an MPI launcher (0 without one): the GPU
// a rank takes on a multi-GPU node.
inline int local_rank() {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"})
    if (const char* value = std::getenv(name); value != nullptr) return std::atoi(value);
  return 0;
}

enum class reduce_op { sum, min };

// How a trainer spreads its optimizer over the ranks.
enum class sharding {
  replicated,  // plain data parallel: gradients all-reduced, every rank runs AdamW over every parameter
  zero1,       // ZeRO stage 1: AdamW's moments sharded; gradients reduce-scattered, each rank updates
               // its shard, parameters all-gathered
};

// The shard boundaries of n elements over `ranks` ranks: ranks + 1 offsets, rank r owns
// [bounds[r], bounds[r + 1]). Shards are contiguous, start at multiples of `alignment` elements
// and differ in size by at most one alignment unit (the last ones may be empty when n is small).
inline std::vector<index_t> shard_bounds(index_t n, int ranks, index_t alignment = 64) {
  check_argument(ranks >= 1, "meap::dist::shard_bounds", "ranks", ranks, "at least one rank");
  check_argument(n >= 0 && alignment >= 1, "meap::dist::shard_bounds", "n", n, "a non-negative element count");
  const index_t units = (n + alignment - 1) / alignment;
  std::vector<index_t> bounds(static_cast<std::size_t>(ranks) + 1, 0);
  for (int r = 1; r <= ranks; ++r) {
    const index_t unit = units / ranks * r + std::min<index_t>(r, units % ranks);
    bounds[static_cast<std::size_t>(r)] = std::min(n, unit * alignment);
  }
  return bounds;
}

template <device Device>
class process_group {
 public:
  virtual ~process_group() = default;

  virtual int rank() const noexcept = 0;
  virtual int size() const noexcept = 0;
  // How long a collective may wait for the other ranks before it throws.
  virtual std::chrono::milliseconds timeout() const noexcept = 0;

  // Device collectives, in place over a contiguous view of the group's device, enqueued on
  // `device`'s queue (on the CPU: done on return). The results are the same bits on every rank.
  //   all_reduce:     data = op over the ranks' data (float, double, int64, uint64).
  //   reduce_scatter: the sum over the ranks lands in rank r's range [bounds[r], bounds[r + 1]) of
  //                   its own data; the rest of its data is left unspecified.
  //   all_gather:     rank r's range is copied into every rank's data.
  virtual void all_reduce(const Device& device, const any_view& data, reduce_op op) = 0;
  virtual void reduce_scatter(const Device& device, const any_view& data, std::span<const index_t> bounds) = 0;
  virtual void all_gather(const Device& device, const any_view& data, std::span<const index_t> bounds) = 0;
  // Waits for `device`'s queue, collectives included, within the timeout.
  virtual void synchronize(const Device& device) = 0;

  // Overlap with the backward pass (replicated data parallel, train/pretrain.hpp): whether
  // reducing finished gradients while earlier layers still run pays on this group. NCCL: yes, on a
  // stream of its own beside the compute stream. MPI on the CPU: no (docs/distributed.md).
  virtual bool overlaps_backward() const noexcept { return false; }
  // Starts the sum over the ranks of `data`, in place, after the work enqueued on `device` so far,
  // without holding up what is enqueued after it; finish_started() makes `device`'s queue wait
  // for every sum started. Every rank starts the same ranges in the same order.
  virtual void start_all_reduce(const Device& device, const any_view& data) { all_reduce(device, data, reduce_op::sum); }
  virtual void finish_started(const Device&) {}

  // Host collectives (blocking, within the timeout).
  virtual void all_reduce_host(std::span<std::int64_t> values) = 0;  // sum
  virtual void broadcast_host(std::string& bytes, int root) = 0;     // root's bytes to every rank
  virtual void barrier() = 0;
};

// One process on its own (rank 0 of 1): every collective is the identity. The host side of a
// single-GPU nccl_group, and what a program uses to run its distributed code path without MPI.
class single_process_group final : public process_group<cpu> {
 public:
  int rank() const noexcept override { return 0; }
  int size() const noexcept override { return 1; }
  std::chrono::milliseconds timeout() const noexcept override { return std::chrono::minutes(5); }
  void all_reduce(const cpu&, const any_view&, reduce_op) override {}
  void reduce_scatter(const cpu&, const any_view&, std::span<const index_t>) override {}
  void all_gather(const cpu&, const any_view&, std::span<const index_t>) override {}
  void synchronize(const cpu&) override {}
  void all_reduce_host(std::span<std::int64_t>) override {}
  void broadcast_host(std::string&, int) override {}
  void barrier() override {}
};

namespace detail {

// The checks every implementation makes at its doors, the same on every device.
inline void check_collective(std::string_view function, const any_view& data, int ranks,
                             std::span<const index_t> bounds, bool with_bounds) {
  check_argument(data.strides == contiguous_strides(data.shape), function, "data",
                 "shape " + to_string(data.shape) + " strides " + to_string(data.strides), "a contiguous view");
  check_argument(data.shape.product() == 0 || data.data != nullptr, function, "data", "nullptr",
                 "a view of allocated memory");
  if (!with_bounds) return;
  check_argument(bounds.size() == static_cast<std::size_t>(ranks) + 1, function, "bounds",
                 std::to_string(bounds.size()) + " offsets", std::to_string(ranks + 1) + " offsets (ranks + 1)");
  check_argument(bounds.front() == 0 && bounds.back() == data.shape.product(), function, "bounds",
                 "[" + std::to_string(bounds.front()) + ", " + std::to_string(bounds.back()) + "]",
                 "offsets from 0 to the view's " + std::to_string(data.shape.product()) + " elements");
  for (std::size_t r = 0; r + 1 < bounds.size(); ++r)
    check_argument(bounds[r] <= bounds[r + 1], function, "bounds", "offset " + std::to_string(bounds[r + 1]) +
                   " after " + std::to_string(bounds[r]), "non-decreasing offsets");
}

}  // namespace detail

}  // namespace meap::dist
