// The IP server's logic: everything the `flotilla-ip` process does with the messages it receives,
// apart from the channels themselves. Frames come from the driver; IPv4 packets for this host are
// checked, reassembled, filtered (an asynchronous verdict from pf; IP keeps the buffer meanwhile)
// and handed to the transport that owns their flow; ICMP echo is answered here, and a datagram to a
// closed UDP port gets a port unreachable. Packets from the transports get their IPv4 header, are
// filtered, routed, resolved by ARP and framed for the driver; one to our own address is filtered
// again as inbound and delivered here instead (two programs on one stack).
//
// Kept apart from the channels (IpComponent, ip_component.hpp, wires it to them) so tests can
// drive it with plain calls and see what it sends through IpOutputs.
//
// Buffers: every handle IpServer holds is owned by `self` in the pool. Passing one on goes through
// IpOutputs, which hands it off and sends; when an output refuses, IpServer frees the buffer and
// counts the drop. Nothing here allocates memory after construction.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>

#include "components/ip/arp_cache.hpp"
#include "components/ip/flow_table.hpp"
#include "components/ip/pending_queue.hpp"
#include "components/ip/reassembly.hpp"
#include "components/ip/route_table.hpp"
#include "components/ip/verdict_cache.hpp"
#include "components/formats/stack_messages.hpp"
#include "components/wire/ipv4.hpp"
#include "dataplane/buffer_pool.hpp"
#include "dataplane/counters.hpp"

namespace flotilla::ip {

// Where the IP server's packets go. Each call passes a buffer IP owns; returning true means the
// buffer was handed off and sent, false that it was not (IP still owns it and frees it).
class IpOutputs {
 public:
  virtual ~IpOutputs() = default;
  virtual bool send_frame(const BufferHandle& frame) = 0;
  // false also when there is no filter: IpServer then passes everything.
  virtual bool has_filter() const = 0;
  // The filter only reads the buffer; IP keeps it (parked: parked_owner(self)). false: the request
  // could not be sent now.
  virtual bool request_verdict(const stack::VerdictRequestBody& request) = 0;
  virtual bool deliver(ComponentId owner, const stack::TransportPacketBody& packet) = 0;
};

struct IpSettings {
  std::uint32_t address = 0;
  std::uint8_t prefix_length = 24;
  std::uint32_t gateway = 0;  // 0: no default route
};

// What IP keeps in its state store, so a restarted IP needs nothing from anyone: its settings, the
// link it was told about, its routes, the packets waiting for a filter verdict, and the flow table.
// Layout: this header, the route table (kRouteBytes), the verdict table, then the flow table.
struct alignas(64) IpStateHeader {
  static constexpr std::uint64_t kMagic = 0x6574617453704946ull;  // "FIpState"
  static constexpr std::uint32_t kVersion = 3;
  static constexpr std::size_t kMaxTcpReplicas = 16;
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t has_link;
  IpSettings settings;
  std::uint8_t mac[6];
  std::uint16_t mtu;
  std::uint32_t tcp_replica_count;  // as the replicas announced it
  ComponentId tcp_replicas[kMaxTcpReplicas];  // by replica index; kNoComponent: not announced
};

class IpServer {
 public:
  static constexpr std::size_t kMaxPendingVerdicts = 1024;
  static constexpr std::size_t kRouteBytes = 64 * 1024;
  static constexpr std::uint64_t kVerdictRetryMs = 200;
  // What the state store must hold at least: header, routes, and a flow table of 16k entries.
  static std::size_t state_bytes_needed();

  // `state` is the state store. `settings` apply when the store is fresh; a store that already
  // holds valid state (an earlier incarnation's) keeps its own, which `restored()` then reports.
  static Result<std::unique_ptr<IpServer>> create(BufferPool& pool, ComponentId self,
                                                  std::span<std::byte> state, const IpSettings& settings,
                                                  IpOutputs& outputs, NamedCounterTable& counters);

  bool restored() const { return restored_; }
  const IpSettings& settings() const { return header_->settings; }
  bool has_link() const { return header_->has_link != 0; }

