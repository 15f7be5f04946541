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
  futex_wakes,      // wake-up system calls made (futex or eventfd), as a producer waking a sleeping consumer
  wasted_wakes,     // woke from a doorbell and found no work
  sleep_timeouts,   // sleeps that ended by their time limit, not by a wake-up
  drops,            // inputs dropped for any reason
  corrupt,          // inputs rejected as malformed: bad ring index, bad message
  bad_handles,      // buffer handles refused: out of range, stale, or not the holder's
  timers_fired,
  yields,           // times the loop gave its core away with sched_yield while traffic was warm
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

namespace flotilla {

// Counters a component names itself ("bad_checksum", "arp_flood_ignored", ...), for what the fixed
// set above cannot say. They sit in shared memory beside the fixed block, with the same single
// writer rule. A restarted component finds the names its earlier incarnations registered and
// keeps counting on them, so totals span restarts.
inline constexpr std::size_t kMaxNamedCounters = 96;
inline constexpr std::size_t kCounterNameBytes = 40;

struct NamedCounter {
  char name[kCounterNameBytes];
  std::atomic<std::uint64_t> value;

  void add(std::uint64_t amount = 1) {
    value.store(value.load(std::memory_order_relaxed) + amount, std::memory_order_relaxed);
  }
  std::uint64_t read() const { return value.load(std::memory_order_relaxed); }
};

struct alignas(kCacheLine) NamedCounterTable {
  // Published with a release store after the entry's name is written; readers load it with
  // acquire and still treat the names as untrusted bytes.
  std::atomic<std::uint32_t> count{0};
  std::uint32_t reserved = 0;
  NamedCounter entries[kMaxNamedCounters];
  // Where counts go when the table is full or a name is empty or too long; not shown anywhere.
  // Register at start-up, not on the data path, so a missing counter is seen at once.
  NamedCounter overflow;

  // The counter called `name`, registered on first use.
  NamedCounter& counter(std::string_view name);
  // Entries safe to read: at most kMaxNamedCounters whatever the count word says.
  std::size_t published() const;
};

// A component's named counters, listed once as an X-macro: LIST(X) expands X(name) per counter.
// Inside a struct, FLOTILLA_NAMED_COUNTERS(LIST) declares a `NamedCounter* name` per counter and
// register_in(table), which points each one at table.counter("name").
#define FLOTILLA_NAMED_COUNTER_FIELD(name) ::flotilla::NamedCounter* name = nullptr;
#define FLOTILLA_NAMED_COUNTER_REGISTER(name) name = &table.counter(#name);
#define FLOTILLA_NAMED_COUNTERS(LIST)        \
  LIST(FLOTILLA_NAMED_COUNTER_FIELD)         \
  void register_in(::flotilla::NamedCounterTable& table) { LIST(FLOTILLA_NAMED_COUNTER_REGISTER) }

}  // namespace flotilla
