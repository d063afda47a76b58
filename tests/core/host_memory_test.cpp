// The host block cache behind tensor<T, cpu>: large blocks come back for reuse, small ones never
// enter it, the limit bounds it by evicting the oldest blocks (0 turns it off), release()
// empties it, and blocks stay aligned.
#include <meap/core/host_memory.hpp>
#include <meap/core/tensor.hpp>

#include <boost/test/unit_test.hpp>

#include <cstdint>

namespace host_memory {

// Every case starts from an empty cache with the default limit and leaves it that way.
struct fresh_cache {
  std::size_t saved_limit;
  fresh_cache() : saved_limit(meap::host_memory_cache_limit()) {
    meap::release_host_memory_cache();
    meap::set_host_memory_cache_limit(std::size_t{1} << 30);
  }
  ~fresh_cache() {
    meap::release_host_memory_cache();
    meap::set_host_memory_cache_limit(saved_limit);
  }
};

constexpr std::size_t large = std::size_t{3} << 20;  // 3 MiB: cached
constexpr std::size_t small = 4096;                   // never cached

bool aligned(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % meap::detail::host_block_cache::alignment == 0;
}

}  // namespace host_memory

BOOST_AUTO_TEST_SUITE(host_memory)

BOOST_FIXTURE_TEST_CASE(large_blocks_are_reused_small_ones_are_not_cached, fresh_cache) {
  auto& cache = meap::detail::host_block_cache::instance();
  void* first = cache.allocate(large);
  BOOST_TEST(aligned(first));
  const auto before = meap::host_memory_cache_stats();
  cache.deallocate(first, large);
  BOOST_TEST(meap::host_memory_cache_stats().cached_bytes == large);
  BOOST_TEST(meap::host_memory_cache_stats().cached_blocks == 1u);
  void* second = cache.allocate(large);  // the same size: the cached block
  BOOST_TEST(second == first);
  BOOST_TEST(meap::host_memory_cache_stats().hits == before.hits + 1);
  BOOST_TEST(meap::host_memory_cache_stats().cached_bytes == 0u);
  void* other_size = cache.allocate(large + 64);  // another size: a miss, not the cached block
  BOOST_TEST(meap::host_memory_cache_stats().misses == before.misses + 1);
  cache.deallocate(other_size, large + 64);
  cache.deallocate(second, large);
  BOOST_TEST(meap::host_memory_cache_stats().cached_blocks == 2u);

  void* tiny = cache.allocate(small);
  BOOST_TEST(aligned(tiny));
  cache.deallocate(tiny, small);
  BOOST_TEST(meap::host_memory_cache_stats().cached_bytes == 2 * large + 64);  // unchanged by the small block

  BOOST_TEST(meap::release_host_memory_cache() == 2 * large + 64);
  BOOST_TEST(meap::host_memory_cache_stats().cached_bytes == 0u);
  BOOST_TEST(meap::host_memory_cache_stats().cached_blocks == 0u);
}

BOOST_FIXTURE_TEST_CASE(the_limit_evicts_the_oldest_blocks_and_zero_turns_it_off, fresh_cache) {
  auto& cache = meap::detail::host_block_cache::instance();
  meap::set_host_memory_cache_limit(large);  // room for one block
  void* a = cache.allocate(large);
  void* b = cache.allocate(large);
  cache.deallocate(a, large);
  cache.deallocate(b, large);  // over the limit: a, the oldest, is evicted
  BOOST_TEST(meap::host_memory_cache_stats().cached_blocks == 1u);
  BOOST_TEST(meap::host_memory_cache_stats().cached_bytes == large);
  void* again = cache.allocate(large);
  BOOST_TEST(again == b);  // the newest block survived
  void* huge = cache.allocate(2 * large);
  cache.deallocate(huge, 2 * large);  // larger than the limit: never cached, nothing evicted for it
  BOOST_TEST(meap::host_memory_cache_stats().cached_bytes == 0u);
  cache.deallocate(again, large);
  BOOST_TEST(meap::host_memory_cache_stats().cached_bytes == large);
  meap::set_host_memory_cache_limit(0);  // below what is cached: evicted
  BOOST_TEST(meap::host_memory_cache_stats().cached_bytes == 0u);
  void* c = cache.allocate(large);
  cache.deallocate(c, large);
  BOOST_TEST(meap::host_memory_cache_stats().cached_bytes == 0u);
}

BOOST_FIXTURE_TEST_CASE(tensors_go_through_the_cache, fresh_cache) {
  const meap::dims shape{1024, 1024};  // 4 MiB of float
  const float* first = nullptr;
  {
    meap::tensor<float, meap::cpu> t(meap::cpu{}, shape);
    first = t.data();
    BOOST_TEST(aligned(first));
  }
  BOOST_TEST(meap::host_memory_cache_stats().cached_bytes == 4u << 20);
  meap::tensor<float, meap::cpu> again(meap::cpu{}, shape);  // a training step's next activation
  BOOST_TEST(again.data() == first);
  meap::fill(meap::cpu{}, again.view(), 2.0f);
  BOOST_TEST(again.data()[1024 * 1024 - 1] == 2.0f);
}

BOOST_AUTO_TEST_SUITE_END()
