// The native TCP socket API of libflotilla, for programs that run as Flotilla components with a
// channel to each TCP replica. Each channel comes with a region the pair shares
// (components/formats/tcp_socket_page.hpp): the replica hands out its pages, and a socket's bytes move through
// the page's two byte rings. So send() and recv() are copies plus a few atomic operations, and the
// readiness calls (readable, writable, acceptable, eof, error, info) are loads: none of them makes
// a system call.
//
// Everything is non-blocking and driven by the component loop. connect() and listen() send their
// request and return at once; the outcome shows in readiness (writable() and connected(), or
// error()). The replicas' messages (the answer to an open, an accepted connection, an event saying
// a page's state words changed) arrive through the loop, and on_ready's handler runs after each
// burst of them, so an event-driven program re-checks its sockets there.
//
// Blocking: a native component has one blocking wait, its loop's doorbell. When no input is ready
// the loop sleeps on it, and every message a replica sends rings it, so a program that waits for
// data or room simply returns to the loop (host.run()) and re-checks in on_ready. Programs with a
// poll loop of their own (the preload library) sleep on the lease's eventfd instead
// (ComponentHost::arm_wake).
//
// The replicas are not trusted: every page index and generation in their messages is checked
// against the region and against what this side handed out, the region's header is checked
// (TcpRegion::attach), and the rings check the replica's indices; a bad message is counted and
// ignored, and a socket whose ring turns out corrupt fails with EPROTO.
//
// A replica that restarts says what became of our sockets in its announce (kTcpAnnounceKind, the
// first message of its incarnation on our channel). `fresh`: it lost them; each of its sockets
// fails with ECONNRESET, and every listener sends its listen to the new incarnation again so that
// it takes them back. `recovering`: it kept the region and its pages; every socket whose page
// still carries its generation (and is not free) goes on as if nothing happened, the rest fail
// with ECONNRESET, and what the dead incarnation may have left unanswered is asked again: opens
// and listens still waiting for their answer (with new tickets), the sockets' options, and a kick
// for every page with requests. The host's peer-restarted notice of a replica that never
// announced itself (an older replica) counts as `fresh`; for one that announces, the announce
// decides, whichever of the two arrives first.
//
// Listener groups: a replica keeps one listener per address:port shared by several listener pages
// (members), possibly of several processes, and places each new connection with one of them
// (components/tcp/replica_server.hpp). A listen with reuse_port joins a group made the same way;
// a process that inherited a listener over fork joins its group with join(share()) taken from the
// parent's TcpSockets; activate() says this process accepts on the listener, which makes its
// members eligible for new connections.
//
// Placement: with a channel to a name server (attach's name_channel, or use_name_fleet), each new
// connection is placed by its own lookup of /net/tcp, so the fleet's weighted pick spreads them;
// the open goes to the replica the answer names once it arrives. A lookup that fails (no answer in
// kLookupTimeoutMs, an error, a component we have no channel to, no room to ask) falls back to
// round robin. Without a name server, round robin is all there is.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "components/formats/stack_messages.hpp"
#include "components/name/name_message.hpp"
#include "dataplane/result.hpp"
#include "dataplane/component_host.hpp"
#include "dataplane/message_outbox.hpp"
#include "components/formats/byte_ring.hpp"
#include "components/formats/tcp_socket_page.hpp"

