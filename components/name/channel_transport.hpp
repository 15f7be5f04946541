// The name fleet over Flotilla channels.
//
// A NameMessage is bigger than one 64-byte Message, so it travels as 2..kMaxChunks NameChunks
// (see name_message.hpp). Sending is all or nothing: the sender first checks that the ring has
// room for every chunk of the message and, if not, sends none of them and says so, so a message
// is never half-sent and the caller can keep it and try again later. The room check reads the
// consumer's published index straight from the ring header (RingProducer does not expose it);
// that index comes from another process, so a value out of range is reported as corrupt.
//
// Receiving feeds every Message of the channel, in order, to the channel's own ChunkAssembler.
// Chunks the assembler refuses (wrong kind, index, count or sequence) are counted and dropped;
// a completed message that fails well_formed() is counted and dropped too, so what comes out of
// receive() has passed the structural checks. Membership of the sender is the server's business.
//
// ServerPump runs one NameServer over a set of NameChannels: it delivers what arrives, routes
// each outgoing Envelope to the channel of its member or client, keeps a per-channel backlog
// for messages that found their ring full, and ticks the server's clock. A channel speaks for one
// peer, so a message whose sender field names anyone else is dropped before the server sees it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>
#include <vector>

#include "components/name/arbitrated_commit.hpp"
#include "components/name/name_message.hpp"
#include "dataplane/channel.hpp"
#include "dataplane/result.hpp"

namespace flotilla::name {

enum class SendOutcome : std::uint8_t {
  sent,       // every chunk is in the ring
  ring_full,  // the ring lacked room for every chunk; none was sent
};

struct TransportStats {
  std::uint64_t messages_sent = 0;
  std::uint64_t chunks_sent = 0;
  std::uint64_t refused_full = 0;        // send() calls that found too little room
  std::uint64_t messages_received = 0;   // complete and well formed
  std::uint64_t chunks_received = 0;
  std::uint64_t chunks_rejected = 0;     // refused by the ChunkAssembler
  std::uint64_t messages_malformed = 0;  // reassembled but failed well_formed()
};

// One end of a channel carrying NameMessages: the ring pair plus the per-channel chunk sequence
// and reassembly state.
class NameChannel {
 public:
  // Attaches like attach_channel() and remembers where this end's producer ring lies, for the
  // room check.
  static Result<NameChannel> attach(std::span<std::byte> memory, std::uint32_t capacity,
                                    ChannelSide side, std::uint64_t incarnation,
                                    Doorbell* peer_bell, CounterBlock* counters);

  // Wraps a channel end some other code attached (a supervised component's ComponentHost).
  static NameChannel wrap(ChannelEnd end) { return NameChannel(end); }

  NameChannel() = default;

  // All or nothing. An error means the ring is corrupt (the peer wrote an index out of range,
  // or moved it backwards between the room check and the send).
  Result<SendOutcome> send(const NameMessage& message);

  // Drains up to `max_chunks` chunks and appends every message they complete to `out`.
  // Returns how many messages were appended.
  Result<std::size_t> receive(std::vector<NameMessage>& out, std::size_t max_chunks = 64);

  // Hands one received Message to the assembler (receive() does this for each chunk). Returns
  // the message it completes, if any, after the well_formed() check.
  std::optional<NameMessage> feed(const Message& chunk);

  bool has_input() const { return end_.in.has_input(); }
  const TransportStats& stats() const { return stats_; }
  ChannelEnd& end() { return end_; }

 private:
  explicit NameChannel(ChannelEnd end) : end_(end) {}

  ChannelEnd end_;
  std::uint16_t sequence_ = 0;
  ChunkAssembler assembler_;
  TransportStats stats_;
};

class ServerPump {
 public:
  explicit ServerPump(NameServer& server) : server_(&server) {}

  // Channels are not owned and must outlive the pump.
  void add_member(MemberId member, NameChannel& channel);
  void add_client(ComponentId client, NameChannel& channel);

  // One pass: receive from every channel and hand the messages to the server, tick it with
  // `now_ms`, route what it sends, and retry the backlog. Returns the messages handled.
  Result<std::size_t> poll(std::uint64_t now_ms);

  // Drops what `member`'s channel holds now, unread: a member that comes back is a new
  // incarnation, and what is left there was written by the dead one. Returns the messages dropped.
  Result<std::size_t> discard_input(MemberId member);

  // Routes envelopes the caller got from the server outside poll() (membership changes, say).
  Status submit(std::vector<Envelope>& out) { return route(out); }

  bool has_input() const;
  std::size_t backlog() const;
  // Envelopes addressed to a member or client with no channel here: dropped.
  std::uint64_t unroutable() const { return unroutable_; }
  // Messages whose `from` (or, from a client, `client`) is not the peer of their channel: dropped.
  std::uint64_t spoofed() const { return spoofed_; }

 private:
  struct Link {
    bool client = false;
    std::uint32_t id = 0;
    NameChannel* channel = nullptr;
    std::deque<NameMessage> backlog;
  };

  Link* find(bool client, std::uint32_t id);
  Status route(std::vector<Envelope>& out);
  Status flush(Link& link);

  NameServer* server_;
  std::vector<Link> links_;
  std::vector<NameMessage> received_;
  std::vector<Envelope> out_;
  std::uint64_t last_tick_ms_ = 0;
  std::uint64_t unroutable_ = 0;
  std::uint64_t spoofed_ = 0;
};

}  // namespace flotilla::name
