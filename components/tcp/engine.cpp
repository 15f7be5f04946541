// The TCP engine: RFC 9293 connections and listeners over the rings of engine.hpp, with RFC 5961
// hardening, RFC 7323 options, RFC 2018/6675 SACK recovery, RFC 6582 NewReno, RFC 6298 timers,
// SYN cookies and the crash-consistent connection table. See engine.hpp for the contract.
#include "components/tcp/engine.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <random>

#include "components/tcp/algorithms/isn.hpp"
#include "components/tcp/algorithms/seq.hpp"
#include "components/tcp/algorithms/syn_cookies.hpp"
#include "components/tcp/connection.hpp"
#include "components/tcp/connection_table.hpp"
#include "components/tcp/deadline_heap.hpp"
#include "components/tcp/engine_debug.hpp"
#include "components/tcp/flow_index.hpp"

namespace flotilla::tcp {

const char* state_name(TcpState state) {
  switch (state) {
    case TcpState::closed: return "CLOSED";
    case TcpState::listen: return "LISTEN";
    case TcpState::syn_sent: return "SYN-SENT";
    case TcpState::syn_received: return "SYN-RECEIVED";
    case TcpState::established: return "ESTABLISHED";
    case TcpState::fin_wait_1: return "FIN-WAIT-1";
    case TcpState::fin_wait_2: return "FIN-WAIT-2";
    case TcpState::close_wait: return "CLOSE-WAIT";
    case TcpState::closing: return "CLOSING";
    case TcpState::last_ack: return "LAST-ACK";
    case TcpState::time_wait: return "TIME-WAIT";
  }
  return "UNKNOWN";
}

std::size_t build_segment(std::span<std::byte> out, const OutgoingSegment& segment) {
  std::array<std::byte, wire::kTcpMaxOptionBytes> options{};
  const std::size_t options_length = wire::emit_tcp_options(options, segment.options);
  const std::size_t header_length = wire::tcp_header_length(options_length);
  if (header_length == 0 || out.size() < header_length + segment.payload_length) return 0;
  if (segment.payload_length > 0) {
    if (segment.payload == nullptr) return 0;
    if (!segment.payload->peek(segment.payload_offset, out.subspan(header_length, segment.payload_length))) {
      return 0;
    }
  }
  const wire::TcpHeader header{
      .source_port = segment.tuple.local_port,
      .destination_port = segment.tuple.remote_port,
      .sequence = segment.sequence,
      .acknowledgment = segment.acknowledgment,
      .flags = segment.flags,
      .window = segment.window,
      .urgent_pointer = 0,
      .options = std::span<const std::byte>(options.data(), options_length),
  };
  return wire::emit_tcp(out, header, segment.tuple.local_address, segment.tuple.remote_address,
                        segment.payload_length);
}

std::size_t Engine::table_bytes(const EngineSettings& settings) {
  return sizeof(TableHeader) + settings.max_connections * sizeof(Tcb) +
         settings.max_listeners * sizeof(ListenerEntry);
}

namespace {

constexpr std::uint32_t kDefaultMss = 536;        // RFC 9293 3.7.1 when the SYN carries none
constexpr std::uint32_t kTimestampBytes = 12;     // the option with its two NOPs
constexpr std::uint16_t kCookieWindow = 8192;     // announced before the rings are known
constexpr std::uint64_t kChallengeAckLimit = 1000;  // per second, engine-wide (RFC 5961 7)
constexpr std::uint64_t kSecond = 1'000'000'000;
constexpr std::uint64_t kPersistMaxNs = 60 * kSecond;
constexpr std::uint64_t kOutOfWindowAckIntervalNs = 500'000'000;
constexpr std::uint32_t kMaxSegmentsPerOutput = 65536;
constexpr std::int32_t kPawsWindowTicks = 1;

bool synchronized(TcpState state) {
  return state != TcpState::closed && state != TcpState::listen && state != TcpState::syn_sent &&
         state != TcpState::syn_received;
}

// A segment as the engine reads it, after the wire checks.
struct Incoming {
  std::uint32_t seq = 0;
  std::uint32_t ack = 0;
  std::uint8_t flags = 0;
  std::uint16_t window = 0;
  std::span<const std::byte> payload;
  wire::TcpOptions options;

  bool has(std::uint8_t flag) const { return (flags & flag) != 0; }
  std::uint32_t length() const {
    return static_cast<std::uint32_t>(payload.size()) + (has(wire::kTcpSyn) ? 1 : 0) +
           (has(wire::kTcpFin) ? 1 : 0);
  }
};

struct Listener {
  bool in_use = false;
  std::uint32_t address = 0;
  std::uint16_t port = 0;
  std::uint16_t backlog = 0;
  std::uint32_t syn_queue = 0;     // half-open connections
  std::uint32_t accept_queue = 0;  // established, not yet taken by accepted()
  ConnectionOptions options;
};

// The engine's counters, each registered under its own name at create() (the names are the
// report's vocabulary). bytes_acked and bytes_delivered count the payload bytes of every
// connection: acknowledged by peers, and delivered in order to the applications' receive rings
// (what a throughput timeline samples). nagle_holds counts the times Nagle held a small segment
// back for an acknowledgement (never, on a connection with TCP_NODELAY). One is not a count:
// first_ack_after_restore_us holds when (the caller's clock, in microseconds) a peer first
// acknowledged a payload byte after the latest restart that carried connections on; against the
// time of the crash, how long the connections stood still.
#define FLOTILLA_TCP_ENGINE_COUNTERS(X) \
  X(segments_in)                        \
  X(segments_out)                       \
  X(bad_checksum)                       \
  X(bad_header)                         \
  X(bad_options)                        \
  X(bad_flags)                          \
  X(no_connection)                      \
  X(out_of_window)                      \
  X(bad_ack)                            \
  X(paws_rejected)                      \
  X(challenge_acks)                     \
  X(challenge_acks_limited)             \
  X(resets_received)                    \
  X(resets_sent)                        \
  X(syn_cookies_sent)                   \
  X(syn_cookies_accepted)               \
  X(syn_cookies_invalid)                \
  X(syn_queue_expired)                  \
  X(accept_queue_overflow)              \
  X(refused_by_host)                    \
  X(claim_failed)                       \
  X(transmit_failed)                    \
  X(nagle_holds)                        \
  X(retransmits)                        \
  X(fast_retransmits)                   \
  X(retransmission_timeouts)            \
  X(restored_tail_resends)              \
  X(first_ack_after_restore_us)         \
  X(connection_timeouts)                \
  X(keepalive_probes)                   \
  X(persist_probes)                     \
  X(out_of_order_segments)              \
  X(out_of_order_dropped)               \
  X(receive_overflow)                   \
  X(ring_corrupt)                       \
  X(data_after_close)                   \
  X(reset_at_restart)                   \
  X(restored)                           \
  X(restore_failed)                     \
  X(poisoned_dropped)                   \
  X(time_wait_reopened)                 \
  X(table_full)                         \
  X(connection_memory_failed)           \
  X(time_wait_recycled)                 \
  X(bytes_acked)                        \
  X(bytes_delivered)

struct Counters {
  FLOTILLA_NAMED_COUNTERS(FLOTILLA_TCP_ENGINE_COUNTERS)
};

}  // namespace

class TcpEngine final : public Engine {
 public:
  TcpEngine(std::span<std::byte> table, const EngineSettings& settings, EngineHost& host,
            NamedCounterTable& counters);

  void on_packet(std::uint32_t source, std::uint32_t destination, std::span<std::byte> segment,
                 std::uint64_t now_ns) override;
  void on_timer(std::uint64_t now_ns) override;
  std::uint64_t next_deadline_ns() const override { return timers_.earliest(); }
  Result<ConnectionHandle> connect(const FourTuple& tuple, StreamRings rings, const ConnectionOptions& options,
                                   std::uint64_t now_ns) override;
  Result<ListenerId> listen(std::uint32_t local_address, std::uint16_t port, std::uint16_t backlog,
                            const ConnectionOptions& options) override;
  void close_listener(ListenerId listener) override;
  void accepted(ListenerId listener, std::uint32_t count) override;
  void on_send_ready(ConnectionHandle connection, std::uint64_t now_ns) override;
  void on_receive_consumed(ConnectionHandle connection, std::uint64_t now_ns) override;
  void shutdown_write(ConnectionHandle connection, std::uint64_t now_ns) override;
  void close(ConnectionHandle connection, std::uint64_t now_ns) override;
  void abort(ConnectionHandle connection, std::uint64_t now_ns) override;
  Status set_options(ConnectionHandle connection, const ConnectionOptions& options, std::uint64_t now_ns) override;
  bool rebind_rings(ConnectionHandle connection, StreamRings rings) override;
  std::optional<ConnectionInfo> info(ConnectionHandle connection) const override;
  std::size_t connection_count() const override { return live_connections_; }
  const RestoreReport& restore_report() const override { return report_; }

  // Engine::create: what a previous incarnation left in the table (`previous`: a table of this
  // layout is there) is reset, or carried on.
  void reset_previous_table(bool previous);
  void restore_previous_table(std::uint64_t now_ns);
  void set_observer(TransitionObserver* observer) { observer_ = observer; }
  std::size_t chunks_allocated() const { return chunks_allocated_; }

 private:
  // Lookup and life cycle.
  Connection* find(ConnectionHandle handle);
  const Connection* find(ConnectionHandle handle) const;
  ConnectionHandle handle_of(const Connection& c) const {
    return ConnectionHandle{index_of(c), c.generation};
  }
  std::uint32_t index_of(const Connection& c) const { return c.index; }
  // Connections live in chunks of kChunkSlots, allocated when a slot in them is first needed, so
  // the engine's private memory follows the connections in use rather than max_connections. A
  // chunk stays until the engine ends: addresses are stable, and a busy replica keeps its chunks.
  static constexpr std::uint32_t kChunkSlots = 256;
  bool has_slot(std::uint32_t index) const { return chunks_[index / kChunkSlots] != nullptr; }
  Connection& slot(std::uint32_t index) { return chunks_[index / kChunkSlots][index % kChunkSlots]; }
  // Allocates chunk `chunk`; its slots take their handle generations from the table. false:
  // no memory (counted).
  bool allocate_chunk(std::size_t chunk);
  // The lowest chunk not yet allocated, its slots onto the free list. false: every chunk is
  // allocated, or no memory.
  bool add_chunk();
  // No free slot, no chunk left to allocate and no TIME-WAIT entry to recycle.
  bool out_of_slots() const {
    return free_count_ == 0 && chunks_allocated_ == chunk_count_ && time_wait_oldest_ == kNoSlot;
  }
  // Calls `visit` with every connection in an allocated chunk, in use or not.
  template <class Visit>
  void for_each_slot(Visit&& visit) {
    for (std::size_t chunk = 0; chunk < chunk_count_; ++chunk) {
      if (chunks_[chunk] == nullptr) continue;
      const std::size_t slots = chunk_slots(chunk);
      for (std::size_t i = 0; i < slots; ++i) visit(chunks_[chunk][i]);
    }
  }
  std::size_t chunk_slots(std::size_t chunk) const {
    return std::min<std::size_t>(kChunkSlots, settings_.max_connections - chunk * kChunkSlots);
  }
  // A slot's runtime state back to its defaults; its index and handle generation stay.
  static void clear(Connection& c) {
    const std::uint32_t index = c.index;
    const std::uint32_t generation = c.generation;
    c = Connection{};
    c.index = index;
    c.generation = generation;
  }
  Connection* allocate(const FourTuple& tuple, std::uint64_t now_ns);
  void destroy(Connection& c);
  void set_state(Connection& c, TcpState state);
  void finish(Connection& c);  // end of a call touching c: table entry, timers, events
  void release_rings(Connection& c);
  void fail(Connection& c, int error, bool send_rst);
  void enter_time_wait(Connection& c, std::uint64_t now_ns);
  void append_time_wait(Connection& c);
  void schedule(Connection& c);
  void publish(Connection& c);
  void publish_listener(ListenerId id);
  void write_header();
  // The poison rule's record (TableHeader::in_flight): the connection this call serves.
  void serve(const Connection& c);
  // The end of every public call that may transmit: nothing in flight, the batch handed on.
  void end_call();

  // Restore (RestorePolicy::resume).
  bool restore(std::uint32_t index, const Tcb& entry, std::uint64_t now_ns);
  bool reconcile_rings(Connection& c, const Tcb& entry);
  // A previous incarnation's entry that is not carried on: RST to the peer, the flow released,
  // the host told (`error` with kEventFailed|kEventReleased; 0: nothing to tell), the slot freed.
  void drop_previous(std::uint32_t index, const Tcb& entry, int error);

  // The bodies of the application calls of the same names.
  void receive_consumed(Connection* c, std::uint64_t now_ns);
  void shut_write(Connection* c, std::uint64_t now_ns);
  void close_connection(Connection* c, std::uint64_t now_ns);

  // Segment handling.
  void dispatch(const FourTuple& tuple, const Incoming& segment, std::uint64_t now_ns);
  void on_listen_segment(ListenerId id, const FourTuple& tuple, const Incoming& segment, std::uint64_t now_ns);
  Connection* open_passive(ListenerId id, const FourTuple& tuple, const Incoming& in, std::uint32_t iss,
                           std::uint64_t now_ns);
  void start_sequence(Connection& c, std::uint32_t iss);
  void accept_cookie(ListenerId id, const FourTuple& tuple, const Incoming& segment, std::uint16_t mss,
                     std::uint64_t now_ns);
  void on_syn_sent_segment(Connection& c, const Incoming& segment, std::uint64_t now_ns);
  // false: the connection left TIME_WAIT for a new SYN; the caller dispatches the SYN again.
  bool on_synchronized_segment(Connection& c, const Incoming& segment, std::uint64_t now_ns);
  bool on_ack(Connection& c, const Incoming& segment, bool& our_fin_acked, std::uint64_t now_ns);
  void on_new_ack(Connection& c, const Incoming& segment, std::uint64_t now_ns);
  void on_duplicate_ack(Connection& c, std::uint64_t now_ns);
  void resend_lost_head_retransmission(Connection& c, std::uint64_t now_ns);
  bool may_start_recovery(const Connection& c) const;
  void on_reset(Connection& c);
  void answer_unacceptable(Connection& c, std::uint32_t length, std::uint64_t now_ns);
  void receive(Connection& c, const Incoming& segment, bool our_fin_acked, std::uint64_t now_ns);
  void accept_peer_fin(Connection& c, bool our_fin_acked, std::uint64_t now_ns);
  void negotiate(Connection& c, const Incoming& syn);
  void establish(Connection& c, std::uint64_t now_ns);
  ListenerId find_listener(std::uint32_t address, std::uint16_t port) const;

