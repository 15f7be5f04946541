// Connection tracking for the packet filter, laid out in a caller-provided region of the state
// store, so a restarted pf process finds the connections its predecessor kept.
//
// Layout: a 64-byte StateTableHeader, then `capacity` (a power of two) 64-byte StateEntry slots,
// open addressing with linear probing on a hash of the connection that is the same for both
// directions. Nothing is allocated after attach().
//
// Crash consistency (pf may be SIGKILLed at any instruction; only pf writes the region):
//   - Every slot has one atomic state word: empty, live, closing (a live TCP connection that saw a
//     FIN or RST), or deleted (a tombstone that keeps probe chains intact).
//   - insert writes all the fields of a free slot first, including a check word (a hash of the
//     key fields), and only then publishes the slot with a release store of the state word. A slot
//     whose state word never reached live is free to a restarted pf, so a half-written entry is
//     never matched. attach() also drops live slots whose check word disagrees with their fields.
//   - Later changes are single atomic stores: the last-seen time, live -> closing, and
//     live/closing -> deleted when a connection expires. expire() turns tombstones back into empty
//     slots, one atomic store each, only where no probe chain runs through them (the next slot is
//     empty), so a crash in the middle leaves at worst tombstones, never a broken chain.
//   - format writes the header's magic last: a crash while formatting leaves no magic, and the
//     next attach formats again.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "components/pf/rules.hpp"
#include "dataplane/result.hpp"

namespace flotilla::pf {

// Connection timeouts.
inline constexpr std::uint64_t kUdpTimeoutMs = 60'000;
inline constexpr std::uint64_t kIcmpTimeoutMs = 30'000;
inline constexpr std::uint64_t kTcpOpenTimeoutMs = 24ull * 3600 * 1000;
inline constexpr std::uint64_t kTcpClosingTimeoutMs = 30'000;
inline constexpr std::uint64_t kOtherTimeoutMs = 60'000;  // protocols other than tcp/udp/icmp

enum class SlotState : std::uint32_t { empty = 0, live = 1, closing = 2, deleted = 3 };

struct alignas(64) StateTableHeader {
  static constexpr std::uint64_t kMagic = 0x45544154'53465046ull;  // "FPFSTATE"
  static constexpr std::uint32_t kVersion = 1;

  std::atomic<std::uint64_t> magic;
  std::uint32_t version;
  std::uint32_t capacity;    // slots, a power of two
  std::uint32_t entry_size;  // sizeof(StateEntry), so a layout change is caught
  std::uint32_t reserved;
};
static_assert(sizeof(StateTableHeader) == 64);

// One kept connection, as first seen: source/destination in `direction`.
struct alignas(64) StateEntry {
  std::atomic<std::uint32_t> state;  // SlotState; published last
  std::uint8_t protocol;
  std::uint8_t direction;  // stack::Direction of the packet that created it
  std::uint16_t reserved;
  std::uint32_t source;
  std::uint32_t destination;
  std::uint16_t source_port;
  std::uint16_t destination_port;
  std::uint32_t reserved2;
  std::uint64_t check;  // hash of the fields above, written before the state word
  std::atomic<std::uint64_t> last_seen_ms;
};
static_assert(sizeof(StateEntry) == 64);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

class StateTable {
 public:
  // Bytes of region a table of `capacity` slots (a power of two) needs.
  static constexpr std::size_t bytes_for(std::size_t capacity) {
    return sizeof(StateTableHeader) + capacity * sizeof(StateEntry);
  }

  // Reuses the table in `region` if its header is valid and matches the region's size; formats it
  // otherwise. Fails (invalid_argument) if the region is misaligned or has room for fewer than 2
  // slots. The region must outlive the table.
  static Result<StateTable> attach(std::span<std::byte> region);

  // True if the packet belongs to a kept connection, in either direction, that has not timed out.
  // Refreshes the connection's time and notes a TCP FIN or RST.
  bool matches(const PacketSummary& packet, std::uint64_t now_ms);

  // Keeps the packet's connection. Errc::exhausted when no slot is free. Inserting a connection
  // that is already kept refreshes it.
  Status insert(const PacketSummary& packet, std::uint64_t now_ms);

  // Drops the connections that timed out; returns how many.
  std::size_t expire(std::uint64_t now_ms);

  std::size_t size() const { return live_; }
  std::size_t capacity() const { return capacity_; }
  // True if attach() found a table left by an earlier process rather than formatting one.
  bool reused() const { return reused_; }

 private:
  StateTable(StateEntry* entries, std::size_t capacity, bool reused);

  enum class Side { forward, reply };
  StateEntry* find(const PacketSummary& packet, Side& side);
  void recount_and_validate();
  void clear_tombstones();

  StateEntry* entries_ = nullptr;
  std::size_t capacity_ = 0;
  std::size_t live_ = 0;  // this process's count, rebuilt by attach
  bool reused_ = false;
};

}  // namespace flotilla::pf
