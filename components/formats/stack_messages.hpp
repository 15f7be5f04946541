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
//   ip     <-> tcpN   transport_packet          a TCP segment; IP sends a segment with no exact
//                                               flow owner to replica hash(4-tuple) % N
//   tcpN    -> ip     tcp_replica               "I am replica `index` of `count`", and in which
//                                               mode (TcpReplicaMode): at start, again when IP
//                                               restarts, and when a recovery is done
//   tcpN    -> ip     flow_binding              claim or release one exact TCP 4-tuple
//   app    <-> tcpN   tcp_* messages            the native TCP socket API (components/formats/tcp_socket_page.hpp)
//   tcpN    -> app    tcp_announce              the replica's incarnation and mode (TcpAnnounceBody)
//   app     -> tcpN   tcp_join, tcp_activate    listener groups: a process joins a listener it
//                                               inherited, and says when it accepts on it
//   app     -> tcpN   tcp_fork_hold, tcp_claim, connections shared over fork: a process about to
//                     tcp_release               fork pins its connections, a child takes one over,
//                                               a process that forked closes one
//   supervisor -> tcpN tcp_fork_ended           (control ring) no process holds a fork's pins
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
inline constexpr MessageKind kFlowBindingKind = stack_kind(10);
inline constexpr MessageKind kTcpOpenKind = stack_kind(11);
inline constexpr MessageKind kTcpOpenedKind = stack_kind(12);
inline constexpr MessageKind kTcpAcceptedKind = stack_kind(13);
inline constexpr MessageKind kTcpKickKind = stack_kind(14);
inline constexpr MessageKind kTcpEventKind = stack_kind(15);
inline constexpr MessageKind kTcpOptionKind = stack_kind(16);
inline constexpr MessageKind kTcpReplicaKind = stack_kind(17);
inline constexpr MessageKind kTcpAnnounceKind = stack_kind(18);
inline constexpr MessageKind kTcpJoinKind = stack_kind(19);
inline constexpr MessageKind kTcpActivateKind = stack_kind(20);
inline constexpr MessageKind kTcpForkHoldKind = stack_kind(21);
inline constexpr MessageKind kTcpClaimKind = stack_kind(22);
inline constexpr MessageKind kTcpReleaseKind = stack_kind(23);
inline constexpr MessageKind kTcpForkEndedKind = stack_kind(24);
inline constexpr MessageKind kTcpCarryKind = stack_kind(25);
inline constexpr MessageKind kSocketConnectKind = stack_kind(26);

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

// pf -> ip. kVerdictCacheable: the same verdict holds for every packet of this flow in this
// direction that is not a TCP SYN, FIN or RST, so IP may pass them without asking
// (components/ip/verdict_cache.hpp).
inline constexpr std::uint8_t kVerdictCacheable = 1;
struct VerdictBody {
  std::uint32_t ticket;
  Action action;
  std::uint8_t flags;
  std::uint16_t rule;  // the deciding rule's index + 1; 0 for the default
  std::uint32_t packet_generation;  // the request's handle generation, so a late answer is caught
};

// ip <-> udp and ip <-> the TCP replicas. `segment` starts at the transport header; on the way
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
// release the socket. connect: the socket's peer (connect(2)), or none (remote_port 0); no answer.
// `nonce` is the opening program's (sockets/program_nonce.hpp): the socket's status and datagrams
// carry it back, so a program on a seat another one left takes none of that one's.
struct SocketOpenBody {
  std::uint32_t socket;
  std::uint16_t local_port;
  std::uint8_t protocol;
  std::uint8_t options;  // kSocketOpen* bits
  std::uint32_t nonce;
};

// open: SO_REUSEPORT. The socket shares local_port with the sockets bound there that all opened
// with this bit (the UDP server's port groups, components/udp/udp_server.hpp); otherwise
// EADDRINUSE as before.
inline constexpr std::uint8_t kSocketOpenReusePort = 1;
// open: SO_REUSEADDR. Sockets that all set it share a port too; as on Linux, two sockets may share
// one when both set SO_REUSEADDR or both SO_REUSEPORT.
inline constexpr std::uint8_t kSocketOpenReuseAddress = 2;

