// One name server of the fleet: a pure, message-driven state machine (no threads, no sockets).
//
// Arbitrated two-phase commit, after fos: every change of a name goes through that name's
// arbiter, the member picked by hash(first component) over the live members, so a reservation
// and the names beneath it share an arbiter that can see them overlap. The initiating server
//   1. asks the arbiter to lock the name (lock_request -> lock_grant | lock_deny);
//   2. checks the change against its replica, sends prepare to every member, collects acks;
//   3. sends commit to every member, collects commit acks, releases the lock, replies.
// Conflicts follow wait-die on the priority (stamp, initiator, request), lower wins: an older
// change waits for a younger lock or prepared slot; a younger one is refused, rolls back and
// retries after a backoff with its original priority, so it ages into the winner: no livelock.
//
// Membership: force_out(dead) drops the dead member's locks and queued work; a change it had
// prepared is "in doubt" and is resolved by asking the survivors: committed if any survivor
// committed it, else dropped (a commit is only sent after every member prepared, so all survivors
// hold it either way). A joiner installs a Snapshot of a live member. In this layer the snapshot is
// one in-process object; over channels it travels as a run of NameMessages from the donor
// after add_member (snapshot_stream.hpp): one per table entry, one per group member, one per
// prepared change (a prepare record), one per member and a final one carrying the count and the
// table digest, which the joiner checks before it starts serving. Until installed, a joiner queues
// what it receives and replays it afterwards.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "components/name/name_message.hpp"
#include "components/name/name_table.hpp"

namespace flotilla::name {

struct Envelope {
  bool to_client = false;  // true: `to` is a ComponentId; false: a MemberId
  std::uint32_t to = 0;
  NameMessage message;
};

struct ServerConfig {
  MemberId self = 0;
  TableConfig table;
  std::uint64_t phase_timeout_ms = 500;       // a lock or prepare round slower than this retries
  std::uint64_t request_deadline_ms = 10'000; // a change not committed by then fails: unavailable
  std::uint64_t backoff_ms = 4;               // first retry delay; doubles per attempt, up to 64x
  std::uint64_t seed = 1;                     // picks members of indirect names
};

class SnapshotDecoder;

struct ServerCounters {
  std::uint64_t malformed = 0;      // failed well_formed(): dropped
  std::uint64_t bad_snapshots = 0;  // snapshot streams refused (bad record, count or digest)
  std::uint64_t stray_snapshot = 0; // snapshot records while not joining: dropped
  std::uint64_t not_member = 0;     // from a member id not (or no longer) in the fleet: dropped
  std::uint64_t commits = 0;        // changes applied to this replica
  std::uint64_t retries = 0;        // attempts this initiator rolled back
  std::uint64_t waits = 0;          // lock or prepare requests queued behind a younger holder
  std::uint64_t timeouts = 0;
  std::uint64_t resolved_commit = 0;  // in-doubt changes committed after force_out
  std::uint64_t resolved_abort = 0;   // in-doubt changes dropped after force_out
  std::uint64_t stray_commits = 0;    // commit for a change never prepared here
};

struct PreparedChange {
  TxnId txn;
  Change change;
  bool in_doubt = false;                  // its initiator was forced out
  std::vector<MemberId> awaiting_outcome; // survivors that have not answered yet
};

struct Snapshot {
  NameTable table;
  std::map<std::string, PreparedChange, std::less<>> prepared;
  std::deque<TxnId> recent_commits;
  std::vector<MemberId> members;
  std::uint32_t epoch = 0;
};

class NameServer {
 public:
  // A founding member of a fleet with `members` (which include config.self).
  NameServer(ServerConfig config, std::vector<MemberId> members, std::uint32_t epoch = 1);
  // A joiner: it queues messages until install().
  explicit NameServer(ServerConfig config);

  void handle(const NameMessage& message, std::vector<Envelope>& out);
  void tick(std::uint64_t now_ms, std::vector<Envelope>& out);

  // On a joiner, the member is forced out once the snapshot is installed.
  void force_out(MemberId dead, std::vector<Envelope>& out);
  // Call on every live member before a snapshot is taken for the joiner: changes this server is
  // preparing or committing are sent to the joiner too, so it cannot miss one.
  void add_member(MemberId joiner, std::vector<Envelope>& out);
  Snapshot snapshot() const;
  void install(const Snapshot& snapshot, std::vector<Envelope>& out);
  // The donor's side of a join over channels: snapshot() as a stream of records (snapshot_stream.hpp)
  // to `joiner`, after add_member(joiner). A joiner feeds such records to handle() and installs
  // the snapshot once the stream checks out. A client's `dump` is answered with the same stream.
  void send_snapshot(MemberId joiner, std::vector<Envelope>& out) const;
  bool installed() const { return installed_; }

