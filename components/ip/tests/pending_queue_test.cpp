// Pending queue: FIFO per next hop, the total and per-address bounds, and the drop paths.
#include "components/ip/pending_queue.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace flotilla::ip {
namespace {

BufferHandle handle(std::uint32_t index) { return BufferHandle{index, 1, 0, 0, 64, 0}; }

std::vector<std::uint32_t> take_indices(PendingQueue& queue, std::uint32_t hop) {
  std::vector<std::uint32_t> indices;
  queue.take(hop, [&](const BufferHandle& h) { indices.push_back(h.index); });
  return indices;
}

TEST(PendingQueue, TakeHandsBackOneHopInFifoOrder) {
  PendingQueue queue(16, 8);
  for (std::uint32_t i = 0; i < 6; ++i) ASSERT_TRUE(queue.push(i % 2 ? 7 : 9, handle(i), i));
  EXPECT_EQ(queue.size(), 6u);
  EXPECT_EQ(take_indices(queue, 9), (std::vector<std::uint32_t>{0, 2, 4}));
  EXPECT_EQ(queue.size(), 3u);
  EXPECT_TRUE(take_indices(queue, 9).empty());
  EXPECT_EQ(take_indices(queue, 7), (std::vector<std::uint32_t>{1, 3, 5}));
  EXPECT_EQ(queue.size(), 0u);
}

TEST(PendingQueue, BoundsPerAddressAndInTotal) {
  PendingQueue queue(10, 4);
  for (std::uint32_t i = 0; i < 4; ++i) ASSERT_TRUE(queue.push(1, handle(i), 0));
  EXPECT_FALSE(queue.push(1, handle(99), 0));  // per-address bound
  EXPECT_EQ(queue.waiting_for(1), 4u);
  for (std::uint32_t i = 0; i < 6; ++i) ASSERT_TRUE(queue.push(2 + i / 3, handle(10 + i), 0));
  EXPECT_EQ(queue.size(), 10u);
  EXPECT_FALSE(queue.push(50, handle(100), 0));  // total bound, even for a new hop
  // Room comes back when a hop resolves.
  EXPECT_EQ(take_indices(queue, 1).size(), 4u);
  EXPECT_TRUE(queue.push(50, handle(100), 0));
  EXPECT_EQ(queue.waiting_for(50), 1u);
}

TEST(PendingQueue, DropOlderThanKeepsYoungerPackets) {
  PendingQueue queue;
  ASSERT_TRUE(queue.push(1, handle(0), 100));
  ASSERT_TRUE(queue.push(2, handle(1), 150));
  ASSERT_TRUE(queue.push(1, handle(2), 200));
  ASSERT_TRUE(queue.push(3, handle(3), 300));
  std::vector<std::uint32_t> dropped;
  EXPECT_EQ(queue.drop_older_than(200, [&](const BufferHandle& h) { dropped.push_back(h.index); }),
            2u);
  std::sort(dropped.begin(), dropped.end());
  EXPECT_EQ(dropped, (std::vector<std::uint32_t>{0, 1}));
  EXPECT_EQ(queue.size(), 2u);
  EXPECT_EQ(queue.waiting_for(2), 0u);
  EXPECT_EQ(take_indices(queue, 1), (std::vector<std::uint32_t>{2}));
}

TEST(PendingQueue, DropAddressEmptiesOneHop) {
  PendingQueue queue(8, 8);
  ASSERT_TRUE(queue.push(1, handle(0), 0));
  ASSERT_TRUE(queue.push(2, handle(1), 0));
  ASSERT_TRUE(queue.push(1, handle(2), 0));
  std::vector<std::uint32_t> dropped;
  EXPECT_EQ(queue.drop_address(1, [&](const BufferHandle& h) { dropped.push_back(h.index); }), 2u);
  EXPECT_EQ(dropped, (std::vector<std::uint32_t>{0, 2}));
  EXPECT_EQ(queue.size(), 1u);
  EXPECT_EQ(queue.drop_address(1, [](const BufferHandle&) {}), 0u);
}

TEST(PendingQueue, LongChurnKeepsEveryHandleAccountedFor) {
  PendingQueue queue(32, 4);
  std::uint64_t pushed = 0;
  std::uint64_t returned = 0;
  for (std::uint32_t i = 0; i < 100'000; ++i) {
    if (queue.push(i % 13, handle(i), i)) ++pushed;
    if (i % 7 == 0) returned += queue.take(i % 13, [](const BufferHandle&) {});
    if (i % 50 == 0) returned += queue.drop_older_than(i - 20, [](const BufferHandle&) {});
  }
  EXPECT_EQ(pushed, returned + queue.size());
  EXPECT_LE(queue.size(), 32u);
}

}  // namespace
}  // namespace flotilla::ip
