// The buffer pool: ownership moves by compare-and-swap, a dead holder's buffers come back exactly
// once, and double frees, foreign handles and corrupted handles are refused with an error.
#include <signal.h>

#include <atomic>
#include <cstring>
#include <new>
#include <random>
#include <set>
#include <vector>

#include <gtest/gtest.h>

#include "dataplane/buffer_pool.hpp"
#include "dataplane/tests/test_support.hpp"

namespace flotilla {
namespace {

using testing::fork_child;
using testing::wait_child;

constexpr ComponentId kDriver = 7;
constexpr ComponentId kIp = 9;

BufferPool make_pool(std::uint32_t count = 1024) {
  return BufferPool::create(3, kDefaultBufferSize, count).value();
}

TEST(BufferPool, CreateRejectsBadShapes) {
  EXPECT_EQ(BufferPool::create(1, 3000, 16).error().code, Errc::invalid_argument);
  EXPECT_EQ(BufferPool::create(1, 8192, 16).error().code, Errc::invalid_argument);
  EXPECT_EQ(BufferPool::create(1, 2048, 0).error().code, Errc::invalid_argument);
}

TEST(BufferPool, BuffersArePageAlignedChunksOfTheRequestedSize) {
  BufferPool pool = make_pool(16);
  std::vector<BufferHandle> handles(16);
  ASSERT_EQ(pool.alloc_burst(kDriver, handles), 16u);
  std::set<std::uintptr_t> starts;
  for (auto handle : handles) {
    handle.length = 1;
    auto bytes = pool.bytes(kDriver, handle);
    ASSERT_TRUE(bytes);
    starts.insert(reinterpret_cast<std::uintptr_t>(bytes->data()));
  }
  ASSERT_EQ(starts.size(), 16u);
  EXPECT_EQ(*starts.begin() % 4096, 0u);
  EXPECT_EQ(*starts.rbegin() - *starts.begin(), 15u * kDefaultBufferSize);
}

TEST(BufferPool, AllocateUntilExhaustedThenFreeEverything) {
  BufferPool pool = make_pool(64);
  std::vector<BufferHandle> handles(100);
  EXPECT_EQ(pool.alloc_burst(kDriver, handles), 64u);
  EXPECT_EQ(pool.count_free(), 0u);
  EXPECT_EQ(pool.alloc_burst(kDriver, handles), 0u);
  EXPECT_EQ(pool.alloc_burst(kNoComponent, handles), 0u);
  for (std::size_t i = 0; i < 64; ++i) ASSERT_TRUE(pool.free(kDriver, handles[i]));
  EXPECT_EQ(pool.count_free(), 64u);
}

TEST(BufferPool, DoubleFreeIsRefused) {
  BufferPool pool = make_pool();
  BufferHandle handle;
  ASSERT_EQ(pool.alloc_burst(kDriver, std::span(&handle, 1)), 1u);
  ASSERT_TRUE(pool.free(kDriver, handle));
  auto again = pool.free(kDriver, handle);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, Errc::stale_handle);
  // Even after the buffer is handed out again, the old handle stays dead.
  std::vector<BufferHandle> all(1024);
  ASSERT_EQ(pool.alloc_burst(kDriver, all), 1024u);
  EXPECT_EQ(pool.free(kDriver, handle).error().code, Errc::stale_handle);
  EXPECT_EQ(pool.bytes(kDriver, handle).error().code, Errc::stale_handle);
}

TEST(BufferPool, ForeignAndCorruptHandlesAreRefusedAndCounted) {
  BufferPool pool = make_pool();
  CounterBlock counters;
  pool.set_counters(&counters);
  BufferHandle handle;
  ASSERT_EQ(pool.alloc_burst(kDriver, std::span(&handle, 1)), 1u);
  EXPECT_EQ(pool.free(kIp, handle).error().code, Errc::not_owner);
  EXPECT_EQ(pool.bytes(kIp, handle).error().code, Errc::not_owner);
  EXPECT_EQ(pool.hand_off(handle, kIp, kDriver).error().code, Errc::not_owner);

  BufferHandle other_pool = handle;
  other_pool.pool = 4;
  EXPECT_EQ(pool.free(kDriver, other_pool).error().code, Errc::bad_handle);
  BufferHandle past_end = handle;
  past_end.index = 1024;
  EXPECT_EQ(pool.free(kDriver, past_end).error().code, Errc::bad_handle);
  past_end.index = 0xffffffff;
  EXPECT_EQ(pool.bytes(kDriver, past_end).error().code, Errc::bad_handle);
  BufferHandle too_long = handle;
  too_long.offset = 2000;
  too_long.length = 100;
  EXPECT_EQ(pool.bytes(kDriver, too_long).error().code, Errc::bad_handle);
  EXPECT_EQ(pool.validate(too_long).error().code, Errc::bad_handle);
  BufferHandle wrong_generation = handle;
  wrong_generation.generation += 5;
  EXPECT_EQ(pool.free(kDriver, wrong_generation).error().code, Errc::stale_handle);
  EXPECT_EQ(counters.read(Counter::bad_handles), 9u);
  // None of that disturbed the real owner.
  EXPECT_EQ(pool.owner_of(handle.index), kDriver);
  EXPECT_TRUE(pool.free(kDriver, handle));
}

TEST(BufferPool, HandOffMovesOwnership) {
  BufferPool pool = make_pool();
  BufferHandle handle;
  ASSERT_EQ(pool.alloc_burst(kDriver, std::span(&handle, 1)), 1u);
  handle.length = 5;
  std::memcpy(pool.bytes(kDriver, handle)->data(), "frame", 5);
  ASSERT_TRUE(pool.hand_off(handle, kDriver, kIp));
  EXPECT_EQ(pool.owner_of(handle.index), kIp);
  EXPECT_EQ(pool.bytes(kDriver, handle).error().code, Errc::not_owner);
  auto bytes = pool.bytes(kIp, handle);
  ASSERT_TRUE(bytes);
  EXPECT_EQ(std::memcmp(bytes->data(), "frame", 5), 0);
  EXPECT_EQ(pool.hand_off(handle, kIp, kNoComponent).error().code, Errc::invalid_argument);
}

TEST(BufferPool, DataAreaCoversEveryBufferInIndexOrder) {
  BufferPool pool = make_pool(16);
  const auto area = pool.data_area();
  EXPECT_EQ(area.size(), 16u * kDefaultBufferSize);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(area.data()) % 4096, 0u);
  std::vector<BufferHandle> handles(16);
  ASSERT_EQ(pool.alloc_burst(kDriver, handles), 16u);
  for (auto handle : handles) {
    handle.offset = 100;
    handle.length = 1;
    auto bytes = pool.bytes(kDriver, handle);
    ASSERT_TRUE(bytes);
    EXPECT_EQ(bytes->data(), area.data() + std::size_t{handle.index} * kDefaultBufferSize + 100);
  }
}

