// The exposed TCP sockets an application shares with one TCP replica (DESIGN.md, "Exposed
// sockets"): a region per (application, replica) pair, named after their channel plus "-tcp"
// (tcp_region_name), with both as writers. The replica formats it and hands pages out; the
// application never picks a page itself.
//
// Each page is one socket: a control block of state words, then the send ring (application ->
// replica) and the receive ring (replica -> application) of `ring_bytes` each. Readiness is loads:
// readable = receive ring non-empty or EOF or error; writable = send ring has room; acceptable =
// accept_ready > 0. Nothing here is trusted by the side that did not write it: the application
// checks the header and every page index it is told; the replica keeps its own ring indices
// privately (components/formats/byte_ring.hpp) and treats everything the application stores as a request.
//
// Waking the other side without a message per byte: each side sets a "pending" word before it
// sends its notification message, and sends only when the word was clear; the receiver clears the
// word, then looks at the page. So a busy socket costs one message per batch, not per write.
//   application -> replica: set `requests` bits, then if exchange(kick_pending, 1) was 0, send
//                           kTcpKickKind {page, generation}.
//   replica -> application: update the state words, then if exchange(event_pending, 1) was 0,
//                           send kTcpEventKind {page, generation}.
//
// What the application side (sockets/tcp_sockets.cpp) relies on from the replica:
//   - a page is announced (TcpOpened, TcpAccepted) after its generation was bumped and its status
//     left `free`, with both rings at stream position 0; the application then resets the words it
//     writes (requests, kick_pending, accepted) and clears event_pending;
//   - the send ring is consumed when the peer acknowledges the bytes, so an empty send ring after
//     a shutdown means everything arrived;
//   - an event follows every change a waiting application needs: status, error, flags, new bytes
//     in the receive ring, room freed in the send ring;
//   - close is kTcpRequestClose; abort is kTcpRequestAbort | kTcpRequestClose;
//   - a connection page of ours whose generation word reads 0 is a holder's: another process
//     holding the connection carries it (replica_server.hpp, holders); the rings are left alone
//     until the word reads the page's generation again, with the rings' positions set anew.
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "components/formats/byte_ring.hpp"