  const NameTable& table() const { return table_; }
  const ServerCounters& counters() const { return counters_; }
  const std::vector<MemberId>& members() const { return members_; }
  std::uint32_t epoch() const { return epoch_; }
  MemberId self() const { return config_.self; }
  std::size_t pending_changes() const { return txns_.size(); }
  std::size_t prepared_count() const { return prepared_.size(); }
  std::size_t locks_held() const { return locks_.size() + lock_waiters_.size(); }
  MemberId arbiter_for(std::string_view name) const;

 private:
  enum class Phase : std::uint8_t { backoff, locking, preparing, committing };
  struct Txn {
    TxnId id;
    Change change;
    ComponentId client = kNoComponent;
    std::uint64_t cookie = 0;
    Phase phase = Phase::locking;
    MemberId arbiter = 0;
    std::vector<MemberId> awaiting;
    std::uint64_t phase_since = 0;
    std::uint64_t retry_at = 0;
    std::uint64_t deadline = 0;
    bool done = false;
  };
  struct Lock {
    std::string name;
    TxnId txn;
  };

  void dispatch(const NameMessage& message, std::vector<Envelope>& out);
  void drain_loopback(std::vector<Envelope>& out);
  NameMessage make(NameMsgKind kind, const TxnId& txn, std::string_view name) const;
  void send(MemberId to, NameMessage message, std::vector<Envelope>& out);
  void broadcast(const NameMessage& message, std::vector<Envelope>& out);
  bool is_member(MemberId id) const;

  // Client-facing.
  void on_request(const NameMessage& message, std::vector<Envelope>& out);
  void on_lookup(const NameMessage& message, std::vector<Envelope>& out);
  void reply(const Txn& txn, NameErrc status, std::vector<Envelope>& out);

  // Arbiter.
  void on_lock_request(const NameMessage& message, std::vector<Envelope>& out);
  void on_lock_release(const NameMessage& message, std::vector<Envelope>& out);
  void grant_waiters(std::vector<Envelope>& out);
  void drop_locks_of(MemberId dead);

  // Initiator.
  Txn* find_txn(const TxnId& id, Phase phase);
  void start_attempt(Txn& txn, std::vector<Envelope>& out);
  void roll_back(Txn& txn, std::vector<Envelope>& out);
  void retry_later(Txn& txn);
  void decide_commit(Txn& txn, std::vector<Envelope>& out);
  void finish(Txn& txn, NameErrc status, std::vector<Envelope>& out);
  void on_ack(Txn& txn, MemberId from, std::vector<Envelope>& out);
  void on_lock_grant(const NameMessage& message, std::vector<Envelope>& out);
  void on_lock_deny(const NameMessage& message);
  void on_prepare_nack(const NameMessage& message, std::vector<Envelope>& out);
  void on_timeouts(Txn& txn, std::vector<Envelope>& out);

  // Replica.
  void on_prepare(const NameMessage& message, std::vector<Envelope>& out);
  void on_commit(const NameMessage& message, std::vector<Envelope>& out);
  void on_abort(const NameMessage& message, std::vector<Envelope>& out);
  void on_outcome_query(const NameMessage& message, std::vector<Envelope>& out);
  void on_outcome_reply(const NameMessage& message, std::vector<Envelope>& out);
  void apply_prepared(std::string_view name, std::vector<Envelope>& out);
  void drop_prepared(std::string_view name, std::vector<Envelope>& out);
  void retry_deferred(std::string_view name, std::vector<Envelope>& out);
  void remember_commit(const TxnId& txn);
  bool recently_committed(const TxnId& txn) const;
  void doubt_prepared_of(MemberId dead, std::vector<Envelope>& out);

  ServerConfig config_;
  bool installed_ = true;
  std::vector<MemberId> members_;  // sorted
  std::uint32_t epoch_ = 0;
  std::uint64_t now_ = 0;
  std::uint32_t next_request_ = 0;
  std::uint64_t random_state_;

  NameTable table_;
  std::vector<Txn> txns_;
  std::vector<Lock> locks_;
  std::vector<Lock> lock_waiters_;
  std::map<std::string, PreparedChange, std::less<>> prepared_;
  std::vector<NameMessage> deferred_prepares_;  // older changes waiting for a prepared slot
  // Changes committed here lately: answers duplicate commits and outcome queries. Bounded; an
  // outcome query comes within one round trip of a force_out, long before eviction.
  std::deque<TxnId> recent_commits_;
  std::set<std::tuple<std::uint64_t, std::uint32_t, MemberId, std::uint16_t>> recent_index_;
  std::deque<NameMessage> loopback_;  // messages to self, handled before returning
  std::vector<NameMessage> queued_before_install_;
  std::vector<MemberId> forced_out_before_install_;
  std::shared_ptr<SnapshotDecoder> joining_;  // created where SnapshotDecoder is complete
  MemberId joining_from_ = 0;                 // the donor of the stream in progress
  ServerCounters counters_;
};

}  // namespace flotilla::name
