// The one main loop every component runs, in the MINIX 3 server style: poll the input rings in
// bursts, hand each burst to its handler, fire due timers, beat the heartbeat, and wait on the
// doorbell when there is nothing to do. Messages are the component's only interface.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <functional>
#include <span>

#include "dataplane/clock.hpp"
#include "dataplane/control_block.hpp"
#include "dataplane/counters.hpp"
#include "dataplane/doorbell.hpp"
#include "dataplane/idle_waiter.hpp"
#include "dataplane/message.hpp"
#include "dataplane/ring.hpp"
#include "dataplane/timer_wheel.hpp"

namespace flotilla {

class ComponentLoop {
 public:
  // A channel each, and a server has one per application seat besides its own.
  static constexpr std::size_t kMaxInputs = kMaxChannelsPerComponent;
  static constexpr std::size_t kMaxPollers = 32;
  static constexpr std::size_t kBurst = 32;

  // The handler gets a private copy of each burst; it must validate what it reads.
  using InputHandler = std::function<void(std::span<const Message>)>;

  // `bell` and `counters` are this component's own, in shared memory.
  ComponentLoop(Doorbell& bell, CounterBlock& counters, WaitPolicy policy);

  Status add_input(RingConsumer& ring, InputHandler handler);
  // An idle input (a channel to an application seat no program holds) is looked at only every
  // kIdlePassInterval passes and before the loop sleeps, so a server with many seats pays little
  // per pass for the idle ones. Messages found there make it busy again: a lost notice costs
  // latency, never a message.
  static constexpr std::uint64_t kIdlePassInterval = 64;
  void set_input_idle(const RingConsumer& ring, bool idle);
  // The supervisor's ring. It is read before each burst of any other input is handled: a notice
  // sent before a peer's message (its seat leased to a new program, which then talks at once) is
  // then always handled before that message, whatever the order the rings are polled in.
  Status set_control_input(RingConsumer& ring, InputHandler handler);
  // Work the loop cannot see in its rings (retrying sends a full ring refused, flushing a batch):
  // called once a pass; returns whether it did anything, which keeps the loop from sleeping.
  using Poller = std::function<bool()>;
  Status add_poller(Poller poller);

  // Called whenever the loop is about to block on its doorbell (and again as it wakes). A component
  // whose work also arrives from outside its rings, such as a driver's device, uses it to arrange
  // for that work to ring the doorbell; the doorbell's sequence was read before the hook runs, so
  // a ring from here on is never lost.
  using SleepHook = std::function<void()>;
  void set_sleep_hook(SleepHook hook) { sleep_hook_ = std::move(hook); }
  Doorbell& doorbell() { return *bell_; }

  TimerWheel& timers() { return timers_; }
  // Keeps `timer` armed for the first millisecond tick at or after `deadline_ns` (monotonic_ns), so
  // an idle loop wakes for work no ring announces (a protocol timer, a frame held back);
  // UINT64_MAX disarms it. Touches the wheel only when the deadline's tick changed.
  void wake_at(Timer& timer, std::uint64_t deadline_ns) {
    if (deadline_ns == UINT64_MAX) {
      if (timer.armed()) timers_.cancel(timer);
      return;
    }
    const std::uint64_t tick = deadline_ns / 1'000'000 + 1;
    if (!timer.armed() || timer.expires_ms() != tick) timers_.arm(timer, tick);
  }
  CounterBlock& counters() { return *counters_; }
  std::uint64_t now_ms() const { return timers_.now_ms(); }

  // One pass over inputs and timers. Returns true when it did any work.
  bool poll_once() { return poll_once(monotonic_ns()); }
  bool poll_once(std::uint64_t now_ns);
  // Runs passes, waiting when idle, until stop() is called (from a handler or a timer).
  void run();
  void stop() { stopping_.store(true, std::memory_order_relaxed); }

  // An input whose ring reported a corrupt index is set aside (and counted) rather than polled
  // again; the supervisor decides what happens to that channel.
  bool input_faulted(std::size_t input) const {
    return input < input_count_ && inputs_[input].faulted;
  }

 private:
  struct Input {
    RingConsumer* ring = nullptr;
    InputHandler handler;
    bool faulted = false;
    bool idle = false;
  };

  // Whether any input holds messages; an idle one that does becomes busy.
  bool any_input_ready();
  // Handles whatever waits in the control input; whether there was any.
  bool drain_control();

  Doorbell* bell_;
  CounterBlock* counters_;
  IdleWaiter waiter_;
  SleepHook sleep_hook_;
  TimerWheel timers_;
  std::array<Input, kMaxInputs> inputs_{};
  std::size_t input_count_ = 0;
  std::array<Poller, kMaxPollers> pollers_{};
  std::size_t poller_count_ = 0;
  std::array<Message, kBurst> burst_{};
  Input control_{};
  std::array<Message, kBurst> control_burst_{};
  std::atomic<bool> stopping_{false};
  std::uint64_t passes_ = 0;
};

}  // namespace flotilla
