// The messages the network stack's processes send each other over their channels. Packets never
// travel inside a message: a message carries a BufferHandle into the supervisor's buffer pool, and
// the sender hands the buffer to the receiver (BufferPool::hand_off) before it sends. Everything
// here comes from another process, so the receiver checks every field before it trusts it.
//
// Who talks to whom (one channel per pair):
//   driver <-> ip     frame                     an Ethernet frame, either direction
//   driver  -> ip     link_info                 the device's MAC and MTU (at start, and again
//                                               whenever IP restarts)
//   ip      -> pf     verdict_request           "may this IPv4 packet pass?"; IP keeps the buffer
//   pf      -> ip     verdict                   the answer, matched by ticket
//   ip     <-> udp    transport_packet          a UDP datagram (handle starts at the UDP header)
//   udp     -> ip     port_binding              claim or release a local port in the flow table
//   udp    <-> app    socket_* messages         the native socket API (sockets/)
//
// Addresses and ports in message bodies are in host byte order.
#pragma once

#include <cstdint>

#include "dataplane/buffer_pool.hpp"
#include "dataplane/message.hpp"

namespace flotilla::stack {

constexpr MessageKind stack_kind(std::uint16_t offset) {
  return static_cast<MessageKind>(static_cast<std::uint16_t>(MessageKind::user) + 0x100 + offset);
}

inline constexpr MessageKind kFrameKind = stack_kind(0);
inline constexpr MessageKind kVerdictRequestKind = stack_kind(1);
inline constexpr MessageKind kVerdictKind = stack_kind(2);
inline constexpr MessageKind kTransportPacketKind = stack_kind(3);
inline constexpr MessageKind kPortBindingKind = stack_kind(4);
inline constexpr MessageKind kSocketOpenKind = stack_kind(5);
inline constexpr MessageKind kSocketStatusKind = stack_kind(6);
inline constexpr MessageKind kSocketDatagramKind = stack_kind(7);
inline constexpr MessageKind kSocketCloseKind = stack_kind(8);
inline constexpr MessageKind kLinkInfoKind = stack_kind(9);

// Bytes a transport leaves free in front of its header, so IP can put the IPv4 and Ethernet headers
// in the same buffer without copying.
inline constexpr std::uint16_t kHeadroom = 128;

// driver <-> ip. `frame` covers the Ethernet header and everything after it.
struct FrameBody {
  BufferHandle frame;
};

// driver -> ip.
struct LinkInfoBody {
  std::uint8_t mac[6];
  std::uint16_t mtu;  // the largest IP packet the link carries (1500 on Ethernet)
};

enum class Direction : std::uint8_t { in = 0, out = 1 };
enum class Action : std::uint8_t { pass = 0, block = 1 };

// ip -> pf. `packet` starts at the IPv4 header. The filter maps the pool read-only: it reads the
// bytes and never frees or keeps the buffer. `ticket` is IP's, echoed back unchanged.
struct VerdictRequestBody {
  BufferHandle packet;
  std::uint32_t ticket;
  Direction direction;
  std::uint8_t reserved[3];
};

// pf -> ip.
struct VerdictBody {
  std::uint32_t ticket;
  Action action;
  std::uint8_t reserved;
  std::uint16_t rule;  // the deciding rule's index + 1; 0 for the default
  std::uint32_t packet_generation;  // the request's handle generation, so a late answer is caught
};

// ip <-> udp (and the TCP replicas later). `segment` starts at the transport header; on the way
// out at least kHeadroom bytes precede it in the buffer.
struct TransportPacketBody {
  BufferHandle segment;
  std::uint32_t remote_address;
  std::uint32_t local_address;
  std::uint16_t remote_port;
  std::uint16_t local_port;
  std::uint8_t protocol;  // IPPROTO_UDP, IPPROTO_TCP
  std::uint8_t reserved[3];
};

enum class BindingChange : std::uint8_t { claim = 0, release = 1 };

// udp -> ip: the sender owns (claim) or no longer owns (release) packets to this local port.
struct PortBindingBody {
  std::uint8_t protocol;
  BindingChange change;
  std::uint16_t local_port;
};

// app <-> udp: the native socket API (sockets/udp_sockets.hpp). The application picks socket ids.
// open: bind a UDP socket to local_port (0: an ephemeral port). status: the answer to open, or an
// error that closed the socket; error is 0 or an errno value. datagram: payload only; on the way
// out at least kHeadroom + 8 bytes precede it in the buffer, and local_port is the socket's bound
// port (the status said which), so the UDP server finds the socket without a search. close:
// release the socket.
struct SocketOpenBody {
  std::uint32_t socket;
  std::uint16_t local_port;
  std::uint8_t protocol;
  std::uint8_t reserved;
};

struct SocketStatusBody {
  std::uint32_t socket;
  std::int32_t error;
  std::uint16_t local_port;
  std::uint16_t exposed_slot;  // 1 + the socket's slot in the exposed table (sockets/); 0: none
};

struct SocketDatagramBody {
  BufferHandle payload;
  std::uint32_t socket;
  std::uint32_t remote_address;
  std::uint16_t remote_port;
  std::uint16_t local_port;
};

struct SocketCloseBody {
  std::uint32_t socket;
};

static_assert(sizeof(FrameBody) <= Message::kBodyBytes);
static_assert(sizeof(SocketDatagramBody) <= Message::kBodyBytes);
static_assert(sizeof(LinkInfoBody) <= Message::kBodyBytes);
static_assert(sizeof(VerdictRequestBody) <= Message::kBodyBytes);
static_assert(sizeof(VerdictBody) <= Message::kBodyBytes);
static_assert(sizeof(TransportPacketBody) <= Message::kBodyBytes);
static_assert(sizeof(PortBindingBody) <= Message::kBodyBytes);

}  // namespace flotilla::stack