TEST(BufferPool, OwnedHandleRebuildsTheCurrentHandleForItsOwnerOnly) {
  BufferPool pool = make_pool(16);
  CounterBlock counters;
  pool.set_counters(&counters);
  BufferHandle handle;
  ASSERT_EQ(pool.alloc_burst(kDriver, std::span(&handle, 1)), 1u);
  auto generation = pool.retire_handle(kDriver, handle);  // the generation moves on
  ASSERT_TRUE(generation);

  auto rebuilt = pool.owned_handle(kDriver, handle.index);
  ASSERT_TRUE(rebuilt);
  EXPECT_EQ(rebuilt->index, handle.index);
  EXPECT_EQ(rebuilt->generation, generation.value());
  EXPECT_EQ(rebuilt->pool, pool.id());
  EXPECT_EQ(rebuilt->offset, 0u);
  EXPECT_EQ(rebuilt->length, 0u);

  // Only the holder gets a handle; a free buffer, another component's or a bad index do not.
  EXPECT_EQ(pool.owned_handle(kIp, handle.index).error().code, Errc::not_owner);
  EXPECT_EQ(pool.owned_handle(kNoComponent, handle.index).error().code, Errc::invalid_argument);
  EXPECT_EQ(pool.owned_handle(kDriver, 16).error().code, Errc::bad_handle);
  EXPECT_EQ(pool.owned_handle(kDriver, (handle.index + 1) % 16).error().code, Errc::not_owner);
  EXPECT_EQ(counters.read(Counter::bad_handles), 3u);

  // The rebuilt handle is the real one: it frees the buffer, and then the index is nobody's.
  ASSERT_TRUE(pool.free(kDriver, rebuilt.value()));
  EXPECT_EQ(pool.owned_handle(kDriver, handle.index).error().code, Errc::not_owner);
  EXPECT_EQ(pool.count_free(), 16u);
}