  // Sending.
  bool transmit(const OutgoingSegment& segment);
  void fill_common(Connection& c, OutgoingSegment& out, std::size_t payload_length, std::uint64_t now_ns);
  std::uint16_t announce_window(Connection& c);
  void send_syn(Connection& c, std::uint64_t now_ns);
  void send_ack(Connection& c, std::uint64_t now_ns);
  void send_probe(Connection& c, std::uint64_t now_ns);  // seq snd_una - 1: elicits an ACK
  void send_challenge_ack(Connection& c, std::uint64_t now_ns);
  void send_reset(const FourTuple& tuple, std::uint32_t sequence, std::uint32_t acknowledgment);
  void send_reset_reply(const FourTuple& tuple, const Incoming& segment);
  void send_range(Connection& c, std::uint32_t seq, std::uint32_t length, bool fin, std::uint64_t now_ns);
  void output(Connection& c, std::uint64_t now_ns);
  void retransmit_head(Connection& c, std::uint64_t now_ns);
  void skip_sacked(Connection& c);
  std::uint32_t resend_first_segment(Connection& c, std::uint64_t now_ns);
  void probe_restored_flight(Connection& c, std::uint64_t now_ns);
  void resend_restored_tail(Connection& c, std::uint64_t now_ns);
  void enter_recovery(Connection& c, std::uint64_t now_ns);
  std::uint32_t data_end(Connection& c);  // sequence after the last byte queued to send
  bool check_rings(Connection& c, std::uint64_t now_ns);

  // Timers.
  void on_retransmission_timeout(Connection& c, std::uint64_t now_ns);
  void on_persist_timeout(Connection& c, std::uint64_t now_ns);
  void on_keepalive_timeout(Connection& c, std::uint64_t now_ns);

  std::uint32_t timestamp_now(std::uint64_t now_ns) const {
    return static_cast<std::uint32_t>(now_ns / 1'000'000) + timestamp_offset_;
  }
  std::uint32_t flight_size(const Connection& c) const { return c.snd_nxt - c.snd_una; }

