#include "dataplane/counters.hpp"

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
    case Counter::count_: break;
  }
  return "unknown";
}

}  // namespace flotilla
