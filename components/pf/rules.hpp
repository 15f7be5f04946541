// The packet filter's rules: what a packet looks like to the filter (PacketSummary), one parsed
// rule, a rule set with pf's evaluation order, and the parser of the rule language.
//
// Rule language, one rule per line, `#` starts a comment:
//   rule      := action [direction] ['quick'] ('all' | [proto] [from] [to]) ['keep' 'state']
//   action    := 'pass' | 'block'            direction := 'in' | 'out'   (absent: both)
//   proto     := 'proto' ('tcp' | 'udp' | 'icmp' | NUMBER 0..255)
//   from, to  := ('from' | 'to') endpoint
//   endpoint  := ('any' | ADDRESS | CIDR) ['port' PORTSPEC] | 'port' PORTSPEC
//   PORTSPEC  := NUMBER | NUMBER ':' NUMBER  (inclusive, 0..65535, min <= max)
// Ports need proto tcp or udp; 'keep state' only goes on pass rules.
//
// Evaluation is pf's: the last matching rule decides, unless a matching rule is `quick`, which
// decides at once; when no rule matches the packet passes. Addresses are host byte order here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "components/formats/stack_messages.hpp"
#include "components/wire/ipv4.hpp"
#include "components/wire/tcp.hpp"

namespace flotilla::pf {

using stack::Action;
using stack::Direction;

using wire::kProtocolIcmp;
using wire::kProtocolTcp;
using wire::kProtocolUdp;

using wire::kTcpAck;
using wire::kTcpFin;
using wire::kTcpRst;
using wire::kTcpSyn;

// The fields the filter looks at, extracted by the caller from the IPv4 packet.
struct PacketSummary {
  Direction direction = Direction::in;
  std::uint8_t protocol = 0;
  std::uint32_t source = 0;       // host order
  std::uint32_t destination = 0;  // host order
  std::uint16_t source_port = 0;
  std::uint16_t destination_port = 0;
  bool has_ports = false;  // false for ICMP, other protocols and non-first fragments
  std::uint8_t tcp_flags = 0;
};

struct Decision {
  Action action = Action::pass;
  std::uint16_t rule = 0;   // index + 1 of the deciding rule; 0 for the default or a state
  bool keep_state = false;  // the deciding rule is a pass rule with 'keep state'
  bool from_state = false;  // passed because the packet belongs to a kept connection
};

enum class RuleDirection : std::uint8_t { both = 0, in = 1, out = 2 };

// One side of a rule. prefix_length 0 with no ports matches anything.
struct Endpoint {
  std::uint32_t address = 0;  // host order, host bits already cleared
  std::uint8_t prefix_length = 0;
  bool has_ports = false;
  std::uint16_t port_min = 0;
  std::uint16_t port_max = 65535;

  std::uint32_t mask() const {
    return prefix_length == 0 ? 0u : ~std::uint32_t{0} << (32 - prefix_length);
  }
  bool matches_address(std::uint32_t a) const { return (a & mask()) == address; }
  bool matches_port(std::uint16_t p) const { return p >= port_min && p <= port_max; }
  bool is_any() const { return prefix_length == 0 && !has_ports; }
  friend bool operator==(const Endpoint&, const Endpoint&) = default;
};

struct Rule {
  Action action = Action::pass;
  RuleDirection direction = RuleDirection::both;
  bool quick = false;
  bool keep_state = false;
  bool any_protocol = true;
  std::uint8_t protocol = 0;  // meaningful when !any_protocol
  Endpoint from;
  Endpoint to;
  std::size_t line = 0;  // where it came from, for messages

  bool has_ports() const { return from.has_ports || to.has_ports; }
  bool matches(const PacketSummary& packet) const;
  // The same rule as text the parser reads back: "block in quick proto tcp from any port 1:1023".
  std::string describe() const;
  // Equal as filters (the source line is ignored).
  bool same_filter(const Rule& other) const;
};

class RuleSet {
 public:
  RuleSet() = default;
  explicit RuleSet(std::vector<Rule> rules) : rules_(std::move(rules)) {}

  // No allocation: a walk over the rules.
  Decision evaluate(const PacketSummary& packet) const;

  std::size_t size() const { return rules_.size(); }
  const Rule& rule(std::size_t index) const { return rules_.at(index); }
  const std::vector<Rule>& rules() const { return rules_; }
  std::string describe_rule(std::size_t index) const { return rules_.at(index).describe(); }

 private:
  std::vector<Rule> rules_;
};

struct RuleError {
  std::size_t line = 0;    // 1-based
  std::size_t column = 0;  // 1-based, in bytes
  std::string message;     // "<source>:<line>:<col>: <what>"
};

// Parses a whole rule file. Never throws; any text yields a RuleSet or a RuleError naming the first
// problem and what was expected there.
std::variant<RuleSet, RuleError> parse_rules(std::string_view text, std::string_view source_name);

}  // namespace flotilla::pf
