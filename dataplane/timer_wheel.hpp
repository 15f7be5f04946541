// Millisecond timers on a hashed wheel. Timers are intrusive nodes owned by the caller, so arming,
// cancelling and firing never allocate. A timer further out than one turn of the wheel simply stays
// in its slot until its turn comes round.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>

namespace flotilla {

class TimerWheel;

class Timer {
 public:
  using Callback = std::function<void(Timer&)>;

  explicit Timer(Callback callback) : callback_(std::move(callback)) {}
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;
  ~Timer();

  bool armed() const { return wheel_ != nullptr; }
  std::uint64_t expires_ms() const { return expires_ms_; }

 private:
  friend class TimerWheel;
  Callback callback_;
  TimerWheel* wheel_ = nullptr;
  Timer* prev_ = nullptr;
  Timer* next_ = nullptr;
  std::uint64_t expires_ms_ = 0;
  std::size_t slot_ = 0;
};

class TimerWheel {
 public:
  static constexpr std::size_t kSlots = 1024;  // one slot per millisecond

  explicit TimerWheel(std::uint64_t now_ms) : now_ms_(now_ms) {}
  TimerWheel(const TimerWheel&) = delete;
  TimerWheel& operator=(const TimerWheel&) = delete;
  ~TimerWheel();

  // Arms (or re-arms) `timer` to fire at `expires_ms`. A time already past fires on the next advance.
  void arm(Timer& timer, std::uint64_t expires_ms);
  void cancel(Timer& timer);

  // Fires every timer due at or before `now_ms`, in slot order. Returns how many fired.
  std::size_t advance(std::uint64_t now_ms);

  // A time at or before the earliest armed timer's expiry, or nothing when no timer is armed. Cheap
  // enough for the sleep path, not for every loop pass.
  std::optional<std::uint64_t> next_expiry_hint() const;

  std::uint64_t now_ms() const { return now_ms_; }
  std::size_t armed_count() const { return armed_; }

 private:
  void link(Timer& timer);
  void unlink(Timer& timer);

  std::array<Timer*, kSlots> slots_{};
  std::uint64_t now_ms_;
  std::size_t armed_ = 0;
};

}  // namespace flotilla
