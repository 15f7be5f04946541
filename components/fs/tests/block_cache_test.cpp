#include "components/fs/block_cache.hpp"

#include "dataplane/shared_region.hpp"

#include <gtest/gtest.h>

#include <set>
#include <vector>

namespace flotilla::fs {
namespace {

TEST(BlockCache, PartitionsCoverTheRegionWithoutOverlap) {
  std::vector<std::byte> region(103 * kBlockBytes);
  auto cache = BlockCache::attach(region, 3);
  ASSERT_TRUE(cache.ok());
  EXPECT_EQ(cache->blocks(), 103u);
  std::uint32_t total = 0;
  for (ServerIndex s = 0; s < 3; ++s) {
    const BlockRange range = cache->partition(s);
    EXPECT_EQ(range.first, total);
    total += range.count;
  }
  EXPECT_EQ(total, 103u);
  EXPECT_EQ(cache->block(102).size(), kBlockBytes);
  EXPECT_TRUE(cache->block(103).empty());
  EXPECT_TRUE(cache->block(~0u).empty());
}

TEST(BlockCache, LivesInASharedRegion) {
  auto region = SharedRegion::create("fs-block-cache-test", 16 * kBlockBytes);
  ASSERT_TRUE(region.ok());
  auto cache = BlockCache::attach(region->bytes(), 2);
  ASSERT_TRUE(cache.ok());
  EXPECT_EQ(cache->blocks(), 16u);
  cache->block(9)[0] = std::byte{42};
  EXPECT_EQ(region->data()[9 * kBlockBytes], std::byte{42});
}

TEST(BlockCache, RefusesUnusableRegions) {
  std::vector<std::byte> region(2 * kBlockBytes);
  EXPECT_FALSE(BlockCache::attach(region, 3).ok());
  EXPECT_FALSE(BlockCache::attach(region, 0).ok());
}

TEST(BlockAllocator, HandsOutLowestFirstAndRefusesDoubleRelease) {
  BlockAllocator allocator(BlockRange{10, 4});
  EXPECT_EQ(*allocator.allocate(), 10u);
  EXPECT_EQ(*allocator.allocate(), 11u);
  EXPECT_TRUE(allocator.release(10));
  EXPECT_FALSE(allocator.release(10));
  EXPECT_FALSE(allocator.release(3));  // not ours
  EXPECT_EQ(allocator.refused(), 2u);
  EXPECT_EQ(*allocator.allocate(), 10u);
  EXPECT_EQ(*allocator.allocate(), 12u);
  EXPECT_EQ(*allocator.allocate(), 13u);
  auto full = allocator.allocate();
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.error().code, Errc::exhausted);
}

TEST(BlockAllocator, ResetRebuildsFromUsedBlocks) {
  BlockAllocator allocator(BlockRange{0, 6});
  const std::vector<BlockId> used = {4, 1, 99};
  allocator.reset(used);
  EXPECT_EQ(allocator.free_count(), 4u);
  EXPECT_EQ(allocator.refused(), 1u);
  std::vector<BlockId> order;
  while (auto id = allocator.allocate()) order.push_back(*id);
  EXPECT_EQ(order, (std::vector<BlockId>{0, 2, 3, 5}));
}

}  // namespace
}  // namespace flotilla::fs
