#include "dataplane/timer_wheel.hpp"

#include <algorithm>

namespace flotilla {

Timer::~Timer() {
  if (wheel_ != nullptr) wheel_->cancel(*this);
}

TimerWheel::~TimerWheel() {
  for (Timer*& head : slots_) {
    while (head != nullptr) unlink(*head);
  }
}

void TimerWheel::link(Timer& timer) {
  // A time already past goes in the next slot, which the next advance visits first.
  const std::uint64_t when = std::max(timer.expires_ms_, now_ms_ + 1);
  timer.slot_ = when % kSlots;
  Timer*& head = slots_[timer.slot_];
  timer.prev_ = nullptr;
  timer.next_ = head;
  if (head != nullptr) head->prev_ = &timer;
  head = &timer;
  timer.wheel_ = this;
  ++armed_;
}

void TimerWheel::unlink(Timer& timer) {
  if (timer.prev_ != nullptr) {
    timer.prev_->next_ = timer.next_;
  } else {
    slots_[timer.slot_] = timer.next_;
  }
  if (timer.next_ != nullptr) timer.next_->prev_ = timer.prev_;
  timer.prev_ = timer.next_ = nullptr;
  timer.wheel_ = nullptr;
  --armed_;
}

void TimerWheel::arm(Timer& timer, std::uint64_t expires_ms) {
  if (timer.wheel_ != nullptr) timer.wheel_->cancel(timer);
  timer.expires_ms_ = expires_ms;
  link(timer);
}

void TimerWheel::cancel(Timer& timer) {
  if (timer.wheel_ == this) unlink(timer);
}

std::size_t TimerWheel::advance(std::uint64_t now_ms) {
  if (now_ms <= now_ms_) return 0;
  std::size_t fired = 0;
  // Past one full turn every slot is visited once; the rest of the gap holds nothing new.
  const std::uint64_t first = now_ms - now_ms_ > kSlots ? now_ms - kSlots + 1 : now_ms_ + 1;
  for (std::uint64_t tick = first; tick <= now_ms; ++tick) {
    Timer* due = nullptr;  // detach the due timers first: a callback may re-arm into this slot
    Timer* timer = slots_[tick % kSlots];
    while (timer != nullptr) {
      Timer* next = timer->next_;
      if (timer->expires_ms_ <= now_ms) {
        unlink(*timer);
        timer->next_ = due;
        due = timer;
      }
      timer = next;
    }
    now_ms_ = tick;
    while (due != nullptr) {
      Timer* current = due;
      due = current->next_;
      current->next_ = nullptr;
      ++fired;
      current->callback_(*current);
    }
  }
  now_ms_ = now_ms;
  return fired;
}

std::optional<std::uint64_t> TimerWheel::next_expiry_hint() const {
  if (armed_ == 0) return std::nullopt;
  for (std::uint64_t tick = now_ms_ + 1; tick <= now_ms_ + kSlots; ++tick) {
    if (slots_[tick % kSlots] != nullptr) return tick;
  }
  return now_ms_ + kSlots;
}

}  // namespace flotilla
