// A component's doorbell: one cache line in shared memory that producers ring after they publish.
// It follows io_uring's NEED_WAKEUP idea: the consumer raises `sleeping` (then fences and checks its
// rings once more) before it blocks, and a producer makes a system call only when it sees the flag.
// Under load the flag stays down and the data path makes no system calls.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "dataplane/counters.hpp"
#include "dataplane/cpu.hpp"

namespace flotilla {

struct alignas(kCacheLine) Doorbell {
  // eventfd_sleep: a process that is not a component loop (a program on the preload library)
  // sleeps in poll/epoll on an eventfd beside its own descriptors; producers that were given that
  // eventfd write it.
  enum Mode : std::uint32_t { awake = 0, futex_sleep = 1, umwait_sleep = 2, eventfd_sleep = 3 };

  std::atomic<std::uint32_t> sleeping{awake};
  std::atomic<std::uint32_t> sequence{0};  // the futex word / UMONITOR target; bumped per wake-up
};
static_assert(sizeof(Doorbell) == kCacheLine);

// Producer side, called after a release store published new messages. The full fence orders
// that store before the load of `sleeping`; the consumer fences the other way round, so at least
// one of the two sees the other's write and no wake-up is lost.
// `wake_fd` is the consumer's eventfd when it sleeps in eventfd mode (-1: it never does).
inline void ring_doorbell(Doorbell& doorbell, CounterBlock* counters, int wake_fd = -1);

enum class WaitOutcome { woken, timed_out, interrupted };

// Blocks while `word` still holds `expected`, for at most `timeout`. Cross-process: the word lives
// in shared memory, so this is never FUTEX_PRIVATE.
WaitOutcome futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                       std::chrono::nanoseconds timeout);
void futex_wake_one(std::atomic<std::uint32_t>& word);
// Adds one to an eventfd (a consumer asleep in eventfd mode).
void eventfd_wake(int fd);

// UMONITOR/UMWAIT on the doorbell word until it changes or `timeout` passes. Only call when
// cpu_has_waitpkg() is true.
WaitOutcome umwait_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                        std::chrono::nanoseconds timeout);

inline void ring_doorbell(Doorbell& doorbell, CounterBlock* counters, int wake_fd) {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const auto seen = doorbell.sleeping.load(std::memory_order_relaxed);
  if (seen == Doorbell::awake) return;
  // A consumer asleep on an eventfd this producer was not given: leave the flag up for one that
  // can wake it (taking it down here would swallow the next producer's wake-up).
  if (seen == Doorbell::eventfd_sleep && wake_fd < 0) return;
  // Take the flag down first, so that when several producers race only one pays for the syscall.
  const auto mode = doorbell.sleeping.exchange(Doorbell::awake, std::memory_order_acq_rel);
  if (mode == Doorbell::awake) return;
  doorbell.sequence.fetch_add(1, std::memory_order_release);
  if (mode == Doorbell::futex_sleep) {
    futex_wake_one(doorbell.sequence);
    if (counters != nullptr) counters->add(Counter::futex_wakes);
  }
  if (mode == Doorbell::eventfd_sleep && wake_fd >= 0) {
    eventfd_wake(wake_fd);
    if (counters != nullptr) counters->add(Counter::futex_wakes);
  }
  // umwait_sleep: the store to the monitored line is itself the wake-up.
}

}  // namespace flotilla
