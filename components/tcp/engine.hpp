// The TCP engine of one replica: every connection and listener the replica owns, with no I/O of
// its own (sans-IO, like smoltcp's socket layer). Whoever runs it — the replica process
// (components/tcp/main.cpp) or the deterministic simulation (components/tcp/tests/) — feeds it
// packets and the time, and gives it an EngineHost that sends segments, claims flows and hears
// about events. The same engine, byte for byte, runs in both.
//
// Data never sits in the engine: a connection's send data is its send ring (the application
// writes it; the engine reads from [head, tail) to send and retransmit, and consumes on ACK), and
// received data goes straight into its receive ring (in order at the tail, out of order ahead of
// it, published once the hole fills). So the receive window is the ring's free space, and the
// engine copies each payload byte exactly once each way.
//
// Connection table (the replica's state store, connection_table.hpp): plain-old-data control
// blocks with each connection's whole protocol state, and the listeners, each written
// crash-consistently (a version per entry, odd while it is being changed, published with a release
// store). Publish before send: a call's segments go to EngineHost::transmit, and the host hands them
// on only at EngineHost::flush_segments, which the engine calls once the entries that cover them
// are published; so the table is always at or past what any peer has seen. A restarted replica's
// engine finds its predecessor's table in the region and either carries every connection on
// (RestorePolicy::resume) or resets each synchronized peer and clears the table
// (RestorePolicy::reset). The table also keeps the secret, so ISNs, SYN cookies and timestamps go
// on where the predecessor left them.
//
// Time is in nanoseconds from one monotonic clock (the caller's). The engine's private connection
// state grows in chunks of slots as connections open (a connection that finds no memory is refused
// and counted); nothing else allocates after create(), and nothing allocates per segment.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <span>

#include "components/tcp/algorithms/congestion.hpp"  // CongestionAlgorithm
#include "components/tcp/algorithms/four_tuple.hpp"
#include "components/wire/tcp.hpp"
#include "dataplane/counters.hpp"
#include "dataplane/result.hpp"
#include "components/formats/byte_ring.hpp"