struct SocketStatusBody {
  std::uint32_t socket;
  std::int32_t error;
  std::uint16_t local_port;
  std::uint16_t exposed_slot;  // 1 + the socket's page in the exposed table (sockets/); 0: none
  std::uint32_t nonce;  // the opener's (SocketOpenBody)
};

struct SocketDatagramBody {
  BufferHandle payload;
  std::uint32_t socket;
  std::uint32_t remote_address;
  std::uint16_t remote_port;
  std::uint16_t local_port;
  std::uint32_t local_address = 0;  // udp -> app: where the datagram was sent (IP_PKTINFO); app -> udp: unused
  std::uint32_t nonce = 0;          // udp -> app: the socket's opener's (SocketOpenBody); app -> udp: unused
};

struct SocketCloseBody {
  std::uint32_t socket;
};

// app -> udp. From then on the socket takes datagrams from remote_address:remote_port only, and
// takes them before the unconnected sockets sharing its port do.
struct SocketConnectBody {
  std::uint32_t socket;
  std::uint32_t remote_address;  // 0 with remote_port 0: no peer any more (AF_UNSPEC)
  std::uint16_t remote_port;
  std::uint16_t local_port;  // the socket's bound port, as in a datagram
};

// tcpN -> ip: the sender owns (claim) or no longer owns (release) exactly this TCP flow.
struct FlowBindingBody {
  std::uint32_t local_address;
  std::uint32_t remote_address;
  std::uint16_t local_port;
  std::uint16_t remote_port;
  std::uint8_t protocol;
  BindingChange change;
  std::uint8_t reserved[2];
};

// What a replica's announce says about what it held before it sent it. The values are on the
// wire (0 and 1 were the old `fresh` flag); any other value is refused and counted.
enum class TcpReplicaMode : std::uint8_t {
  // The receiver (IP, or a new application on the channel) restarted and is told again: the
  // sender is unchanged and its flows stand.
  ip_restarted = 0,
  // A new incarnation with nothing of its predecessor: IP drops every flow the sender owned.
  fresh = 1,
  // A new incarnation restoring its predecessor's connections: IP keeps the sender's flows, and
  // the sender claims again (flow_binding claim) each flow it restored.
  recovering = 2,
  // The restore is done: IP drops the sender's flows it did not claim again since `recovering`.
  recovered = 3,
};

// tcpN -> ip: which replica the sender is. IP spreads TCP segments that no exact flow claims
// (SYNs, and anything for a connection nobody has) over the replicas by hash of the 4-tuple.
struct TcpReplicaBody {
  std::uint16_t index;
  std::uint16_t count;
  TcpReplicaMode mode;
  std::uint8_t reserved[3];
};

// tcpN -> app: what became of the application's sockets on this replica. A replica sends it as
// the first message of each incarnation on every application channel, once the region is ready
// (formatted, or restored), and again to each new application incarnation on the channel:
//   fresh         the region was formatted anew: every socket on this replica is gone;
//   recovering    (or recovered) the region and its pages are as the predecessor left them, with
//                 generation words intact and kick_pending cleared; pages whose open was never
//                 answered were aborted. One kTcpEventKind follows for each live page and one
//                 kTcpAcceptedKind for each accepted connection still queued;
//   ip_restarted  nothing changed (the application is the one that is new).
// The application matches it with the host's peer-restarted notice by `incarnation`.
struct TcpAnnounceBody {
  std::uint64_t incarnation;
  TcpReplicaMode mode;
  std::uint8_t reserved[7];
};