TEST(BufferPool, AttachRejectsCorruptHeader) {
  BufferPool pool = make_pool(16);
  auto fd = pool.region().reopen_read_only();
  ASSERT_TRUE(fd);
  auto view = SharedRegion::attach(std::move(fd.value()), SharedRegion::Access::read_only);
  ASSERT_TRUE(view);
  ASSERT_TRUE(BufferPool::attach(std::move(view.value())));

  auto* header = reinterpret_cast<PoolHeader*>(pool.region().data());
  header->buffer_count = 1u << 20;  // claims more buffers than the region holds
  auto copy = SharedRegion::attach(UniqueFd(::dup(pool.region().fd())));
  ASSERT_TRUE(copy);
  EXPECT_EQ(BufferPool::attach(std::move(copy.value())).error().code, Errc::bad_layout);
  header->buffer_count = 16;
  header->magic = 1;
  copy = SharedRegion::attach(UniqueFd(::dup(pool.region().fd())));
  ASSERT_TRUE(copy);
  EXPECT_EQ(BufferPool::attach(std::move(copy.value())).error().code, Errc::bad_layout);
}

TEST(PoolCache, WorksInBurstsAndRefusesDoubleFree) {
  BufferPool pool = make_pool(512);
  CounterBlock counters;
  pool.set_counters(&counters);
  PoolCache cache(pool, kDriver);
  std::vector<BufferHandle> handles(40);
  ASSERT_EQ(cache.alloc_burst(handles), 40u);
  EXPECT_EQ(pool.count_owned(kDriver), PoolCache::kRefill);  // one refill burst
  EXPECT_EQ(cache.free_burst(handles), 40u);
  EXPECT_EQ(cache.free_burst(std::span(handles).subspan(0, 3)), 0u);
  EXPECT_EQ(counters.read(Counter::bad_handles), 3u);
  EXPECT_EQ(cache.free(handles[0]).error().code, Errc::stale_handle);
  EXPECT_EQ(counters.read(Counter::bad_handles), 4u);
  cache.drain();
  EXPECT_EQ(pool.count_free(), 512u);
}

TEST(PoolCache, SpillsToThePoolWhenFull) {
  BufferPool pool = make_pool(1024);
  PoolCache cache(pool, kDriver);
  std::vector<BufferHandle> handles(600);
  ASSERT_EQ(pool.alloc_burst(kDriver, handles), 600u);
  EXPECT_EQ(cache.free_burst(handles), 600u);
  EXPECT_LE(cache.cached(), PoolCache::kCapacity);
  EXPECT_EQ(pool.count_owned(kDriver), cache.cached());
}

