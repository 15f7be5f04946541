// The connection table in the state store; the crash protocol is described in state_table.hpp.
#include "components/pf/state_table.hpp"

#include <bit>
#include <new>

#include "dataplane/hash.hpp"

namespace flotilla::pf {
namespace {

// Probing stops after this many slots, so a full table costs a bounded walk per packet rather
// than a scan of the whole table. insert and find use the same window.
constexpr std::size_t kMaxProbe = 64;

// The connection as the table keys it; ports are 0 when the packet shows none.
struct Key {
  std::uint8_t protocol;
  std::uint8_t direction;
  std::uint32_t source;
  std::uint32_t destination;
  std::uint16_t source_port;
  std::uint16_t destination_port;
};

Key key_of(const PacketSummary& packet) {
  return Key{packet.protocol, static_cast<std::uint8_t>(packet.direction), packet.source,
             packet.destination, packet.has_ports ? packet.source_port : std::uint16_t{0},
             packet.has_ports ? packet.destination_port : std::uint16_t{0}};
}

// The same for a packet and its reply: the two endpoints are hashed in a fixed order.
std::uint64_t connection_hash(const Key& key) {
  const std::uint64_t a = (std::uint64_t{key.source} << 16) | key.source_port;
  const std::uint64_t b = (std::uint64_t{key.destination} << 16) | key.destination_port;
  const std::uint64_t low = a < b ? a : b;
  const std::uint64_t high = a < b ? b : a;
  return mix64(low ^ mix64(high ^ (std::uint64_t{key.protocol} << 56)));
}

std::uint64_t entry_check(const StateEntry& entry) {
  const std::uint64_t addresses = (std::uint64_t{entry.source} << 32) | entry.destination;
  const std::uint64_t rest = (std::uint64_t{entry.source_port} << 32) |
                             (std::uint64_t{entry.destination_port} << 16) |
                             (std::uint64_t{entry.protocol} << 8) | entry.direction;
  return mix64(addresses ^ mix64(rest ^ 0x5f3759df));
}

bool same_way(const StateEntry& entry, const Key& key) {
  return entry.protocol == key.protocol && entry.direction == key.direction &&
         entry.source == key.source && entry.destination == key.destination &&
         entry.source_port == key.source_port && entry.destination_port == key.destination_port;
}

bool reply_way(const StateEntry& entry, const Key& key) {
  return entry.protocol == key.protocol && entry.direction != key.direction &&
         entry.source == key.destination && entry.destination == key.source &&
         entry.source_port == key.destination_port && entry.destination_port == key.source_port;
}

bool is_kept(std::uint32_t state) {
  return state == static_cast<std::uint32_t>(SlotState::live) ||
         state == static_cast<std::uint32_t>(SlotState::closing);
}

std::uint64_t timeout_for(std::uint8_t protocol, std::uint32_t state) {
  switch (protocol) {
    case kProtocolTcp:
      return state == static_cast<std::uint32_t>(SlotState::closing) ? kTcpClosingTimeoutMs
                                                                      : kTcpOpenTimeoutMs;
    case kProtocolUdp: return kUdpTimeoutMs;
    case kProtocolIcmp: return kIcmpTimeoutMs;
    default: return kOtherTimeoutMs;
  }
}

bool timed_out(const StateEntry& entry, std::uint32_t state, std::uint64_t now_ms) {
  const std::uint64_t last = entry.last_seen_ms.load(std::memory_order_relaxed);
  return now_ms > last && now_ms - last > timeout_for(entry.protocol, state);
}

bool closes(const PacketSummary& packet) {
  return packet.protocol == kProtocolTcp && (packet.tcp_flags & (kTcpFin | kTcpRst)) != 0;
}

std::size_t capacity_for(std::size_t region_bytes) {
  if (region_bytes < StateTable::bytes_for(2)) return 0;
  return std::bit_floor((region_bytes - sizeof(StateTableHeader)) / sizeof(StateEntry));
}

}  // namespace

StateTable::StateTable(StateEntry* entries, std::size_t capacity, bool reused)
    : entries_(entries), capacity_(capacity), reused_(reused) {}

Result<StateTable> StateTable::attach(std::span<std::byte> region) {
  const std::size_t capacity = capacity_for(region.size());
  if (capacity < 2 || capacity > UINT32_MAX ||
      reinterpret_cast<std::uintptr_t>(region.data()) % alignof(StateTableHeader) != 0) {
    return Error{Errc::invalid_argument, 0, "StateTable::attach"};
  }
  auto* header = reinterpret_cast<StateTableHeader*>(region.data());
  auto* entries = reinterpret_cast<StateEntry*>(region.data() + sizeof(StateTableHeader));
  const bool valid = header->magic.load(std::memory_order_acquire) == StateTableHeader::kMagic &&
                     header->version == StateTableHeader::kVersion &&
                     header->entry_size == sizeof(StateEntry) && header->capacity == capacity;
  if (valid) {
    StateTable table(entries, capacity, true);
    table.recount_and_validate();
    return table;
  }

  // Format. The magic goes first to zero and last to its value, so a crash in between leaves a
  // region the next attach formats again.
  header = new (region.data()) StateTableHeader{};
  std::atomic_thread_fence(std::memory_order_seq_cst);
  for (std::size_t i = 0; i < capacity; ++i) new (&entries[i]) StateEntry{};
  header->version = StateTableHeader::kVersion;
  header->capacity = static_cast<std::uint32_t>(capacity);
  header->entry_size = sizeof(StateEntry);
  header->magic.store(StateTableHeader::kMagic, std::memory_order_release);
  return StateTable(entries, capacity, false);
}

void StateTable::recount_and_validate() {
  live_ = 0;
  for (std::size_t i = 0; i < capacity_; ++i) {
    StateEntry& entry = entries_[i];
    const std::uint32_t state = entry.state.load(std::memory_order_acquire);
    if (is_kept(state)) {
      if (entry.check == entry_check(entry)) {
        ++live_;
      } else {
        // Garbled fields (not a torn publish, which the protocol rules out): never match them.
        entry.state.store(static_cast<std::uint32_t>(SlotState::deleted), std::memory_order_release);
      }
    } else if (state != static_cast<std::uint32_t>(SlotState::empty) &&
               state != static_cast<std::uint32_t>(SlotState::deleted)) {
      entry.state.store(static_cast<std::uint32_t>(SlotState::deleted), std::memory_order_release);
    }
  }
}

StateEntry* StateTable::find(const PacketSummary& packet, Side& side) {
  const Key key = key_of(packet);
  const std::size_t mask = capacity_ - 1;
  const std::size_t home = connection_hash(key) & mask;
  const std::size_t window = capacity_ < kMaxProbe ? capacity_ : kMaxProbe;
  for (std::size_t step = 0; step < window; ++step) {
    StateEntry& entry = entries_[(home + step) & mask];
    const std::uint32_t state = entry.state.load(std::memory_order_acquire);
    if (state == static_cast<std::uint32_t>(SlotState::empty)) return nullptr;
    if (!is_kept(state)) continue;
    if (same_way(entry, key)) {
      side = Side::forward;
      return &entry;
    }
    if (reply_way(entry, key)) {
      side = Side::reply;
      return &entry;
    }
  }
  return nullptr;
}

bool StateTable::matches(const PacketSummary& packet, std::uint64_t now_ms) {
  Side side;
  StateEntry* entry = find(packet, side);
  if (entry == nullptr) return false;
  const std::uint32_t state = entry->state.load(std::memory_order_relaxed);
  if (timed_out(*entry, state, now_ms)) return false;  // expire() reclaims it
  if (now_ms > entry->last_seen_ms.load(std::memory_order_relaxed)) {
    entry->last_seen_ms.store(now_ms, std::memory_order_relaxed);
  }
  if (closes(packet) && state == static_cast<std::uint32_t>(SlotState::live)) {
    entry->state.store(static_cast<std::uint32_t>(SlotState::closing), std::memory_order_release);
  }
  return true;
}

Status StateTable::insert(const PacketSummary& packet, std::uint64_t now_ms) {
  const Key key = key_of(packet);
  const auto new_state =
      static_cast<std::uint32_t>(closes(packet) ? SlotState::closing : SlotState::live);
  const std::size_t mask = capacity_ - 1;
  const std::size_t home = connection_hash(key) & mask;
  const std::size_t window = capacity_ < kMaxProbe ? capacity_ : kMaxProbe;
  StateEntry* free_slot = nullptr;
  for (std::size_t step = 0; step < window; ++step) {
    StateEntry& entry = entries_[(home + step) & mask];
    const std::uint32_t state = entry.state.load(std::memory_order_acquire);
    if (state == static_cast<std::uint32_t>(SlotState::empty)) {
      if (free_slot == nullptr) free_slot = &entry;
      break;
    }
    if (!is_kept(state)) {
      if (free_slot == nullptr) free_slot = &entry;
      continue;
    }
    if (same_way(entry, key) || reply_way(entry, key)) {
      // Kept already (typically timed out but not yet expired): start its clock again.
      entry.last_seen_ms.store(now_ms, std::memory_order_relaxed);
      entry.state.store(new_state, std::memory_order_release);
      return {};
    }
  }
  if (free_slot == nullptr) return Error{Errc::exhausted, 0, "StateTable::insert"};

  // Fields first; the slot reads as free to anyone until the state word says otherwise.
  free_slot->protocol = key.protocol;
  free_slot->direction = key.direction;
  free_slot->reserved = 0;
  free_slot->source = key.source;
  free_slot->destination = key.destination;
  free_slot->source_port = key.source_port;
  free_slot->destination_port = key.destination_port;
  free_slot->reserved2 = 0;
  free_slot->check = entry_check(*free_slot);
  free_slot->last_seen_ms.store(now_ms, std::memory_order_relaxed);
  free_slot->state.store(new_state, std::memory_order_release);
  ++live_;
  return {};
}

std::size_t StateTable::expire(std::uint64_t now_ms) {
  std::size_t expired = 0;
  for (std::size_t i = 0; i < capacity_; ++i) {
    StateEntry& entry = entries_[i];
    const std::uint32_t state = entry.state.load(std::memory_order_acquire);
    if (is_kept(state) && timed_out(entry, state, now_ms)) {
      entry.state.store(static_cast<std::uint32_t>(SlotState::deleted), std::memory_order_release);
      ++expired;
    }
  }
  live_ -= expired;
  clear_tombstones();
  return expired;
}

void StateTable::clear_tombstones() {
  // Walk backwards from an empty slot: a tombstone whose next slot is empty lies on no probe chain.
  const std::size_t mask = capacity_ - 1;
  std::size_t start = capacity_;
  for (std::size_t i = 0; i < capacity_; ++i) {
    if (entries_[i].state.load(std::memory_order_relaxed) ==
        static_cast<std::uint32_t>(SlotState::empty)) {
      start = i;
      break;
    }
  }
  if (start == capacity_) return;
  bool next_is_empty = true;
  for (std::size_t step = 1; step < capacity_; ++step) {
    StateEntry& entry = entries_[(start - step) & mask];
    const std::uint32_t state = entry.state.load(std::memory_order_relaxed);
    if (state == static_cast<std::uint32_t>(SlotState::deleted) && next_is_empty) {
      entry.state.store(static_cast<std::uint32_t>(SlotState::empty), std::memory_order_release);
    } else {
      next_is_empty = state == static_cast<std::uint32_t>(SlotState::empty);
    }
  }
}

}  // namespace flotilla::pf
