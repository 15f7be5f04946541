// Which component (a UDP server, a TCP replica) owns each flow, kept in the state store so a
// restarted IP process keeps delivering to the same owners.
//
// Keys: an exact flow names both ends. A listening/bound entry has remote_address 0 and
// remote_port 0 (wildcard), and may have local_address 0 (any local address). lookup() tries the
// exact 4-tuple, then (protocol, local_address, local_port) listening, then (protocol, 0,
// local_port).
//
// Storage: a state-store table (state_table.hpp) of entries {key, owner}; the entries are the
// truth. claim() publishes one entry, release() retires one (a single release store), so a crash
// never leaves a half-claimed flow: attach() retires entries left in `writing`, and drops a
// duplicate key should one ever be found. The hash index used for O(1) lookups is PRIVATE memory
// (slot_index.hpp), rebuilt from the entries at attach: it needs no crash consistency, and its
// backward-shift deletion leaves no tombstones, so churn never degrades lookups or fills the
// table. Free entries come from a private stack.
//
// Recovery: a restarting owner keeps its flows, each marked `unconfirmed` (a bit in the owner
// word, so the mark lives in the state store with the entry and outlives an IP restart); claiming
// a flow again clears its mark, and release_unconfirmed drops what was not claimed again.
//
// Capacity: every entry of the region (32 bytes each; a 1 MiB region holds 32766 flows).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "components/ip/slot_index.hpp"
#include "components/ip/state_table.hpp"
#include "dataplane/message.hpp"
#include "dataplane/result.hpp"

namespace flotilla::ip {

struct FlowKey {
  std::uint8_t protocol = 0;
  std::uint32_t local_address = 0;  // host order; 0 = any (listening entries only)
  std::uint16_t local_port = 0;
  std::uint32_t remote_address = 0;  // 0 with remote_port 0: listening/bound
  std::uint16_t remote_port = 0;

  friend bool operator==(const FlowKey&, const FlowKey&) = default;
};

class FlowTable {
 public:
  static constexpr std::uint64_t kMagic = 0x73776f6c'466f6c46ull;  // "FloFlows"
  static constexpr std::uint32_t kVersion = 1;
  static constexpr std::size_t kMaxEntries = std::size_t{1} << 24;
  // words: local<<32|remote, protocol<<32|lport<<16|rport, marks<<32|owner
  using Entry = PublishedEntry<3>;

  static constexpr std::size_t bytes_for(std::size_t flows) {
    return state_table_bytes<Entry>(flows);
  }

  // Reuses the table in `region` (which must stay mapped while this object lives), or formats it
  // empty. Allocates the private index here, never afterwards.
  static Result<FlowTable> attach(std::span<std::byte> region);

  // Errc::invalid_argument: owner is kNoComponent, or the exact key is held by another owner.
  // Claiming a key again by its owner succeeds, and confirms it. Errc::exhausted: table full.
  Status claim(const FlowKey& key, ComponentId owner);
  // Errc::invalid_argument: no such key; Errc::not_owner: held by someone else.
  Status release(const FlowKey& key, ComponentId owner);
  // Drops every entry of `owner` (a dead component's). Returns how many. O(capacity).
  std::size_t release_owner(ComponentId owner);
  // Marks every entry of `owner` unconfirmed (its owner restarts and claims again what it kept).
  // Returns how many. O(capacity).
  std::size_t mark_unconfirmed(ComponentId owner);
  // Drops every entry of `owner` still unconfirmed. Returns how many. O(capacity).
  std::size_t release_unconfirmed(ComponentId owner);
  bool unconfirmed(const FlowKey& key) const;

  std::optional<ComponentId> lookup(std::uint8_t protocol, std::uint32_t local_address,
                                    std::uint16_t local_port, std::uint32_t remote_address,
                                    std::uint16_t remote_port) const;
  // The owner of exactly this key (no wildcard fallback).
  std::optional<ComponentId> owner_of(const FlowKey& key) const;

  std::size_t size() const { return size_; }
  std::size_t capacity() const { return capacity_; }
  bool was_formatted() const { return formatted_; }
  // The longest probe distance in the private index (a lookup-cost measure for tests and stats).
  std::size_t longest_probe() const { return index_.longest_probe(); }

  template <class F>
  void for_each(F&& each) const {  // each(const FlowKey&, ComponentId)
    for (std::uint32_t i = 0; i < capacity_; ++i) {
      if (entries_[i].kind() == EntryKind::live) each(key_at(i), owner_at(i));
    }
  }

 private:
  explicit FlowTable(const StateTableView<Entry>& view);
  void repair_and_load();
  std::optional<std::uint32_t> find(const FlowKey& key) const;
  FlowKey key_at(std::uint32_t entry) const;
  ComponentId owner_at(std::uint32_t entry) const;
  bool unconfirmed_at(std::uint32_t entry) const;
  void set_unconfirmed(std::uint32_t entry, bool unconfirmed);
  void drop(std::uint32_t entry);

  Entry* entries_ = nullptr;
  std::uint32_t capacity_ = 0;
  bool formatted_ = false;
  std::size_t size_ = 0;
  SlotIndex index_;
  std::vector<std::uint32_t> free_;  // reserved to capacity_ at attach
};

}  // namespace flotilla::ip
