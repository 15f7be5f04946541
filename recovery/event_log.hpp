// The supervisor's timestamped record of what happened to each component.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace flotilla::recovery {

enum class EventKind {
  start,           // a component incarnation was spawned
  exit,            // it exited or was killed (detail: signal or exit code)
  hang_detected,   // its heartbeat stopped for longer than the limit
  restart,         // a new incarnation was spawned after a failure
  recovered,       // the new incarnation served its first message (detail: time since detection)
  reclaimed,       // buffers a dead incarnation held went back to the pool
  failed,          // too many crashes in the window: no more restarts
  fault_injected,  // a fault was requested
  stopped,         // shut down on request
  registered,      // its /proc/<name> entry names this incarnation in the name fleet
  joined,          // a restarted name server installed a live member's table and serves
  leased,          // a program took an application seat (detail: its pid)
  released,        // that program's lease ended
  reported,        // the component told something it survived (detail: its text)
};

std::string_view event_kind_name(EventKind kind);

struct Event {
  std::uint64_t at_ns;  // since the supervisor started
  EventKind kind;
  std::string component;
  std::uint64_t incarnation;
  std::string detail;
  std::uint64_t value = 0;  // kind-specific: recovery ns, buffers reclaimed, signal number
};

std::string format_event(const Event& event);

class EventLog {
 public:
  void add(Event event) { events_.push_back(std::move(event)); }
  const std::vector<Event>& events() const { return events_; }
  std::size_t count(EventKind kind, std::string_view component = {}) const;

 private:
  std::vector<Event> events_;
};

}  // namespace flotilla::recovery