namespace flotilla::tcp {

enum class TcpState : std::uint8_t {
  closed = 0,
  listen,
  syn_sent,
  syn_received,
  established,
  fin_wait_1,
  fin_wait_2,
  close_wait,
  closing,
  last_ack,
  time_wait,
};
const char* state_name(TcpState state);

// Per connection (and inherited by a listener's connections).
struct ConnectionOptions {
  bool nodelay = false;  // TCP_NODELAY: no Nagle
  bool cork = false;     // TCP_CORK: send only full segments until uncorked
  CongestionAlgorithm congestion = CongestionAlgorithm::cubic;
  bool keepalive = false;
  std::uint32_t keepalive_idle_s = 7200;
  std::uint32_t keepalive_interval_s = 75;
  std::uint32_t keepalive_count = 9;
};

struct EngineSettings {
  std::size_t max_connections = 4096;  // the table's capacity
  std::size_t max_listeners = 64;
  std::uint16_t mss = 1460;            // what the link carries (MTU - 40); announced in SYNs
  bool window_scaling = true;
  bool timestamps = true;
  bool sack = true;
  std::uint64_t delayed_ack_ns = 40'000'000;  // Linux's minimum delayed-ACK time
  std::uint64_t min_rto_ns = 200'000'000;     // Linux's floor (RFC 6298 says 1 s; 2.4 allows lower)
  std::uint64_t max_rto_ns = 120'000'000'000;
  std::uint64_t initial_rto_ns = 1'000'000'000;
  std::uint64_t time_wait_ns = 60'000'000'000;  // 2*MSL as Linux uses it
  std::uint32_t syn_retries = 6;
  std::uint32_t data_retries = 15;
  // ISNs (RFC 6528), SYN cookies and the timestamp offset. 0,0: the one in the table a previous
  // incarnation left, else drawn at create(); either way kept in the table.
  std::uint64_t secret[2] = {0, 0};
  // The most segments the engine hands EngineHost::transmit between two flush_segments() calls
  // (what the host must be able to hold).
  std::size_t segment_batch = 64;
};

// What Engine::create does with a previous incarnation's table.
enum class RestorePolicy : std::uint8_t {
  reset,   // RST every synchronized peer and start with an empty table
  resume,  // carry every connection and listener on (see Engine::create)
};

// A segment the engine wants sent. The payload is `payload_length` bytes of `payload`, starting
// `payload_offset` bytes past its head; build_segment() turns the whole into wire bytes.
struct OutgoingSegment {
  FourTuple tuple;
  std::uint32_t sequence = 0;
  std::uint32_t acknowledgment = 0;
  std::uint8_t flags = 0;
  std::uint16_t window = 0;  // as it goes on the wire (already scaled down)
  wire::TcpOptions options;
  const formats::ByteRingConsumer* payload = nullptr;
  std::size_t payload_offset = 0;
  std::size_t payload_length = 0;
};

// Writes the TCP header, options and payload into `out` (which starts where the TCP header goes)
// with the checksum filled. Returns the segment's length, or 0 when `out` is too small.
std::size_t build_segment(std::span<std::byte> out, const OutgoingSegment& segment);

// The largest build_segment() result for a payload of `payload_length` bytes.
inline constexpr std::size_t max_segment_bytes(std::size_t payload_length) {
  return wire::kTcpMaxHeaderBytes + payload_length;
}

struct ConnectionHandle {
  std::uint32_t index = 0;
  std::uint32_t generation = 0;
  friend bool operator==(const ConnectionHandle&, const ConnectionHandle&) = default;
};
using ListenerId = std::uint32_t;

// The rings of one connection, as the engine sees them.
struct StreamRings {
  formats::ByteRingConsumer send;
  formats::ByteRingProducer receive;
};

// Bits of the events the engine reports.
inline constexpr std::uint32_t kEventEstablished = 1;  // the handshake completed
inline constexpr std::uint32_t kEventReadable = 2;     // new bytes in the receive ring
inline constexpr std::uint32_t kEventWritable = 4;     // send ring room freed by ACKs
inline constexpr std::uint32_t kEventPeerClosed = 8;   // FIN received, every byte before it delivered
inline constexpr std::uint32_t kEventFailed = 16;      // reset, refused or timed out: see error
inline constexpr std::uint32_t kEventReleased = 32;    // the engine no longer uses the rings; the
                                                       // handle is dead (TIME_WAIT keeps no rings)

class EngineHost {
 public:
  virtual ~EngineHost() = default;
  // Takes a segment to send at the next flush_segments() (build its bytes now: the payload's ring
  // moves on). false: could not take it (no buffer); the engine counts it and relies on its
  // timers, as if the segment had been lost.
  virtual bool transmit(const OutgoingSegment& segment) = 0;
  // Sends what transmit() took: the table now covers it. Called at the end of every engine call
  // that may have transmitted, and after at most EngineSettings::segment_batch segments.
  virtual void flush_segments() = 0;
  // A connection for `listener` is being created (a SYN into the SYN queue, or a valid SYN
  // cookie): give it rings. nullopt: refuse (the engine answers RST and counts it).
  virtual std::optional<StreamRings> rings_for(ListenerId listener, ConnectionHandle connection,
                                               const FourTuple& tuple) = 0;
  // How many more connections of `listener` rings_for could serve now. Once half-open connections
  // hold half of it, SYNs are answered with cookies, which hold nothing: a SYN flood cannot take
  // every socket of the application and shut out the clients that complete their handshake.
  virtual std::uint32_t connection_room(ListenerId) { return std::numeric_limits<std::uint32_t>::max(); }
  // Engine::create with RestorePolicy::resume: the rings of `connection`, carried on from a
  // previous incarnation, built at the positions the shared ring indices hold now. nullopt: the
  // host no longer has them; the engine resets the connection.
  virtual std::optional<StreamRings> rings_for_restored(ConnectionHandle connection, const FourTuple& tuple,
                                                        ListenerId listener) = 0;
  // Tell IP that this replica owns (claim) or no longer owns (release) the exact flow.
  // false from claim: the flow cannot be had; the engine drops the connection.
  virtual bool claim_flow(const FourTuple& tuple) = 0;
  virtual void release_flow(const FourTuple& tuple) = 0;
  // kEvent* bits for a connection; `error` is an errno value with kEventFailed (ECONNREFUSED,
  // ECONNRESET, ETIMEDOUT; EIO when the application corrupted a ring), else 0. Events gathered
  // during one engine call come in one on_events at its end.
  virtual void on_events(ConnectionHandle connection, std::uint32_t events, int error) = 0;
  // A connection of `listener` reached ESTABLISHED and waits for the application. Called in the
  // middle of segment processing: the only engine call allowed from here is accepted().
  virtual void on_accept_ready(ListenerId listener, ConnectionHandle connection, const FourTuple& tuple) = 0;
};

// What TCP_INFO and the tests see of a connection.
struct ConnectionInfo {
  TcpState state = TcpState::closed;
  FourTuple tuple;
  std::uint32_t mss = 0;  // the send MSS in use
  std::uint64_t srtt_ns = 0;
  std::uint64_t rto_ns = 0;
  std::uint64_t cwnd_bytes = 0;
  std::uint64_t ssthresh_bytes = 0;
  std::uint64_t bytes_in_flight = 0;
  std::uint32_t send_window = 0;  // the peer's, in bytes
  std::uint64_t retransmits = 0;
  std::uint64_t bytes_acked = 0;
  std::uint64_t bytes_received = 0;
  bool sack_permitted = false;
  bool timestamps = false;
  std::uint8_t send_window_shift = 0;
  std::uint8_t receive_window_shift = 0;
};

// What Engine::create found in a previous incarnation's table.
struct RestoreReport {
  std::uint32_t restored = 0;  // connections carried on
  std::uint32_t listeners = 0;
  std::uint32_t failed = 0;  // reset: a torn entry, rings the host lacks or that disagree with it
  // The poison rule: the connection in flight at this crash and the previous one, reset alone.
  bool poisoned_dropped = false;
  FourTuple poisoned;
};

class Engine {
 public:
  // Bytes of state-store region the table for `settings` needs.
  static std::size_t table_bytes(const EngineSettings& settings);
  // The same, for `max_connections` and the default number of listeners.
  static std::size_t table_bytes(std::size_t max_connections) {
    EngineSettings settings;
    settings.max_connections = max_connections;
    return table_bytes(settings);
  }

