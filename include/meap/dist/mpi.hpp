// meap/dist/mpi.hpp: data-parallel training over MPI on the CPU (OpenMPI; target meap::dist).
//
//   int main(int argc, char** argv) {
//     meap::dist::mpi_environment mpi(argc, argv);              // MPI_Init_thread .. MPI_Finalize
//     meap::dist::mpi_group group;                              // every rank of mpirun -np N
//     meap::train::pretrainer trainer(model, policy, options);
//     trainer.distribute(group, meap::dist::sharding::zero1);   // then train as on one process
//   }
//
// Collectives are MPI's blocking ones (MPI_Allreduce, MPI_Reduce_scatter, MPI_Allgatherv: the
// library's tuned algorithms; its non-blocking twins ran the 20 MiB gradient all-reduce at 0.4x
// the speed here, docs/distributed.md), each under a watchdog: when a collective has not returned
// within the group's timeout (another rank died or hangs), the watchdog thread prints which one,
// on which rank, after how long, and ends this process with exit code 1; mpirun then ends the
// others. A rank killed outright is noticed by mpirun itself, which ends the others. Errors a
// program catches (bad arguments, a failed checkpoint write) end every rank through
// dist::abort_if_running() after the program printed them.
//
// Reproducibility: each element of a reduction is summed on one rank, in the order the MPI
// library's algorithm fixes for the rank count and message size (never by arrival time), and the
// all-gather copies that one result everywhere: every rank holds the same bits, run after run.
#pragma once

#include <mpi.h>

#include <meap/core/dtype.hpp>
#include <meap/core/error.hpp>
#include <meap/dist/process_group.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace meap::dist {

// MPI for the lifetime of this object: MPI_Init_thread (MPI_THREAD_FUNNELED: only the thread that
// made it calls MPI) unless MPI is running already, MPI_Finalize at the end unless it is left by
// an exception (then the program prints the error and calls abort_if_running()).
class mpi_environment {
 public:
  mpi_environment(int& argc, char**& argv) : exceptions_(std::uncaught_exceptions()) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (initialized) return;
    int provided = 0;
    if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
      throw error("meap::dist::mpi_environment: MPI_Init_thread failed (is this program started by mpirun?)");
    owner_ = true;
  }
  mpi_environment(const mpi_environment&) = delete;
  mpi_environment& operator=(const mpi_environment&) = delete;
  ~mpi_environment() {
    if (!owner_ || std::uncaught_exceptions() > exceptions_) return;  // an error on its way: abort, not finalize
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }

 private:
  int exceptions_ = 0;
  bool owner_ = false;
};

// After a failure has been printed: ends every rank of the job with `code` when MPI is running
// (MPI_Abort; otherwise the other ranks would wait for this one until their timeout). Returns
// `code` when MPI is not running.
inline int abort_if_running(int code) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) {
    int size = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size > 1) MPI_Abort(MPI_COMM_WORLD, code);
  }
  return code;
}

namespace detail {

inline MPI_Datatype mpi_type(dtype type, std::string_view function) {
  switch (type) {
    case dtype::f64: return MPI_DOUBLE;
    case dtype::f32: return MPI_FLOAT;
    case dtype::i64: return MPI_INT64_T;
    case dtype::u64: return MPI_UINT64_T;
    case dtype::i32: return MPI_INT32_T;
    default:
      throw_argument_error(function, "data", std::string("dtype ") + std::string(to_string(type)),
                           "float64, float32, int64, uint64 or int32");
  }
}

}  // namespace detail