namespace flotilla::sockets {

// The shared-memory formats this library reads and writes (components/formats/).
using formats::ByteRingConsumer;
using formats::ByteRingProducer;
using formats::TcpRegion;
using formats::TcpSocketControl;
using formats::TcpSocketPageHeader;
using formats::TcpSocketStatus;
using formats::tcp_region_name;
using formats::kTcpPeerClosed;
using formats::kTcpWriteClosed;
using formats::kTcpHolderReadable;
using formats::kTcpHolderWritable;
using formats::kTcpRequestSend;
using formats::kTcpRequestWindow;
using formats::kTcpRequestShutdownWrite;
using formats::kTcpRequestClose;
using formats::kTcpRequestAbort;
using formats::kTcpRequestAccepted;
using formats::kTcpRequestTake;

// How TcpSockets reaches its replicas, one index per replica. In a component these are the host's
// channels and regions (TcpSockets::attach); tests give plain memory and a fake replica.
class TcpReplicaLinks {
 public:
  virtual ~TcpReplicaLinks() = default;
  virtual std::size_t replica_count() const = 0;
  // Sends on the channel to `replica`; returns how many messages fit (0 when it is full).
  virtual Result<std::size_t> send(std::size_t replica, std::span<const Message> messages) = 0;
  // The region shared with `replica`; the replica formats it, possibly after we attached.
  virtual std::span<std::byte> region(std::size_t replica) = 0;
  // The incarnation of `replica` that sends on our channel now (0: not known). Its announces, and
  // those of earlier incarnations still in the channel, are no restart of ours.
  virtual std::uint64_t incarnation(std::size_t replica) const {
    (void)replica;
    return 0;
  }
};

// How TcpSockets reaches a name server to place new connections. In a component it is a channel
// to the server (TcpSockets::attach) with a loop timer; tests give a fake server and clock.
class TcpNameLink {
 public:
  virtual ~TcpNameLink() = default;
  // Sends one message, all or nothing: false when the channel has no room for it now.
  virtual Result<bool> send(const name::NameMessage& message) = 0;
  virtual std::uint64_t now_ms() = 0;
  // TcpSockets::expire_lookups must run at (or soon after) `when_ms`.
  virtual void wake_at(std::uint64_t when_ms) = 0;
};

// Who is who in the name fleet's answers.
struct TcpNamePeers {
  ComponentId self = kNoComponent;    // the `client` of our lookups (the server checks it)
  ComponentId server = kNoComponent;  // the name server: replies come from it
  std::vector<ComponentId> replicas;  // by replica index: the component each replica is
};

// Where new connections went. A fallback is a connection that had a lookup but was placed round
// robin; without a name server neither counter moves.
struct TcpPlacementStats {
  std::uint64_t by_name = 0;
  std::uint64_t by_fallback = 0;
  // Why lookups fell back.
  std::uint64_t timeouts = 0;          // no answer within kLookupTimeoutMs
  std::uint64_t error_replies = 0;     // the server answered with an error (/net/tcp not found...)
  std::uint64_t unknown_replicas = 0;  // the answer names a component we have no channel to
  std::uint64_t unsent = 0;            // the name channel was full or broken
  // Replies ignored.
  std::uint64_t late_replies = 0;  // to a lookup given up already (timed out, socket closed)
  std::uint64_t bad_replies = 0;   // failed the checks (kind, client, server, unknown cookie)
};

// Options a connection starts with (the rest can be changed later with set_option).
struct SocketOptions {
  bool no_delay = false;         // TCP_NODELAY
  bool keepalive = false;        // SO_KEEPALIVE
  bool newreno = false;          // NewReno instead of CUBIC
  bool reuse_port = false;       // SO_REUSEPORT (a listener): share the address:port with others that set it
  std::uint16_t local_port = 0;  // 0: the replica picks an ephemeral port
};

// A connection's addresses (host order); zeros until the replica said.
struct TcpEndpoints {
  std::uint32_t local_address = 0;
  std::uint32_t remote_address = 0;
  std::uint16_t local_port = 0;
  std::uint16_t remote_port = 0;
};

// What the replica reports about a connection, like Linux's TCP_INFO (best effort, relaxed loads).
struct TcpInfo {
  std::uint32_t state = 0;  // tcp::TcpState
  std::uint32_t rtt_us = 0;
  std::uint32_t rto_ms = 0;
  std::uint32_t mss = 0;
  std::uint64_t cwnd_bytes = 0;
  std::uint64_t retransmits = 0;
  std::uint64_t bytes_sent = 0;      // acknowledged by the peer
  std::uint64_t bytes_received = 0;  // placed in the receive ring
  std::uint64_t segments_in = 0;
};

// What a process needs to join a listener it inherited over fork: the listener as its parent's
// TcpSockets knows it, with each replica's member (page and generation) as the proof.
struct ListenerShare {
  std::uint32_t address = 0;
  std::uint16_t port = 0;
  std::uint16_t backlog = 0;
  std::uint8_t open_options = 0;  // stack::kTcpOpen* bits
  std::vector<std::pair<std::uint32_t, std::uint32_t>> members;  // by replica: page, generation
};

// What a fork child needs to take over a connection it inherited (claim): the connection as its
// parent's TcpSockets knows it, with the parent's page and generation as the proof.
struct ConnectionShare {
  std::uint32_t replica = 0;
  std::uint32_t page = 0;
  std::uint32_t generation = 0;
  TcpEndpoints endpoints;
  std::uint8_t open_options = 0;
  std::vector<std::pair<stack::TcpOption, std::uint32_t>> options;
  bool write_shut = false;
};

class TcpSockets {
 public:
  // Socket ids are small integers from 0, reused after close; the id rides in 16 bits of the
  // ticket an open carries, so at most this many sockets are open at once.
  static constexpr std::size_t kMaxSockets = 65536;

