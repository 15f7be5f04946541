#include "dataplane/counters.hpp"

#include <algorithm>
#include <cstring>

namespace flotilla {

std::string_view counter_name(Counter counter) {
  switch (counter) {
    case Counter::heartbeat: return "heartbeat";
    case Counter::messages_in: return "messages_in";
    case Counter::messages_out: return "messages_out";
    case Counter::bursts_in: return "bursts_in";
    case Counter::bursts_out: return "bursts_out";
    case Counter::ring_full: return "ring_full";
    case Counter::sleeps: return "sleeps";
    case Counter::futex_waits: return "futex_waits";
    case Counter::futex_wakes: return "futex_wakes";
    case Counter::wasted_wakes: return "wasted_wakes";
    case Counter::sleep_timeouts: return "sleep_timeouts";
    case Counter::drops: return "drops";
    case Counter::corrupt: return "corrupt";
    case Counter::bad_handles: return "bad_handles";
    case Counter::timers_fired: return "timers_fired";
    case Counter::yields: return "yields";
    case Counter::count_: break;
  }
  return "unknown";
}

}  // namespace flotilla

namespace flotilla {

NamedCounter& NamedCounterTable::counter(std::string_view name) {
  if (name.empty() || name.size() >= kCounterNameBytes) return overflow;
  const std::size_t existing = published();
  for (std::size_t i = 0; i < existing; ++i) {
    if (std::string_view(entries[i].name, ::strnlen(entries[i].name, kCounterNameBytes)) == name) {
      return entries[i];
    }
  }
  if (existing >= kMaxNamedCounters) return overflow;
  NamedCounter& entry = entries[existing];
  std::memset(entry.name, 0, sizeof(entry.name));
  std::memcpy(entry.name, name.data(), name.size());
  entry.value.store(0, std::memory_order_relaxed);
  count.store(static_cast<std::uint32_t>(existing + 1), std::memory_order_release);
  return entry;
}

std::size_t NamedCounterTable::published() const {
  return std::min<std::size_t>(count.load(std::memory_order_acquire), kMaxNamedCounters);
}

}  // namespace flotilla
