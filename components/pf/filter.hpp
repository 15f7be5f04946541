// The packet filter's decision: kept connections first, then the rules; a pass by a 'keep state'
// rule keeps the packet's connection. Single-threaded, no allocation per packet.
#pragma once

#include <cstdint>

#include "components/pf/rules.hpp"
#include "components/pf/state_table.hpp"

namespace flotilla::pf {

struct FilterCounters {
  std::uint64_t passed = 0;
  std::uint64_t blocked = 0;
  std::uint64_t state_hits = 0;        // passed because of a kept connection
  std::uint64_t states_inserted = 0;
  std::uint64_t state_table_full = 0;  // 'keep state' passes that found no free slot
  std::uint64_t expired = 0;           // connections dropped by expire()
};

class Filter {
 public:
  Filter(RuleSet rules, StateTable states);

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
