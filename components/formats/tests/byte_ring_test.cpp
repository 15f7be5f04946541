// The byte ring between two untrusting processes: data crosses the wrap intact, write-ahead bytes
// stay invisible until published, and an index the other side corrupts is caught, never followed.
#include <array>
#include <numeric>
#include <vector>

#include <gtest/gtest.h>

#include "components/formats/byte_ring.hpp"

namespace flotilla::formats {
namespace {

struct RingFixture {
  static constexpr std::size_t kCapacity = 64;
  ByteRingIndices indices;
  std::array<std::byte, kCapacity> data{};
  ByteRingProducer producer{&indices, data};
  ByteRingConsumer consumer{&indices, data};
};

std::vector<std::byte> counting_bytes(std::size_t count, std::uint8_t first) {
  std::vector<std::byte> bytes(count);
  for (std::size_t i = 0; i < count; ++i) bytes[i] = static_cast<std::byte>(first + i);
  return bytes;
}

TEST(ByteRing, CarriesBytesAcrossTheWrapInOrder) {
  RingFixture ring;
  std::uint8_t next_written = 0;
  std::uint8_t next_read = 0;
  // 37-byte writes and 23-byte reads wrap the 64-byte ring at every offset over the run.
  for (int round = 0; round < 200; ++round) {
    const auto bytes = counting_bytes(37, next_written);
    const std::size_t written = ring.producer.write(bytes);
    next_written = static_cast<std::uint8_t>(next_written + written);
    std::array<std::byte, 23> out{};
    const std::size_t read = ring.consumer.read(out);
    for (std::size_t i = 0; i < read; ++i) {
      ASSERT_EQ(out[i], static_cast<std::byte>(next_read)) << "round " << round << " byte " << i;
      ++next_read;
    }
  }
  EXPECT_FALSE(ring.producer.corrupt());
  EXPECT_FALSE(ring.consumer.corrupt());
  EXPECT_GT(ring.consumer.head(), 10 * RingFixture::kCapacity);
}

TEST(ByteRing, WriteStopsAtCapacityAndFreeSpaceFollowsTheConsumer) {
  RingFixture ring;
  EXPECT_EQ(ring.producer.write(counting_bytes(100, 0)), RingFixture::kCapacity);
  EXPECT_EQ(ring.producer.free_space(), 0u);
  EXPECT_EQ(ring.producer.write(counting_bytes(1, 0)), 0u);
  std::array<std::byte, 10> out{};
  EXPECT_EQ(ring.consumer.read(out), 10u);
  EXPECT_EQ(ring.producer.free_space(), 10u);
}

TEST(ByteRing, WriteAheadIsInvisibleUntilPublished) {
  RingFixture ring;
  const auto late = counting_bytes(8, 100);
  const auto early = counting_bytes(8, 50);
  // Out of order: bytes 8..15 first, then the hole 0..7, then publish both at once.
  ASSERT_TRUE(ring.producer.write_ahead(8, late));
  EXPECT_EQ(ring.consumer.readable(), 0u);
  ASSERT_TRUE(ring.producer.write_ahead(0, early));
  EXPECT_EQ(ring.consumer.readable(), 0u);
  ring.producer.publish(16);
  ASSERT_EQ(ring.consumer.readable(), 16u);
  std::array<std::byte, 16> out{};
  ASSERT_TRUE(ring.consumer.peek(0, out));
  EXPECT_TRUE(std::equal(early.begin(), early.end(), out.begin()));
  EXPECT_TRUE(std::equal(late.begin(), late.end(), out.begin() + 8));
}

TEST(ByteRing, WriteAheadRefusesBytesBeyondTheFreeSpace) {
  RingFixture ring;
  EXPECT_FALSE(ring.producer.write_ahead(60, counting_bytes(8, 0)));
  EXPECT_FALSE(ring.producer.write_ahead(65, {}));
  EXPECT_TRUE(ring.producer.write_ahead(56, counting_bytes(8, 0)));
}

TEST(ByteRing, PeekReadsAtAnOffsetWithoutConsuming) {
  RingFixture ring;
  ASSERT_EQ(ring.producer.write(counting_bytes(20, 0)), 20u);
  ASSERT_EQ(ring.consumer.readable(), 20u);
  std::array<std::byte, 5> out{};
  ASSERT_TRUE(ring.consumer.peek(10, out));
  EXPECT_EQ(out[0], std::byte{10});
  EXPECT_FALSE(ring.consumer.peek(16, out));  // past what was published
  ring.consumer.consume(12);
  EXPECT_EQ(ring.consumer.readable(), 8u);
  EXPECT_EQ(ring.indices.head.load(), 12u);
}

TEST(ByteRing, ConsumerCatchesATailBeyondCapacity) {
  RingFixture ring;
  ring.indices.tail.store(RingFixture::kCapacity + 1);  // the producer claims more than fits
  EXPECT_EQ(ring.consumer.readable(), 0u);
  EXPECT_TRUE(ring.consumer.corrupt());
  ring.indices.tail.store(4);  // a plausible value later does not undo it
  EXPECT_EQ(ring.consumer.readable(), 0u);
  std::array<std::byte, 4> out{};
  EXPECT_EQ(ring.consumer.read(out), 0u);
}

TEST(ByteRing, ConsumerCatchesATailGoingBackwards) {
  RingFixture ring;
  ASSERT_EQ(ring.producer.write(counting_bytes(10, 0)), 10u);
  ASSERT_EQ(ring.consumer.readable(), 10u);
  ring.indices.tail.store(5);
  EXPECT_EQ(ring.consumer.readable(), 0u);
  EXPECT_TRUE(ring.consumer.corrupt());
}

TEST(ByteRing, ProducerCatchesAHeadBeyondItsTail) {
  RingFixture ring;
  ASSERT_EQ(ring.producer.write(counting_bytes(10, 0)), 10u);
  ring.indices.head.store(11);  // consumed more than was ever published
  EXPECT_EQ(ring.producer.free_space(), 0u);
  EXPECT_TRUE(ring.producer.corrupt());
  EXPECT_EQ(ring.producer.write(counting_bytes(1, 0)), 0u);
  EXPECT_FALSE(ring.producer.write_ahead(0, counting_bytes(1, 0)));
}

TEST(ByteRing, ProducerCatchesAHeadGoingBackwards) {
  RingFixture ring;
  ASSERT_EQ(ring.producer.write(counting_bytes(10, 0)), 10u);
  std::array<std::byte, 6> out{};
  ASSERT_EQ(ring.consumer.read(out), 6u);
  ASSERT_EQ(ring.producer.free_space(), RingFixture::kCapacity - 4);
  ring.indices.head.store(2);
  EXPECT_EQ(ring.producer.free_space(), 0u);
  EXPECT_TRUE(ring.producer.corrupt());
}

TEST(ByteRing, ProducerCatchesAFillAboveCapacity) {
  ByteRingIndices indices;
  std::array<std::byte, 64> data{};
  // A producer resuming at position 1000 with the consumer's head far behind it.
  ByteRingProducer producer(&indices, data, 1000);
  indices.head.store(1000 - 65);
  EXPECT_EQ(producer.free_space(), 0u);
  EXPECT_TRUE(producer.corrupt());
}

TEST(ByteRing, StartsAtTheGivenPositionAndPublishesIt) {
  ByteRingIndices indices;
  std::array<std::byte, 64> data{};
  ByteRingProducer producer(&indices, data, 500);
  ByteRingConsumer consumer(&indices, data, 500);
  EXPECT_EQ(indices.tail.load(), 500u);
  EXPECT_EQ(indices.head.load(), 500u);
  ASSERT_EQ(producer.write(counting_bytes(3, 7)), 3u);
  std::array<std::byte, 3> out{};
  ASSERT_EQ(consumer.read(out), 3u);
  EXPECT_EQ(out[2], std::byte{9});
}

TEST(ByteRing, ASizeThatIsNotAPowerOfTwoGivesAnInvalidView) {
  ByteRingIndices indices;
  std::array<std::byte, 48> data{};
  ByteRingProducer producer(&indices, data);
  ByteRingConsumer consumer(&indices, data);
  EXPECT_FALSE(producer.valid());
  EXPECT_FALSE(consumer.valid());
  EXPECT_EQ(producer.free_space(), 0u);
  EXPECT_EQ(consumer.readable(), 0u);
}

}  // namespace
}  // namespace flotilla::formats