  using ReadyHandler = std::function<void()>;

  // How long a connection waits for the name server before it is placed round robin.
  static constexpr std::uint64_t kLookupTimeoutMs = 200;
  // What a lookup asks for.
  static constexpr std::string_view kReplicaGroup = "/net/tcp";

  // Attaches to the TCP replicas behind `channels` (one channel per replica, e.g. {"tcp0-perf",
  // "tcp1-perf"}): their messages become inputs of the host's loop, sends the channel had no room
  // for are retried by a loop poller, and the host's peer-restart hook is taken over (a program that
  // needs that hook itself calls replica_restarted from its own handler). Each channel must come
  // with its region, tcp_region_name(channel); the replica may format it later. With
  // `name_channel` (a channel to a name server, e.g. "perf-name0"), connections are placed by the
  // name fleet (see use_name_fleet); the replicas are known to it by their channels' peers.
  static Result<std::unique_ptr<TcpSockets>> attach(ComponentHost& host,
                                                    std::span<const std::string> channels,
                                                    std::string_view name_channel = {});

  // For a harness without a ComponentHost: the caller feeds handle_messages, replica_restarted and
  // flush itself.
  explicit TcpSockets(std::unique_ptr<TcpReplicaLinks> links);
  ~TcpSockets();
  TcpSockets(const TcpSockets&) = delete;
  TcpSockets& operator=(const TcpSockets&) = delete;

  // The driving side.
  void handle_messages(std::size_t replica, std::span<const Message> messages);
  // The host's notice that `replica` is a new incarnation (0: not known). For a replica that never
  // announced itself, its sockets fail with ECONNRESET and its listeners are re-sent; a replica
  // that announces itself is handled by its announce.
  void replica_restarted(std::size_t replica, std::uint64_t incarnation = 0);
  // Sends what the channels had no room for earlier, in order. True when it sent anything.
  bool flush();

  // Places every later connect() by a lookup of kReplicaGroup through `link`. `peers.replicas`
  // must have one entry per replica.
  Status use_name_fleet(std::unique_ptr<TcpNameLink> link, TcpNamePeers peers);
  // A message from the name server (untrusted): an answer to a lookup places its connection.
  void handle_name_reply(const name::NameMessage& reply);
  // Places round robin every connection whose lookup is older than kLookupTimeoutMs.
  void expire_lookups();

  // Called after a burst of replica messages (or a restart) changed anything.
  void on_ready(ReadyHandler handler) { ready_handler_ = std::move(handler); }

  // Connects to address:port through one replica (pick_replica). Completion shows in readiness:
  // connected() and writable(), or error() (ECONNREFUSED, ETIMEDOUT, ...).
  Result<int> connect(std::uint32_t address, std::uint16_t port, const SocketOptions& options = {});
  // Listens on address (0: any):port on every replica; port 0 is refused, since each replica would
  // pick its own. error() says when a replica refused (EADDRINUSE, ...). Connections the listener
  // accepts start with `options`, as on Linux (local_port is ignored).
  Result<int> listen(std::uint32_t address, std::uint16_t port, std::uint16_t backlog,
                     const SocketOptions& options = {});
  // A connection established on any replica's part of `listener`; Errc::would_block when none.
  // Activates the listener (activate()). With none queued here while the group holds some, asks
  // for one (take()) unless a take is still unanswered: taking() says whether to wait for it.
  Result<int> accept(int listener);
  // Whether a replica holds connections for this listener's group, unannounced (placed with a
  // member whose process does not accept, or, where processes share the listener, with one not
  // waiting to accept), or placed one in the handshake with it before this process accepted. The
  // listener is readable then; an accept takes one (take()).
  bool holds_connections(int listener) const;
  // Whether a take of `listener` has not been served yet (its announcement may still come).
  bool taking(int listener) const;
  // Whether an accept of `listener` would return a connection now.
  bool queued(int listener) const;
  // A thread of this process starts (true) or stops (false) sleeping until `listener` is readable:
  // where processes share a listener, new connections go to a waiting one first. Nested calls
  // (threads) count.
  void waiting_to_accept(int listener, bool waiting);
  // What another process needs to join `listener` (join()); nothing until every replica answered
  // its listen, or for an id that is not a listener.
  std::optional<ListenerShare> share(int listener) const;
  // A listener of our own in the group `share` names (which came from another process's
  // TcpSockets): each replica adds a member of ours, or refuses (error(): EADDRNOTAVAIL when that
  // member left). Then as listen().
  Result<int> join(const ListenerShare& share);
  // This process accepts on `listener`: the replicas may place new connections with it (once per
  // listener; a part that opens later is activated when it opens).
  void activate(int listener);
  // Whether activate() was called for `listener`.
  bool active(int listener) const;

