// Which block rules the driver's XDP program may apply before packets reach user space, without
// changing any decision the full filter (rules and kept connections) would make.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "components/pf/rules.hpp"
#include "components/formats/xdp_block_rule.h"
#include "dataplane/result.hpp"

namespace flotilla::pf {

// The stateless `block` rules (direction `in` or both) that may be dropped early, in rule order, at
// most FLOTILLA_XDP_MAX_RULES, in the XDP map's layout (addresses in network order). A block
// rule qualifies only if, for every incoming packet it matches, the filter would block too:
//   - no LATER rule that may match the same packets passes (last match wins), unless the block
//     rule is quick;
//   - no EARLIER `pass quick` rule may match the same packets;
//   - no `keep state` pass rule, anywhere, may create a connection whose packets (either way) the
//     block rule could match: those pass through the state table before any rule is looked at.
// "May match the same packets" is judged conservatively: when unsure, it is assumed.
std::vector<flotilla_xdp_block_rule> offloadable_block_rules(const RuleSet& rules);

// Publishes offloadable_block_rules(rules) for the driver in `region` (the writer's side of
// components/formats/xdp_block_list.hpp) and returns how many rules it holds. Errc::invalid_argument
// when the region is too small for the list.
Result<std::size_t> publish_offload(const RuleSet& rules, std::span<std::byte> region);

// Whether some packet may match both rules (ignoring action, quick and keep state). Never false
// when such a packet exists.
bool may_overlap(const Rule& a, const Rule& b);

}  // namespace flotilla::pf
