// The one shape of a component's logic. A component is fed, by ComponentRunner, each message of
// each channel it reads, a tick at its own period, its peers' restarts, and a poll once per loop
// pass for work no ring announces (a device, protocol timers). It answers through its
// ChannelOutputs (channel_outputs.hpp). component_main.hpp runs one as a supervised process.
#pragma once

#include <cstddef>
#include <cstdint>

#include "dataplane/channel_outputs.hpp"
#include "dataplane/component_loop.hpp"
#include "dataplane/message.hpp"
#include "dataplane/timer_wheel.hpp"

namespace flotilla {

class Component {
 public:
  virtual ~Component() = default;

  // One message from `channel` (its index in ChannelOutputs). It came from another process: the
  // component validates it, and counts and drops what it cannot use. `now_ns` is monotonic_ns()
  // read once for the burst the message arrived in.
  virtual void on_message(std::size_t channel, const Message& message, std::uint64_t now_ns) = 0;
  // After the last message of a burst from `channel`: a component that batches its answers sends
  // them here.
  virtual void on_burst_end(std::size_t channel) { (void)channel; }
  // Every tick_period_ms(), and once at start; never when the period is 0.
  virtual std::uint64_t tick_period_ms() const { return 0; }
  virtual void on_tick(std::uint64_t now_ns) { (void)now_ns; }
  // The peer at the far end of some channel is a new incarnation.
  virtual void on_peer_restarted(ComponentId peer) { (void)peer; }
  // Work outside the rings, once per loop pass; returns whether it did any (which keeps the loop
  // awake). next_wake_ns() is when it next has such work without a ring announcing it.
  virtual bool poll(std::uint64_t now_ns) {
    (void)now_ns;
    return false;
  }
  virtual std::uint64_t next_wake_ns() const { return UINT64_MAX; }
  // Whether the runner feeds `channel`'s messages to on_message; a component that reads a channel
  // itself (the name server's pump) says no.
  virtual bool reads(std::size_t channel) const {
    (void)channel;
    return true;
  }
};

// Wires a component to a component loop: one input per channel it reads, its tick, its poll.
class ComponentRunner {
 public:
  ComponentRunner(ComponentLoop& loop, ChannelOutputs& channels, Component& component);
  ComponentRunner(const ComponentRunner&) = delete;
  ComponentRunner& operator=(const ComponentRunner&) = delete;

  // Registers everything and gives the first tick. Fails when the loop has no room for the inputs.
  Status start();

 private:
  ComponentLoop& loop_;
  ChannelOutputs& channels_;
  Component& component_;
  Timer tick_;
  Timer wake_;  // fires nothing itself: it only wakes the loop for next_wake_ns()
};

}  // namespace flotilla
