#include "components/ip/ip_server.hpp"

#include <cstring>

#include "components/wire/arp.hpp"
#include "components/wire/bytes.hpp"
#include "components/wire/checksum.hpp"
#include "components/wire/ethernet.hpp"
#include "components/wire/icmp.hpp"
#include "components/wire/ipv4.hpp"
#include "dataplane/hash.hpp"

namespace flotilla::ip {
namespace {

constexpr std::uint32_t kIcmpBurst = 100;  // ICMP errors per second at most
constexpr std::uint64_t kArpWaitMs = 3000;  // packets waiting for ARP are dropped after this
constexpr std::uint32_t kMaxHeadroomNeeded = wire::kEthernetHeaderBytes + wire::kIpv4HeaderBytes;
constexpr std::uint32_t kLimitedBroadcast = 0xffffffffu;

wire::MacAddress to_mac(const std::uint8_t (&bytes)[6]) {
  wire::MacAddress mac;
  std::memcpy(mac.data(), bytes, 6);
  return mac;
}

BufferHandle narrowed(const BufferHandle& handle, std::size_t skip, std::size_t length) {
  BufferHandle out = handle;
  out.offset = static_cast<std::uint16_t>(handle.offset + skip);
  out.length = static_cast<std::uint16_t>(length);
  return out;
}

BufferHandle widened(const BufferHandle& handle, std::size_t front) {
  BufferHandle out = handle;
  out.offset = static_cast<std::uint16_t>(handle.offset - front);
  out.length = static_cast<std::uint16_t>(handle.length + front);
  return out;
}

// Whether an inbound packet came in a frame sent to a link-level broadcast or multicast address.
// The frame's Ethernet header is still in the buffer, in front of the packet (also after
// reassembly, which rewrites only from the IPv4 header on).
bool came_as_link_broadcast(const BufferPool& pool, ComponentId self, const BufferHandle& packet) {
  if (packet.offset < wire::kEthernetHeaderBytes) return false;
  auto frame = pool.bytes(self, widened(packet, wire::kEthernetHeaderBytes));
  return frame && wire::is_multicast_mac(wire::EthernetFrame::unchecked(frame.value()).destination());
}

}  // namespace

std::size_t IpServer::state_bytes_needed() {
  return sizeof(IpStateHeader) + kRouteBytes + kVerdictTableBytes + (1u << 20);
}

IpServer::IpServer(BufferPool& pool, ComponentId self, IpOutputs& outputs, NamedCounterTable& table)
    : pool_(&pool), self_(self), outputs_(&outputs), cache_(pool, self) {
  auto counter = [&table](std::string_view name) { return &table.counter(name); };
  counters_.frames_in = counter("frames_in");
  counters_.frames_out = counter("frames_out");
  for (std::size_t i = 0; i < wire::kWireErrorCount && i < 8; ++i) {
    counters_.wire_errors[i] = counter(wire::wire_error_name(static_cast<wire::WireError>(i)));
  }
  counters_.not_ipv4 = counter("not_ipv4");
  counters_.not_for_us = counter("not_for_us");
  counters_.ttl_zero = counter("ttl_zero");
  counters_.arp_requests_in = counter("arp_requests_in");
  counters_.arp_replies_in = counter("arp_replies_in");
  counters_.arp_not_for_us = counter("arp_not_for_us");
  counters_.arp_requests_out = counter("arp_requests_out");
  counters_.arp_unresolved = counter("arp_unresolved");
  counters_.arp_queue_full = counter("arp_queue_full");
  counters_.fragments_in = counter("fragments_in");
  counters_.fragments_reassembled = counter("fragments_reassembled");
  counters_.fragment_overlaps = counter("fragment_overlaps");
  counters_.fragment_drops = counter("fragment_drops");
  counters_.fragment_no_slot = counter("fragment_no_slot");
  counters_.fragment_timeouts = counter("fragment_timeouts");
  counters_.fragments_pending = counter("fragments_pending");
  counters_.arp_entries = counter("arp_entries");
  counters_.arp_evicted = counter("arp_evicted");
  counters_.arp_refused = counter("arp_refused");
  counters_.echo_replies = counter("echo_replies");
  counters_.port_unreachable_sent = counter("port_unreachable_sent");
  counters_.icmp_rate_limited = counter("icmp_rate_limited");
  counters_.no_listener = counter("no_listener");
  counters_.filter_blocked_in = counter("filter_blocked_in");
  counters_.filter_blocked_out = counter("filter_blocked_out");
  counters_.filter_queue_full = counter("filter_queue_full");
  counters_.filter_stale_verdicts = counter("filter_stale_verdicts");
  counters_.filter_resubmitted = counter("filter_resubmitted");
  counters_.filter_cache_hits = counter("filter_cache_hits");
  counters_.verdicts_restored = counter("verdicts_restored");
  counters_.delivered = counter("delivered");
  counters_.delivered_locally = counter("delivered_locally");
  counters_.deliver_refused = counter("deliver_refused");
  counters_.transport_bad = counter("transport_bad");
  counters_.no_route = counter("no_route");
  counters_.too_big = counter("too_big");
  counters_.no_buffer = counter("no_buffer");
  counters_.driver_refused = counter("driver_refused");
  counters_.bindings_refused = counter("bindings_refused");
  counters_.tcp_flows_kept = counter("tcp_flows_kept");
  counters_.tcp_flows_swept = counter("tcp_flows_swept");
  counters_.tcp_to_replica = counter("tcp_to_replica");
  counters_.tcp_no_replica = counter("tcp_no_replica");
  counters_.tcp_replicas_announced = counter("tcp_replicas_announced");
  counters_.unknown_protocol = counter("unknown_protocol");
}

Result<std::unique_ptr<IpServer>> IpServer::create(BufferPool& pool, ComponentId self,
                                                   std::span<std::byte> state,
                                                   const IpSettings& settings, IpOutputs& outputs,
                                                   NamedCounterTable& counters) {
  if (state.size() < state_bytes_needed()) {
    return Error{Errc::invalid_argument, 0, "ip: state store too small (state_bytes)"};
  }
  std::unique_ptr<IpServer> server(new IpServer(pool, self, outputs, counters));
  auto* header = reinterpret_cast<IpStateHeader*>(state.data());
  const bool valid = header->magic == IpStateHeader::kMagic &&
                     header->version == IpStateHeader::kVersion;
  auto route_bytes = state.subspan(sizeof(IpStateHeader), kRouteBytes);
  auto verdict_bytes = state.subspan(sizeof(IpStateHeader) + kRouteBytes, kVerdictTableBytes);
  auto flow_bytes = state.subspan(sizeof(IpStateHeader) + kRouteBytes + kVerdictTableBytes);
  server->verdicts_ = std::span(reinterpret_cast<PendingVerdict*>(verdict_bytes.data()), kMaxPendingVerdicts);
  auto routes = RouteTable::attach(route_bytes);
  if (!routes) return routes.error();
  auto flows = FlowTable::attach(flow_bytes);
  if (!flows) return flows.error();
  server->routes_.emplace(std::move(routes.value()));
  server->flows_.emplace(std::move(flows.value()));
  server->header_ = header;
  if (valid) {
    server->restored_ = true;
    server->adopt_parked_verdicts();
    return server;
  }
  for (PendingVerdict& entry : server->verdicts_) entry = PendingVerdict{};
  (void)pool.reclaim(parked_owner(self));  // nothing is pending in a fresh store
  // A fresh store: settings from the arguments, the on-link route and the default route.
  header->magic = 0;
  header->version = IpStateHeader::kVersion;
  header->has_link = 0;
  header->settings = settings;
  header->mtu = 1500;
  header->tcp_replica_count = 0;
  for (ComponentId& replica : header->tcp_replicas) replica = kNoComponent;
  const std::uint32_t mask =
      settings.prefix_length == 0 ? 0 : ~std::uint32_t{0} << (32 - settings.prefix_length);
  if (auto s = server->routes_->add(Route{settings.address & mask, settings.prefix_length, 0, 0}); !s) {
    return s.error();
  }
  if (settings.gateway != 0) {
    if (auto s = server->routes_->add(Route{0, 0, settings.gateway, 0}); !s) return s.error();
  }
  std::atomic_thread_fence(std::memory_order_release);
  header->magic = IpStateHeader::kMagic;  // last: a crash before here leaves a fresh store
  return server;
}

void IpServer::on_link_info(const stack::LinkInfoBody& link) {
  std::memcpy(header_->mac, link.mac, 6);
  header_->mtu = link.mtu >= 576 && link.mtu <= 9000 ? link.mtu : 1500;
  header_->has_link = 1;
}

wire::Ipv4Header IpServer::outgoing_header(std::uint32_t destination, std::uint8_t protocol,
                                           std::size_t payload_length, bool dont_fragment) {
  return wire::Ipv4Header{.source = header_->settings.address,
                          .destination = destination,
                          .protocol = protocol,
                          .ttl = 64,
                          .tos = 0,
                          .identification = next_identification_++,
                          .dont_fragment = dont_fragment,
                          .payload_length = static_cast<std::uint16_t>(payload_length)};
}

wire::MacAddress IpServer::own_mac() const { return to_mac(header_->mac); }

bool IpServer::is_local(std::uint32_t address) const { return address == header_->settings.address; }

std::optional<BufferHandle> IpServer::allocate() {
  BufferHandle handle;
  if (cache_.alloc_burst(std::span(&handle, 1)) != 1) {
    counters_.no_buffer->add();
    return std::nullopt;
  }
  return handle;
}

void IpServer::drop(const BufferHandle& handle, NamedCounter* reason) {
  if (reason != nullptr) reason->add();
  (void)cache_.free(handle);  // a refused free is counted by the pool
}

// ---- receive ----

void IpServer::on_frame(const BufferHandle& frame, std::uint64_t now_ms) {
  counters_.frames_in->add();
  auto bytes = pool_->bytes(self_, frame);
  if (!bytes) return;  // counted by the pool; the buffer is not ours to free
  auto ethernet = wire::EthernetFrame::parse(bytes.value());
  if (!ethernet) {
    drop(frame, counters_.wire_errors[static_cast<std::size_t>(ethernet.error())]);
    return;
  }
  if (!has_link()) {
    drop(frame, counters_.not_for_us);  // no MAC yet: cannot tell what is ours
    return;
  }
  const wire::MacAddress destination = ethernet->destination();
  if (destination != own_mac() && destination != wire::kBroadcastMac) {
    drop(frame, counters_.not_for_us);
    return;
  }
  switch (ethernet->ethertype()) {
    case wire::kEtherTypeArp: receive_arp(frame, bytes.value(), now_ms); return;
    case wire::kEtherTypeIpv4: receive_ipv4(frame, bytes.value(), now_ms); return;
    default: drop(frame, counters_.not_ipv4); return;
  }
}

void IpServer::receive_arp(const BufferHandle& frame, std::span<std::byte> bytes, std::uint64_t now_ms) {
  auto arp = wire::ArpPacket::parse(bytes.subspan(wire::kEthernetHeaderBytes));
  if (!arp) {
    drop(frame, counters_.wire_errors[static_cast<std::size_t>(arp.error())]);
    return;
  }
  const bool for_us = is_local(arp->target_address());
  const std::uint32_t sender = arp->sender_address();
  const wire::MacAddress sender_mac = arp->sender_mac();
  const bool request = arp->operation() == 1;
  (request ? counters_.arp_requests_in : counters_.arp_replies_in)->add();
  // RFC 826: update an entry we have; create one only when the packet was addressed to us. A
  // sender claiming our address or a broadcast one is never learned.
  const bool learnable = sender != 0 && sender != kLimitedBroadcast && !is_local(sender);
  if (learnable) arp_.learn(sender, sender_mac, now_ms, for_us);
  const auto release_waiting = [&] {
    waiting_for_arp_.take(sender, [&](const BufferHandle& packet) { transmit_to(packet, sender_mac); });
  };
  if (!for_us) {
    drop(frame, counters_.arp_not_for_us);
    // It may still have resolved an entry we were resolving (a gratuitous ARP from the host we
    // asked about): what waits for that entry can go, but only to the MAC the cache now holds.
    if (learnable && waiting_for_arp_.waiting_for(sender) != 0 &&
        arp_.lookup(sender, now_ms) == sender_mac) {
      release_waiting();
    }
    return;
  }
  if (request) {
    // Answer in place: the request's buffer becomes the reply.
    auto out = bytes.subspan(wire::kEthernetHeaderBytes);
    const std::size_t written =
        wire::emit_arp(out, 2, own_mac(), header_->settings.address, sender_mac, sender);
    auto ethernet = wire::EthernetFrame::unchecked(bytes);
    ethernet.set_destination(sender_mac);
    ethernet.set_source(own_mac());
    const BufferHandle reply = narrowed(frame, 0, wire::kEthernetHeaderBytes + written);
    if (outputs_->send_frame(reply)) {
      counters_.frames_out->add();
    } else {
      drop(reply, counters_.driver_refused);
    }
  } else {
    (void)cache_.free(frame);
  }
  // Anything that waited for this sender can go now.
  release_waiting();
}

void IpServer::receive_ipv4(const BufferHandle& frame, std::span<std::byte> bytes, std::uint64_t now_ms) {
  auto packet = wire::Ipv4Packet::parse(bytes.subspan(wire::kEthernetHeaderBytes));
  if (!packet) {
    drop(frame, counters_.wire_errors[static_cast<std::size_t>(packet.error())]);
    return;
  }
  if (!is_local(packet->destination())) {
    drop(frame, counters_.not_for_us);  // a host, not a router: nothing is forwarded
    return;
  }
  if (packet->ttl() == 0) {
    drop(frame, counters_.ttl_zero);
    return;
  }
  const BufferHandle ip_packet = narrowed(frame, wire::kEthernetHeaderBytes, packet->total_length());
  if (!packet->is_fragment()) {
    filter_then(Stage::inbound, ip_packet, now_ms);
    return;
  }
  counters_.fragments_in->add();
  const FragmentKey key{packet->source(), packet->destination(), packet->identification(),
                        packet->protocol()};
  const auto outcome = reassembler_.offer(key, packet->fragment_offset_bytes(),
                                          packet->more_fragments(), packet->payload(), now_ms);
  switch (outcome.kind) {
    case ReassemblyOutcome::Kind::incomplete: (void)cache_.free(frame); return;
    case ReassemblyOutcome::Kind::overlap: drop(frame, counters_.fragment_overlaps); return;
    case ReassemblyOutcome::Kind::complete: break;
    default: drop(frame, counters_.fragment_drops); return;
  }
  // The whole datagram goes back into this fragment's buffer behind a fresh header, so the filter
  // and the transport see an ordinary packet. Reassembly is limited to what fits a buffer.
  const std::size_t header_bytes = wire::kIpv4HeaderBytes;
  const std::size_t room = pool_->buffer_size() - frame.offset - wire::kEthernetHeaderBytes;
  if (header_bytes + outcome.datagram.size() > room) {
    drop(frame, counters_.fragment_drops);
    return;
  }
  const wire::Ipv4Header rebuilt{.source = packet->source(),
                                 .destination = packet->destination(),
                                 .protocol = packet->protocol(),
                                 .ttl = packet->ttl(),
                                 .tos = packet->tos(),
                                 .identification = packet->identification(),
                                 .dont_fragment = false,
                                 .payload_length = static_cast<std::uint16_t>(outcome.datagram.size())};
  auto whole_buffer = pool_->bytes(self_, BufferHandle{frame.index, frame.generation, frame.pool,
                                                        frame.offset,
                                                        static_cast<std::uint16_t>(pool_->buffer_size() - frame.offset), 0});
  if (!whole_buffer) {
    drop(frame, counters_.fragment_drops);
    return;
  }
  auto ip_bytes = whole_buffer->subspan(wire::kEthernetHeaderBytes);
  std::memmove(ip_bytes.data() + header_bytes, outcome.datagram.data(), outcome.datagram.size());
  wire::emit_ipv4_header(ip_bytes, rebuilt);
  counters_.fragments_reassembled->add();
  const BufferHandle whole = BufferHandle{frame.index, frame.generation, frame.pool,
                                          static_cast<std::uint16_t>(frame.offset + wire::kEthernetHeaderBytes),
                                          static_cast<std::uint16_t>(header_bytes + outcome.datagram.size()), 0};
  filter_then(Stage::inbound, whole, now_ms);
}

void IpServer::deliver_inbound(const BufferHandle& packet_handle, std::uint64_t now_ms) {
  auto bytes = pool_->bytes(self_, packet_handle);
  if (!bytes) return;
  auto packet = wire::Ipv4Packet::parse(bytes.value());
  if (!packet) {
    drop(packet_handle, counters_.wire_errors[static_cast<std::size_t>(packet.error())]);
    return;
  }
  const std::size_t header_length = packet->header_length();
  switch (packet->protocol()) {
    case wire::kProtocolIcmp: answer_echo(packet_handle, bytes.value(), now_ms); return;
    case wire::kProtocolUdp: break;
    case wire::kProtocolTcp: break;
    default: drop(packet_handle, counters_.unknown_protocol); return;
  }
  // UDP and TCP: the first 4 bytes of either header are the ports. The transport checks the rest
  // (length, checksum) itself; IP only needs to know where to send it.
  auto transport = packet->payload();
  if (transport.size() < 8) {
    drop(packet_handle, counters_.wire_errors[static_cast<std::size_t>(wire::WireError::too_short)]);
    return;
  }
  const std::uint16_t remote_port = wire::load_be16(transport, 0);
  const std::uint16_t local_port = wire::load_be16(transport, 2);
  auto owner = flows_->lookup(packet->protocol(), packet->destination(), local_port,
                              packet->source(), remote_port);
  if (!owner && packet->protocol() == wire::kProtocolTcp) {
    // No replica owns this exact flow (a SYN, a SYN-cookie ACK, or a segment for a connection that
    // no longer exists): the replica the 4-tuple hashes to answers it.
    owner = tcp_replica_for(packet->source(), remote_port, local_port);
    (owner ? counters_.tcp_to_replica : counters_.tcp_no_replica)->add();
  }
  if (!owner) {
    // RFC 1122 3.2.2: no ICMP error about a datagram sent as a link-layer broadcast.
    if (packet->protocol() == wire::kProtocolUdp &&
        !came_as_link_broadcast(*pool_, self_, packet_handle)) {
      send_port_unreachable(bytes.value(), now_ms);
    }
    drop(packet_handle, counters_.no_listener);
    return;
  }
  const stack::TransportPacketBody body{
      .segment = narrowed(packet_handle, header_length, transport.size()),
      .remote_address = packet->source(),
      .local_address = packet->destination(),
      .remote_port = remote_port,
      .local_port = local_port,
      .protocol = packet->protocol(),
      .reserved = {}};
  if (outputs_->deliver(*owner, body)) {
    counters_.delivered->add();
  } else {
    drop(packet_handle, counters_.deliver_refused);
  }
}

void IpServer::answer_echo(const BufferHandle& packet_handle, std::span<std::byte> bytes,
                           std::uint64_t now_ms) {
  auto packet = wire::Ipv4Packet::parse(bytes);
  auto icmp = wire::IcmpPacket::parse(packet->payload());
  if (!icmp) {
    drop(packet_handle, counters_.wire_errors[static_cast<std::size_t>(icmp.error())]);
    return;
  }
  if (icmp->type() != wire::kIcmpEchoRequest) {
    (void)cache_.free(packet_handle);  // replies and errors for us: nothing asked for them yet
    return;
  }
  // The reply is built in place: same buffer, addresses swapped, type changed.
  const std::size_t icmp_bytes =
      wire::emit_echo_reply(packet->payload(), icmp.value());
  const std::uint32_t peer = packet->source();
  const wire::Ipv4Header header = outgoing_header(peer, wire::kProtocolIcmp, icmp_bytes, false);
  // The request may carry IP options: the reply has none, so its ICMP part moves forward.
  const std::size_t old_header = packet->header_length();
  if (old_header != wire::kIpv4HeaderBytes) {
    std::memmove(bytes.data() + wire::kIpv4HeaderBytes, bytes.data() + old_header, icmp_bytes);
  }
  wire::emit_ipv4_header(bytes, header);
  counters_.echo_replies->add();
  filter_then(Stage::outbound, narrowed(packet_handle, 0, wire::kIpv4HeaderBytes + icmp_bytes), now_ms);
}

void IpServer::send_port_unreachable(std::span<std::byte> offending, std::uint64_t now_ms) {
  auto offending_packet = wire::Ipv4Packet::parse(offending);
  // RFC 1122: never about a broadcast, a non-first fragment or another ICMP error.
  if (!offending_packet || !wire::icmp_error_allowed(offending_packet.value())) return;
  if (icmp_tokens_ == 0) {
    counters_.icmp_rate_limited->add();
    return;
  }
  auto handle = allocate();
  if (!handle) return;
  --icmp_tokens_;
  auto buffer = pool_->bytes(self_, BufferHandle{handle->index, handle->generation, handle->pool,
                                                  stack::kHeadroom,
                                                  static_cast<std::uint16_t>(pool_->buffer_size() - stack::kHeadroom), 0});
  if (!buffer) return;
  auto icmp_out = buffer->subspan(wire::kIpv4HeaderBytes);
  const std::size_t icmp_bytes = wire::emit_destination_unreachable(icmp_out, wire::kIcmpPortUnreachable, offending);
  wire::emit_ipv4_header(buffer.value(),
                         outgoing_header(offending_packet->source(), wire::kProtocolIcmp, icmp_bytes, false));
  counters_.port_unreachable_sent->add();
  BufferHandle packet = *handle;
  packet.offset = stack::kHeadroom;
  packet.length = static_cast<std::uint16_t>(wire::kIpv4HeaderBytes + icmp_bytes);
  filter_then(Stage::outbound, packet, now_ms);
}

// ---- the filter ----

void IpServer::filter_then(Stage stage, const BufferHandle& packet, std::uint64_t now_ms) {
  if (!outputs_->has_filter()) {
    if (stage == Stage::inbound) {
      deliver_inbound(packet, now_ms);
    } else {
      transmit(packet, now_ms);
    }
    return;
  }
  auto bytes = pool_->bytes(self_, packet);
  const auto flow = bytes ? VerdictCache::flow_of(bytes.value(), stage == Stage::inbound) : std::nullopt;
  if (flow && verdict_cache_.passes(*flow, now_ms)) {
    counters_.filter_cache_hits->add();
    if (stage == Stage::inbound) {
      deliver_inbound(packet, now_ms);
    } else {
      transmit(packet, now_ms);
    }
    return;
  }
  // Tickets carry their slot in the low bits, so a verdict finds its packet without a search.
  const std::uint32_t first = next_ticket_;
  for (std::size_t probe = 0; probe < kMaxPendingVerdicts; ++probe) {
    const std::uint32_t ticket = first + static_cast<std::uint32_t>(probe);
    PendingVerdict& entry = verdicts_[ticket % kMaxPendingVerdicts];
    if (entry.stage != Stage::free) continue;
    next_ticket_ = ticket + 1;
    if (!pool_->hand_off(packet, self_, parked_owner(self_))) return;  // counted by the pool
    publish(entry, PendingVerdict{0, ticket, packet, stage, false, {}, now_ms});
    if (flow) verdict_cache_.asked(flow->key);
    ask_filter(entry, now_ms);
    return;
  }
  drop(packet, counters_.filter_queue_full);
}

void IpServer::publish(PendingVerdict& entry, const PendingVerdict& value) {
  std::atomic_ref<std::uint32_t>(entry.state).store(0, std::memory_order_relaxed);
  entry.ticket = value.ticket;
  entry.packet = value.packet;
  entry.stage = value.stage;
  entry.requested = value.requested;
  entry.asked_ms = value.asked_ms;
  std::atomic_ref<std::uint32_t>(entry.state).store(1, std::memory_order_release);
  ++pending_count_;
}

void IpServer::retire(PendingVerdict& entry) {
  std::atomic_ref<std::uint32_t>(entry.state).store(0, std::memory_order_release);
  entry.stage = Stage::free;
  --pending_count_;
}

// A restarted IP finds the packets its dead incarnation had waiting for a verdict: those whose
// buffers are still parked are kept and asked about again on the first tick; anything else
// parked (a crash between parking and publishing) goes back to the pool.
void IpServer::adopt_parked_verdicts() {
  const ComponentId parked = parked_owner(self_);
  for (PendingVerdict& entry : verdicts_) {
    const bool published = std::atomic_ref<std::uint32_t>(entry.state).load(std::memory_order_acquire) == 1;
    const bool kept = published && entry.stage != Stage::free &&
                      pool_->validate(entry.packet).ok() && pool_->owner_of(entry.packet.index) == parked &&
                      pool_->hand_off(entry.packet, parked, self_).ok();
    if (!kept) {
      std::atomic_ref<std::uint32_t>(entry.state).store(0, std::memory_order_relaxed);
      entry.stage = Stage::free;
      continue;
    }
    entry.requested = false;  // ask on the first tick
    ++pending_count_;
    counters_.verdicts_restored->add();
  }
  (void)pool_->reclaim(parked);  // parked, but named by no entry
  for (PendingVerdict& entry : verdicts_) {
    if (entry.stage != Stage::free) (void)pool_->hand_off(entry.packet, self_, parked);
  }
  for (const PendingVerdict& entry : verdicts_) {
    if (entry.stage != Stage::free) next_ticket_ = std::max(next_ticket_, entry.ticket + 1);
  }
}

bool IpServer::ask_filter(PendingVerdict& entry, std::uint64_t now_ms) {
  entry.asked_ms = now_ms;
  const stack::VerdictRequestBody request{
      .packet = entry.packet,
      .ticket = entry.ticket,
      .direction = entry.stage == Stage::inbound ? stack::Direction::in : stack::Direction::out,
      .reserved = {}};
  entry.requested = outputs_->request_verdict(request);
  return entry.requested;
}

void IpServer::on_verdict(const stack::VerdictBody& verdict, std::uint64_t now_ms) {
  PendingVerdict& entry = verdicts_[verdict.ticket % kMaxPendingVerdicts];
  if (entry.stage == Stage::free || entry.ticket != verdict.ticket ||
      entry.packet.generation != verdict.packet_generation) {
    counters_.filter_stale_verdicts->add();  // an answer from before a restart, or a lie
    return;
  }
  const PendingVerdict done = entry;
  retire(entry);
  if (!pool_->hand_off(done.packet, parked_owner(self_), self_)) return;  // counted by the pool
  if (auto bytes = pool_->bytes(self_, done.packet)) {
    if (const auto flow = VerdictCache::flow_of(bytes.value(), done.stage == Stage::inbound)) {
      verdict_cache_.answered(flow->key,
                              verdict.action == stack::Action::pass && (verdict.flags & stack::kVerdictCacheable) != 0,
                              now_ms);
    }
  }
  if (verdict.action != stack::Action::pass) {
    drop(done.packet, done.stage == Stage::inbound ? counters_.filter_blocked_in
                                                   : counters_.filter_blocked_out);
    return;
  }
  if (done.stage == Stage::inbound) {
    deliver_inbound(done.packet, now_ms);
  } else {
    transmit(done.packet, now_ms);
  }
}

void IpServer::on_filter_restarted() {
  for (PendingVerdict& entry : verdicts_) {
    if (entry.stage == Stage::free) continue;
    counters_.filter_resubmitted->add();
    ask_filter(entry, last_now_ms_);
  }
}

// ---- send ----

void IpServer::on_transport_packet(ComponentId from, const stack::TransportPacketBody& body,
                                   std::uint64_t now_ms) {
  const BufferHandle& segment = body.segment;
  auto bytes = pool_->bytes(self_, segment);
  if (!bytes) return;  // counted by the pool
  const bool known_protocol =
      body.protocol == wire::kProtocolUdp || body.protocol == wire::kProtocolTcp;
  if (!known_protocol || segment.offset < kMaxHeadroomNeeded || segment.length < 8 ||
      (body.local_address != 0 && !is_local(body.local_address))) {
    drop(segment, counters_.transport_bad);
    return;
  }
  // Only the flow's owner may send from its port (a transport cannot speak for another's flow).
  // A TCP replica also answers for flows nobody owns: RSTs, and SYN-ACKs carrying SYN cookies.
  const std::uint16_t local_port = wire::load_be16(bytes.value(), 0);
  const auto owner = flows_->lookup(body.protocol, header_->settings.address, local_port,
                                    body.remote_address, body.remote_port);
  const bool unowned_tcp = !owner && body.protocol == wire::kProtocolTcp && is_tcp_replica(from);
  if (!unowned_tcp && (!owner || *owner != from)) {
    drop(segment, counters_.transport_bad);
    return;
  }
  if (segment.length + wire::kIpv4HeaderBytes > header_->mtu) {
    drop(segment, counters_.too_big);
    return;
  }
  const BufferHandle packet = widened(segment, wire::kIpv4HeaderBytes);
  auto packet_bytes = pool_->bytes(self_, packet);
  if (!packet_bytes) return;
  wire::emit_ipv4_header(packet_bytes.value(),
                         outgoing_header(body.remote_address, body.protocol, segment.length, true));
  filter_then(Stage::outbound, packet, now_ms);
}

void IpServer::transmit(const BufferHandle& packet, std::uint64_t now_ms) {
  auto bytes = pool_->bytes(self_, packet);
  if (!bytes) return;
  const std::uint32_t destination = wire::Ipv4Packet::unchecked(bytes.value()).destination();
  if (is_local(destination)) {
    deliver_locally(packet, now_ms);
    return;
  }
  if (packet.offset < wire::kEthernetHeaderBytes || !has_link()) {
    drop(packet, counters_.driver_refused);
    return;
  }
  const auto route = routes_->lookup(destination);
  if (!route) {
    drop(packet, counters_.no_route);
    return;
  }
  const std::uint32_t next_hop = route->gateway != 0 ? route->gateway : destination;
  if (auto mac = arp_.lookup(next_hop, now_ms)) {
    transmit_to(packet, *mac);
    return;
  }
  if (!waiting_for_arp_.push(next_hop, packet, now_ms)) {
    drop(packet, counters_.arp_queue_full);
    return;
  }
  resolve(next_hop, now_ms);
}

// A packet to our own address (two programs on this stack) turns around here, as on a loopback
// device: it passed the filter's outbound stage, and now goes through its inbound stage as a
// packet from the wire would, without the driver or ARP.
void IpServer::deliver_locally(const BufferHandle& packet, std::uint64_t now_ms) {
  // The headroom in front still holds whatever an earlier use of the buffer left there; the
  // inbound path reads a frame's Ethernet destination from it (came_as_link_broadcast), so the
  // packet gets the header of a unicast frame to us.
  if (packet.offset >= wire::kEthernetHeaderBytes) {
    if (auto frame = pool_->bytes(self_, widened(packet, wire::kEthernetHeaderBytes))) {
      auto ethernet = wire::EthernetFrame::unchecked(frame.value());
      ethernet.set_destination(own_mac());
      ethernet.set_source(own_mac());
      ethernet.set_ethertype(wire::kEtherTypeIpv4);
    }
  }
  counters_.delivered_locally->add();
  filter_then(Stage::inbound, packet, now_ms);
}

void IpServer::resolve(std::uint32_t next_hop, std::uint64_t now_ms) {
  switch (arp_.want(next_hop, now_ms)) {
    case ResolveStep::send_request: send_arp(1, wire::MacAddress{}, next_hop); break;
    case ResolveStep::wait: break;
    case ResolveStep::give_up:
      waiting_for_arp_.drop_address(next_hop, [&](const BufferHandle& h) { drop(h, counters_.arp_unresolved); });
      break;
  }
}

void IpServer::transmit_to(const BufferHandle& packet, const wire::MacAddress& destination) {
  const BufferHandle frame = widened(packet, wire::kEthernetHeaderBytes);
  auto bytes = pool_->bytes(self_, frame);
  if (!bytes) return;
  auto ethernet = wire::EthernetFrame::unchecked(bytes.value());
  ethernet.set_destination(destination);
  ethernet.set_source(own_mac());
  ethernet.set_ethertype(wire::kEtherTypeIpv4);
  if (outputs_->send_frame(frame)) {
    counters_.frames_out->add();
  } else {
    drop(frame, counters_.driver_refused);
  }
}

void IpServer::send_arp(std::uint16_t operation, const wire::MacAddress& target_mac,
                        std::uint32_t target_address) {
  auto handle = allocate();
  if (!handle) return;
  BufferHandle frame = *handle;
  frame.offset = stack::kHeadroom;
  frame.length = static_cast<std::uint16_t>(wire::kEthernetHeaderBytes + 28);
  auto bytes = pool_->bytes(self_, frame);
  if (!bytes) return;
  auto ethernet = wire::EthernetFrame::unchecked(bytes.value());
  ethernet.set_destination(operation == 1 ? wire::kBroadcastMac : target_mac);
  ethernet.set_source(own_mac());
  ethernet.set_ethertype(wire::kEtherTypeArp);
  wire::emit_arp(bytes->subspan(wire::kEthernetHeaderBytes), operation, own_mac(),
                 header_->settings.address, target_mac, target_address);
  counters_.arp_requests_out->add();
  if (outputs_->send_frame(frame)) {
    counters_.frames_out->add();
  } else {
    drop(frame, counters_.driver_refused);
  }
}

void IpServer::on_port_binding(ComponentId from, const stack::PortBindingBody& binding) {
  const bool known = binding.protocol == wire::kProtocolUdp || binding.protocol == wire::kProtocolTcp;
  if (!known || binding.local_port == 0) {
    counters_.bindings_refused->add();
    return;
  }
  const FlowKey key{binding.protocol, 0, binding.local_port, 0, 0};
  Status status = binding.change == stack::BindingChange::claim ? flows_->claim(key, from)
                                                                : flows_->release(key, from);
  if (!status) counters_.bindings_refused->add();
}

void IpServer::on_flow_binding(ComponentId from, const stack::FlowBindingBody& binding) {
  if (binding.protocol != wire::kProtocolTcp || !is_tcp_replica(from) || binding.local_port == 0 ||
      binding.remote_port == 0 || binding.remote_address == 0 ||
      (binding.local_address != 0 && !is_local(binding.local_address))) {
    counters_.bindings_refused->add();
    return;
  }
  const FlowKey key{binding.protocol, header_->settings.address, binding.local_port,
                    binding.remote_address, binding.remote_port};
  Status status = binding.change == stack::BindingChange::claim ? flows_->claim(key, from)
                                                                : flows_->release(key, from);
  if (!status) counters_.bindings_refused->add();
}

void IpServer::on_tcp_replica(ComponentId from, const stack::TcpReplicaBody& replica) {
  const auto mode = static_cast<std::uint8_t>(replica.mode);
  if (replica.count == 0 || replica.count > IpStateHeader::kMaxTcpReplicas || replica.index >= replica.count ||
      mode > static_cast<std::uint8_t>(stack::TcpReplicaMode::recovered)) {
    counters_.bindings_refused->add();
    return;
  }
  // A replica count that changed means a new configuration: forget the old assignment.
  if (header_->tcp_replica_count != replica.count) {
    for (ComponentId& slot : header_->tcp_replicas) slot = kNoComponent;
    header_->tcp_replica_count = replica.count;
  }
  for (ComponentId& slot : header_->tcp_replicas) {
    if (slot == from) slot = kNoComponent;
  }
  header_->tcp_replicas[replica.index] = from;
  switch (replica.mode) {
    case stack::TcpReplicaMode::ip_restarted: break;
    // A fresh incarnation starts with no connections: the flows its predecessor claimed are dead.
    case stack::TcpReplicaMode::fresh: (void)flows_->release_owner(from); break;
    // Its flows keep reaching it while it restores them; each one it restores it claims again.
    case stack::TcpReplicaMode::recovering: counters_.tcp_flows_kept->add(flows_->mark_unconfirmed(from)); break;
    case stack::TcpReplicaMode::recovered: counters_.tcp_flows_swept->add(flows_->release_unconfirmed(from)); break;
  }
  counters_.tcp_replicas_announced->add();
}

std::optional<ComponentId> IpServer::tcp_replica_for(std::uint32_t remote_address, std::uint16_t remote_port,
                                                     std::uint16_t local_port) const {
  const std::uint32_t count = header_->tcp_replica_count;
  if (count == 0 || count > IpStateHeader::kMaxTcpReplicas) return std::nullopt;
  const std::uint64_t key = (std::uint64_t{remote_address} << 32) | (std::uint64_t{remote_port} << 16) | local_port;
  const ComponentId replica = header_->tcp_replicas[mix64(key) % count];
  if (replica == kNoComponent) return std::nullopt;
  return replica;
}

bool IpServer::is_tcp_replica(ComponentId component) const {
  if (component == kNoComponent) return false;
  for (std::uint32_t i = 0; i < header_->tcp_replica_count && i < IpStateHeader::kMaxTcpReplicas; ++i) {
    if (header_->tcp_replicas[i] == component) return true;
  }
  return false;
}

void IpServer::on_tick(std::uint64_t now_ms) {
  arp_.expire(now_ms);
  reassembler_.expire(now_ms);
  publish_table_counters();
  // Ask again for next hops still unresolved, so one lost request does not strand what waits.
  std::array<std::uint32_t, 256> hops{};
  std::size_t hop_count = 0;
  waiting_for_arp_.for_each_hop([&](std::uint32_t hop) {
    if (hop_count < hops.size()) hops[hop_count++] = hop;
  });
  for (std::size_t i = 0; i < hop_count; ++i) resolve(hops[i], now_ms);
  if (now_ms >= kArpWaitMs) {
    waiting_for_arp_.drop_older_than(now_ms - kArpWaitMs,
                                     [&](const BufferHandle& h) { drop(h, counters_.arp_unresolved); });
  }
  // Refill the ICMP error budget: kIcmpBurst per second.
  if (now_ms - icmp_refilled_ms_ >= 1000) {
    icmp_tokens_ = kIcmpBurst;
    icmp_refilled_ms_ = now_ms;
  }
  // Requests that found the filter's ring full, or whose answer never came, are asked again.
  last_now_ms_ = now_ms;
  for (PendingVerdict& entry : verdicts_) {
    if (entry.stage == Stage::free) continue;
    if (!entry.requested || now_ms - entry.asked_ms >= kVerdictRetryMs) {
      if (entry.requested) counters_.filter_resubmitted->add();
      ask_filter(entry, now_ms);
    }
  }
}

void IpServer::publish_table_counters() {
  const auto publish = [](NamedCounter* counter, std::uint64_t now, std::uint64_t& published) {
    counter->add(now - published);
    published = now;
  };
  publish(counters_.arp_evicted, arp_.evicted, published_.arp_evicted);
  publish(counters_.arp_refused, arp_.flood_ignored, published_.arp_refused);
  publish(counters_.fragment_no_slot, reassembler_.no_slot, published_.fragment_no_slot);
  publish(counters_.fragment_timeouts, reassembler_.timed_out, published_.fragment_timeouts);
  counters_.arp_entries->value.store(arp_.size(), std::memory_order_relaxed);
  counters_.fragments_pending->value.store(reassembler_.in_progress(), std::memory_order_relaxed);
}

std::size_t IpServer::buffers_held() const { return pending_count_ + waiting_for_arp_.size() + cache_.cached(); }

}  // namespace flotilla::ip
