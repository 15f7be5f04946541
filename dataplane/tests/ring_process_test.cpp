// Rings between real processes: ten million messages with nothing lost, duplicated, reordered or
// torn; and producers SIGKILLed at random moments, after which the consumer holds a prefix of
// whole messages and a new producer incarnation carries on.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <new>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "dataplane/clock.hpp"
#include "dataplane/idle_waiter.hpp"
#include "dataplane/ring.hpp"
#include "dataplane/shared_region.hpp"
#include "dataplane/tests/test_support.hpp"

namespace flotilla {
namespace {

using testing::checked_message;
using testing::fork_child;
using testing::is_checked_message;
using testing::wait_child;

// What the two processes share besides the ring.
struct alignas(kCacheLine) SharedSide {
  Doorbell consumer_bell;
  Doorbell producer_bell;
  CounterBlock producer_counters;
  CounterBlock consumer_counters;
  alignas(kCacheLine) std::atomic<std::uint64_t> received{0};
  std::atomic<std::uint64_t> first_bad_sequence{~std::uint64_t{0}};
  std::atomic<std::uint32_t> done{0};
};

struct ProcessRing {
  explicit ProcessRing(std::uint32_t ring_capacity)
      : capacity(ring_capacity),
        region(SharedRegion::create("ring-process-test",
                                    RingLayout::bytes_for(ring_capacity) + sizeof(SharedSide))
                   .value()) {
    EXPECT_TRUE(format_ring(ring(), capacity));
    side = new (region.data() + RingLayout::bytes_for(capacity)) SharedSide{};
  }
  std::span<std::byte> ring() const { return region.bytes().subspan(0, RingLayout::bytes_for(capacity)); }