// app <-> tcpN: the native TCP socket API (sockets/). Sockets live in the region the pair shares
// (components/formats/tcp_socket_page.hpp); the replica hands out its pages, and every later message names a
// page and its generation, so a message about a page since reused is recognised and ignored.
enum class TcpOpenOperation : std::uint8_t { connect = 0, listen = 1 };
inline constexpr std::uint8_t kTcpOpenNoDelay = 1;    // TCP_NODELAY from the start
inline constexpr std::uint8_t kTcpOpenNewReno = 2;    // NewReno instead of CUBIC
inline constexpr std::uint8_t kTcpOpenKeepalive = 4;  // SO_KEEPALIVE from the start
// listen: SO_REUSEPORT. The listen joins the listener group at the same address:port when that
// group was made by a listen with this bit too; otherwise it is refused (EADDRINUSE) as before.
inline constexpr std::uint8_t kTcpOpenReusePort = 8;
// listen, sent again to a replica that lost its listeners (a `fresh` announce): joins the group at
// the same address:port whatever made it, so the processes that shared a listener share it again.
inline constexpr std::uint8_t kTcpOpenRejoin = 16;

// app -> tcpN. connect: to remote_address:remote_port from local_port (0: the replica picks).
// listen: on local_address (0: any):local_port, sent to every replica. `socket` is the
// application's id (its ticket) and `nonce` the asking program's (sockets/program_nonce.hpp), both
// echoed in the answer.
struct TcpOpenBody {
  std::uint32_t socket;
  TcpOpenOperation operation;
  std::uint8_t options;  // kTcpOpen* bits
  std::uint16_t backlog;
  std::uint32_t local_address;
  std::uint32_t remote_address;
  std::uint16_t local_port;
  std::uint16_t remote_port;
  std::uint32_t nonce;
};

// app -> tcpN: listener groups. A replica keeps one listener per address:port and a list of
// members, each a listener page of some application's region; each new connection goes to one
// member (TcpActivate). A process that uses a listening socket it inherited over fork joins its
// group with kTcpJoinKind: `home_page` and `home_generation` name the member it inherited (the
// parent's page on this replica), which proves it holds the socket. The answer is a
// kTcpOpenedKind for `socket`, with the new member's page: EADDRNOTAVAIL when no group at
// local_address:local_port has that member (it left, or the replica lost it).
struct TcpJoinBody {
  std::uint32_t socket;
  std::uint8_t options;  // kTcpOpen* bits
  std::uint8_t reserved;
  std::uint16_t backlog;
  std::uint32_t local_address;
  std::uint16_t local_port;
  std::uint16_t reserved2;
  std::uint32_t home_page;
  std::uint32_t home_generation;
  std::uint32_t nonce;  // as TcpOpenBody's
};

// app -> tcpN (kTcpActivateKind, a TcpPageBody naming a listener page): the process accepts on
// this listener (it polled, selected, epoll-added or accepted it), so the replica may place new
// connections with it. A member never activated gets connections only while no member is active
// (a process that opens a listener and hands it to children that accept never takes any).

// tcpN -> app: the answer to open (and to join). error 0: `page` (with `generation`) is the socket from now on;
// for connect the connection is under way and its page says when it is established or failed.
struct TcpOpenedBody {
  std::uint32_t socket;
  std::int32_t error;
  std::uint32_t page;
  std::uint32_t generation;
  std::uint16_t local_port;
  std::uint16_t reserved;
  std::uint32_t nonce;  // the asker's (TcpOpenBody)
};

// tcpN -> app: a connection on the listener `listener_page` is established and waits in `page`.
struct TcpAcceptedBody {
  std::uint32_t listener_page;
  std::uint32_t listener_generation;
  std::uint32_t page;
  std::uint32_t generation;
  std::uint32_t remote_address;
  std::uint16_t remote_port;
  std::uint16_t local_port;
  std::uint32_t local_address;
};

// app -> tcpN (kTcpKickKind: look at the page's requests and send ring) and tcpN -> app
// (kTcpEventKind: look at the page's state words). See tcp_socket_page.hpp for when they are sent.
struct TcpPageBody {
  std::uint32_t page;
  std::uint32_t generation;
};

enum class TcpOption : std::uint16_t {
  nodelay = 1,          // value 0/1
  keepalive = 2,        // value 0/1
  keepalive_idle_s = 3,
  keepalive_interval_s = 4,
  keepalive_count = 5,
  cork = 6,             // value 0/1: hold partial segments (TCP_CORK)
};

