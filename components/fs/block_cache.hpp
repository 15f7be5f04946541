// A file server's free list over its partition of the shared buffer cache
// (components/formats/fs_block_cache.hpp).
//
// The free list lives in the server's own memory. It is derived state: a restarted server rebuilds
// it from the block lists its replayed tables hold (BlockAllocator::reset), lowest block first, so a
// replay hands out exactly the blocks the original run did.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "components/formats/fs_block_cache.hpp"
#include "dataplane/result.hpp"

namespace flotilla::fs {

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
