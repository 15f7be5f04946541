// Filter::decide: the state table, then the rules.
#include "components/pf/filter.hpp"

namespace flotilla::pf {

Filter::Filter(RuleSet rules, StateTable states, NamedCounterTable& table)
    : counters(table), rules_(std::move(rules)), states_(states) {}

Decision Filter::decide(const PacketSummary& packet, std::uint64_t now_ms) {
  if (states_.matches(packet, now_ms)) {
    counters.state_hits.add();
    counters.passed.add();
    return Decision{Action::pass, 0, false, true};
  }
  const Decision decision = rules_.evaluate(packet);
  if (decision.action == Action::block) {
    counters.blocked.add();
    return decision;
  }
  counters.passed.add();
  if (decision.keep_state) {
    if (states_.insert(packet, now_ms)) {
      counters.states_inserted.add();
    } else {
      counters.state_table_full.add();  // the only way insert fails; the packet still passes
    }
  }
  return decision;
}

std::size_t Filter::expire(std::uint64_t now_ms) {
  const std::size_t dropped = states_.expire(now_ms);
  counters.states_expired.add(dropped);
  return dropped;
}

}  // namespace flotilla::pf
