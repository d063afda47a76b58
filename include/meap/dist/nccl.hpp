// meap/dist/nccl.hpp: data-parallel training on GPUs over NCCL (target meap::nccl; in .cu files,
// after <meap/cuda.hpp>). One process per GPU, started by mpirun as for dist/mpi.hpp:
//
//   meap::dist::mpi_environment mpi(argc, argv);
//   meap::dist::mpi_group host;                                  // start-up and host collectives
//   cudaSetDevice(local_rank);                                   // one GPU per rank
//   meap::cuda_stream stream;
//   meap::dist::nccl_group group(host);                          // NCCL over the ranks' GPUs
//   trainer.distribute(group, meap::dist::sharding::zero1);
//
// The ncclUniqueId goes from rank 0 to the others through the host group. Collectives are
// enqueued on the trainer's stream (NCCL's ring and tree algorithms give every rank the same bits
// and do not depend on timing); reduce-scatter and all-gather over uneven shards are a group of
// ncclReduce / ncclBroadcast calls, one per rank's shard. synchronize() waits for the stream
// with the host group's timeout, watching NCCL's asynchronous errors: a rank that died or hangs
// makes it abort the communicator and throw meap::error, never wait forever.
#pragma once

#include <nccl.h>

#include <meap/core/cuda/runtime.hpp>
#include <meap/core/error.hpp>
#include <meap/dist/process_group.hpp>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>

namespace meap::dist {

namespace detail {

inline void check_nccl(ncclResult_t result, std::string_view function, std::string_view call) {
  if (result == ncclSuccess || result == ncclInProgress) return;
  throw error(std::string(function) + ": " + std::string(call) + " failed: " + ncclGetErrorString(result) +
              " (" + ncclGetLastError(nullptr) + ")");
}

inline ncclDataType_t nccl_type(dtype type, std::string_view function) {
  switch (type) {
    case dtype::f64: return ncclFloat64;
    case dtype::f32: return ncclFloat32;
    case dtype::f16: return ncclFloat16;
    case dtype::bf16: return ncclBfloat16;
    case dtype::i64: return ncclInt64;
    case dtype::u64: return ncclUint64;
    case dtype::i32: return ncclInt32;
    case dtype::u8: return ncclUint8;
    default:
      throw_argument_error(function, "data", std::string("dtype ") + std::string(to_string(type)),
                           "float64, float32, float16, bfloat16, int64, uint64, int32 or uint8");
  }
}

}  // namespace detail

class nccl_group final : public process_group<cuda> {
 public:
  // A communicator over the current CUDA device of every rank of `host` (which must outlive it).
  explicit nccl_group(process_group<cpu>& host) : host_(host) {
    constexpr std::string_view function = "meap::dist::nccl_group";
    ncclUniqueId id{};
    if (host.rank() == 0) detail::check_nccl(ncclGetUniqueId(&id), function, "ncclGetUniqueId");
    std::string bytes(reinterpret_cast<const char*>(&id), sizeof id);
    host.broadcast_host(bytes, 0);
    check_argument(bytes.size() == sizeof id, function, "host", std::to_string(bytes.size()) + " bytes of unique id",
                   std::to_string(sizeof id) + " bytes from rank 0");
    std::memcpy(&id, bytes.data(), sizeof id);
    detail::check_nccl(ncclCommInitRank(&comm_, host.size(), id, host.rank()), function, "ncclCommInitRank");
  }
  nccl_group(const nccl_group&) = delete;
  nccl_group& operator=(const nccl_group&) = delete;
  ~nccl_group() override {
    if (side_stream_ != nullptr) {
      (void)cudaStreamSynchronize(side_stream_);
      (void)cudaEventDestroy(ready_);
      (void)cudaEventDestroy(reduced_);
      (void)cudaStreamDestroy(side_stream_);
    }
    if (comm_ == nullptr) return;
    if (failed_) (void)ncclCommAbort(comm_);
    else (void)ncclCommDestroy(comm_);
  }

  int rank() const noexcept override { return host_.rank(); }
  int size() const noexcept override { return host_.size(); }
  std::chrono::milliseconds timeout() const noexcept override { return host_.timeout(); }
  ncclComm_t communicator() const noexcept { return comm_; }

  void all_reduce(const cuda& device, const any_view& data, reduce_op op) override {
    constexpr std::string_view function = "meap::dist::nccl_group::all_reduce";
    check_device_view(function, data, {}, false);
    const auto n = static_cast<std::size_t>(data.shape.product());
    if (n == 0) return;
    detail::check_nccl(ncclAllReduce(data.data, data.data, n, detail::nccl_type(data.type, function),
                                     op == reduce_op::sum ? ncclSum : ncclMin, comm_, device.stream),
                       function, "ncclAllReduce");
  }

  void reduce_scatter(const cuda& device, const any_view& data, std::span<const index_t> bounds) override {
    constexpr std::string_view function = "meap::dist::nccl_group::reduce_scatter";
    check_device_view(function, data, bounds, true);
    const auto type = detail::nccl_type(data.type, function);
    auto* base = static_cast<unsigned char*>(data.data);
    const std::size_t element = size_of(data.type);
    detail::check_nccl(ncclGroupStart(), function, "ncclGroupStart");
    for (int r = 0; r < size(); ++r) {
      const auto begin = static_cast<std::size_t>(bounds[static_cast<std::size_t>(r)]);
      const auto count = static_cast<std::size_t>(bounds[static_cast<std::size_t>(r) + 1]) - begin;
      if (count == 0) continue;
      void* shard = base + begin * element;
      detail::check_nccl(ncclReduce(shard, shard, count, type, ncclSum, r, comm_, device.stream), function, "ncclReduce");
    }
    detail::check_nccl(ncclGroupEnd(), function, "ncclGroupEnd");
  }

