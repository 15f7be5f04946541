// A record longer than one message body travels as 1..N chunks sent back to back on one FIFO
// channel. Each chunk carries the record's sequence number (per channel, so a chunk of one record
// never joins another), its index, the count, and kPayload bytes of the record. The name fleet's
// and the file fleet's messages both travel this way, each under its own message kind.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "dataplane/message.hpp"

namespace flotilla {

struct MessageChunk {
  static constexpr std::size_t kPayload = Message::kBodyBytes - 4;
  std::uint16_t sequence;
  std::uint8_t index;
  std::uint8_t count;
  std::array<std::byte, kPayload> payload;
};
static_assert(sizeof(MessageChunk) == Message::kBodyBytes);

constexpr std::size_t chunks_for(std::size_t record_bytes) {
  return (record_bytes + MessageChunk::kPayload - 1) / MessageChunk::kPayload;
}

// Splits `record` into out[0..n) as messages of `kind` and returns n (at least 1). `out` must hold
// chunks_for(record.size()) messages, at most 255; the last chunk's tail is zero.
inline std::size_t split_into_chunks(MessageKind kind, std::uint16_t sequence,
                                     std::span<const std::byte> record, std::span<Message> out) {
  const std::size_t count = std::max<std::size_t>(1, chunks_for(record.size()));
  for (std::size_t i = 0; i < count; ++i) {
    MessageChunk chunk{};
    chunk.sequence = sequence;
    chunk.index = static_cast<std::uint8_t>(i);
    chunk.count = static_cast<std::uint8_t>(count);
    const std::size_t from = i * MessageChunk::kPayload;
    if (from < record.size()) {
      std::memcpy(chunk.payload.data(), record.data() + from,
                  std::min(MessageChunk::kPayload, record.size() - from));
    }
    out[i] = Message::make(kind, chunk);
  }
  return count;
}

// Reassembles one channel's chunks of `kind`, which arrive in order. A chunk that does not fit the
// record in progress (wrong kind, index, count or sequence) drops that record and is counted.
template <std::size_t kMaxChunks>
class ChunkReassembler {
 public:
  static_assert(kMaxChunks >= 1 && kMaxChunks <= 255);
  enum class Outcome { incomplete, complete, rejected };

  Outcome push(MessageKind kind, const Message& raw) {
    const MessageChunk chunk = raw.read<MessageChunk>();
    const bool starts = chunk.index == 0 && chunk.count >= 1 && chunk.count <= kMaxChunks;
    const bool continues = count_ != 0 && chunk.index == next_index_ && chunk.count == count_ &&
                           chunk.sequence == sequence_;
    if (raw.kind != kind || !(starts || continues)) {
      ++rejected_;
      count_ = 0;
      return Outcome::rejected;
    }
    if (starts) {
      if (count_ != 0) ++rejected_;  // the previous record never completed
      bytes_.fill(std::byte{0});
      sequence_ = chunk.sequence;
      count_ = chunk.count;
    }
    std::memcpy(bytes_.data() + chunk.index * MessageChunk::kPayload, chunk.payload.data(),
                MessageChunk::kPayload);
    next_index_ = static_cast<std::uint8_t>(chunk.index + 1);
    if (next_index_ < count_) return Outcome::incomplete;
    completed_chunks_ = count_;
    count_ = 0;
    return Outcome::complete;
  }

  // After `complete`: the record, as its chunks carried it, and zero up to kMaxChunks chunks' worth.
  std::span<const std::byte> record() const { return {bytes_.data(), completed_chunks_ * MessageChunk::kPayload}; }
  std::span<const std::byte> record_padded() const { return bytes_; }
  // A completed record its owner refused (it failed to decode) counts as rejected too.
  void reject_record() { ++rejected_; }
  std::uint64_t rejected() const { return rejected_; }
  // Drops a record in progress (its sender restarted).
  void reset() { count_ = 0; }

 private:
  std::array<std::byte, kMaxChunks * MessageChunk::kPayload> bytes_{};
  std::uint16_t sequence_ = 0;
  std::uint8_t next_index_ = 0;
  std::uint8_t count_ = 0;
  std::size_t completed_chunks_ = 0;
  std::uint64_t rejected_ = 0;
};

}  // namespace flotilla