  void on_link_info(const stack::LinkInfoBody& link);
  void on_frame(const BufferHandle& frame, std::uint64_t now_ms);
  void on_verdict(const stack::VerdictBody& verdict, std::uint64_t now_ms);
  void on_transport_packet(ComponentId from, const stack::TransportPacketBody& packet,
                           std::uint64_t now_ms);
  void on_port_binding(ComponentId from, const stack::PortBindingBody& binding);
  void on_flow_binding(ComponentId from, const stack::FlowBindingBody& binding);
  void on_tcp_replica(ComponentId from, const stack::TcpReplicaBody& replica);
  // The TCP replica a segment no exact flow claims goes to (hash of the 4-tuple), if any announced.
  std::optional<ComponentId> tcp_replica_for(std::uint32_t remote_address, std::uint16_t remote_port,
                                             std::uint16_t local_port) const;
  // The filter restarted: ask again about every packet still waiting for a verdict.
  void on_filter_restarted();
  // Expiry of ARP entries, fragments and packets waiting for ARP. Call every ~100 ms.
  void on_tick(std::uint64_t now_ms);

  std::size_t pending_verdicts() const { return pending_count_; }
  const FlowTable& flows() const { return *flows_; }
  const RouteTable& routes() const { return *routes_; }
  // Buffers IpServer holds right now, its own or parked (waiting for a verdict or for ARP, or in
  // its cache): for accounting in tests.
  std::size_t buffers_held() const;

 private:
  enum class Stage : std::uint8_t { free = 0, inbound, outbound };
  // A packet waiting for its verdict, in the state store. The packet's buffer is parked
  // (parked_owner(self)) while the entry is published, so it outlives an IP crash and the next
  // incarnation asks the filter again. Published last, with a release store of `state`; a crash
  // between parking and publishing leaves a parked buffer no entry names, which the next
  // incarnation frees.
  struct PendingVerdict {
    std::uint32_t state = 0;  // 0 free, 1 published (accessed through std::atomic_ref)
    std::uint32_t ticket = 0;
    BufferHandle packet;  // starts at the IPv4 header
    Stage stage = Stage::free;
    bool requested = false;  // sent to the filter (false: waiting for ring room or a filter)
    std::uint8_t reserved[6] = {};
    std::uint64_t asked_ms = 0;  // when it was last sent: an answer lost on the way is asked again
  };
  static constexpr std::size_t kVerdictTableBytes =
      (kMaxPendingVerdicts * sizeof(PendingVerdict) + 63) / 64 * 64;
  void adopt_parked_verdicts();
  void publish(PendingVerdict& entry, const PendingVerdict& value);
  void retire(PendingVerdict& entry);

  IpServer(BufferPool& pool, ComponentId self, IpOutputs& outputs, NamedCounterTable& counters);

  // Receive path.
  void receive_arp(const BufferHandle& frame, std::span<std::byte> bytes, std::uint64_t now_ms);
  void receive_ipv4(const BufferHandle& frame, std::span<std::byte> bytes, std::uint64_t now_ms);
  void deliver_inbound(const BufferHandle& packet, std::uint64_t now_ms);
  void answer_echo(const BufferHandle& packet, std::span<std::byte> bytes, std::uint64_t now_ms);
  void send_port_unreachable(std::span<std::byte> offending, std::uint64_t now_ms);

  // Send path: a complete IPv4 packet (handle starts at the IPv4 header) goes through the filter,
  // then routing and ARP, then to the driver.
  void filter_then(Stage stage, const BufferHandle& packet, std::uint64_t now_ms);
  void transmit(const BufferHandle& packet, std::uint64_t now_ms);
  void deliver_locally(const BufferHandle& packet, std::uint64_t now_ms);
  void transmit_to(const BufferHandle& packet, const wire::MacAddress& destination);
  void send_arp(std::uint16_t operation, const wire::MacAddress& target_mac,
                std::uint32_t target_address);
  // Sends an ARP request for `next_hop` when one is due, or gives up on what waits for it.
  void resolve(std::uint32_t next_hop, std::uint64_t now_ms);

