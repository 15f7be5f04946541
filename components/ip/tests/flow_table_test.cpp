// Flow table: exact vs listening vs wildcard lookups, ownership rules, capacity of a 1 MiB region,
// churn without degradation, and crash consistency in the state store.
#include "components/ip/flow_table.hpp"

#include <gtest/gtest.h>

#include <map>
#include <random>

#include "components/ip/tests/test_region.hpp"
#include "components/wire/ipv4.hpp"

namespace flotilla::ip {
namespace {

using testing::TestRegion;

constexpr std::uint8_t kTcp = wire::kProtocolTcp;
constexpr std::uint8_t kUdp = wire::kProtocolUdp;
constexpr std::uint32_t kLocal = 0x0a000001;   // 10.0.0.1
constexpr std::uint32_t kOther = 0x0a000002;   // 10.0.0.2
constexpr std::uint32_t kRemote = 0xc0a80005;  // 192.168.0.5

FlowTable attach_ok(TestRegion& region) {
  auto table = FlowTable::attach(region.bytes());
  EXPECT_TRUE(table.ok());
  return std::move(table).value();
}

FlowKey flow_number(std::uint32_t n) {
  return FlowKey{kTcp, kLocal, 80, 0xc0000000u + (n >> 10), static_cast<std::uint16_t>(n & 1023)};
}

TEST(FlowTable, ExactThenListeningThenWildcard) {
  TestRegion region(FlowTable::bytes_for(64));
  FlowTable table = attach_ok(region);
  ASSERT_TRUE(table.claim({kTcp, 0, 80, 0, 0}, 10).ok());            // any address
  ASSERT_TRUE(table.claim({kTcp, kLocal, 80, 0, 0}, 11).ok());       // bound to kLocal
  ASSERT_TRUE(table.claim({kTcp, kLocal, 80, kRemote, 4000}, 12).ok());  // one connection

  EXPECT_EQ(table.lookup(kTcp, kLocal, 80, kRemote, 4000), 12u);
  EXPECT_EQ(table.lookup(kTcp, kLocal, 80, kRemote, 4001), 11u);
  EXPECT_EQ(table.lookup(kTcp, kOther, 80, kRemote, 4000), 10u);
  EXPECT_FALSE(table.lookup(kTcp, kLocal, 81, kRemote, 4000));
  EXPECT_FALSE(table.lookup(kUdp, kLocal, 80, kRemote, 4000));  // protocol is part of the key

  ASSERT_TRUE(table.release({kTcp, kLocal, 80, 0, 0}, 11).ok());
  EXPECT_EQ(table.lookup(kTcp, kLocal, 80, kRemote, 4001), 10u);
  EXPECT_EQ(table.size(), 2u);
}

TEST(FlowTable, OwnershipRules) {
  TestRegion region(FlowTable::bytes_for(64));
  FlowTable table = attach_ok(region);
  const FlowKey key{kUdp, kLocal, 53, 0, 0};
  ASSERT_TRUE(table.claim(key, 5).ok());
  EXPECT_TRUE(table.claim(key, 5).ok());  // again, same owner
  EXPECT_EQ(table.claim(key, 6).error().code, Errc::invalid_argument);
  EXPECT_EQ(table.claim({kUdp, kLocal, 54, 0, 0}, kNoComponent).error().code,
            Errc::invalid_argument);
  EXPECT_EQ(table.release(key, 6).error().code, Errc::not_owner);
  EXPECT_EQ(table.release({kUdp, kLocal, 99, 0, 0}, 5).error().code, Errc::invalid_argument);
  EXPECT_EQ(table.size(), 1u);
  ASSERT_TRUE(table.release(key, 5).ok());
  EXPECT_EQ(table.size(), 0u);
  EXPECT_TRUE(table.claim(key, 6).ok());
}

TEST(FlowTable, ReleaseOwnerDropsOnlyThatOwner) {
  TestRegion region(FlowTable::bytes_for(256));
  FlowTable table = attach_ok(region);
  for (std::uint32_t n = 0; n < 100; ++n) ASSERT_TRUE(table.claim(flow_number(n), 1 + n % 3).ok());
  EXPECT_EQ(table.release_owner(2), 33u);
  EXPECT_EQ(table.release_owner(2), 0u);
  EXPECT_EQ(table.size(), 67u);
  for (std::uint32_t n = 0; n < 100; ++n) {
    const auto owner = table.owner_of(flow_number(n));
    if (n % 3 == 1) {
      EXPECT_FALSE(owner);
    } else {
      EXPECT_EQ(owner, 1 + n % 3);
    }
  }
}

TEST(FlowTable, UnconfirmedFlowsOfARestartingOwnerAreKeptUntilSweptAndTheMarkOutlivesReattach) {
  TestRegion region(FlowTable::bytes_for(128));
  {
    FlowTable table = attach_ok(region);
    for (std::uint32_t n = 0; n < 30; ++n) ASSERT_TRUE(table.claim(flow_number(n), 1 + n % 2).ok());
    EXPECT_EQ(table.mark_unconfirmed(2), 15u);
    EXPECT_TRUE(table.unconfirmed(flow_number(1)));
    EXPECT_FALSE(table.unconfirmed(flow_number(0)));  // owner 1 does not restart
    EXPECT_EQ(table.owner_of(flow_number(1)), 2u);    // still delivered to its owner
    // Claimed again by its owner: confirmed. Another owner still cannot take it.
    ASSERT_TRUE(table.claim(flow_number(1), 2).ok());
    EXPECT_FALSE(table.unconfirmed(flow_number(1)));
    EXPECT_FALSE(table.claim(flow_number(3), 1).ok());
  }
  // IP restarts while the owner recovers: the marks are in the region.
  FlowTable table = attach_ok(region);
  EXPECT_TRUE(table.unconfirmed(flow_number(3)));
  EXPECT_FALSE(table.unconfirmed(flow_number(1)));
  ASSERT_TRUE(table.claim(flow_number(5), 2).ok());
  EXPECT_EQ(table.release_unconfirmed(2), 13u);
  EXPECT_EQ(table.release_unconfirmed(2), 0u);
  EXPECT_EQ(table.release_unconfirmed(1), 0u);
  EXPECT_EQ(table.size(), 17u);
  EXPECT_EQ(table.owner_of(flow_number(1)), 2u);
  EXPECT_EQ(table.owner_of(flow_number(5)), 2u);
  EXPECT_FALSE(table.owner_of(flow_number(3)));
  EXPECT_EQ(table.owner_of(flow_number(0)), 1u);
}

TEST(FlowTable, OneMebibyteHoldsSixteenThousandFlowsThenRefuses) {
  TestRegion region(1 << 20);
  FlowTable table = attach_ok(region);
  ASSERT_GE(table.capacity(), 16384u);
  for (std::uint32_t n = 0; n < table.capacity(); ++n) {
    ASSERT_TRUE(table.claim(flow_number(n), 7).ok()) << n;
  }
  EXPECT_EQ(table.claim(flow_number(table.capacity()), 7).error().code, Errc::exhausted);
  for (std::uint32_t n = 0; n < table.capacity(); n += 97) {
    EXPECT_EQ(table.lookup(kTcp, kLocal, 80, flow_number(n).remote_address,
                           flow_number(n).remote_port),
              7u);
  }
  EXPECT_LT(table.longest_probe(), 64u);
}

TEST(FlowTable, MillionClaimReleaseCyclesNeitherDegradeNorFillUp) {
  TestRegion region(FlowTable::bytes_for(4096));
  FlowTable table = attach_ok(region);
  // Keep a window of 3000 live flows of ever-new keys: every claim is a fresh key, every release
  // frees an old one, 1M times over a table of 4096 entries.
  constexpr std::uint32_t kWindow = 3000;
  constexpr std::uint32_t kCycles = 1'000'000;
  std::size_t worst_probe = 0;
  for (std::uint32_t n = 0; n < kCycles; ++n) {
    ASSERT_TRUE(table.claim(flow_number(n), 1 + n % 5).ok()) << n;
    if (n >= kWindow) {
      ASSERT_TRUE(table.release(flow_number(n - kWindow), 1 + (n - kWindow) % 5).ok());
    }
    if (n % 100'000 == 0) worst_probe = std::max(worst_probe, table.longest_probe());
  }
  EXPECT_EQ(table.size(), kWindow);
  EXPECT_LT(worst_probe, 64u);
  EXPECT_EQ(table.owner_of(flow_number(kCycles - 1)), 1 + (kCycles - 1) % 5);
  EXPECT_FALSE(table.owner_of(flow_number(kCycles - kWindow - 1)));
  // Still fills to the brim.
  for (std::uint32_t n = kCycles; table.size() < table.capacity(); ++n) {
    ASSERT_TRUE(table.claim(flow_number(n), 9).ok());
  }
  EXPECT_EQ(table.size(), table.capacity());
}

TEST(FlowTable, RandomOperationsAgreeWithAModel) {
  TestRegion region(FlowTable::bytes_for(512));
  FlowTable table = attach_ok(region);
  std::map<std::uint32_t, ComponentId> model;
  std::mt19937 random(42);
  for (int step = 0; step < 200'000; ++step) {
    const std::uint32_t n = random() % 700;
    const ComponentId owner = 1 + random() % 4;
    if (random() % 2) {
      const Status claimed = table.claim(flow_number(n), owner);
      const auto it = model.find(n);
      if (it == model.end()) {
        ASSERT_EQ(claimed.ok(), model.size() < table.capacity());
        if (claimed) model[n] = owner;
      } else {
        ASSERT_EQ(claimed.ok(), it->second == owner);
      }
    } else {
      const Status released = table.release(flow_number(n), owner);
      const auto it = model.find(n);
      ASSERT_EQ(released.ok(), it != model.end() && it->second == owner);
      if (released) model.erase(it);
    }
  }
  ASSERT_EQ(table.size(), model.size());
  for (std::uint32_t n = 0; n < 700; ++n) {
    const auto it = model.find(n);
    EXPECT_EQ(table.owner_of(flow_number(n)),
              it == model.end() ? std::nullopt : std::optional<ComponentId>(it->second));
  }
}

TEST(FlowTable, ReattachKeepsFlowsAndDropsTornClaims) {
  TestRegion region(FlowTable::bytes_for(128));
  {
    FlowTable table = attach_ok(region);
    EXPECT_TRUE(table.was_formatted());
    for (std::uint32_t n = 0; n < 50; ++n) ASSERT_TRUE(table.claim(flow_number(n), 3).ok());
    ASSERT_TRUE(table.release(flow_number(10), 3).ok());
    ASSERT_TRUE(table.claim({kUdp, 0, 53, 0, 0}, 4).ok());
  }
  // A claim killed mid-publish, in an entry claim() would have used next.
  std::size_t torn_index = 0;
  while (region.entry<FlowTable::Entry>(torn_index).kind() != EntryKind::free) ++torn_index;
  auto& torn = region.entry<FlowTable::Entry>(torn_index);
  torn.state.store((3u << 2) | static_cast<std::uint32_t>(EntryKind::writing));
  torn.words[0].store(0x0a000001'00000000ull);  // local 10.0.0.1, the rest never written

  FlowTable table = attach_ok(region);
  EXPECT_FALSE(table.was_formatted());
  EXPECT_EQ(table.size(), 50u);
  EXPECT_EQ(torn.kind(), EntryKind::free);
  EXPECT_EQ(table.owner_of(flow_number(0)), 3u);
  EXPECT_FALSE(table.owner_of(flow_number(10)));
  EXPECT_EQ(table.lookup(kUdp, kOther, 53, kRemote, 1234), 4u);
  std::size_t listed = 0;
  table.for_each([&](const FlowKey&, ComponentId) { ++listed; });
  EXPECT_EQ(listed, 50u);
  // The table goes on working after the repair.
  ASSERT_TRUE(table.claim(flow_number(10), 8).ok());
  EXPECT_EQ(table.release_owner(3), 49u);
  EXPECT_EQ(table.size(), 2u);
}

TEST(FlowTable, DuplicateEntriesAreDroppedOnAttach) {
  TestRegion region(FlowTable::bytes_for(16));
  {
    FlowTable table = attach_ok(region);
    ASSERT_TRUE(table.claim(flow_number(1), 3).ok());
  }
  // Copy entry 0 into another entry: claim() never writes this, attach() must not trust it.
  auto& original = region.entry<FlowTable::Entry>(0);
  ASSERT_EQ(original.kind(), EntryKind::live);
  region.entry<FlowTable::Entry>(5).publish({original.word(0), original.word(1), 4});
  FlowTable table = attach_ok(region);
  EXPECT_EQ(table.size(), 1u);
  ASSERT_TRUE(table.release(flow_number(1), *table.owner_of(flow_number(1))).ok());
  EXPECT_FALSE(table.owner_of(flow_number(1)));
}

}  // namespace
}  // namespace flotilla::ip
