// Filter::decide: kept connections before rules, 'keep state' keeps, a full table still passes,
// counters, and connections kept across a restart of the filter.
#include "components/pf/filter.hpp"

#include "components/pf/tests/test_packets.hpp"

namespace flotilla::pf {
namespace {

using namespace testing;

const std::uint32_t kLocal = ip(10, 77, 0, 2);
const std::uint32_t kPeer = ip(10, 77, 0, 5);
const std::uint32_t kOutsider = ip(192, 168, 1, 9);

// Only iperf from the /24 comes in, and its replies go out through the state table.
constexpr const char* kRules =
    "block all\n"
    "pass in proto tcp from 10.77.0.0/24 to port 5201 keep state\n";

Filter make_filter(TestRegion& region, std::string_view rules, NamedCounterTable& counters) {
  auto table = StateTable::attach(region.span());
  if (!table) {
    ADD_FAILURE() << table.error().message();
    std::abort();
  }
  return Filter(must_parse(rules), *table, counters);
}

TEST(Filter, KeepStateLetsRepliesThroughABlockAll) {
  TestRegion region(StateTable::bytes_for(64));
  NamedCounterTable counters;
  Filter filter = make_filter(region, kRules, counters);

  const PacketSummary syn = tcp(Direction::in, kPeer, 50000, kLocal, 5201, kTcpSyn);
  const PacketSummary syn_ack = tcp(Direction::out, kLocal, 5201, kPeer, 50000, kTcpSyn | kTcpAck);
  // Before the connection exists, the reply is blocked by rule 1.
  const Decision early = filter.decide(syn_ack, 0);
  EXPECT_EQ(early.action, Action::block);
  EXPECT_EQ(early.rule, 1);

  const Decision first = filter.decide(syn, 1);
  EXPECT_EQ(first.action, Action::pass);
  EXPECT_EQ(first.rule, 2);
  EXPECT_TRUE(first.keep_state);
  EXPECT_FALSE(first.from_state);

  const Decision reply = filter.decide(syn_ack, 2);
  EXPECT_EQ(reply.action, Action::pass);
  EXPECT_EQ(reply.rule, 0);
  EXPECT_TRUE(reply.from_state);

  const Decision next = filter.decide(tcp(Direction::in, kPeer, 50000, kLocal, 5201), 3);
  EXPECT_TRUE(next.from_state);

  // Someone else talking to the same port still needs the rules; from outside the /24: blocked.
  EXPECT_EQ(filter.decide(tcp(Direction::in, kOutsider, 50000, kLocal, 5201, kTcpSyn), 4).action,
            Action::block);

  EXPECT_EQ(filter.counters.passed.read(), 3u);
  EXPECT_EQ(filter.counters.blocked.read(), 2u);
  EXPECT_EQ(filter.counters.state_hits.read(), 2u);
  EXPECT_EQ(filter.counters.states_inserted.read(), 1u);
  EXPECT_EQ(filter.counters.state_table_full.read(), 0u);
  EXPECT_EQ(filter.states().size(), 1u);
}

TEST(Filter, StatesComeBeforeQuickBlockRules) {
  TestRegion region(StateTable::bytes_for(64));
  NamedCounterTable counters;
  Filter filter = make_filter(region, "pass out proto udp keep state\nblock in quick all\n", counters);
  const PacketSummary query = udp(Direction::out, kLocal, 40000, kPeer, 53);
  EXPECT_EQ(filter.decide(reply_to(query), 0).action, Action::block);
  EXPECT_EQ(filter.decide(query, 1).action, Action::pass);
  EXPECT_EQ(filter.decide(reply_to(query), 2).action, Action::pass);
}

TEST(Filter, FullTableStillPassesAndCounts) {
  TestRegion region(StateTable::bytes_for(2));
  NamedCounterTable counters;
  Filter filter = make_filter(region, "pass proto udp keep state\n", counters);
  for (std::uint16_t port = 1; port <= 5; ++port) {
    const Decision decision = filter.decide(udp(Direction::out, kLocal, port, kPeer, 53), port);
    EXPECT_EQ(decision.action, Action::pass);
    EXPECT_TRUE(decision.keep_state);
  }
  EXPECT_EQ(filter.counters.states_inserted.read(), 2u);
  EXPECT_EQ(filter.counters.state_table_full.read(), 3u);
  EXPECT_EQ(filter.counters.passed.read(), 5u);
}

TEST(Filter, ExpireCountsAndForgets) {
  TestRegion region(StateTable::bytes_for(64));
  NamedCounterTable counters;
  Filter filter = make_filter(region, kRules, counters);
  const PacketSummary syn = tcp(Direction::in, kPeer, 50000, kLocal, 5201, kTcpSyn);
  ASSERT_EQ(filter.decide(syn, 0).action, Action::pass);
  PacketSummary rst = reply_to(syn);
  rst.tcp_flags = kTcpRst;
  EXPECT_TRUE(filter.decide(rst, 10).from_state);
  EXPECT_EQ(filter.expire(10 + kTcpClosingTimeoutMs), 0u);
  EXPECT_EQ(filter.expire(10 + kTcpClosingTimeoutMs + 1), 1u);
  EXPECT_EQ(filter.counters.states_expired.read(), 1u);
  EXPECT_EQ(filter.decide(reply_to(syn), 20 + kTcpClosingTimeoutMs).action, Action::block);
}

TEST(Filter, ARestartedFilterKeepsTheConnections) {
  TestRegion region(StateTable::bytes_for(64));
  const PacketSummary syn = tcp(Direction::in, kPeer, 50000, kLocal, 5201, kTcpSyn);
  NamedCounterTable counters;
  {
    Filter before = make_filter(region, kRules, counters);
    ASSERT_EQ(before.decide(syn, 0).action, Action::pass);
  }
  Filter after = make_filter(region, kRules, counters);
  EXPECT_TRUE(after.states().reused());
  const Decision reply = after.decide(reply_to(syn), 5);
  EXPECT_EQ(reply.action, Action::pass);
  EXPECT_TRUE(reply.from_state);
}

}  // namespace
}  // namespace flotilla::pf
