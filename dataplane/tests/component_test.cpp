// The runtime's component shape: ChannelOutputs finds channels by peer through its table and
// hands buffers over with their messages; ComponentRunner feeds a component each message of each
// channel it reads, ends each burst, ticks it at its period and polls it every pass.
#include <gtest/gtest.h>

#include <utility>
#include <vector>

#include "dataplane/buffer_pool.hpp"
#include "dataplane/clock.hpp"
#include "dataplane/component.hpp"
#include "dataplane/component_loop.hpp"
#include "dataplane/tests/test_channels.hpp"

namespace flotilla {
namespace {

using testing::TestChannels;

constexpr ComponentId kSelf = 2;
constexpr ComponentId kDriver = 3;
constexpr ComponentId kUdp = 4;
constexpr ComponentId kApp = 5;
constexpr MessageKind kNumbered = MessageKind::user;

Message numbered(std::uint64_t number) { return Message::make(kNumbered, number); }

BufferPool make_pool() { return testing::test_pool(2 * TestChannels::kCapacity); }

// Records what the runner hands it.
class RecordingComponent final : public Component {
 public:
  struct Received {
    std::size_t channel;
    std::uint64_t number;
  };

  void on_message(std::size_t channel, const Message& message, std::uint64_t) override {
    received.push_back({channel, message.read<std::uint64_t>()});
  }
  void on_burst_end(std::size_t channel) override { burst_ends.push_back(channel); }
  std::uint64_t tick_period_ms() const override { return period_ms; }
  void on_tick(std::uint64_t) override { ++ticks; }
  void on_peer_restarted(ComponentId peer) override { restarted.push_back(peer); }
  bool poll(std::uint64_t) override {
    ++polls;
    return false;
  }
  std::uint64_t next_wake_ns() const override { return wake_ns; }
  bool reads(std::size_t channel) const override { return channel != ignored; }

  std::vector<Received> received;
  std::vector<std::size_t> burst_ends;
  std::vector<ComponentId> restarted;
  std::uint64_t period_ms = 0;
  std::uint64_t ticks = 0;
  std::uint64_t polls = 0;
  std::uint64_t wake_ns = UINT64_MAX;
  std::size_t ignored = SIZE_MAX;
};

struct RunnerFixture : testing::ComponentFixture {
  RunnerFixture() : ComponentFixture({{"driver-ip", kDriver}, {"ip-udp", kUdp}, {"ip-app", kApp}}, kSelf) {}
};

TEST(ChannelOutputs, FindsChannelsByNameAndByPeer) {
  BufferPool pool = make_pool();
  // Two channels to the same peer: the first, in grant order, is the one found.
  TestChannels channels({{"c", kUdp}, {"a", kDriver}, {"b", kUdp}}, pool, kSelf);
  ChannelOutputs& outputs = channels.outputs();
  EXPECT_EQ(outputs.find("a"), 1u);
  EXPECT_EQ(outputs.find("z"), ChannelOutputs::kNoChannel);
  EXPECT_EQ(outputs.channel_of(kDriver), 1u);
  EXPECT_EQ(outputs.channel_of(kUdp), 0u);
  EXPECT_EQ(outputs.channel_of(kApp), ChannelOutputs::kNoChannel);
  EXPECT_EQ(outputs.peer(2), kUdp);
  EXPECT_EQ(outputs.name(2), "b");
}

TEST(ChannelOutputs, SendsToAPeerOnItsChannel) {
  BufferPool pool = make_pool();
  TestChannels channels({{"a", kDriver}, {"b", kUdp}}, pool, kSelf);
  EXPECT_TRUE(channels.outputs().send_to(kUdp, numbered(7)));
  EXPECT_FALSE(channels.outputs().send_to(kApp, numbered(8)));  // no channel to it
  EXPECT_TRUE(channels.take_sent(0).empty());
  const auto sent = channels.take_sent(1);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].read<std::uint64_t>(), 7u);
}