  // Fork: in the moment before it, every replica that holds a connection of ours pins them with
  // `fork` (kTcpForkHoldKind), and each connection open now is closed from then on by a message
  // ordered after that hold. Whether any hold was sent.
  // A connection a child claimed stays ours to hold (replica_server.hpp, holders): while another
  // process carries it, its send, recv and shutdown_write ask for it back (kTcpCarryKind) and
  // would block until it is here, and it is neither readable nor writable. A carrier that lets go
  // hands it back to a holder, which its event says.
  bool hold_for_fork(std::uint64_t fork);
  // Whether any connection has a page (what a fork would pin).
  bool holds_connections() const;
  // What a fork child needs to claim `socket` (claim()); nothing for an id that is not a connection
  // with a page.
  std::optional<ConnectionShare> share_connection(int socket) const;
  // A connection of our own taken over from the one `share` names (which came from the parent's
  // TcpSockets, pinned by `fork`): its replica moves it into our region and answers; until then it
  // is neither readable nor writable, as a connection still opening. error() then says when the
  // replica refused (EBADF: no such pinned connection).
  Result<int> claim(const ConnectionShare& share, std::uint64_t fork);

  // Copies as much of `bytes` as the send ring has room for. Errc::would_block: no room yet, or
  // still connecting. Errc::closed (sys_errno = the errno): the connection failed, or writing was
  // shut down (EPIPE).
  Result<std::size_t> send(int socket, std::span<const std::byte> bytes);
  // Copies out what the receive ring holds. 0 bytes: the peer closed and everything was read (EOF).
  // Errc::would_block: nothing yet. Errc::closed (sys_errno = the errno) once the connection
  // failed and the ring is drained.
  Result<std::size_t> recv(int socket, std::span<std::byte> out);
  // Copies what the receive ring holds `offset` bytes past its head and consumes nothing
  // (MSG_PEEK); otherwise as recv.
  Result<std::size_t> peek(int socket, std::span<std::byte> out, std::size_t offset);
  // Sends FIN after the queued bytes; later sends fail with EPIPE.
  Status shutdown_write(int socket);
  // Done with the socket: the replica finishes sending what is queued, then closes. The id is free
  // at once. A listener's connections not yet accepted are closed with it.
  Status close(int socket);
  // Done with the socket, with RST (SO_LINGER 0).
  Status abort(int socket);
  // A listener passes its options to the connections it accepts.
  Status set_option(int socket, stack::TcpOption option, std::uint32_t value);

  // Readiness: loads only. Each is false (0) for an id that is not an open socket.
  // Data, EOF or an error waits (a listener: acceptable()).
  bool readable(int socket);
  // send() would take bytes or report an error.
  bool writable(int socket);
  bool acceptable(int socket) const;
  bool connected(int socket) const;
  // Every replica listens (false while one has not answered, or after one refused).
  bool listening(int socket) const;
  // The peer closed and everything it sent was read.
  bool eof(int socket);
  // The errno that ended the socket, or 0.
  int error(int socket) const;
  // Bytes in the send ring the replica has not consumed yet. It consumes them when the peer
  // acknowledges them, so 0 after shutdown_write means everything sent arrived.
  std::size_t unacknowledged(int socket);
  // Bytes the receive ring holds now (what FIONREAD reports); 0 for an id that is not a connection.
  std::size_t received_bytes(int socket);
  TcpInfo info(int socket) const;
  TcpEndpoints endpoints(int socket) const;

