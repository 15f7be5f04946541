// FsMessages over a dataplane channel end: a message goes as its chunks, all or nothing (the sender
// checks the ring has room for every chunk first, so a message is never half-sent), and comes back
// through an FsAssembler. Chunks and messages that fail the checks are counted and dropped. The
// runtime's peer_restarted control message is handed up, so the owner can resend what the dead
// incarnation never answered. A channel for FsMessages needs rings of at least kMaxFsChunks slots,
// or the longest messages could never be sent. Header-only, like the other formats here.
#pragma once

#include <array>
#include <cstdint>
#include <optional>

#include "components/formats/fs_messages.hpp"
#include "dataplane/channel.hpp"
#include "dataplane/result.hpp"

namespace flotilla::fs {

struct FsChannelStats {
  std::uint64_t messages_sent = 0;
  std::uint64_t refused_full = 0;  // send() calls that found too little room
  std::uint64_t messages_received = 0;
  std::uint64_t chunks_rejected = 0;  // out of place, or completing a malformed message
  std::uint64_t peer_restarts = 0;
};

struct FsReceived {
  enum class Kind : std::uint8_t { message, peer_restarted };
  Kind kind = Kind::message;
  FsMessage message;  // when kind == message
};

class FsChannel {
 public:
  FsChannel() = default;
  explicit FsChannel(ChannelEnd end) : end_(end) {}

  // True when sent; false when the ring lacks room for every chunk (none was sent). Errors: the
  // ring is corrupt (the peer wrote an index out of range), or too small to ever hold the message.
  Result<bool> send(const FsMessage& message) {
    std::array<Message, kMaxFsChunks> chunks;
    const std::size_t count =
        encode_chunks(message, static_cast<std::uint16_t>(sequence_ + 1), chunks);
    if (count > end_.out.capacity()) {
      return Error{Errc::truncated, 0, "fs message longer than the ring"};
    }
    auto room = end_.out.room();
    if (!room) return room.error();
    if (*room < count) {
      ++stats_.refused_full;
      return false;
    }
    auto sent = end_.out.send_burst(std::span<const Message>(chunks.data(), count));
    if (!sent) return sent.error();
    ++sequence_;
    if (*sent != count) return Error{Errc::corrupt_index, 0, "ring tail moved during a send"};
    ++stats_.messages_sent;
    return true;
  }

  // The next complete message or restart notice; nullopt when the ring holds none yet.
  Result<std::optional<FsReceived>> receive() {
    Message chunk;
    while (true) {
      auto got = end_.in.recv_burst(std::span<Message>(&chunk, 1));
      if (!got) return got.error();
      if (*got == 0) return std::optional<FsReceived>{};
      if (chunk.kind == MessageKind::peer_restarted) {
        peer_restarted();
        FsReceived notice;
        notice.kind = FsReceived::Kind::peer_restarted;
        return std::optional<FsReceived>(notice);
      }
      auto assembled = assembler_.push(chunk);
      if (!assembled) {
        ++stats_.chunks_rejected;
        continue;
      }
      if (!assembled->has_value()) continue;
      ++stats_.messages_received;
      FsReceived received;
      received.message = **assembled;
      return std::optional<FsReceived>(received);
    }
  }

  // The peer restarted, as its owner learned from elsewhere (a host's control ring): what the dead
  // incarnation left half-sent never completes.
  void peer_restarted() {
    ++stats_.peer_restarts;
    assembler_.reset();
  }

  bool has_input() const { return end_.in.has_input(); }
  const FsChannelStats& stats() const { return stats_; }
  ChannelEnd& end() { return end_; }

 private:
  ChannelEnd end_;
  std::uint16_t sequence_ = 0;
  FsAssembler assembler_;
  FsChannelStats stats_;
};

}  // namespace flotilla::fs
