// The XDP offload choice: what each rule becomes in the XDP map, the cases where a block rule must
// stay in user space, and the property that matters: whenever an offloaded rule drops an incoming
// packet, the full filter would have blocked it too.
#include "components/pf/xdp_offload.hpp"

#include <arpa/inet.h>

#include <random>

#include "components/pf/filter.hpp"
#include "components/pf/tests/test_packets.hpp"
#include "components/wire/address.hpp"

namespace flotilla::pf {
namespace {

using namespace testing;

// What the XDP program does with one map entry, written from the layout's contract: network order
// addresses under masks, protocol 0 = any, port ranges only for TCP/UDP packets whose ports it can
// see (a non-full range never matches a packet without ports).
bool xdp_drops(const flotilla_xdp_block_rule& rule, const PacketSummary& packet) {
  if (rule.in_use == 0 || packet.direction != Direction::in) return false;
  if (rule.protocol != 0 && rule.protocol != packet.protocol) return false;
  if ((htonl(packet.source) & rule.src_mask) != rule.src_addr) return false;
  if ((htonl(packet.destination) & rule.dst_mask) != rule.dst_addr) return false;
  const bool full_ports = rule.src_port_min == 0 && rule.src_port_max == 65535 &&
                          rule.dst_port_min == 0 && rule.dst_port_max == 65535;
  if (full_ports) return true;
  if (packet.protocol != kProtocolTcp && packet.protocol != kProtocolUdp) return true;
  if (!packet.has_ports) return false;
  return packet.source_port >= rule.src_port_min && packet.source_port <= rule.src_port_max &&
         packet.destination_port >= rule.dst_port_min &&
         packet.destination_port <= rule.dst_port_max;
}

std::size_t offloaded_count(std::string_view text) {
  return offloadable_block_rules(must_parse(text)).size();
}

TEST(XdpOffload, RuleBecomesTheMapLayout) {
  const auto chosen = offloadable_block_rules(
      must_parse("block in quick proto tcp from 10.77.0.0/24 port 1:1023 to 10.77.0.2 port 22\n"));
  ASSERT_EQ(chosen.size(), 1u);
  const flotilla_xdp_block_rule& rule = chosen[0];
  EXPECT_EQ(rule.in_use, 1u);
  EXPECT_EQ(rule.protocol, kProtocolTcp);
  EXPECT_EQ(rule.src_addr, htonl(ip(10, 77, 0, 0)));
  EXPECT_EQ(rule.src_mask, htonl(0xffffff00u));
  EXPECT_EQ(rule.dst_addr, htonl(ip(10, 77, 0, 2)));
  EXPECT_EQ(rule.dst_mask, 0xffffffffu);
  EXPECT_EQ(rule.src_port_min, 1);
  EXPECT_EQ(rule.src_port_max, 1023);
  EXPECT_EQ(rule.dst_port_min, 22);
  EXPECT_EQ(rule.dst_port_max, 22);

  const auto all = offloadable_block_rules(must_parse("block in all\n"));
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].protocol, 0);
  EXPECT_EQ(all[0].src_mask, 0u);
  EXPECT_EQ(all[0].dst_mask, 0u);
  EXPECT_EQ(all[0].dst_port_min, 0);
  EXPECT_EQ(all[0].dst_port_max, 65535);
}

TEST(XdpOffload, OnlyStatelessIncomingBlockRules) {
  EXPECT_EQ(offloaded_count("block in proto udp to port 9999\n"), 1u);
  EXPECT_EQ(offloaded_count("block proto udp to port 9999\n"), 1u);  // both directions
  EXPECT_EQ(offloaded_count("block out proto udp to port 9999\n"), 0u);
  EXPECT_EQ(offloaded_count("pass in proto udp\n"), 0u);
  EXPECT_EQ(offloaded_count("block in proto 0\n"), 0u);  // XDP reads protocol 0 as "any"
}

