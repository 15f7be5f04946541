// The simulated network and applications of sim.hpp.
#include "components/tcp/tests/sim.hpp"

#include <algorithm>
#include <array>

#include "components/tcp/algorithms/seq.hpp"
#include "components/tcp/connection_table.hpp"
#include "dataplane/hash.hpp"

namespace flotilla::tcp::sim {

namespace {
constexpr std::size_t kChunk = 64 * 1024;
}  // namespace

void fill_pattern(std::uint64_t pattern, std::uint64_t position, std::span<std::byte> out) {
  std::size_t at = 0;
  while (at < out.size()) {
    const std::uint64_t word = mix64(pattern ^ ((position + at) >> 3) * 0x9e3779b97f4a7c15ull);
    for (std::size_t byte = (position + at) & 7; byte < 8 && at < out.size(); ++byte, ++at) {
      out[at] = static_cast<std::byte>(word >> (byte * 8));
    }
  }
}

std::uint8_t pattern_byte(std::uint64_t pattern, std::uint64_t position) {
  std::byte value;
  fill_pattern(pattern, position, std::span(&value, 1));
  return static_cast<std::uint8_t>(value);
}

std::uint64_t hash_bytes(std::uint64_t hash, std::span<const std::byte> bytes) {
  for (const std::byte b : bytes) {
    hash ^= static_cast<std::uint8_t>(b);
    hash *= 0x100000001b3ull;  // FNV-1a
  }
  return hash;
}

std::uint64_t pattern_hash(std::uint64_t pattern, std::uint64_t length) {
  std::vector<std::byte> chunk(kChunk);
  std::uint64_t hash = 0xcbf29ce484222325ull;
  for (std::uint64_t at = 0; at < length;) {
    const std::size_t count = static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, length - at));
    fill_pattern(pattern, at, std::span(chunk).first(count));
    hash = hash_bytes(hash, std::span(chunk).first(count));
    at += count;
  }
  return hash;
}

Endpoint::Endpoint(std::size_t ring_bytes)
    : send_data(ring_bytes),
      receive_data(ring_bytes),
      app_send(&send_indices, send_data),
      app_receive(&receive_indices, receive_data) {
  received_hash = 0xcbf29ce484222325ull;
}

StreamRings Endpoint::engine_rings() {
  return StreamRings{formats::ByteRingConsumer(&send_indices, send_data),
                     formats::ByteRingProducer(&receive_indices, receive_data)};
}

StreamRings Endpoint::restored_rings() {
  return StreamRings{
      formats::ByteRingConsumer(&send_indices, send_data, send_indices.head.load(std::memory_order_acquire)),
      formats::ByteRingProducer(&receive_indices, receive_data, receive_indices.tail.load(std::memory_order_acquire))};
}

Host::Host(Network& network, std::uint32_t address, const EngineSettings& settings, std::uint64_t now_ns,
           std::size_t ring_bytes_in)
    : ring_bytes(ring_bytes_in),
      network_(network),
      address_(address),
      settings_(settings),
      counters_(std::make_unique<NamedCounterTable>()),
      scratch_(max_segment_bytes(65535)) {
  table_memory_.resize(Engine::table_bytes(settings) + 64);
  network.attach(*this);
  restart(now_ns);
}

void Host::restart(std::uint64_t now_ns, RestorePolicy policy) {
  engine_.reset();
  if (policy == RestorePolicy::reset) endpoints_.clear();
  claimed_.clear();
  batch_.clear();  // what the dead engine had not handed on is lost, as on the wire
  // The table must be 64-byte aligned: take the aligned part of the buffer (which stays put).
  auto* base = table_memory_.data();
  const std::size_t misalignment = reinterpret_cast<std::uintptr_t>(base) % 64;
  const std::size_t skip = misalignment == 0 ? 0 : 64 - misalignment;
  table_ = std::span<std::byte>(base + skip, Engine::table_bytes(settings_));
  auto created = Engine::create(table_, settings_, *this, *counters_, now_ns, policy);
  if (!created) std::abort();
  engine_ = std::move(created.value());
}

bool Host::transmit(const OutgoingSegment& segment) {
  const std::size_t length = build_segment(scratch_, segment);
  if (length == 0) return false;
  // The link's MTU is the announced MSS plus the IPv4 and TCP base headers: options count
  // against the payload (RFC 6691).
  if (length > settings_.mss + wire::kTcpHeaderBytes) ++oversize_segments;
  Batched batched{segment, std::vector<std::byte>(scratch_.begin(), scratch_.begin() + static_cast<std::ptrdiff_t>(length))};
  batched.segment.payload = nullptr;
  batch_.push_back(std::move(batched));
  return true;
}

