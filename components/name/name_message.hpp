// The name fleet's wire format.
//
// Decision: a NameMessage is one fixed-size, trivially copyable struct carrying both names
// (name and group member, 48 bytes each) inline. It is larger than one Message body (56 bytes),
// so the transport splits it into NameChunks of 52 payload bytes, sent back to back on the same
// FIFO channel and reassembled by a ChunkAssembler per sending channel. Trailing zero bytes are not
// sent, so the names-free acks and grants take fewer chunks than a prepare. We chose this over
// "32-bit name id + separate name-string message" because it keeps each protocol step one
// self-contained record: no cross-message name table to keep consistent, no id reuse races.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "components/name/name_errors.hpp"
#include "components/name/name_path.hpp"
#include "components/name/name_table.hpp"
#include "dataplane/message.hpp"
#include "dataplane/message_chunks.hpp"

namespace flotilla::name {

using MemberId = std::uint16_t;
// The `from` of a client's request: clients are not fleet members.
inline constexpr MemberId kClientSource = 0xffff;

enum class NameMsgKind : std::uint8_t {
  none = 0,
  request = 1,        // client -> server: a change (op, names, owner, endpoint, weight)
  lookup = 2,         // client -> server: resolve name
  reply = 3,          // server -> client: status, endpoint, version, expiry
  lock_request = 4,   // initiator -> arbiter
  lock_grant = 5,     // arbiter -> initiator
  lock_deny = 6,      // arbiter -> initiator: a higher-priority change holds an overlapping lock
  lock_release = 7,   // initiator -> arbiter: also withdraws a queued request
  prepare = 8,        // initiator -> all members: the change
  prepare_ack = 9,    // member -> initiator
  prepare_nack = 10,  // member -> initiator: status says why (conflict is retried)
  commit = 11,        // initiator -> all members
  commit_ack = 12,    // member -> initiator
  abort = 13,         // initiator -> all members: forget the prepared change
  outcome_query = 14,  // member -> members: did anyone commit this orphaned change?
  outcome_reply = 15,  // status ok = committed here
  // A snapshot stream (see snapshot_stream.hpp): donor -> joiner, or server -> client for a dump.
  snapshot_entry = 16,     // name, owner, endpoint, version; weight = EntryKind
  snapshot_group = 17,     // name = the indirect entry, member + weight = one of its members
  snapshot_prepared = 18,  // a prepared change: txn + the change, status ok or in_doubt below
  snapshot_commit = 19,    // txn of a recent commit
  snapshot_member = 20,    // version = a fleet member id
  snapshot_done = 21,      // version = entry count, expires_ms = table digest, epoch
  dump = 22,               // client -> server: send me a snapshot stream of your table
};
inline constexpr std::uint8_t kLastNameMsgKind = static_cast<std::uint8_t>(NameMsgKind::dump);

// Identifies one attempt of one change. Priority ignores the attempt, so a retried change keeps
// its age and eventually becomes the oldest contender: that is what rules out livelock.
struct TxnId {
  std::uint64_t stamp_ms = 0;  // when the initiator accepted the request
  std::uint32_t request = 0;   // initiator-local sequence number
  MemberId initiator = 0;
  std::uint16_t attempt = 0;
  friend bool operator==(const TxnId&, const TxnId&) = default;
};

// Lower (stamp, initiator, request) wins.
bool higher_priority(const TxnId& a, const TxnId& b);
bool same_change(const TxnId& a, const TxnId& b);  // equal but for the attempt

struct NameMessage {
  TxnId txn;
  Endpoint endpoint;            // request / prepare: register_direct; reply: lookup answer
  std::uint64_t cookie = 0;     // the client's request number, echoed in the reply
  std::uint64_t version = 0;    // reply: version of the entry
  std::uint64_t expires_ms = 0; // reply to a lookup
  ComponentId owner = kNoComponent;
  ComponentId client = kNoComponent;  // who gets the reply
  std::uint32_t epoch = 0;            // sender's membership epoch (diagnostic)
  std::uint32_t weight = 0;
  MemberId from = 0;
  NameMsgKind kind = NameMsgKind::none;
  ChangeOp op = ChangeOp::none;
  NameErrc status = NameErrc::ok;
  std::array<std::uint8_t, 3> pad{};
  std::array<char, kMaxNameBytes> name{};    // not NUL-terminated when exactly 48 bytes long
  std::array<char, kMaxNameBytes> member{};
};
static_assert(std::is_trivially_copyable_v<NameMessage>);
static_assert(std::is_standard_layout_v<NameMessage>);

std::string_view name_of(const NameMessage& message);
std::string_view member_of(const NameMessage& message);
// Copies a validated name into a fixed field; longer input is refused by validate_name first.
void set_name(std::array<char, kMaxNameBytes>& field, std::string_view name);

// The change a request or prepare carries, and back.
Change change_of(const NameMessage& message);
void put_change(NameMessage& message, const Change& change);

// Structural check of untrusted bytes: enum ranges, names where the kind needs them, weight
// range. Membership of `from` is the server's business.
bool well_formed(const NameMessage& message);

// ---- Chunking into 64-byte channel messages ----

inline constexpr MessageKind kNameChunkKind =
    static_cast<MessageKind>(static_cast<std::uint16_t>(MessageKind::user) + 0x40);

using NameChunk = MessageChunk;  // the runtime's chunking (dataplane/message_chunks.hpp)

inline constexpr std::size_t kMaxChunks = chunks_for(sizeof(NameMessage));

// Splits `message` into out[0..n); returns n (1..kMaxChunks).
std::size_t encode_chunks(const NameMessage& message, std::uint16_t sequence,
                          std::array<Message, kMaxChunks>& out);

// Reassembles the chunks of one sending channel, which must arrive in order (channels are FIFO).
class ChunkAssembler {
 public:
  // Returns the message when `chunk` completes one. A chunk that does not fit the one in
  // progress (wrong kind, index, count or sequence) discards the partial message and is counted.
  std::optional<NameMessage> push(const Message& chunk);
  std::uint64_t rejected() const { return chunks_.rejected(); }

 private:
  ChunkReassembler<kMaxChunks> chunks_;
};

}  // namespace flotilla::name
