// Wakes a sleeping driver loop when its device has frames. The kernel cannot ring a Flotilla
// doorbell, and the loop sleeps on its doorbell (so IP's sends wake it at once), so a small thread
// waits on the device's descriptor instead, but only while the loop sleeps: the loop arms it just
// before blocking (ComponentLoop's sleep hook) and the thread, seeing the device readable, disarms
// and rings the loop's doorbell. Receive then costs no timer-driven polling at idle.
#pragma once

#include <poll.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

#include "dataplane/doorbell.hpp"

namespace flotilla::drivers {

class DeviceWaker {
 public:
  // The thread starts at the first arm, from the loop: after the component entered its sandbox,
  // so that it inherits the dropped capabilities (which are per thread) with the filter.
  DeviceWaker(int device_fd, Doorbell& bell) : fd_(device_fd), bell_(&bell) {}
  DeviceWaker(const DeviceWaker&) = delete;
  DeviceWaker& operator=(const DeviceWaker&) = delete;
  ~DeviceWaker() {
    if (!thread_.joinable()) return;
    stopping_.store(true, std::memory_order_relaxed);
    armed_.store(1, std::memory_order_release);
    futex_wake_one(armed_);
    thread_.join();
  }

  // The loop is about to sleep: watch the device. A system call only when not armed already.
  void arm() {
    if (!thread_.joinable()) {
      armed_.store(1, std::memory_order_release);
      thread_ = std::thread([this] { run(); });
      return;
    }
    if (armed_.exchange(1, std::memory_order_acq_rel) == 0) futex_wake_one(armed_);
  }

  std::uint64_t wakes() const { return wakes_.load(std::memory_order_relaxed); }

 private:
  void run() {
    while (!stopping_.load(std::memory_order_relaxed)) {
      if (armed_.load(std::memory_order_acquire) == 0) {
        (void)futex_wait(armed_, 0, std::chrono::milliseconds(100));
        continue;
      }
      pollfd waiting{fd_, POLLIN, 0};
      if (::poll(&waiting, 1, 100) == 1 && (waiting.revents & POLLIN) != 0) {
        armed_.store(0, std::memory_order_release);
        ring_doorbell(*bell_, nullptr);
        wakes_.fetch_add(1, std::memory_order_relaxed);
      }
    }
  }

  int fd_;
  Doorbell* bell_;
  std::atomic<std::uint32_t> armed_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint64_t> wakes_{0};
  std::thread thread_;
};

}  // namespace flotilla::drivers
