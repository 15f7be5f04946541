#include "dataplane/doorbell.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <x86intrin.h>

#include <cerrno>
#include <ctime>

namespace flotilla {

WaitOutcome futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                       std::chrono::nanoseconds timeout) {
  if (timeout.count() < 0) timeout = std::chrono::nanoseconds(0);
  timespec relative{};
  relative.tv_sec = static_cast<time_t>(timeout.count() / 1'000'000'000);
  relative.tv_nsec = static_cast<long>(timeout.count() % 1'000'000'000);
  const long rc = ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT,
                            expected, &relative, nullptr, 0);
  if (rc == 0) return WaitOutcome::woken;
  if (errno == ETIMEDOUT) return WaitOutcome::timed_out;
  if (errno == EAGAIN) return WaitOutcome::woken;  // the word had already moved on
  return WaitOutcome::interrupted;
}

void futex_wake_one(std::atomic<std::uint32_t>& word) {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, 1, nullptr, nullptr, 0);
}

void eventfd_wake(int fd) {
  const std::uint64_t one = 1;
  // EAGAIN (the counter is at its maximum) still leaves the eventfd readable: nothing is lost.
  [[maybe_unused]] const ssize_t written = ::write(fd, &one, sizeof(one));
}

namespace {

// The TSC rate, measured once against the monotonic clock; UMWAIT deadlines are in TSC ticks.
double tsc_ticks_per_ns() {
  static const double ratio = [] {
    const auto start_time = std::chrono::steady_clock::now();
    const auto start_tsc = __rdtsc();
    while (std::chrono::steady_clock::now() - start_time < std::chrono::milliseconds(2)) {
    }
    const auto elapsed = std::chrono::steady_clock::now() - start_time;
    const auto ticks = __rdtsc() - start_tsc;
    return static_cast<double>(ticks) /
           static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count());
  }();
  return ratio;
}

__attribute__((target("waitpkg"))) void monitor_and_wait(std::atomic<std::uint32_t>& word,
                                                         std::uint32_t expected,
                                                         unsigned long long tsc_deadline) {
  _umonitor(reinterpret_cast<void*>(&word));
  if (word.load(std::memory_order_acquire) != expected) return;
  _umwait(0, tsc_deadline);  // 0 = C0.2: deeper sleep, slower exit; the OS caps the duration
}

}  // namespace

WaitOutcome umwait_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                        std::chrono::nanoseconds timeout) {
  const auto ticks = static_cast<unsigned long long>(static_cast<double>(timeout.count()) *
                                                     tsc_ticks_per_ns());
  const unsigned long long deadline = __rdtsc() + ticks;
  // UMWAIT may return early (OS time limit, interrupts), so loop until the word moves or time is up.
  while (word.load(std::memory_order_acquire) == expected) {
    if (__rdtsc() >= deadline) return WaitOutcome::timed_out;
    monitor_and_wait(word, expected, deadline);
  }
  return WaitOutcome::woken;
}

}  // namespace flotilla