  void all_gather(const cuda& device, const any_view& data, std::span<const index_t> bounds) override {
    constexpr std::string_view function = "meap::dist::nccl_group::all_gather";
    check_device_view(function, data, bounds, true);
    auto* base = static_cast<unsigned char*>(data.data);
    const std::size_t element = size_of(data.type);
    detail::check_nccl(ncclGroupStart(), function, "ncclGroupStart");
    for (int r = 0; r < size(); ++r) {  // bytes: a copy needs no arithmetic type
      const auto begin = static_cast<std::size_t>(bounds[static_cast<std::size_t>(r)]) * element;
      const auto bytes = static_cast<std::size_t>(bounds[static_cast<std::size_t>(r) + 1]) * element - begin;
      if (bytes == 0) continue;
      detail::check_nccl(ncclBroadcast(base + begin, base + begin, bytes, ncclUint8, r, comm_, device.stream), function,
                         "ncclBroadcast");
    }
    detail::check_nccl(ncclGroupEnd(), function, "ncclGroupEnd");
  }

  // Overlap: sums started during the backward pass run on the group's own stream, each after an
  // event recorded on the compute stream, and finish_started() makes the compute stream wait for
  // the last of them.
  bool overlaps_backward() const noexcept override { return true; }

  void start_all_reduce(const cuda& device, const any_view& data) override {
    constexpr std::string_view function = "meap::dist::nccl_group::start_all_reduce";
    check_device_view(function, data, {}, false);
    const auto n = static_cast<std::size_t>(data.shape.product());
    if (n == 0) return;
    if (side_stream_ == nullptr) {
      MEAP_CUDA_CHECK(cudaStreamCreateWithFlags(&side_stream_, cudaStreamNonBlocking));
      MEAP_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
      MEAP_CUDA_CHECK(cudaEventCreateWithFlags(&reduced_, cudaEventDisableTiming));
    }
    MEAP_CUDA_CHECK(cudaEventRecord(ready_, device.stream));
    MEAP_CUDA_CHECK(cudaStreamWaitEvent(side_stream_, ready_, 0));
    detail::check_nccl(ncclAllReduce(data.data, data.data, n, detail::nccl_type(data.type, function), ncclSum, comm_,
                                     side_stream_),
                       function, "ncclAllReduce");
    started_ = true;
  }

  void finish_started(const cuda& device) override {
    if (!started_) return;
    MEAP_CUDA_CHECK(cudaEventRecord(reduced_, side_stream_));
    MEAP_CUDA_CHECK(cudaStreamWaitEvent(device.stream, reduced_, 0));
    started_ = false;
  }

  // Waits for the stream, polling it and NCCL's asynchronous error state, within the timeout.
  void synchronize(const cuda& device) override {
    constexpr std::string_view function = "meap::dist::nccl_group::synchronize";
    const auto start = std::chrono::steady_clock::now();
    for (long polls = 0;; ++polls) {
      const cudaError_t state = cudaStreamQuery(device.stream);
      if (state == cudaSuccess) return;
      if (state != cudaErrorNotReady) {
        failed_ = true;
        throw error(std::string(function) + ": the stream failed: " + cudaGetErrorString(state));
      }
      ncclResult_t async = ncclSuccess;
      (void)ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress) {
        failed_ = true;
        (void)ncclCommAbort(comm_);
        comm_ = nullptr;
        throw error(std::string(function) + ": NCCL reported " + ncclGetErrorString(async) + " on rank " +
                    std::to_string(rank()) + " (another rank died or its network failed)");
      }
      if (std::chrono::steady_clock::now() - start > timeout()) {
        failed_ = true;
        (void)ncclCommAbort(comm_);  // lets the kernels waiting for a peer return
        comm_ = nullptr;
        throw error(std::string(function) + ": rank " + std::to_string(rank()) + " of " + std::to_string(size()) +
                    " waited " + std::to_string(timeout().count() / 1000) +
                    " s for its GPU's collectives: another rank died or hangs (the job is ended)");
      }
      if (polls > 2000) std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }

  void all_reduce_host(std::span<std::int64_t> values) override { host_.all_reduce_host(values); }
  void broadcast_host(std::string& bytes, int root) override { host_.broadcast_host(bytes, root); }
  void barrier() override { host_.barrier(); }

 private:
  void check_device_view(std::string_view function, const any_view& data, std::span<const index_t> bounds,
                         bool with_bounds) const {
    check_argument(comm_ != nullptr, function, "this", "an aborted communicator", "a working NCCL communicator");
    meap::dist::detail::check_collective(function, data, size(), bounds, with_bounds);
    if (data.where.kind != device_kind::cuda)
      throw_argument_error(function, "data", "memory on " + to_string(data.where), "CUDA memory");
  }

  process_group<cpu>& host_;
  ncclComm_t comm_ = nullptr;
  bool failed_ = false;
  cudaStream_t side_stream_ = nullptr;  // the overlapped sums' stream, made on first use
  cudaEvent_t ready_ = nullptr, reduced_ = nullptr;
  bool started_ = false;
};

}  // namespace meap::dist