namespace flotilla::formats {

inline std::string tcp_region_name(std::string_view channel) { return std::string(channel) + "-tcp"; }

// What each socket of every seat costs a TCP replica's state store: its slot entry (the replica
// asserts the size). The supervisor refuses a "tcp" state_bytes that cannot hold them all.
inline constexpr std::size_t kTcpSlotEntryBytes = 40;

enum class TcpSocketStatus : std::uint32_t {
  free = 0,        // not assigned
  connecting = 1,  // connect() sent the SYN
  listening = 2,
  connected = 3,   // established (or past it, while data may still flow)
  closed = 4,      // the connection is over; `error` says why (0: an orderly close)
};

// Bits of TcpSocketControl::flags.
inline constexpr std::uint32_t kTcpPeerClosed = 1;   // FIN received: after the ring drains, EOF
inline constexpr std::uint32_t kTcpWriteClosed = 2;  // our FIN is queued: writes fail with EPIPE

// Bits of TcpSocketControl::holder_ready: on a holder's page (another process's page carries the
// connection), what the carrier's page offered a poller when the replica last told it.
inline constexpr std::uint32_t kTcpHolderReadable = 1;
inline constexpr std::uint32_t kTcpHolderWritable = 2;

// Bits of TcpSocketControl::requests (set by the application).
inline constexpr std::uint32_t kTcpRequestSend = 1;          // new bytes in the send ring
inline constexpr std::uint32_t kTcpRequestWindow = 2;        // bytes consumed from the receive ring
inline constexpr std::uint32_t kTcpRequestShutdownWrite = 4; // send FIN after the queued bytes
inline constexpr std::uint32_t kTcpRequestClose = 8;         // the application is done with the socket
inline constexpr std::uint32_t kTcpRequestAbort = 16;        // close with RST (SO_LINGER 0)
inline constexpr std::uint32_t kTcpRequestAccepted = 32;     // listener: `accepted` grew
// Listener: an accept found this process's queue empty while the group holds connections; the
// replica announces one of them here (moving it from another member's region if need be), then
// copies `takes_asked` to `takes_served`.
inline constexpr std::uint32_t kTcpRequestTake = 64;

struct alignas(64) TcpSocketControl {
  // Written by the replica.
  std::atomic<std::uint32_t> generation;  // bumped each time the page is handed out
  std::atomic<TcpSocketStatus> status;
  std::atomic<std::int32_t> error;        // errno once closed abnormally (ECONNRESET, ...)
  std::atomic<std::uint32_t> flags;       // kTcpPeerClosed, kTcpWriteClosed
  std::atomic<std::uint32_t> accept_ready;  // listener: connections waiting for accept
  std::atomic<std::uint32_t> event_pending;  // set by the replica, cleared by the application
  std::uint32_t local_address;  // host order
  std::uint32_t remote_address;
  std::uint16_t local_port;
  std::uint16_t remote_port;
  // Set when the replica is about to move the connection to another holder's page (a carry, a
  // fork child's claim): the application then leaves the rings alone and asks for it back. The
  // replica moves it once `in_use` reads 0 after this was set (both sequentially consistent, so
  // the two sides cannot both miss each other).
  std::atomic<std::uint32_t> revoked;
  std::atomic<std::uint32_t> holder_ready;  // kTcpHolderReadable, kTcpHolderWritable
  // Listener: 1 while the group holds established connections unannounced (placed with a member
  // whose process does not accept, or, where processes share the listener, with one not waiting
  // to accept), or once the replica placed a connection in the handshake with this member before
  // its process accepted. Any member's accept takes one (kTcpRequestTake); an event comes each time
  // the group starts holding.
  std::atomic<std::uint32_t> holds_connections;
  // Listener: the `takes_asked` value of the last take the replica served.
  std::atomic<std::uint32_t> takes_served;
  std::uint32_t reserved0[3];
  // Written by the application.
  alignas(64) std::atomic<std::uint32_t> requests;
  std::atomic<std::uint32_t> kick_pending;  // set by the application, cleared by the replica
  // Listener: how many connections the application has taken with accept() so far (a running
  // count, so kicks may coalesce). The replica zeroes it when it hands the page out, and counts its
  // accept queue down by the growth it sees (clamped to what it has announced).
  std::atomic<std::uint32_t> accepted;
  // 1 while the application is inside a ring operation of a connection other processes hold
  // (set before it checks `generation` and `revoked`, cleared after its last index store).
  std::atomic<std::uint32_t> in_use;
  // Listener: a running count of the takes its application asked for (kTcpRequestTake).
  std::atomic<std::uint32_t> takes_asked;
  // Listener: non-zero while a thread of the application sleeps in a call that waits for this
  // listener to be readable (accept, poll, select, epoll): where processes share a listener, a new
  // connection goes to such a member first.
  std::atomic<std::uint32_t> accept_waiting;
  std::uint32_t reserved1[10];
  // Written by the replica: what TCP_INFO reports (best effort, relaxed).
  alignas(64) std::atomic<std::uint32_t> tcp_state;  // tcp::TcpState
  std::atomic<std::uint32_t> rtt_us;
  std::atomic<std::uint32_t> rto_ms;
  std::atomic<std::uint32_t> mss;
  std::atomic<std::uint64_t> cwnd_bytes;
  std::atomic<std::uint64_t> retransmits;
  std::atomic<std::uint64_t> bytes_sent;      // acknowledged by the peer
  std::atomic<std::uint64_t> bytes_received;  // placed in the receive ring
  std::atomic<std::uint64_t> segments_in;
};
static_assert(sizeof(TcpSocketControl) == 192);

// A socket page: control, then the rings' indices, then the rings' bytes (aligned to memory pages).
struct alignas(64) TcpSocketPageHeader {
  TcpSocketControl control;
  ByteRingIndices send;     // application produces, replica consumes
  ByteRingIndices receive;  // replica produces, application consumes
};

struct alignas(64) TcpRegionHeader {
  static constexpr std::uint64_t kMagic = 0x6b636f5370635446ull;  // "FTcpSock"
  static constexpr std::uint32_t kVersion = 1;
  std::atomic<std::uint64_t> magic;  // published last
  std::uint32_t version;
  std::uint32_t page_count;
  std::uint32_t ring_bytes;  // each ring's size: a power of two
  std::uint32_t page_stride;
};

// A view of the region for either side. Values in the header are checked against the region's real
// size, so a bad header yields an invalid view rather than out-of-range pages.
class TcpRegion {
 public:
  static constexpr std::size_t kMemoryPageBytes = 4096;