// The acceptance test: allocate, hand off, SIGKILL the holder, reclaim, and every buffer comes back
// exactly once.
TEST(BufferPool, ReclaimAfterSigkillReturnsEveryBufferExactlyOnce) {
  constexpr std::uint32_t kCount = 1024;
  BufferPool pool = make_pool(kCount);
  auto shared = SharedRegion::create("pool-test-flags", 4096);
  ASSERT_TRUE(shared);
  auto* ready = new (shared->data()) std::atomic<std::uint32_t>{0};

  const pid_t holder = fork_child([&] {
    PoolCache cache(pool, kDriver);
    std::vector<BufferHandle> handles(300);
    if (cache.alloc_burst(handles) != 300) return 2;
    for (std::size_t i = 0; i < 100; ++i) {
      if (!pool.hand_off(handles[i], kDriver, kIp)) return 3;
    }
    if (cache.free_burst(std::span(handles).subspan(250)) != 50) return 4;
    ready->store(1);
    for (;;) ::pause();  // hold everything until killed
  });
  ASSERT_GT(holder, 0);
  while (ready->load() == 0) {
    int status = 0;
    ASSERT_EQ(::waitpid(holder, &status, WNOHANG), 0) << "holder exited early";
  }
  ASSERT_EQ(::kill(holder, SIGKILL), 0);
  ASSERT_EQ(wait_child(holder), 128 + SIGKILL);

  const std::size_t held_by_driver = pool.count_owned(kDriver);
  EXPECT_GE(held_by_driver, 200u);  // 150 in use + 50 freed to its cache + the cache's spare
  EXPECT_EQ(pool.count_owned(kIp), 100u);
  EXPECT_EQ(pool.reclaim(kDriver), held_by_driver);
  EXPECT_EQ(pool.reclaim(kDriver), 0u);  // exactly once
  EXPECT_EQ(pool.count_free(), kCount - 100);
  EXPECT_EQ(pool.reclaim(kIp), 100u);
  EXPECT_EQ(pool.count_free(), kCount);

  std::vector<BufferHandle> all(kCount + 1);
  EXPECT_EQ(pool.alloc_burst(kIp, all), kCount);  // all of them, each once
  std::set<std::uint32_t> distinct;
  for (std::uint32_t i = 0; i < kCount; ++i) distinct.insert(all[i].index);
  EXPECT_EQ(distinct.size(), kCount);
}

// Two processes allocating, handing off and freeing at random against one pool: the CAS protocol
// must neither lose nor duplicate a buffer.
TEST(BufferPool, ConcurrentProcessesNeverLoseOrShareABuffer) {
  constexpr std::uint32_t kCount = 256;
  BufferPool pool = make_pool(kCount);
  auto worker = [&](ComponentId me, std::uint64_t seed) {
    return fork_child([&pool, me, seed] {
      std::mt19937_64 random(seed);
      PoolCache cache(pool, me);
      std::vector<BufferHandle> held;
      for (int step = 0; step < 200'000; ++step) {
        if (held.size() < 64 && random() % 2 == 0) {
          BufferHandle handle;
          if (cache.alloc_burst(std::span(&handle, 1)) == 1) {
            handle.length = 8;
            auto bytes = pool.bytes(me, handle);
            if (!bytes) return 2;  // someone else owns what we were given
            std::memcpy(bytes->data(), &step, sizeof(step));
            held.push_back(handle);
          }
        } else if (!held.empty()) {
          const BufferHandle handle = held.back();
          held.pop_back();
          auto bytes = pool.bytes(me, handle);
          if (!bytes) return 3;
          int written = 0;
          std::memcpy(&written, bytes->data(), sizeof(written));
          if (written > step) return 4;
          if (!cache.free(handle)) return 5;
        }
      }
      for (const auto& handle : held) {
        if (!cache.free(handle)) return 6;
      }
      cache.drain();
      return 0;
    });
  };
  const pid_t first = worker(11, 1);
  const pid_t second = worker(12, 2);
  EXPECT_EQ(wait_child(first), 0);
  EXPECT_EQ(wait_child(second), 0);
  EXPECT_EQ(pool.count_free(), kCount);
}

}  // namespace
}  // namespace flotilla
