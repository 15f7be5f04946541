// The NameServer's arbiter role (locks on names) and replica role (prepared slots, commits,
// resolving changes whose initiator was forced out).
#include <algorithm>

#include "components/name/arbitrated_commit.hpp"

namespace flotilla::name {
namespace {

constexpr std::size_t kRecentCommits = 4096;

auto key_of(const TxnId& txn) {
  return std::make_tuple(txn.stamp_ms, txn.request, txn.initiator, txn.attempt);
}

}  // namespace

// ---- Arbiter ----

void NameServer::on_lock_request(const NameMessage& message, std::vector<Envelope>& out) {
  const std::string_view name = name_of(message);
  bool conflict = false;
  bool older_than_all = true;
  for (const Lock& lock : locks_) {
    if (lock.txn == message.txn) {  // a repeated request: answer it again
      return send(message.from, make(NameMsgKind::lock_grant, message.txn, name), out);
    }
    if (names_overlap(lock.name, name)) {
      conflict = true;
      older_than_all = older_than_all && higher_priority(message.txn, lock.txn);
    }
  }
  if (!conflict) {
    locks_.push_back(Lock{std::string(name), message.txn});
    return send(message.from, make(NameMsgKind::lock_grant, message.txn, name), out);
  }
  if (older_than_all) {  // wait-die: the older change waits for the younger holder to finish
    ++counters_.waits;
    lock_waiters_.push_back(Lock{std::string(name), message.txn});
    return;
  }
  send(message.from, make(NameMsgKind::lock_deny, message.txn, name), out);
}

void NameServer::on_lock_release(const NameMessage& message, std::vector<Envelope>& out) {
  const auto released = [&](const Lock& lock) { return lock.txn == message.txn; };
  std::erase_if(locks_, released);
  std::erase_if(lock_waiters_, released);
  grant_waiters(out);
}

// Oldest first: a waiter whose names are free gets the lock; one that now overlaps an older
// holder is refused (it would otherwise wait on an older change, which wait-die forbids).
void NameServer::grant_waiters(std::vector<Envelope>& out) {
  std::sort(lock_waiters_.begin(), lock_waiters_.end(),
            [](const Lock& a, const Lock& b) { return higher_priority(a.txn, b.txn); });
  std::vector<Lock> still_waiting;
  for (Lock& waiter : lock_waiters_) {
    bool blocked = false;
    bool older_than_all = true;
    for (const Lock& lock : locks_) {
      if (!names_overlap(lock.name, waiter.name)) continue;
      blocked = true;
      older_than_all = older_than_all && higher_priority(waiter.txn, lock.txn);
    }
    const MemberId to = waiter.txn.initiator;
    if (!blocked) {
      send(to, make(NameMsgKind::lock_grant, waiter.txn, waiter.name), out);
      locks_.push_back(std::move(waiter));
    } else if (older_than_all) {
      still_waiting.push_back(std::move(waiter));
    } else {
      send(to, make(NameMsgKind::lock_deny, waiter.txn, waiter.name), out);
    }
  }
  lock_waiters_.swap(still_waiting);
}

void NameServer::drop_locks_of(MemberId dead) {
  const auto held_by_dead = [dead](const Lock& lock) { return lock.txn.initiator == dead; };
  std::erase_if(locks_, held_by_dead);
  std::erase_if(lock_waiters_, held_by_dead);
}

// ---- Replica ----

void NameServer::on_prepare(const NameMessage& message, std::vector<Envelope>& out) {
  const std::string_view name = name_of(message);
  NameMessage answer = make(NameMsgKind::prepare_ack, message.txn, "");
  if (recently_committed(message.txn)) return send(message.from, answer, out);  // a joiner's copy
  auto slot = prepared_.find(name);
  if (slot != prepared_.end() && slot->second.txn != message.txn) {
    // Only after an arbiter change can two changes of one name reach the prepare phase together.
    if (higher_priority(message.txn, slot->second.txn)) {
      ++counters_.waits;
      deferred_prepares_.push_back(message);
      return;
    }
    answer.kind = NameMsgKind::prepare_nack;
    answer.status = NameErrc::conflict;
    return send(message.from, answer, out);
  }
  if (slot == prepared_.end()) {
    Change change = change_of(message);
    if (NameErrc status = table_.check(change); status != NameErrc::ok) {
      answer.kind = NameMsgKind::prepare_nack;
      answer.status = status;
      return send(message.from, answer, out);
    }
    prepared_.emplace(std::string(name), PreparedChange{message.txn, std::move(change), false, {}});
  }
  send(message.from, answer, out);
}

void NameServer::on_commit(const NameMessage& message, std::vector<Envelope>& out) {
  auto slot = prepared_.find(name_of(message));
  if (slot != prepared_.end() && slot->second.txn == message.txn) {
    apply_prepared(name_of(message), out);
  } else if (!recently_committed(message.txn)) {
    ++counters_.stray_commits;  // nothing to apply; acknowledging keeps the initiator moving
  }
  send(message.from, make(NameMsgKind::commit_ack, message.txn, ""), out);
}

void NameServer::on_abort(const NameMessage& message, std::vector<Envelope>& out) {
  std::erase_if(deferred_prepares_,
                [&](const NameMessage& waiting) { return waiting.txn == message.txn; });
  auto slot = prepared_.find(name_of(message));
  if (slot != prepared_.end() && slot->second.txn == message.txn) {
    drop_prepared(name_of(message), out);
  }
}

void NameServer::apply_prepared(std::string_view name, std::vector<Envelope>& out) {
  auto slot = prepared_.find(name);
  // Cannot be refused: the check passed at prepare and the slot kept every other change out.
  if (table_.apply(slot->second.change) == NameErrc::ok) ++counters_.commits;
  remember_commit(slot->second.txn);
  prepared_.erase(slot);
  retry_deferred(name, out);
}

void NameServer::drop_prepared(std::string_view name, std::vector<Envelope>& out) {
  prepared_.erase(prepared_.find(name));
  retry_deferred(name, out);
}

void NameServer::retry_deferred(std::string_view name, std::vector<Envelope>& out) {
  std::vector<NameMessage> waiting;
  std::erase_if(deferred_prepares_, [&](const NameMessage& message) {
    if (name_of(message) != name) return false;
    waiting.push_back(message);
    return true;
  });
  std::sort(waiting.begin(), waiting.end(), [](const NameMessage& a, const NameMessage& b) {
    return higher_priority(a.txn, b.txn);
  });
  for (const NameMessage& message : waiting) on_prepare(message, out);
}

void NameServer::remember_commit(const TxnId& txn) {
  recent_commits_.push_back(txn);
  recent_index_.insert(key_of(txn));
  if (recent_commits_.size() > kRecentCommits) {
    recent_index_.erase(key_of(recent_commits_.front()));
    recent_commits_.pop_front();
  }
}

bool NameServer::recently_committed(const TxnId& txn) const {
  return recent_index_.contains(key_of(txn));
}

// The initiator died holding prepared changes here. Commit was sent only after every member had
// prepared, so if any survivor committed, every survivor holds the change: ask them all.
void NameServer::doubt_prepared_of(MemberId dead, std::vector<Envelope>& out) {
  std::vector<std::string> settled;
  for (auto& [name, prepared] : prepared_) {
    if (prepared.txn.initiator == dead && !prepared.in_doubt) {
      prepared.in_doubt = true;
      for (MemberId member : members_) {
        if (member == config_.self) continue;
        prepared.awaiting_outcome.push_back(member);
        send(member, make(NameMsgKind::outcome_query, prepared.txn, name), out);
      }
    } else if (prepared.in_doubt) {
      std::erase(prepared.awaiting_outcome, dead);
    }
    if (prepared.in_doubt && prepared.awaiting_outcome.empty()) settled.push_back(name);
  }
  for (const std::string& name : settled) {
    ++counters_.resolved_abort;
    drop_prepared(name, out);
  }
}

void NameServer::on_outcome_query(const NameMessage& message, std::vector<Envelope>& out) {
  NameMessage answer = make(NameMsgKind::outcome_reply, message.txn, name_of(message));
  answer.status = recently_committed(message.txn) ? NameErrc::ok : NameErrc::conflict;
  send(message.from, answer, out);
}

void NameServer::on_outcome_reply(const NameMessage& message, std::vector<Envelope>& out) {
  auto slot = prepared_.find(name_of(message));
  if (slot == prepared_.end() || !slot->second.in_doubt || slot->second.txn != message.txn) return;
  if (message.status == NameErrc::ok) {
    ++counters_.resolved_commit;
    return apply_prepared(name_of(message), out);
  }
  std::erase(slot->second.awaiting_outcome, message.from);
  if (slot->second.awaiting_outcome.empty()) {
    ++counters_.resolved_abort;
    drop_prepared(name_of(message), out);
  }
}

}  // namespace flotilla::name
