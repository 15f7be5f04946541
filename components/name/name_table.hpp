// One replica of the name table. Every name server holds a full copy; the arbitrated commit makes
// every replica apply the same changes per name in the same order, so replicas stay identical.
#pragma once

#include <cstdint>
#include <functional>  // std::less<> for heterogeneous lookup
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "components/name/name_errors.hpp"
#include "dataplane/message.hpp"

namespace flotilla::name {

// Where a direct name leads: a component, one of its channels/endpoints, and the incarnation of
// the component that registered it (a restart registers again with a new incarnation).
struct Endpoint {
  ComponentId component = kNoComponent;
  std::uint32_t endpoint = 0;
  std::uint64_t incarnation = 0;
  friend bool operator==(const Endpoint&, const Endpoint&) = default;
};

enum class EntryKind : std::uint8_t {
  direct = 1,       // name -> endpoint
  indirect = 2,     // name -> weighted set of direct names
  reservation = 3,  // the sub-domain beneath the name belongs to the owner
};

struct GroupMember {
  std::string name;
  std::uint32_t weight = 1;
  friend bool operator==(const GroupMember&, const GroupMember&) = default;
};

struct Entry {
  EntryKind kind = EntryKind::direct;
  ComponentId owner = kNoComponent;
  std::uint64_t version = 0;  // 1 when created, +1 per committed change of this name
  Endpoint endpoint;                 // direct only
  std::vector<GroupMember> members;  // indirect only, sorted by name
  friend bool operator==(const Entry&, const Entry&) = default;
};

enum class ChangeOp : std::uint8_t {
  none = 0,
  register_direct = 1,  // create, or re-point by the same owner (a restarted component)
  add_member = 2,       // add or re-weight a member of an indirect name; creates the group
  remove_member = 3,    // drops the group when its last member goes
  reserve = 4,          // reserve the sub-domain beneath name for owner
  unregister = 5,       // remove any kind of entry
};
inline constexpr std::uint8_t kLastChangeOp = static_cast<std::uint8_t>(ChangeOp::unregister);

inline constexpr std::uint32_t kMaxWeight = 1'000'000;

struct Change {
  ChangeOp op = ChangeOp::none;
  std::string name;
  ComponentId owner = kNoComponent;
  Endpoint endpoint;   // register_direct
  std::string member;  // add_member, remove_member
  std::uint32_t weight = 1;
};

struct TableConfig {
  std::uint64_t ttl_ms = 1000;  // how long a lookup result may be cached
};

struct LookupResult {
  NameErrc status = NameErrc::not_found;
  Endpoint endpoint;
  std::uint64_t version = 0;     // of the direct entry the lookup ended at
  std::uint64_t expires_ms = 0;  // now + ttl: the caller must look the name up again after this
};

class NameTable {
 public:
  explicit NameTable(TableConfig config = {}) : config_(config) {}

  // What apply() would answer, without changing anything.
  NameErrc check(const Change& change) const;
  // Applies a committed change; a refused change leaves the table untouched.
  NameErrc apply(const Change& change);

  // A direct name answers its endpoint; an indirect name picks one of its live direct members
  // with probability weight/total, using `random` (any 64-bit value from the caller's source).
  // Does not allocate.
  LookupResult lookup(std::string_view name, std::uint64_t now_ms, std::uint64_t random) const;

  const Entry* find(std::string_view name) const;
  std::size_t size() const { return entries_.size(); }
  const std::map<std::string, Entry, std::less<>>& entries() const { return entries_; }
  // Puts an entry in as it stands on another replica (installing a snapshot), replacing any.
  void restore(std::string name, Entry entry) { entries_[std::move(name)] = std::move(entry); }
  const TableConfig& config() const { return config_; }

  // Covers names, kinds, owners, versions and contents: equal tables have equal digests.
  std::uint64_t digest() const;
  bool same_entries(const NameTable& other) const { return entries_ == other.entries_; }

 private:
  NameErrc check_reservations(std::string_view name, ComponentId owner) const;
  NameErrc check_register(const Change& change) const;
  NameErrc check_add_member(const Change& change) const;
  NameErrc check_remove_member(const Change& change) const;
  NameErrc check_reserve(const Change& change) const;
  NameErrc check_owned(const Change& change) const;

  TableConfig config_;
  std::map<std::string, Entry, std::less<>> entries_;
};

}  // namespace flotilla::name