  // `table` holds the connection table (and must stay mapped). When it holds a previous
  // incarnation's table, `policy` says what happens to it:
  // - reset: every synchronized connection in it gets a RST through `host` now and the table is
  //   cleared.
  // - resume: every consistent entry (any state but LISTEN and CLOSED) becomes a connection again,
  //   with the same handle, rings from EngineHost::rings_for_restored, its flow claimed again, its
  //   timers at their absolute times, then one ACK (a delayed ACK is owed, and the peer learns the
  //   window) and its events again (kEventEstablished and those that hold: the predecessor may
  //   have died before the host heard them). Every listener comes back with its id and accept
  //   count, every SYN-RECEIVED entry with its place in the SYN queue. Out-of-order data is
  //   dropped (receiver reneging, RFC 2018 8): the peer keeps SACKed data until it is acknowledged
  //   and resends it. The SACK scoreboard starts empty and loss recovery ends; cwnd and ssthresh
  //   are kept. snd_nxt and snd_max are as published, which under publish-before-send is at or past
  //   what the peer saw. Bytes the predecessor consumed from the send ring or published to the
  //   receive ring after its last publish are reconciled against the rings' shared indices. A torn
  //   entry (odd version), or one whose rings disagree, is reset alone (RST,
  //   kEventFailed|kEventReleased with EIO).
  //   Poison rule: the table names the connection in flight when the predecessor died; when that
  //   is also the one in flight at the crash before, it is reset alone (ECONNABORTED) and
  //   restore_report() says so.
  // Either way the secret stays (EngineSettings::secret). Counters go in `counters` by name.
  static Result<std::unique_ptr<Engine>> create(std::span<std::byte> table, const EngineSettings& settings,
                                                EngineHost& host, NamedCounterTable& counters,
                                                std::uint64_t now_ns, RestorePolicy policy = RestorePolicy::reset);
  virtual ~Engine() = default;

