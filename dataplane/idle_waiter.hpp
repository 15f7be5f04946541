// How a component waits when its inputs are empty: spin with `pause` for a budget that follows the
// gaps it has recently seen between arrivals, then raise the doorbell's sleeping flag, check the
// inputs once more, and block on the doorbell (UMWAIT where the CPU has WAITPKG, futex otherwise).
//
// Why the budget: on this class of machine a futex wake that crosses cores costs ~55 µs, a
// same-core one ~3 µs, and a cache-line round trip 36-230 ns. Spinning up to about one cross-core
// wake-up catches bursts that are about to arrive; spinning longer only burns the core. A component
// that shares its core must give it up almost at once, or it starves its neighbours.
#pragma once

#include <algorithm>
#include <sched.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

#include "dataplane/counters.hpp"
#include "dataplane/cpu.hpp"
#include "dataplane/doorbell.hpp"
#include "dataplane/result.hpp"

namespace flotilla {

struct WaitPolicy {
  std::chrono::nanoseconds spin_min{500};
  std::chrono::nanoseconds spin_max{50'000};
  // Bounded so that an idle component's heartbeat keeps moving and timers are not missed.
  std::chrono::nanoseconds sleep_max{std::chrono::milliseconds(10)};
  // After the spin, while traffic is warm (recent gaps shorter than this), give the core away with
  // sched_yield instead of sleeping: the component stays runnable, so a producer needs no futex
  // call and an idle vCPU does not halt (waking a halted vCPU costs ~55 us here). 0: never yield.
  std::chrono::nanoseconds yield_max{0};
  bool may_sleep = true;    // false: busy-poll, never block (a core of its own)
  bool allow_umwait = true;  // use UMWAIT when the CPU has it

  static WaitPolicy dedicated_core() { return {}; }
  static WaitPolicy shared_core() {
    WaitPolicy policy;
    policy.spin_min = std::chrono::nanoseconds(200);
    policy.spin_max = std::chrono::nanoseconds(2'000);
    policy.yield_max = std::chrono::microseconds(200);
    return policy;
  }
  static WaitPolicy busy_poll() {
    WaitPolicy policy;
    policy.may_sleep = false;
    return policy;
  }

  // The names a configuration chooses a policy by ([wait] in the supervisor's configuration):
  // "shared" (shared_core), "dedicated" (dedicated_core) and "poll" (busy_poll).
  static constexpr std::array<std::string_view, 3> kNames{"shared", "dedicated", "poll"};
  static std::optional<WaitPolicy> named(std::string_view name) {
    if (name == "shared") return shared_core();
    if (name == "dedicated") return dedicated_core();
    if (name == "poll") return busy_poll();
    return std::nullopt;
  }
};

// The environment variable through which the supervisor hands a component the name of the policy
// its configuration chose (ComponentHost::attach reads it).
inline constexpr const char* kWaitPolicyVariable = "FLOTILLA_WAIT_POLICY";

// The policy a component runs with: `program`'s own (what its binary asks for) unless the
// configuration named one (`configured`, the variable's value; null or empty: none). A program's
// shorter sleep_max is kept under a configured policy: it polls a device on that timer.
inline Result<WaitPolicy> configured_wait_policy(WaitPolicy program, const char* configured) {
  if (configured == nullptr || *configured == '\0') return program;
  std::optional<WaitPolicy> chosen = WaitPolicy::named(configured);
  if (!chosen) return Error{Errc::invalid_argument, 0, "FLOTILLA_WAIT_POLICY is not shared, dedicated or poll"};
  chosen->sleep_max = std::min(chosen->sleep_max, program.sleep_max);
  return *chosen;
}

class IdleWaiter {
 public:
  IdleWaiter(Doorbell& bell, CounterBlock& counters, WaitPolicy policy);

  // The loop found work at `now_ns`: learn from the gap that just ended.
  void on_work(std::uint64_t now_ns) {
    if (idle_since_ns_ == 0) return;
    const std::uint64_t cap =
        4 * static_cast<std::uint64_t>(std::max(policy_.spin_max, policy_.yield_max).count());
    const std::uint64_t gap = std::min(now_ns - idle_since_ns_, cap);
    average_gap_ns_ = (7 * average_gap_ns_ + gap) / 8;
    idle_since_ns_ = 0;
  }

  // The loop found no work at `now_ns`. Spins a little and returns while within the budget;
  // past it, sleeps on the doorbell for at most `max_sleep` unless `ready()` (a non-consuming check
  // of every input) says work arrived meanwhile.
  template <class Ready>
  void on_idle(std::uint64_t now_ns, Ready&& ready, std::chrono::nanoseconds max_sleep) {
    if (idle_since_ns_ == 0) idle_since_ns_ = now_ns;
    const std::uint64_t idle = now_ns - idle_since_ns_;
    if (!policy_.may_sleep || idle < spin_budget_ns()) {
      for (int i = 0; i < kPausesPerPass; ++i) cpu_relax();
      return;
    }
    if (idle < yield_budget_ns()) {
      counters_->add(Counter::yields);
      ::sched_yield();
      return;
    }
    sleep(ready, std::min(max_sleep, policy_.sleep_max));
  }

  // Current spin budget in nanoseconds. While recent gaps are shorter than a wake-up costs, spin
  // the whole budget: under load the only gaps are stalls of the producer (an interrupt, a
  // preemption), and sleeping through one of those costs both sides a system call. Once the gaps
  // grow longer than that, spinning only burns the core, so give it up almost at once.
  std::uint64_t spin_budget_ns() const {
    const auto high = static_cast<std::uint64_t>(policy_.spin_max.count());
    if (average_gap_ns_ < high) return high;
    return static_cast<std::uint64_t>(policy_.spin_min.count());
  }

  std::uint64_t yield_budget_ns() const {
    const auto yield = static_cast<std::uint64_t>(policy_.yield_max.count());
    return average_gap_ns_ < yield ? yield : 0;
  }

  const WaitPolicy& policy() const { return policy_; }

 private:
  static constexpr int kPausesPerPass = 16;

  template <class Ready>
  void sleep(Ready& ready, std::chrono::nanoseconds timeout) {
    const std::uint32_t sequence = bell_->sequence.load(std::memory_order_acquire);
    const auto mode = use_umwait_ ? Doorbell::umwait_sleep : Doorbell::futex_sleep;
    bell_->sleeping.store(mode, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with ring_doorbell's fence
    if (ready()) {
      bell_->sleeping.store(Doorbell::awake, std::memory_order_relaxed);
      return;
    }
    counters_->add(Counter::sleeps);
    WaitOutcome outcome;
    if (use_umwait_) {
      outcome = umwait_wait(bell_->sequence, sequence, timeout);
    } else {
      counters_->add(Counter::futex_waits);
      outcome = futex_wait(bell_->sequence, sequence, timeout);
    }
    bell_->sleeping.store(Doorbell::awake, std::memory_order_relaxed);
    if (outcome == WaitOutcome::timed_out) {
      counters_->add(Counter::sleep_timeouts);
    } else if (outcome == WaitOutcome::woken && !ready()) {
      counters_->add(Counter::wasted_wakes);
    }
  }

  Doorbell* bell_;
  CounterBlock* counters_;
  WaitPolicy policy_;
  bool use_umwait_;
  std::uint64_t idle_since_ns_ = 0;
  std::uint64_t average_gap_ns_;
};

}  // namespace flotilla
