// The choice of block rules for the XDP program; the rules for choosing are in xdp_offload.hpp.
#include "components/pf/xdp_offload.hpp"

#include <arpa/inet.h>

#include "components/formats/xdp_block_list.hpp"

namespace flotilla::pf {
namespace {

bool directions_overlap(RuleDirection a, RuleDirection b) {
  return a == RuleDirection::both || b == RuleDirection::both || a == b;
}

bool addresses_overlap(const Endpoint& a, const Endpoint& b) {
  const std::uint32_t common = a.mask() & b.mask();  // the shorter prefix
  return (a.address & common) == (b.address & common);
}

// Endpoints without ports match every port (and portless packets too).
bool ports_overlap(const Endpoint& a, const Endpoint& b) {
  return a.port_min <= b.port_max && b.port_min <= a.port_max;
}

bool endpoints_overlap(const Endpoint& a, const Endpoint& b) {
  return addresses_overlap(a, b) && ports_overlap(a, b);
}

// The packets of the connections a keep-state rule creates, seen the other way round.
Rule reply_of(const Rule& rule) {
  Rule reply = rule;
  reply.from = rule.to;
  reply.to = rule.from;
  if (rule.direction == RuleDirection::in) reply.direction = RuleDirection::out;
  if (rule.direction == RuleDirection::out) reply.direction = RuleDirection::in;
  return reply;
}

// The XDP program sees only incoming packets, and represents protocol 0 as "any": a rule for
// protocol number 0 cannot be expressed.
bool expressible(const Rule& rule) {
  return rule.action == Action::block && !rule.keep_state &&
         rule.direction != RuleDirection::out && (rule.any_protocol || rule.protocol != 0);
}

flotilla_xdp_block_rule to_xdp(const Rule& rule) {
  flotilla_xdp_block_rule xdp{};
  xdp.in_use = 1;
  xdp.src_addr = htonl(rule.from.address);
  xdp.src_mask = htonl(rule.from.mask());
  xdp.dst_addr = htonl(rule.to.address);
  xdp.dst_mask = htonl(rule.to.mask());
  xdp.src_port_min = rule.from.port_min;
  xdp.src_port_max = rule.from.port_max;
  xdp.dst_port_min = rule.to.port_min;
  xdp.dst_port_max = rule.to.port_max;
  xdp.protocol = rule.any_protocol ? 0 : rule.protocol;
  return xdp;
}

}  // namespace

bool may_overlap(const Rule& a, const Rule& b) {
  return directions_overlap(a.direction, b.direction) &&
         (a.any_protocol || b.any_protocol || a.protocol == b.protocol) &&
         endpoints_overlap(a.from, b.from) && endpoints_overlap(a.to, b.to);
}

std::vector<flotilla_xdp_block_rule> offloadable_block_rules(const RuleSet& rules) {
  std::vector<flotilla_xdp_block_rule> chosen;
  const std::vector<Rule>& all = rules.rules();
  for (std::size_t i = 0; i < all.size() && chosen.size() < FLOTILLA_XDP_MAX_RULES; ++i) {
    if (!expressible(all[i])) continue;
    Rule candidate = all[i];
    candidate.direction = RuleDirection::in;  // what XDP applies it to
    bool safe = true;
    for (std::size_t j = 0; j < all.size() && safe; ++j) {
      const Rule& other = all[j];
      if (j == i || other.action != Action::pass) continue;
      if (other.keep_state &&
          (may_overlap(candidate, other) || may_overlap(candidate, reply_of(other)))) {
        safe = false;
      } else if (j < i && other.quick && may_overlap(candidate, other)) {
        safe = false;
      } else if (j > i && !candidate.quick && may_overlap(candidate, other)) {
        safe = false;
      }
    }
    if (safe) chosen.push_back(to_xdp(all[i]));
  }
  return chosen;
}

Result<std::size_t> publish_offload(const RuleSet& rules, std::span<std::byte> region) {
  formats::XdpBlockList* list = formats::xdp_block_list(region);
  if (list == nullptr) return Error{Errc::invalid_argument, 0, "XDP block-rule region too small"};
  const auto chosen = offloadable_block_rules(rules);
  (void)formats::publish_xdp_block_list(*list, chosen);
  return chosen.size();
}

}  // namespace flotilla::pf