void Host::flush_segments() {
  ++flush_calls;
  const bool crash = crash_at_flush != 0 && flush_calls == crash_at_flush;
  if (crash && crash_before_send) throw SimulatedCrash{};
  if (crash_at_batch_of != 0) {
    const auto data_segments = static_cast<std::size_t>(std::count_if(
        batch_.begin(), batch_.end(), [](const Batched& batched) { return batched.segment.payload_length > 0; }));
    if (data_segments >= crash_at_batch_of) {
      crash_at_batch_of = 0;
      crashed_batch_segments = data_segments;
      throw SimulatedCrash{};
    }
  }
  for (Batched& batched : batch_) {
    const std::string problem = check_covered(batched.segment);
    if (!problem.empty()) {
      if (uncovered_segments++ == 0) first_uncovered = problem;
    }
    if (log_segments) sent_log.push_back(batched.bytes);
    network_.send(batched.segment.tuple.local_address, batched.segment.tuple.remote_address,
                  std::move(batched.bytes));
  }
  batch_.clear();
  if (crash) throw SimulatedCrash{};
}

// Publish before send: what a segment tells the peer (the sequence space it uses, what it
// acknowledges, a FIN) must already be in the table, so a successor never falls behind the peer.
std::string Host::check_covered(const OutgoingSegment& segment) const {
  if ((segment.flags & wire::kTcpRst) != 0) return {};
  const auto* header = reinterpret_cast<const TableHeader*>(table_.data());
  const auto* entries = reinterpret_cast<const Tcb*>(table_.data() + sizeof(TableHeader));
  const std::uint32_t syn = (segment.flags & wire::kTcpSyn) != 0 ? 1 : 0;
  const std::uint32_t fin = (segment.flags & wire::kTcpFin) != 0 ? 1 : 0;
  const std::uint32_t end = segment.sequence + static_cast<std::uint32_t>(segment.payload_length) + syn + fin;
  for (std::uint32_t i = 0; i < header->capacity; ++i) {
    Tcb entry;
    if (!read_entry(entries[i], entry)) return "torn entry " + std::to_string(i);
    if (entry.state == static_cast<std::uint8_t>(TcpState::closed) || !(entry.tuple == segment.tuple)) continue;
    const std::string where = "port " + std::to_string(segment.tuple.local_port) + "->" +
                              std::to_string(segment.tuple.remote_port) + " flags " +
                              std::to_string(segment.flags) + ": ";
    if (seq_gt(end, entry.snd_max)) {
      return where + "sends up to " + std::to_string(end) + " past the published snd_max " +
             std::to_string(entry.snd_max);
    }
    if ((segment.flags & wire::kTcpAck) != 0 && seq_gt(segment.acknowledgment, entry.rcv_nxt)) {
      return where + "acknowledges " + std::to_string(segment.acknowledgment) + " past the published rcv_nxt " +
             std::to_string(entry.rcv_nxt);
    }
    if (fin != 0 && ((entry.flags & kTcbFinSent) == 0 ||
                     entry.fin_seq != segment.sequence + static_cast<std::uint32_t>(segment.payload_length))) {
      return where + "a FIN the table does not have";
    }
    return {};
  }
  // A SYN cookie's SYN-ACK keeps no state.
  if (syn != 0 && (segment.flags & wire::kTcpAck) != 0) return {};
  return "port " + std::to_string(segment.tuple.local_port) + "->" + std::to_string(segment.tuple.remote_port) +
         ": no table entry";
}

std::optional<StreamRings> Host::rings_for_restored(ConnectionHandle connection, const FourTuple&, ListenerId) {
  Endpoint* endpoint = endpoint_for(connection);
  if (endpoint == nullptr) return std::nullopt;
  return endpoint->restored_rings();
}

std::optional<StreamRings> Host::rings_for(ListenerId, ConnectionHandle connection, const FourTuple&) {
  if (refuse_rings) return std::nullopt;
  auto endpoint = std::make_unique<Endpoint>(ring_bytes);
  endpoint->handle = connection;
  endpoint->has_handle = true;
  endpoint->send_total = accept_send_total;
  endpoint->send_pattern = accept_pattern_base + 1;
  endpoint->receive_pattern = accept_pattern_base;
  endpoint->close_when_done = accept_close_when_done;
  endpoint->auto_shutdown = accept_auto_shutdown;
  endpoint->reading = accept_reading;
  endpoint->read_rate = accept_read_rate;
  endpoint->pause_every = accept_pause_every;
  endpoint->pause_ns = accept_pause_ns;
  endpoint->next_pause = accept_pause_every;
  endpoint->shutdown_after_peer_fin = accept_shutdown_after_peer_fin;
  StreamRings rings = endpoint->engine_rings();
  endpoints_.push_back(std::move(endpoint));
  return rings;
}

bool Host::claim_flow(const FourTuple& tuple) {
  claimed_.push_back(tuple);
  return true;
}

