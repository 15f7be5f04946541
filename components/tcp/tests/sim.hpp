// A deterministic network for TCP engines: hosts (each an Engine with its own table and rings in
// plain memory) joined by a simulated link that drops, duplicates, reorders, delays and corrupts
// segments from a seeded RNG, with bandwidth, a queue limit and a virtual clock that jumps to the
// next event. Applications are small drivers that send a deterministic byte pattern and check
// every byte they receive.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "components/tcp/engine.hpp"
#include "components/tcp/engine_debug.hpp"

namespace flotilla::tcp::sim {

struct LinkConfig {
  double loss = 0;       // probability a segment is dropped
  double duplicate = 0;  // ... delivered twice
  double reorder = 0;    // ... held back by up to reorder_delay_ns
  double corrupt = 0;    // ... gets one byte flipped (the checksum must catch it)
  std::uint64_t latency_ns = 1'000'000;
  std::uint64_t reorder_delay_ns = 3'000'000;
  std::uint64_t bandwidth_bps = 1'000'000'000;  // 0: unlimited
  std::size_t queue_bytes = 512 * 1024;         // tail drop past this much queued per direction
};

// One application stream end: the rings (app side and engine side) and the byte pattern checks.
struct Endpoint {
  explicit Endpoint(std::size_t ring_bytes);
  StreamRings engine_rings();  // what the engine gets
  // What a restarted engine gets: the rings at the positions their shared indices hold.
  StreamRings restored_rings();

  formats::ByteRingIndices send_indices;
  formats::ByteRingIndices receive_indices;
  std::vector<std::byte> send_data;
  std::vector<std::byte> receive_data;
  formats::ByteRingProducer app_send;
  formats::ByteRingConsumer app_receive;

  ConnectionHandle handle;
  bool has_handle = false;
  // The application's plan.
  std::uint64_t send_total = 0;     // bytes to send, then shutdown_write (or close)
  std::uint64_t send_pattern = 0;   // seed of the bytes we send
  std::uint64_t receive_pattern = 0;
  bool close_when_done = true;      // close() (not just shutdown_write) after sending and peer FIN
  bool reading = true;              // false: the application stops reading (zero window)
  std::uint64_t read_rate = 0;      // bytes per second the application reads at most (0: no limit)
  std::uint64_t read_start = 0;     // when the rate's clock started (set on the first read)
  std::uint64_t pause_every = 0;    // after reading this many bytes, stop reading for pause_ns
  std::uint64_t pause_ns = 0;
  std::uint64_t resume_at = 0;      // reading paused until then
  std::uint64_t next_pause = 0;     // received count that starts the next pause
  bool auto_shutdown = true;        // shutdown_write once everything is sent
  bool shutdown_after_peer_fin = false;  // ... but only once the peer's FIN arrived
  // Progress.
  std::uint64_t sent = 0;
  std::uint64_t received = 0;
  std::uint64_t received_hash = 0;
  std::uint64_t mismatches = 0;     // bytes that differed from the pattern
  std::uint64_t first_mismatch = UINT64_MAX;
  bool established = false;
  bool shut = false;
  bool closed = false;
  bool peer_closed = false;
  bool failed = false;
  int error = 0;
  bool released = false;
};

// The byte stream `pattern` names, from `position` on.
void fill_pattern(std::uint64_t pattern, std::uint64_t position, std::span<std::byte> out);
std::uint8_t pattern_byte(std::uint64_t pattern, std::uint64_t position);
std::uint64_t pattern_hash(std::uint64_t pattern, std::uint64_t length);
std::uint64_t hash_bytes(std::uint64_t hash, std::span<const std::byte> bytes);

class Network;

// What an endpoint learns from the engine's events.
void apply_events(Endpoint& endpoint, std::uint32_t events, int error);
// Moves the endpoints' applications along (write, read and check, shutdown, close). Returns true
// if any of them did something.
bool pump_applications(Engine& engine, std::vector<std::unique_ptr<Endpoint>>& endpoints,
                       std::span<std::byte> scratch, std::uint64_t now_ns);

// What a host throws to stand for its engine's process dying in the middle of a call: the test
// catches it, drops the engine and makes a new one over the same table (Host::restart).
struct SimulatedCrash {};

class Host final : public EngineHost {
 public:
  Host(Network& network, std::uint32_t address, const EngineSettings& settings, std::uint64_t now_ns,
       std::size_t ring_bytes = 256 * 1024);