TEST(XdpOffload, LaterOverlappingPassKeepsTheBlockInUserSpace) {
  EXPECT_EQ(offloaded_count("block in proto udp to port 9999\n"
                            "pass in proto udp from 10.77.0.0/24\n"),
            0u);
  EXPECT_EQ(offloaded_count("block in proto udp to port 9999\n"
                            "pass all\n"),
            0u);
  EXPECT_EQ(offloaded_count("block in proto udp to port 9999\n"
                            "pass in proto udp to port 9000:9998\n"),
            1u);  // disjoint ports
  EXPECT_EQ(offloaded_count("block in proto udp to port 9999\n"
                            "pass in proto tcp\n"),
            1u);  // other protocol
  EXPECT_EQ(offloaded_count("block in proto udp to port 9999\n"
                            "pass out proto udp\n"),
            1u);  // other direction
  EXPECT_EQ(offloaded_count("block in from 10.77.0.0/24\n"
                            "pass in from 10.78.0.0/16\n"),
            1u);  // disjoint networks
  EXPECT_EQ(offloaded_count("block in from 10.77.0.0/24\n"
                            "pass in from 10.0.0.0/8\n"),
            0u);  // nested networks
  // A quick block decides before any later rule is looked at.
  EXPECT_EQ(offloaded_count("block in quick proto udp to port 9999\n"
                            "pass all\n"),
            1u);
}

TEST(XdpOffload, EarlierPassQuickKeepsTheBlockInUserSpace) {
  EXPECT_EQ(offloaded_count("pass in quick proto udp from 10.77.0.5\n"
                            "block in quick proto udp to port 9999\n"),
            0u);
  EXPECT_EQ(offloaded_count("pass in quick proto udp from 10.77.0.5\n"
                            "block in proto udp to port 9999\n"),
            0u);
  // An earlier pass without quick is overridden by the later block.
  EXPECT_EQ(offloaded_count("pass in proto udp from 10.77.0.5\n"
                            "block in proto udp to port 9999\n"),
            1u);
  // An earlier quick pass for other traffic does not matter.
  EXPECT_EQ(offloaded_count("pass in quick proto tcp\n"
                            "block in proto udp to port 9999\n"),
            1u);
}

TEST(XdpOffload, KeepStateRulesAnywhereKeepOverlappingBlocksInUserSpace) {
  // Replies to outgoing DNS come in from port 53; the state table must see them.
  EXPECT_EQ(offloaded_count("block in proto udp from any port 53\n"
                            "pass out proto udp to port 53 keep state\n"),
            0u);
  EXPECT_EQ(offloaded_count("pass out proto udp to port 53 keep state\n"
                            "block in proto udp from any port 53\n"),
            0u);
  // Without keep state the outgoing rule creates nothing that comes back.
  EXPECT_EQ(offloaded_count("block in proto udp from any port 53\n"
                            "pass out proto udp to port 53\n"),
            1u);
  // Replies of other connections do not overlap.
  EXPECT_EQ(offloaded_count("block in proto udp from any port 53\n"
                            "pass out proto udp to port 123 keep state\n"),
            1u);
  // Incoming connections kept by an earlier rule: their packets may match the block rule.
  EXPECT_EQ(offloaded_count("pass in proto tcp to port 5201 keep state\n"
                            "block in proto tcp from 10.66.0.0/16\n"),
            0u);
}

TEST(XdpOffload, AtMostTheMapSize) {
  std::string text;
  for (int port = 1; port <= 40; ++port) text += "block in proto udp to port " + std::to_string(port) + "\n";
  EXPECT_EQ(offloaded_count(text), static_cast<std::size_t>(FLOTILLA_XDP_MAX_RULES));
}

// ----- The property test ----------------------------------------------------------------------

const char* const kAddresses[] = {"10.77.0.0/24", "10.77.0.2", "10.77.0.5", "10.0.0.0/8",
                                  "192.168.1.0/24", "10.77.0.128/25"};
const char* const kPorts[] = {"22", "80", "1:1023", "5000:6000", "5201", "53"};
const std::uint32_t kPacketAddresses[] = {ip(10, 77, 0, 2),  ip(10, 77, 0, 5), ip(10, 77, 0, 200),
                                          ip(10, 1, 2, 3),   ip(192, 168, 1, 9), ip(8, 8, 8, 8)};
const std::uint16_t kPacketPorts[] = {22, 53, 80, 443, 1000, 5201, 5500, 40000};

std::string random_endpoint(std::mt19937& random, bool ports_allowed) {
  std::string text;
  switch (random() % 3) {
    case 0: text = "any"; break;
    default: text = kAddresses[random() % std::size(kAddresses)]; break;
  }
  if (ports_allowed && random() % 2 == 0) {
    text += " port ";
    text += kPorts[random() % std::size(kPorts)];
  }
  return text;
}