  EngineSettings settings_;
  EngineHost& host_;
  Counters counters_{};
  TableHeader* header_ = nullptr;
  Tcb* table_ = nullptr;
  ListenerEntry* listener_table_ = nullptr;
  std::size_t unflushed_ = 0;  // segments the host took since the last flush_segments()
  RestoreReport report_;
  std::unique_ptr<std::unique_ptr<Connection[]>[]> chunks_;
  std::size_t chunk_count_ = 0;
  std::size_t chunks_allocated_ = 0;
  // Free slots of allocated chunks, the next one handed out last. Written only as far as used, so
  // its untouched pages cost no memory.
  std::unique_ptr<std::uint32_t[]> free_slots_;
  std::size_t free_count_ = 0;
  std::unique_ptr<Listener[]> listeners_;
  FlowIndex flows_;
  DeadlineHeap timers_;
  std::size_t live_connections_ = 0;
  std::uint32_t time_wait_oldest_ = kNoSlot;  // the TIME-WAIT list, through Connection::time_wait_*
  std::uint32_t time_wait_newest_ = kNoSlot;
  std::uint32_t timestamp_offset_ = 0;
  std::uint64_t challenge_window_start_ns_ = 0;
  std::uint64_t challenge_acks_in_window_ = 0;
  bool awaiting_first_ack_ = false;  // restored connections, and no byte acknowledged since
  TransitionObserver* observer_ = nullptr;
};

void set_transition_observer(Engine& engine, TransitionObserver* observer) {
  static_cast<TcpEngine&>(engine).set_observer(observer);
}

std::size_t connection_chunks(const Engine& engine) {
  return static_cast<const TcpEngine&>(engine).chunks_allocated();
}

Result<std::unique_ptr<Engine>> Engine::create(std::span<std::byte> table, const EngineSettings& settings,
                                               EngineHost& host, NamedCounterTable& counters,
                                               std::uint64_t now_ns, RestorePolicy policy) {
  if (settings.max_connections == 0 || settings.max_connections > UINT32_MAX / 4 ||
      settings.max_listeners == 0 || settings.mss < 64) {
    return Error{Errc::invalid_argument, 0, "tcp engine settings"};
  }
  if (settings.segment_batch == 0) return Error{Errc::invalid_argument, 0, "tcp engine segment batch"};
  if (table.size() < table_bytes(settings) || reinterpret_cast<std::uintptr_t>(table.data()) % alignof(Tcb) != 0) {
    return Error{Errc::invalid_argument, 0, "tcp connection table region"};
  }
  const auto* header = reinterpret_cast<const TableHeader*>(table.data());
  const bool previous = std::atomic_ref<const std::uint64_t>(header->magic).load(std::memory_order_acquire) ==
                            kTableMagic &&
                        header->layout == kTableLayout && header->entry_bytes == sizeof(Tcb) &&
                        header->capacity > 0 && header->capacity <= settings.max_connections &&
                        header->listener_entry_bytes == sizeof(ListenerEntry);
  // Resuming needs the listener table where this engine puts it.
  const bool same_shape = previous && header->capacity == settings.max_connections &&
                          header->listener_capacity == settings.max_listeners;
  EngineSettings chosen = settings;
  if (chosen.secret[0] == 0 && chosen.secret[1] == 0) {
    if (previous && (header->secret[0] != 0 || header->secret[1] != 0)) {
      chosen.secret[0] = header->secret[0];
      chosen.secret[1] = header->secret[1];
    } else {
      std::random_device random;  // create() only: not on the data path
      chosen.secret[0] = (std::uint64_t{random()} << 32) | random();
      chosen.secret[1] = (std::uint64_t{random()} << 32) | random();
    }
  }
  auto engine = std::make_unique<TcpEngine>(table, chosen, host, counters);
  if (policy == RestorePolicy::resume && same_shape) {
    engine->restore_previous_table(now_ns);
  } else {
    engine->reset_previous_table(previous);
  }
  return std::unique_ptr<Engine>(std::move(engine));
}

TcpEngine::TcpEngine(std::span<std::byte> table, const EngineSettings& settings, EngineHost& host,
                     NamedCounterTable& counters)
    : settings_(settings),
      host_(host),
      header_(reinterpret_cast<TableHeader*>(table.data())),
      table_(reinterpret_cast<Tcb*>(table.data() + sizeof(TableHeader))),
      listener_table_(reinterpret_cast<ListenerEntry*>(table.data() + sizeof(TableHeader) +
                                                       settings.max_connections * sizeof(Tcb))),
      chunks_(std::make_unique<std::unique_ptr<Connection[]>[]>((settings.max_connections + kChunkSlots - 1) /
                                                                 kChunkSlots)),
      chunk_count_((settings.max_connections + kChunkSlots - 1) / kChunkSlots),
      free_slots_(std::make_unique_for_overwrite<std::uint32_t[]>(settings.max_connections)),
      listeners_(std::make_unique<Listener[]>(settings.max_listeners)),
      flows_(settings.max_connections),
      timers_(settings.max_connections),
      timestamp_offset_(static_cast<std::uint32_t>(mix64(settings.secret[0] ^ settings.secret[1]))) {
  counters_.register_in(counters);
}

bool TcpEngine::allocate_chunk(std::size_t chunk) {
  const std::size_t slots = chunk_slots(chunk);
  // When a connection opens or is restored, never per segment.
  chunks_[chunk].reset(new (std::nothrow) Connection[slots]);
  if (chunks_[chunk] == nullptr) {
    counters_.connection_memory_failed->add();
    return false;
  }
  ++chunks_allocated_;
  for (std::size_t i = 0; i < slots; ++i) {
    const auto index = static_cast<std::uint32_t>(chunk * kChunkSlots + i);
    chunks_[chunk][i].index = index;
    chunks_[chunk][i].generation = table_[index].generation;  // a free slot's generation is kept there
  }
  return true;
}

bool TcpEngine::add_chunk() {
  if (chunks_allocated_ == chunk_count_) return false;
  std::size_t chunk = 0;
  while (chunks_[chunk] != nullptr) ++chunk;
  if (!allocate_chunk(chunk)) return false;
  // Lowest slots first: a small test sees small indices, and few chunks get touched.
  for (std::size_t i = chunk_slots(chunk); i > 0; --i) {
    free_slots_[free_count_++] = static_cast<std::uint32_t>(chunk * kChunkSlots + i - 1);
  }
  return true;
}

// A previous incarnation's table: RST every synchronized connection it held, then start afresh.
// Every field is untrusted; a torn entry (odd version) is still worth a RST attempt, as the peer
// checks the sequence number anyway (RFC 5961).
void TcpEngine::reset_previous_table(bool previous) {
  if (previous) {
    for (std::uint32_t i = 0; i < header_->capacity; ++i) {
      Tcb entry;
      std::memcpy(static_cast<void*>(&entry), &table_[i], sizeof(Tcb));
      const auto state = static_cast<TcpState>(entry.state);
      if (entry.state > static_cast<std::uint8_t>(TcpState::time_wait) || !synchronized(state) ||
          state == TcpState::time_wait || entry.tuple.local_port == 0 || entry.tuple.remote_port == 0) {
        continue;
      }
      send_reset(entry.tuple, entry.snd_max, entry.rcv_nxt);
      host_.release_flow(entry.tuple);
      counters_.reset_at_restart->add();
    }
  }
  for (std::size_t i = 0; i < settings_.max_connections; ++i) {
    update_entry(table_[i], [](Tcb& tcb) {
      const std::uint32_t version = tcb.version;
      std::memset(static_cast<void*>(&tcb), 0, sizeof(Tcb));
      tcb.version = version;
    });
  }
  for (ListenerId id = 0; id < settings_.max_listeners; ++id) publish_listener(id);
  write_header();
  std::atomic_ref<std::uint64_t>(header_->suspect).store(kNoConnectionInFlight, std::memory_order_relaxed);
  end_call();
}

void TcpEngine::write_header() {
  header_->capacity = static_cast<std::uint32_t>(settings_.max_connections);
  header_->layout = kTableLayout;
  header_->entry_bytes = sizeof(Tcb);
  header_->listener_capacity = static_cast<std::uint32_t>(settings_.max_listeners);
  header_->listener_entry_bytes = sizeof(ListenerEntry);
  header_->secret[0] = settings_.secret[0];
  header_->secret[1] = settings_.secret[1];
  std::atomic_ref<std::uint64_t>(header_->in_flight).store(kNoConnectionInFlight, std::memory_order_relaxed);
  std::atomic_ref<std::uint64_t>(header_->magic).store(kTableMagic, std::memory_order_release);
}

void TcpEngine::serve(const Connection& c) {
  std::atomic_ref<std::uint64_t>(header_->in_flight)
      .store(in_flight_word(index_of(c), c.generation), std::memory_order_relaxed);
}

void TcpEngine::end_call() {
  std::atomic_ref<std::uint64_t>(header_->in_flight).store(kNoConnectionInFlight, std::memory_order_relaxed);
  unflushed_ = 0;
  host_.flush_segments();
}

// --- restore (RestorePolicy::resume) -------------------------------------------------------------

void TcpEngine::restore_previous_table(std::uint64_t now_ns) {
  const std::uint64_t in_flight =
      std::atomic_ref<std::uint64_t>(header_->in_flight).load(std::memory_order_relaxed);
  const std::uint64_t suspect = std::atomic_ref<std::uint64_t>(header_->suspect).load(std::memory_order_relaxed);
  const bool poisoned = in_flight != kNoConnectionInFlight && in_flight == suspect;
  for (ListenerId id = 0; id < settings_.max_listeners; ++id) {
    ListenerEntry entry;
    if (!read_entry(listener_table_[id], entry) || (entry.flags & kListenerInUse) == 0 || entry.port == 0 ||
        entry.backlog == 0) {
      publish_listener(id);  // clears a torn entry
      continue;
    }
    ConnectionOptions options;
    options.nodelay = (entry.flags & kListenerNodelay) != 0;
    options.cork = (entry.flags & kListenerCork) != 0;
    options.keepalive = (entry.flags & kListenerKeepalive) != 0;
    options.congestion = entry.congestion_algorithm == static_cast<std::uint8_t>(CongestionAlgorithm::newreno)
                             ? CongestionAlgorithm::newreno
                             : CongestionAlgorithm::cubic;
    options.keepalive_idle_s = entry.keepalive_idle_s;
    options.keepalive_interval_s = entry.keepalive_interval_s;
    options.keepalive_count = entry.keepalive_count;
    listeners_[id] = Listener{.in_use = true, .address = entry.address, .port = entry.port,
                              .backlog = entry.backlog, .syn_queue = 0,
                              .accept_queue = std::min<std::uint32_t>(entry.accept_queue, entry.backlog),
                              .options = options};
    ++report_.listeners;
  }
  for (std::uint32_t i = 0; i < settings_.max_connections; ++i) {
    Tcb entry;
    const bool consistent = read_entry(table_[i], entry);
    if (consistent && entry.state == static_cast<std::uint8_t>(TcpState::closed)) continue;
    const bool known_state = entry.state <= static_cast<std::uint8_t>(TcpState::time_wait) &&
                             entry.state != static_cast<std::uint8_t>(TcpState::listen);
    if (!consistent || !known_state) {
      drop_previous(i, entry, EIO);
      continue;
    }
    if (poisoned && in_flight_word(i, entry.generation) == in_flight) {
      counters_.poisoned_dropped->add();
      report_.poisoned_dropped = true;
      report_.poisoned = entry.tuple;
      drop_previous(i, entry, ECONNABORTED);
      continue;
    }
    if (!restore(i, entry, now_ns)) continue;
    ++report_.restored;
    counters_.restored->add();
  }
  free_count_ = 0;
  for (std::size_t i = settings_.max_connections; i > 0; --i) {
    const auto index = static_cast<std::uint32_t>(i - 1);
    if (has_slot(index) && !slot(index).in_use) free_slots_[free_count_++] = index;
  }
  std::atomic_ref<std::uint64_t>(header_->suspect)
      .store(poisoned ? kNoConnectionInFlight : in_flight, std::memory_order_relaxed);
  write_header();
  awaiting_first_ack_ = report_.restored > 0;
  // One ACK per connection that talks: it owes any delayed ACK, and tells the peer the window. And
  // the events that hold are told again: the predecessor may have died before the host heard them.
  for_each_slot([&](Connection& c) {
    if (!c.in_use || !synchronized(c.state) || c.state == TcpState::time_wait) return;
    serve(c);
    c.pending_events |= kEventEstablished | kEventReadable | kEventWritable;
    if (c.state == TcpState::close_wait || c.state == TcpState::last_ack || c.state == TcpState::closing) {
      c.pending_events |= kEventPeerClosed;
    }
    send_ack(c, now_ns);
    output(c, now_ns);
    // Segments the predecessor built but never sent died with it, and nothing would ask for them
    // before the retransmission timeout: probe both ends of the flight (see probe_restored_flight).
    if (seq_lt(c.snd_una, c.snd_max)) probe_restored_flight(c, now_ns);
    finish(c);
  });
  end_call();
}

void TcpEngine::drop_previous(std::uint32_t index, const Tcb& entry, int error) {
  const auto state = static_cast<TcpState>(entry.state);
  const bool talks = entry.state <= static_cast<std::uint8_t>(TcpState::time_wait) &&
                     (synchronized(state) || state == TcpState::syn_received) && state != TcpState::time_wait;
  if (entry.tuple.local_port != 0 && entry.tuple.remote_port != 0) {
    if (talks) send_reset(entry.tuple, entry.snd_max, entry.rcv_nxt);
    host_.release_flow(entry.tuple);
  }
  if (error != 0) {
    host_.on_events(ConnectionHandle{index, entry.generation}, kEventFailed | kEventReleased, error);
  }
  if (error != ECONNABORTED) {
    ++report_.failed;
    counters_.restore_failed->add();
  }
  if (has_slot(index)) slot(index).generation = entry.generation + 1;
  update_entry(table_[index], [&](Tcb& tcb) {
    const std::uint32_t version = tcb.version;
    std::memset(static_cast<void*>(&tcb), 0, sizeof(Tcb));
    tcb.version = version;
    tcb.generation = entry.generation + 1;
  });
}

bool TcpEngine::restore(std::uint32_t index, const Tcb& entry, std::uint64_t now_ns) {
  const auto state = static_cast<TcpState>(entry.state);
  const bool listener_ok = entry.listener == kNoListener ||
                           (entry.listener < settings_.max_listeners && listeners_[entry.listener].in_use);
  const bool plausible = entry.tuple.local_port != 0 && entry.tuple.remote_port != 0 && entry.mss >= 64 &&
                         entry.peer_mss >= 64 && entry.rcv_mss >= 64 && entry.send_window_shift <= 14 &&
                         entry.receive_window_shift <= 14 && entry.congestion_algorithm <= 1 &&
                         flows_.find(entry.tuple) == FlowIndex::kMissing &&
                         (listener_ok || (entry.flags & kTcbInSynQueue) == 0);
  if (!plausible) {
    drop_previous(index, entry, EIO);
    return false;
  }
  if (!has_slot(index) && !allocate_chunk(index / kChunkSlots)) {
    drop_previous(index, entry, ENOMEM);
    return false;
  }
  Connection& c = slot(index);
  clear(c);
  c.generation = entry.generation;
  c.tuple = entry.tuple;
  c.state = state;
  serve(c);  // an entry that crashes the engine as it comes back is poison too
  const ConnectionHandle handle{index, entry.generation};
  if (state != TcpState::time_wait) {
    const auto rings = host_.rings_for_restored(handle, entry.tuple, entry.listener);
    if (!rings || !rings->send.valid() || !rings->receive.valid()) {
      drop_previous(index, entry, 0);
      return false;
    }
    c.rings = *rings;
    c.rings_live = true;
  }
  const std::uint16_t flags = entry.flags;
  c.listener = listener_ok ? entry.listener : kNoListener;
  c.in_syn_queue = (flags & kTcbInSynQueue) != 0 && c.listener != kNoListener;
  c.app_closed = (flags & kTcbAppClosed) != 0;
  c.write_shut = (flags & kTcbWriteShut) != 0;
  c.fin_sent = (flags & kTcbFinSent) != 0;
  c.options.nodelay = (flags & kTcbNodelay) != 0;
  c.options.cork = (flags & kTcbCork) != 0;
  c.options.keepalive = (flags & kTcbKeepalive) != 0;
  c.options.congestion = static_cast<CongestionAlgorithm>(entry.congestion_algorithm);
  c.options.keepalive_idle_s = entry.keepalive_idle_s;
  c.options.keepalive_interval_s = entry.keepalive_interval_s;
  c.options.keepalive_count = entry.keepalive_count;
  c.timestamps = (flags & kTcbTimestamps) != 0;
  c.sack = (flags & kTcbSack) != 0;
  c.window_scaling = (flags & kTcbWindowScaling) != 0;
  c.send_window_shift = entry.send_window_shift;
  c.receive_window_shift = entry.receive_window_shift;
  c.mss = entry.mss;
  c.peer_mss = entry.peer_mss;
  c.rcv_mss = entry.rcv_mss;
  c.iss = entry.iss;
  c.snd_una = entry.snd_una;
  c.snd_nxt = entry.snd_nxt;
  c.snd_max = entry.snd_max;
  c.snd_wnd = entry.snd_wnd;
  c.max_snd_wnd = entry.max_snd_wnd;
  c.snd_wl1 = entry.snd_wl1;
  c.snd_wl2 = entry.snd_wl2;
  c.head_seq = entry.head_seq;
  c.fin_seq = entry.fin_seq;
  c.write_end = entry.write_end;
  c.irs = entry.irs;
  c.rcv_nxt = entry.rcv_nxt;
  c.rcv_adv = entry.rcv_adv;
  c.last_ack_sent = entry.last_ack_sent;
  c.ts_recent = entry.ts_recent;
  c.retries = entry.retries;
  c.persist_backoff = std::min<std::uint32_t>(entry.persist_backoff, 16);
  c.persist_unanswered = entry.persist_unanswered;
  c.persist_sent_ns = entry.persist_sent_ns;
  c.keepalive_probes = entry.keepalive_probes;
  c.last_received_ns = entry.last_received_ns;
  c.rto_at = entry.rto_at;
  c.persist_at = entry.persist_at;
  c.keepalive_at = entry.keepalive_at;
  c.linger_at = entry.linger_at;
  c.rtt.init(settings_.initial_rto_ns, settings_.min_rto_ns, settings_.max_rto_ns);
  if ((flags & kTcbRttSampled) != 0) {
    c.rtt.srtt_ns_ = entry.srtt_ns;
    c.rtt.rttvar_ns_ = entry.rttvar_ns;
    c.rtt.base_rto_ns_ = std::clamp(entry.base_rto_ns, settings_.min_rto_ns, settings_.max_rto_ns);
    c.rtt.has_sample_ = true;
  }
  c.rtt.backoff_shift_ = std::min<std::uint32_t>(entry.rtt_backoff, 16);
  if (synchronized(state)) {
    // The CUBIC epoch starts again from the kept window (W_max = cwnd); recovery is over.
    c.congestion.init(c.options.congestion, c.mss, now_ns);
    c.congestion.cwnd_ = std::max<std::uint64_t>(entry.cwnd, c.mss);
    c.congestion.ssthresh_ = std::max<std::uint64_t>(entry.ssthresh, 2 * std::uint64_t{c.mss});
  }
  c.recovery_point = c.snd_una;
  c.high_rxt = c.snd_una;
  c.scoreboard.reset(c.snd_una);
  if (c.rings_live && !reconcile_rings(c, entry)) {
    clear(c);
    drop_previous(index, entry, EIO);
    return false;
  }
  if (!host_.claim_flow(c.tuple)) {
    counters_.claim_failed->add();
    clear(c);
    drop_previous(index, entry, EIO);
    return false;
  }
  c.in_use = true;
  flows_.insert(c.tuple, index);
  ++live_connections_;
  if (c.in_syn_queue) ++listeners_[c.listener].syn_queue;
  if (state == TcpState::time_wait) append_time_wait(c);
  publish(c);
  schedule(c);
  return true;
}

// The predecessor consumes send-ring bytes when they are acknowledged and publishes receive-ring
// bytes when they arrive in order, and may have died before its table entry said so. The rings'
// shared indices are the truth for those bytes: acknowledged ones are acknowledged, delivered ones
// received. Anything outside what the entry allows means the ring or the entry is wrong.
bool TcpEngine::reconcile_rings(Connection& c, const Tcb& entry) {
  const std::uint64_t send_head = c.rings.send.head();
  const std::uint64_t sent = seq_diff(c.snd_max, c.head_seq) > 0 ? c.snd_max - c.head_seq : 0;
  if (send_head < entry.send_ring_head || send_head - entry.send_ring_head > sent) return false;
  const auto acked = static_cast<std::uint32_t>(send_head - entry.send_ring_head);
  if (acked > 0) {
    c.head_seq += acked;
    if (seq_gt(c.head_seq, c.snd_una)) c.snd_una = c.head_seq;
    if (seq_lt(c.snd_nxt, c.snd_una)) c.snd_nxt = c.snd_una;
  }
  const std::uint64_t receive_tail = c.rings.receive.tail();
  if (receive_tail < entry.receive_ring_tail ||
      receive_tail - entry.receive_ring_tail > c.rings.receive.capacity()) {
    return false;
  }
  c.rcv_nxt += static_cast<std::uint32_t>(receive_tail - entry.receive_ring_tail);
  if (seq_lt(c.rcv_adv, c.rcv_nxt)) c.rcv_adv = c.rcv_nxt;
  if (c.rings.send.corrupt() || c.rings.receive.corrupt()) return false;
  c.rings.send.readable();
  return !c.rings.send.corrupt();
}

// --- life cycle ---------------------------------------------------------------------------------

Connection* TcpEngine::find(ConnectionHandle handle) {
  if (handle.index >= settings_.max_connections || !has_slot(handle.index)) return nullptr;
  Connection& c = slot(handle.index);
  if (!c.in_use || c.generation != handle.generation || !c.rings_live) return nullptr;
  return &c;
}

const Connection* TcpEngine::find(ConnectionHandle handle) const {
  return const_cast<TcpEngine*>(this)->find(handle);
}

Connection* TcpEngine::allocate(const FourTuple& tuple, std::uint64_t now_ns) {
  if (free_count_ == 0 && !add_chunk() && time_wait_oldest_ != kNoSlot) {
    // A full table (or no memory for another chunk) gives up its oldest TIME-WAIT entry rather
    // than refuse a connection (as Linux does past tcp_max_tw_buckets): that peer has been gone
    // for the longest.
    counters_.time_wait_recycled->add();
    destroy(slot(time_wait_oldest_));
  }
  if (free_count_ == 0) {
    counters_.table_full->add();
    return nullptr;
  }
  const std::uint32_t index = free_slots_[--free_count_];
  Connection& c = slot(index);
  clear(c);
  c.in_use = true;
  c.tuple = tuple;
  c.last_received_ns = now_ns;
  c.rtt.init(settings_.initial_rto_ns, settings_.min_rto_ns, settings_.max_rto_ns);
  flows_.insert(tuple, index);
  ++live_connections_;
  return &c;
}

void TcpEngine::set_state(Connection& c, TcpState state) {
  if (c.state == state) return;
  if (observer_ != nullptr) observer_->on_transition(c.state, state);
  c.state = state;
}

void TcpEngine::release_rings(Connection& c) {
  if (!c.rings_live) return;
  c.rings_live = false;
  c.pending_events |= kEventReleased;
}

// The connection is gone: its events go out now, while its handle still names it.
void TcpEngine::destroy(Connection& c) {
  const bool was_time_wait = c.state == TcpState::time_wait;
  set_state(c, TcpState::closed);
  release_rings(c);
  if (c.pending_events != 0) {
    host_.on_events(handle_of(c), c.pending_events, c.pending_error);
    c.pending_events = 0;
  }
  if (c.in_syn_queue && c.listener != kNoListener && listeners_[c.listener].syn_queue > 0) {
    --listeners_[c.listener].syn_queue;
  }
  const std::uint32_t index = index_of(c);
  if (was_time_wait) {
    if (c.time_wait_previous != kNoSlot) slot(c.time_wait_previous).time_wait_next = c.time_wait_next;
    else time_wait_oldest_ = c.time_wait_next;
    if (c.time_wait_next != kNoSlot) slot(c.time_wait_next).time_wait_previous = c.time_wait_previous;
    else time_wait_newest_ = c.time_wait_previous;
  }
  flows_.erase(c.tuple);
  timers_.set(index, DeadlineHeap::kNever);
  host_.release_flow(c.tuple);
  c.in_use = false;
  ++c.generation;
  update_entry(table_[index], [&](Tcb& tcb) {
    tcb.state = static_cast<std::uint8_t>(TcpState::closed);
    tcb.tuple = FourTuple{};
    tcb.generation = c.generation;
  });
  free_slots_[free_count_++] = index;
  --live_connections_;
}

void TcpEngine::fail(Connection& c, int error, bool send_rst) {
  if (send_rst && (synchronized(c.state) || c.state == TcpState::syn_received)) {
    send_reset(c.tuple, c.snd_max, c.rcv_nxt);
  }
  if (error != 0 && c.rings_live) {
    c.pending_events |= kEventFailed;
    c.pending_error = error;
  }
  destroy(c);
}

void TcpEngine::enter_time_wait(Connection& c, std::uint64_t now_ns) {
  if (c.state == TcpState::time_wait) return;
  set_state(c, TcpState::time_wait);
  release_rings(c);
  append_time_wait(c);
  c.rto_at = c.persist_at = c.keepalive_at = c.delayed_ack_at = kNever;
  c.linger_at = now_ns + settings_.time_wait_ns;
}

// The TIME-WAIT list, oldest first.
void TcpEngine::append_time_wait(Connection& c) {
  const std::uint32_t index = index_of(c);
  c.time_wait_previous = time_wait_newest_;
  c.time_wait_next = kNoSlot;
  if (time_wait_newest_ != kNoSlot) slot(time_wait_newest_).time_wait_next = index;
  time_wait_newest_ = index;
  if (time_wait_oldest_ == kNoSlot) time_wait_oldest_ = index;
}

void TcpEngine::schedule(Connection& c) {
  const std::uint64_t earliest =
      std::min({c.rto_at, c.delayed_ack_at, c.persist_at, c.keepalive_at, c.linger_at});
  timers_.set(index_of(c), earliest);
}

void TcpEngine::publish(Connection& c) {
  update_entry(table_[index_of(c)], [&](Tcb& tcb) {
    tcb.state = static_cast<std::uint8_t>(c.state);
    tcb.send_window_shift = c.send_window_shift;
    tcb.receive_window_shift = c.receive_window_shift;
    tcb.congestion_algorithm = static_cast<std::uint8_t>(c.options.congestion);
    tcb.flags = static_cast<std::uint16_t>(
        (c.timestamps ? kTcbTimestamps : 0) | (c.sack ? kTcbSack : 0) | (c.window_scaling ? kTcbWindowScaling : 0) |
        (c.app_closed ? kTcbAppClosed : 0) | (c.write_shut ? kTcbWriteShut : 0) | (c.fin_sent ? kTcbFinSent : 0) |
        (c.in_syn_queue ? kTcbInSynQueue : 0) | (c.options.nodelay ? kTcbNodelay : 0) |
        (c.options.cork ? kTcbCork : 0) | (c.options.keepalive ? kTcbKeepalive : 0) |
        (c.rtt.has_sample() ? kTcbRttSampled : 0));
    tcb.mss = static_cast<std::uint16_t>(c.mss);
    tcb.peer_mss = static_cast<std::uint16_t>(c.peer_mss);
    tcb.rcv_mss = static_cast<std::uint16_t>(std::min<std::uint32_t>(c.rcv_mss, 0xffff));
    tcb.generation = c.generation;
    tcb.tuple = c.tuple;
    tcb.listener = c.listener;
    tcb.iss = c.iss;
    tcb.snd_una = c.snd_una;
    tcb.snd_nxt = c.snd_nxt;
    tcb.snd_max = c.snd_max;
    tcb.snd_wnd = c.snd_wnd;
    tcb.max_snd_wnd = c.max_snd_wnd;
    tcb.snd_wl1 = c.snd_wl1;
    tcb.snd_wl2 = c.snd_wl2;
    tcb.head_seq = c.head_seq;
    tcb.fin_seq = c.fin_seq;
    tcb.write_end = c.write_end;
    tcb.irs = c.irs;
    tcb.rcv_nxt = c.rcv_nxt;
    tcb.rcv_adv = c.rcv_adv;
    tcb.last_ack_sent = c.last_ack_sent;
    tcb.ts_recent = c.ts_recent;
    tcb.retries = c.retries;
    tcb.persist_backoff = c.persist_backoff;
    tcb.persist_unanswered = c.persist_unanswered;
    tcb.keepalive_probes = c.keepalive_probes;
    tcb.rtt_backoff = c.rtt.backoff_count();
    tcb.keepalive_idle_s = c.options.keepalive_idle_s;
    tcb.keepalive_interval_s = c.options.keepalive_interval_s;
    tcb.keepalive_count = c.options.keepalive_count;
    tcb.send_ring_head = c.rings.send.head();
    tcb.receive_ring_tail = c.rings.receive.tail();
    tcb.srtt_ns = c.rtt.srtt_ns();
    tcb.rttvar_ns = c.rtt.rttvar_ns();
    tcb.base_rto_ns = c.rtt.base_rto_ns_;
    tcb.cwnd = c.congestion.cwnd();
    tcb.ssthresh = c.congestion.ssthresh();
    tcb.rto_at = c.rto_at;
    tcb.persist_at = c.persist_at;
    tcb.keepalive_at = c.keepalive_at;
    tcb.linger_at = c.linger_at;
    tcb.last_received_ns = c.last_received_ns;
    tcb.persist_sent_ns = c.persist_sent_ns;
  });
}

void TcpEngine::publish_listener(ListenerId id) {
  const Listener& l = listeners_[id];
  update_entry(listener_table_[id], [&](ListenerEntry& entry) {
    const std::uint32_t version = entry.version;
    entry = ListenerEntry{};
    entry.version = version;
    if (!l.in_use) return;
    entry.flags = static_cast<std::uint8_t>(kListenerInUse | (l.options.nodelay ? kListenerNodelay : 0) |
                                            (l.options.cork ? kListenerCork : 0) |
                                            (l.options.keepalive ? kListenerKeepalive : 0));
    entry.congestion_algorithm = static_cast<std::uint8_t>(l.options.congestion);
    entry.port = l.port;
    entry.address = l.address;
    entry.backlog = l.backlog;
    entry.accept_queue = l.accept_queue;
    entry.keepalive_idle_s = l.options.keepalive_idle_s;
    entry.keepalive_interval_s = l.options.keepalive_interval_s;
    entry.keepalive_count = l.options.keepalive_count;
  });
}

void TcpEngine::finish(Connection& c) {
  if (!c.in_use) return;
  publish(c);
  schedule(c);
  if (c.pending_events != 0) {
    const std::uint32_t events = c.pending_events;
    const int error = c.pending_error;
    c.pending_events = 0;
    c.pending_error = 0;
    host_.on_events(handle_of(c), events, error);
  }
}

// false (and the connection failed with EIO) when the application corrupted a ring.
bool TcpEngine::check_rings(Connection& c, std::uint64_t /*now_ns*/) {
  if (!c.rings_live) return true;
  if (c.rings.send.corrupt() || c.rings.receive.corrupt()) {
    counters_.ring_corrupt->add();
    fail(c, EIO, true);
    return false;
  }
  return true;
}

// --- public calls -------------------------------------------------------------------------------

Result<ConnectionHandle> TcpEngine::connect(const FourTuple& tuple, StreamRings rings,
                                            const ConnectionOptions& options, std::uint64_t now_ns) {
  if (!rings.send.valid() || !rings.receive.valid() || tuple.local_port == 0 || tuple.remote_port == 0 ||
      flows_.find(tuple) != FlowIndex::kMissing) {
    return Error{Errc::invalid_argument, 0, "tcp connect"};
  }
  if (out_of_slots()) return Error{Errc::exhausted, 0, "tcp connection table"};
  if (!host_.claim_flow(tuple)) {
    counters_.claim_failed->add();
    return Error{Errc::invalid_argument, 0, "tcp flow claim"};
  }
  Connection* c = allocate(tuple, now_ns);
  if (c == nullptr) {
    host_.release_flow(tuple);
    return Error{Errc::exhausted, 0, "tcp connection memory"};
  }
  serve(*c);
  c->options = options;
  c->rings = rings;
  c->rings_live = true;
  start_sequence(*c, initial_sequence(tuple, settings_.secret, now_ns));
  set_state(*c, TcpState::syn_sent);
  send_syn(*c, now_ns);
  c->rto_at = now_ns + c->rtt.rto_ns();
  const ConnectionHandle handle = handle_of(*c);
  finish(*c);
  end_call();
  return handle;
}

Result<ListenerId> TcpEngine::listen(std::uint32_t local_address, std::uint16_t port, std::uint16_t backlog,
                                     const ConnectionOptions& options) {
  if (port == 0) return Error{Errc::invalid_argument, 0, "tcp listen port"};
  ListenerId free_id = kNoListener;
  for (ListenerId id = 0; id < settings_.max_listeners; ++id) {
    const Listener& l = listeners_[id];
    if (l.in_use && l.port == port && l.address == local_address) {
      return Error{Errc::invalid_argument, 0, "tcp listen port in use"};
    }
    if (!l.in_use && free_id == kNoListener) free_id = id;
  }
  if (free_id == kNoListener) return Error{Errc::exhausted, 0, "tcp listener table"};
  listeners_[free_id] = Listener{.in_use = true, .address = local_address, .port = port,
                                 .backlog = std::max<std::uint16_t>(backlog, 1), .syn_queue = 0,
                                 .accept_queue = 0, .options = options};
  publish_listener(free_id);
  if (observer_ != nullptr) observer_->on_transition(TcpState::closed, TcpState::listen);
  return free_id;
}

void TcpEngine::close_listener(ListenerId id) {
  if (id >= settings_.max_listeners || !listeners_[id].in_use) return;
  // Half-open connections die with their listener (RST, as Linux does); established ones already
  // belong to the application's accept queue handling.
  for_each_slot([&](Connection& c) {
    if (c.in_use && c.listener == id && c.in_syn_queue) fail(c, 0, true);
  });
  for_each_slot([&](Connection& c) {
    if (c.in_use && c.listener == id) c.listener = kNoListener;
  });
  listeners_[id] = Listener{};
  publish_listener(id);
  if (observer_ != nullptr) observer_->on_transition(TcpState::listen, TcpState::closed);
  end_call();
}

void TcpEngine::accepted(ListenerId id, std::uint32_t count) {
  if (id >= settings_.max_listeners || !listeners_[id].in_use) return;
  Listener& l = listeners_[id];
  l.accept_queue -= std::min(count, l.accept_queue);
  publish_listener(id);
}

bool TcpEngine::rebind_rings(ConnectionHandle handle, StreamRings rings) {
  Connection* c = find(handle);
  if (c == nullptr || !rings.send.valid() || !rings.receive.valid() ||
      rings.send.capacity() != c->rings.send.capacity() || rings.receive.capacity() != c->rings.receive.capacity() ||
      rings.send.head() != c->rings.send.head() || rings.receive.tail() != c->rings.receive.tail()) {
    return false;
  }
  c->rings = rings;
  c->out_of_order.clear();
  (void)c->rings.send.readable();
  return true;
}

void TcpEngine::on_send_ready(ConnectionHandle handle, std::uint64_t now_ns) {
  Connection* c = find(handle);
  if (c == nullptr) return;
  serve(*c);
  output(*c, now_ns);
  finish(*c);
  end_call();
}

void TcpEngine::on_receive_consumed(ConnectionHandle handle, std::uint64_t now_ns) {
  Connection* c = find(handle);
  if (c == nullptr || !synchronized(c->state)) return;
  serve(*c);
  receive_consumed(c, now_ns);
  end_call();
}

void TcpEngine::receive_consumed(Connection* c, std::uint64_t now_ns) {
  const std::size_t free = c->rings.receive.free_space();
  if (!check_rings(*c, now_ns)) return;
  // RFC 1122 4.2.3.3: tell the peer once the window can grow by min(half the buffer, one MSS),
  // which also reopens a zero window.
  const std::uint32_t right = c->rcv_nxt + static_cast<std::uint32_t>(free);
  const std::uint32_t threshold =
      std::min<std::uint32_t>(static_cast<std::uint32_t>(c->rings.receive.capacity() / 2), c->rcv_mss);
  if (seq_gt(right, c->rcv_adv) && right - c->rcv_adv >= threshold &&
      c->rcv_adv - c->rcv_nxt < c->rings.receive.capacity() / 2) {
    send_ack(*c, now_ns);
  }
  finish(*c);
}

void TcpEngine::shutdown_write(ConnectionHandle handle, std::uint64_t now_ns) {
  Connection* c = find(handle);
  if (c == nullptr || c->write_shut) return;
  serve(*c);
  shut_write(c, now_ns);
  end_call();
}

void TcpEngine::shut_write(Connection* c, std::uint64_t now_ns) {
  c->write_end = data_end(*c);
  c->write_shut = true;
  if (c->state == TcpState::syn_sent) {
    // Nothing was said yet; the FIN follows the handshake.
  } else if (c->state == TcpState::syn_received && c->rings.send.readable() == 0) {
    // RFC 9293 3.10.4: no data queued, so FIN now (SYN-RECEIVED -> FIN-WAIT-1).
    send_range(*c, c->snd_max == c->iss ? c->iss + 1 : c->snd_max, 0, true, now_ns);
  }
  output(*c, now_ns);
  finish(*c);
}

void TcpEngine::close(ConnectionHandle handle, std::uint64_t now_ns) {
  Connection* c = find(handle);
  if (c == nullptr) return;
  serve(*c);
  close_connection(c, now_ns);
  end_call();
}

void TcpEngine::close_connection(Connection* c, std::uint64_t now_ns) {
  if (c->state == TcpState::syn_sent) {
    destroy(*c);
    return;
  }
  c->app_closed = true;
  // Unread data at close: RST, as Linux does (RFC 2525 2.17).
  const std::size_t free = c->rings.receive.free_space();
  if (c->rings.receive.corrupt() || free < c->rings.receive.capacity()) {
    fail(*c, 0, true);
    return;
  }
  if (c->state == TcpState::fin_wait_2) c->linger_at = now_ns + settings_.time_wait_ns;
  if (!c->write_shut) {
    shut_write(c, now_ns);
    return;
  }
  finish(*c);
}

void TcpEngine::abort(ConnectionHandle handle, std::uint64_t /*now_ns*/) {
  Connection* c = find(handle);
  if (c == nullptr) return;
  serve(*c);
  fail(*c, 0, true);
  end_call();
}

Status TcpEngine::set_options(ConnectionHandle handle, const ConnectionOptions& options, std::uint64_t now_ns) {
  Connection* c = find(handle);
  if (c == nullptr) return Error{Errc::invalid_argument, 0, "tcp connection handle"};
  const bool algorithm_changed = options.congestion != c->options.congestion;
  c->options = options;
  if (algorithm_changed && synchronized(c->state)) c->congestion.init(options.congestion, c->mss, now_ns);
  if (options.keepalive && c->keepalive_at == kNever && synchronized(c->state)) {
    c->keepalive_at = c->last_received_ns + std::uint64_t{options.keepalive_idle_s} * kSecond;
  }
  if (!options.keepalive) c->keepalive_at = kNever;
  serve(*c);
  output(*c, now_ns);  // uncorking or TCP_NODELAY push what waits
  finish(*c);
  end_call();
  return {};
}

std::optional<ConnectionInfo> TcpEngine::info(ConnectionHandle handle) const {
  const Connection* found = find(handle);
  if (found == nullptr) return std::nullopt;
  const Connection& c = *found;
  ConnectionInfo info;
  info.state = c.state;
  info.tuple = c.tuple;
  info.mss = c.mss;
  info.srtt_ns = c.rtt.srtt_ns();
  info.rto_ns = c.rtt.rto_ns();
  info.cwnd_bytes = c.congestion.cwnd();
  info.ssthresh_bytes = c.congestion.ssthresh();
  info.bytes_in_flight = c.snd_max - c.snd_una;
  info.send_window = c.snd_wnd;
  info.retransmits = c.retransmits;
  info.bytes_acked = c.bytes_acked;
  info.bytes_received = c.bytes_received;
  info.sack_permitted = c.sack;
  info.timestamps = c.timestamps;
  info.send_window_shift = c.send_window_shift;
  info.receive_window_shift = c.receive_window_shift;
  return info;
}

// --- incoming segments --------------------------------------------------------------------------

void TcpEngine::on_packet(std::uint32_t source, std::uint32_t destination, std::span<std::byte> bytes,
                          std::uint64_t now_ns) {
  counters_.segments_in->add();
  const auto parsed = wire::TcpSegment::parse(bytes, source, destination);
  if (!parsed) {
    switch (parsed.error()) {
      case wire::WireError::bad_checksum: counters_.bad_checksum->add(); break;
      case wire::WireError::bad_option: counters_.bad_options->add(); break;
      default: counters_.bad_header->add(); break;
    }
    return;
  }
  const wire::TcpSegment& segment = *parsed;
  const auto options = wire::parse_tcp_options(segment.options());
  if (!options) {
    counters_.bad_options->add();
    return;
  }
  Incoming in;
  in.seq = segment.sequence();
  in.ack = segment.acknowledgment();
  in.flags = segment.flags();
  in.window = segment.window();
  in.payload = segment.payload();
  in.options = *options;
  // Impossible combinations (RFC 9293 does not define them; scanners use them): SYN with FIN or
  // RST, and segments with none of SYN, ACK, RST (a NULL or FIN/PSH/URG-only "Xmas" probe).
  const bool syn = in.has(wire::kTcpSyn);
  if ((syn && (in.has(wire::kTcpFin) || in.has(wire::kTcpRst))) ||
      (in.flags & (wire::kTcpSyn | wire::kTcpAck | wire::kTcpRst)) == 0 ||
      source == 0 || segment.source_port() == 0 || segment.destination_port() == 0) {
    counters_.bad_flags->add();
    return;
  }
  const FourTuple tuple{.local_address = destination, .remote_address = source,
                        .local_port = segment.destination_port(), .remote_port = segment.source_port()};
  dispatch(tuple, in, now_ns);
  end_call();
}

void TcpEngine::dispatch(const FourTuple& tuple, const Incoming& in, std::uint64_t now_ns) {
  const std::uint32_t index = flows_.find(tuple);
  if (index != FlowIndex::kMissing) {
    Connection& c = slot(index);
    serve(c);
    if (c.state == TcpState::syn_sent) {
      on_syn_sent_segment(c, in, now_ns);
      finish(c);
      return;
    }
    const bool handled = on_synchronized_segment(c, in, now_ns);
    finish(c);
    if (handled) return;
    // TIME_WAIT gave way to a new SYN: it goes to the listener below.
  }
  const ListenerId listener = find_listener(tuple.local_address, tuple.local_port);
  if (listener != kNoListener) {
    on_listen_segment(listener, tuple, in, now_ns);
    return;
  }
  counters_.no_connection->add();
  send_reset_reply(tuple, in);
}

ListenerId TcpEngine::find_listener(std::uint32_t address, std::uint16_t port) const {
  ListenerId wildcard = kNoListener;
  for (ListenerId id = 0; id < settings_.max_listeners; ++id) {
    const Listener& l = listeners_[id];
    if (!l.in_use || l.port != port) continue;
    if (l.address == address) return id;
    if (l.address == 0) wildcard = id;
  }
  return wildcard;
}

void TcpEngine::negotiate(Connection& c, const Incoming& syn) {
  const wire::TcpOptions& o = syn.options;
  c.window_scaling = settings_.window_scaling && o.window_scale.has_value();
  c.send_window_shift = c.window_scaling ? std::min<std::uint8_t>(*o.window_scale, 14) : 0;
  if (c.window_scaling) {
    // The smallest shift that lets the whole receive ring be announced in 16 bits.
    std::uint8_t shift = 0;
    while (shift < 14 && (c.rings.receive.capacity() >> shift) > 0xffff) ++shift;
    c.receive_window_shift = shift;
  } else {
    c.receive_window_shift = 0;
  }
  c.sack = settings_.sack && o.sack_permitted;
  c.timestamps = settings_.timestamps && o.timestamps.has_value();
  if (c.timestamps) c.ts_recent = o.timestamps->first;
  c.peer_mss = o.mss.value_or(kDefaultMss);
  if (c.peer_mss < 64) c.peer_mss = 64;  // a hostile tiny MSS would turn every byte into a segment
  c.mss = std::min<std::uint32_t>(c.peer_mss, settings_.mss) - (c.timestamps ? kTimestampBytes : 0);
  // A full segment from the peer: what our MSS lets it send, less its timestamp option.
  c.rcv_mss = std::min<std::uint32_t>(settings_.mss, c.peer_mss) - (c.timestamps ? kTimestampBytes : 0);
  c.irs = syn.seq;
  c.rcv_nxt = syn.seq + 1;
  c.last_ack_sent = c.rcv_nxt;
}

void TcpEngine::on_listen_segment(ListenerId id, const FourTuple& tuple, const Incoming& in, std::uint64_t now_ns) {
  Listener& l = listeners_[id];
  if (in.has(wire::kTcpRst)) return;  // RFC 9293 3.10.7.2: ignore
  if (in.has(wire::kTcpAck)) {
    if (!in.has(wire::kTcpSyn)) {
      const auto mss = check_syn_cookie(tuple, in.seq - 1, in.ack - 1, settings_.secret, now_ns);
      if (mss) {
        accept_cookie(id, tuple, in, *mss, now_ns);
        return;
      }
      counters_.syn_cookies_invalid->add();
    }
    counters_.no_connection->add();
    send_reset_reply(tuple, in);
    return;
  }
  if (!in.has(wire::kTcpSyn)) return;
  if (l.accept_queue >= l.backlog) {
    counters_.accept_queue_overflow->add();
    return;
  }
  if (l.syn_queue >= l.backlog || out_of_slots() ||
      std::uint64_t{l.syn_queue} * 2 >= host_.connection_room(id)) {
    // SYN cookie: no state until the ACK comes back. Only the MSS survives (no room for the
    // other options without timestamps to carry them), so the SYN-ACK offers nothing else.
    std::uint16_t mss = 0;
    const std::uint16_t wanted = std::min<std::uint16_t>(in.options.mss.value_or(kDefaultMss), settings_.mss);
    for (const std::uint16_t entry : kSynCookieMssTable) {
      if (entry <= wanted) mss = entry;
    }
    if (mss == 0) mss = kSynCookieMssTable[0];
    OutgoingSegment out;
    out.tuple = tuple;
    out.sequence = make_syn_cookie(tuple, in.seq, mss, settings_.secret, now_ns);
    out.acknowledgment = in.seq + 1;
    out.flags = wire::kTcpSyn | wire::kTcpAck;
    out.window = kCookieWindow;
    out.options.mss = settings_.mss;
    transmit(out);
    counters_.syn_cookies_sent->add();
    return;
  }
  Connection* c = open_passive(id, tuple, in, initial_sequence(tuple, settings_.secret, now_ns), now_ns);
  if (c == nullptr) return;
  c->in_syn_queue = true;
  ++l.syn_queue;
  negotiate(*c, in);
  c->snd_wnd = in.window;  // never scaled in a SYN
  c->snd_wl1 = in.seq;
  c->snd_wl2 = c->iss;
  set_state(*c, TcpState::syn_received);
  send_syn(*c, now_ns);
  c->rto_at = now_ns + c->rtt.rto_ns();
  finish(*c);
}

// A connection for listener `id` (a SYN into the SYN queue, or a cookie's ACK): the flow
// claimed, rings from the host, send sequence from `iss`. nullptr (counted, and answered with RST
// when the host refuses) when it cannot be had.
Connection* TcpEngine::open_passive(ListenerId id, const FourTuple& tuple, const Incoming& in, std::uint32_t iss,
                                    std::uint64_t now_ns) {
  if (!host_.claim_flow(tuple)) {
    counters_.claim_failed->add();
    return nullptr;
  }
  Connection* c = allocate(tuple, now_ns);
  if (c == nullptr) {
    host_.release_flow(tuple);
    return nullptr;
  }
  serve(*c);
  c->options = listeners_[id].options;
  c->listener = id;
  const auto rings = host_.rings_for(id, handle_of(*c), tuple);
  if (!rings || !rings->send.valid() || !rings->receive.valid()) {
    counters_.refused_by_host->add();
    send_reset_reply(tuple, in);
    destroy(*c);
    return nullptr;
  }
  c->rings = *rings;
  c->rings_live = true;
  start_sequence(*c, iss);
  c->state = TcpState::listen;
  return c;
}

void TcpEngine::start_sequence(Connection& c, std::uint32_t iss) {
  c.iss = iss;
  c.snd_una = c.snd_nxt = c.snd_max = iss;
  c.head_seq = iss + 1;  // the SYN takes one sequence number before the first data byte
  c.recovery_point = iss;
}

void TcpEngine::accept_cookie(ListenerId id, const FourTuple& tuple, const Incoming& in, std::uint16_t mss,
                              std::uint64_t now_ns) {
  Listener& l = listeners_[id];
  if (l.accept_queue >= l.backlog) {
    counters_.accept_queue_overflow->add();
    return;
  }
  Connection* c = open_passive(id, tuple, in, in.ack - 1, now_ns);
  if (c == nullptr) return;
  counters_.syn_cookies_accepted->add();
  c->snd_nxt = c->snd_max = c->iss + 1;  // the SYN-ACK the cookie rode on
  Incoming syn;
  syn.seq = in.seq - 1;
  syn.options.mss = mss;
  negotiate(*c, syn);
  c->snd_wnd = in.window;
  c->snd_wl1 = in.seq;
  c->snd_wl2 = in.ack;
  c->rcv_adv = c->rcv_nxt + kCookieWindow;
  set_state(*c, TcpState::syn_received);
  // From here the ACK is processed as it would be in SYN-RECEIVED.
  on_synchronized_segment(*c, in, now_ns);
  finish(*c);
}

void TcpEngine::establish(Connection& c, std::uint64_t now_ns) {
  if (!c.fin_sent) set_state(c, TcpState::established);  // else FIN-WAIT-1 already (close in SYN-RECEIVED)
  c.congestion.init(c.options.congestion, c.mss, now_ns);
  c.scoreboard.reset(c.snd_una);
  c.retries = 0;
  c.pending_events |= kEventEstablished;
  if (c.options.keepalive) c.keepalive_at = now_ns + std::uint64_t{c.options.keepalive_idle_s} * kSecond;
  if (c.listener != kNoListener && c.in_syn_queue) {
    Listener& l = listeners_[c.listener];
    c.in_syn_queue = false;
    if (l.syn_queue > 0) --l.syn_queue;
    ++l.accept_queue;
    publish_listener(c.listener);
    host_.on_accept_ready(c.listener, handle_of(c), c.tuple);
  } else if (c.listener != kNoListener) {
    // A SYN cookie's connection: it never sat in the SYN queue.
    ++listeners_[c.listener].accept_queue;
    publish_listener(c.listener);
    host_.on_accept_ready(c.listener, handle_of(c), c.tuple);
  }
}

void TcpEngine::on_syn_sent_segment(Connection& c, const Incoming& in, std::uint64_t now_ns) {
  const bool ack = in.has(wire::kTcpAck);
  if (ack && (seq_le(in.ack, c.iss) || seq_gt(in.ack, c.snd_max))) {
    counters_.bad_ack->add();
    if (!in.has(wire::kTcpRst)) send_reset_reply(c.tuple, in);
    return;
  }
  if (in.has(wire::kTcpRst)) {
    if (ack) {
      counters_.resets_received->add();
      fail(c, ECONNREFUSED, false);
    }
    return;
  }
  if (!in.has(wire::kTcpSyn)) return;
  negotiate(c, in);
  c.snd_wnd = in.window;
  c.max_snd_wnd = c.snd_wnd;
  c.snd_wl1 = in.seq;
  c.snd_wl2 = in.ack;
  if (ack) {
    // Our SYN acknowledged: the RTT of the handshake is a first sample unless it was resent.
    if (c.rtt_timing) {
      c.rtt.on_sample(now_ns - c.rtt_start_ns);
      c.rtt_timing = false;
    }
    c.snd_una = in.ack;
    c.rto_at = kNever;
    establish(c, now_ns);
    c.rcv_adv = c.rcv_nxt;
    send_ack(c, now_ns);
    output(c, now_ns);
    return;
  }
  // Simultaneous open (RFC 9293 3.5 figure 7): answer with SYN-ACK, same ISS.
  set_state(c, TcpState::syn_received);
  c.rtt_timing = false;
  send_syn(c, now_ns);
}

bool TcpEngine::on_synchronized_segment(Connection& c, const Incoming& in, std::uint64_t now_ns) {
  c.last_received_ns = now_ns;
  c.keepalive_probes = 0;
  const bool rst = in.has(wire::kTcpRst);
  const bool syn = in.has(wire::kTcpSyn);

  // A retransmitted SYN (or, in a simultaneous open, the peer's SYN-ACK) in SYN-RECEIVED.
  if (c.snd_una == c.iss && syn && in.seq == c.irs) {
    if (in.has(wire::kTcpAck) && seq_gt(in.ack, c.iss) && seq_le(in.ack, c.snd_max)) {
      c.snd_una = in.ack;
      c.snd_wnd = static_cast<std::uint32_t>(in.window);
      c.max_snd_wnd = std::max(c.max_snd_wnd, c.snd_wnd);
      c.snd_wl1 = in.seq;
      c.snd_wl2 = in.ack;
      c.rto_at = kNever;
      establish(c, now_ns);
      send_ack(c, now_ns);
    } else {
      send_syn(c, now_ns);
    }
    return true;
  }
  // A new SYN for a connection in TIME-WAIT may open a new incarnation (RFC 9293 3.6.1, RFC 6191).
  if (c.state == TcpState::time_wait && syn && !in.has(wire::kTcpAck) && seq_gt(in.seq, c.rcv_nxt) &&
      (!c.timestamps || !in.options.timestamps || seq_gt(in.options.timestamps->first, c.ts_recent))) {
    counters_.time_wait_reopened->add();
    destroy(c);
    return false;
  }

  // RFC 5961 4 / RFC 9293 3.10.7.4 fourth: a SYN in a synchronized state, whatever its sequence
  // number, gets a (rate-limited) challenge ACK.
  if (syn) {
    send_challenge_ack(c, now_ns);
    return true;
  }
  // RFC 7323 5.3 PAWS, with Linux's tolerance of one tick (TCP_PAWS_WINDOW): a segment sent
  // just before a retransmission that overtook it is not an old duplicate.
  const bool has_ts = in.options.timestamps.has_value();
  if (c.timestamps && has_ts && !rst && seq_diff(c.ts_recent, in.options.timestamps->first) > kPawsWindowTicks) {
    counters_.paws_rejected->add();
    answer_unacceptable(c, in.length(), now_ns);
    return true;
  }

  // RFC 9293 3.10.7.4 first: sequence number acceptability.
  const std::int32_t window = std::max<std::int32_t>(seq_diff(c.rcv_adv, c.rcv_nxt), 0);
  const std::uint32_t length = in.length();
  bool acceptable;
  if (length == 0) {
    acceptable = window == 0 ? in.seq == c.rcv_nxt
                             : seq_ge(in.seq, c.rcv_nxt) && seq_lt(in.seq, c.rcv_nxt + window);
  } else if (window == 0) {
    acceptable = false;
  } else {
    const std::uint32_t last = in.seq + length - 1;
    acceptable = (seq_ge(in.seq, c.rcv_nxt) && seq_lt(in.seq, c.rcv_nxt + window)) ||
                 (seq_ge(last, c.rcv_nxt) && seq_lt(last, c.rcv_nxt + window));
  }
  // A zero window still takes a bare ACK at rcv_nxt; data at rcv_nxt is refused but its ACK is
  // processed (RFC 9293 3.10.7.4: "valid ACKs, URGs, and RSTs" in a zero window), and a bare FIN
  // is taken (below).
  const bool zero_window_ack = !acceptable && window == 0 && in.seq == c.rcv_nxt && !rst && !syn;
  if (!acceptable && !zero_window_ack) {
    counters_.out_of_window->add();
    if (rst) return true;
    if (c.state == TcpState::time_wait && in.has(wire::kTcpFin)) c.linger_at = now_ns + settings_.time_wait_ns;
    answer_unacceptable(c, length, now_ns);
    return true;
  }

  // Second: RST (RFC 5961 3.2: only an exact match resets; else a challenge ACK).
  if (rst) {
    if (in.seq == c.rcv_nxt) {
      counters_.resets_received->add();
      on_reset(c);
    } else {
      send_challenge_ack(c, now_ns);
    }
    return true;
  }
  // Fifth: ACK.
  if (!in.has(wire::kTcpAck)) return true;
  // RFC 7323 4.3: remember the peer's timestamp from segments at or before the ACK point.
  if (c.timestamps && has_ts && seq_le(in.seq, c.last_ack_sent) &&
      seq_ge(in.options.timestamps->first, c.ts_recent)) {
    c.ts_recent = in.options.timestamps->first;
  }
  bool our_fin_acked = false;
  if (!on_ack(c, in, our_fin_acked, now_ns)) return true;
  if (!c.in_use) return true;
  // A bare FIN at rcv_nxt needs no room in the ring: taken even in a zero window, as Linux does
  // (a FIN retransmitted by an RTO may well meet one).
  const bool bare_fin = in.payload.empty() && in.has(wire::kTcpFin);
  if (zero_window_ack && !bare_fin) {
    if (!in.payload.empty()) {
      counters_.receive_overflow->add();
      send_ack(c, now_ns);
    }
    output(c, now_ns);
    return true;
  }
  receive(c, in, our_fin_acked, now_ns);
  return true;
}

// The duplicate ACK an unacceptable segment gets (RFC 9293 3.10.7.4). Segments with data
// (retransmissions of what we hold) always get it; bare ones at most every 500 ms per connection,
// as Linux does, so they cannot make us an ACK reflector or loop two confused ends.
void TcpEngine::answer_unacceptable(Connection& c, std::uint32_t length, std::uint64_t now_ns) {
  if (length == 0) {
    if (c.last_out_of_window_ack_ns != 0 && now_ns - c.last_out_of_window_ack_ns < kOutOfWindowAckIntervalNs) {
      return;
    }
    c.last_out_of_window_ack_ns = now_ns == 0 ? 1 : now_ns;
  }
  send_ack(c, now_ns);
}

void TcpEngine::on_reset(Connection& c) {
  switch (c.state) {
    case TcpState::syn_received:
      if (c.listener != kNoListener && c.in_syn_queue) {
        // Passive open: back to LISTEN, which for us means this half-open entry goes.
        set_state(c, TcpState::listen);
        destroy(c);
      } else {
        fail(c, ECONNREFUSED, false);
      }
      return;
    case TcpState::established:
    case TcpState::fin_wait_1:
    case TcpState::fin_wait_2:
    case TcpState::close_wait:
      fail(c, ECONNRESET, false);
      return;
    default:
      destroy(c);
      return;
  }
}

// Returns false when the segment is done with (dropped, or the connection closed).
bool TcpEngine::on_ack(Connection& c, const Incoming& in, bool& our_fin_acked, std::uint64_t now_ns) {
  if (c.snd_una == c.iss) {
    // Our SYN is not acknowledged yet (SYN-RECEIVED, or FIN-WAIT-1 entered from it).
    if (seq_lt(c.snd_una, in.ack) && seq_le(in.ack, c.snd_max)) {
      c.snd_wl1 = in.seq - 1;  // so the window below is taken from this segment
      c.snd_wl2 = in.ack;
      c.rto_at = kNever;
      c.rtt_timing = false;
      establish(c, now_ns);
    } else {
      counters_.bad_ack->add();
      send_reset_reply(c.tuple, in);
      return false;
    }
  }
  if (seq_gt(in.ack, c.snd_max)) {
    // Acknowledges what we never sent (RFC 9293: ACK it and drop; RFC 5961 5.2: a challenge ACK,
    // so rate limited).
    counters_.bad_ack->add();
    send_challenge_ack(c, now_ns);
    return false;
  }
  if (seq_lt(in.ack, c.snd_una - std::max<std::uint32_t>(c.max_snd_wnd, 65535))) {
    counters_.bad_ack->add();
    send_challenge_ack(c, now_ns);
    return false;
  }
  // Window update. RFC 9293's SND.WL1/WL2 rule can leave an old window in place while SND.UNA
  // moves on, and the window (a size from SND.UNA) then reaches past the edge the peer announced:
  // a bare ACK carries our highest sequence, a retransmission a lower one, so the latter's window
  // would be ignored though its ACK advances. As Linux does (tcp_may_update_window): any ACK that
  // advances takes its window, as does a newer sequence, or the same one with a larger or zero
  // window.
  const std::uint32_t window = static_cast<std::uint32_t>(in.window) << c.send_window_shift;
  const bool window_changed = window != c.snd_wnd;
  if (seq_le(c.snd_una, in.ack) &&
      (seq_gt(in.ack, c.snd_una) || seq_gt(in.seq, c.snd_wl1) ||
       (in.seq == c.snd_wl1 && (window > c.snd_wnd || window == 0)))) {
    c.snd_wnd = window;
    c.max_snd_wnd = std::max(c.max_snd_wnd, window);
    c.snd_wl1 = in.seq;
    c.snd_wl2 = in.ack;
    if (window > 0) {
      c.persist_at = kNever;
      c.persist_backoff = 0;
    }
  }
  if (c.sack && in.options.sack_block_count > 0) {
    std::array<SackBlock, 4> blocks{};
    std::size_t count = 0;
    for (std::size_t i = 0; i < in.options.sack_block_count; ++i) {
      const auto [left, right] = in.options.sack_blocks[i];
      // Untrusted: only blocks inside what we sent count.
      if (seq_lt(left, right) && seq_ge(left, c.snd_una) && seq_le(right, c.snd_max)) {
        blocks[count++] = {left, right};
      }
    }
    if (seq_gt(in.ack, c.snd_una)) c.scoreboard.on_ack(in.ack, std::span(blocks.data(), count));
    else c.scoreboard.on_ack(c.snd_una, std::span(blocks.data(), count));
  }
  const bool duplicate = in.ack == c.snd_una && in.payload.empty() && !in.has(wire::kTcpFin) && !window_changed &&
                         c.snd_max != c.snd_una;
  // After a restart, the peer shows what it lacks with a duplicate ACK or a SACK above the ACK
  // (the answers to probe_restored_flight): it lacks everything from the ACK up that it has not
  // SACKed. An ACK that merely advances may have been sent before the peer had all the
  // predecessor handed on, so it proves nothing.
  const bool restored_hole =
      c.restored_tail_unknown && seq_ge(in.ack, c.snd_una) && seq_lt(in.ack, c.snd_max) &&
      (duplicate || (c.sack && !c.scoreboard.empty() && seq_gt(c.scoreboard.highest_sacked(), in.ack)));
  if (seq_gt(in.ack, c.snd_una)) {
    on_new_ack(c, in, now_ns);
    if (!c.in_use) return false;
    if (restored_hole) resend_restored_tail(c, now_ns);
  } else if (restored_hole) {
    resend_restored_tail(c, now_ns);
  } else if (duplicate) {
    on_duplicate_ack(c, now_ns);
  } else if (c.sack && !c.in_recovery && c.snd_max != c.snd_una && may_start_recovery(c) &&
             c.scoreboard.is_lost(c.snd_una, c.mss)) {
    enter_recovery(c, now_ns);
  }
  if (c.restored_tail_unknown && seq_ge(c.snd_una, c.restored_snd_max)) c.restored_tail_unknown = false;
  if (c.in_recovery && c.sack) resend_lost_head_retransmission(c, now_ns);
  our_fin_acked = c.fin_sent && seq_gt(c.snd_una, c.fin_seq);
  switch (c.state) {
    case TcpState::closing:
      if (our_fin_acked) enter_time_wait(c, now_ns);
      break;
    case TcpState::last_ack:
      if (our_fin_acked) {
        destroy(c);
        return false;
      }
      break;
    default:
      break;
  }
  return true;
}

void TcpEngine::on_new_ack(Connection& c, const Incoming& in, std::uint64_t now_ns) {
  const std::uint32_t flight_before = c.snd_max - c.snd_una;
  // Bytes of the send ring now acknowledged: up to the ACK, excluding SYN and FIN.
  std::uint32_t acked_end = in.ack;
  if (c.fin_sent && seq_gt(acked_end, c.fin_seq)) acked_end = c.fin_seq;
  std::uint32_t ring_acked = 0;
  if (seq_gt(acked_end, c.head_seq)) {
    ring_acked = acked_end - c.head_seq;
    const std::size_t readable = c.rings.send.readable_seen();
    if (ring_acked > readable) ring_acked = static_cast<std::uint32_t>(readable);
    c.rings.send.consume(ring_acked);
    c.head_seq += ring_acked;
    c.bytes_acked += ring_acked;
    counters_.bytes_acked->add(ring_acked);
    if (awaiting_first_ack_ && ring_acked > 0) {
      awaiting_first_ack_ = false;
      NamedCounter& first_ack = *counters_.first_ack_after_restore_us;
      first_ack.add(now_ns / 1000 - first_ack.read());  // its only writer: the sum is the time
    }
    if (ring_acked > 0) c.pending_events |= kEventWritable;
  }
  // RTT: the timed segment (Karn: never a retransmitted one), else the echoed timestamp, which
  // says which transmission the ACK is for and so is good after retransmissions too (RFC 7323 4).
  if (c.rtt_timing && seq_ge(in.ack, c.rtt_seq)) {
    c.rtt.on_sample(now_ns - c.rtt_start_ns);
    c.rtt_timing = false;
  } else if (c.timestamps && in.options.timestamps && in.options.timestamps->second != 0) {
    const std::uint32_t elapsed_ms = timestamp_now(now_ns) - in.options.timestamps->second;
    if (elapsed_ms < 60'000) c.rtt.on_sample(std::uint64_t{elapsed_ms} * 1'000'000 + 500'000);
  }
  c.snd_una = in.ack;
  if (seq_lt(c.snd_nxt, c.snd_una)) c.snd_nxt = c.snd_una;
  if (seq_lt(c.high_rxt, c.snd_una)) c.high_rxt = c.snd_una;
  c.retries = 0;
  if (c.in_recovery) {
    if (seq_ge(in.ack, c.recovery_point)) {
      c.in_recovery = false;
      c.dupacks = 0;
      c.congestion.on_recovery_exit(now_ns);
    } else if (!c.sack) {
      // RFC 6582 partial ACK: the next hole is at snd_una.
      if (resend_first_segment(c, now_ns) != c.snd_una) counters_.fast_retransmits->add();
    }
  } else {
    c.dupacks = 0;
    if (ring_acked > 0) c.congestion.on_ack(ring_acked, flight_before, c.rtt.srtt_ns(), now_ns);
  }
  c.rto_at = c.snd_una == c.snd_max ? kNever : now_ns + c.rtt.rto_ns();
}

// RFC 6675 never resends a hole twice, so a lost retransmission of the first hole stalls the
// connection until the RTO (200 ms at least, against round trips of microseconds on a LAN). When
// the peer SACKs DupThresh segments sent after that retransmission, it was lost: send it again
// (Linux's lost-retransmit detection, before RACK, in its simplest form).
void TcpEngine::resend_lost_head_retransmission(Connection& c, std::uint64_t now_ns) {
  if (!c.head_resent || c.head_resent_seq != c.snd_una) return;
  const std::uint32_t threshold = c.head_resent_snd_max + SackScoreboard::kDupThresh * c.mss;
  if (!seq_gt(c.scoreboard.highest_sacked(), threshold)) return;
  counters_.fast_retransmits->add();
  resend_first_segment(c, now_ns);
}

// A new recovery only once everything outstanding at the last one (or at the last RTO) is
// acknowledged. Without SACK, RFC 6582 3.2 wants the ACK past that point, as duplicate ACKs for
// data resent by an RTO look like a loss; with SACK those are told apart, and requiring more than
// the recovery point would leave a loss right at it to the RTO.
bool TcpEngine::may_start_recovery(const Connection& c) const {
  return c.sack ? seq_ge(c.snd_una, c.recovery_point) : seq_gt(c.snd_una, c.recovery_point);
}

void TcpEngine::on_duplicate_ack(Connection& c, std::uint64_t now_ns) {
  ++c.dupacks;
  if (c.in_recovery) return;
  if (!may_start_recovery(c)) return;
  const bool loss = c.sack ? (c.dupacks >= SackScoreboard::kDupThresh || c.scoreboard.is_lost(c.snd_una, c.mss))
                           : c.dupacks == SackScoreboard::kDupThresh;
  if (loss) enter_recovery(c, now_ns);
}

void TcpEngine::enter_recovery(Connection& c, std::uint64_t now_ns) {
  c.in_recovery = true;
  c.recovery_point = c.snd_max;
  c.high_rxt = c.snd_una;
  c.congestion.on_congestion_event(c.snd_max - c.snd_una, now_ns);
  counters_.fast_retransmits->add();
  c.high_rxt = resend_first_segment(c, now_ns);
  c.rto_at = now_ns + c.rtt.rto_ns();
}

void TcpEngine::receive(Connection& c, const Incoming& in, bool our_fin_acked, std::uint64_t now_ns) {
  bool ack_now = false;
  bool fin = in.has(wire::kTcpFin);
  const bool takes_data = c.state == TcpState::established || c.state == TcpState::fin_wait_1 ||
                          c.state == TcpState::fin_wait_2;
  std::uint32_t seq = in.seq;
  std::span<const std::byte> data = in.payload;
  if (!data.empty() && takes_data && c.app_closed) {
    // Nobody will read it: RST, as Linux does for data after close().
    counters_.data_after_close->add();
    fail(c, 0, true);
    return;
  }
  // Trim to the window: the front (already received) and the tail (past the right edge).
  if (seq_lt(seq, c.rcv_nxt)) {
    const std::uint32_t skip = std::min<std::uint32_t>(c.rcv_nxt - seq, static_cast<std::uint32_t>(data.size()));
    data = data.subspan(skip);
    seq += skip;
    if (seq_lt(seq, c.rcv_nxt)) {  // only the FIN can be left before rcv_nxt: a duplicate
      fin = false;
      data = {};
    }
  }
  const std::uint32_t right = c.rcv_adv;
  if (!data.empty() && seq_gt(seq + static_cast<std::uint32_t>(data.size()), right)) {
    const std::int32_t keep = seq_diff(right, seq);
    data = data.first(keep > 0 ? static_cast<std::size_t>(keep) : 0);
    fin = false;
    ack_now = true;
  }
  if (!data.empty() && takes_data) {
    const std::size_t offset = seq - c.rcv_nxt;
    const std::size_t free = c.rings.receive.free_space();
    if (!check_rings(c, now_ns)) return;
    std::size_t fit = 0;
    if (offset < free) fit = std::min(data.size(), free - offset);
    if (fit < data.size()) {
      counters_.receive_overflow->add();
      fin = false;
      ack_now = true;
    }
    c.rcv_mss = std::max<std::uint32_t>(c.rcv_mss, static_cast<std::uint32_t>(data.size()));
    if (fit > 0 && c.rings.receive.write_ahead(offset, data.first(fit))) {
      if (offset == 0) {
        const bool filled_hole = !c.out_of_order.empty();
        const std::uint32_t next = c.out_of_order.advance(c.rcv_nxt + static_cast<std::uint32_t>(fit));
        const std::uint32_t published = next - c.rcv_nxt;
        c.rings.receive.publish(published);
        c.rcv_nxt = next;
        c.bytes_received += published;
        counters_.bytes_delivered->add(published);
        c.unacked_bytes += static_cast<std::uint32_t>(fit);
        c.pending_events |= kEventReadable;
        if (filled_hole) ack_now = true;  // RFC 5681 4.2: at once when a hole fills
      } else {
        counters_.out_of_order_segments->add();
        ack_now = true;  // RFC 5681 4.2: out-of-order data is ACKed at once (dup ACK + SACK)
        const std::uint32_t end = seq + static_cast<std::uint32_t>(fit);
        if (!c.out_of_order.add(seq, end)) {
          counters_.out_of_order_dropped->add();
          fin = false;
        } else if (fin) {
          c.peer_fin_pending = true;
          c.peer_fin_seq = end;
          fin = false;
        }
        c.last_out_of_order_left = seq;
      }
    }
  } else if (!data.empty()) {
    data = {};  // CLOSE-WAIT and later: the peer sent FIN already; nothing more is data
  }
  if (fin && takes_data && seq + static_cast<std::uint32_t>(data.size()) == c.rcv_nxt) {
    c.peer_fin_pending = true;
    c.peer_fin_seq = c.rcv_nxt;
  }
  if (c.peer_fin_pending && c.peer_fin_seq == c.rcv_nxt && takes_data) {
    accept_peer_fin(c, our_fin_acked, now_ns);
    if (!c.in_use) return;
    ack_now = ack_now || c.state != TcpState::close_wait;
  } else if (c.state == TcpState::fin_wait_1 && our_fin_acked) {
    set_state(c, TcpState::fin_wait_2);
    if (c.app_closed) c.linger_at = now_ns + settings_.time_wait_ns;
  }
  output(c, now_ns);
  if (c.last_ack_sent == c.rcv_nxt && c.unacked_bytes == 0 && !ack_now) return;
  if (ack_now || c.unacked_bytes >= 2 * c.rcv_mss) {
    send_ack(c, now_ns);
  } else if (c.unacked_bytes > 0 && c.delayed_ack_at == kNever) {
    c.delayed_ack_at = now_ns + settings_.delayed_ack_ns;
  }
}

void TcpEngine::accept_peer_fin(Connection& c, bool our_fin_acked, std::uint64_t now_ns) {
  c.peer_fin_pending = false;
  c.rcv_nxt += 1;
  c.unacked_bytes += 1;  // the FIN's ACK may wait for the application's own FIN (delayed ACK)
  c.pending_events |= kEventPeerClosed;
  switch (c.state) {
    case TcpState::established:
      set_state(c, TcpState::close_wait);
      break;
    case TcpState::fin_wait_1:
      if (our_fin_acked) {
        enter_time_wait(c, now_ns);  // FIN+ACK of our FIN at once
      } else {
        set_state(c, TcpState::closing);  // simultaneous close
      }
      break;
    case TcpState::fin_wait_2:
      enter_time_wait(c, now_ns);
      break;
    default:
      break;
  }
}

// --- sending ------------------------------------------------------------------------------------

bool TcpEngine::transmit(const OutgoingSegment& segment) {
  if (unflushed_ >= settings_.segment_batch) {
    // The batch is full in the middle of a call: the segments in it are the connection's being
    // served (those of connections served before it in this call were published when it ended
    // with them), so publishing it covers them all.
    const std::uint32_t index = flows_.find(segment.tuple);
    if (index != FlowIndex::kMissing && slot(index).in_use) publish(slot(index));
    unflushed_ = 0;
    host_.flush_segments();
  }
  counters_.segments_out->add();
  if (host_.transmit(segment)) {
    ++unflushed_;
    return true;
  }
  counters_.transmit_failed->add();
  return false;
}

std::uint16_t TcpEngine::announce_window(Connection& c) {
  if (!c.rings_live) return 0;
  const std::size_t free = c.rings.receive.free_space();
  const std::uint32_t right = c.rcv_nxt + static_cast<std::uint32_t>(free);
  const std::uint32_t current = seq_lt(c.rcv_adv, c.rcv_nxt) ? c.rcv_nxt : c.rcv_adv;
  // RFC 1122 4.2.3.3 receiver SWS avoidance: move the right edge only by a worthwhile amount.
  const std::uint32_t threshold =
      std::min<std::uint32_t>(static_cast<std::uint32_t>(c.rings.receive.capacity() / 2), c.rcv_mss);
  std::uint32_t edge = current;
  if (seq_gt(right, current) && right - current >= threshold) edge = right;
  // Scaled down, the edge rounds down: it may then sit up to 2^shift - 1 bytes left of one we
  // announced before, a retraction RFC 7323 2.4 allows. Rounding up instead would promise bytes
  // the ring does not have, and the error would grow with every ACK. rcv_adv stays the furthest
  // edge ever announced (what the peer may send up to), and never passes the ring's free space.
  const std::uint32_t shift = c.receive_window_shift;
  const std::uint32_t scaled = std::min<std::uint32_t>((edge - c.rcv_nxt) >> shift, 0xffff);
  const std::uint32_t announced = c.rcv_nxt + (scaled << shift);
  if (seq_gt(announced, c.rcv_adv) || seq_lt(c.rcv_adv, c.rcv_nxt)) c.rcv_adv = announced;
  return static_cast<std::uint16_t>(scaled);
}

// The ACK, window and options every segment of a synchronized connection carries. Options and
// payload together stay within the MSS (RFC 6691), so a full data segment carries no SACK blocks:
// the immediate ACKs for out-of-order data do.
void TcpEngine::fill_common(Connection& c, OutgoingSegment& out, std::size_t payload_length, std::uint64_t now_ns) {
  out.tuple = c.tuple;
  out.acknowledgment = c.rcv_nxt;
  out.window = announce_window(c);
  std::size_t option_room = wire::kTcpMaxOptionBytes;
  const std::size_t segment_limit = std::min<std::size_t>(c.peer_mss, settings_.mss);
  if (payload_length > 0) option_room = segment_limit > payload_length ? segment_limit - payload_length : 0;
  if (c.timestamps) {
    out.options.timestamps = std::pair{timestamp_now(now_ns), c.ts_recent};
    option_room = option_room > kTimestampBytes ? option_room - kTimestampBytes : 0;
  }
  constexpr std::size_t kSackHeaderBytes = 4;  // two NOPs, kind, length
  constexpr std::size_t kSackBlockBytes = 8;
  if (c.sack && !c.out_of_order.empty() && option_room >= kSackHeaderBytes + kSackBlockBytes) {
    const std::size_t fits = std::min<std::size_t>((option_room - kSackHeaderBytes) / kSackBlockBytes,
                                                   out.options.sack_blocks.size());
    out.options.sack_block_count = static_cast<std::uint8_t>(c.out_of_order.sack_blocks(
        std::span(out.options.sack_blocks).first(fits), c.last_out_of_order_left));
  }
  c.last_ack_sent = c.rcv_nxt;
  c.unacked_bytes = 0;
  c.delayed_ack_at = kNever;
}

void TcpEngine::send_syn(Connection& c, std::uint64_t now_ns) {
  OutgoingSegment out;
  out.tuple = c.tuple;
  out.sequence = c.iss;
  out.options.mss = settings_.mss;
  const std::size_t capacity = c.rings.receive.capacity();
  if (c.state == TcpState::syn_sent) {
    out.flags = wire::kTcpSyn;
    if (settings_.window_scaling) {
      std::uint8_t shift = 0;
      while (shift < 14 && (capacity >> shift) > 0xffff) ++shift;
      out.options.window_scale = shift;
      c.receive_window_shift = shift;
    }
    out.options.sack_permitted = settings_.sack;
    if (settings_.timestamps) out.options.timestamps = std::pair{timestamp_now(now_ns), 0u};
  } else {
    out.flags = wire::kTcpSyn | wire::kTcpAck;
    out.acknowledgment = c.rcv_nxt;
    if (c.window_scaling) out.options.window_scale = c.receive_window_shift;
    out.options.sack_permitted = c.sack;
    if (c.timestamps) out.options.timestamps = std::pair{timestamp_now(now_ns), c.ts_recent};
  }
  const std::size_t free = c.rings_live ? c.rings.receive.free_space() : 0;
  out.window = static_cast<std::uint16_t>(std::min<std::size_t>(free, 0xffff));
  c.rcv_adv = c.rcv_nxt + out.window;
  if (c.snd_max == c.iss) {
    c.snd_nxt = c.snd_max = c.iss + 1;
    c.rtt_timing = true;
    c.rtt_seq = c.iss + 1;
    c.rtt_start_ns = now_ns;
  } else {
    c.rtt_timing = false;  // Karn: a resent SYN gives no sample
    ++c.retransmits;
    counters_.retransmits->add();
  }
  transmit(out);
}

void TcpEngine::send_ack(Connection& c, std::uint64_t now_ns) {
  OutgoingSegment out;
  fill_common(c, out, 0, now_ns);
  // Not snd_nxt, which an RTO moves back below what the peer may already hold: a bare segment
  // with a sequence number behind the peer's rcv_nxt is unacceptable and its ACK ignored, and two
  // ends that both timed out would then never hear each other. The highest sequence sent, kept
  // inside the peer's window (as Linux's tcp_acceptable_seq does), is always acceptable.
  const std::uint32_t window_end = c.snd_una + c.snd_wnd;
  out.sequence = seq_le(c.snd_max, window_end) ? c.snd_max : window_end;
  out.flags = wire::kTcpAck;
  transmit(out);
}

void TcpEngine::send_probe(Connection& c, std::uint64_t now_ns) {
  OutgoingSegment out;
  fill_common(c, out, 0, now_ns);
  out.sequence = c.snd_una - 1;
  out.flags = wire::kTcpAck;
  transmit(out);
}

void TcpEngine::send_challenge_ack(Connection& c, std::uint64_t now_ns) {
  if (now_ns - challenge_window_start_ns_ >= kSecond) {
    challenge_window_start_ns_ = now_ns;
    challenge_acks_in_window_ = 0;
  }
  if (challenge_acks_in_window_ >= kChallengeAckLimit) {
    counters_.challenge_acks_limited->add();
    return;
  }
  ++challenge_acks_in_window_;
  counters_.challenge_acks->add();
  send_ack(c, now_ns);
}

// `sequence` is the highest the peer may have seen: a RST must be at or past it.
void TcpEngine::send_reset(const FourTuple& tuple, std::uint32_t sequence, std::uint32_t acknowledgment) {
  OutgoingSegment out;
  out.tuple = tuple;
  out.sequence = sequence;
  out.acknowledgment = acknowledgment;
  out.flags = wire::kTcpRst | wire::kTcpAck;
  counters_.resets_sent->add();
  transmit(out);
}

// RFC 9293 3.10.7.1: the answer to a segment that belongs to nothing. Never to a RST.
void TcpEngine::send_reset_reply(const FourTuple& tuple, const Incoming& in) {
  if (in.has(wire::kTcpRst)) return;
  OutgoingSegment out;
  out.tuple = tuple;
  if (in.has(wire::kTcpAck)) {
    out.sequence = in.ack;
    out.flags = wire::kTcpRst;
  } else {
    out.sequence = 0;
    out.acknowledgment = in.seq + in.length();
    out.flags = wire::kTcpRst | wire::kTcpAck;
  }
  counters_.resets_sent->add();
  transmit(out);
}

std::uint32_t TcpEngine::data_end(Connection& c) {
  const std::size_t readable = c.rings.send.readable();
  std::uint32_t end = c.head_seq + static_cast<std::uint32_t>(readable);
  // The application may not add past its shutdown, nor past the FIN.
  if (c.write_shut && seq_gt(end, c.write_end)) end = c.write_end;
  if (c.fin_sent && seq_gt(end, c.fin_seq)) end = c.fin_seq;
  return end;
}

// Sends [seq, seq + length) of the send ring (and FIN after it when `fin`), moving snd_nxt when
// the segment starts there.
void TcpEngine::send_range(Connection& c, std::uint32_t seq, std::uint32_t length, bool fin, std::uint64_t now_ns) {
  OutgoingSegment out;
  fill_common(c, out, length, now_ns);
  out.sequence = seq;
  out.flags = wire::kTcpAck;
  if (fin) out.flags |= wire::kTcpFin;
  if (length > 0) {
    out.payload = &c.rings.send;
    out.payload_offset = seq - c.head_seq;
    out.payload_length = length;
    if (seq + length == c.head_seq + c.rings.send.readable_seen()) out.flags |= wire::kTcpPsh;
  }
  const std::uint32_t end = seq + length + (fin ? 1 : 0);
  if (seq == c.snd_una && seq_lt(seq, c.snd_max)) {
    c.head_resent = true;
    c.head_resent_seq = seq;
    c.head_resent_snd_max = c.snd_max;
  }
  if (seq_lt(seq, c.snd_max)) {
    ++c.retransmits;
    counters_.retransmits->add();
    c.rtt_timing = c.rtt_timing && seq_lt(c.rtt_seq, seq);  // Karn
  } else if (!c.rtt_timing && length > 0) {
    c.rtt_timing = true;
    c.rtt_seq = end;
    c.rtt_start_ns = now_ns;
  }
  if (seq == c.snd_nxt) c.snd_nxt = end;
  if (seq_gt(end, c.snd_max)) c.snd_max = end;
  if (fin && !c.fin_sent) {
    c.fin_sent = true;
    c.fin_seq = seq + length;
    if (c.state == TcpState::established || c.state == TcpState::syn_received) {
      set_state(c, TcpState::fin_wait_1);
    } else if (c.state == TcpState::close_wait) {
      set_state(c, TcpState::last_ack);
    }
  }
  if (c.rto_at == kNever) c.rto_at = now_ns + c.rtt.rto_ns();
  transmit(out);
}

void TcpEngine::output(Connection& c, std::uint64_t now_ns) {
  if (!c.in_use || !c.rings_live) return;
  const bool sending = c.state == TcpState::established || c.state == TcpState::close_wait ||
                       c.state == TcpState::fin_wait_1 || c.state == TcpState::closing ||
                       c.state == TcpState::last_ack;
  if (!sending) return;
  const std::uint32_t end = data_end(c);
  if (!check_rings(c, now_ns)) return;
  // cwnd and the peer's window bound the burst; the count only guards against a loop that
  // would not end if the scoreboard ever misbehaved.
  for (std::uint32_t budget = kMaxSegmentsPerOutput; budget > 0; --budget) {
    const std::uint64_t cwnd = c.congestion.cwnd();
    std::uint64_t room;
    if (c.in_recovery && c.sack) {
      const std::uint64_t pipe = c.scoreboard.pipe(c.snd_una, c.snd_max, c.high_rxt, c.mss);
      if (pipe >= cwnd) break;
      room = cwnd - pipe;
      auto hole = c.scoreboard.next_segment(c.snd_una, c.snd_max, c.high_rxt, c.mss);
      // RFC 6675 NextSeg rule 3: with no new data that may go (rule 2), a hole below the highest
      // SACK even if not yet deemed lost, rather than wait for the RTO.
      const bool new_data_may_go = seq_lt(c.snd_nxt, end) && seq_diff(c.snd_una + c.snd_wnd, c.snd_nxt) > 0;
      if (!hole && !new_data_may_go) hole = c.scoreboard.next_rescue_segment(c.snd_una, c.snd_max, c.high_rxt, c.mss);
      if (hole && seq_lt(hole->first, end)) {
        const std::uint32_t stop = seq_lt(hole->second, end) ? hole->second : end;
        const std::uint32_t length = std::min<std::uint32_t>(stop - hole->first, c.mss);
        send_range(c, hole->first, length, false, now_ns);
        c.high_rxt = hole->first + length;
        continue;
      }
    } else {
      const std::uint64_t allowed = cwnd + (c.in_recovery ? std::uint64_t{c.dupacks} * c.mss : 0);
      const std::uint64_t flight = flight_size(c);
      if (flight >= allowed) break;
      room = allowed - flight;
    }
    if (c.sack && seq_lt(c.snd_nxt, c.snd_max)) skip_sacked(c);
    const std::int32_t window_room = seq_diff(c.snd_una + c.snd_wnd, c.snd_nxt);
    if (seq_lt(c.snd_nxt, end)) {
      const std::uint32_t queued = end - c.snd_nxt;
      std::uint32_t length = std::min<std::uint32_t>(c.mss, queued);
      const std::uint32_t limit = static_cast<std::uint32_t>(
          std::min<std::int64_t>({std::int64_t{length}, std::max<std::int32_t>(window_room, 0),
                                  static_cast<std::int64_t>(std::min<std::uint64_t>(room, UINT32_MAX))}));
      if (limit == 0) break;
      const bool new_data = seq_ge(c.snd_nxt, c.snd_max);
      if (limit < length) {
        // Sender SWS avoidance (RFC 9293 3.8.6.2.1): a window-limited runt only when it is
        // a worthwhile part of the largest window the peer ever offered.
        if (new_data && limit < c.max_snd_wnd / 2) break;
        length = limit;
      } else if (length < c.mss && new_data && !c.write_shut) {
        if (c.options.cork) break;
        if (!c.options.nodelay && c.snd_max != c.snd_una) {  // Nagle
          counters_.nagle_holds->add();
          break;
        }
      }
      const bool fin = c.write_shut && c.snd_nxt + length == end && window_room > static_cast<std::int32_t>(length) &&
                       (!c.fin_sent || c.fin_seq == end);
      send_range(c, c.snd_nxt, length, fin, now_ns);
      continue;
    }
    if (c.write_shut && c.snd_nxt == end && (!c.fin_sent || c.fin_seq == end)) {
      if (window_room <= 0 && !(c.fin_sent)) break;
      send_range(c, c.snd_nxt, 0, true, now_ns);
      continue;
    }
    break;
  }
  // Something to send, nothing in flight, yet nothing went: the window is zero or too small to be
  // worth a segment. The persist timer probes it (and then sends what fits), as Linux does.
  const bool waiting = seq_lt(c.snd_nxt, end) || (c.write_shut && !c.fin_sent);
  if (waiting && c.snd_max == c.snd_una) {
    if (c.persist_at == kNever) {
      c.persist_at = now_ns + std::min(c.rtt.rto_ns() << std::min<std::uint32_t>(c.persist_backoff, 16), kPersistMaxNs);
    }
  }
}

// Going back after an RTO, data the peer SACKed is not sent again.
void TcpEngine::skip_sacked(Connection& c) {
  for (std::size_t i = 0; i < c.scoreboard.range_count(); ++i) {
    const SeqRange range = c.scoreboard.range(i);
    if (seq_le(range.left, c.snd_nxt) && seq_lt(c.snd_nxt, range.right)) {
      c.snd_nxt = seq_lt(range.right, c.snd_max) ? range.right : c.snd_max;
      return;
    }
  }
}

// RTO: resend the first unacknowledged segment, whatever the windows say.
void TcpEngine::retransmit_head(Connection& c, std::uint64_t now_ns) {
  if (c.snd_una == c.iss) {
    send_syn(c, now_ns);
    return;
  }
  c.snd_nxt = c.snd_una;
  c.high_rxt = c.snd_una;
  resend_first_segment(c, now_ns);
}

// Sends the segment at snd_una again (up to one MSS of what was sent before, with the FIN when
// it ends there). Returns the sequence after what it sent (snd_una when there was nothing). Only
// what went out before, which the peer's window allowed then: bytes queued since may lie past
// its window now.
std::uint32_t TcpEngine::resend_first_segment(Connection& c, std::uint64_t now_ns) {
  std::uint32_t end = data_end(c);
  if (seq_gt(end, c.snd_max)) end = c.snd_max;
  const std::uint32_t length = std::min<std::uint32_t>(c.mss, seq_diff(end, c.snd_una) > 0 ? end - c.snd_una : 0);
  const bool fin = c.fin_sent && c.snd_una + length == c.fin_seq;
  if (length == 0 && !fin) return c.snd_una;
  send_range(c, c.snd_una, length, fin, now_ns);
  return c.snd_una + length + (fin ? 1 : 0);
}

// A restored connection with data in flight: the predecessor may have built segments it never
// handed on, which the peer can only miss at the tail, and nothing would ask for them before the
// retransmission timeout (200 ms at least). So the last segment goes again, then the first:
// - a peer that lacks the tail takes the last as out of order and answers at once with a duplicate
//   ACK (SACKing it, with SACK); without SACK, the first one, which it holds, draws a duplicate ACK
//   too (unless it lacked that as well, and then the answer to the last was already one);
// - a peer that holds everything answers the first, a duplicate, at once, acknowledging it all.
// An answer that shows a hole sends the connection back to its ACK (resend_restored_tail).
// Congestion state and timers are left as they were.
void TcpEngine::probe_restored_flight(Connection& c, std::uint64_t now_ns) {
  c.restored_tail_unknown = true;
  c.restored_snd_max = c.snd_max;
  std::uint32_t end = data_end(c);
  if (seq_gt(end, c.snd_max)) end = c.snd_max;
  const std::uint32_t flight = seq_diff(end, c.snd_una) > 0 ? end - c.snd_una : 0;
  const std::uint32_t first_end = c.snd_una + std::min(flight, c.mss);
  if (seq_lt(first_end, end)) {
    const std::uint32_t start = seq_lt(end - c.mss, first_end) ? first_end : end - c.mss;
    send_range(c, start, end - start, c.fin_sent && end == c.fin_seq, now_ns);
  }
  (void)resend_first_segment(c, now_ns);
}

// The peer showed, after a restart, that it lacks what lies from snd_una up (what it SACKed
// excepted): what the predecessor built and never handed on. Go back to snd_una and send it again,
// as far as cwnd allows. Unlike an RTO, cwnd stays: nothing says the path is congested. What this
// resends gets no fast retransmit of its own (RFC 6582 4, as after an RTO).
void TcpEngine::resend_restored_tail(Connection& c, std::uint64_t now_ns) {
  c.restored_tail_unknown = false;
  counters_.restored_tail_resends->add();
  c.in_recovery = false;
  c.dupacks = 0;
  c.recovery_point = c.snd_max;
  c.snd_nxt = c.snd_una;
  c.high_rxt = c.snd_una;
  output(c, now_ns);
}

// --- timers -------------------------------------------------------------------------------------

void TcpEngine::on_timer(std::uint64_t now_ns) {
  if (timers_.earliest() > now_ns) return;
  while (timers_.earliest() <= now_ns) {
    Connection& c = slot(timers_.earliest_slot());
    serve(c);
    if (c.linger_at <= now_ns) {
      c.linger_at = kNever;
      if (c.state == TcpState::time_wait || c.state == TcpState::fin_wait_2) {
        destroy(c);
        continue;
      }
    }
    if (c.rto_at <= now_ns) {
      c.rto_at = kNever;
      on_retransmission_timeout(c, now_ns);
      if (!c.in_use) continue;
    }
    if (c.persist_at <= now_ns) {
      c.persist_at = kNever;
      on_persist_timeout(c, now_ns);
      if (!c.in_use) continue;
    }
    if (c.keepalive_at <= now_ns) {
      c.keepalive_at = kNever;
      on_keepalive_timeout(c, now_ns);
      if (!c.in_use) continue;
    }
    if (c.delayed_ack_at <= now_ns) {
      c.delayed_ack_at = kNever;
      if (synchronized(c.state) && c.state != TcpState::time_wait) send_ack(c, now_ns);
    }
    finish(c);
  }
  end_call();
}

void TcpEngine::on_retransmission_timeout(Connection& c, std::uint64_t now_ns) {
  if (c.snd_una == c.snd_max && c.state != TcpState::syn_sent && c.state != TcpState::syn_received) return;
  if (!check_rings(c, now_ns)) return;
  counters_.retransmission_timeouts->add();
  const bool handshake = c.state == TcpState::syn_sent || c.state == TcpState::syn_received;
  const std::uint32_t limit = handshake ? settings_.syn_retries : settings_.data_retries;
  if (c.retries >= limit) {
    if (c.state == TcpState::syn_received && c.in_syn_queue) {
      counters_.syn_queue_expired->add();
      destroy(c);
      return;
    }
    counters_.connection_timeouts->add();
    fail(c, ETIMEDOUT, !handshake);
    return;
  }
  ++c.retries;
  c.rtt.back_off();
  c.rtt_timing = false;
  c.restored_tail_unknown = false;  // the timeout's go-back covers the tail
  if (!handshake) {
    c.congestion.on_retransmission_timeout(c.snd_max - c.snd_una, now_ns);
    c.in_recovery = false;
    c.dupacks = 0;
    c.recovery_point = c.snd_max;  // RFC 6582 4: no fast retransmit for what the RTO resends
  }
  retransmit_head(c, now_ns);
  c.rto_at = now_ns + c.rtt.rto_ns();
}

void TcpEngine::on_persist_timeout(Connection& c, std::uint64_t now_ns) {
  if (!synchronized(c.state) || c.snd_max != c.snd_una || !c.rings_live) {
    c.persist_backoff = 0;
    output(c, now_ns);
    return;
  }
  // A peer that answers keeps a zero window open for as long as it likes; one that has stopped
  // answering is given up after data_retries probes, as Linux does (tcp_retries2).
  c.persist_unanswered = c.last_received_ns < c.persist_sent_ns ? c.persist_unanswered + 1 : 0;
  if (c.persist_unanswered > settings_.data_retries) {
    counters_.connection_timeouts->add();
    fail(c, ETIMEDOUT, true);
    return;
  }
  counters_.persist_probes->add();
  c.persist_sent_ns = now_ns;
  const std::uint32_t end = data_end(c);
  if (!check_rings(c, now_ns)) return;
  const std::uint32_t usable = std::min<std::uint32_t>(c.snd_wnd, c.mss);
  if (usable > 0 && seq_lt(c.snd_nxt, end)) {
    // A window too small for the sender's SWS rule: send what fits rather than wait forever.
    send_range(c, c.snd_nxt, std::min<std::uint32_t>(usable, end - c.snd_nxt), false, now_ns);
  } else {
    send_probe(c, now_ns);
  }
  if (c.persist_backoff < 16) ++c.persist_backoff;
  c.persist_at = now_ns + std::min(c.rtt.rto_ns() << c.persist_backoff, kPersistMaxNs);
}

void TcpEngine::on_keepalive_timeout(Connection& c, std::uint64_t now_ns) {
  if (!c.options.keepalive || (c.state != TcpState::established && c.state != TcpState::close_wait)) return;
  const std::uint64_t idle = std::uint64_t{c.options.keepalive_idle_s} * kSecond;
  const std::uint64_t interval = std::uint64_t{c.options.keepalive_interval_s} * kSecond;
  if (c.keepalive_probes == 0 && now_ns < c.last_received_ns + idle) {
    c.keepalive_at = c.last_received_ns + idle;
    return;
  }
  if (c.keepalive_probes >= c.options.keepalive_count) {
    counters_.connection_timeouts->add();
    fail(c, ETIMEDOUT, true);
    return;
  }
  ++c.keepalive_probes;
  counters_.keepalive_probes->add();
  send_probe(c, now_ns);
  c.keepalive_at = now_ns + interval;
}

}  // namespace flotilla::tcp