  bool transmit(const OutgoingSegment& segment) override;
  // Checks every segment of the batch against the published table, then sends them.
  void flush_segments() override;
  std::optional<StreamRings> rings_for_restored(ConnectionHandle connection, const FourTuple& tuple,
                                                ListenerId listener) override;
  std::optional<StreamRings> rings_for(ListenerId listener, ConnectionHandle connection,
                                       const FourTuple& tuple) override;
  bool claim_flow(const FourTuple& tuple) override;
  void release_flow(const FourTuple& tuple) override;
  void on_events(ConnectionHandle connection, std::uint32_t events, int error) override;
  void on_accept_ready(ListenerId listener, ConnectionHandle connection, const FourTuple& tuple) override;

  // Active open to `remote` with a fresh endpoint.
  Endpoint* connect(std::uint32_t remote, std::uint16_t local_port, std::uint16_t remote_port,
                    const ConnectionOptions& options = {});
  // Moves the applications along: writes, reads, checks, shutdowns. Returns true if it did anything.
  bool pump(std::uint64_t now_ns);
  // When a paused application reads again (UINT64_MAX: none is paused).
  std::uint64_t next_application_deadline() const;
  // A fresh engine over the same table (a restart). reset: the old one's endpoints are
  // forgotten; resume: they stay, as an application's rings outlive the replica.
  void restart(std::uint64_t now_ns, RestorePolicy policy = RestorePolicy::reset);

  std::uint32_t address() const { return address_; }
  Engine& engine() { return *engine_; }
  NamedCounterTable& counters() { return *counters_; }
  std::uint64_t counter(const char* name) { return counters_->counter(name).read(); }
  std::vector<std::unique_ptr<Endpoint>>& endpoints() { return endpoints_; }
  // Flows claimed and not released (a connection the engine still holds).
  const std::vector<FourTuple>& claimed() const { return claimed_; }

  // What the next rings_for() endpoint does (the server side of tests).
  std::uint64_t accept_send_total = 0;
  std::uint64_t accept_pattern_base = 0;
  bool accept_close_when_done = true;
  bool accept_auto_shutdown = true;
  bool accept_reading = true;
  std::uint64_t accept_read_rate = 0;
  std::uint64_t accept_pause_every = 0;
  std::uint64_t accept_pause_ns = 0;
  bool accept_shutdown_after_peer_fin = false;
  std::size_t ring_bytes;
  bool refuse_rings = false;
  std::vector<std::vector<std::byte>> sent_log;  // every segment sent, when log_segments
  bool log_segments = false;
  std::uint64_t oversize_segments = 0;  // segments that would not fit the MTU
  // Segments handed on that the table did not cover (publish before send), and the first one.
  std::uint64_t uncovered_segments = 0;
  std::string first_uncovered;
  // Crash injection: throw SimulatedCrash at the end of the engine call that makes flush_segments
  // call number `crash_at_flush` (0: never), before sending its batch when `crash_before_send`.
  std::uint64_t flush_calls = 0;
  std::uint64_t crash_at_flush = 0;
  bool crash_before_send = false;
  // Or: throw SimulatedCrash before sending the first batch with at least this many data segments
  // (0: never); the test then finds their number in `crashed_batch_segments`.
  std::size_t crash_at_batch_of = 0;
  std::size_t crashed_batch_segments = 0;
  // A poisoned connection: every engine call that reports events for a connection with this local
  // or remote port crashes (0: none).
  std::uint16_t crash_on_events_port = 0;
  std::span<std::byte> table() { return table_; }

 private:
  Endpoint* endpoint_for(ConnectionHandle handle);
  // Empty when the published table covers `segment`, else what is wrong.
  std::string check_covered(const OutgoingSegment& segment) const;

  struct Batched {
    OutgoingSegment segment;  // the header fields only (the payload pointer is not kept)
    std::vector<std::byte> bytes;
  };

