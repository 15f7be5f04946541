// The flow table's writer, lookup order and attach-time repair (protocol in flow_table.hpp).
#include "components/ip/flow_table.hpp"

#include "dataplane/hash.hpp"

namespace flotilla::ip {
namespace {

std::uint64_t address_word(const FlowKey& key) {
  return (std::uint64_t{key.local_address} << 32) | key.remote_address;
}

std::uint64_t port_word(const FlowKey& key) {
  return (std::uint64_t{key.protocol} << 32) | (std::uint64_t{key.local_port} << 16) |
         key.remote_port;
}

constexpr std::uint64_t kUnconfirmed = std::uint64_t{1} << 32;  // in the owner word

std::uint64_t hash_of(std::uint64_t addresses, std::uint64_t ports) {
  return mix64(addresses ^ mix64(ports));
}

}  // namespace

Result<FlowTable> FlowTable::attach(std::span<std::byte> region) {
  auto view = attach_state_table<Entry>(region, kMagic, kVersion, kMaxEntries);
  if (!view) return view.error();
  FlowTable table(*view);
  table.repair_and_load();
  return table;
}

FlowTable::FlowTable(const StateTableView<Entry>& view)
    : entries_(view.entries),
      capacity_(view.capacity),
      formatted_(view.formatted),
      index_(view.capacity) {
  free_.reserve(capacity_);
}

FlowKey FlowTable::key_at(std::uint32_t entry) const {
  const std::uint64_t addresses = entries_[entry].word(0);
  const std::uint64_t ports = entries_[entry].word(1);
  return FlowKey{static_cast<std::uint8_t>(ports >> 32), static_cast<std::uint32_t>(addresses >> 32),
                 static_cast<std::uint16_t>(ports >> 16), static_cast<std::uint32_t>(addresses),
                 static_cast<std::uint16_t>(ports)};
}

ComponentId FlowTable::owner_at(std::uint32_t entry) const {
  return static_cast<ComponentId>(entries_[entry].word(2));
}

bool FlowTable::unconfirmed_at(std::uint32_t entry) const { return (entries_[entry].word(2) & kUnconfirmed) != 0; }

void FlowTable::set_unconfirmed(std::uint32_t entry, bool unconfirmed) {
  const std::uint64_t owner = owner_at(entry);
  entries_[entry].publish({entries_[entry].word(0), entries_[entry].word(1), unconfirmed ? owner | kUnconfirmed : owner});
}

std::optional<std::uint32_t> FlowTable::find(const FlowKey& key) const {
  const std::uint64_t addresses = address_word(key);
  const std::uint64_t ports = port_word(key);
  return index_.find(hash_of(addresses, ports), [&](std::uint32_t entry) {
    return entries_[entry].word(0) == addresses && entries_[entry].word(1) == ports;
  });
}

void FlowTable::repair_and_load() {
  // Highest entries pushed first, so claims fill the region from the front.
  for (std::uint32_t i = capacity_; i-- > 0;) {
    Entry& entry = entries_[i];
    const EntryKind kind = entry.kind();
    if (kind == EntryKind::live) {
      if (owner_at(i) != kNoComponent && !find(key_at(i))) {
        index_.insert(hash_of(entry.word(0), entry.word(1)), i);
        ++size_;
        continue;
      }
      entry.retire();  // a duplicate or ownerless entry: not something claim() writes
    } else if (kind != EntryKind::free) {
      entry.retire();  // `writing`: a claim or release the crash interrupted
    }
    free_.push_back(i);
  }
}

std::optional<ComponentId> FlowTable::owner_of(const FlowKey& key) const {
  const std::optional<std::uint32_t> entry = find(key);
  if (!entry) return std::nullopt;
  return owner_at(*entry);
}

Status FlowTable::claim(const FlowKey& key, ComponentId owner) {
  if (owner == kNoComponent) return Error{Errc::invalid_argument, 0, "flow claimed by nobody"};
  if (const std::optional<std::uint32_t> entry = find(key)) {
    if (owner_at(*entry) == owner) {
      if (unconfirmed_at(*entry)) set_unconfirmed(*entry, false);
      return {};
    }
    return Error{Errc::invalid_argument, 0, "flow held by another component"};
  }
  if (free_.empty()) return Error{Errc::exhausted, 0, "flow table full"};
  const std::uint32_t entry = free_.back();
  free_.pop_back();
  const std::uint64_t addresses = address_word(key);
  const std::uint64_t ports = port_word(key);
  entries_[entry].publish({addresses, ports, owner});
  index_.insert(hash_of(addresses, ports), entry);
  ++size_;
  return {};
}

void FlowTable::drop(std::uint32_t entry) {
  const std::uint64_t hash = hash_of(entries_[entry].word(0), entries_[entry].word(1));
  entries_[entry].retire();
  index_.erase(hash, entry);
  free_.push_back(entry);
  --size_;
}

Status FlowTable::release(const FlowKey& key, ComponentId owner) {
  const std::optional<std::uint32_t> entry = find(key);
  if (!entry) return Error{Errc::invalid_argument, 0, "no such flow"};
  if (owner_at(*entry) != owner) return Error{Errc::not_owner, 0, "flow held by another component"};
  drop(*entry);
  return {};
}

std::size_t FlowTable::release_owner(ComponentId owner) {
  std::size_t released = 0;
  for (std::uint32_t i = 0; i < capacity_; ++i) {
    if (entries_[i].kind() == EntryKind::live && owner_at(i) == owner) {
      drop(i);
      ++released;
    }
  }
  return released;
}

std::size_t FlowTable::mark_unconfirmed(ComponentId owner) {
  std::size_t marked = 0;
  for (std::uint32_t i = 0; i < capacity_; ++i) {
    if (entries_[i].kind() == EntryKind::live && owner_at(i) == owner) {
      if (!unconfirmed_at(i)) set_unconfirmed(i, true);
      ++marked;
    }
  }
  return marked;
}

std::size_t FlowTable::release_unconfirmed(ComponentId owner) {
  std::size_t released = 0;
  for (std::uint32_t i = 0; i < capacity_; ++i) {
    if (entries_[i].kind() == EntryKind::live && owner_at(i) == owner && unconfirmed_at(i)) {
      drop(i);
      ++released;
    }
  }
  return released;
}

bool FlowTable::unconfirmed(const FlowKey& key) const {
  const std::optional<std::uint32_t> entry = find(key);
  return entry && unconfirmed_at(*entry);
}

std::optional<ComponentId> FlowTable::lookup(std::uint8_t protocol, std::uint32_t local_address,
                                             std::uint16_t local_port,
                                             std::uint32_t remote_address,
                                             std::uint16_t remote_port) const {
  if (auto owner = owner_of({protocol, local_address, local_port, remote_address, remote_port})) {
    return owner;
  }
  if (auto owner = owner_of({protocol, local_address, local_port, 0, 0})) return owner;
  return owner_of({protocol, 0, local_port, 0, 0});
}

}  // namespace flotilla::ip
