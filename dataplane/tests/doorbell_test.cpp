// The doorbell protocol: sleeping flag, fence, re-check, futex. The stress test runs 100,000
// sleep/wake round trips between two processes with random delays; a lost wake-up would show as a
// sleep that ended by its (long) time limit instead of a wake, and is counted, not timed.
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <new>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "dataplane/channel.hpp"
#include "dataplane/clock.hpp"
#include "dataplane/idle_waiter.hpp"
#include "dataplane/shared_region.hpp"
#include "dataplane/tests/test_support.hpp"

namespace flotilla {
namespace {

using testing::checked_message;
using testing::fork_child;
using testing::is_checked_message;
using testing::wait_child;

struct alignas(kCacheLine) PingPongSide {
  Doorbell bell_a;
  Doorbell bell_b;
  CounterBlock counters_a;
  CounterBlock counters_b;
};

constexpr std::uint32_t kCapacity = 64;

// Sleeps at once when idle, and for so long that only a wake-up can end the sleep in practice. On
// the futex, even where the CPU has WAITPKG: the tests that use it count futex calls.
WaitPolicy always_sleep() {
  WaitPolicy policy;
  policy.spin_min = std::chrono::nanoseconds(0);
  policy.spin_max = std::chrono::nanoseconds(0);
  policy.sleep_max = std::chrono::seconds(20);
  policy.allow_umwait = false;
  return policy;
}

// Waits for exactly one message on `in`, sleeping on `bell` whenever the ring is empty.
Result<Message> receive_one(RingConsumer& in, IdleWaiter& waiter) {
  Message message;
  for (;;) {
    auto got = in.recv_burst(std::span<Message>(&message, 1));
    if (!got) return got.error();
    if (got.value() == 1) {
      waiter.on_work(monotonic_ns());
      return message;
    }
    waiter.on_idle(monotonic_ns(), [&] { return in.has_input(); }, std::chrono::seconds(20));
  }
}

void spin_for(std::chrono::nanoseconds delay) {
  const auto until = MonoClock::now() + delay;
  while (MonoClock::now() < until) cpu_relax();
}

TEST(Doorbell, HundredThousandSleepWakeCyclesLoseNoWakeUp) {
  const std::uint64_t kCycles = 100'000 * testing::test_scale();
  auto region = SharedRegion::create("doorbell-test", channel_bytes(kCapacity) + sizeof(PingPongSide));
  ASSERT_TRUE(region);
  ASSERT_TRUE(format_channel(region->bytes(), kCapacity));
  auto* side = new (region->data() + channel_bytes(kCapacity)) PingPongSide{};

  // Side b echoes every message back after a random delay, sleeping whenever it has nothing.
  const pid_t echo = fork_child([&] {
    auto end = attach_channel(region->bytes(), kCapacity, ChannelSide::b, 1, &side->bell_a,
                              &side->counters_b);
    if (!end) return 2;
    IdleWaiter waiter(side->bell_b, side->counters_b, always_sleep());
    std::mt19937_64 random(99);
    for (std::uint64_t i = 0; i < kCycles; ++i) {
      auto message = receive_one(end->in, waiter);
      if (!message || !is_checked_message(message.value(), i)) return 4;
      spin_for(std::chrono::nanoseconds(random() % 20'000));
      auto sent = end->out.send_burst(std::span<const Message>(&message.value(), 1));
      if (!sent || sent.value() != 1) return 5;
    }
    return 0;
  });
  ASSERT_GT(echo, 0);

  auto end = attach_channel(region->bytes(), kCapacity, ChannelSide::a, 1, &side->bell_b,
                            &side->counters_a);
  ASSERT_TRUE(end);
  IdleWaiter waiter(side->bell_a, side->counters_a, always_sleep());
  std::mt19937_64 random(1234);
  for (std::uint64_t i = 0; i < kCycles; ++i) {
    spin_for(std::chrono::nanoseconds(random() % 20'000));
    const Message ping = checked_message(i);
    ASSERT_EQ(end->out.send_burst(std::span<const Message>(&ping, 1)).value(), 1u);
    auto pong = receive_one(end->in, waiter);
    ASSERT_TRUE(pong) << pong.error().message();
    ASSERT_TRUE(is_checked_message(pong.value(), i)) << "cycle " << i;
  }
  ASSERT_EQ(wait_child(echo), 0);

  const CounterBlock& a = side->counters_a;
  const CounterBlock& b = side->counters_b;
  EXPECT_EQ(a.read(Counter::sleep_timeouts) + b.read(Counter::sleep_timeouts), 0u)
      << "a sleeper was not woken: a lost wake-up";
  // The test must really have slept and woken across processes, many times.
  EXPECT_GT(a.read(Counter::sleeps) + b.read(Counter::sleeps), kCycles / 2);
  EXPECT_GT(a.read(Counter::futex_wakes) + b.read(Counter::futex_wakes), kCycles / 2);
  std::printf("sleeps a=%llu b=%llu, futex wakes a=%llu b=%llu, wasted wakes %llu\n",
              static_cast<unsigned long long>(a.read(Counter::sleeps)),
              static_cast<unsigned long long>(b.read(Counter::sleeps)),
              static_cast<unsigned long long>(a.read(Counter::futex_wakes)),
              static_cast<unsigned long long>(b.read(Counter::futex_wakes)),
              static_cast<unsigned long long>(a.read(Counter::wasted_wakes) +
                                              b.read(Counter::wasted_wakes)));
}

TEST(Doorbell, ProducerMakesNoSystemCallWhileConsumerIsAwake) {
  Doorbell bell;
  CounterBlock counters;
  for (int i = 0; i < 1000; ++i) ring_doorbell(bell, &counters);
  EXPECT_EQ(counters.read(Counter::futex_wakes), 0u);
  EXPECT_EQ(bell.sequence.load(), 0u);
}

TEST(Doorbell, ProducerWakesASleeperOnceAndLowersTheFlag) {
  Doorbell bell;
  CounterBlock counters;
  bell.sleeping.store(Doorbell::futex_sleep);
  ring_doorbell(bell, &counters);
  ring_doorbell(bell, &counters);  // the flag is already down: no second syscall
  EXPECT_EQ(counters.read(Counter::futex_wakes), 1u);
  EXPECT_EQ(bell.sequence.load(), 1u);
  EXPECT_EQ(bell.sleeping.load(), Doorbell::awake);
}

TEST(Doorbell, EventfdSleeperIsWokenOnlyByAProducerGivenItsEventfd) {
  Doorbell bell;
  CounterBlock counters;
  const int wake = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  ASSERT_GE(wake, 0);
  bell.sleeping.store(Doorbell::eventfd_sleep);
  // A producer without the eventfd cannot wake it, and must leave the flag up for one that can.
  ring_doorbell(bell, &counters);
  EXPECT_EQ(bell.sleeping.load(), Doorbell::eventfd_sleep);
  EXPECT_EQ(counters.read(Counter::futex_wakes), 0u);
  ring_doorbell(bell, &counters, wake);
  EXPECT_EQ(bell.sleeping.load(), Doorbell::awake);
  EXPECT_EQ(counters.read(Counter::futex_wakes), 1u);
  std::uint64_t count = 0;
  EXPECT_EQ(::read(wake, &count, sizeof(count)), static_cast<ssize_t>(sizeof(count)));
  EXPECT_EQ(count, 1u);
  ::close(wake);
}

TEST(Doorbell, FutexWaitReturnsAtOnceWhenTheWordMoved) {
  std::atomic<std::uint32_t> word{5};
  EXPECT_EQ(futex_wait(word, 4, std::chrono::seconds(10)), WaitOutcome::woken);
  EXPECT_EQ(futex_wait(word, 5, std::chrono::milliseconds(1)), WaitOutcome::timed_out);
}

// UMONITOR/UMWAIT in place of the futex: the sleeper raises the flag in UMWAIT mode, and the
// producer's store to the monitored word is the whole wake-up, with no system call on either side.
TEST(IdleWaiter, UmwaitSleeperIsWokenByTheProducersStoreAlone) {
  if (!cpu_has_waitpkg()) GTEST_SKIP() << "this CPU has no WAITPKG (UMONITOR/UMWAIT)";
  Doorbell bell;
  CounterBlock counters;
  WaitPolicy policy = always_sleep();
  policy.allow_umwait = true;
  std::atomic<bool> work{false};
  std::atomic<int> rechecks{0};
  auto ready = [&] {
    rechecks.fetch_add(1);
    return work.load();
  };
  std::thread sleeper([&] {
    IdleWaiter waiter(bell, counters, policy);
    while (!work.load()) waiter.on_idle(monotonic_ns(), ready, std::chrono::seconds(20));
  });
  // The first re-check found nothing, so the sleeper is committed to UMWAIT (or about to enter it,
  // when it sees the moved word and returns at once).
  while (rechecks.load() == 0) cpu_relax();
  EXPECT_EQ(bell.sleeping.load(), Doorbell::umwait_sleep);
  work.store(true);
  ring_doorbell(bell, &counters);
  sleeper.join();
  EXPECT_EQ(bell.sequence.load(), 1u);
  EXPECT_EQ(bell.sleeping.load(), Doorbell::awake);
  EXPECT_EQ(counters.read(Counter::sleeps), 1u);
  // A lost wake-up would end the 20 s sleep by its time limit.
  EXPECT_EQ(counters.read(Counter::sleep_timeouts), 0u);
  EXPECT_EQ(counters.read(Counter::futex_waits), 0u);
  EXPECT_EQ(counters.read(Counter::futex_wakes), 0u);
}

TEST(Doorbell, UmwaitReturnsAtOnceWhenTheWordMovedAndTimesOutOtherwise) {
  if (!cpu_has_waitpkg()) GTEST_SKIP() << "this CPU has no WAITPKG (UMONITOR/UMWAIT)";
  std::atomic<std::uint32_t> word{5};
  EXPECT_EQ(umwait_wait(word, 4, std::chrono::seconds(10)), WaitOutcome::woken);
  EXPECT_EQ(umwait_wait(word, 5, std::chrono::milliseconds(1)), WaitOutcome::timed_out);
}

TEST(IdleWaiter, RecheckBeforeSleepingCatchesLateWork) {
  Doorbell bell;
  CounterBlock counters;
  IdleWaiter waiter(bell, counters, always_sleep());
  bool checked = false;
  // ready() says work arrived between the last poll and the flag: the waiter must not sleep.
  waiter.on_idle(monotonic_ns(), [&] { return checked = true; }, std::chrono::seconds(20));
  EXPECT_TRUE(checked);
  EXPECT_EQ(counters.read(Counter::sleeps), 0u);
  EXPECT_EQ(bell.sleeping.load(), Doorbell::awake);
}

TEST(IdleWaiter, SleepIsBoundedByTheCallersDeadline) {
  Doorbell bell;
  CounterBlock counters;
  IdleWaiter waiter(bell, counters, always_sleep());
  waiter.on_idle(monotonic_ns(), [] { return false; }, std::chrono::milliseconds(1));
  EXPECT_EQ(counters.read(Counter::sleeps), 1u);
  EXPECT_EQ(counters.read(Counter::sleep_timeouts), 1u);
}

TEST(IdleWaiter, BusyPollNeverSleeps) {
  Doorbell bell;
  CounterBlock counters;
  IdleWaiter waiter(bell, counters, WaitPolicy::busy_poll());
  const std::uint64_t start = monotonic_ns();
  for (int i = 0; i < 1000; ++i) waiter.on_idle(start + 1'000'000'000ull * i, [] { return false; },
                                                std::chrono::seconds(1));
  EXPECT_EQ(counters.read(Counter::sleeps), 0u);
}

TEST(IdleWaiter, SharedCoreYieldsWhileTrafficIsWarmAndSleepsWhenCold) {
  Doorbell bell;
  CounterBlock counters;
  IdleWaiter waiter(bell, counters, WaitPolicy::shared_core());
  const auto yield_max = static_cast<std::uint64_t>(waiter.policy().yield_max.count());
  ASSERT_GT(yield_max, 0u);
  // Work arrives every 20 us: past the 2 us spin, the waiter yields its core and never sleeps.
  std::uint64_t now = 1'000'000;
  for (int i = 0; i < 100; ++i) {
    waiter.on_idle(now, [] { return false; }, std::chrono::seconds(1));
    waiter.on_idle(now + 10'000, [] { return false; }, std::chrono::seconds(1));
    now += 20'000;
    waiter.on_work(now);
  }
  EXPECT_GE(counters.read(Counter::yields), 100u);
  EXPECT_EQ(counters.read(Counter::sleeps), 0u);
  EXPECT_EQ(waiter.yield_budget_ns(), yield_max);
  // Gaps of 10 ms: yielding would only burn the core, so the waiter sleeps instead.
  for (int i = 0; i < 100; ++i) {
    waiter.on_idle(now, [] { return false; }, std::chrono::seconds(1));
    now += 10'000'000;
    waiter.on_work(now);
  }
  EXPECT_EQ(waiter.yield_budget_ns(), 0u);
  const std::uint64_t yields = counters.read(Counter::yields);
  waiter.on_idle(now, [] { return false; }, std::chrono::seconds(1));
  waiter.on_idle(now + 50'000, [] { return false; }, std::chrono::nanoseconds(0));
  EXPECT_EQ(counters.read(Counter::yields), yields);
  EXPECT_EQ(counters.read(Counter::sleeps), 1u);
}

TEST(IdleWaiter, SpinBudgetFollowsArrivalGaps) {
  Doorbell bell;
  CounterBlock counters;
  IdleWaiter waiter(bell, counters, WaitPolicy::dedicated_core());
  const auto& policy = waiter.policy();
  const auto max = static_cast<std::uint64_t>(policy.spin_max.count());
  const auto min = static_cast<std::uint64_t>(policy.spin_min.count());
  EXPECT_EQ(waiter.spin_budget_ns(), max);
  // Work keeps arriving 3 µs after the loop goes idle: traffic is hot, spin the whole budget.
  std::uint64_t now = 1'000'000;
  for (int i = 0; i < 100; ++i) {
    waiter.on_idle(now, [] { return false; }, std::chrono::seconds(1));
    now += 3'000;
    waiter.on_work(now);
  }
  EXPECT_EQ(waiter.spin_budget_ns(), max);
  // Gaps far longer than a wake-up costs: spinning would be wasted, so the budget drops to the floor.
  for (int i = 0; i < 100; ++i) {
    waiter.on_idle(now, [] { return false; }, std::chrono::nanoseconds(0));
    now += 10'000'000;
    waiter.on_work(now);
  }
  EXPECT_EQ(waiter.spin_budget_ns(), min);
  // And when the traffic comes back, the budget follows it up again.
  for (int i = 0; i < 100; ++i) {
    waiter.on_idle(now, [] { return false; }, std::chrono::seconds(1));
    now += 1'000;
    waiter.on_work(now);
  }
  EXPECT_EQ(waiter.spin_budget_ns(), max);
}

TEST(WaitPolicyConfiguration, NoConfiguredNameKeepsTheProgramsPolicy) {
  WaitPolicy program = WaitPolicy::shared_core();
  program.sleep_max = std::chrono::microseconds(300);
  for (const char* configured : {static_cast<const char*>(nullptr), ""}) {
    const Result<WaitPolicy> chosen = configured_wait_policy(program, configured);
    ASSERT_TRUE(chosen);
    EXPECT_EQ(chosen->spin_max, program.spin_max);
    EXPECT_EQ(chosen->yield_max, program.yield_max);
    EXPECT_EQ(chosen->sleep_max, program.sleep_max);
  }
}

TEST(WaitPolicyConfiguration, ANamedPolicyReplacesTheProgramsButKeepsItsShorterSleep) {
  WaitPolicy program = WaitPolicy::shared_core();
  program.sleep_max = std::chrono::microseconds(300);  // a device polled on a timer
  const Result<WaitPolicy> poll = configured_wait_policy(program, "poll");
  ASSERT_TRUE(poll);
  EXPECT_FALSE(poll->may_sleep);
  const Result<WaitPolicy> dedicated = configured_wait_policy(program, "dedicated");
  ASSERT_TRUE(dedicated);
  EXPECT_TRUE(dedicated->may_sleep);
  EXPECT_EQ(dedicated->spin_max, WaitPolicy::dedicated_core().spin_max);
  EXPECT_EQ(dedicated->yield_max, std::chrono::nanoseconds(0));
  EXPECT_EQ(dedicated->sleep_max, program.sleep_max);
  const Result<WaitPolicy> shared = configured_wait_policy(WaitPolicy::busy_poll(), "shared");
  ASSERT_TRUE(shared);
  EXPECT_TRUE(shared->may_sleep);
  EXPECT_EQ(shared->yield_max, WaitPolicy::shared_core().yield_max);
  for (std::string_view name : WaitPolicy::kNames) EXPECT_TRUE(WaitPolicy::named(name)) << name;
}

TEST(WaitPolicyConfiguration, AnUnknownNameIsAnError) {
  const Result<WaitPolicy> chosen = configured_wait_policy(WaitPolicy::shared_core(), "spin");
  ASSERT_FALSE(chosen);
  EXPECT_EQ(chosen.error().code, Errc::invalid_argument);
}

}  // namespace
}  // namespace flotilla
