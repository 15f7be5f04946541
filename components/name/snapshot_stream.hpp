// A Snapshot as a run of NameMessages, so a joiner can copy the table from a live member over a
// channel (and a client can ask a server for a dump of its table). In order:
//   snapshot_entry  per table entry (name, owner, endpoint, version; weight = EntryKind),
//                   followed by one snapshot_group per member of an indirect entry;
//   snapshot_prepared per prepared change (a prepare record; cookie 1 = in doubt);
//   snapshot_commit per recently committed change;
//   snapshot_member per fleet member (version = member id);
//   snapshot_done   version = entry count, expires_ms = table digest, epoch = membership epoch.
// The receiver checks every record and, at the end, the count and the digest: a stream that
// fails any check is refused as a whole.
#pragma once

#include <cstdint>
#include <vector>

#include "components/name/arbitrated_commit.hpp"
#include "components/name/name_message.hpp"

namespace flotilla::name {

// Every record has `from` set to `from`; a dump for a client also sets `client` (else 0).
std::vector<NameMessage> encode_snapshot(const Snapshot& snapshot, MemberId from,
                                         ComponentId client = kNoComponent);

bool is_snapshot_kind(NameMsgKind kind);

class SnapshotDecoder {
 public:
  enum class State : std::uint8_t { receiving, complete, failed };

  // Feeds one record (of a snapshot kind). A bad record, or a done whose count or digest does not
  // match, moves to `failed`; records after complete or failed are ignored until reset().
  State feed(const NameMessage& message);
  State state() const { return state_; }
  // The snapshot, once complete.
  const Snapshot& snapshot() const { return snapshot_; }
  void reset();

 private:
  State fail() { return state_ = State::failed; }

  Snapshot snapshot_;
  std::string last_entry_;  // the entry snapshot_group records belong to
  State state_ = State::receiving;
};

}  // namespace flotilla::name
