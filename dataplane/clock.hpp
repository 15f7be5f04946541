// The runtime's one clock: CLOCK_MONOTONIC through the vDSO, so reading it makes no system call.
#pragma once

#include <chrono>
#include <cstdint>

namespace flotilla {

using MonoClock = std::chrono::steady_clock;

inline std::uint64_t monotonic_ns() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(MonoClock::now().time_since_epoch())
          .count());
}

inline std::uint64_t monotonic_ms() { return monotonic_ns() / 1'000'000; }

}  // namespace flotilla