  // The round robin: the replica for a connection placed without the name fleet.
  std::size_t pick_replica();
  // Every later connection placed without the name fleet goes to `replica` (an experiment that
  // must know which replica carries its streams, e.g. `flotilla demo`).
  Status pin_replica(std::size_t replica);
  // The replica a connection went to; nothing while it waits for its placement (or for a
  // listener, or an id that is not open).
  std::optional<std::size_t> replica_of(int socket) const;
  const TcpPlacementStats& placement_stats() const { return placement_; }
  // Connections waiting for the name server's answer.
  std::size_t pending_lookups() const { return lookups_.size(); }

  std::size_t replica_count() const { return replicas_.size(); }
  std::size_t open_sockets() const { return open_count_; }
  // Replica messages that failed their checks (ignored), and valid ones about sockets that are no
  // longer open (ignored too: a page we never claimed is closed).
  std::uint64_t bad_messages() const { return bad_messages_; }
  std::uint64_t stale_messages() const { return stale_messages_; }
  // Messages waiting for room in a channel.
  std::size_t deferred_messages() const;
  // Messages that found a channel and its outbox full: their call failed with ENOBUFS (an open, a
  // listener's option), or their kick or connection's options are owed and go out once the outbox
  // drains.
  std::uint64_t outbox_overflows() const { return outbox_overflows_; }
  // How many messages may wait for room in one replica's channel.
  static constexpr std::size_t kOutboxMessages = 1024;

 private:
  enum class Kind : std::uint8_t { unused, connection, listener };

  struct Replica {
    TcpRegion region;                    // invalid until the replica has formatted it
    std::uint64_t incarnation = 0;       // the latest we know of (its restart handled)
    bool announces = false;              // it sent an announce: its restarts wait for theirs
    // By page: socket id + 1, 0 for none; as long as the highest page we took.
    std::vector<std::int32_t> page_owner;
    MessageOutbox outbox{kOutboxMessages};  // what the channel had no room for, oldest first
    // A kick found the outbox full: some page has requests and no kick on its way.
    bool kicks_owed = false;
    // Some connection's options found the outbox full (Socket::options_owed).
    bool options_owed = false;
    // Opens whose socket was closed (or failed) before the answer came: a page the answer hands
    // us is given back. Kept across a restart, since the new incarnation may answer an open that
    // was still in the channel.
    std::vector<std::uint32_t> abandoned_tickets;
    // Listener pages we closed, whose connections may still be announced: they are given back.
    // Forgotten at a restart: the old incarnation's pages mean nothing in the new region.
    std::vector<std::pair<std::uint32_t, std::uint32_t>> closed_listeners;  // page, generation
  };
  static constexpr std::size_t kRememberedClosures = 256;

  struct ListenerPart {
    std::uint32_t ticket = 0;  // the open in flight; 0 once answered
    std::uint32_t page = 0;
    std::uint32_t generation = 0;
    std::uint32_t accepted = 0;  // our running count, stored to the page's `accepted`
    bool open = false;
  };

  // A connection waiting for the name server to say where it goes.
  struct Lookup {
    std::uint64_t cookie = 0;
    int socket = -1;
    std::uint64_t deadline_ms = 0;
  };

