// Rule evaluation: last match wins, quick decides at once, default pass, direction, ports, CIDR.
#include "components/pf/tests/test_packets.hpp"

namespace flotilla::pf {
namespace {

using namespace testing;

const std::uint32_t kClient = ip(10, 77, 0, 5);
const std::uint32_t kServer = ip(10, 77, 0, 2);
const std::uint32_t kOutsider = ip(192, 168, 1, 9);

TEST(RuleEvaluation, NoRulesOrNoMatchPasses) {
  const Decision empty = RuleSet{}.evaluate(udp(Direction::in, kClient, 1000, kServer, 53));
  EXPECT_EQ(empty.action, Action::pass);
  EXPECT_EQ(empty.rule, 0);

  const RuleSet rules = must_parse("block in proto tcp\n");
  const Decision no_match = rules.evaluate(udp(Direction::in, kClient, 1000, kServer, 53));
  EXPECT_EQ(no_match.action, Action::pass);
  EXPECT_EQ(no_match.rule, 0);
}

TEST(RuleEvaluation, LastMatchingRuleDecides) {
  const RuleSet rules = must_parse(
      "block all\n"
      "pass in proto udp\n"
      "block in proto udp to port 9999\n");
  const Decision to_9999 = rules.evaluate(udp(Direction::in, kClient, 1000, kServer, 9999));
  EXPECT_EQ(to_9999.action, Action::block);
  EXPECT_EQ(to_9999.rule, 3);
  const Decision to_53 = rules.evaluate(udp(Direction::in, kClient, 1000, kServer, 53));
  EXPECT_EQ(to_53.action, Action::pass);
  EXPECT_EQ(to_53.rule, 2);
  const Decision tcp_in = rules.evaluate(tcp(Direction::in, kClient, 1000, kServer, 80));
  EXPECT_EQ(tcp_in.action, Action::block);
  EXPECT_EQ(tcp_in.rule, 1);
}

TEST(RuleEvaluation, QuickDecidesAtOnce) {
  const RuleSet rules = must_parse(
      "pass all\n"
      "block in quick proto tcp from any port 1:1023 to 10.77.0.2 port 22\n"
      "pass in proto tcp\n");
  const Decision blocked = rules.evaluate(tcp(Direction::in, kClient, 1000, kServer, 22));
  EXPECT_EQ(blocked.action, Action::block);
  EXPECT_EQ(blocked.rule, 2);
  // Source port outside 1:1023: the quick rule does not match, the last one does.
  const Decision high_port = rules.evaluate(tcp(Direction::in, kClient, 40000, kServer, 22));
  EXPECT_EQ(high_port.action, Action::pass);
  EXPECT_EQ(high_port.rule, 3);
  // The first matching quick rule wins even if a later quick rule matches too.
  const RuleSet two_quick = must_parse("pass quick all\nblock quick all\n");
  EXPECT_EQ(two_quick.evaluate(icmp(Direction::in, kClient, kServer)).rule, 1);
}

TEST(RuleEvaluation, Direction) {
  const RuleSet rules = must_parse(
      "block out proto icmp to 10.77.0.1\n"
      "block in proto udp\n");
  const std::uint32_t gateway = ip(10, 77, 0, 1);
  EXPECT_EQ(rules.evaluate(icmp(Direction::out, kServer, gateway)).action, Action::block);
  EXPECT_EQ(rules.evaluate(icmp(Direction::in, kServer, gateway)).action, Action::pass);
  EXPECT_EQ(rules.evaluate(udp(Direction::in, kClient, 5, kServer, 6)).action, Action::block);
  EXPECT_EQ(rules.evaluate(udp(Direction::out, kClient, 5, kServer, 6)).action, Action::pass);
  // No direction: both.
  const RuleSet both = must_parse("block proto udp\n");
  EXPECT_EQ(both.evaluate(udp(Direction::in, kClient, 5, kServer, 6)).action, Action::block);
  EXPECT_EQ(both.evaluate(udp(Direction::out, kClient, 5, kServer, 6)).action, Action::block);
}

TEST(RuleEvaluation, PortRulesNeverMatchPacketsWithoutPorts) {
  const RuleSet rules = must_parse("block proto tcp to port 0:65535\nblock proto udp from port 53\n");
  PacketSummary fragment = tcp(Direction::in, kClient, 0, kServer, 0);
  fragment.has_ports = false;  // a non-first fragment
  EXPECT_EQ(rules.evaluate(fragment).action, Action::pass);
  fragment.has_ports = true;
  EXPECT_EQ(rules.evaluate(fragment).action, Action::block);
  // Source port ranges are inclusive at both ends.
  EXPECT_EQ(rules.evaluate(udp(Direction::in, kOutsider, 53, kServer, 9)).rule, 2);
  EXPECT_EQ(rules.evaluate(udp(Direction::in, kOutsider, 54, kServer, 9)).rule, 0);
  const RuleSet range = must_parse("block proto tcp to port 1000:2000\n");
  EXPECT_EQ(range.evaluate(tcp(Direction::in, kClient, 9, kServer, 999)).action, Action::pass);
  EXPECT_EQ(range.evaluate(tcp(Direction::in, kClient, 9, kServer, 1000)).action, Action::block);
  EXPECT_EQ(range.evaluate(tcp(Direction::in, kClient, 9, kServer, 2000)).action, Action::block);
  EXPECT_EQ(range.evaluate(tcp(Direction::in, kClient, 9, kServer, 2001)).action, Action::pass);
}

TEST(RuleEvaluation, CidrAndProtocolNumbers) {
  const RuleSet rules = must_parse(
      "block from 10.77.0.0/24\n"
      "block to 192.168.0.0/16\n"
      "block proto 47\n");
  EXPECT_EQ(rules.evaluate(icmp(Direction::in, ip(10, 77, 0, 255), kOutsider)).rule, 2);
  EXPECT_EQ(rules.evaluate(icmp(Direction::in, ip(10, 77, 0, 255), kServer)).rule, 1);
  EXPECT_EQ(rules.evaluate(icmp(Direction::in, ip(10, 77, 1, 0), kServer)).rule, 0);
  EXPECT_EQ(rules.evaluate(icmp(Direction::in, ip(10, 76, 255, 255), ip(192, 169, 0, 0))).rule, 0);
  PacketSummary gre{Direction::in, 47, kOutsider, kClient, 0, 0, false, 0};
  EXPECT_EQ(rules.evaluate(gre).rule, 3);
  // A /32 and a /0.
  const RuleSet exact = must_parse("block to 10.77.0.2\npass to 0.0.0.0/0 keep state\n");
  const Decision to_server = exact.evaluate(icmp(Direction::in, kClient, kServer));
  EXPECT_EQ(to_server.rule, 2);
  EXPECT_TRUE(to_server.keep_state);
}

TEST(RuleEvaluation, KeepStateOnlyReportedForTheDecidingPassRule) {
  const RuleSet rules = must_parse("pass proto udp keep state\nblock proto udp to port 9\n");
  const Decision blocked = rules.evaluate(udp(Direction::in, kClient, 1, kServer, 9));
  EXPECT_EQ(blocked.action, Action::block);
  EXPECT_FALSE(blocked.keep_state);
  const Decision passed = rules.evaluate(udp(Direction::in, kClient, 1, kServer, 10));
  EXPECT_TRUE(passed.keep_state);
  EXPECT_FALSE(passed.from_state);
}

}  // namespace
}  // namespace flotilla::pf
