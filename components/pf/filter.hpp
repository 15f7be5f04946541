// The packet filter's decision: kept connections first, then the rules; a pass by a 'keep state'
// rule keeps the packet's connection. Single-threaded, no allocation per packet.
#pragma once

#include <cstdint>

#include "components/pf/rules.hpp"
#include "components/pf/state_table.hpp"
#include "dataplane/counters.hpp"

namespace flotilla::pf {

// The filter's counts, kept once: in the named counters the pf process shows (`flotilla top`).
struct FilterCounters {
  explicit FilterCounters(NamedCounterTable& table)
      : passed(table.counter("passed")),
        blocked(table.counter("blocked")),
        state_hits(table.counter("state_hits")),
        states_inserted(table.counter("states_inserted")),
        state_table_full(table.counter("state_table_full")),
        states_expired(table.counter("states_expired")) {}
  NamedCounter& passed;
  NamedCounter& blocked;
  NamedCounter& state_hits;        // passed because of a kept connection
  NamedCounter& states_inserted;
  NamedCounter& state_table_full;  // 'keep state' passes that found no free slot
  NamedCounter& states_expired;    // connections dropped by expire()
};

class Filter {
 public:
  Filter(RuleSet rules, StateTable states, NamedCounterTable& table);

  Decision decide(const PacketSummary& packet, std::uint64_t now_ms);

  // Drops timed-out connections; call it now and then (e.g. once a second).
  std::size_t expire(std::uint64_t now_ms);

  // New rules (a reload); the kept connections stay.
  void replace_rules(RuleSet rules) { rules_ = std::move(rules); }

  const RuleSet& rules() const { return rules_; }
  StateTable& states() { return states_; }
  const StateTable& states() const { return states_; }

  FilterCounters counters;  // read by the caller; only the filter writes them

 private:
  RuleSet rules_;
  StateTable states_;
};

}  // namespace flotilla::pf
