// The NameServer's plumbing, client side and initiator role. The arbiter and replica roles are in
// arbiter_replica.cpp.
#include "components/name/arbitrated_commit.hpp"
#include "components/name/snapshot_stream.hpp"

#include <algorithm>

namespace flotilla::name {

NameServer::NameServer(ServerConfig config, std::vector<MemberId> members, std::uint32_t epoch)
    : config_(config),
      members_(std::move(members)),
      epoch_(epoch),
      random_state_(config.seed * 0x9e3779b97f4a7c15ull + config.self + 1),
      table_(config.table) {
  std::sort(members_.begin(), members_.end());
}

NameServer::NameServer(ServerConfig config) : NameServer(config, {}, 0) { installed_ = false; }

bool NameServer::is_member(MemberId id) const {
  return std::binary_search(members_.begin(), members_.end(), id);
}

MemberId NameServer::arbiter_for(std::string_view name) const {
  if (members_.empty()) return config_.self;
  return members_[name_id(top_component(name)) % members_.size()];
}

void NameServer::handle(const NameMessage& message, std::vector<Envelope>& out) {
  if (is_snapshot_kind(message.kind)) {
    if (installed_ || message.from == kClientSource) {
      ++counters_.stray_snapshot;
      return;
    }
    if (!joining_) joining_ = std::make_shared<SnapshotDecoder>();
    if (message.from != joining_from_) {  // a new donor (the last one died): start over
      joining_->reset();
      joining_from_ = message.from;
    }
    const auto state = joining_->feed(message);
    if (state == SnapshotDecoder::State::failed) {
      ++counters_.bad_snapshots;
      joining_->reset();  // the next stream starts clean
    } else if (state == SnapshotDecoder::State::complete) {
      const Snapshot snapshot = joining_->snapshot();
      joining_.reset();
      install(snapshot, out);
    }
    return;
  }
  if (message.kind == NameMsgKind::dump) {
    if (!well_formed(message)) {
      ++counters_.malformed;
      return;
    }
    if (!installed_) return;  // nothing to show yet; the client asks again
    for (const NameMessage& record : encode_snapshot(snapshot(), config_.self, message.client)) {
      out.push_back(Envelope{true, message.client, record});
    }
    return;
  }
  if (!installed_) {
    queued_before_install_.push_back(message);
    return;
  }
  if (!well_formed(message)) {
    ++counters_.malformed;
    return;
  }
  if (message.from != kClientSource && !is_member(message.from)) {
    ++counters_.not_member;
    return;
  }
  dispatch(message, out);
  drain_loopback(out);
}

void NameServer::dispatch(const NameMessage& message, std::vector<Envelope>& out) {
  switch (message.kind) {
    case NameMsgKind::request: return on_request(message, out);
    case NameMsgKind::lookup: return on_lookup(message, out);
    case NameMsgKind::lock_request: return on_lock_request(message, out);
    case NameMsgKind::lock_release: return on_lock_release(message, out);
    case NameMsgKind::lock_grant: return on_lock_grant(message, out);
    case NameMsgKind::lock_deny: return on_lock_deny(message);
    case NameMsgKind::prepare: return on_prepare(message, out);
    case NameMsgKind::prepare_nack: return on_prepare_nack(message, out);
    case NameMsgKind::prepare_ack:
      if (Txn* txn = find_txn(message.txn, Phase::preparing)) on_ack(*txn, message.from, out);
      return;
    case NameMsgKind::commit: return on_commit(message, out);
    case NameMsgKind::commit_ack:
      if (Txn* txn = find_txn(message.txn, Phase::committing)) on_ack(*txn, message.from, out);
      return;
    case NameMsgKind::abort: return on_abort(message, out);
    case NameMsgKind::outcome_query: return on_outcome_query(message, out);
    case NameMsgKind::outcome_reply: return on_outcome_reply(message, out);
    case NameMsgKind::reply:  // servers do not take replies; well_formed lets clients parse them
    case NameMsgKind::snapshot_entry:  // handle() takes these before dispatch
    case NameMsgKind::snapshot_group:
    case NameMsgKind::snapshot_prepared:
    case NameMsgKind::snapshot_commit:
    case NameMsgKind::snapshot_member:
    case NameMsgKind::snapshot_done:
    case NameMsgKind::dump:
    case NameMsgKind::none:
      ++counters_.malformed;
      return;
  }
}

void NameServer::drain_loopback(std::vector<Envelope>& out) {
  while (!loopback_.empty()) {
    const NameMessage message = loopback_.front();
    loopback_.pop_front();
    dispatch(message, out);
  }
  std::erase_if(txns_, [](const Txn& txn) { return txn.done; });
}

NameMessage NameServer::make(NameMsgKind kind, const TxnId& txn, std::string_view name) const {
  NameMessage message;
  message.kind = kind;
  message.txn = txn;
  set_name(message.name, name);
  return message;
}

void NameServer::send(MemberId to, NameMessage message, std::vector<Envelope>& out) {
  message.from = config_.self;
  message.epoch = epoch_;
  if (to == config_.self) {
    loopback_.push_back(message);
  } else {
    out.push_back(Envelope{false, to, message});
  }
}

void NameServer::broadcast(const NameMessage& message, std::vector<Envelope>& out) {
  for (MemberId member : members_) send(member, message, out);
}

void NameServer::tick(std::uint64_t now_ms, std::vector<Envelope>& out) {
  now_ = std::max(now_, now_ms);
  if (!installed_) return;
  for (std::size_t i = 0; i < txns_.size(); ++i) on_timeouts(txns_[i], out);
  drain_loopback(out);
}

// ---- Client side ----

void NameServer::on_request(const NameMessage& message, std::vector<Envelope>& out) {
  Txn txn;
  txn.id = TxnId{now_, ++next_request_, config_.self, 0};
  txn.change = change_of(message);
  txn.client = message.client;
  txn.cookie = message.cookie;
  txn.deadline = now_ + config_.request_deadline_ms;
  txns_.push_back(std::move(txn));
  start_attempt(txns_.back(), out);
}

void NameServer::on_lookup(const NameMessage& message, std::vector<Envelope>& out) {
  // xorshift64: a cheap, seeded source, so simulated runs repeat exactly.
  random_state_ ^= random_state_ << 13;
  random_state_ ^= random_state_ >> 7;
  random_state_ ^= random_state_ << 17;
  const LookupResult found = table_.lookup(name_of(message), now_, random_state_);
  NameMessage answer;
  answer.kind = NameMsgKind::reply;
  answer.from = config_.self;
  answer.epoch = epoch_;
  answer.status = found.status;
  answer.endpoint = found.endpoint;
  answer.version = found.version;
  answer.expires_ms = found.expires_ms;
  answer.client = message.client;
  answer.cookie = message.cookie;
  out.push_back(Envelope{true, message.client, answer});
}

void NameServer::reply(const Txn& txn, NameErrc status, std::vector<Envelope>& out) {
  NameMessage answer = make(NameMsgKind::reply, txn.id, "");
  answer.from = config_.self;
  answer.epoch = epoch_;
  answer.status = status;
  const Entry* entry = table_.find(txn.change.name);
  answer.version = (status == NameErrc::ok && entry) ? entry->version : 0;
  answer.client = txn.client;
  answer.cookie = txn.cookie;
  out.push_back(Envelope{true, txn.client, answer});
}

// ---- Initiator ----

NameServer::Txn* NameServer::find_txn(const TxnId& id, Phase phase) {
  for (Txn& txn : txns_) {
    if (!txn.done && txn.id == id && txn.phase == phase) return &txn;
  }
  return nullptr;
}

void NameServer::start_attempt(Txn& txn, std::vector<Envelope>& out) {
  txn.phase = Phase::locking;
  txn.phase_since = now_;
  txn.arbiter = arbiter_for(txn.change.name);
  send(txn.arbiter, make(NameMsgKind::lock_request, txn.id, txn.change.name), out);
}

void NameServer::retry_later(Txn& txn) {
  ++counters_.retries;
  const std::uint64_t base = config_.backoff_ms << std::min<std::uint16_t>(txn.id.attempt, 6);
  const std::uint64_t jitter = (txn.id.request * 7u + config_.self * 13u) % (config_.backoff_ms + 1);
  txn.phase = Phase::backoff;
  txn.retry_at = now_ + base + jitter;
  ++txn.id.attempt;
}

// Undoes whatever the current attempt holds: prepared slots and the arbiter's lock (or its place
// in the arbiter's queue). Members that never saw the attempt ignore both.
void NameServer::roll_back(Txn& txn, std::vector<Envelope>& out) {
  if (txn.phase == Phase::preparing) {
    broadcast(make(NameMsgKind::abort, txn.id, txn.change.name), out);
  }
  if (is_member(txn.arbiter)) {
    send(txn.arbiter, make(NameMsgKind::lock_release, txn.id, txn.change.name), out);
  }
}

void NameServer::finish(Txn& txn, NameErrc status, std::vector<Envelope>& out) {
  reply(txn, status, out);
  txn.done = true;
}

void NameServer::on_lock_grant(const NameMessage& message, std::vector<Envelope>& out) {
  Txn* txn = find_txn(message.txn, Phase::locking);
  if (!txn) {  // a grant for an attempt already given up: hand the lock back
    send(message.from, make(NameMsgKind::lock_release, message.txn, name_of(message)), out);
    return;
  }
  // The previous holder released only after every member acknowledged its commit, so this
  // replica already reflects every earlier change of the name.
  if (NameErrc status = table_.check(txn->change); status != NameErrc::ok) {
    roll_back(*txn, out);
    return finish(*txn, status, out);
  }
  txn->phase = Phase::preparing;
  txn->phase_since = now_;
  txn->awaiting = members_;
  NameMessage prepare = make(NameMsgKind::prepare, txn->id, txn->change.name);
  put_change(prepare, txn->change);
  broadcast(prepare, out);
}

void NameServer::on_lock_deny(const NameMessage& message) {
  if (Txn* txn = find_txn(message.txn, Phase::locking)) retry_later(*txn);
}

void NameServer::on_prepare_nack(const NameMessage& message, std::vector<Envelope>& out) {
  Txn* txn = find_txn(message.txn, Phase::preparing);
  if (!txn) return;
  roll_back(*txn, out);
  if (message.status == NameErrc::conflict) return retry_later(*txn);
  finish(*txn, message.status, out);
}

void NameServer::on_ack(Txn& txn, MemberId from, std::vector<Envelope>& out) {
  std::erase(txn.awaiting, from);
  if (!txn.awaiting.empty()) return;
  if (txn.phase == Phase::preparing) return decide_commit(txn, out);
  // Every member applied it: the next holder of the lock will see it everywhere.
  if (is_member(txn.arbiter)) {
    send(txn.arbiter, make(NameMsgKind::lock_release, txn.id, txn.change.name), out);
  }
  finish(txn, NameErrc::ok, out);
}

void NameServer::decide_commit(Txn& txn, std::vector<Envelope>& out) {
  txn.phase = Phase::committing;
  txn.phase_since = now_;
  txn.awaiting = members_;
  broadcast(make(NameMsgKind::commit, txn.id, txn.change.name), out);
}

void NameServer::on_timeouts(Txn& txn, std::vector<Envelope>& out) {
  if (txn.done) return;
  const bool expired = now_ >= txn.deadline;
  if (txn.phase == Phase::backoff) {
    if (now_ < txn.retry_at) return;
    if (expired) return finish(txn, NameErrc::unavailable, out);
    return start_attempt(txn, out);
  }
  if (now_ - txn.phase_since <= config_.phase_timeout_ms) return;
  ++counters_.timeouts;
  if (txn.phase == Phase::committing) {
    // The decision is made and cannot be taken back: ask the silent members again.
    txn.phase_since = now_;
    for (MemberId member : txn.awaiting) {
      send(member, make(NameMsgKind::commit, txn.id, txn.change.name), out);
    }
    return;
  }
  roll_back(txn, out);
  if (expired) return finish(txn, NameErrc::unavailable, out);
  retry_later(txn);
}

// ---- Membership ----

void NameServer::force_out(MemberId dead, std::vector<Envelope>& out) {
  if (!installed_) {
    // The copy this joiner is reading may predate the death and still list `dead` with changes
    // it prepared; only a force_out resolves those, so it is done once the copy is installed.
    forced_out_before_install_.push_back(dead);
    return;
  }
  if (!is_member(dead) || dead == config_.self) return;
  std::erase(members_, dead);
  ++epoch_;
  drop_locks_of(dead);
  grant_waiters(out);
  for (std::size_t i = 0; i < txns_.size(); ++i) {
    Txn& txn = txns_[i];
    if (txn.done) continue;
    if (txn.phase == Phase::locking && txn.arbiter == dead) {
      ++txn.id.attempt;  // the dead arbiter's answer will never come: ask the new one
      start_attempt(txn, out);
    } else if (txn.phase == Phase::preparing || txn.phase == Phase::committing) {
      if (std::find(txn.awaiting.begin(), txn.awaiting.end(), dead) != txn.awaiting.end()) {
        on_ack(txn, dead, out);  // nothing more will come from it; do not wait
      }
    }
  }
  std::erase_if(deferred_prepares_,
                [dead](const NameMessage& message) { return message.txn.initiator == dead; });
  doubt_prepared_of(dead, out);
  drain_loopback(out);
}

void NameServer::add_member(MemberId joiner, std::vector<Envelope>& out) {
  if (is_member(joiner)) return;
  members_.insert(std::upper_bound(members_.begin(), members_.end(), joiner), joiner);
  ++epoch_;
  // The donor's snapshot may predate its copy of these changes; the joiner answers a change it
  // already holds (prepared or committed) with an ack, so sending it again is harmless.
  for (Txn& txn : txns_) {
    if (txn.done || (txn.phase != Phase::preparing && txn.phase != Phase::committing)) continue;
    NameMessage prepare = make(NameMsgKind::prepare, txn.id, txn.change.name);
    put_change(prepare, txn.change);
    send(joiner, prepare, out);
    if (txn.phase == Phase::committing) {
      send(joiner, make(NameMsgKind::commit, txn.id, txn.change.name), out);
    }
    txn.awaiting.push_back(joiner);
  }
}

Snapshot NameServer::snapshot() const {
  return Snapshot{table_, prepared_, recent_commits_, members_, epoch_};
}

void NameServer::send_snapshot(MemberId joiner, std::vector<Envelope>& out) const {
  for (const NameMessage& record : encode_snapshot(snapshot(), config_.self)) {
    out.push_back(Envelope{false, joiner, record});
  }
}

void NameServer::install(const Snapshot& snapshot, std::vector<Envelope>& out) {
  table_ = snapshot.table;
  prepared_ = snapshot.prepared;
  recent_commits_.clear();
  recent_index_.clear();
  for (const TxnId& txn : snapshot.recent_commits) remember_commit(txn);
  members_ = snapshot.members;
  epoch_ = snapshot.epoch;
  installed_ = true;
  if (!is_member(config_.self)) add_member(config_.self, out);
  std::vector<MemberId> dead;
  dead.swap(forced_out_before_install_);
  for (MemberId member : dead) force_out(member, out);
  std::vector<NameMessage> queued;
  queued.swap(queued_before_install_);
  for (const NameMessage& message : queued) handle(message, out);
}

}  // namespace flotilla::name
