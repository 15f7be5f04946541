// Rule matching, pf's evaluation order, and rules printed back as text.
#include "components/pf/rules.hpp"

#include "components/wire/address.hpp"

namespace flotilla::pf {

bool Rule::matches(const PacketSummary& packet) const {
  if (direction == RuleDirection::in && packet.direction != Direction::in) return false;
  if (direction == RuleDirection::out && packet.direction != Direction::out) return false;
  if (!any_protocol && packet.protocol != protocol) return false;
  if (!from.matches_address(packet.source) || !to.matches_address(packet.destination)) return false;
  if (has_ports()) {
    // A port rule says nothing about packets whose ports we cannot see, so it never matches them.
    if (!packet.has_ports) return false;
    if (from.has_ports && !from.matches_port(packet.source_port)) return false;
    if (to.has_ports && !to.matches_port(packet.destination_port)) return false;
  }
  return true;
}

bool Rule::same_filter(const Rule& other) const {
  return action == other.action && direction == other.direction && quick == other.quick &&
         keep_state == other.keep_state && any_protocol == other.any_protocol &&
         (any_protocol || protocol == other.protocol) && from == other.from && to == other.to;
}

namespace {

void append_endpoint(std::string& text, const char* keyword, const Endpoint& endpoint) {
  if (endpoint.is_any()) return;
  text += ' ';
  text += keyword;
  if (endpoint.prefix_length != 0) {
    text += ' ';
    text += wire::format_ipv4(endpoint.address);
    if (endpoint.prefix_length != 32) text += '/' + std::to_string(endpoint.prefix_length);
  }
  if (endpoint.has_ports) {
    text += " port " + std::to_string(endpoint.port_min);
    if (endpoint.port_max != endpoint.port_min) text += ':' + std::to_string(endpoint.port_max);
  }
}

}  // namespace

std::string Rule::describe() const {
  std::string text = action == Action::pass ? "pass" : "block";
  if (direction == RuleDirection::in) text += " in";
  if (direction == RuleDirection::out) text += " out";
  if (quick) text += " quick";
  if (any_protocol && from.is_any() && to.is_any()) {
    text += " all";
  } else {
    if (!any_protocol) {
      text += " proto ";
      switch (protocol) {
        case kProtocolTcp: text += "tcp"; break;
        case kProtocolUdp: text += "udp"; break;
        case kProtocolIcmp: text += "icmp"; break;
        default: text += std::to_string(protocol); break;
      }
    }
    append_endpoint(text, "from", from);
    append_endpoint(text, "to", to);
  }
  if (keep_state) text += " keep state";
  return text;
}

Decision RuleSet::evaluate(const PacketSummary& packet) const {
  Decision decision;  // default: pass, rule 0
  for (std::size_t i = 0; i < rules_.size(); ++i) {
    const Rule& rule = rules_[i];
    if (!rule.matches(packet)) continue;
    decision.action = rule.action;
    decision.rule = static_cast<std::uint16_t>(i + 1);
    decision.keep_state = rule.action == Action::pass && rule.keep_state;
    if (rule.quick) break;
  }
  return decision;
}

}  // namespace flotilla::pf
