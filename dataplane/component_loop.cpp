#include "dataplane/component_loop.hpp"

namespace flotilla {

ComponentLoop::ComponentLoop(Doorbell& bell, CounterBlock& counters, WaitPolicy policy)
    : bell_(&bell), counters_(&counters), waiter_(bell, counters, policy), timers_(monotonic_ms()) {}

Status ComponentLoop::add_input(RingConsumer& ring, InputHandler handler) {
  if (input_count_ == kMaxInputs) return Error{Errc::exhausted, 0, "component loop inputs"};
  if (!handler) return Error{Errc::invalid_argument, 0, "input without a handler"};
  inputs_[input_count_++] = Input{&ring, std::move(handler), false, false};
  return {};
}

void ComponentLoop::set_input_idle(const RingConsumer& ring, bool idle) {
  for (std::size_t i = 0; i < input_count_; ++i) {
    if (inputs_[i].ring == &ring) inputs_[i].idle = idle;
  }
}

Status ComponentLoop::set_control_input(RingConsumer& ring, InputHandler handler) {
  if (control_.ring != nullptr) return Error{Errc::invalid_argument, 0, "a second control input"};
  if (!handler) return Error{Errc::invalid_argument, 0, "input without a handler"};
  control_ = Input{&ring, std::move(handler), false, false};
  return {};
}

bool ComponentLoop::drain_control() {
  if (control_.ring == nullptr || control_.faulted) return false;
  bool any = false;
  for (;;) {
    auto received = control_.ring->recv_burst(control_burst_);
    if (!received) {
      control_.faulted = true;
      return any;
    }
    if (received.value() == 0) return any;
    any = true;
    control_.handler(std::span<const Message>(control_burst_.data(), received.value()));
  }
}

Status ComponentLoop::add_poller(Poller poller) {
  if (poller_count_ == kMaxPollers) return Error{Errc::exhausted, 0, "component loop pollers"};
  if (!poller) return Error{Errc::invalid_argument, 0, "poller is empty"};
  pollers_[poller_count_++] = std::move(poller);
  return {};
}

bool ComponentLoop::poll_once(std::uint64_t now_ns) {
  bool worked = drain_control();
  const bool look_at_idle = ++passes_ % kIdlePassInterval == 0;
  for (std::size_t i = 0; i < input_count_; ++i) {
    Input& input = inputs_[i];
    if (input.faulted || (input.idle && !look_at_idle)) continue;
    auto received = input.ring->recv_burst(burst_);
    if (!received) {
      input.faulted = true;  // the ring counted the corruption itself
      continue;
    }
    if (received.value() == 0) continue;
    worked = true;
    input.idle = false;
    (void)drain_control();
    input.handler(std::span<const Message>(burst_.data(), received.value()));
  }
  for (std::size_t i = 0; i < poller_count_; ++i) worked |= pollers_[i]();
  const std::uint64_t now = now_ns / 1'000'000;
  if (now > timers_.now_ms()) {
    const std::size_t fired = timers_.advance(now);
    if (fired != 0) {
      counters_->add(Counter::timers_fired, fired);
      worked = true;
    }
  }
  counters_->add(Counter::heartbeat);
  return worked;
}

bool ComponentLoop::any_input_ready() {
  if (control_.ring != nullptr && !control_.faulted && control_.ring->has_input()) return true;
  bool ready = false;
  for (std::size_t i = 0; i < input_count_; ++i) {
    Input& input = inputs_[i];
    if (input.faulted || !input.ring->has_input()) continue;
    input.idle = false;
    ready = true;
  }
  return ready;
}

void ComponentLoop::run() {
  while (!stopping_.load(std::memory_order_relaxed)) {
    const std::uint64_t now_ns = monotonic_ns();
    if (poll_once(now_ns)) {
      waiter_.on_work(now_ns);
      continue;
    }
    // Never sleep past the next timer.
    std::chrono::nanoseconds max_sleep = std::chrono::nanoseconds::max();
    if (auto next = timers_.next_expiry_hint()) {
      const std::uint64_t now_ms = now_ns / 1'000'000;
      max_sleep = *next > now_ms ? std::chrono::milliseconds(*next - now_ms)
                                 : std::chrono::nanoseconds(0);
    }
    waiter_.on_idle(now_ns, [this] {
      if (sleep_hook_) sleep_hook_();
      return any_input_ready();
    }, max_sleep);
  }
  stopping_.store(false, std::memory_order_relaxed);
}

}  // namespace flotilla