  struct Socket {
    Kind kind = Kind::unused;
    bool placing = false;      // a connection whose lookup is in flight: no replica yet
    std::uint16_t serial = 0;  // bumped per open request; the high half of a ticket
    int local_error = 0;       // decided here: open refused, replica restarted, ring corrupt
    bool write_shut = false;
    // The latest value of each option set, sent once a page exists and again after a replica's
    // recovery.
    std::vector<std::pair<stack::TcpOption, std::uint32_t>> options;
    std::uint8_t open_options = 0;  // stack::kTcpOpen* bits the socket (a listener: its connections) starts with
    // A connection's options that found the outbox full (set by the program, or sent when its page
    // came: accepted, connected, kept by a recovery): they go out once there is room. Options are
    // hints to the replica (which gave a new connection its listener's and keeps a recovered
    // one's), so the connection goes on meanwhile.
    bool options_owed = false;
    // A connection.
    std::uint32_t ticket = 0;  // the open in flight; 0 once answered
    std::uint32_t replica = 0;
    std::uint32_t page = 0;
    std::uint32_t generation = 0;
    TcpSocketPageHeader* header = nullptr;  // once the replica handed a page out
    ByteRingProducer send_ring;
    ByteRingConsumer receive_ring;
    TcpEndpoints endpoints;
    std::uint32_t pending_requests = 0;  // asked for before a page existed
    int listener = -1;  // accepted by the replica, not yet by accept(): whose queue holds it
    // Open when this process forked: closed with a release message, after the fork's hold.
    bool forked = false;
    // A connection taken over from a fork parent (claim): the page it proves, and the fork.
    std::uint32_t claimed_page = 0;
    std::uint32_t claimed_generation = 0;
    std::uint64_t claim_fork = 0;
    // A holder's page (another process carries the connection): its kTcpCarryKind is on its way.
    bool carry_asked = false;
    // A listener.
    std::vector<ListenerPart> parts;  // by replica
    std::deque<int> accept_queue;
    std::uint16_t backlog = 0;
    // A listener that joined a group (join): by replica, the member it proved it inherited.
    std::vector<std::pair<std::uint32_t, std::uint32_t>> home;
    bool active = false;  // activate() was called
    std::uint32_t accept_waiters = 0;  // threads inside waiting_to_accept(true)
  };

  Socket* find(int socket, Kind kind);
  // The page of `listener`'s part on `replica`, once that part is open.
  TcpSocketPageHeader* part_page(const Socket& listener, std::size_t replica) const;
  // Asked by accept() when nothing is queued here while the group holds connections: the first
  // replica holding some announces one to this process (moving it from another process's region
  // if need be). Whether a take was asked for.
  bool take(int listener);
  Result<std::size_t> receive(int socket, std::span<std::byte> out, std::size_t offset, bool consume);
  const Socket* find(int socket, Kind kind) const;
  int allocate();
  void release(int socket);
  std::uint32_t next_ticket(int socket);
  // Sends now or parks the message in the replica's outbox; false when both are full.
  [[nodiscard]] bool send_or_defer(std::size_t replica, const Message& message);
  // `replica` for a new connection (socket `placing`), unless this program's sockets there fill
  // its region while another replica has room: then the one with the fewest (a connection that
  // gets no page fails with EMFILE where another replica could carry it).
  std::size_t with_room(std::size_t replica, int placing) const;
  // A listener on every replica: a plain listen when `listener` has no members, else a join of
  // their group.
  Result<int> open_listener(const ListenerShare& listener);
  // A joined listener sends its join.
  [[nodiscard]] bool send_listen(int listener, std::size_t replica);
  [[nodiscard]] bool send_activate(std::size_t replica, const ListenerPart& part);
  // Sets request bits on a page and kicks the replica unless a kick is already pending.
  void request(std::size_t replica, std::uint32_t page, std::uint32_t generation, std::uint32_t bits);
  // Kicks every page of the replica that has requests but no kick pending. True when it kicked any.
  bool kick_owed_pages(std::size_t replica);
  // Sends the options owed (Socket::options_owed) to `replica` while there is room.
  bool send_owed_options(std::size_t replica);
  // The options of connection `socket`, now it has a page: sent, or owed when there is no room.
  void send_or_owe_options(int socket);
  void owe_options(Socket& entry);
  // False when an option found no room (the rest are not sent either).
  [[nodiscard]] bool send_options(std::size_t replica, std::uint32_t page, std::uint32_t generation,
                                  std::span<const std::pair<stack::TcpOption, std::uint32_t>> options);
  bool ensure_region(std::size_t replica);
  // The page named by a message, when it exists, is not ours yet, and carries that generation (or,
  // `holder_ok`, reads as a holder's).
  TcpSocketPageHeader* claimable_page(std::size_t replica, std::uint32_t page, std::uint32_t generation,
                                      bool holder_ok = false);
  // The socket holding `page` of the link's region, -1 for none; and forgetting it.
  static int owner_of(const Replica& link, std::uint32_t page);
  static void disown(Replica& link, std::uint32_t page);
  // Records the page as `socket`'s and resets the words this side writes.
  void claim_page(std::size_t replica, std::uint32_t page, int socket);
  void adopt_connection(int socket, std::size_t replica, std::uint32_t page, std::uint32_t generation);
  // A connection other processes may hold too (forked, or claimed): another of them may carry it.
  static bool shared(const Socket& socket) { return socket.forked || socket.claim_fork != 0; }
  // Whether a holder's page says the carrier's page offers `readiness` (kTcpHolderReadable, ...).
  static bool holder_offers(const Socket& socket, std::uint32_t readiness);
  // Another process holding the connection carries it now: its page's generation word reads 0.
  static bool held_elsewhere(const Socket& socket);
  // Whether this process carries the connection, so that its rings may be used. One that came back
  // takes its rings' positions from the page again (another process moved the streams on).
  bool carrying(Socket& socket);
  // Asks the replica for the connection while another process carries it (once until it comes);
  // the calls meanwhile would block.
  void ask_carry(Socket& socket);
  // Counts a message that failed its checks; false, for the handlers to return.
  bool refuse() {
    ++bad_messages_;
    return false;
  }
  void close_orphan(std::size_t replica, std::uint32_t page, std::uint32_t generation);
  void abandon(std::size_t replica, std::uint32_t ticket);
  void close_listener_part(std::size_t replica, ListenerPart& part, std::uint32_t bits);
  void fail(Socket& socket, int error);
  void fail_listener(int listener, int error);
  void close_connection(int socket, std::uint32_t bits);
  Status end(int socket, std::uint32_t bits);
  Error failure(const Socket& socket) const;

