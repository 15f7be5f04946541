// The file fleet's shared buffer cache: file blocks in one shared region (a SharedRegion the
// supervisor owns, mapped by every server and client), split into one partition per server. A
// server allocates only from its own partition, so no two servers ever hand out the same block and
// no lock is shared. Clients get a file's block list from its home server (BLOCKS) and then read
// and write the blocks themselves.
//
// The free list lives in the server's own memory. It is derived state: a restarted server rebuilds
// it from the block lists its replayed tables hold (BlockAllocator::reset), lowest block first, so a
// replay hands out exactly the blocks the original run did.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "components/fs/fs_messages.hpp"
#include "dataplane/result.hpp"

namespace flotilla::fs {

using BlockId = std::uint32_t;
inline constexpr std::size_t kBlockBytes = 4096;

struct BlockRange {
  BlockId first = 0;
  std::uint32_t count = 0;
};

class BlockCache {
 public:
  // Refuses a region smaller than one block per server, or more servers than kMaxServers.
  static Result<BlockCache> attach(std::span<std::byte> region, std::uint16_t servers);

  BlockCache() = default;
  std::uint32_t blocks() const { return blocks_; }
  std::uint16_t servers() const { return servers_; }
  // Server `server`'s share: an equal slice, the last one taking the remainder.
  BlockRange partition(ServerIndex server) const;
  // The block's bytes; empty for an id outside the region (ids come from other processes).
  std::span<std::byte> block(BlockId id) const;

 private:
  std::byte* base_ = nullptr;
  std::uint32_t blocks_ = 0;
  std::uint16_t servers_ = 0;
};

inline constexpr std::uint16_t kMaxServers = 256;

// One partition's free list. Sized at construction; allocate and release never allocate memory.
class BlockAllocator {
 public:
  BlockAllocator() = default;
  explicit BlockAllocator(BlockRange range);

  // Everything in the range but `used` becomes free, handed out lowest first. Ids outside the
  // range are ignored (they are counted as refused).
  void reset(std::span<const BlockId> used);

  // Errc::exhausted when the partition is full.
  Result<BlockId> allocate();
  // False for an id outside the range or already free: a double release is refused, not obeyed.
  bool release(BlockId id);
  bool owns(BlockId id) const { return id >= range_.first && id - range_.first < range_.count; }
  bool is_free(BlockId id) const { return owns(id) && free_flags_[id - range_.first]; }
  std::uint32_t free_count() const { return static_cast<std::uint32_t>(free_.size()); }
  BlockRange range() const { return range_; }
  std::uint64_t refused() const { return refused_; }

 private:
  BlockRange range_;
  std::vector<BlockId> free_;  // a stack: the back is handed out next
  std::vector<bool> free_flags_;
  std::uint64_t refused_ = 0;
};

}  // namespace flotilla::fs