  virtual const RestoreReport& restore_report() const = 0;

  // A packet for this replica: `segment` is the TCP header and payload (checksum not yet checked),
  // `source`/`destination` the IPv4 addresses (host order). Everything wrong is counted and
  // dropped; a segment for no connection or listener is answered with RST (RFC 9293 3.10.7.1).
  virtual void on_packet(std::uint32_t source, std::uint32_t destination, std::span<std::byte> segment,
                         std::uint64_t now_ns) = 0;
  // Runs timers due by now_ns (retransmission, delayed ACK, persist, keepalive, TIME_WAIT, SYN
  // queue expiry). Cheap when nothing is due.
  virtual void on_timer(std::uint64_t now_ns) = 0;
  // When on_timer next has something to do (UINT64_MAX: nothing armed).
  virtual std::uint64_t next_deadline_ns() const = 0;

  // Active open. Errc::exhausted: table full; Errc::invalid_argument: bad rings or a tuple in use.
  virtual Result<ConnectionHandle> connect(const FourTuple& tuple, StreamRings rings,
                                           const ConnectionOptions& options, std::uint64_t now_ns) = 0;
  // Passive open on local_address (0: any) and port, with a SYN queue of `backlog`; past it, SYN
  // cookies. Errc::exhausted: listener table full; Errc::invalid_argument: port 0 or in use.
  virtual Result<ListenerId> listen(std::uint32_t local_address, std::uint16_t port, std::uint16_t backlog,
                                    const ConnectionOptions& options) = 0;
  virtual void close_listener(ListenerId listener) = 0;
  // The application took `count` established connections off the listener's accept queue.
  virtual void accepted(ListenerId listener, std::uint32_t count) = 0;

  // The application wrote to the send ring / read from the receive ring.
  virtual void on_send_ready(ConnectionHandle connection, std::uint64_t now_ns) = 0;
  virtual void on_receive_consumed(ConnectionHandle connection, std::uint64_t now_ns) = 0;
  // FIN after every queued byte (shutdown(SHUT_WR)).
  virtual void shutdown_write(ConnectionHandle connection, std::uint64_t now_ns) = 0;
  // The application is done: queued bytes still go out, then FIN; data arriving afterwards is
  // answered with RST, as Linux does. Received data the application never read: RST at once
  // (RFC 2525 2.17, as Linux does). In SYN-SENT: the attempt just ends (kEventReleased).
  virtual void close(ConnectionHandle connection, std::uint64_t now_ns) = 0;
  // RST now (SO_LINGER with 0, or the application died). kEventReleased follows, without
  // kEventFailed: the application asked for it.
  virtual void abort(ConnectionHandle connection, std::uint64_t now_ns) = 0;
  virtual Status set_options(ConnectionHandle connection, const ConnectionOptions& options,
                             std::uint64_t now_ns) = 0;
  // The connection's bytes moved to other rings of the same capacity (a fork child took the
  // connection over): `rings` must stand where the engine's stand now (the send ring's head, the
  // receive ring's tail) and hold the same bytes before them. Out-of-order data is dropped, as at a
  // restore (the peer resends it). false: no such live connection, or rings that do not fit.
  virtual bool rebind_rings(ConnectionHandle connection, StreamRings rings) = 0;

  // nullopt once the handle is dead (after kEventReleased), even while the connection waits in
  // TIME_WAIT.
  virtual std::optional<ConnectionInfo> info(ConnectionHandle connection) const = 0;
  virtual std::size_t connection_count() const = 0;  // every state except closed, incl. TIME_WAIT
};

}  // namespace flotilla::tcp
