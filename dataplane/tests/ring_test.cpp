// Single-process ring and channel behaviour, including what a corrupted header or index does.
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "dataplane/channel.hpp"
#include "dataplane/ring.hpp"
#include "dataplane/shared_region.hpp"
#include "dataplane/tests/test_support.hpp"

namespace flotilla {
namespace {

using testing::checked_message;
using testing::is_checked_message;

struct RingFixture {
  explicit RingFixture(std::uint32_t ring_capacity)
      : capacity(ring_capacity),
        region(SharedRegion::create("ring-test", RingLayout::bytes_for(ring_capacity)).value()) {
    EXPECT_TRUE(format_ring(memory(), capacity));
  }
  std::span<std::byte> memory() const {
    return region.bytes().subspan(0, RingLayout::bytes_for(capacity));
  }
  RingLayout& layout() const { return *reinterpret_cast<RingLayout*>(region.data()); }

  std::uint32_t capacity;
  SharedRegion region;
  CounterBlock producer_counters;
  CounterBlock consumer_counters;
  Doorbell bell;
};

std::vector<Message> sequence_of(std::uint64_t first, std::size_t count) {
  std::vector<Message> messages;
  for (std::size_t i = 0; i < count; ++i) messages.push_back(checked_message(first + i));
  return messages;
}

TEST(Ring, DeliversInOrderAcrossManyWraps) {
  RingFixture ring(8);
  auto producer = RingProducer::attach(ring.memory(), 1, &ring.bell, &ring.producer_counters);
  auto consumer = RingConsumer::attach(ring.memory(), 1, &ring.consumer_counters);
  ASSERT_TRUE(producer && consumer);
  std::uint64_t sent = 0, received = 0;
  std::vector<Message> out(5);
  for (int round = 0; round < 100; ++round) {
    auto batch = sequence_of(sent, 1 + round % 5);
    auto count = producer->send_burst(batch);
    ASSERT_TRUE(count);
    sent += count.value();
    auto got = consumer->recv_burst(out);
    ASSERT_TRUE(got);
    for (std::size_t i = 0; i < got.value(); ++i) ASSERT_TRUE(is_checked_message(out[i], received++));
  }
  while (received < sent) {
    auto got = consumer->recv_burst(out);
    ASSERT_TRUE(got);
    ASSERT_GT(got.value(), 0u);
    for (std::size_t i = 0; i < got.value(); ++i) ASSERT_TRUE(is_checked_message(out[i], received++));
  }
  EXPECT_EQ(ring.producer_counters.read(Counter::messages_out), sent);
  EXPECT_EQ(ring.consumer_counters.read(Counter::messages_in), received);
}

TEST(Ring, FullRingTakesOnlyWhatFitsAndCountsIt) {
  RingFixture ring(4);
  auto producer = RingProducer::attach(ring.memory(), 1, nullptr, &ring.producer_counters);
  ASSERT_TRUE(producer);
  auto batch = sequence_of(0, 6);
  EXPECT_EQ(producer->send_burst(batch).value(), 4u);
  EXPECT_EQ(producer->send_burst(batch).value(), 0u);
  EXPECT_EQ(ring.producer_counters.read(Counter::ring_full), 1u);
}

TEST(Ring, RoomFollowsTheConsumerAndRefusesACorruptTail) {
  RingFixture ring(4);
  auto producer = RingProducer::attach(ring.memory(), 1, nullptr, &ring.producer_counters);
  auto consumer = RingConsumer::attach(ring.memory(), 1, nullptr);
  ASSERT_TRUE(producer && consumer);
  EXPECT_EQ(producer->room().value(), 4u);
  auto batch = sequence_of(0, 3);
  ASSERT_EQ(producer->send_burst(batch).value(), 3u);
  EXPECT_EQ(producer->room().value(), 1u);
  std::vector<Message> out(2);
  ASSERT_EQ(consumer->recv_burst(out).value(), 2u);
  EXPECT_EQ(producer->room().value(), 3u);
  ring.layout().tail.value.store(100);
  EXPECT_EQ(producer->room().error().code, Errc::corrupt_index);
  EXPECT_EQ(ring.producer_counters.read(Counter::corrupt), 1u);
}

TEST(Ring, EmptyRingGivesNothing) {
  RingFixture ring(4);
  auto consumer = RingConsumer::attach(ring.memory(), 1, nullptr);
  ASSERT_TRUE(consumer);
  std::vector<Message> out(4);
  EXPECT_EQ(consumer->recv_burst(out).value(), 0u);
  EXPECT_FALSE(consumer->has_input());
}

TEST(Ring, FormatRejectsBadCapacityAndShortMemory) {
  RingFixture ring(4);
  EXPECT_EQ(format_ring(ring.memory(), 3).error().code, Errc::invalid_argument);
  EXPECT_EQ(format_ring(ring.memory(), 0).error().code, Errc::invalid_argument);
  EXPECT_EQ(format_ring(ring.memory(), 1u << 21).error().code, Errc::invalid_argument);
  EXPECT_EQ(format_ring(ring.memory().subspan(0, 100), 4).error().code, Errc::invalid_argument);
  EXPECT_EQ(format_ring(ring.memory().subspan(8), 4).error().code, Errc::invalid_argument);
}

TEST(Ring, AttachRejectsCorruptHeader) {
  RingFixture ring(4);
  CounterBlock counters;
  ring.layout().header.magic = 0xdeadbeef;
  EXPECT_EQ(RingConsumer::attach(ring.memory(), 1, &counters).error().code, Errc::bad_layout);
  ASSERT_TRUE(format_ring(ring.memory(), 4));
  ring.layout().header.capacity = 6;  // not a power of two
  EXPECT_EQ(RingProducer::attach(ring.memory(), 1, nullptr, &counters).error().code, Errc::bad_layout);
  ring.layout().header.capacity = 1u << 16;  // larger than the memory holds
  EXPECT_EQ(RingConsumer::attach(ring.memory(), 1, &counters).error().code, Errc::bad_layout);
  ASSERT_TRUE(format_ring(ring.memory(), 4));
  ring.layout().head.value.store(1000);  // 1000 messages in a ring of 4
  EXPECT_EQ(RingConsumer::attach(ring.memory(), 1, &counters).error().code, Errc::corrupt_index);
  EXPECT_EQ(counters.read(Counter::corrupt), 4u);
}

TEST(Ring, CorruptHeadIsReportedCountedAndNeverRead) {
  RingFixture ring(8);
  auto consumer = RingConsumer::attach(ring.memory(), 1, &ring.consumer_counters);
  ASSERT_TRUE(consumer);
  std::vector<Message> out(4, checked_message(777));
  for (std::uint64_t bad : {std::uint64_t{9}, std::uint64_t{1} << 40, ~std::uint64_t{0}}) {
    ring.layout().head.value.store(bad);
    auto got = consumer->recv_burst(out);
    ASSERT_FALSE(got);
    EXPECT_EQ(got.error().code, Errc::corrupt_index);
  }
  EXPECT_EQ(ring.consumer_counters.read(Counter::corrupt), 3u);
  for (const auto& message : out) EXPECT_TRUE(is_checked_message(message, 777));  // untouched
  // Once the producer's index is sane again, the ring works again.
  ring.layout().head.value.store(0);
  EXPECT_EQ(consumer->recv_burst(out).value(), 0u);
}

TEST(Ring, CorruptTailIsReportedToTheProducer) {
  RingFixture ring(4);
  auto producer = RingProducer::attach(ring.memory(), 1, nullptr, &ring.producer_counters);
  ASSERT_TRUE(producer);
  auto batch = sequence_of(0, 4);
  ASSERT_EQ(producer->send_burst(batch).value(), 4u);
  ring.layout().tail.value.store(~std::uint64_t{0} - 3);  // "ahead" of head
  auto sent = producer->send_burst(batch);
  ASSERT_FALSE(sent);
  EXPECT_EQ(sent.error().code, Errc::corrupt_index);
  EXPECT_EQ(ring.producer_counters.read(Counter::corrupt), 1u);
}

TEST(Ring, HeaderRewrittenAfterAttachCannotMoveAccessesOutsideTheRing) {
  RingFixture ring(4);
  const std::size_t ring_end = RingLayout::bytes_for(4);
  std::memset(ring.region.data() + ring_end, 0x5a, ring.region.size() - ring_end);
  auto producer = RingProducer::attach(ring.memory(), 1, nullptr, nullptr);
  auto consumer = RingConsumer::attach(ring.memory(), 1, nullptr);
  ASSERT_TRUE(producer && consumer);
  ring.layout().header.capacity = 1u << 20;  // the attached ends keep the mask they validated
  std::vector<Message> out(4);
  for (std::uint64_t i = 0; i < 64; ++i) {
    auto one = sequence_of(i, 1);
    ASSERT_EQ(producer->send_burst(one).value(), 1u);
    ASSERT_EQ(consumer->recv_burst(out).value(), 1u);
    ASSERT_TRUE(is_checked_message(out[0], i));
  }
  for (std::size_t i = ring_end; i < ring.region.size(); ++i) {
    ASSERT_EQ(ring.region.data()[i], std::byte{0x5a}) << "write past the ring at " << i;
  }
}

TEST(Ring, UnpublishedCellsOfADeadProducerAreNeverSeen) {
  RingFixture ring(8);
  auto first = RingProducer::attach(ring.memory(), 1, nullptr, nullptr);
  auto consumer = RingConsumer::attach(ring.memory(), 1, nullptr);
  ASSERT_TRUE(first && consumer);
  auto batch = sequence_of(0, 3);
  ASSERT_EQ(first->send_burst(batch).value(), 3u);
  // A producer that died after filling cells 3..5 but before its release store of the index.
  auto* cells = reinterpret_cast<Message*>(ring.region.data() + RingLayout::cells_offset());
  for (int i = 3; i < 6; ++i) std::memset(static_cast<void*>(&cells[i]), 0xee, sizeof(Message));
  auto second = RingProducer::attach(ring.memory(), 2, nullptr, nullptr);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->published(), 3u);
  auto rest = sequence_of(3, 4);
  ASSERT_EQ(second->send_burst(rest).value(), 4u);
  std::vector<Message> out(16);
  ASSERT_EQ(consumer->recv_burst(out).value(), 7u);
  for (std::uint64_t i = 0; i < 7; ++i) EXPECT_TRUE(is_checked_message(out[i], i));
  EXPECT_EQ(consumer->producer_incarnation(), 2u);
}

TEST(Ring, RecordsEachEndsIncarnation) {
  RingFixture ring(4);
  auto producer = RingProducer::attach(ring.memory(), 7, nullptr, nullptr);
  auto consumer = RingConsumer::attach(ring.memory(), 9, nullptr);
  ASSERT_TRUE(producer && consumer);
  EXPECT_EQ(consumer->producer_incarnation(), 7u);
  EXPECT_EQ(producer->consumer_incarnation(), 9u);
}

TEST(Channel, CarriesMessagesBothWays) {
  constexpr std::uint32_t kCapacity = 16;
  auto region = SharedRegion::create("channel", channel_bytes(kCapacity));
  ASSERT_TRUE(region);
  ASSERT_TRUE(format_channel(region->bytes(), kCapacity));
  Doorbell bell_a, bell_b;
  auto a = attach_channel(region->bytes(), kCapacity, ChannelSide::a, 1, &bell_b, nullptr);
  auto b = attach_channel(region->bytes(), kCapacity, ChannelSide::b, 1, &bell_a, nullptr);
  ASSERT_TRUE(a && b);
  auto ping = sequence_of(100, 1);
  auto pong = sequence_of(200, 1);
  std::vector<Message> out(1);
  ASSERT_EQ(a->out.send_burst(ping).value(), 1u);
  ASSERT_EQ(b->in.recv_burst(out).value(), 1u);
  EXPECT_TRUE(is_checked_message(out[0], 100));
  ASSERT_EQ(b->out.send_burst(pong).value(), 1u);
  EXPECT_FALSE(b->in.has_input());
  ASSERT_EQ(a->in.recv_burst(out).value(), 1u);
  EXPECT_TRUE(is_checked_message(out[0], 200));
}

TEST(Channel, AttachRejectsWrongCapacityOrShortMemory) {
  auto region = SharedRegion::create("channel", channel_bytes(16));
  ASSERT_TRUE(region);
  ASSERT_TRUE(format_channel(region->bytes(), 16));
  EXPECT_FALSE(attach_channel(region->bytes(), 8, ChannelSide::a, 1, nullptr, nullptr));
  EXPECT_FALSE(attach_channel(region->bytes().subspan(0, 1000), 16, ChannelSide::a, 1, nullptr,
                              nullptr));
}

}  // namespace
}  // namespace flotilla
