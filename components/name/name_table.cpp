#include "components/name/name_table.hpp"

#include <algorithm>

#include "components/name/name_path.hpp"

namespace flotilla::name {
namespace {

// FNV-1a step over one integer: enough to tell replicas apart, not a cryptographic digest.
void mix(std::uint64_t& hash, std::uint64_t value) {
  for (int byte = 0; byte < 8; ++byte) {
    hash ^= (value >> (byte * 8)) & 0xff;
    hash *= 0x100000001b3ull;
  }
}

auto find_member(std::vector<GroupMember>& members, std::string_view name) {
  return std::lower_bound(members.begin(), members.end(), name,
                          [](const GroupMember& m, std::string_view n) { return m.name < n; });
}

}  // namespace

const Entry* NameTable::find(std::string_view name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second;
}

NameErrc NameTable::check_reservations(std::string_view name, ComponentId owner) const {
  for (std::size_t slash = name.find('/', 1); slash != std::string_view::npos;
       slash = name.find('/', slash + 1)) {
    const Entry* above = find(name.substr(0, slash));
    if (above && above->kind == EntryKind::reservation && above->owner != owner) {
      return NameErrc::reserved;
    }
  }
  return NameErrc::ok;
}

NameErrc NameTable::check_register(const Change& change) const {
  if (const Entry* entry = find(change.name)) {
    // The same owner may re-point its own direct name: that is how a restart re-registers.
    const bool repoint = entry->kind == EntryKind::direct && entry->owner == change.owner;
    return repoint ? NameErrc::ok : NameErrc::exists;
  }
  return check_reservations(change.name, change.owner);
}

NameErrc NameTable::check_add_member(const Change& change) const {
  if (validate_name(change.member) != NameErrc::ok || change.member == change.name) {
    return NameErrc::bad_name;
  }
  if (change.weight == 0 || change.weight > kMaxWeight) return NameErrc::bad_request;
  if (const Entry* entry = find(change.name)) {
    if (entry->kind != EntryKind::indirect) return NameErrc::wrong_kind;
    return entry->owner == change.owner ? NameErrc::ok : NameErrc::not_owner;
  }
  return check_reservations(change.name, change.owner);
}

NameErrc NameTable::check_remove_member(const Change& change) const {
  const Entry* entry = find(change.name);
  if (!entry) return NameErrc::not_found;
  if (entry->kind != EntryKind::indirect) return NameErrc::wrong_kind;
  if (entry->owner != change.owner) return NameErrc::not_owner;
  const bool present = std::any_of(entry->members.begin(), entry->members.end(),
                                   [&](const GroupMember& m) { return m.name == change.member; });
  return present ? NameErrc::ok : NameErrc::not_found;
}

NameErrc NameTable::check_reserve(const Change& change) const {
  if (find(change.name)) return NameErrc::exists;
  if (NameErrc status = check_reservations(change.name, change.owner); status != NameErrc::ok) {
    return status;
  }
  // A sub-domain someone else already lives in cannot be taken from them.
  const std::string below = change.name + "/";
  for (auto it = entries_.lower_bound(below); it != entries_.end() && it->first.starts_with(below);
       ++it) {
    if (it->second.owner != change.owner) return NameErrc::exists;
  }
  return NameErrc::ok;
}

NameErrc NameTable::check_owned(const Change& change) const {
  const Entry* entry = find(change.name);
  if (!entry) return NameErrc::not_found;
  return entry->owner == change.owner ? NameErrc::ok : NameErrc::not_owner;
}

NameErrc NameTable::check(const Change& change) const {
  if (validate_name(change.name) != NameErrc::ok) return NameErrc::bad_name;
  switch (change.op) {
    case ChangeOp::register_direct: return check_register(change);
    case ChangeOp::add_member: return check_add_member(change);
    case ChangeOp::remove_member: return check_remove_member(change);
    case ChangeOp::reserve: return check_reserve(change);
    case ChangeOp::unregister: return check_owned(change);
    case ChangeOp::none: break;
  }
  return NameErrc::bad_request;
}

NameErrc NameTable::apply(const Change& change) {
  if (NameErrc status = check(change); status != NameErrc::ok) return status;
  if (change.op == ChangeOp::unregister) {
    entries_.erase(entries_.find(change.name));
    return NameErrc::ok;
  }
  auto [it, created] = entries_.try_emplace(change.name);
  Entry& entry = it->second;
  entry.version = created ? 1 : entry.version + 1;
  entry.owner = change.owner;
  switch (change.op) {
    case ChangeOp::register_direct:
      entry.kind = EntryKind::direct;
      entry.endpoint = change.endpoint;
      break;
    case ChangeOp::add_member: {
      entry.kind = EntryKind::indirect;
      auto member = find_member(entry.members, change.member);
      if (member != entry.members.end() && member->name == change.member) {
        member->weight = change.weight;
      } else {
        entry.members.insert(member, GroupMember{change.member, change.weight});
      }
      break;
    }
    case ChangeOp::remove_member:
      entry.members.erase(find_member(entry.members, change.member));
      if (entry.members.empty()) entries_.erase(it);
      break;
    case ChangeOp::reserve:
      entry.kind = EntryKind::reservation;
      break;
    case ChangeOp::unregister:
    case ChangeOp::none:
      break;
  }
  return NameErrc::ok;
}

LookupResult NameTable::lookup(std::string_view name, std::uint64_t now_ms,
                               std::uint64_t random) const {
  LookupResult result;
  const Entry* entry = find(name);
  if (entry && entry->kind == EntryKind::indirect) {
    // Members whose direct entry is gone are skipped, so a group keeps working while it shrinks.
    std::uint64_t total = 0;
    for (const GroupMember& member : entry->members) {
      const Entry* target = find(member.name);
      if (target && target->kind == EntryKind::direct) total += member.weight;
    }
    std::uint64_t pick = total == 0 ? 0 : random % total;
    const Entry* chosen = nullptr;
    for (const GroupMember& member : entry->members) {
      const Entry* target = find(member.name);
      if (!target || target->kind != EntryKind::direct) continue;
      if (pick < member.weight) {
        chosen = target;
        break;
      }
      pick -= member.weight;
    }
    entry = chosen;
  }
  if (!entry || entry->kind != EntryKind::direct) return result;
  result.status = NameErrc::ok;
  result.endpoint = entry->endpoint;
  result.version = entry->version;
  result.expires_ms = now_ms + config_.ttl_ms;
  return result;
}

std::uint64_t NameTable::digest() const {
  std::uint64_t hash = 0xcbf29ce484222325ull;
  for (const auto& [name, entry] : entries_) {
    mix(hash, name_id(name));
    mix(hash, static_cast<std::uint64_t>(entry.kind));
    mix(hash, entry.owner);
    mix(hash, entry.version);
    mix(hash, entry.endpoint.component);
    mix(hash, entry.endpoint.endpoint);
    mix(hash, entry.endpoint.incarnation);
    for (const GroupMember& member : entry.members) {
      mix(hash, name_id(member.name));
      mix(hash, member.weight);
    }
  }
  return hash;
}

}  // namespace flotilla::name