  // Sends the connection's open to `replica`; false when it found no room (nothing sent).
  [[nodiscard]] bool place(Lookup& lookup, std::size_t replica);
  // place() after the connect() call returned: a connection whose open finds no room fails with
  // ENOBUFS, and the waiting program is told.
  void place_later(Lookup& lookup, std::size_t replica);
  void forget_lookup(int socket);

  // A restart of `replica` by the mode it announced (or fresh, for a replica that never does).
  void restart(std::size_t replica, stack::TcpReplicaMode mode);
  // The new incarnation lost every socket of ours.
  void lose_sockets(std::size_t replica);
  // The new incarnation kept the region: keep what survived, ask again for what may be lost.
  void resume_sockets(std::size_t replica);
  // The page is still handed out with this generation (a recovering replica kept it).
  bool page_survived(std::size_t replica, std::uint32_t page, std::uint32_t generation);
  // A connection's page is gone: the socket fails with ECONNRESET (an unaccepted one is dropped).
  void lose_connection(int socket);
  // Sends the connection's open (a new ticket) to `replica`; false when it found no room.
  [[nodiscard]] bool send_connect(int socket, std::size_t replica);
  // Sends a claimed connection's claim (a new ticket); false when it found no room.
  [[nodiscard]] bool send_claim(int socket);

  bool on_announce(std::size_t replica, const stack::TcpAnnounceBody& body);
  bool on_opened(std::size_t replica, const stack::TcpOpenedBody& body);
  bool on_accepted(std::size_t replica, const stack::TcpAcceptedBody& body);
  bool on_event(std::size_t replica, const stack::TcpPageBody& body);

  std::unique_ptr<TcpReplicaLinks> links_;
  std::vector<Replica> replicas_;
  std::vector<Socket> sockets_;  // by id; grows on open, never on the data path
  std::vector<int> free_ids_;
  std::size_t open_count_ = 0;
  std::size_t next_replica_ = 0;
  std::optional<std::size_t> pinned_replica_;
  ReadyHandler ready_handler_;
  std::uint64_t bad_messages_ = 0;
  std::uint64_t stale_messages_ = 0;
  // Sent with every open, join and claim and echoed in its answer (program_nonce.hpp).
  std::uint32_t nonce_;
  std::uint64_t outbox_overflows_ = 0;
  // The name fleet, when used.
  std::unique_ptr<TcpNameLink> name_link_;
  TcpNamePeers name_peers_;
  std::deque<Lookup> lookups_;  // oldest first: deadlines only grow
  // Counts on from the nonce: a lookup's reply meant for the seat's earlier program is not ours.
  std::uint64_t next_cookie_ = static_cast<std::uint64_t>(nonce_) << 32 | 1;
  TcpPlacementStats placement_;
};

}  // namespace flotilla::sockets
