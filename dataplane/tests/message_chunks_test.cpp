// The runtime's chunking of records longer than one message: a round trip at every length, and
// every kind of chunk out of place dropped and counted.
#include "dataplane/message_chunks.hpp"

#include <gtest/gtest.h>

#include <array>
#include <vector>

namespace flotilla {
namespace {

constexpr auto kKind = static_cast<MessageKind>(static_cast<std::uint16_t>(MessageKind::user) + 0x70);
constexpr std::size_t kMax = 4;
using Reassembler = ChunkReassembler<kMax>;

std::vector<std::byte> record_of(std::size_t length, std::uint8_t seed) {
  std::vector<std::byte> record(length);
  for (std::size_t i = 0; i < length; ++i) record[i] = static_cast<std::byte>(seed + i * 7);
  return record;
}

TEST(MessageChunks, EveryLengthRoundTripsWithAZeroTail) {
  for (std::size_t length = 0; length <= kMax * MessageChunk::kPayload; ++length) {
    const auto record = record_of(length, static_cast<std::uint8_t>(length));
    std::array<Message, kMax> chunks;
    const std::size_t count = split_into_chunks(kKind, 9, record, chunks);
    ASSERT_EQ(count, std::max<std::size_t>(1, chunks_for(length)));
    Reassembler reassembler;
    for (std::size_t i = 0; i + 1 < count; ++i) ASSERT_EQ(reassembler.push(kKind, chunks[i]), Reassembler::Outcome::incomplete);
    ASSERT_EQ(reassembler.push(kKind, chunks[count - 1]), Reassembler::Outcome::complete);
    const auto got = reassembler.record();
    ASSERT_EQ(got.size(), count * MessageChunk::kPayload);
    for (std::size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(got[i], i < length ? record[i] : std::byte{0}) << "length " << length << " byte " << i;
    }
    EXPECT_EQ(reassembler.rejected(), 0u);
  }
}

TEST(MessageChunks, ChunksOutOfPlaceAreDroppedAndCounted) {
  const auto record = record_of(3 * MessageChunk::kPayload, 1);
  std::array<Message, kMax> chunks;
  ASSERT_EQ(split_into_chunks(kKind, 5, record, chunks), 3u);
  std::array<Message, kMax> other;
  ASSERT_EQ(split_into_chunks(kKind, 6, record, other), 3u);

  Reassembler reassembler;
  EXPECT_EQ(reassembler.push(kKind, chunks[1]), Reassembler::Outcome::rejected);  // no start
  EXPECT_EQ(reassembler.rejected(), 1u);
  ASSERT_EQ(reassembler.push(kKind, chunks[0]), Reassembler::Outcome::incomplete);
  EXPECT_EQ(reassembler.push(kKind, other[1]), Reassembler::Outcome::rejected);  // another sequence
  EXPECT_EQ(reassembler.push(kKind, chunks[2]), Reassembler::Outcome::rejected);  // the record was dropped
  Message wrong = chunks[0];
  wrong.kind = MessageKind::data;
  EXPECT_EQ(reassembler.push(kKind, wrong), Reassembler::Outcome::rejected);
  EXPECT_EQ(reassembler.rejected(), 4u);

  // A new start drops a record in progress, counted, and completes on its own.
  ASSERT_EQ(reassembler.push(kKind, chunks[0]), Reassembler::Outcome::incomplete);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(reassembler.push(kKind, other[i]), i < 2 ? Reassembler::Outcome::incomplete : Reassembler::Outcome::complete);
  }
  EXPECT_EQ(reassembler.rejected(), 5u);

  MessageChunk too_many{};
  too_many.count = kMax + 1;
  EXPECT_EQ(reassembler.push(kKind, Message::make(kKind, too_many)), Reassembler::Outcome::rejected);
  ASSERT_EQ(reassembler.push(kKind, chunks[0]), Reassembler::Outcome::incomplete);
  reassembler.reset();
  EXPECT_EQ(reassembler.push(kKind, chunks[1]), Reassembler::Outcome::rejected) << "reset drops the record";
}

}  // namespace
}  // namespace flotilla
