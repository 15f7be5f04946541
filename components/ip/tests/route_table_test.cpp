// Route table: longest prefix match with metrics, validation, limits, and crash consistency in the
// state store (re-attach, torn writes, a replacement cut short).
#include "components/ip/route_table.hpp"

#include <gtest/gtest.h>

#include "components/ip/tests/test_region.hpp"

namespace flotilla::ip {
namespace {

using testing::TestRegion;

constexpr std::uint32_t ip(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d) {
  return (std::uint32_t{a} << 24) | (std::uint32_t{b} << 16) | (std::uint32_t{c} << 8) | d;
}

RouteTable attach_ok(TestRegion& region) {
  auto table = RouteTable::attach(region.bytes());
  EXPECT_TRUE(table.ok());
  return std::move(table).value();
}

TEST(RouteTable, LongestPrefixWinsThenLowestMetric) {
  TestRegion region(RouteTable::bytes_for(16));
  RouteTable table = attach_ok(region);
  ASSERT_TRUE(table.add({0, 0, ip(192, 168, 1, 1), 100}).ok());
  ASSERT_TRUE(table.add({0, 0, ip(192, 168, 1, 2), 50}).ok());
  ASSERT_TRUE(table.add({ip(10, 0, 0, 0), 8, ip(192, 168, 1, 8), 10}).ok());
  ASSERT_TRUE(table.add({ip(10, 1, 0, 0), 16, ip(192, 168, 1, 16), 10}).ok());
  ASSERT_TRUE(table.add({ip(10, 1, 2, 0), 24, 0, 10}).ok());
  ASSERT_TRUE(table.add({ip(10, 1, 2, 0), 24, ip(192, 168, 1, 24), 5}).ok());
  ASSERT_TRUE(table.add({ip(10, 1, 2, 3), 32, ip(192, 168, 1, 32), 999}).ok());
  EXPECT_EQ(table.size(), 7u);

  EXPECT_EQ(table.lookup(ip(8, 8, 8, 8))->gateway, ip(192, 168, 1, 2));  // default, metric 50
  EXPECT_EQ(table.lookup(ip(10, 9, 9, 9))->gateway, ip(192, 168, 1, 8));
  EXPECT_EQ(table.lookup(ip(10, 1, 9, 9))->gateway, ip(192, 168, 1, 16));
  EXPECT_EQ(table.lookup(ip(10, 1, 2, 4))->gateway, ip(192, 168, 1, 24));  // metric 5 beats 10
  EXPECT_EQ(table.lookup(ip(10, 1, 2, 3))->gateway, ip(192, 168, 1, 32));  // /32 despite metric

  ASSERT_TRUE(table.remove(ip(10, 1, 2, 0), 24, 5).ok());
  const auto on_link = table.lookup(ip(10, 1, 2, 4));
  ASSERT_TRUE(on_link);
  EXPECT_EQ(on_link->gateway, 0u);
  EXPECT_EQ(on_link->prefix_length, 24);

  ASSERT_TRUE(table.remove(0, 0).ok());  // both default routes
  EXPECT_FALSE(table.lookup(ip(8, 8, 8, 8)));
  EXPECT_EQ(table.size(), 4u);
  EXPECT_EQ(table.remove(0, 0).error().code, Errc::invalid_argument);
}

TEST(RouteTable, ForEachListsLongestPrefixFirst) {
  TestRegion region(RouteTable::bytes_for(8));
  RouteTable table = attach_ok(region);
  ASSERT_TRUE(table.add({0, 0, 1, 0}).ok());
  ASSERT_TRUE(table.add({ip(10, 1, 0, 0), 16, 2, 0}).ok());
  ASSERT_TRUE(table.add({ip(10, 0, 0, 0), 8, 3, 0}).ok());
  std::vector<std::uint8_t> lengths;
  table.for_each([&](const Route& route) { lengths.push_back(route.prefix_length); });
  EXPECT_EQ(lengths, (std::vector<std::uint8_t>{16, 8, 0}));
}

TEST(RouteTable, RefusesBadPrefixes) {
  TestRegion region(RouteTable::bytes_for(8));
  RouteTable table = attach_ok(region);
  EXPECT_EQ(table.add({ip(10, 0, 0, 0), 33, 0, 0}).error().code, Errc::invalid_argument);
  EXPECT_EQ(table.add({ip(10, 0, 0, 1), 24, 0, 0}).error().code, Errc::invalid_argument);
  EXPECT_EQ(table.add({ip(10, 0, 0, 0), 0, 0, 0}).error().code, Errc::invalid_argument);
  EXPECT_TRUE(table.add({ip(10, 0, 0, 1), 32, 0, 0}).ok());
  EXPECT_EQ(table.size(), 1u);
}

TEST(RouteTable, ReplacesIdenticalRouteAndFillsUp) {
  TestRegion region(RouteTable::bytes_for(4));
  RouteTable table = attach_ok(region);
  ASSERT_GE(table.capacity(), 4u);
  for (std::uint32_t i = 0; i < table.capacity(); ++i) {
    ASSERT_TRUE(table.add({ip(10, 0, static_cast<std::uint8_t>(i), 0), 24, 1, 0}).ok());
  }
  EXPECT_EQ(table.add({ip(11, 0, 0, 0), 8, 1, 0}).error().code, Errc::exhausted);
  // A replacement needs no new room.
  ASSERT_TRUE(table.add({ip(10, 0, 0, 0), 24, 7, 0}).ok());
  EXPECT_EQ(table.size(), table.capacity());
  EXPECT_EQ(table.lookup(ip(10, 0, 0, 1))->gateway, 7u);
}

TEST(RouteTable, ReattachKeepsRoutes) {
  TestRegion region(RouteTable::bytes_for(16));
  {
    RouteTable table = attach_ok(region);
    EXPECT_TRUE(table.was_formatted());
    ASSERT_TRUE(table.add({ip(10, 0, 0, 0), 8, ip(1, 1, 1, 1), 3}).ok());
    ASSERT_TRUE(table.add({0, 0, ip(2, 2, 2, 2), 0}).ok());
    ASSERT_TRUE(table.add({ip(10, 0, 0, 0), 8, ip(3, 3, 3, 3), 3}).ok());  // replaces
  }
  RouteTable again = attach_ok(region);
  EXPECT_FALSE(again.was_formatted());
  EXPECT_EQ(again.size(), 2u);
  EXPECT_EQ(again.lookup(ip(10, 2, 3, 4))->gateway, ip(3, 3, 3, 3));
  EXPECT_EQ(again.lookup(ip(11, 2, 3, 4))->gateway, ip(2, 2, 2, 2));
  // The writer goes on after the restart: replacements still win over older entries.
  ASSERT_TRUE(again.add({0, 0, ip(4, 4, 4, 4), 0}).ok());
  RouteTable third = attach_ok(region);
  EXPECT_EQ(third.lookup(ip(11, 2, 3, 4))->gateway, ip(4, 4, 4, 4));
}

TEST(RouteTable, TornWriteIsIgnoredOnAttach) {
  TestRegion region(RouteTable::bytes_for(16));
  {
    RouteTable table = attach_ok(region);
    ASSERT_TRUE(table.add({ip(10, 0, 0, 0), 8, ip(1, 1, 1, 1), 0}).ok());
  }
  // A writer killed mid-publish: state says `writing`, the words are half new.
  auto& torn = region.entry<RouteTable::Entry>(1);
  ASSERT_EQ(torn.kind(), EntryKind::free);
  torn.state.store((5u << 2) | static_cast<std::uint32_t>(EntryKind::writing));
  torn.words[0].store((std::uint64_t{ip(172, 16, 0, 0)} << 32) | ip(9, 9, 9, 9));
  torn.words[1].store(0xdeadbeef);  // never written completely

  RouteTable table = attach_ok(region);
  EXPECT_FALSE(table.was_formatted());
  EXPECT_EQ(table.size(), 1u);
  EXPECT_FALSE(table.lookup(ip(172, 16, 1, 1)));
  EXPECT_EQ(torn.kind(), EntryKind::free);  // repaired, reusable
  ASSERT_TRUE(table.add({ip(172, 16, 0, 0), 12, 0, 0}).ok());
  EXPECT_EQ(table.size(), 2u);
}

TEST(RouteTable, ReplacementCutShortKeepsTheNewerRoute) {
  TestRegion region(RouteTable::bytes_for(16));
  {
    RouteTable table = attach_ok(region);
    ASSERT_TRUE(table.add({ip(10, 0, 0, 0), 8, ip(1, 1, 1, 1), 0}).ok());
  }
  // Publish the replacement the way add() does, and "crash" before retiring the old entry.
  auto& old_entry = region.entry<RouteTable::Entry>(0);
  auto& new_entry = region.entry<RouteTable::Entry>(1);
  ASSERT_EQ(old_entry.kind(), EntryKind::live);
  new_entry.publish({(std::uint64_t{ip(10, 0, 0, 0)} << 32) | ip(5, 5, 5, 5), 8,
                     old_entry.word(2) + 1});

  RouteTable table = attach_ok(region);
  EXPECT_EQ(table.size(), 1u);
  EXPECT_EQ(table.lookup(ip(10, 1, 1, 1))->gateway, ip(5, 5, 5, 5));
  EXPECT_EQ(old_entry.kind(), EntryKind::free);
}

TEST(RouteTable, FormatsInvalidOrResizedRegions) {
  TestRegion region(RouteTable::bytes_for(16));
  {
    RouteTable table = attach_ok(region);
    ASSERT_TRUE(table.add({0, 0, 1, 0}).ok());
  }
  // Same memory seen through a smaller span: the capacity no longer agrees, so it is formatted.
  auto smaller = RouteTable::attach(region.bytes().first(RouteTable::bytes_for(4)));
  ASSERT_TRUE(smaller.ok());
  EXPECT_TRUE(smaller->was_formatted());
  EXPECT_EQ(smaller->size(), 0u);

  region.bytes()[0] = std::byte{0x55};  // bad magic
  RouteTable table = attach_ok(region);
  EXPECT_TRUE(table.was_formatted());
  EXPECT_EQ(table.size(), 0u);
}

TEST(RouteTable, RefusesMisalignedOrTinyRegions) {
  TestRegion region(RouteTable::bytes_for(16));
  EXPECT_EQ(RouteTable::attach(region.bytes().subspan(8)).error().code, Errc::invalid_argument);
  EXPECT_EQ(RouteTable::attach(region.bytes().first(64)).error().code, Errc::invalid_argument);
}

}  // namespace
}  // namespace flotilla::ip
