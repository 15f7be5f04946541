#include "components/name/snapshot_stream.hpp"

#include <algorithm>

namespace flotilla::name {
namespace {

NameMessage record(NameMsgKind kind, MemberId from, ComponentId client) {
  NameMessage message;
  message.kind = kind;
  message.from = from;
  message.client = client;
  return message;
}

}  // namespace

bool is_snapshot_kind(NameMsgKind kind) {
  const auto k = static_cast<std::uint8_t>(kind);
  return k >= static_cast<std::uint8_t>(NameMsgKind::snapshot_entry) &&
         k <= static_cast<std::uint8_t>(NameMsgKind::snapshot_done);
}

std::vector<NameMessage> encode_snapshot(const Snapshot& snapshot, MemberId from, ComponentId client) {
  std::vector<NameMessage> out;
  for (const auto& [name, entry] : snapshot.table.entries()) {
    NameMessage message = record(NameMsgKind::snapshot_entry, from, client);
    set_name(message.name, name);
    message.owner = entry.owner;
    message.endpoint = entry.endpoint;
    message.version = entry.version;
    message.weight = static_cast<std::uint32_t>(entry.kind);
    out.push_back(message);
    for (const GroupMember& member : entry.members) {
      NameMessage group = record(NameMsgKind::snapshot_group, from, client);
      set_name(group.name, name);
      set_name(group.member, member.name);
      group.weight = member.weight;
      out.push_back(group);
    }
  }
  for (const auto& [name, prepared] : snapshot.prepared) {
    NameMessage message = record(NameMsgKind::snapshot_prepared, from, client);
    message.txn = prepared.txn;
    put_change(message, prepared.change);
    message.cookie = prepared.in_doubt ? 1 : 0;
    out.push_back(message);
  }
  for (const TxnId& txn : snapshot.recent_commits) {
    NameMessage message = record(NameMsgKind::snapshot_commit, from, client);
    message.txn = txn;
    out.push_back(message);
  }
  for (MemberId member : snapshot.members) {
    NameMessage message = record(NameMsgKind::snapshot_member, from, client);
    message.version = member;
    out.push_back(message);
  }
  NameMessage done = record(NameMsgKind::snapshot_done, from, client);
  done.version = snapshot.table.size();
  done.expires_ms = snapshot.table.digest();
  done.epoch = snapshot.epoch;
  out.push_back(done);
  return out;
}

void SnapshotDecoder::reset() {
  snapshot_ = Snapshot{NameTable(), {}, {}, {}, 0};
  last_entry_.clear();
  state_ = State::receiving;
}

SnapshotDecoder::State SnapshotDecoder::feed(const NameMessage& message) {
  if (state_ != State::receiving) return state_;
  if (!well_formed(message) || !is_snapshot_kind(message.kind)) return fail();
  switch (message.kind) {
    case NameMsgKind::snapshot_entry: {
      const std::string name(name_of(message));
      const auto kind = message.weight;
      if (kind < static_cast<std::uint32_t>(EntryKind::direct) ||
          kind > static_cast<std::uint32_t>(EntryKind::reservation) || message.version == 0 ||
          message.owner == kNoComponent || snapshot_.table.find(name) != nullptr) {
        return fail();
      }
      Entry entry;
      entry.kind = static_cast<EntryKind>(kind);
      entry.owner = message.owner;
      entry.version = message.version;
      if (entry.kind == EntryKind::direct) entry.endpoint = message.endpoint;
      snapshot_.table.restore(name, std::move(entry));
      last_entry_ = name;
      return state_;
    }
    case NameMsgKind::snapshot_group: {
      const Entry* entry = snapshot_.table.find(name_of(message));
      if (entry == nullptr || last_entry_ != name_of(message) || entry->kind != EntryKind::indirect ||
          validate_name(member_of(message)) != NameErrc::ok || message.weight == 0 ||
          message.weight > kMaxWeight) {
        return fail();
      }
      Entry copy = *entry;
      const std::string member(member_of(message));
      if (!copy.members.empty() && copy.members.back().name >= member) return fail();  // sorted
      copy.members.push_back(GroupMember{member, message.weight});
      snapshot_.table.restore(last_entry_, std::move(copy));
      return state_;
    }
    case NameMsgKind::snapshot_prepared: {
      const std::string name(name_of(message));
      if (snapshot_.prepared.contains(name) || message.cookie > 1) return fail();
      PreparedChange prepared;
      prepared.txn = message.txn;
      prepared.change = change_of(message);
      prepared.in_doubt = message.cookie == 1;
      snapshot_.prepared.emplace(name, std::move(prepared));
      return state_;
    }
    case NameMsgKind::snapshot_commit:
      snapshot_.recent_commits.push_back(message.txn);
      return state_;
    case NameMsgKind::snapshot_member: {
      if (message.version == 0 || message.version >= kClientSource) return fail();
      const auto member = static_cast<MemberId>(message.version);
      auto& members = snapshot_.members;
      if (std::find(members.begin(), members.end(), member) != members.end()) return fail();
      members.insert(std::upper_bound(members.begin(), members.end(), member), member);
      return state_;
    }
    case NameMsgKind::snapshot_done:
      if (message.version != snapshot_.table.size() ||
          message.expires_ms != snapshot_.table.digest()) {
        return fail();
      }
      snapshot_.epoch = message.epoch;
      return state_ = State::complete;
    default:
      return fail();
  }
}

}  // namespace flotilla::name
