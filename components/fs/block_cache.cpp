#include "components/fs/block_cache.hpp"

namespace flotilla::fs {

BlockAllocator::BlockAllocator(BlockRange range) : range_(range) {
  free_.reserve(range.count);
  free_flags_.assign(range.count, false);
  reset({});
}

void BlockAllocator::reset(std::span<const BlockId> used) {
  free_flags_.assign(range_.count, true);
  for (BlockId id : used) {
    if (owns(id)) {
      free_flags_[id - range_.first] = false;
    } else {
      ++refused_;
    }
  }
  free_.clear();
  for (std::uint32_t i = range_.count; i-- > 0;) {
    if (free_flags_[i]) free_.push_back(range_.first + i);
  }
}

Result<BlockId> BlockAllocator::allocate() {
  if (free_.empty()) return Error{Errc::exhausted, 0, "block cache partition full"};
  const BlockId id = free_.back();
  free_.pop_back();
  free_flags_[id - range_.first] = false;
  return id;
}

bool BlockAllocator::release(BlockId id) {
  if (!owns(id) || free_flags_[id - range_.first]) {
    ++refused_;
    return false;
  }
  free_flags_[id - range_.first] = true;
  free_.push_back(id);
  return true;
}

}  // namespace flotilla::fs