// app -> tcpN: set one socket option.
struct TcpOptionBody {
  std::uint32_t page;
  std::uint32_t generation;
  TcpOption option;
  std::uint16_t reserved;
  std::uint32_t value;
};

// Connections shared over fork (issue 14). A connection lives in the page of one seat; a fork
// child that uses a connection it inherited takes it over into a page of its own seat.
//
// app -> tcpN (kTcpForkHoldKind), sent by a process in the moment before it forks: every connection
// page of its seat that it has not closed is pinned by `fork` (a serial the process picked, unique
// in practice: 64 random bits). A close of a pinned page (kTcpReleaseKind, ordered after the hold on
// the same channel) or the end of its seat's lease leaves the connection open, its bytes still
// arriving in the page's rings, until the pin is claimed or dropped.
struct TcpForkHoldBody {
  std::uint64_t fork;
};

// app -> tcpN: a fork child takes over the connection at `page` (with `generation`) of its parent's
// seat, pinned by `fork`. The replica moves the connection into a page of the sender's region, its
// unread and unacknowledged bytes at the same stream positions, and answers with a kTcpOpenedKind
// for `socket` naming that page (EBADF: no such pinned connection; EMFILE: no page left).
struct TcpClaimBody {
  std::uint32_t socket;
  std::uint32_t page;
  std::uint32_t generation;
  std::uint32_t nonce;  // as TcpOpenBody's
  std::uint64_t fork;
};

// app -> tcpN: the application is done with the page (a TcpPageBody's page and generation, with the
// close or abort request bits of tcp_socket_page.hpp). A process that has forked closes its
// connections this way rather than with request bits, so that the close comes after its fork holds.
struct TcpReleaseBody {
  std::uint32_t page;
  std::uint32_t generation;
  std::uint32_t requests;
  std::uint32_t reserved;
};

// Holders: a claim leaves the parent's page in place as a holder's page (its generation word reads
// 0 while another page carries the connection), so that every process holding a descriptor of the
// connection may use it, and it ends with the last one's close.
// app -> tcpN (kTcpCarryKind, a TcpPageBody): the sender holds the connection of its page (page and
// generation as the replica handed them out) and wants to use it. The replica moves the connection
// there from the page that carries it, at the same stream positions and generation, and sends an
// event. A carrier that lets go while holders remain hands the connection back the same way.

// supervisor -> tcpN, on the control ring: every process that inherited `fork` closed its token
// or exited. Its remaining pins go; a connection left with no holder is closed as Linux would.
struct TcpForkEndedBody {
  std::uint64_t fork;
};

static_assert(sizeof(TcpForkHoldBody) <= Message::kBodyBytes);
static_assert(sizeof(TcpClaimBody) <= Message::kBodyBytes);
static_assert(sizeof(TcpReleaseBody) <= Message::kBodyBytes);
static_assert(sizeof(TcpForkEndedBody) <= Message::kBodyBytes);
static_assert(sizeof(FrameBody) <= Message::kBodyBytes);
static_assert(sizeof(FlowBindingBody) <= Message::kBodyBytes);
static_assert(sizeof(TcpOpenBody) <= Message::kBodyBytes);
static_assert(sizeof(TcpOpenedBody) <= Message::kBodyBytes);
static_assert(sizeof(TcpJoinBody) <= Message::kBodyBytes);
static_assert(sizeof(TcpAcceptedBody) <= Message::kBodyBytes);
static_assert(sizeof(TcpOptionBody) <= Message::kBodyBytes);
static_assert(sizeof(TcpAnnounceBody) <= Message::kBodyBytes);
static_assert(sizeof(SocketDatagramBody) <= Message::kBodyBytes);
static_assert(sizeof(SocketConnectBody) <= Message::kBodyBytes);
static_assert(sizeof(LinkInfoBody) <= Message::kBodyBytes);
static_assert(sizeof(VerdictRequestBody) <= Message::kBodyBytes);
static_assert(sizeof(VerdictBody) <= Message::kBodyBytes);
static_assert(sizeof(TransportPacketBody) <= Message::kBodyBytes);
static_assert(sizeof(PortBindingBody) <= Message::kBodyBytes);

}  // namespace flotilla::stack