  bool ask_filter(PendingVerdict& entry, std::uint64_t now_ms);
  void drop(const BufferHandle& handle, NamedCounter* reason);
  std::optional<BufferHandle> allocate();
  wire::MacAddress own_mac() const;
  // The header of a packet this host sends, with the next identification.
  wire::Ipv4Header outgoing_header(std::uint32_t destination, std::uint8_t protocol,
                                   std::size_t payload_length, bool dont_fragment);
  bool is_local(std::uint32_t address) const;
  bool is_tcp_replica(ComponentId component) const;
  // The ARP cache and the reassembler count in their own words; their growth and their occupancy
  // are published here, so a flood's effect on them shows under `flotilla top`.
  void publish_table_counters();

  BufferPool* pool_;
  ComponentId self_;
  IpOutputs* outputs_;
  PoolCache cache_;
  IpStateHeader* header_ = nullptr;
  std::optional<RouteTable> routes_;
  std::optional<FlowTable> flows_;
  ArpCache arp_;
  PendingQueue waiting_for_arp_;
  Reassembler reassembler_;
  std::span<PendingVerdict> verdicts_;  // kMaxPendingVerdicts entries in the state store
  VerdictCache verdict_cache_;
  std::size_t pending_count_ = 0;
  std::uint32_t next_ticket_ = 1;
  std::uint16_t next_identification_ = 1;
  std::uint64_t last_now_ms_ = 0;
  bool restored_ = false;
  // ICMP errors are rate limited (RFC 1812 4.3.2.8): a token bucket refilled every tick.
  std::uint32_t icmp_tokens_ = 0;
  std::uint64_t icmp_refilled_ms_ = 0;
  // What publish_table_counters() last added, of each table's own counts.
  struct TableCounts {
    std::uint64_t arp_evicted = 0;
    std::uint64_t arp_refused = 0;
    std::uint64_t fragment_no_slot = 0;
    std::uint64_t fragment_timeouts = 0;
  } published_{};

  struct Counters {
    NamedCounter* frames_in;
    NamedCounter* frames_out;
    NamedCounter* wire_errors[8];  // by WireError, for Ethernet/IPv4/ARP/ICMP/UDP
    NamedCounter* not_ipv4;
    NamedCounter* not_for_us;
    NamedCounter* ttl_zero;
    NamedCounter* arp_requests_in;
    NamedCounter* arp_replies_in;
    NamedCounter* arp_not_for_us;
    NamedCounter* arp_requests_out;
    NamedCounter* arp_unresolved;
    NamedCounter* arp_queue_full;
    NamedCounter* fragments_in;
    NamedCounter* fragments_reassembled;
    NamedCounter* fragment_overlaps;
    NamedCounter* fragment_drops;
    NamedCounter* fragment_no_slot;   // a new datagram while every reassembly slot was busy
    NamedCounter* fragment_timeouts;  // datagrams never completed
    NamedCounter* fragments_pending;  // now: reassembly slots in use (a level, not a count)
    NamedCounter* arp_entries;        // now: entries in the ARP cache (a level, not a count)
    NamedCounter* arp_evicted;        // unused entries pushed out to make room
    NamedCounter* arp_refused;        // entries not created: not addressed to us, or no room
    NamedCounter* echo_replies;
    NamedCounter* port_unreachable_sent;
    NamedCounter* icmp_rate_limited;
    NamedCounter* no_listener;
    NamedCounter* filter_blocked_in;
    NamedCounter* filter_blocked_out;
    NamedCounter* filter_queue_full;
    NamedCounter* filter_stale_verdicts;
    NamedCounter* filter_resubmitted;
    NamedCounter* filter_cache_hits;  // passed on a cached verdict, without asking the filter
    NamedCounter* verdicts_restored;
    NamedCounter* delivered;
    NamedCounter* delivered_locally;  // sent to our own address: turned around without the driver
    NamedCounter* deliver_refused;
    NamedCounter* transport_bad;
    NamedCounter* no_route;
    NamedCounter* too_big;
    NamedCounter* no_buffer;
    NamedCounter* driver_refused;
    NamedCounter* bindings_refused;
    NamedCounter* tcp_to_replica;
    NamedCounter* tcp_no_replica;
    NamedCounter* tcp_replicas_announced;
    NamedCounter* tcp_flows_kept;   // marked unconfirmed by a replica's `recovering`
    NamedCounter* tcp_flows_swept;  // dropped at `recovered`: not claimed again
    NamedCounter* unknown_protocol;
  } counters_{};
};

}  // namespace flotilla::ip