  Network& network_;
  std::uint32_t address_;
  EngineSettings settings_;
  std::vector<std::byte> table_memory_;
  std::span<std::byte> table_;
  std::vector<Batched> batch_;
  std::unique_ptr<NamedCounterTable> counters_;
  std::unique_ptr<Engine> engine_;
  std::vector<std::unique_ptr<Endpoint>> endpoints_;
  std::vector<FourTuple> claimed_;
  std::vector<std::byte> scratch_;
};

class Network {
 public:
  Network(std::uint64_t seed, LinkConfig config) : rng_(seed), config_(config) {}

  void attach(Host& host) { hosts_[host.address()] = &host; }
  void send(std::uint32_t source, std::uint32_t destination, std::vector<std::byte> bytes);
  // Delivers every segment due by now. Returns how many.
  std::size_t deliver(std::uint64_t now_ns);
  std::uint64_t next_delivery_ns() const { return queue_.empty() ? UINT64_MAX : queue_.top().deliver_at; }

  // Runs every host's timers and applications and the link until `done()` or the virtual time
  // passes `limit_ns`. Returns done().
  template <class Done>
  bool run(Done&& done, std::uint64_t limit_ns);

  std::uint64_t now() const { return now_ns_; }
  void set_now(std::uint64_t now_ns) { now_ns_ = now_ns; }
  LinkConfig& config() { return config_; }
  std::mt19937_64& rng() { return rng_; }
  std::uint64_t delivered() const { return delivered_; }
  std::uint64_t dropped() const { return dropped_; }
  // Segments sent to an address with no host are counted here and dropped.
  std::uint64_t unroutable() const { return unroutable_; }
  // Corrupted segments that reached a host (each must fail its checksum there).
  std::uint64_t corrupted_delivered() const { return corrupted_delivered_; }
  // Optional tap: sees every segment at delivery; returning false drops it.
  std::function<bool(std::uint32_t, std::uint32_t, std::vector<std::byte>&)> tap;

 private:
  struct Packet {
    std::uint64_t deliver_at;
    std::uint64_t order;
    std::uint32_t source;
    std::uint32_t destination;
    std::vector<std::byte> bytes;
    bool corrupted = false;
    bool operator>(const Packet& other) const {
      return deliver_at != other.deliver_at ? deliver_at > other.deliver_at : order > other.order;
    }
  };
  bool chance(double probability);

  std::mt19937_64 rng_;
  LinkConfig config_;
  std::map<std::uint32_t, Host*> hosts_;
  std::priority_queue<Packet, std::vector<Packet>, std::greater<>> queue_;
  std::map<std::pair<std::uint32_t, std::uint32_t>, std::uint64_t> busy_until_;
  std::uint64_t order_ = 0;
  std::uint64_t now_ns_ = 0;
  std::uint64_t delivered_ = 0;
  std::uint64_t dropped_ = 0;
  std::uint64_t unroutable_ = 0;
  std::uint64_t corrupted_delivered_ = 0;
};

template <class Done>
bool Network::run(Done&& done, std::uint64_t limit_ns) {
  for (;;) {
    bool progress = true;
    while (progress) {
      progress = false;
      for (auto& [address, host] : hosts_) progress = host->pump(now_ns_) || progress;
    }
    if (done()) return true;
    std::uint64_t next = next_delivery_ns();
    for (auto& [address, host] : hosts_) {
      next = std::min({next, host->engine().next_deadline_ns(), host->next_application_deadline()});
    }
    if (next == UINT64_MAX || next > limit_ns) return done();
    now_ns_ = std::max(now_ns_, next);
    deliver(now_ns_);
    for (auto& [address, host] : hosts_) host->engine().on_timer(now_ns_);
  }
}

// Records every transition it sees.
class TransitionRecorder final : public TransitionObserver {
 public:
  void on_transition(TcpState from, TcpState to) override { seen.insert({from, to}); }
  std::set<std::pair<TcpState, TcpState>> seen;
};

// Builds a raw segment as `tuple.local` would send it (for hostile and crafted input).
std::vector<std::byte> craft_segment(const FourTuple& tuple, std::uint32_t seq, std::uint32_t ack,
                                     std::uint8_t flags, std::uint16_t window,
                                     const wire::TcpOptions& options = {},
                                     std::span<const std::byte> payload = {});

}  // namespace flotilla::tcp::sim
