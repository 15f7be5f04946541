// The file fleet's shared buffer cache as every side maps it: file blocks of kBlockBytes in one
// shared region (a SharedRegion the supervisor owns), split into one partition per file server.
// A server allocates only from its own partition (components/fs/block_cache.hpp), so no two
// servers ever hand out the same block and no lock is shared. Clients get a file's block list
// from its home server (BLOCKS) and then read and write the blocks themselves. Header-only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "components/formats/fs_messages.hpp"
#include "dataplane/result.hpp"

namespace flotilla::fs {

using BlockId = std::uint32_t;
inline constexpr std::size_t kBlockBytes = 4096;
inline constexpr std::uint16_t kMaxServers = 256;
// The region the file servers and their clients share as the buffer cache.
inline constexpr const char* kFileCacheRegion = "fs-blocks";

struct BlockRange {
  BlockId first = 0;
  std::uint32_t count = 0;
};

class BlockCache {
 public:
  // Refuses a region smaller than one block per server, or more servers than kMaxServers.
  static Result<BlockCache> attach(std::span<std::byte> region, std::uint16_t servers) {
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

  BlockCache() = default;
  std::uint32_t blocks() const { return blocks_; }
  std::uint16_t servers() const { return servers_; }

  // Server `server`'s share: an equal slice, the last one taking the remainder.
  BlockRange partition(ServerIndex server) const {
    if (server >= servers_) return {};
    const std::uint32_t share = blocks_ / servers_;
    BlockRange range{static_cast<BlockId>(server * share), share};
    if (server + 1 == servers_) range.count = blocks_ - range.first;
    return range;
  }

  // The block's bytes; empty for an id outside the region (ids come from other processes).
  std::span<std::byte> block(BlockId id) const {
    if (id >= blocks_) return {};
    return {base_ + static_cast<std::size_t>(id) * kBlockBytes, kBlockBytes};
  }

 private:
  std::byte* base_ = nullptr;
  std::uint32_t blocks_ = 0;
  std::uint16_t servers_ = 0;
};

}  // namespace flotilla::fs