std::string random_rule(std::mt19937& random) {
  const bool pass = random() % 2 == 0;
  std::string text = pass ? "pass" : "block";
  switch (random() % 3) {
    case 0: text += " in"; break;
    case 1: text += " out"; break;
    default: break;
  }
  if (random() % 4 == 0) text += " quick";
  if (random() % 8 == 0) {
    text += " all";
  } else {
    const char* protocols[] = {"", "tcp", "udp", "icmp"};
    const std::string protocol = protocols[random() % 4];
    if (!protocol.empty()) text += " proto " + protocol;
    const bool ports = protocol == "tcp" || protocol == "udp";
    if (random() % 3 != 0) text += " from " + random_endpoint(random, ports);
    if (random() % 3 != 0) text += " to " + random_endpoint(random, ports);
  }
  if (pass && random() % 3 == 0) text += " keep state";
  return text + "\n";
}

PacketSummary random_packet(std::mt19937& random) {
  const std::uint8_t protocols[] = {kProtocolTcp, kProtocolUdp, kProtocolIcmp, 47};
  PacketSummary packet;
  packet.direction = random() % 2 == 0 ? Direction::in : Direction::out;
  packet.protocol = protocols[random() % 4];
  packet.source = kPacketAddresses[random() % std::size(kPacketAddresses)];
  packet.destination = kPacketAddresses[random() % std::size(kPacketAddresses)];
  if (packet.protocol == kProtocolTcp || packet.protocol == kProtocolUdp) {
    packet.has_ports = random() % 10 != 0;  // some non-first fragments
    if (packet.has_ports) {
      packet.source_port = kPacketPorts[random() % std::size(kPacketPorts)];
      packet.destination_port = kPacketPorts[random() % std::size(kPacketPorts)];
    }
    if (packet.protocol == kProtocolTcp) packet.tcp_flags = random() % 5 == 0 ? kTcpSyn : kTcpAck;
  }
  return packet;
}

bool any_drops(const std::vector<flotilla_xdp_block_rule>& offloaded, const PacketSummary& packet) {
  for (const auto& rule : offloaded) {
    if (xdp_drops(rule, packet)) return true;
  }
  return false;
}

TEST(XdpOffload, OffloadedDropsAreAlwaysFilterBlocks) {
  std::mt19937 random(7031);
  std::size_t rule_sets_with_offload = 0;
  std::size_t drops_checked = 0;
  std::size_t stateful_drops_checked = 0;
  for (int set = 0; set < 400; ++set) {
    std::string text;
    const int count = 1 + static_cast<int>(random() % 8);
    for (int i = 0; i < count; ++i) text += random_rule(random);
    const RuleSet rules = must_parse(text);
    ASSERT_EQ(rules.size(), static_cast<std::size_t>(count)) << text;
    const auto offloaded = offloadable_block_rules(rules);
    if (offloaded.empty()) continue;
    ++rule_sets_with_offload;

    // Stateless: every dropped packet is blocked by a filter with an empty state table.
    for (int p = 0; p < 300; ++p) {
      const PacketSummary packet = random_packet(random);
      if (!any_drops(offloaded, packet)) continue;
      ++drops_checked;
      TestRegion region(StateTable::bytes_for(4));
      auto table = StateTable::attach(region.span());
      ASSERT_TRUE(table);
      NamedCounterTable counters;
      Filter filter(rules, *table, counters);
      ASSERT_EQ(filter.decide(packet, 0).action, Action::block) << text << "packet from "
          << wire::format_ipv4(packet.source) << ":" << packet.source_port << " to "
          << wire::format_ipv4(packet.destination) << ":" << packet.destination_port;
    }

    // With connections kept along the way (packets, and replies to earlier packets, both ways):
    // still every dropped incoming packet is one the filter blocks.
    TestRegion region(StateTable::bytes_for(1024));
    auto table = StateTable::attach(region.span());
    ASSERT_TRUE(table);
    NamedCounterTable counters;
    Filter filter(rules, *table, counters);
    std::vector<PacketSummary> sent;
    for (int p = 0; p < 300; ++p) {
      PacketSummary packet = random_packet(random);
      if (!sent.empty() && random() % 2 == 0) packet = reply_to(sent[random() % sent.size()]);
      const Decision decision = filter.decide(packet, static_cast<std::uint64_t>(p));
      if (decision.action == Action::pass) sent.push_back(packet);
      if (any_drops(offloaded, packet)) {
        ++stateful_drops_checked;
        ASSERT_EQ(decision.action, Action::block) << text;
      }
    }
  }
  // The random rule sets must exercise the property, not skip it.
  EXPECT_GT(rule_sets_with_offload, 40u);
  EXPECT_GT(drops_checked, 500u);
  EXPECT_GT(stateful_drops_checked, 500u);
}

}  // namespace
}  // namespace flotilla::pf