  static constexpr std::size_t page_stride(std::size_t ring_bytes) {
    return (sizeof(TcpSocketPageHeader) + kMemoryPageBytes - 1) / kMemoryPageBytes * kMemoryPageBytes + 2 * ring_bytes;
  }
  static constexpr std::size_t bytes_for(std::size_t pages, std::size_t ring_bytes) {
    return kMemoryPageBytes + pages * page_stride(ring_bytes);
  }

  // The replica's view: formats the region with as many pages as fit (every page free). Invalid
  // when ring_bytes is not a power of two of at least 4096 or not one page fits.
  static TcpRegion format(std::span<std::byte> region, std::size_t ring_bytes) {
    if (!std::has_single_bit(ring_bytes) || ring_bytes < kMemoryPageBytes || region.size() < bytes_for(1, ring_bytes)) {
      return {};
    }
    auto* header = reinterpret_cast<TcpRegionHeader*>(region.data());
    // A region never formatted is as its memfd was made: zeros, so every page is free already.
    // Leaving its pages alone keeps an idle application seat from costing a memory page per socket.
    const bool fresh = header->magic.load(std::memory_order_relaxed) == 0 && header->version == 0;
    header->magic.store(0, std::memory_order_relaxed);
    header->version = TcpRegionHeader::kVersion;
    header->ring_bytes = static_cast<std::uint32_t>(ring_bytes);
    header->page_stride = static_cast<std::uint32_t>(page_stride(ring_bytes));
    header->page_count = static_cast<std::uint32_t>((region.size() - kMemoryPageBytes) / page_stride(ring_bytes));
    TcpRegion view(region, header->page_count, ring_bytes);
    for (std::uint32_t i = 0; !fresh && i < header->page_count; ++i) {
      auto& control = view.page(i)->control;
      control.status.store(TcpSocketStatus::free, std::memory_order_relaxed);
      control.generation.store(0, std::memory_order_relaxed);
    }
    header->magic.store(TcpRegionHeader::kMagic, std::memory_order_release);
    return view;
  }

  // The application's view: invalid until the replica has formatted the region, or when the header
  // does not fit the region it is in.
  static TcpRegion attach(std::span<std::byte> region) {
    if (region.size() < kMemoryPageBytes) return {};
    const auto* header = reinterpret_cast<const TcpRegionHeader*>(region.data());
    if (header->magic.load(std::memory_order_acquire) != TcpRegionHeader::kMagic) return {};
    if (header->version != TcpRegionHeader::kVersion) return {};
    const std::size_t ring_bytes = header->ring_bytes;
    if (!std::has_single_bit(ring_bytes) || ring_bytes < kMemoryPageBytes) return {};
    if (header->page_stride != page_stride(ring_bytes)) return {};
    const std::size_t fits = (region.size() - kMemoryPageBytes) / page_stride(ring_bytes);
    if (header->page_count == 0 || header->page_count > fits) return {};
    return TcpRegion(region, header->page_count, ring_bytes);
  }

  TcpRegion() = default;
  bool valid() const { return page_count_ != 0; }
  std::uint32_t page_count() const { return page_count_; }
  std::size_t ring_bytes() const { return ring_bytes_; }

  // nullptr for an index out of range.
  TcpSocketPageHeader* page(std::uint32_t index) const {
    if (index >= page_count_) return nullptr;
    return reinterpret_cast<TcpSocketPageHeader*>(page_base(index));
  }
  // The page's ring bytes (empty for an index out of range).
  std::span<std::byte> send_bytes(std::uint32_t index) const {
    if (index >= page_count_) return {};
    return {page_base(index) + data_offset(), ring_bytes_};
  }
  std::span<std::byte> receive_bytes(std::uint32_t index) const {
    if (index >= page_count_) return {};
    return {page_base(index) + data_offset() + ring_bytes_, ring_bytes_};
  }

 private:
  TcpRegion(std::span<std::byte> region, std::uint32_t pages, std::size_t ring_bytes)
      : base_(region.data()), page_count_(pages), ring_bytes_(ring_bytes) {}
  std::byte* page_base(std::uint32_t index) const { return base_ + kMemoryPageBytes + index * page_stride(ring_bytes_); }
  static constexpr std::size_t data_offset() { return (sizeof(TcpSocketPageHeader) + kMemoryPageBytes - 1) / kMemoryPageBytes * kMemoryPageBytes; }

  std::byte* base_ = nullptr;
  std::uint32_t page_count_ = 0;
  std::size_t ring_bytes_ = 0;
};

}  // namespace flotilla::formats
