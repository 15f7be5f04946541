#include "components/fs/block_cache.hpp"

namespace flotilla::fs {

Result<BlockCache> BlockCache::attach(std::span<std::byte> region, std::uint16_t servers) {
  if (servers == 0 || servers > kMaxServers) {
    return Error{Errc::invalid_argument, 0, "block cache: server count out of range"};
  }
  const std::size_t blocks = region.size() / kBlockBytes;
  if (blocks < servers || blocks > 0xffffffffu) {
    return Error{Errc::invalid_argument, 0, "block cache: region size does not fit the servers"};
  }
  BlockCache cache;
  cache.base_ = region.data();
  cache.blocks_ = static_cast<std::uint32_t>(blocks);
  cache.servers_ = servers;
  return cache;
}

BlockRange BlockCache::partition(ServerIndex server) const {
  if (server >= servers_) return {};
  const std::uint32_t share = blocks_ / servers_;
  BlockRange range{static_cast<BlockId>(server * share), share};
  if (server + 1 == servers_) range.count = blocks_ - range.first;
  return range;
}

std::span<std::byte> BlockCache::block(BlockId id) const {
  if (id >= blocks_) return {};
  return {base_ + static_cast<std::size_t>(id) * kBlockBytes, kBlockBytes};
}

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
