// Per-component counters in shared memory. Each block has one writer (its component), so updates
// are plain relaxed stores, never locked read-modify-writes; any process may read them.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "dataplane/cpu.hpp"

namespace flotilla {

enum class Counter : std::uint32_t {
  heartbeat,        // bumped by every pass of the component loop
  messages_in,      // messages received from input rings
  messages_out,     // messages published to output rings
  bursts_in,        // non-empty receive bursts
  bursts_out,       // non-empty send bursts
  ring_full,        // sends that found the output ring full
  sleeps,           // times the loop blocked on its doorbell
  futex_waits,      // futex wait system calls made
  futex_wakes,      // futex wake system calls made, as a producer waking a sleeping consumer
  wasted_wakes,     // woke from a doorbell and found no work
  sleep_timeouts,   // sleeps that ended by their time limit, not by a wake-up
  drops,            // inputs dropped for any reason
  corrupt,          // inputs rejected as malformed: bad ring index, bad message
  bad_handles,      // buffer handles refused: out of range, stale, or not the holder's
  timers_fired,
  count_,
};

inline constexpr std::size_t kCounterCount = static_cast<std::size_t>(Counter::count_);

std::string_view counter_name(Counter counter);

struct alignas(kCacheLine) CounterBlock {
  std::array<std::atomic<std::uint64_t>, kCounterCount> values{};

  // Single-writer increment: the owner is the only one that stores, so load+store is exact.
  void add(Counter counter, std::uint64_t amount = 1) {
    auto& value = values[static_cast<std::size_t>(counter)];
    value.store(value.load(std::memory_order_relaxed) + amount, std::memory_order_relaxed);
  }
  std::uint64_t read(Counter counter) const {
    return values[static_cast<std::size_t>(counter)].load(std::memory_order_relaxed);
  }
};

}  // namespace flotilla
