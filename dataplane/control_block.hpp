// What the supervisor hands every component it starts, in one shared region per component: who it
// is (name, id, incarnation), which channels it was given and on which descriptors, its counters
// and heartbeat, the fault it has been asked to inject, and a control ring in each direction.
//
// The descriptors a component receives sit at fixed numbers, so nothing needs parsing:
//   3 control region (this layout)   4 doorbells of every component   5 state store
//   6 buffer pool                    7.. one per channel, in ChannelGrant order, then one per
//                                    declared region, in RegionGrant order, then the wake
//                                    eventfds of leased peers (ChannelGrant::peer_wake_fd)
//
// A leased component (an external one: a program started with `flotilla run`, not by the
// supervisor) gets the same descriptors over the control socket, in the same order, with its own
// wake eventfd last (ControlBlock::wake_fd); it maps the numbers above onto what it received.
#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>

#include "dataplane/counters.hpp"
#include "dataplane/doorbell.hpp"
#include "dataplane/message.hpp"
#include "dataplane/ring.hpp"

namespace flotilla {

inline constexpr int kControlFd = 3;
inline constexpr int kBellsFd = 4;
inline constexpr int kStateFd = 5;
inline constexpr int kPoolFd = 6;
inline constexpr int kFirstChannelFd = 7;

// Application seats the configuration may declare ([limits] app_seats). Each seat is a component
// with a channel (and a region) to every server it uses, so the limits below grow with it.
inline constexpr std::uint32_t kMaxAppSeats = 128;
inline constexpr std::uint32_t kMaxComponents = 256;  // ids 1..255; 0 is "nobody"
// The supervisor's own id as the peer of the channels it opens to name servers (a client of the
// fleet); configured components get ids 1..254.
inline constexpr ComponentId kSupervisorId = kMaxComponents - 1;
inline constexpr const char* kSupervisorChannel = "supervisor";
// The channels a server's own configuration declares, plus one per seat.
inline constexpr std::uint32_t kMaxStaticChannels = 16;
inline constexpr std::uint32_t kMaxChannelsPerComponent = kMaxStaticChannels + kMaxAppSeats;
inline constexpr std::uint32_t kNameBytes = 32;
inline constexpr std::uint32_t kControlRingCapacity = 64;

enum class ChannelSideCode : std::uint32_t { a = 0, b = 1 };

// Likewise the declared regions: a server's own, plus one per seat.
inline constexpr std::uint32_t kMaxStaticRegions = 8;
inline constexpr std::uint32_t kMaxRegionsPerComponent = kMaxStaticRegions + kMaxAppSeats;
// control, bells, state, pool, the channels, the regions, a wake eventfd per channel, our own.
inline constexpr std::uint32_t kMaxGrantedDescriptors = 4 + 2 * kMaxChannelsPerComponent + kMaxRegionsPerComponent + 1;

// A shared region the configuration declares ([[region]]): named, sized, and handed to some
// components writable and to others read-only.
struct RegionGrant {
  char name[kNameBytes];
  std::uint64_t bytes;
  std::int32_t fd;
  std::uint32_t writable;
};

struct ChannelGrant {
  char name[kNameBytes];
  std::uint32_t capacity;
  ChannelSideCode side;
  ComponentId peer;
  std::int32_t fd;
  // The peer is a leased component that sleeps on an eventfd rather than a futex: the descriptor
  // of that eventfd, written when this end sends while the peer sleeps; -1 otherwise.
  std::int32_t peer_wake_fd;
  // 1: the peer is an application seat no program held when this grant was written, so its
  // channel is idle (polled rarely) until a peer_restarted notice says a program holds it.
  std::uint32_t peer_idle;
};

// forbidden_call: the component opens a socket, which its sandbox forbids (SIGSYS), so a test can
// show the sandbox holds.
enum class Fault : std::uint32_t { none = 0, crash = 1, abort = 2, hang = 3, corrupt = 4, forbidden_call = 5 };

inline std::string_view fault_name(Fault fault) {
  switch (fault) {
    case Fault::none: return "none";
    case Fault::crash: return "crash";
    case Fault::abort: return "abort";
    case Fault::hang: return "hang";
    case Fault::corrupt: return "corrupt";
    case Fault::forbidden_call: return "forbidden-call";
  }
  return "unknown";
}

// The faults a user may inject, by name; false for anything else.
inline bool parse_fault(std::string_view name, Fault* fault) {
  for (Fault candidate : {Fault::crash, Fault::abort, Fault::hang, Fault::corrupt, Fault::forbidden_call}) {
    if (name == fault_name(candidate)) {
      *fault = candidate;
      return true;
    }
  }
  return false;
}

// Control messages. Supervisor -> component: peer_restarted, and to name servers member_down and
// member_up. Component -> supervisor: recovered, and from a name server fleet_joined.
inline constexpr auto kRecoveredKind = static_cast<MessageKind>(static_cast<std::uint16_t>(MessageKind::user) - 1);
inline constexpr auto kMemberDownKind = static_cast<MessageKind>(static_cast<std::uint16_t>(MessageKind::user) - 2);
inline constexpr auto kMemberUpKind = static_cast<MessageKind>(static_cast<std::uint16_t>(MessageKind::user) - 3);
inline constexpr auto kFleetJoinedKind = static_cast<MessageKind>(static_cast<std::uint16_t>(MessageKind::user) - 4);
// Component -> supervisor: something the component survived that belongs in the event log (a failed
// XDP offload, say). The text is NUL-padded; the supervisor treats it as untrusted.
inline constexpr auto kReportKind = static_cast<MessageKind>(static_cast<std::uint16_t>(MessageKind::user) - 5);
// The event log keeps this many reports per incarnation; a component that sends more is noisy or
// hostile, and the rest are counted in one last event.
inline constexpr std::uint32_t kMaxReportsPerIncarnation = 32;

// member_down: `member` died, force it out. member_up: `member` restarted and joins; `donor` sends
// it the snapshot. fleet_joined: the sender (`member`) installed its snapshot and serves.
struct FleetNotice {
  ComponentId member;
  ComponentId donor;
  std::uint64_t incarnation;
};

struct PeerRestartedNotice {
  ComponentId peer;
  std::uint32_t idle;  // 1: the peer is an application seat whose lease ended (ChannelGrant::peer_idle)
  std::uint64_t incarnation;
};

struct ReportNotice {
  char text[Message::kBodyBytes];
};

struct RecoveredNotice {
  std::uint64_t incarnation;
  std::uint64_t served_at_ns;  // CLOCK_MONOTONIC when the first message was served
};

struct alignas(kCacheLine) ControlBlock {
  static constexpr std::uint64_t kMagic = 0x6c7274436f6c6646ull;  // "FloCtrl"
  static constexpr std::uint32_t kVersion = 5;

