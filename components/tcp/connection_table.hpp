// The connection table in the replica's state-store region: a header and one plain-old-data control
// block (Tcb) per connection slot, holding what a successor needs to know about each connection
// (today: to reset it; next: to recover it). Each entry is written like a seqlock: its version goes
// odd before the entry changes and even again (release store) after, so a reader that finds an even
// version equal before and after its copy has a consistent entry. Everything read back from the
// region is untrusted: a crash, a bug or another process may have left anything there.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "components/tcp/engine.hpp"

namespace flotilla::tcp {

inline constexpr std::uint64_t kTableMagic = 0x464c4f5443504231ull;  // "FLOTCPB1"
inline constexpr std::uint32_t kTableLayout = 1;

struct alignas(64) TableHeader {
  std::uint64_t magic = 0;
  std::uint32_t layout = 0;
  std::uint32_t capacity = 0;
  std::uint32_t entry_bytes = 0;
  std::uint32_t reserved0 = 0;
  std::uint64_t reserved[5] = {};
};
static_assert(sizeof(TableHeader) == 64);

// Tcb::option_flags bits.
inline constexpr std::uint8_t kTcbTimestamps = 1;
inline constexpr std::uint8_t kTcbSack = 2;
inline constexpr std::uint8_t kTcbWindowScaling = 4;

struct alignas(64) Tcb {
  std::uint32_t version = 0;  // only through std::atomic_ref: odd while the entry changes
  std::uint8_t state = 0;     // TcpState
  std::uint8_t send_window_shift = 0;
  std::uint8_t receive_window_shift = 0;
  std::uint8_t option_flags = 0;
  FourTuple tuple;
  std::uint32_t iss = 0;
  std::uint32_t irs = 0;
  std::uint32_t snd_una = 0;
  std::uint32_t snd_nxt = 0;
  std::uint32_t snd_wnd = 0;  // bytes
  std::uint32_t rcv_nxt = 0;
  std::uint32_t rcv_wnd = 0;  // bytes announced past rcv_nxt
  std::uint32_t ts_recent = 0;
  std::uint16_t mss = 0;
  std::uint16_t reserved0 = 0;
  std::uint64_t send_ring_head = 0;     // stream position of snd_una's byte in the send ring
  std::uint64_t receive_ring_tail = 0;  // stream position of rcv_nxt's byte in the receive ring
};
static_assert(sizeof(Tcb) == 128);

// Writes an entry crash-consistently: `change` runs between the odd and the even version.
template <class Change>
void update_tcb(Tcb& tcb, Change&& change) {
  std::atomic_ref<std::uint32_t> version(tcb.version);
  const std::uint32_t even = version.load(std::memory_order_relaxed) & ~1u;
  version.store(even + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  change(tcb);
  version.store(even + 2, std::memory_order_release);
}

}  // namespace flotilla::tcp