void Host::release_flow(const FourTuple& tuple) {
  const auto found = std::find(claimed_.begin(), claimed_.end(), tuple);
  if (found != claimed_.end()) claimed_.erase(found);
}

Endpoint* Host::endpoint_for(ConnectionHandle handle) {
  for (auto& endpoint : endpoints_) {
    if (endpoint->has_handle && endpoint->handle == handle && !endpoint->released) return endpoint.get();
  }
  return nullptr;
}

void Host::on_events(ConnectionHandle connection, std::uint32_t events, int error) {
  if (crash_on_events_port != 0 && engine_ != nullptr) {
    const auto info = engine_->info(connection);
    if (info && (info->tuple.local_port == crash_on_events_port || info->tuple.remote_port == crash_on_events_port)) {
      throw SimulatedCrash{};
    }
  }
  Endpoint* endpoint = endpoint_for(connection);
  if (endpoint != nullptr) apply_events(*endpoint, events, error);
}

void apply_events(Endpoint& e, std::uint32_t events, int error) {
  if (events & kEventEstablished) e.established = true;
  if (events & kEventPeerClosed) e.peer_closed = true;
  if (events & kEventFailed) {
    e.failed = true;
    e.error = error;
  }
  if (events & kEventReleased) e.released = true;
}

void Host::on_accept_ready(ListenerId listener, ConnectionHandle, const FourTuple&) {
  engine_->accepted(listener, 1);
}

Endpoint* Host::connect(std::uint32_t remote, std::uint16_t local_port, std::uint16_t remote_port,
                        const ConnectionOptions& options) {
  auto endpoint = std::make_unique<Endpoint>(ring_bytes);
  const FourTuple tuple{.local_address = address_, .remote_address = remote, .local_port = local_port,
                        .remote_port = remote_port};
  auto handle = engine_->connect(tuple, endpoint->engine_rings(), options, network_.now());
  if (!handle) return nullptr;
  endpoint->handle = *handle;
  endpoint->has_handle = true;
  endpoints_.push_back(std::move(endpoint));
  return endpoints_.back().get();
}

bool Host::pump(std::uint64_t now_ns) { return pump_applications(*engine_, endpoints_, scratch_, now_ns); }

bool pump_applications(Engine& engine, std::vector<std::unique_ptr<Endpoint>>& endpoints,
                       std::span<std::byte> scratch, std::uint64_t now_ns) {
  bool progress = false;
  std::array<std::byte, kChunk> expected;
  for (auto& owned : endpoints) {
    Endpoint& e = *owned;
    if (!e.established) continue;
    // Released only means the engine is done with the rings: what it delivered is still there.
    if (e.reading && now_ns >= e.resume_at) {
      std::size_t readable = e.app_receive.readable();
      if (readable > 0 && e.read_rate > 0) {
        if (e.read_start == 0) e.read_start = now_ns == 0 ? 1 : now_ns;
        const std::uint64_t allowed = (now_ns - e.read_start) / 1000 * e.read_rate / 1'000'000 + 1;
        readable = allowed > e.received ? static_cast<std::size_t>(std::min<std::uint64_t>(readable, allowed - e.received)) : 0;
      }
      if (readable > 0) {
        const std::size_t count = std::min(readable, kChunk);
        const std::span<std::byte> got = std::span(scratch).first(count);
        const std::size_t read = e.app_receive.read(got);
        fill_pattern(e.receive_pattern, e.received, std::span(expected).first(read));
        if (std::memcmp(expected.data(), got.data(), read) != 0) {
          for (std::size_t i = 0; i < read; ++i) {
            if (expected[i] != got[i]) {
              ++e.mismatches;
              e.first_mismatch = std::min<std::uint64_t>(e.first_mismatch, e.received + i);
            }
          }
        }
        e.received_hash = hash_bytes(e.received_hash, got.first(read));
        e.received += read;
        if (e.pause_every > 0 && e.received >= e.next_pause) {
          e.resume_at = now_ns + e.pause_ns;
          e.next_pause = e.received + e.pause_every;
        }
        if (!e.released) engine.on_receive_consumed(e.handle, now_ns);
        progress = true;
      }
    }
    if (e.released) continue;
    if (!e.shut && e.sent < e.send_total) {
      const std::size_t free = e.app_send.free_space();
      const std::size_t count = static_cast<std::size_t>(std::min<std::uint64_t>({free, kChunk, e.send_total - e.sent}));
      if (count > 0) {
        fill_pattern(e.send_pattern, e.sent, std::span(expected).first(count));
        e.app_send.write(std::span(expected).first(count));
        e.sent += count;
        engine.on_send_ready(e.handle, now_ns);
        progress = true;
        if (e.released) continue;
      }
    }
    if (!e.shut && e.sent == e.send_total && e.auto_shutdown && (!e.shutdown_after_peer_fin || e.peer_closed)) {
      e.shut = true;
      engine.shutdown_write(e.handle, now_ns);
      progress = true;
      if (e.released) continue;
    }
    if (e.shut && e.peer_closed && !e.closed && e.close_when_done && e.app_receive.readable() == 0) {
      e.closed = true;
      engine.close(e.handle, now_ns);
      progress = true;
    }
  }
  return progress;
}

