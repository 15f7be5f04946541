// The state-store entry protocol itself: torn entries are never read as live, a reader running
// beside the writer only ever sees whole entries, and a torn format is redone.
#include "components/ip/state_table.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "components/ip/tests/test_region.hpp"

namespace flotilla::ip {
namespace {

using Entry = PublishedEntry<3>;

TEST(StateTable, ReadLiveRefusesFreeAndTornEntries) {
  Entry entry;
  EXPECT_FALSE(entry.read_live());
  entry.publish({1, 2, 3});
  EXPECT_EQ(entry.read_live(), (Entry::Values{1, 2, 3}));
  entry.state.store((9u << 2) | static_cast<std::uint32_t>(EntryKind::writing));
  EXPECT_FALSE(entry.read_live());
  entry.retire();
  EXPECT_FALSE(entry.read_live());
}

TEST(StateTable, ConcurrentReaderSeesOnlyWholeEntries) {
  Entry entry;
  entry.publish({0, ~std::uint64_t{0}, 0});
  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> whole_reads{0};
  std::uint64_t torn_reads = 0;
  std::thread reader([&] {
    while (!done.load(std::memory_order_relaxed)) {
      if (const auto values = entry.read_live()) {
        const auto& v = *values;
        if (v[1] != ~v[0] || v[2] != v[0] * 3) ++torn_reads;
        whole_reads.fetch_add(1, std::memory_order_relaxed);
      }
    }
  });
  for (std::uint64_t n = 1; n <= 2'000'000; ++n) {
    entry.publish({n, ~n, n * 3});
    if (n % 1000 == 0) entry.retire();
    if (n % 20'000 == 1) {
      // Hold still until the reader got a read in, so it is surely running beside the writer.
      const std::uint64_t seen = whole_reads.load(std::memory_order_relaxed);
      while (whole_reads.load(std::memory_order_relaxed) == seen) std::this_thread::yield();
    }
  }
  done = true;
  reader.join();
  EXPECT_EQ(torn_reads, 0u);
  EXPECT_GE(whole_reads.load(), 100u);
}

TEST(StateTable, FormatInterruptedBeforeTheMagicIsRedone) {
  testing::TestRegion region(state_table_bytes<Entry>(8));
  auto first = attach_state_table<Entry>(region.bytes(), 0x1234, 1, 100);
  ASSERT_TRUE(first.ok());
  EXPECT_TRUE(first->formatted);
  first->entries[3].publish({7, 7, 7});
  EXPECT_FALSE(attach_state_table<Entry>(region.bytes(), 0x1234, 1, 100)->formatted);
  EXPECT_TRUE(attach_state_table<Entry>(region.bytes(), 0x1234, 2, 100)->formatted);  // version
  // A format killed before its last store leaves no magic: the next attach formats again.
  first->header->magic.store(0);
  auto again = attach_state_table<Entry>(region.bytes(), 0x1234, 2, 100);
  EXPECT_TRUE(again->formatted);
  EXPECT_EQ(again->entries[3].kind(), EntryKind::free);
  EXPECT_EQ(again->capacity, 8u);
}

}  // namespace
}  // namespace flotilla::ip