  std::uint64_t magic;
  std::uint32_t version;
  ComponentId id;
  std::uint64_t incarnation;
  char name[kNameBytes];
  std::uint32_t channel_count;
  std::uint32_t reserved;
  ChannelGrant channels[kMaxChannelsPerComponent];
  std::uint32_t region_count;
  std::int32_t wake_fd;  // leased components: the eventfd their peers write (see above); else -1
  RegionGrant regions[kMaxRegionsPerComponent];

  alignas(kCacheLine) std::atomic<std::uint32_t> fault_request;  // a Fault, set by the supervisor
  std::uint32_t pool_writable;  // 0: the pool is mapped read-only (the packet filter)
  alignas(kCacheLine) CounterBlock counters;
  NamedCounterTable named_counters;
  // Then two rings of kControlRingCapacity messages: to the component, to the supervisor.

  static constexpr std::size_t rings_offset() {
    return (sizeof(ControlBlock) + kCacheLine - 1) / kCacheLine * kCacheLine;
  }
  static constexpr std::size_t ring_bytes() { return RingLayout::bytes_for(kControlRingCapacity); }
  static constexpr std::size_t region_bytes() { return rings_offset() + 2 * ring_bytes(); }
};

struct DoorbellTable {
  Doorbell bells[kMaxComponents];
};

}  // namespace flotilla