  std::uint32_t capacity;
  SharedRegion region;
  SharedSide* side = nullptr;
};

TEST(RingProcesses, TenMillionMessagesArriveWholeAndInOrder) {
  const std::uint64_t kMessages = 10'000'000 * testing::test_scale();
  ProcessRing shared(1024);
  SharedSide& side = *shared.side;

  auto consume = [&] {
    auto consumer = RingConsumer::attach(shared.ring(), 1, &side.consumer_counters);
    if (!consumer) return 2;
    IdleWaiter waiter(side.consumer_bell, side.consumer_counters, WaitPolicy::dedicated_core());
    std::vector<Message> burst(64);
    std::uint64_t expected = 0;
    while (expected < kMessages) {
      auto got = consumer->recv_burst(burst);
      if (!got) return 4;
      if (got.value() == 0) {
        waiter.on_idle(monotonic_ns(), [&] { return consumer->has_input(); },
                       std::chrono::milliseconds(10));
        continue;
      }
      waiter.on_work(monotonic_ns());
      for (std::size_t i = 0; i < got.value(); ++i, ++expected) {
        if (!is_checked_message(burst[i], expected)) {
          side.first_bad_sequence.store(expected);
          return 5;
        }
      }
      side.received.store(expected, std::memory_order_relaxed);
    }
    return 0;
  };
  const pid_t consumer_pid = fork_child([&] {
    const int code = consume();
    side.done.store(1);  // lets the producer stop waiting on a full ring if we fail early
    return code;
  });
  ASSERT_GT(consumer_pid, 0);

  auto producer = RingProducer::attach(shared.ring(), 1, &side.consumer_bell, &side.producer_counters);
  ASSERT_TRUE(producer);
  std::mt19937_64 random(42);
  std::vector<Message> batch(64);
  std::uint64_t sent = 0;
  while (sent < kMessages) {
    // Bursts of every size from 1 to 64, so every wrap position and split gets exercised.
    const std::size_t want = std::min<std::uint64_t>(1 + random() % 64, kMessages - sent);
    for (std::size_t i = 0; i < want; ++i) batch[i] = checked_message(sent + i);
    std::size_t done = 0;
    while (done < want && side.done.load(std::memory_order_relaxed) == 0) {
      auto count = producer->send_burst(std::span<const Message>(batch).subspan(done, want - done));
      ASSERT_TRUE(count) << count.error().message();
      done += count.value();
      if (count.value() == 0) cpu_relax();
    }
    if (side.done.load(std::memory_order_relaxed) != 0) break;
    sent += want;
  }
  EXPECT_EQ(wait_child(consumer_pid), 0) << "first bad sequence " << side.first_bad_sequence.load()
                                         << ", received " << side.received.load();
  EXPECT_EQ(side.received.load(), kMessages);
  EXPECT_EQ(side.producer_counters.read(Counter::messages_out), kMessages);
  EXPECT_EQ(side.consumer_counters.read(Counter::messages_in), kMessages);
}

TEST(RingProcesses, ProducerKilledAtRandomPointsLeavesWholePrefix) {
  const int kKills = 200 * static_cast<int>(testing::test_scale());
  constexpr std::uint64_t kFinalMessages = 1000;
  ProcessRing shared(256);
  SharedSide& side = *shared.side;
  auto consumer = RingConsumer::attach(shared.ring(), 1, &side.consumer_counters);
  ASSERT_TRUE(consumer);
  std::mt19937_64 random(7);
  std::vector<Message> burst(256);
  std::uint64_t expected = 0;

  auto drain = [&] {
    for (;;) {
      auto got = consumer->recv_burst(burst);
      if (!got) return ::testing::AssertionFailure() << got.error().message();
      if (got.value() == 0) return ::testing::AssertionSuccess();
      for (std::size_t i = 0; i < got.value(); ++i, ++expected) {
        if (!is_checked_message(burst[i], expected)) {
          return ::testing::AssertionFailure() << "message " << expected << " torn or out of order";
        }
      }
    }
  };

  // Each producer incarnation writes messages numbered by their ring position, in bursts of up to
  // 64, forever (or `limit` messages), so that a kill can land anywhere in a send.
  auto run_producer = [&](std::uint64_t incarnation, std::uint64_t limit) {
    return fork_child([&shared, &side, incarnation, limit] {
      auto producer = RingProducer::attach(shared.ring(), incarnation, nullptr, &side.producer_counters);
      if (!producer) return 2;
      std::mt19937_64 local(incarnation);
      std::vector<Message> batch(64);
      const std::uint64_t stop_at = producer->published() + limit;
      while (producer->published() < stop_at) {
        const std::uint64_t first = producer->published();
        const std::size_t want = std::min<std::uint64_t>(1 + local() % 64, stop_at - first);
        for (std::size_t i = 0; i < want; ++i) batch[i] = checked_message(first + i);
        auto count = producer->send_burst(std::span<const Message>(batch).subspan(0, want));
        if (!count) return 4;
        if (count.value() == 0) cpu_relax();
      }
      return 0;
    });
  };

  for (int kill = 0; kill < kKills; ++kill) {
    const pid_t pid = run_producer(kill + 1, ~std::uint64_t{0} / 2);
    ASSERT_GT(pid, 0);
    const auto deadline = MonoClock::now() + std::chrono::microseconds(random() % 2000);
    while (MonoClock::now() < deadline) ASSERT_TRUE(drain());
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    ASSERT_EQ(wait_child(pid), 128 + SIGKILL);
    ASSERT_TRUE(drain()) << "after kill " << kill;
  }
  EXPECT_GT(expected, 0u);

  // A last, well-behaved incarnation finds the ring as the dead ones left it and carries on.
  const std::uint64_t before = expected;
  const pid_t last = run_producer(kKills + 1, kFinalMessages);
  ASSERT_GT(last, 0);
  while (expected < before + kFinalMessages) ASSERT_TRUE(drain());
  EXPECT_EQ(wait_child(last), 0);
  ASSERT_TRUE(drain());
  EXPECT_EQ(expected, before + kFinalMessages);
  EXPECT_EQ(consumer->producer_incarnation(), static_cast<std::uint64_t>(kKills + 1));
  EXPECT_EQ(side.consumer_counters.read(Counter::corrupt), 0u);
}

}  // namespace
}  // namespace flotilla
