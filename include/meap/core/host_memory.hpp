// meap/core/host_memory.hpp: the host allocator behind tensor<T, cpu>, with a cache of large
// blocks.
//
// A training step allocates the same activation and gradient buffers every step (megabytes each)
// and frees them at its end. Straight from the C library, such blocks come from mmap or from a
// heap top that is trimmed again, so every step pays a page fault per 4 KiB page it touches:
// about 8% of a CPU step of bench_train_step (docs/performance.md). Like the stream-ordered pool
// the CUDA tensors use, freed blocks of at least `cached_block_min` bytes are kept per exact size
// and handed out again; a step then allocates nothing from the system after its first run.
//
// The cache holds at most host_memory_cache_limit() bytes (default 256 MiB, which holds a
// training step of the bench's 5M-parameter model; 0 disables it), evicting the oldest cached
// blocks when a new one would not fit. It is shared by all threads (a mutex; allocations happen
// between kernels, not inside them), and off under AddressSanitizer, which must see every block
// freed to catch a use after free.
// Blocks are 64-byte aligned: one cache line, and enough for any SIMD load Eigen emits.
#pragma once

#include <meap/core/config.hpp>

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <new>

#if defined(__SANITIZE_ADDRESS__)
#define MEAP_HOST_CACHE_DEFAULT_ON 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MEAP_HOST_CACHE_DEFAULT_ON 0
#endif
#endif
#if !defined(MEAP_HOST_CACHE_DEFAULT_ON)
#define MEAP_HOST_CACHE_DEFAULT_ON 1
#endif

namespace meap {

struct host_memory_stats {
  std::size_t cached_bytes = 0;  // held in the cache, free for reuse
  std::size_t cached_blocks = 0;
  std::size_t hits = 0;          // allocations served from the cache
  std::size_t misses = 0;        // cacheable allocations that went to the system
};

namespace detail {

class host_block_cache {
 public:
  static constexpr std::size_t alignment = 64;
  static constexpr std::size_t cached_block_min = std::size_t{1} << 20;  // 1 MiB

  // The process-wide cache. Never destroyed: a tensor freed during static destruction still finds
  // it; the blocks it holds at exit go back with the process.
  static host_block_cache& instance() {
    static host_block_cache* cache = new host_block_cache();
    return *cache;
  }

  void* allocate(std::size_t bytes) {
    if (bytes >= cached_block_min) {
      std::lock_guard lock(mutex_);
      const auto found = by_size_.find(bytes);
      if (found != by_size_.end()) {
        const std::uint64_t age = found->second;
        void* block = by_age_.at(age).block;
        by_age_.erase(age);
        by_size_.erase(found);
        cached_bytes_ -= bytes;
        ++stats_.hits;
        return block;
      }
      ++stats_.misses;
    }
    return ::operator new(bytes, std::align_val_t{alignment});
  }

  // Caches a large block, first evicting the oldest cached blocks until it fits under the limit
  // (recently freed sizes are the ones a training loop asks for again); a block larger than the
  // limit, and every small one, goes straight back to the system.
  void deallocate(void* block, std::size_t bytes) noexcept {
    if (bytes >= cached_block_min) {
      std::lock_guard lock(mutex_);
      if (bytes <= limit_) {
        while (cached_bytes_ + bytes > limit_) evict_oldest_locked();
        try {
          const std::uint64_t age = next_age_++;
          by_age_.emplace(age, cached_block{block, bytes});
          try {
            by_size_.emplace(bytes, age);
          } catch (...) {
            by_age_.erase(age);
            throw;
          }
          cached_bytes_ += bytes;
          return;
        } catch (...) {  // no memory for the bookkeeping: free the block instead
        }
      }
    }
    ::operator delete(block, std::align_val_t{alignment});
  }

  // Frees every cached block; returns the bytes released.
  std::size_t release() noexcept {
    std::lock_guard lock(mutex_);
    return release_locked();
  }

  std::size_t limit() const {
    std::lock_guard lock(mutex_);
    return limit_;
  }
  // A lower limit than what is cached evicts the oldest blocks until the rest fits.
  void set_limit(std::size_t bytes) {
    std::lock_guard lock(mutex_);
    limit_ = bytes;
    while (cached_bytes_ > limit_) evict_oldest_locked();
  }

  host_memory_stats stats() const {
    std::lock_guard lock(mutex_);
    host_memory_stats result = stats_;
    result.cached_bytes = cached_bytes_;
    result.cached_blocks = by_age_.size();
    return result;
  }

 private:
  struct cached_block {
    void* block;
    std::size_t bytes;
  };

  host_block_cache() = default;

  void evict_oldest_locked() noexcept {
    const auto oldest = by_age_.begin();
    const auto [first, last] = by_size_.equal_range(oldest->second.bytes);
    for (auto it = first; it != last; ++it)
      if (it->second == oldest->first) {
        by_size_.erase(it);
        break;
      }
    cached_bytes_ -= oldest->second.bytes;
    ::operator delete(oldest->second.block, std::align_val_t{alignment});
    by_age_.erase(oldest);
  }

  std::size_t release_locked() noexcept {
    const std::size_t released = cached_bytes_;
    for (const auto& [age, entry] : by_age_) ::operator delete(entry.block, std::align_val_t{alignment});
    by_age_.clear();
    by_size_.clear();
    cached_bytes_ = 0;
    return released;
  }

  mutable std::mutex mutex_;
  std::map<std::uint64_t, cached_block> by_age_;     // insertion order -> block (oldest first)
  std::multimap<std::size_t, std::uint64_t> by_size_;  // exact size -> insertion order
  std::uint64_t next_age_ = 0;
  std::size_t cached_bytes_ = 0;
  std::size_t limit_ = MEAP_HOST_CACHE_DEFAULT_ON ? std::size_t{256} << 20 : 0;
  host_memory_stats stats_;
};

}  // namespace detail

// The most bytes the host cache keeps for reuse (0: no caching).
inline std::size_t host_memory_cache_limit() { return detail::host_block_cache::instance().limit(); }
inline void set_host_memory_cache_limit(std::size_t bytes) { detail::host_block_cache::instance().set_limit(bytes); }
// Returns the cached (free) blocks to the system; tensors alive are untouched. Returns the bytes.
inline std::size_t release_host_memory_cache() noexcept { return detail::host_block_cache::instance().release(); }
inline host_memory_stats host_memory_cache_stats() { return detail::host_block_cache::instance().stats(); }

}  // namespace meap
