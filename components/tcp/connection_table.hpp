// The connection table in the replica's state-store region: a header, one plain-old-data control
// block (Tcb) per connection slot and one entry per listener, holding everything a successor needs
// to carry each connection on (Engine::create with RestorePolicy::resume) or to reset it. Each entry
// is written like a seqlock: its version goes odd before the entry changes and even again (release
// store) after, so a reader that finds an even version equal before and after its copy has a
// consistent entry. The engine publishes a connection's entry before any segment of it leaves, so
// the table always covers what the peer has seen. Everything read back from the region is
// untrusted: a crash, a bug or another process may have left anything there.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "components/tcp/engine.hpp"

namespace flotilla::tcp {

inline constexpr std::uint64_t kTableMagic = 0x464c4f5443504231ull;  // "FLOTCPB1"
inline constexpr std::uint32_t kTableLayout = 2;
// TableHeader::in_flight and ::suspect when no connection is named.
inline constexpr std::uint64_t kNoConnectionInFlight = ~std::uint64_t{0};

inline constexpr std::uint64_t in_flight_word(std::uint32_t index, std::uint32_t generation) {
  return (std::uint64_t{index} << 32) | generation;
}

struct alignas(64) TableHeader {
  std::uint64_t magic = 0;
  std::uint32_t layout = 0;
  std::uint32_t capacity = 0;           // Tcb entries
  std::uint32_t entry_bytes = 0;        // sizeof(Tcb)
  std::uint32_t listener_capacity = 0;  // ListenerEntry entries, after the Tcbs
  // ISNs, SYN cookies and the timestamp offset: kept, so a successor's segments pass the peers'
  // sequence and PAWS checks.
  std::uint64_t secret[2] = {0, 0};
  // The connection the engine is serving (in_flight_word), only through std::atomic_ref; and the
  // one that was in flight at the previous crash (the poison rule, Engine::create).
  std::uint64_t in_flight = kNoConnectionInFlight;
  std::uint64_t suspect = kNoConnectionInFlight;
  std::uint32_t listener_entry_bytes = 0;  // sizeof(ListenerEntry)
  std::uint32_t reserved0 = 0;
};
static_assert(sizeof(TableHeader) == 64);

// Tcb::flags bits.
inline constexpr std::uint16_t kTcbTimestamps = 1 << 0;
inline constexpr std::uint16_t kTcbSack = 1 << 1;
inline constexpr std::uint16_t kTcbWindowScaling = 1 << 2;
inline constexpr std::uint16_t kTcbAppClosed = 1 << 3;
inline constexpr std::uint16_t kTcbWriteShut = 1 << 4;
inline constexpr std::uint16_t kTcbFinSent = 1 << 5;
inline constexpr std::uint16_t kTcbInSynQueue = 1 << 6;
inline constexpr std::uint16_t kTcbNodelay = 1 << 7;
inline constexpr std::uint16_t kTcbCork = 1 << 8;
inline constexpr std::uint16_t kTcbKeepalive = 1 << 9;
inline constexpr std::uint16_t kTcbRttSampled = 1 << 10;

struct alignas(64) Tcb {
  // Identity.
  std::uint32_t version = 0;  // only through std::atomic_ref: odd while the entry changes
  std::uint8_t state = 0;     // TcpState
  std::uint8_t send_window_shift = 0;
  std::uint8_t receive_window_shift = 0;
  std::uint8_t congestion_algorithm = 0;  // CongestionAlgorithm
  std::uint16_t flags = 0;                // kTcb*
  std::uint16_t mss = 0;
  std::uint16_t peer_mss = 0;
  std::uint16_t rcv_mss = 0;
  std::uint32_t generation = 0;  // the slot's handle generation (the next one once closed)
  FourTuple tuple;
  std::uint32_t listener = 0;  // ListenerId, or kNoListener
  // Send sequence space.
  std::uint32_t iss = 0;
  std::uint32_t snd_una = 0;
  std::uint32_t snd_nxt = 0;
  std::uint32_t snd_max = 0;
  std::uint32_t snd_wnd = 0;  // bytes
  std::uint32_t max_snd_wnd = 0;
  std::uint32_t snd_wl1 = 0;
  std::uint32_t snd_wl2 = 0;
  std::uint32_t head_seq = 0;  // sequence of the send ring's head byte
  std::uint32_t fin_seq = 0;   // with kTcbFinSent
  // Receive sequence space.
  std::uint32_t irs = 0;
  std::uint32_t rcv_nxt = 0;
  std::uint32_t rcv_adv = 0;  // right edge of the window announced
  std::uint32_t last_ack_sent = 0;
  std::uint32_t ts_recent = 0;
  // Timer state.
  std::uint32_t retries = 0;
  std::uint32_t persist_backoff = 0;
  std::uint32_t persist_unanswered = 0;
  std::uint32_t keepalive_probes = 0;
  std::uint32_t rtt_backoff = 0;
  // Options.
  std::uint32_t keepalive_idle_s = 0;
  std::uint32_t keepalive_interval_s = 0;
  std::uint32_t keepalive_count = 0;
  std::uint32_t write_end = 0;  // with kTcbWriteShut
  // Ring positions: the send ring's head (head_seq's byte) and the receive ring's tail (rcv_nxt's).
  std::uint64_t send_ring_head = 0;
  std::uint64_t receive_ring_tail = 0;
  // Round trip and congestion.
  std::uint64_t srtt_ns = 0;
  std::uint64_t rttvar_ns = 0;
  std::uint64_t base_rto_ns = 0;
  std::uint64_t cwnd = 0;
  std::uint64_t ssthresh = 0;
  // Timers, absolute on the monotonic clock (the same in every process); UINT64_MAX: disarmed.
  std::uint64_t rto_at = 0;
  std::uint64_t persist_at = 0;
  std::uint64_t keepalive_at = 0;
  std::uint64_t linger_at = 0;
  std::uint64_t last_received_ns = 0;
  std::uint64_t persist_sent_ns = 0;
  std::uint64_t reserved1[2] = {};
};
static_assert(sizeof(Tcb) == 256);

// ListenerEntry::flags bits.
inline constexpr std::uint8_t kListenerInUse = 1 << 0;
inline constexpr std::uint8_t kListenerNodelay = 1 << 1;
inline constexpr std::uint8_t kListenerCork = 1 << 2;
inline constexpr std::uint8_t kListenerKeepalive = 1 << 3;

struct alignas(64) ListenerEntry {
  std::uint32_t version = 0;  // as Tcb::version
  std::uint8_t flags = 0;     // kListener*
  std::uint8_t congestion_algorithm = 0;
  std::uint16_t port = 0;
  std::uint32_t address = 0;
  std::uint16_t backlog = 0;
  std::uint16_t reserved0 = 0;
  std::uint32_t accept_queue = 0;  // established, not yet taken by accepted()
  std::uint32_t keepalive_idle_s = 0;
  std::uint32_t keepalive_interval_s = 0;
  std::uint32_t keepalive_count = 0;
  std::uint32_t reserved[8] = {};
};
static_assert(sizeof(ListenerEntry) == 64);

// Writes an entry (Tcb or ListenerEntry) crash-consistently: `change` runs between the odd and the
// even version.
template <class Entry, class Change>
void update_entry(Entry& entry, Change&& change) {
  std::atomic_ref<std::uint32_t> version(entry.version);
  const std::uint32_t even = version.load(std::memory_order_relaxed) & ~1u;
  version.store(even + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  change(entry);
  version.store(even + 2, std::memory_order_release);
}

// Copies an entry into `out`. false: the entry was being changed (an odd version: a writer died
// in the middle, or is still writing) or changed during the copy.
template <class Entry>
bool read_entry(const Entry& entry, Entry& out) {
  std::atomic_ref<std::uint32_t> version(const_cast<std::uint32_t&>(entry.version));
  const std::uint32_t before = version.load(std::memory_order_acquire);
  std::memcpy(static_cast<void*>(&out), &entry, sizeof(Entry));
  std::atomic_thread_fence(std::memory_order_acquire);
  const std::uint32_t after = version.load(std::memory_order_relaxed);
  return (before & 1u) == 0 && before == after;
}

}  // namespace flotilla::tcp
