#include <atomic>
#include <new>
#include <vector>

#include <gtest/gtest.h>

#include "dataplane/component_loop.hpp"
#include "dataplane/shared_region.hpp"
#include "dataplane/tests/test_support.hpp"

namespace flotilla {
namespace {

using testing::checked_message;
using testing::fork_child;
using testing::is_checked_message;
using testing::wait_child;

struct LoopFixture {
  static constexpr std::uint32_t kCapacity = 64;
  LoopFixture()
      : region(SharedRegion::create("loop-test", 2 * RingLayout::bytes_for(kCapacity)).value()) {
    EXPECT_TRUE(format_ring(ring(0), kCapacity));
    EXPECT_TRUE(format_ring(ring(1), kCapacity));
  }
  std::span<std::byte> ring(int which) const {
    return region.bytes().subspan(which * RingLayout::bytes_for(kCapacity),
                                  RingLayout::bytes_for(kCapacity));
  }
  // Ring `which`'s two ends, as one process holding both sees them.
  Result<RingProducer> producer(int which) { return RingProducer::attach(ring(which), 1, &bell, nullptr); }
  Result<RingConsumer> consumer(int which) { return RingConsumer::attach(ring(which), 1, &counters); }
  SharedRegion region;
  Doorbell bell;
  CounterBlock counters;
};

TEST(ComponentLoop, HandsEachBurstToItsInputsHandler) {
  LoopFixture fixture;
  auto producer_a = fixture.producer(0);
  auto producer_b = fixture.producer(1);
  auto consumer_a = fixture.consumer(0);
  auto consumer_b = fixture.consumer(1);
  ASSERT_TRUE(producer_a && producer_b && consumer_a && consumer_b);
  ComponentLoop loop(fixture.bell, fixture.counters, WaitPolicy::busy_poll());
  std::uint64_t next_a = 0, next_b = 1000;
  bool in_order = true;
  ASSERT_TRUE(loop.add_input(*consumer_a, [&](std::span<const Message> burst) {
    for (const auto& message : burst) in_order &= is_checked_message(message, next_a++);
  }));
  ASSERT_TRUE(loop.add_input(*consumer_b, [&](std::span<const Message> burst) {
    for (const auto& message : burst) in_order &= is_checked_message(message, next_b++);
  }));
  for (std::uint64_t i = 0; i < 40; ++i) {
    const Message a = checked_message(i), b = checked_message(1000 + i);
    ASSERT_EQ(producer_a->send_burst(std::span(&a, 1)).value(), 1u);
    ASSERT_EQ(producer_b->send_burst(std::span(&b, 1)).value(), 1u);
  }
  EXPECT_TRUE(loop.poll_once());
  EXPECT_TRUE(loop.poll_once());  // 40 messages: a 32-message burst, then the rest
  EXPECT_FALSE(loop.poll_once());
  EXPECT_TRUE(in_order);
  EXPECT_EQ(next_a, 40u);
  EXPECT_EQ(next_b, 1040u);
  EXPECT_EQ(fixture.counters.read(Counter::heartbeat), 3u);
  EXPECT_EQ(fixture.counters.read(Counter::messages_in), 80u);
}

// The supervisor's notice and a peer's message on different rings: the notice was sent first (a
// seat taken back and leased again, then the new holder's first request), and both arrive while the
// loop is between its inputs. The notice is handled first all the same.
TEST(ComponentLoop, HandlesTheControlRingBeforeABurstSentAfterIt) {
  SharedRegion region = SharedRegion::create("loop-control-test", 3 * RingLayout::bytes_for(64)).value();
  const auto ring = [&](int which) { return region.bytes().subspan(which * RingLayout::bytes_for(64), RingLayout::bytes_for(64)); };
  Doorbell bell;
  CounterBlock counters;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(format_ring(ring(i), 64));
  auto producer_a = RingProducer::attach(ring(0), 1, &bell, nullptr);
  auto producer_b = RingProducer::attach(ring(1), 1, &bell, nullptr);
  auto producer_control = RingProducer::attach(ring(2), 1, &bell, nullptr);
  auto consumer_a = RingConsumer::attach(ring(0), 1, &counters);
  auto consumer_b = RingConsumer::attach(ring(1), 1, &counters);
  auto consumer_control = RingConsumer::attach(ring(2), 1, &counters);
  ASSERT_TRUE(producer_a && producer_b && producer_control && consumer_a && consumer_b && consumer_control);
  ComponentLoop loop(bell, counters, WaitPolicy::busy_poll());
  std::vector<std::uint64_t> handled;
  ASSERT_TRUE(loop.set_control_input(*consumer_control, [&](std::span<const Message> burst) {
    for (const auto& message : burst) handled.push_back(message.read<testing::CheckedBody>().sequence);
  }));
  EXPECT_EQ(loop.set_control_input(*consumer_control, [](std::span<const Message>) {}).error().code,
            Errc::invalid_argument);
  ASSERT_TRUE(loop.add_input(*consumer_a, [&](std::span<const Message>) {
    const Message notice = checked_message(500), request = checked_message(1000);
    ASSERT_EQ(producer_control->send_burst(std::span(&notice, 1)).value(), 1u);
    ASSERT_EQ(producer_b->send_burst(std::span(&request, 1)).value(), 1u);
  }));
  ASSERT_TRUE(loop.add_input(*consumer_b, [&](std::span<const Message> burst) {
    for (const auto& message : burst) handled.push_back(message.read<testing::CheckedBody>().sequence);
  }));
  const Message wake = checked_message(1);
  ASSERT_EQ(producer_a->send_burst(std::span(&wake, 1)).value(), 1u);
  EXPECT_TRUE(loop.poll_once());
  EXPECT_EQ(handled, (std::vector<std::uint64_t>{500, 1000}));
}

// A channel to a seat no program holds is looked at every kIdlePassInterval passes only; what it
// finds there makes the input busy again, so nothing waits for a notice that may have been lost.
TEST(ComponentLoop, IdleInputsAreLookedAtRarelyAndWakeOnInput) {
  LoopFixture fixture;
  auto producer_busy = fixture.producer(0);
  auto producer_idle = fixture.producer(1);
  auto consumer_busy = fixture.consumer(0);
  auto consumer_idle = fixture.consumer(1);
  ASSERT_TRUE(producer_busy && producer_idle && consumer_busy && consumer_idle);
  ComponentLoop loop(fixture.bell, fixture.counters, WaitPolicy::busy_poll());
  int busy_handled = 0, idle_handled = 0;
  ASSERT_TRUE(loop.add_input(*consumer_busy, [&](std::span<const Message> burst) { busy_handled += static_cast<int>(burst.size()); }));
  ASSERT_TRUE(loop.add_input(*consumer_idle, [&](std::span<const Message> burst) { idle_handled += static_cast<int>(burst.size()); }));
  loop.set_input_idle(*consumer_idle, true);
  const Message message = checked_message(1);
  ASSERT_EQ(producer_idle->send_burst(std::span(&message, 1)).value(), 1u);
  std::uint64_t passes = 0;
  while (idle_handled == 0 && passes < 2 * ComponentLoop::kIdlePassInterval) {
    ASSERT_EQ(producer_busy->send_burst(std::span(&message, 1)).value(), 1u);
    EXPECT_TRUE(loop.poll_once());
    ++passes;
  }
  EXPECT_EQ(idle_handled, 1);
  EXPECT_EQ(passes, ComponentLoop::kIdlePassInterval);  // not before its turn
  EXPECT_EQ(busy_handled, static_cast<int>(passes));    // the busy one every pass
  // Busy again: the next message is handled on the next pass.
  ASSERT_EQ(producer_idle->send_burst(std::span(&message, 1)).value(), 1u);
  EXPECT_TRUE(loop.poll_once());
  EXPECT_EQ(idle_handled, 2);
  // A notice that the seat is held again does the same at once.
  loop.set_input_idle(*consumer_idle, true);
  loop.set_input_idle(*consumer_idle, false);
  ASSERT_EQ(producer_idle->send_burst(std::span(&message, 1)).value(), 1u);
  EXPECT_TRUE(loop.poll_once());
  EXPECT_EQ(idle_handled, 3);
}

TEST(ComponentLoop, RefusesInputsBeyondItsLimitOrWithoutHandler) {
  LoopFixture fixture;
  auto consumer = RingConsumer::attach(fixture.ring(0), 1, nullptr);
  ASSERT_TRUE(consumer);
  ComponentLoop loop(fixture.bell, fixture.counters, WaitPolicy::busy_poll());
  EXPECT_EQ(loop.add_input(*consumer, nullptr).error().code, Errc::invalid_argument);
  for (std::size_t i = 0; i < ComponentLoop::kMaxInputs; ++i) {
    ASSERT_TRUE(loop.add_input(*consumer, [](std::span<const Message>) {}));
  }
  EXPECT_EQ(loop.add_input(*consumer, [](std::span<const Message>) {}).error().code,
            Errc::exhausted);
}

TEST(ComponentLoop, PollersRunEveryPassAndCountAsWork) {
  LoopFixture fixture;
  ComponentLoop loop(fixture.bell, fixture.counters, WaitPolicy::busy_poll());
  int backlog = 3;
  ASSERT_TRUE(loop.add_poller([&] { return backlog > 0 && backlog-- > 0; }));
  EXPECT_EQ(loop.add_poller(nullptr).error().code, Errc::invalid_argument);
  EXPECT_TRUE(loop.poll_once());
  EXPECT_TRUE(loop.poll_once());
  EXPECT_TRUE(loop.poll_once());
  EXPECT_FALSE(loop.poll_once());
  EXPECT_EQ(backlog, 0);
}

TEST(ComponentLoop, CorruptInputIsSetAsideAndCountedOnce) {
  LoopFixture fixture;
  auto consumer = RingConsumer::attach(fixture.ring(0), 1, &fixture.counters);
  ASSERT_TRUE(consumer);
  ComponentLoop loop(fixture.bell, fixture.counters, WaitPolicy::busy_poll());
  int calls = 0;
  ASSERT_TRUE(loop.add_input(*consumer, [&](std::span<const Message>) { ++calls; }));
  reinterpret_cast<RingLayout*>(fixture.ring(0).data())->head.value.store(1u << 30);
  for (int i = 0; i < 10; ++i) loop.poll_once();
  EXPECT_TRUE(loop.input_faulted(0));
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(fixture.counters.read(Counter::corrupt), 1u);
}

TEST(ComponentLoop, TimersFireAndCanStopTheLoop) {
  LoopFixture fixture;
  ComponentLoop loop(fixture.bell, fixture.counters, WaitPolicy::dedicated_core());
  int ticks = 0;
  Timer tick([&](Timer& self) {
    if (++ticks == 5) {
      loop.stop();
    } else {
      loop.timers().arm(self, loop.now_ms() + 2);
    }
  });
  loop.timers().arm(tick, loop.now_ms() + 2);
  loop.run();  // returns only through the timer's stop()
  EXPECT_EQ(ticks, 5);
  EXPECT_EQ(fixture.counters.read(Counter::timers_fired), 5u);
}

TEST(ComponentLoop, WakeAtKeepsATimerOnTheDeadlinesTick) {
  LoopFixture fixture;
  ComponentLoop loop(fixture.bell, fixture.counters, WaitPolicy::busy_poll());
  int fired = 0;
  Timer timer([&](Timer&) { ++fired; });
  loop.wake_at(timer, 5'000'000'000);  // 5 s: the tick after it, 5001 ms
  ASSERT_TRUE(timer.armed());
  EXPECT_EQ(timer.expires_ms(), 5001u);
  loop.wake_at(timer, 5'000'400'000);  // same tick: nothing moves
  EXPECT_EQ(timer.expires_ms(), 5001u);
  loop.wake_at(timer, 3'000'000'000);  // earlier: re-armed
  EXPECT_EQ(timer.expires_ms(), 3001u);
  loop.wake_at(timer, UINT64_MAX);  // nothing due: disarmed
  EXPECT_FALSE(timer.armed());
  EXPECT_EQ(loop.timers().armed_count(), 0u);
  // A deadline already past fires on the next pass that moves the clock on.
  loop.wake_at(timer, 1'000'000);
  (void)loop.poll_once(monotonic_ns() + 2'000'000);
  EXPECT_EQ(fired, 1);
}

// A sleeping loop in another process is woken by a producer's doorbell and serves every message.
TEST(ComponentLoop, SleepingLoopWakesForEveryMessage) {
  LoopFixture fixture;
  auto shared = SharedRegion::create("loop-test-side", 4096);
  ASSERT_TRUE(shared);
  struct Side {
    Doorbell bell;
    CounterBlock counters;
    std::atomic<std::uint64_t> served{0};
  };
  auto* side = new (shared->data()) Side{};
  constexpr std::uint64_t kMessages = 2000;
  const pid_t server = fork_child([&] {
    auto consumer = RingConsumer::attach(fixture.ring(0), 1, &side->counters);
    if (!consumer) return 2;
    WaitPolicy policy = WaitPolicy::shared_core();
    policy.allow_umwait = false;  // the test counts futex wake-ups
    ComponentLoop loop(side->bell, side->counters, policy);
    std::uint64_t expected = 0;
    bool ok = true;
    if (!loop.add_input(*consumer, [&](std::span<const Message> burst) {
          for (const auto& message : burst) ok &= is_checked_message(message, expected++);
          side->served.store(expected);
          if (expected == kMessages) loop.stop();
        })) {
      return 3;
    }
    loop.run();
    return ok ? 0 : 4;
  });
  ASSERT_GT(server, 0);
  auto producer = RingProducer::attach(fixture.ring(0), 1, &side->bell, &fixture.counters);
  ASSERT_TRUE(producer);
  for (std::uint64_t i = 0; i < kMessages; ++i) {
    const Message message = checked_message(i);
    while (producer->send_burst(std::span(&message, 1)).value() == 0) cpu_relax();
    // Pace the sender so the server really goes to sleep between some of the messages.
    if (i % 100 == 0) {
      while (side->served.load() <= i) cpu_relax();
      while (side->bell.sleeping.load() == Doorbell::awake &&
             side->counters.read(Counter::sleeps) == 0) {
        cpu_relax();
      }
    }
  }
  EXPECT_EQ(wait_child(server), 0);
  EXPECT_EQ(side->served.load(), kMessages);
  EXPECT_GT(side->counters.read(Counter::sleeps), 0u);
  EXPECT_GT(fixture.counters.read(Counter::futex_wakes), 0u);
}

}  // namespace
}  // namespace flotilla
