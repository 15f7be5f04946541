// Fixed-size packet buffers in a shared region, owned by the supervisor rather than by any one
// component, so a crash never takes the buffers with it.
//
// Each buffer has one 64-bit state word: (generation << 32) | owner. Every change of ownership is
// one compare-and-swap on that word, so a process killed at any instant leaves each buffer with
// exactly one owner, and reclaim(owner) can hand back everything a dead component held without
// double-counting. The generation moves on whenever a buffer is freed, so a handle kept past its
// free (a double free, or a message replayed after a crash) is refused as stale.
//
// Layout: header line, state words, then the buffers on a page boundary (AF_XDP needs the UMEM
// chunks aligned and at most 4 KiB).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "dataplane/counters.hpp"
#include "dataplane/message.hpp"
#include "dataplane/result.hpp"
#include "dataplane/shared_region.hpp"

namespace flotilla {

using PoolId = std::uint16_t;

// What messages carry instead of packet bytes.
struct BufferHandle {
  std::uint32_t index = 0;
  std::uint32_t generation = 0;
  PoolId pool = 0;
  std::uint16_t offset = 0;  // where the data starts inside the buffer
  std::uint16_t length = 0;  // bytes of data
  std::uint16_t reserved = 0;
};
static_assert(sizeof(BufferHandle) == 16);

struct alignas(kCacheLine) PoolHeader {
  static constexpr std::uint64_t kMagic = 0x6c6f6f50'6f6c6646ull;  // "FloPool"
  static constexpr std::uint32_t kVersion = 1;

  std::uint64_t magic;
  std::uint32_t version;
  PoolId pool_id;
  std::uint16_t reserved;
  std::uint32_t buffer_size;
  std::uint32_t buffer_count;
  std::uint64_t states_offset;
  std::uint64_t data_offset;
};

inline constexpr std::uint32_t kDefaultBufferSize = 2048;
inline constexpr std::uint32_t kMaxBufferSize = 4096;  // AF_XDP chunk limit

// Buffers a component parks to keep them across its own crash: they belong to parked_owner(id),
// which reclaim(id) leaves alone, and the component's next incarnation takes them back (IP parks
// the packets waiting for a filter verdict, so a restarted IP can ask again instead of losing
// them). Component ids stay below this base.
inline constexpr ComponentId kParkedOwnerBase = 1u << 16;
constexpr ComponentId parked_owner(ComponentId id) { return kParkedOwnerBase + id; }

class BufferPool {
 public:
  // Bytes of shared memory a pool of this shape needs.
  static std::size_t bytes_for(std::uint32_t buffer_size, std::uint32_t buffer_count);

  // Creates a region and lays out an empty pool in it (all buffers free).
  static Result<BufferPool> create(PoolId id, std::uint32_t buffer_size,
                                   std::uint32_t buffer_count);
  // Wraps a region received from the supervisor, after checking its header.
  static Result<BufferPool> attach(SharedRegion region);

  // Where this process counts the handles it refuses (its component's block; may be null).
  void set_counters(CounterBlock* counters) { counters_ = counters; }

  PoolId id() const { return id_; }
  std::uint32_t buffer_size() const { return buffer_size_; }
  std::uint32_t buffer_count() const { return buffer_count_; }
  const SharedRegion& region() const { return region_; }
  SharedRegion& region() { return region_; }
  // Every buffer's bytes, back to back, page aligned: buffer i starts at i * buffer_size(). A
  // device that reads and writes the pool directly (the AF_XDP UMEM) registers this span.
  std::span<std::byte> data_area() const {
    return {data_, std::size_t{buffer_size_} * buffer_count_};
  }

  // Claims up to out.size() free buffers for `owner`. Returns how many it found.
  std::size_t alloc_burst(ComponentId owner, std::span<BufferHandle> out);
  // Gives a buffer back to the pool. Refuses handles `owner` does not hold.
  Status free(ComponentId owner, const BufferHandle& handle);
  // Passes a buffer from one component to another (the receiver takes it when a message arrives).
  Status hand_off(const BufferHandle& handle, ComponentId from, ComponentId to);
  // Bumps the generation while `owner` keeps the buffer, so older copies of the handle go stale.
  // Returns the handle's new generation.
  Result<std::uint32_t> retire_handle(ComponentId owner, const BufferHandle& handle);

  // The data bytes a handle names, after checking it names a buffer `owner` holds.
  Result<std::span<std::byte>> bytes(ComponentId owner, const BufferHandle& handle) const;
  // A fresh handle (offset and length 0) for buffer `index` at its current generation, if `owner`
  // holds it. For a device that hands back bare buffer indices (AF_XDP rings carry addresses): the
  // owner check keeps a bogus index from resurrecting someone else's buffer.
  Result<BufferHandle> owned_handle(ComponentId owner, std::uint32_t index) const;
  // Range and generation checks without an owner check.
  Status validate(const BufferHandle& handle) const;

  // Frees every buffer `owner` holds (a dead component's). Returns how many came back.
  std::size_t reclaim(ComponentId owner);

  std::size_t count_owned(ComponentId owner) const;
  std::size_t count_free() const { return count_owned(kNoComponent); }
  ComponentId owner_of(std::uint32_t index) const;

 private:
  BufferPool(SharedRegion region, const PoolHeader& header);
  Status check_range(const BufferHandle& handle) const;
  Status check_generation(const BufferHandle& handle, std::uint64_t state) const;
  Error refuse(Errc code) const;
  Status transition(const BufferHandle& handle, ComponentId from, ComponentId to,
                    std::uint32_t generation_step);

  SharedRegion region_;
  std::atomic<std::uint64_t>* states_ = nullptr;
  std::byte* data_ = nullptr;
  PoolId id_ = 0;
  std::uint32_t buffer_size_ = 0;
  std::uint32_t buffer_count_ = 0;
  std::uint32_t cursor_ = 0;  // where this process's next free-buffer scan starts
  CounterBlock* counters_ = nullptr;
};

// A component's private cache in front of a pool, so that allocation and free work in bursts and
// the shared state words are touched as little as possible. Cached buffers stay owned by the
// component (reclaim finds them after a crash). Refused handles are counted by the pool.
class PoolCache {
 public:
  static constexpr std::size_t kCapacity = 256;
  static constexpr std::size_t kRefill = 64;

  PoolCache(BufferPool& pool, ComponentId owner) : pool_(&pool), owner_(owner) {}
  PoolCache(const PoolCache&) = delete;
  PoolCache& operator=(const PoolCache&) = delete;

  std::size_t alloc_burst(std::span<BufferHandle> out);
  // Frees handles into the cache. Each one is checked; a handle that fails is left out (and
  // counted by the pool), so the return value, how many were freed, can fall short.
  std::size_t free_burst(std::span<const BufferHandle> handles);
  Status free(const BufferHandle& handle);
  // Returns every cached buffer to the pool.
  void drain();

  std::size_t cached() const { return size_; }
  ComponentId owner() const { return owner_; }

 private:
  void refill();
  void spill(std::size_t count);

  BufferPool* pool_;
  ComponentId owner_;
  std::array<BufferHandle, kCapacity> cache_{};
  std::size_t size_ = 0;
};

}  // namespace flotilla
