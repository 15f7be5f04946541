#include "recovery/event_log.hpp"

#include <cstdio>

namespace flotilla::recovery {

std::string_view event_kind_name(EventKind kind) {
  switch (kind) {
    case EventKind::start: return "start";
    case EventKind::exit: return "exit";
    case EventKind::hang_detected: return "hang";
    case EventKind::restart: return "restart";
    case EventKind::recovered: return "recovered";
    case EventKind::reclaimed: return "reclaimed";
    case EventKind::failed: return "failed";
    case EventKind::fault_injected: return "inject";
    case EventKind::stopped: return "stopped";
    case EventKind::registered: return "registered";
    case EventKind::joined: return "joined";
    case EventKind::leased: return "leased";
    case EventKind::released: return "released";
    case EventKind::reported: return "reported";
  }
  return "unknown";
}

std::string format_event(const Event& event) {
  char head[96];
  std::snprintf(head, sizeof(head), "[%10.3f ms] %-9s %s#%llu", static_cast<double>(event.at_ns) / 1e6,
                std::string(event_kind_name(event.kind)).c_str(), event.component.c_str(),
                static_cast<unsigned long long>(event.incarnation));
  std::string line = head;
  if (!event.detail.empty()) line += "  " + event.detail;
  return line;
}

std::size_t EventLog::count(EventKind kind, std::string_view component) const {
  std::size_t total = 0;
  for (const Event& event : events_) {
    if (event.kind == kind && (component.empty() || event.component == component)) ++total;
  }
  return total;
}

}  // namespace flotilla::recovery