TEST(ChannelOutputs, HandsTheBufferOverWithItsMessageOrKeepsItWhenTheRingIsFull) {
  BufferPool pool = make_pool();
  TestChannels channels({{"a", kDriver}}, pool, kSelf);
  ChannelOutputs& outputs = channels.outputs();
  for (std::uint64_t i = 0; i < TestChannels::kCapacity; ++i) {
    BufferHandle handle{};
    ASSERT_EQ(pool.alloc_burst(kSelf, std::span(&handle, 1)), 1u);
    ASSERT_TRUE(outputs.send_to_with_buffer(kDriver, handle, Message::make(MessageKind::buffer, handle)));
  }
  EXPECT_EQ(pool.count_owned(kDriver), TestChannels::kCapacity);
  BufferHandle kept{};
  ASSERT_EQ(pool.alloc_burst(kSelf, std::span(&kept, 1)), 1u);
  EXPECT_FALSE(outputs.send_with_buffer(0, kept, Message::make(MessageKind::buffer, kept)));
  EXPECT_EQ(pool.count_owned(kSelf), 1u) << "a refused send leaves the buffer with the sender";
  EXPECT_EQ(channels.take_sent(0).size(), TestChannels::kCapacity);
  EXPECT_FALSE(outputs.send_with_buffer(7, kept, Message::make(MessageKind::buffer, kept)));
}

TEST(ComponentRunner, FeedsEachMessageWithItsChannelAndEndsEachBurst) {
  RunnerFixture fixture;
  RecordingComponent component;
  fixture.run(component);
  ASSERT_TRUE(fixture.channels.send_from_peer(2, numbered(20)));
  ASSERT_TRUE(fixture.channels.send_from_peer(0, numbered(1)));
  ASSERT_TRUE(fixture.channels.send_from_peer(0, numbered(2)));
  EXPECT_TRUE(fixture.loop.poll_once());
  ASSERT_EQ(component.received.size(), 3u);
  EXPECT_EQ(component.received[0].channel, 0u);
  EXPECT_EQ(component.received[0].number, 1u);
  EXPECT_EQ(component.received[1].channel, 0u);
  EXPECT_EQ(component.received[1].number, 2u);
  EXPECT_EQ(component.received[2].channel, 2u);
  EXPECT_EQ(component.received[2].number, 20u);
  EXPECT_EQ(component.burst_ends, (std::vector<std::size_t>{0, 2}));
  EXPECT_EQ(component.polls, 1u);
  EXPECT_EQ(component.ticks, 0u) << "no period, no tick";
}

TEST(ComponentRunner, LeavesAChannelTheComponentReadsItselfAlone) {
  RunnerFixture fixture;
  RecordingComponent component;
  component.ignored = 1;
  fixture.run(component);
  ASSERT_TRUE(fixture.channels.send_from_peer(1, numbered(5)));
  (void)fixture.loop.poll_once();
  EXPECT_TRUE(component.received.empty());
}

TEST(ComponentRunner, TicksAtStartAndThenAtItsPeriod) {
  RunnerFixture fixture;
  RecordingComponent component;
  component.period_ms = 100;
  fixture.run(component);
  EXPECT_EQ(component.ticks, 1u);
  const std::uint64_t start_ns = fixture.loop.now_ms() * 1'000'000;
  (void)fixture.loop.poll_once(start_ns + 50'000'000);
  EXPECT_EQ(component.ticks, 1u);
  (void)fixture.loop.poll_once(start_ns + 101'000'000);
  EXPECT_EQ(component.ticks, 2u);
  (void)fixture.loop.poll_once(start_ns + 150'000'000);
  EXPECT_EQ(component.ticks, 2u);
  (void)fixture.loop.poll_once(start_ns + 202'000'000);
  EXPECT_EQ(component.ticks, 3u);
}

TEST(ComponentRunner, ArmsAWakeUpForWorkNoRingAnnounces) {
  RunnerFixture fixture;
  RecordingComponent component;
  fixture.run(component);
  (void)fixture.loop.poll_once();
  EXPECT_EQ(fixture.loop.timers().armed_count(), 0u);
  component.wake_ns = monotonic_ns() + 5'000'000;
  (void)fixture.loop.poll_once();
  EXPECT_EQ(fixture.loop.timers().armed_count(), 1u);
  component.wake_ns = UINT64_MAX;
  (void)fixture.loop.poll_once();
  EXPECT_EQ(fixture.loop.timers().armed_count(), 0u);
  EXPECT_EQ(component.polls, 3u);
}

}  // namespace
}  // namespace flotilla
