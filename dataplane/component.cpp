#include "dataplane/component.hpp"

#include "dataplane/clock.hpp"

namespace flotilla {

ComponentRunner::ComponentRunner(ComponentLoop& loop, ChannelOutputs& channels, Component& component)
    : loop_(loop),
      channels_(channels),
      component_(component),
      tick_([this](Timer& self) {
        component_.on_tick(monotonic_ns());
        loop_.timers().arm(self, loop_.now_ms() + component_.tick_period_ms());
      }),
      wake_([](Timer&) {}) {}

Status ComponentRunner::start() {
  for (std::size_t channel = 0; channel < channels_.count(); ++channel) {
    if (!component_.reads(channel)) continue;
    auto added = loop_.add_input(channels_.end(channel).in, [this, channel](std::span<const Message> burst) {
      const std::uint64_t now = monotonic_ns();
      for (const Message& message : burst) component_.on_message(channel, message, now);
      component_.on_burst_end(channel);
    });
    if (!added) return added;
  }
  auto added = loop_.add_poller([this] {
    const bool worked = component_.poll(monotonic_ns());
    loop_.wake_at(wake_, component_.next_wake_ns());
    return worked;
  });
  if (!added) return added;
  if (component_.tick_period_ms() != 0) {
    component_.on_tick(monotonic_ns());
    loop_.timers().arm(tick_, loop_.now_ms() + component_.tick_period_ms());
  }
  return {};
}

}  // namespace flotilla
