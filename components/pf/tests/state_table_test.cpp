// The connection table: both directions, timeouts, a full table, re-attaching the same bytes as a
// restarted pf would, and entries torn by a crash.
#include "components/pf/state_table.hpp"

#include "components/pf/tests/test_packets.hpp"

namespace flotilla::pf {
namespace {

using namespace testing;

const std::uint32_t kLocal = ip(10, 77, 0, 2);
const std::uint32_t kRemote = ip(10, 77, 0, 9);

StateTable attach_ok(TestRegion& region) {
  auto table = StateTable::attach(region.span());
  if (!table) {
    ADD_FAILURE() << table.error().message();
    std::abort();
  }
  return *table;
}

// The slots of a region, as a restarted process would see them.
std::span<StateEntry> slots_of(TestRegion& region) {
  auto* header = reinterpret_cast<StateTableHeader*>(region.span().data());
  return {reinterpret_cast<StateEntry*>(region.span().data() + sizeof(StateTableHeader)),
          header->capacity};
}

TEST(StateTable, AttachFormatsAndSizesFromTheRegion) {
  TestRegion region(StateTable::bytes_for(16) + 100);  // the slack is ignored
  StateTable table = attach_ok(region);
  EXPECT_FALSE(table.reused());
  EXPECT_EQ(table.capacity(), 16u);
  EXPECT_EQ(table.size(), 0u);

  TestRegion odd(StateTable::bytes_for(24));  // rounds down to a power of two
  EXPECT_EQ(attach_ok(odd).capacity(), 16u);

  TestRegion tiny(StateTable::bytes_for(1));
  auto too_small = StateTable::attach(tiny.span());
  ASSERT_FALSE(too_small);
  EXPECT_EQ(too_small.error().code, Errc::invalid_argument);

  TestRegion misaligned_backing(StateTable::bytes_for(8) + 64);
  auto misaligned = StateTable::attach(misaligned_backing.span().subspan(8));
  ASSERT_FALSE(misaligned);
  EXPECT_EQ(misaligned.error().code, Errc::invalid_argument);
}

TEST(StateTable, MatchesBothDirectionsOnly) {
  TestRegion region(StateTable::bytes_for(64));
  StateTable table = attach_ok(region);
  const PacketSummary request = udp(Direction::out, kLocal, 40000, kRemote, 53);
  EXPECT_FALSE(table.matches(request, 0));
  ASSERT_TRUE(table.insert(request, 0));
  EXPECT_EQ(table.size(), 1u);

  EXPECT_TRUE(table.matches(request, 10));
  EXPECT_TRUE(table.matches(reply_to(request), 10));

  // The same addresses and ports in a different direction are not this connection.
  PacketSummary wrong_direction = request;
  wrong_direction.direction = Direction::in;
  EXPECT_FALSE(table.matches(wrong_direction, 10));
  PacketSummary reply_wrong_direction = reply_to(request);
  reply_wrong_direction.direction = Direction::out;
  EXPECT_FALSE(table.matches(reply_wrong_direction, 10));
  // Other ports, addresses or protocol: no.
  EXPECT_FALSE(table.matches(udp(Direction::out, kLocal, 40001, kRemote, 53), 10));
  EXPECT_FALSE(table.matches(udp(Direction::out, kLocal, 40000, kRemote + 1, 53), 10));
  EXPECT_FALSE(table.matches(tcp(Direction::out, kLocal, 40000, kRemote, 53), 10));

  // ICMP has no ports.
  const PacketSummary ping = icmp(Direction::in, kRemote, kLocal);
  ASSERT_TRUE(table.insert(ping, 0));
  EXPECT_TRUE(table.matches(reply_to(ping), 5));
  EXPECT_EQ(table.size(), 2u);
}

TEST(StateTable, InsertingAKeptConnectionAgainDoesNotDuplicate) {
  TestRegion region(StateTable::bytes_for(8));
  StateTable table = attach_ok(region);
  const PacketSummary request = udp(Direction::out, kLocal, 1, kRemote, 2);
  ASSERT_TRUE(table.insert(request, 0));
  ASSERT_TRUE(table.insert(request, 1));
  ASSERT_TRUE(table.insert(reply_to(request), 2));
  EXPECT_EQ(table.size(), 1u);
}

TEST(StateTable, TimeoutsPerProtocolAndMatchesRefresh) {
  TestRegion region(StateTable::bytes_for(64));
  StateTable table = attach_ok(region);
  const PacketSummary dns = udp(Direction::out, kLocal, 40000, kRemote, 53);
  const PacketSummary ping = icmp(Direction::out, kLocal, kRemote);
  const PacketSummary web = tcp(Direction::out, kLocal, 40000, kRemote, 80, kTcpSyn);
  ASSERT_TRUE(table.insert(dns, 0));
  ASSERT_TRUE(table.insert(ping, 0));
  ASSERT_TRUE(table.insert(web, 0));

  EXPECT_EQ(table.expire(kIcmpTimeoutMs), 0u);  // exactly the timeout is still alive
  EXPECT_TRUE(table.matches(reply_to(dns), 50'000));  // refreshes the UDP entry
  EXPECT_EQ(table.expire(kIcmpTimeoutMs + 1), 1u);    // the ping
  EXPECT_FALSE(table.matches(ping, kIcmpTimeoutMs + 2));
  EXPECT_EQ(table.size(), 2u);

  // Without the refresh UDP would be gone at 60 s; it lasts until 50 s + 60 s.
  EXPECT_EQ(table.expire(100'000), 0u);
  EXPECT_TRUE(table.matches(dns, 100'000));
  EXPECT_FALSE(table.matches(dns, 100'000 + kUdpTimeoutMs + 1));  // too old: no match
  EXPECT_EQ(table.expire(100'000 + kUdpTimeoutMs + 1), 1u);

  // TCP lives for a day while open...
  EXPECT_TRUE(table.matches(reply_to(web), kTcpOpenTimeoutMs - 1));
  // ...and 30 s after a FIN or RST from either side.
  PacketSummary fin = reply_to(web);
  fin.tcp_flags = kTcpFin | kTcpAck;
  const std::uint64_t closed_at = kTcpOpenTimeoutMs;
  EXPECT_TRUE(table.matches(fin, closed_at));
  EXPECT_TRUE(table.matches(web, closed_at + kTcpClosingTimeoutMs));
  EXPECT_EQ(table.expire(closed_at + 2 * kTcpClosingTimeoutMs), 0u);  // the last match refreshed
  EXPECT_EQ(table.expire(closed_at + 2 * kTcpClosingTimeoutMs + 1), 1u);
  EXPECT_EQ(table.size(), 0u);
}

TEST(StateTable, FullTableSaysExhaustedAndExpiryMakesRoom) {
  TestRegion region(StateTable::bytes_for(8));
  StateTable table = attach_ok(region);
  for (std::uint16_t port = 1; port <= 8; ++port) {
    ASSERT_TRUE(table.insert(udp(Direction::out, kLocal, port, kRemote, 53), port));
  }
  EXPECT_EQ(table.size(), 8u);
  const PacketSummary one_more = udp(Direction::out, kLocal, 9, kRemote, 53);
  const Status full = table.insert(one_more, 10);
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code, Errc::exhausted);
  for (std::uint16_t port = 1; port <= 8; ++port) {
    EXPECT_TRUE(table.matches(udp(Direction::out, kLocal, port, kRemote, 53), 10)) << port;
  }
  EXPECT_EQ(table.expire(10 + kUdpTimeoutMs + 1), 8u);
  EXPECT_EQ(table.size(), 0u);
  ASSERT_TRUE(table.insert(one_more, 20));
  EXPECT_TRUE(table.matches(one_more, 21));
}

TEST(StateTable, ChurnKeepsLookupsRight) {
  // Many inserts and expiries through a small table exercise tombstones and their clean-up.
  TestRegion region(StateTable::bytes_for(32));
  StateTable table = attach_ok(region);
  std::uint64_t now = 0;
  for (std::uint16_t round = 0; round < 200; ++round) {
    for (std::uint16_t i = 0; i < 20; ++i) {
      const PacketSummary packet = udp(Direction::out, kLocal, static_cast<std::uint16_t>(round * 20 + i), kRemote, 53);
      ASSERT_TRUE(table.insert(packet, now)) << round << " " << i;
    }
    for (std::uint16_t i = 0; i < 20; ++i) {
      const PacketSummary packet = udp(Direction::out, kLocal, static_cast<std::uint16_t>(round * 20 + i), kRemote, 53);
      ASSERT_TRUE(table.matches(reply_to(packet), now)) << round << " " << i;
    }
    now += kUdpTimeoutMs + 1;
    ASSERT_EQ(table.expire(now), 20u);
    ASSERT_EQ(table.size(), 0u);
  }
}

TEST(StateTable, ReattachingTheSameBytesKeepsTheConnections) {
  TestRegion region(StateTable::bytes_for(64));
  const PacketSummary web = tcp(Direction::in, kRemote, 50000, kLocal, 5201, kTcpSyn);
  const PacketSummary dns = udp(Direction::out, kLocal, 40000, kRemote, 53);
  {
    StateTable first = attach_ok(region);
    ASSERT_TRUE(first.insert(web, 100));
    ASSERT_TRUE(first.insert(dns, 100));
  }  // the pf process goes away; the region stays
  StateTable second = attach_ok(region);
  EXPECT_TRUE(second.reused());
  EXPECT_EQ(second.size(), 2u);
  EXPECT_TRUE(second.matches(reply_to(web), 200));
  EXPECT_TRUE(second.matches(reply_to(dns), 200));
  EXPECT_EQ(second.expire(100 + kUdpTimeoutMs + 1), 0u);  // refreshed at 200
  EXPECT_EQ(second.expire(200 + kUdpTimeoutMs + 1), 1u);

  // A header that does not fit (wrong version) is formatted over, and nothing old matches.
  reinterpret_cast<StateTableHeader*>(region.span().data())->version = 99;
  StateTable third = attach_ok(region);
  EXPECT_FALSE(third.reused());
  EXPECT_EQ(third.size(), 0u);
  EXPECT_FALSE(third.matches(web, 300));
}

TEST(StateTable, RegionOfAnotherSizeIsFormatted) {
  TestRegion region(StateTable::bytes_for(64));
  {
    StateTable table = attach_ok(region);
    ASSERT_TRUE(table.insert(icmp(Direction::in, kRemote, kLocal), 0));
  }
  // The same bytes offered as a smaller region: the header's capacity no longer fits.
  auto smaller = StateTable::attach(region.span().first(StateTable::bytes_for(32)));
  ASSERT_TRUE(smaller);
  EXPECT_FALSE(smaller->reused());
  EXPECT_EQ(smaller->capacity(), 32u);
  EXPECT_EQ(smaller->size(), 0u);
}

TEST(StateTable, TornWriteIsNeverMatchedAfterRestart) {
  TestRegion region(StateTable::bytes_for(16));
  const PacketSummary torn = udp(Direction::out, kLocal, 40000, kRemote, 53);
  const PacketSummary whole = udp(Direction::out, kLocal, 40001, kRemote, 53);
  {
    StateTable table = attach_ok(region);
    ASSERT_TRUE(table.insert(torn, 0));
    ASSERT_TRUE(table.insert(whole, 0));
  }
  // Simulate a SIGKILL between writing the fields of `torn` and publishing its state word: the
  // fields are all there, the state word still says empty.
  std::size_t unpublished = 0;
  for (StateEntry& slot : slots_of(region)) {
    if (slot.state.load() != static_cast<std::uint32_t>(SlotState::empty) &&
        slot.source_port == torn.source_port) {
      slot.state.store(static_cast<std::uint32_t>(SlotState::empty));
      ++unpublished;
    }
  }
  ASSERT_EQ(unpublished, 1u);

  StateTable restarted = attach_ok(region);
  EXPECT_TRUE(restarted.reused());
  EXPECT_EQ(restarted.size(), 1u);
  EXPECT_FALSE(restarted.matches(torn, 1));
  EXPECT_FALSE(restarted.matches(reply_to(torn), 1));
  EXPECT_TRUE(restarted.matches(whole, 1));
  // The slot is free again and takes a new connection.
  ASSERT_TRUE(restarted.insert(torn, 2));
  EXPECT_TRUE(restarted.matches(reply_to(torn), 3));
}

TEST(StateTable, GarbledPublishedEntryIsDroppedOnAttach) {
  TestRegion region(StateTable::bytes_for(16));
  const PacketSummary dns = udp(Direction::out, kLocal, 40000, kRemote, 53);
  {
    StateTable table = attach_ok(region);
    ASSERT_TRUE(table.insert(dns, 0));
  }
  for (StateEntry& slot : slots_of(region)) {
    if (slot.state.load() == static_cast<std::uint32_t>(SlotState::live)) slot.destination_port = 54;
  }
  StateTable restarted = attach_ok(region);
  EXPECT_EQ(restarted.size(), 0u);
  EXPECT_FALSE(restarted.matches(udp(Direction::out, kLocal, 40000, kRemote, 54), 1));
  EXPECT_FALSE(restarted.matches(dns, 1));
}

}  // namespace
}  // namespace flotilla::pf