class mpi_group final : public process_group<cpu> {
 public:
  // A duplicate of `communicator` (so meap's messages never mix with the program's own), with
  // `timeout` for every collective. MPI must be initialized (mpi_environment).
  explicit mpi_group(MPI_Comm communicator = MPI_COMM_WORLD, std::chrono::milliseconds timeout = std::chrono::minutes(5))
      : timeout_(timeout) {
    constexpr std::string_view function = "meap::dist::mpi_group";
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) throw error(std::string(function) + ": MPI is not initialized (construct a meap::dist::mpi_environment first)");
    check_argument(timeout.count() > 0, function, "timeout", std::to_string(timeout.count()) + " ms",
                   "a positive time");
    MPI_Comm_dup(communicator, &comm_);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    if (size_ > 1) watchdog_ = std::thread([this] { watch(); });
  }
  mpi_group(const mpi_group&) = delete;
  mpi_group& operator=(const mpi_group&) = delete;
  ~mpi_group() override {
    {
      const std::lock_guard lock(watch_mutex_);
      stopping_ = true;
    }
    watch_wake_.notify_all();
    if (watchdog_.joinable()) watchdog_.join();
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized && comm_ != MPI_COMM_NULL && std::uncaught_exceptions() == 0) MPI_Comm_free(&comm_);
  }

  int rank() const noexcept override { return rank_; }
  int size() const noexcept override { return size_; }
  std::chrono::milliseconds timeout() const noexcept override { return timeout_; }
  MPI_Comm communicator() const noexcept { return comm_; }

  void all_reduce(const cpu&, const any_view& data, reduce_op op) override {
    constexpr std::string_view function = "meap::dist::mpi_group::all_reduce";
    meap::dist::detail::check_collective(function, data, size_, {}, false);
    const auto n = static_cast<int>(data.shape.product());
    if (n == 0 || size_ == 1) return;
    const auto type = detail::mpi_type(data.type, function);
    const watched guard(*this, function);
    MPI_Allreduce(MPI_IN_PLACE, data.data, n, type, op == reduce_op::sum ? MPI_SUM : MPI_MIN, comm_);
  }

  void reduce_scatter(const cpu&, const any_view& data, std::span<const index_t> bounds) override {
    constexpr std::string_view function = "meap::dist::mpi_group::reduce_scatter";
    meap::dist::detail::check_collective(function, data, size_, bounds, true);
    if (size_ == 1) return;
    const auto type = detail::mpi_type(data.type, function);
    const auto counts = counts_of(bounds);
    // MPI_IN_PLACE takes the whole buffer and leaves the rank's block at the front; move it back.
    {
      const watched guard(*this, function);
      MPI_Reduce_scatter(MPI_IN_PLACE, data.data, counts.data(), type, MPI_SUM, comm_);
    }
    const std::size_t element = size_of(data.type);
    auto* bytes = static_cast<unsigned char*>(data.data);
    const auto own = static_cast<std::size_t>(bounds[static_cast<std::size_t>(rank_)]);
    if (own != 0 && counts[static_cast<std::size_t>(rank_)] > 0)
      std::memmove(bytes + own * element, bytes, static_cast<std::size_t>(counts[static_cast<std::size_t>(rank_)]) * element);
  }

  void all_gather(const cpu&, const any_view& data, std::span<const index_t> bounds) override {
    constexpr std::string_view function = "meap::dist::mpi_group::all_gather";
    meap::dist::detail::check_collective(function, data, size_, bounds, true);
    if (size_ == 1) return;
    const auto counts = counts_of(bounds);
    std::vector<int> displacements(static_cast<std::size_t>(size_));
    for (int r = 0; r < size_; ++r) displacements[static_cast<std::size_t>(r)] = static_cast<int>(bounds[static_cast<std::size_t>(r)]);
    // Elements as opaque bytes: a copy needs no arithmetic type, so every dtype (bfloat16, half) goes.
    MPI_Datatype element;
    MPI_Type_contiguous(static_cast<int>(size_of(data.type)), MPI_BYTE, &element);
    MPI_Type_commit(&element);
    {
      const watched guard(*this, function);
      MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data.data, counts.data(), displacements.data(), element, comm_);
    }
    MPI_Type_free(&element);
  }

  void synchronize(const cpu&) override {}  // CPU collectives are done when they return

  void all_reduce_host(std::span<std::int64_t> values) override {
    if (values.empty() || size_ == 1) return;
    const watched guard(*this, "meap::dist::mpi_group::all_reduce_host");
    MPI_Allreduce(MPI_IN_PLACE, values.data(), static_cast<int>(values.size()), MPI_INT64_T, MPI_SUM, comm_);
  }

  void broadcast_host(std::string& bytes, int root) override {
    constexpr std::string_view function = "meap::dist::mpi_group::broadcast_host";
    check_argument(root >= 0 && root < size_, function, "root", root, "a rank in [0, " + std::to_string(size_) + ")");
    if (size_ == 1) return;
    std::int64_t length = static_cast<std::int64_t>(bytes.size());
    const watched guard(*this, function);
    MPI_Bcast(&length, 1, MPI_INT64_T, root, comm_);
    bytes.resize(static_cast<std::size_t>(length));
    if (length > 0) MPI_Bcast(bytes.data(), static_cast<int>(length), MPI_CHAR, root, comm_);
  }

  void barrier() override {
    if (size_ == 1) return;
    const watched guard(*this, "meap::dist::mpi_group::barrier");
    MPI_Barrier(comm_);
  }

 private:
  std::vector<int> counts_of(std::span<const index_t> bounds) const {
    std::vector<int> counts(static_cast<std::size_t>(size_));
    for (int r = 0; r < size_; ++r) {
      const index_t count = bounds[static_cast<std::size_t>(r) + 1] - bounds[static_cast<std::size_t>(r)];
      check_argument(count <= index_t{2147483647}, "meap::dist::mpi_group", "bounds", std::to_string(count) + " elements",
                     "shards of fewer than 2^31 elements (MPI counts are int)");
      counts[static_cast<std::size_t>(r)] = static_cast<int>(count);
    }
    return counts;
  }

  // The watchdog: a collective arms it with its name on entry and disarms it on return; the thread
  // sleeps until the armed deadline, and if that passes, reports and ends the process.
  class watched {
   public:
    watched(const mpi_group& group, std::string_view function) : group_(group) { group_.arm(function); }
    watched(const watched&) = delete;
    watched& operator=(const watched&) = delete;
    ~watched() { group_.disarm(); }

   private:
    const mpi_group& group_;
  };

  void arm(std::string_view function) const {
    if (size_ == 1) return;
    {
      const std::lock_guard lock(watch_mutex_);
      armed_ = std::string(function);
      deadline_ = std::chrono::steady_clock::now() + timeout_;
    }
    watch_wake_.notify_all();
  }
  void disarm() const {
    if (size_ == 1) return;
    const std::lock_guard lock(watch_mutex_);
    armed_.clear();
  }

  void watch() {
    std::unique_lock lock(watch_mutex_);
    while (!stopping_) {
      if (armed_.empty()) {
        watch_wake_.wait(lock);
        continue;
      }
      const auto deadline = deadline_;
      if (watch_wake_.wait_until(lock, deadline) == std::cv_status::timeout && !armed_.empty() && deadline_ == deadline) {
        char seconds[32];
        std::snprintf(seconds, sizeof seconds, "%.1f", static_cast<double>(timeout_.count()) / 1000.0);
        std::fprintf(stderr, "%s: rank %d of %d waited %s s for the other ranks: one of them died or hangs (the job is ended)\n",
                     armed_.c_str(), rank_, size_, seconds);
        std::fflush(stderr);
        std::_Exit(1);  // mpirun ends the other ranks when one exits non-zero
      }
    }
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  std::chrono::milliseconds timeout_;
  mutable std::mutex watch_mutex_;
  mutable std::condition_variable watch_wake_;
  mutable std::string armed_;  // the collective in progress, or empty
  mutable std::chrono::steady_clock::time_point deadline_{};
  bool stopping_ = false;
  std::thread watchdog_;
};

}  // namespace meap::dist