std::uint64_t Host::next_application_deadline() const {
  std::uint64_t next = UINT64_MAX;
  for (const auto& e : endpoints_) {
    if (!e->reading || e->app_receive.readable_seen() == 0) continue;
    if (e->resume_at > network_.now()) {
      next = std::min(next, e->resume_at);
    } else if (e->read_rate > 0 && e->read_start != 0) {
      // When the rate lets the next (up to) 4 KiB be read.
      const std::uint64_t target = e->received + std::min<std::uint64_t>(4096, e->app_receive.readable_seen());
      next = std::min(next, e->read_start + target * 1'000'000 / e->read_rate * 1000 + 1000);
    }
  }
  return next;
}

bool Network::chance(double probability) {
  if (probability <= 0) return false;
  return std::uniform_real_distribution<double>(0, 1)(rng_) < probability;
}

void Network::send(std::uint32_t source, std::uint32_t destination, std::vector<std::byte> bytes) {
  if (chance(config_.loss)) {
    ++dropped_;
    return;
  }
  const bool corrupted = chance(config_.corrupt) && !bytes.empty();
  if (corrupted) {
    const std::size_t at = std::uniform_int_distribution<std::size_t>(0, bytes.size() - 1)(rng_);
    const auto flip = static_cast<std::byte>(std::uniform_int_distribution<int>(1, 255)(rng_));
    bytes[at] ^= flip;
  }
  std::uint64_t depart = now_ns_;
  if (config_.bandwidth_bps > 0) {
    std::uint64_t& busy = busy_until_[{source, destination}];
    const std::uint64_t start = std::max(now_ns_, busy);
    const std::uint64_t queue_limit_ns = config_.queue_bytes * 8'000'000'000ull / config_.bandwidth_bps;
    if (start - now_ns_ > queue_limit_ns) {
      ++dropped_;
      return;
    }
    busy = start + bytes.size() * 8'000'000'000ull / config_.bandwidth_bps;
    depart = busy;
  }
  std::uint64_t deliver_at = depart + config_.latency_ns;
  if (chance(config_.reorder)) {
    deliver_at += std::uniform_int_distribution<std::uint64_t>(1, std::max<std::uint64_t>(config_.reorder_delay_ns, 1))(rng_);
  }
  if (chance(config_.duplicate)) {
    queue_.push(Packet{deliver_at + 1000, order_++, source, destination, bytes, corrupted});
  }
  queue_.push(Packet{deliver_at, order_++, source, destination, std::move(bytes), corrupted});
}

std::size_t Network::deliver(std::uint64_t now_ns) {
  std::size_t count = 0;
  while (!queue_.empty() && queue_.top().deliver_at <= now_ns) {
    Packet packet = std::move(const_cast<Packet&>(queue_.top()));
    queue_.pop();
    if (tap && !tap(packet.source, packet.destination, packet.bytes)) continue;
    const auto host = hosts_.find(packet.destination);
    if (host == hosts_.end()) {
      ++unroutable_;
      continue;
    }
    ++delivered_;
    ++count;
    if (packet.corrupted) ++corrupted_delivered_;
    host->second->engine().on_packet(packet.source, packet.destination, packet.bytes, now_ns);
  }
  return count;
}

std::vector<std::byte> craft_segment(const FourTuple& tuple, std::uint32_t seq, std::uint32_t ack,
                                     std::uint8_t flags, std::uint16_t window, const wire::TcpOptions& options,
                                     std::span<const std::byte> payload) {
  std::array<std::byte, wire::kTcpMaxOptionBytes> option_bytes{};
  const std::size_t options_length = wire::emit_tcp_options(option_bytes, options);
  const std::size_t header_length = wire::tcp_header_length(options_length);
  std::vector<std::byte> out(header_length + payload.size());
  std::copy(payload.begin(), payload.end(), out.begin() + static_cast<std::ptrdiff_t>(header_length));
  const wire::TcpHeader header{.source_port = tuple.local_port,
                               .destination_port = tuple.remote_port,
                               .sequence = seq,
                               .acknowledgment = ack,
                               .flags = flags,
                               .window = window,
                               .urgent_pointer = 0,
                               .options = std::span<const std::byte>(option_bytes.data(), options_length)};
  const std::size_t written =
      wire::emit_tcp(out, header, tuple.local_address, tuple.remote_address, payload.size());
  out.resize(written);
  return out;
}

}  // namespace flotilla::tcp::sim
