// IpServer driven with plain calls: frames built with the wire helpers go in, and a fake IpOutputs
// records what comes out (frames to the driver, verdict requests to the filter, packets delivered
// to transports). A real BufferPool checks the buffer accounting of every test: at the end each
// buffer is free or held by IP itself (waiting, or in its private cache), and no handle was ever
// refused by the pool (no double free, no use after hand-off).
#include "components/ip/ip_server.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string_view>
#include <vector>

#include "components/ip/tests/test_region.hpp"
#include "components/wire/arp.hpp"
#include "components/wire/checksum.hpp"
#include "components/wire/ethernet.hpp"
#include "components/wire/icmp.hpp"
#include "components/wire/ipv4.hpp"
#include "components/wire/tcp.hpp"
#include "components/wire/udp.hpp"

namespace flotilla::ip {
namespace {

using Bytes = std::vector<std::byte>;
using testing::TestRegion;

constexpr ComponentId kIp = 2;
constexpr ComponentId kPeer = 3;       // the driver, and whoever takes what IP sends
constexpr ComponentId kUdpOwner = 5;   // a transport that claims ports
constexpr ComponentId kIntruder = 6;   // a transport that claims nothing
constexpr std::uint32_t kPoolBuffers = 256;
constexpr std::uint16_t kFrameOffset = 64;  // where the fake driver puts a frame in its buffer

constexpr std::uint32_t kOurAddress = 0x0a4d0002;   // 10.77.0.2/24
constexpr std::uint32_t kPeerAddress = 0x0a4d0001;  // 10.77.0.1, on link
constexpr std::uint32_t kOtherOnLink = 0x0a4d0009;  // 10.77.0.9, never answers ARP
constexpr std::uint32_t kGateway = 0x0a4d00fe;      // 10.77.0.254
constexpr std::uint32_t kFarAway = 0xc0000207;      // 192.0.2.7, behind the gateway
constexpr wire::MacAddress kOurMac{0x02, 0x00, 0x0a, 0x4d, 0x00, 0x02};
constexpr wire::MacAddress kPeerMac{0x02, 0x00, 0x0a, 0x4d, 0x00, 0x01};
constexpr wire::MacAddress kGatewayMac{0x02, 0x00, 0x0a, 0x4d, 0x00, 0xfe};
constexpr wire::MacAddress kZeroMac{};
constexpr std::uint64_t kStartMs = 100'000;

// ---- packet builders ----

Bytes pattern(std::size_t length, std::uint8_t seed) {
  Bytes out(length);
  for (std::size_t i = 0; i < length; ++i) out[i] = std::byte{static_cast<std::uint8_t>(seed + i * 7)};
  return out;
}

Bytes ethernet_frame(const wire::MacAddress& destination, const wire::MacAddress& source,
                     std::uint16_t ethertype, std::span<const std::byte> payload) {
  Bytes out(wire::kEthernetHeaderBytes + payload.size());
  EXPECT_EQ(wire::emit_ethernet_header(out, destination, source, ethertype), wire::kEthernetHeaderBytes);
  std::copy(payload.begin(), payload.end(), out.begin() + wire::kEthernetHeaderBytes);
  return out;
}

Bytes ipv4_packet(std::uint32_t source, std::uint32_t destination, std::uint8_t protocol,
                  std::span<const std::byte> payload, std::uint16_t identification = 7) {
  Bytes out(wire::kIpv4HeaderBytes + payload.size());
  std::copy(payload.begin(), payload.end(), out.begin() + wire::kIpv4HeaderBytes);
  const wire::Ipv4Header header{.source = source,
                                .destination = destination,
                                .protocol = protocol,
                                .ttl = 64,
                                .tos = 0,
                                .identification = identification,
                                .dont_fragment = false,
                                .payload_length = static_cast<std::uint16_t>(payload.size())};
  EXPECT_EQ(wire::emit_ipv4_header(out, header), wire::kIpv4HeaderBytes);
  return out;
}

Bytes udp_datagram(std::uint16_t source_port, std::uint16_t destination_port, std::uint32_t source,
                   std::uint32_t destination, std::span<const std::byte> payload) {
  Bytes out(wire::kUdpHeaderBytes + payload.size());
  std::copy(payload.begin(), payload.end(), out.begin() + wire::kUdpHeaderBytes);
  EXPECT_EQ(wire::emit_udp(out, source_port, destination_port, source, destination, payload.size()),
            out.size());
  return out;
}

Bytes echo_request(std::uint16_t identifier, std::uint16_t sequence, std::span<const std::byte> data) {
  Bytes out(wire::kIcmpHeaderBytes + data.size());
  wire::store_u8(out, 0, wire::kIcmpEchoRequest);
  wire::store_be16(out, 4, identifier);
  wire::store_be16(out, 6, sequence);
  std::copy(data.begin(), data.end(), out.begin() + wire::kIcmpHeaderBytes);
  wire::store_be16(out, 2, wire::internet_checksum(out));
  return out;
}

Bytes arp_packet(std::uint16_t operation, const wire::MacAddress& sender_mac, std::uint32_t sender,
                 const wire::MacAddress& target_mac, std::uint32_t target) {
  Bytes out(wire::kArpPacketBytes);
  EXPECT_EQ(wire::emit_arp(out, operation, sender_mac, sender, target_mac, target), out.size());
  return out;
}

Bytes ipv4_frame(std::span<const std::byte> ip_packet) {
  return ethernet_frame(kOurMac, kPeerMac, wire::kEtherTypeIpv4, ip_packet);
}

Bytes udp_frame_to_us(std::uint16_t local_port, std::span<const std::byte> payload) {
  return ipv4_frame(ipv4_packet(kPeerAddress, kOurAddress, wire::kProtocolUdp,
                                udp_datagram(4000, local_port, kPeerAddress, kOurAddress, payload)));
}

// ---- the fake outputs ----

struct Delivery {
  ComponentId owner;
  stack::TransportPacketBody body;
  Bytes segment;
};

// Takes what IP sends the way a peer process would (hand-off to kPeer), keeps a copy of the bytes,
// and frees the buffer at once, like a driver after transmitting.
class FakeOutputs final : public IpOutputs {
 public:
  explicit FakeOutputs(BufferPool& pool) : pool_(pool) {}

  bool send_frame(const BufferHandle& frame) override {
    if (!accept_frames) return false;
    frames.push_back(take(frame));
    return true;
  }
  bool has_filter() const override { return filter; }
  bool request_verdict(const stack::VerdictRequestBody& request) override {
    ++verdict_attempts;
    if (!accept_verdicts) return false;
    // The filter only reads; IP still holds the buffer, parked while it waits for the verdict.
    auto bytes = pool_.bytes(parked_owner(kIp), request.packet);
    EXPECT_TRUE(bytes.ok()) << "verdict request names a buffer IP does not hold";
    verdict_requests.push_back(request);
    verdict_packets.push_back(bytes.ok() ? Bytes(bytes->begin(), bytes->end()) : Bytes{});
    return true;
  }
  bool deliver(ComponentId owner, const stack::TransportPacketBody& packet) override {
    if (!accept_deliveries) return false;
    deliveries.push_back(Delivery{owner, packet, take(packet.segment)});
    return true;
  }

  bool filter = false;
  bool accept_frames = true;
  bool accept_verdicts = true;
  bool accept_deliveries = true;
  std::vector<Bytes> frames;
  std::vector<stack::VerdictRequestBody> verdict_requests;
  std::vector<Bytes> verdict_packets;  // the bytes each request named, when it was made
  std::size_t verdict_attempts = 0;
  std::vector<Delivery> deliveries;

 private:
  Bytes take(const BufferHandle& handle) {
    auto bytes = pool_.bytes(kIp, handle);
    EXPECT_TRUE(bytes.ok()) << "IP passed on a buffer it does not hold";
    if (!bytes) return {};
    Bytes copy(bytes->begin(), bytes->end());
    EXPECT_TRUE(pool_.hand_off(handle, kIp, kPeer).ok());
    EXPECT_TRUE(pool_.free(kPeer, handle).ok());
    return copy;
  }

  BufferPool& pool_;
};

stack::VerdictBody verdict_for(const stack::VerdictRequestBody& request, stack::Action action) {
  return stack::VerdictBody{.ticket = request.ticket,
                            .action = action,
                            .flags = 0,
                            .rule = 0,
                            .packet_generation = request.packet.generation};
}

// ---- checks on what came out ----

// An IPv4 frame from us to `mac`; returns the packet view (checksum verified by parse).
wire::Ipv4Packet expect_ipv4_frame(Bytes& frame, const wire::MacAddress& mac) {
  auto ethernet = wire::EthernetFrame::parse(frame);
  EXPECT_TRUE(ethernet.ok());
  EXPECT_EQ(ethernet->destination(), mac);
  EXPECT_EQ(ethernet->source(), kOurMac);
  EXPECT_EQ(ethernet->ethertype(), wire::kEtherTypeIpv4);
  auto packet = wire::Ipv4Packet::parse(ethernet->payload());
  EXPECT_TRUE(packet.ok()) << "bad IPv4 header in a frame IP sent";
  EXPECT_EQ(packet->total_length(), frame.size() - wire::kEthernetHeaderBytes);
  return packet.value();
}

void expect_arp_request_for(Bytes& frame, std::uint32_t address) {
  auto ethernet = wire::EthernetFrame::parse(frame);
  ASSERT_TRUE(ethernet.ok());
  EXPECT_EQ(ethernet->destination(), wire::kBroadcastMac);
  EXPECT_EQ(ethernet->source(), kOurMac);
  EXPECT_EQ(ethernet->ethertype(), wire::kEtherTypeArp);
  auto arp = wire::ArpPacket::parse(ethernet->payload());
  ASSERT_TRUE(arp.ok());
  EXPECT_EQ(arp->operation(), wire::kArpRequest);
  EXPECT_EQ(arp->sender_mac(), kOurMac);
  EXPECT_EQ(arp->sender_address(), kOurAddress);
  EXPECT_EQ(arp->target_mac(), kZeroMac);
  EXPECT_EQ(arp->target_address(), address);
}

// ---- the fixture ----

class IpServerTest : public ::testing::Test {
 protected:
  IpServerTest() : pool_(make_pool()), outputs_(pool_), region_(IpServer::state_bytes_needed()) {}

  // Buffers IP holds: its own and those it parked while they wait for a verdict.
  std::size_t ip_owned() const { return pool_.count_owned(kIp) + pool_.count_owned(parked_owner(kIp)); }

  static BufferPool make_pool() {
    auto pool = BufferPool::create(1, 2048, kPoolBuffers);
    if (!pool) std::abort();  // nothing to test without a pool
    return std::move(pool).value();
  }

  void SetUp() override {
    pool_.set_counters(&pool_counters_);
    start_server();
    ASSERT_NE(server_, nullptr);
    EXPECT_FALSE(server_->restored());
    server_->on_link_info(link());
    server_->on_tick(now_);  // the first tick fills the ICMP error budget
  }

  void TearDown() override {
    // Every buffer is free or IP's own (waiting for a verdict or ARP, or in its cache); the fake
    // peer frees everything it takes, and no handle was ever refused.
    EXPECT_EQ(pool_.count_owned(kPeer), 0u);
    EXPECT_EQ(pool_.count_owned(kUdpOwner), 0u);
    EXPECT_EQ(pool_.count_owned(kIntruder), 0u);
    if (server_ != nullptr) {
      EXPECT_EQ(ip_owned(), server_->buffers_held());
    }
    EXPECT_EQ(pool_.count_free() + ip_owned(), kPoolBuffers);
    EXPECT_EQ(pool_counters_.read(Counter::bad_handles), 0u) << "the pool refused a handle";
  }

  void start_server() {
    const IpSettings settings{.address = kOurAddress, .prefix_length = 24, .gateway = kGateway};
    auto created = IpServer::create(pool_, kIp, region_.bytes(), settings, outputs_, counters_);
    ASSERT_TRUE(created.ok()) << created.error().message();
    server_ = std::move(created).value();
  }

  static stack::LinkInfoBody link() {
    stack::LinkInfoBody body{};
    std::memcpy(body.mac, kOurMac.data(), 6);
    body.mtu = 1500;
    return body;
  }

  // A buffer `owner` filled with `bytes` at `offset`, then handed to IP.
  BufferHandle give_to_ip(ComponentId owner, std::span<const std::byte> bytes, std::uint16_t offset) {
    BufferHandle handle;
    EXPECT_EQ(pool_.alloc_burst(owner, std::span(&handle, 1)), 1u);
    handle.offset = offset;
    handle.length = static_cast<std::uint16_t>(bytes.size());
    auto data = pool_.bytes(owner, handle);
    EXPECT_TRUE(data.ok());
    if (data) std::copy(bytes.begin(), bytes.end(), data->begin());
    EXPECT_TRUE(pool_.hand_off(handle, owner, kIp).ok());
    return handle;
  }

  BufferHandle inject_frame(std::span<const std::byte> frame) {
    const BufferHandle handle = give_to_ip(kPeer, frame, kFrameOffset);
    server_->on_frame(handle, now_);
    return handle;
  }

  // A UDP segment from transport `from`, with the headroom transports leave.
  void send_from_transport(ComponentId from, std::uint16_t local_port, std::uint32_t remote,
                           std::uint16_t remote_port, std::span<const std::byte> payload,
                           std::uint16_t offset = stack::kHeadroom) {
    const Bytes segment = udp_datagram(local_port, remote_port, kOurAddress, remote, payload);
    const stack::TransportPacketBody body{.segment = give_to_ip(from, segment, offset),
                                          .remote_address = remote,
                                          .local_address = kOurAddress,
                                          .remote_port = remote_port,
                                          .local_port = local_port,
                                          .protocol = wire::kProtocolUdp,
                                          .reserved = {}};
    server_->on_transport_packet(from, body, now_);
  }

  void claim(ComponentId owner, std::uint16_t port) {
    server_->on_port_binding(owner, stack::PortBindingBody{wire::kProtocolUdp,
                                                           stack::BindingChange::claim, port});
  }

  // The peer asks for our MAC: IP answers and learns the peer's. Forgets the answer.
  void learn_peer() {
    inject_frame(ethernet_frame(wire::kBroadcastMac, kPeerMac, wire::kEtherTypeArp,
                                arp_packet(wire::kArpRequest, kPeerMac, kPeerAddress, kZeroMac,
                                           kOurAddress)));
    ASSERT_EQ(outputs_.frames.size(), 1u);
    outputs_.frames.clear();
  }

  // A named counter IP registered (a name it does not use fails the test, not reads 0).
  std::uint64_t count(std::string_view name) const {
    for (std::size_t i = 0; i < counters_.published(); ++i) {
      if (std::string_view(counters_.entries[i].name) == name) return counters_.entries[i].read();
    }
    ADD_FAILURE() << "no counter named " << name;
    return 0;
  }

  BufferPool pool_;
  CounterBlock pool_counters_{};
  FakeOutputs outputs_;
  NamedCounterTable counters_{};
  TestRegion region_;
  std::unique_ptr<IpServer> server_;
  std::uint64_t now_ = kStartMs;
};

// ---- ARP ----

TEST_F(IpServerTest, ArpRequestForUsIsAnsweredAndTheSenderLearned) {
  const Bytes request = ethernet_frame(wire::kBroadcastMac, kPeerMac, wire::kEtherTypeArp,
                                       arp_packet(wire::kArpRequest, kPeerMac, kPeerAddress,
                                                  kZeroMac, kOurAddress));
  inject_frame(request);
  ASSERT_EQ(outputs_.frames.size(), 1u);
  auto ethernet = wire::EthernetFrame::parse(outputs_.frames[0]);
  ASSERT_TRUE(ethernet.ok());
  EXPECT_EQ(ethernet->destination(), kPeerMac);
  EXPECT_EQ(ethernet->source(), kOurMac);
  EXPECT_EQ(ethernet->ethertype(), wire::kEtherTypeArp);
  auto reply = wire::ArpPacket::parse(ethernet->payload());
  ASSERT_TRUE(reply.ok());
  EXPECT_EQ(reply->operation(), wire::kArpReply);
  EXPECT_EQ(reply->sender_mac(), kOurMac);
  EXPECT_EQ(reply->sender_address(), kOurAddress);
  EXPECT_EQ(reply->target_mac(), kPeerMac);
  EXPECT_EQ(reply->target_address(), kPeerAddress);
  EXPECT_EQ(count("arp_requests_in"), 1u);

  // The sender was learned: a packet to it goes straight out, no ARP request first.
  claim(kUdpOwner, 5000);
  send_from_transport(kUdpOwner, 5000, kPeerAddress, 4000, pattern(10, 1));
  ASSERT_EQ(outputs_.frames.size(), 2u);
  auto packet = expect_ipv4_frame(outputs_.frames[1], kPeerMac);
  EXPECT_EQ(packet.destination(), kPeerAddress);
  EXPECT_EQ(count("arp_requests_out"), 0u);
}

TEST_F(IpServerTest, ArpRequestForAnotherAddressIsNotAnswered) {
  inject_frame(ethernet_frame(wire::kBroadcastMac, kPeerMac, wire::kEtherTypeArp,
                              arp_packet(wire::kArpRequest, kPeerMac, kPeerAddress, kZeroMac,
                                         kOtherOnLink)));
  EXPECT_TRUE(outputs_.frames.empty());
  EXPECT_EQ(count("arp_not_for_us"), 1u);
  // Not addressed to us, so nothing was learned either (RFC 826): a packet to the peer needs ARP.
  claim(kUdpOwner, 5000);
  send_from_transport(kUdpOwner, 5000, kPeerAddress, 4000, pattern(10, 1));
  ASSERT_EQ(outputs_.frames.size(), 1u);
  expect_arp_request_for(outputs_.frames[0], kPeerAddress);
}

TEST_F(IpServerTest, OutboundPacketWaitsForArpAndTheReplyReleasesIt) {
  claim(kUdpOwner, 5000);
  const Bytes payload = pattern(32, 9);
  send_from_transport(kUdpOwner, 5000, kPeerAddress, 4000, payload);
  ASSERT_EQ(outputs_.frames.size(), 1u);
  expect_arp_request_for(outputs_.frames[0], kPeerAddress);
  EXPECT_EQ(count("arp_requests_out"), 1u);
  const std::size_t cached = server_->buffers_held();

  // A second packet for the same address waits too, without a second request this soon.
  send_from_transport(kUdpOwner, 5000, kPeerAddress, 4000, payload);
  EXPECT_EQ(outputs_.frames.size(), 1u);
  EXPECT_EQ(server_->buffers_held(), cached + 1);

  now_ += 10;
  inject_frame(ethernet_frame(kOurMac, kPeerMac, wire::kEtherTypeArp,
                              arp_packet(wire::kArpReply, kPeerMac, kPeerAddress, kOurMac,
                                         kOurAddress)));
  EXPECT_EQ(count("arp_replies_in"), 1u);
  ASSERT_EQ(outputs_.frames.size(), 3u);
  for (std::size_t i = 1; i < 3; ++i) {
    auto packet = expect_ipv4_frame(outputs_.frames[i], kPeerMac);
    EXPECT_EQ(packet.source(), kOurAddress);
    EXPECT_EQ(packet.destination(), kPeerAddress);
    EXPECT_EQ(packet.protocol(), wire::kProtocolUdp);
    EXPECT_EQ(packet.ttl(), 64);
    EXPECT_TRUE(packet.dont_fragment());
    auto udp = wire::UdpDatagram::parse(packet.payload(), kOurAddress, kPeerAddress);
    ASSERT_TRUE(udp.ok());
    EXPECT_EQ(udp->source_port(), 5000);
    EXPECT_EQ(udp->destination_port(), 4000);
    EXPECT_TRUE(std::equal(payload.begin(), payload.end(), udp->payload().begin(), udp->payload().end()));
  }
  // The two packets are distinct datagrams.
  EXPECT_NE(wire::Ipv4Packet::parse(wire::EthernetFrame::parse(outputs_.frames[1])->payload())->identification(),
            wire::Ipv4Packet::parse(wire::EthernetFrame::parse(outputs_.frames[2])->payload())->identification());
}

TEST_F(IpServerTest, GratuitousArpAlsoReleasesWaitingPackets) {
  claim(kUdpOwner, 5000);
  send_from_transport(kUdpOwner, 5000, kPeerAddress, 4000, pattern(8, 1));
  ASSERT_EQ(outputs_.frames.size(), 1u);
  expect_arp_request_for(outputs_.frames[0], kPeerAddress);
  // The peer announces itself (target = sender) instead of answering: not addressed to us, but
  // it updates the entry we are resolving (RFC 826), so what waits for it can go.
  now_ += 5;
  inject_frame(ethernet_frame(wire::kBroadcastMac, kPeerMac, wire::kEtherTypeArp,
                              arp_packet(wire::kArpRequest, kPeerMac, kPeerAddress, kZeroMac,
                                         kPeerAddress)));
  EXPECT_EQ(count("arp_not_for_us"), 1u);
  ASSERT_EQ(outputs_.frames.size(), 2u);
  auto packet = expect_ipv4_frame(outputs_.frames[1], kPeerMac);
  EXPECT_EQ(packet.destination(), kPeerAddress);
}

TEST_F(IpServerTest, OffLinkPacketGoesToTheGatewaysMac) {
  claim(kUdpOwner, 5000);
  send_from_transport(kUdpOwner, 5000, kFarAway, 53, pattern(12, 2));
  ASSERT_EQ(outputs_.frames.size(), 1u);
  expect_arp_request_for(outputs_.frames[0], kGateway);
  inject_frame(ethernet_frame(kOurMac, kGatewayMac, wire::kEtherTypeArp,
                              arp_packet(wire::kArpReply, kGatewayMac, kGateway, kOurMac, kOurAddress)));
  ASSERT_EQ(outputs_.frames.size(), 2u);
  auto packet = expect_ipv4_frame(outputs_.frames[1], kGatewayMac);
  EXPECT_EQ(packet.destination(), kFarAway);
}

TEST_F(IpServerTest, ArpGiveUpDropsTheWaitingPackets) {
  claim(kUdpOwner, 5000);
  send_from_transport(kUdpOwner, 5000, kOtherOnLink, 4000, pattern(16, 3));
  send_from_transport(kUdpOwner, 5000, kOtherOnLink, 4000, pattern(16, 4));
  ASSERT_EQ(outputs_.frames.size(), 1u);
  expect_arp_request_for(outputs_.frames[0], kOtherOnLink);
  const std::size_t held = server_->buffers_held();

  // A second of silence: the tick asks again (the first request may have been lost).
  server_->on_tick(now_ + 1000);
  EXPECT_EQ(count("arp_unresolved"), 0u);
  EXPECT_EQ(server_->buffers_held(), held - 1);  // the packets still wait; the retry's buffer left
  ASSERT_EQ(outputs_.frames.size(), 2u);
  expect_arp_request_for(outputs_.frames[1], kOtherOnLink);
  server_->on_tick(now_ + 3001);
  EXPECT_EQ(count("arp_unresolved"), 2u);
  // Both buffers went back (to IP's cache): none is waiting any more.
  EXPECT_EQ(ip_owned(), server_->buffers_held());
  // Only ARP requests were sent; nothing for the dropped packets.
  for (std::size_t i = 0; i < outputs_.frames.size(); ++i) expect_arp_request_for(outputs_.frames[i], kOtherOnLink);
  const std::size_t sent = outputs_.frames.size();
  // A late reply finds nothing to release.
  now_ += 3002;
  inject_frame(ethernet_frame(kOurMac, kPeerMac, wire::kEtherTypeArp,
                              arp_packet(wire::kArpReply, kPeerMac, kOtherOnLink, kOurMac, kOurAddress)));
  EXPECT_EQ(outputs_.frames.size(), sent);
}

// ---- ICMP echo ----

TEST_F(IpServerTest, EchoRequestIsAnsweredWithoutAFilter) {
  learn_peer();
  const Bytes data = pattern(56, 0x30);
  const Bytes request = ipv4_packet(kPeerAddress, kOurAddress, wire::kProtocolIcmp,
                                    echo_request(0x1234, 9, data));
  inject_frame(ipv4_frame(request));
  EXPECT_TRUE(outputs_.verdict_requests.empty());
  ASSERT_EQ(outputs_.frames.size(), 1u);
  auto packet = expect_ipv4_frame(outputs_.frames[0], kPeerMac);
  EXPECT_EQ(packet.source(), kOurAddress);
  EXPECT_EQ(packet.destination(), kPeerAddress);
  EXPECT_EQ(packet.protocol(), wire::kProtocolIcmp);
  EXPECT_EQ(packet.header_length(), wire::kIpv4HeaderBytes);
  auto icmp = wire::IcmpPacket::parse(packet.payload());
  ASSERT_TRUE(icmp.ok()) << "echo reply checksum";
  EXPECT_EQ(icmp->type(), wire::kIcmpEchoReply);
  EXPECT_EQ(icmp->code(), 0);
  EXPECT_EQ(icmp->identifier(), 0x1234);
  EXPECT_EQ(icmp->sequence(), 9);
  EXPECT_TRUE(std::equal(data.begin(), data.end(), icmp->payload().begin(), icmp->payload().end()));
  EXPECT_EQ(count("echo_replies"), 1u);
}

TEST_F(IpServerTest, EchoRequestWithIpOptionsIsAnsweredWithoutThem) {
  learn_peer();
  const Bytes data = pattern(20, 0x40);
  const Bytes icmp_request = echo_request(7, 1, data);
  // A 24-byte header: one 4-byte option (NOP, NOP, NOP, end of list).
  Bytes request(24 + icmp_request.size());
  std::copy(icmp_request.begin(), icmp_request.end(), request.begin() + 24);
  ASSERT_EQ(wire::emit_ipv4_header(request, {.source = kPeerAddress,
                                             .destination = kOurAddress,
                                             .protocol = wire::kProtocolIcmp,
                                             .identification = 3,
                                             .payload_length = static_cast<std::uint16_t>(icmp_request.size() + 4)}),
            20u);
  request[0] = std::byte{0x46};
  request[20] = request[21] = request[22] = std::byte{1};
  request[23] = std::byte{0};
  wire::Ipv4Packet::unchecked(request).fill_checksum();
  ASSERT_TRUE(wire::Ipv4Packet::parse(request).ok());

  inject_frame(ipv4_frame(request));
  ASSERT_EQ(outputs_.frames.size(), 1u);
  auto packet = expect_ipv4_frame(outputs_.frames[0], kPeerMac);
  EXPECT_EQ(packet.header_length(), wire::kIpv4HeaderBytes);
  auto icmp = wire::IcmpPacket::parse(packet.payload());
  ASSERT_TRUE(icmp.ok());
  EXPECT_EQ(icmp->type(), wire::kIcmpEchoReply);
  EXPECT_TRUE(std::equal(data.begin(), data.end(), icmp->payload().begin(), icmp->payload().end()));
}

TEST_F(IpServerTest, EchoWithAFilterWaitsForBothVerdicts) {
  learn_peer();
  outputs_.filter = true;
  const Bytes data = pattern(32, 0x50);
  const Bytes request = ipv4_packet(kPeerAddress, kOurAddress, wire::kProtocolIcmp,
                                    echo_request(1, 2, data));
  const BufferHandle frame = inject_frame(ipv4_frame(request));
  ASSERT_EQ(outputs_.verdict_requests.size(), 1u);
  const auto inbound = outputs_.verdict_requests[0];
  EXPECT_EQ(inbound.direction, stack::Direction::in);
  EXPECT_EQ(inbound.packet.index, frame.index);
  EXPECT_EQ(inbound.packet.offset, kFrameOffset + wire::kEthernetHeaderBytes);
  EXPECT_EQ(outputs_.verdict_packets[0], request);  // the filter sees the IPv4 packet, nothing else
  EXPECT_TRUE(outputs_.frames.empty());
  EXPECT_EQ(server_->pending_verdicts(), 1u);

  server_->on_verdict(verdict_for(inbound, stack::Action::pass), now_);
  ASSERT_EQ(outputs_.verdict_requests.size(), 2u);
  const auto outbound = outputs_.verdict_requests[1];
  EXPECT_EQ(outbound.direction, stack::Direction::out);
  EXPECT_NE(outbound.ticket, inbound.ticket);
  auto reply = wire::Ipv4Packet::parse(outputs_.verdict_packets[1]);
  ASSERT_TRUE(reply.ok());
  EXPECT_EQ(reply->destination(), kPeerAddress);
  EXPECT_TRUE(outputs_.frames.empty()) << "the reply left before the filter passed it";

  server_->on_verdict(verdict_for(outbound, stack::Action::pass), now_);
  ASSERT_EQ(outputs_.frames.size(), 1u);
  auto packet = expect_ipv4_frame(outputs_.frames[0], kPeerMac);
  auto icmp = wire::IcmpPacket::parse(packet.payload());
  ASSERT_TRUE(icmp.ok());
  EXPECT_EQ(icmp->type(), wire::kIcmpEchoReply);
  EXPECT_TRUE(std::equal(data.begin(), data.end(), icmp->payload().begin(), icmp->payload().end()));
  EXPECT_EQ(server_->pending_verdicts(), 0u);
}

TEST_F(IpServerTest, BlockedPacketsAreDroppedAndCounted) {
  learn_peer();
  outputs_.filter = true;
  const Bytes request = ipv4_packet(kPeerAddress, kOurAddress, wire::kProtocolIcmp,
                                    echo_request(1, 2, pattern(8, 1)));
  inject_frame(ipv4_frame(request));
  ASSERT_EQ(outputs_.verdict_requests.size(), 1u);
  server_->on_verdict(verdict_for(outputs_.verdict_requests[0], stack::Action::block), now_);
  EXPECT_EQ(count("filter_blocked_in"), 1u);
  EXPECT_EQ(count("echo_replies"), 0u);
  EXPECT_EQ(server_->pending_verdicts(), 0u);

  // Passed in, blocked out.
  inject_frame(ipv4_frame(request));
  ASSERT_EQ(outputs_.verdict_requests.size(), 2u);
  server_->on_verdict(verdict_for(outputs_.verdict_requests[1], stack::Action::pass), now_);
  ASSERT_EQ(outputs_.verdict_requests.size(), 3u);
  server_->on_verdict(verdict_for(outputs_.verdict_requests[2], stack::Action::block), now_);
  EXPECT_EQ(count("filter_blocked_out"), 1u);
  EXPECT_TRUE(outputs_.frames.empty());
  EXPECT_EQ(server_->pending_verdicts(), 0u);
}

TEST_F(IpServerTest, StaleVerdictsChangeNothing) {
  learn_peer();
  outputs_.filter = true;
  inject_frame(ipv4_frame(ipv4_packet(kPeerAddress, kOurAddress, wire::kProtocolIcmp,
                                      echo_request(1, 2, pattern(8, 1)))));
  ASSERT_EQ(outputs_.verdict_requests.size(), 1u);
  const auto request = outputs_.verdict_requests[0];

  auto wrong_ticket = verdict_for(request, stack::Action::pass);
  wrong_ticket.ticket += 1;
  server_->on_verdict(wrong_ticket, now_);
  auto same_slot = verdict_for(request, stack::Action::block);  // same slot, other ticket
  same_slot.ticket += IpServer::kMaxPendingVerdicts;
  server_->on_verdict(same_slot, now_);
  auto wrong_generation = verdict_for(request, stack::Action::block);
  wrong_generation.packet_generation += 1;
  server_->on_verdict(wrong_generation, now_);
  EXPECT_EQ(count("filter_stale_verdicts"), 3u);
  EXPECT_EQ(server_->pending_verdicts(), 1u);
  EXPECT_EQ(outputs_.verdict_requests.size(), 1u);
  EXPECT_TRUE(outputs_.frames.empty());
  EXPECT_EQ(count("filter_blocked_in"), 0u);

  // The right answer still works, once.
  server_->on_verdict(verdict_for(request, stack::Action::pass), now_);
  EXPECT_EQ(outputs_.verdict_requests.size(), 2u);
  server_->on_verdict(verdict_for(request, stack::Action::pass), now_);
  EXPECT_EQ(count("filter_stale_verdicts"), 4u);
  EXPECT_EQ(outputs_.verdict_requests.size(), 2u);
  EXPECT_EQ(server_->pending_verdicts(), 1u);  // the reply's request
}

TEST_F(IpServerTest, FilterRestartResubmitsEveryPendingRequest) {
  learn_peer();
  outputs_.filter = true;
  for (std::uint16_t sequence = 0; sequence < 3; ++sequence) {
    inject_frame(ipv4_frame(ipv4_packet(kPeerAddress, kOurAddress, wire::kProtocolIcmp,
                                        echo_request(1, sequence, pattern(8, 1)))));
  }
  ASSERT_EQ(outputs_.verdict_requests.size(), 3u);
  server_->on_filter_restarted();
  ASSERT_EQ(outputs_.verdict_requests.size(), 6u);
  EXPECT_EQ(count("filter_resubmitted"), 3u);
  std::vector<std::uint32_t> first, again;
  for (std::size_t i = 0; i < 3; ++i) {
    first.push_back(outputs_.verdict_requests[i].ticket);
    again.push_back(outputs_.verdict_requests[3 + i].ticket);
    EXPECT_EQ(outputs_.verdict_requests[3 + i].direction, stack::Direction::in);
  }
  std::sort(first.begin(), first.end());
  std::sort(again.begin(), again.end());
  EXPECT_EQ(first, again);
  // The new filter's answers are accepted: three echo requests become three outbound requests.
  for (std::size_t i = 3; i < 6; ++i) {
    server_->on_verdict(verdict_for(outputs_.verdict_requests[i], stack::Action::pass), now_);
  }
  EXPECT_EQ(outputs_.verdict_requests.size(), 9u);
  EXPECT_EQ(count("echo_replies"), 3u);
  EXPECT_EQ(count("filter_stale_verdicts"), 0u);
}

TEST_F(IpServerTest, UnansweredVerdictRequestIsAskedAgain) {
  learn_peer();
  outputs_.filter = true;
  inject_frame(ipv4_frame(ipv4_packet(kPeerAddress, kOurAddress, wire::kProtocolIcmp,
                                      echo_request(1, 2, pattern(8, 1)))));
  ASSERT_EQ(outputs_.verdict_requests.size(), 1u);
  server_->on_tick(now_ + IpServer::kVerdictRetryMs - 1);
  EXPECT_EQ(outputs_.verdict_requests.size(), 1u);
  server_->on_tick(now_ + IpServer::kVerdictRetryMs);
  ASSERT_EQ(outputs_.verdict_requests.size(), 2u);
  EXPECT_EQ(outputs_.verdict_requests[1].ticket, outputs_.verdict_requests[0].ticket);
  EXPECT_EQ(count("filter_resubmitted"), 1u);
  // The answer to either copy is the answer.
  server_->on_verdict(verdict_for(outputs_.verdict_requests[1], stack::Action::block), now_);
  EXPECT_EQ(count("filter_blocked_in"), 1u);
  EXPECT_EQ(server_->pending_verdicts(), 0u);
}

TEST_F(IpServerTest, VerdictRequestThatFoundNoRoomIsSentOnTheNextTick) {
  learn_peer();
  outputs_.filter = true;
  outputs_.accept_verdicts = false;
  inject_frame(ipv4_frame(ipv4_packet(kPeerAddress, kOurAddress, wire::kProtocolIcmp,
                                      echo_request(1, 2, pattern(8, 1)))));
  EXPECT_EQ(outputs_.verdict_attempts, 1u);
  EXPECT_EQ(server_->pending_verdicts(), 1u);
  outputs_.accept_verdicts = true;
  server_->on_tick(now_ + 1);
  ASSERT_EQ(outputs_.verdict_requests.size(), 1u);
  EXPECT_EQ(count("filter_resubmitted"), 0u);  // it had never been sent
  server_->on_verdict(verdict_for(outputs_.verdict_requests[0], stack::Action::pass), now_ + 1);
  EXPECT_EQ(outputs_.verdict_requests.size(), 2u);
}

// ---- UDP to and from transports ----

TEST_F(IpServerTest, UdpToAnUnclaimedPortGetsPortUnreachable) {
  learn_peer();
  const Bytes offending = ipv4_packet(kPeerAddress, kOurAddress, wire::kProtocolUdp,
                                     udp_datagram(4000, 6000, kPeerAddress, kOurAddress, pattern(30, 5)));
  inject_frame(ipv4_frame(offending));
  EXPECT_EQ(count("no_listener"), 1u);
  EXPECT_EQ(count("port_unreachable_sent"), 1u);
  EXPECT_TRUE(outputs_.deliveries.empty());
  ASSERT_EQ(outputs_.frames.size(), 1u);
  auto packet = expect_ipv4_frame(outputs_.frames[0], kPeerMac);
  EXPECT_EQ(packet.source(), kOurAddress);
  EXPECT_EQ(packet.destination(), kPeerAddress);
  EXPECT_EQ(packet.protocol(), wire::kProtocolIcmp);
  auto icmp = wire::IcmpPacket::parse(packet.payload());
  ASSERT_TRUE(icmp.ok()) << "ICMP checksum";
  EXPECT_EQ(icmp->type(), wire::kIcmpDestinationUnreachable);
  EXPECT_EQ(icmp->code(), wire::kIcmpPortUnreachable);
  EXPECT_EQ(icmp->rest_of_header(), 0u);
  // The quote: the offending IPv4 header and the first 8 bytes of its payload (the UDP header).
  const std::size_t quoted = wire::kIpv4HeaderBytes + 8;
  ASSERT_EQ(icmp->payload().size(), quoted);
  EXPECT_TRUE(std::equal(offending.begin(), offending.begin() + quoted, icmp->payload().begin()));
}

TEST_F(IpServerTest, NoPortUnreachableAboutALinkBroadcast) {
  learn_peer();
  // Unicast to our address but in a broadcast frame: RFC 1122 3.2.2 forbids the ICMP error.
  const Bytes packet = ipv4_packet(kPeerAddress, kOurAddress, wire::kProtocolUdp,
                                   udp_datagram(4000, 6000, kPeerAddress, kOurAddress, pattern(8, 5)));
  inject_frame(ethernet_frame(wire::kBroadcastMac, kPeerMac, wire::kEtherTypeIpv4, packet));
  EXPECT_EQ(count("no_listener"), 1u);
  EXPECT_EQ(count("port_unreachable_sent"), 0u);
  EXPECT_TRUE(outputs_.frames.empty());
  // The same datagram in a frame to our MAC is answered.
  inject_frame(ipv4_frame(packet));
  EXPECT_EQ(count("port_unreachable_sent"), 1u);
  EXPECT_EQ(outputs_.frames.size(), 1u);
}

TEST_F(IpServerTest, PortUnreachableIsRateLimited) {
  learn_peer();
  const Bytes frame = udp_frame_to_us(6000, pattern(4, 5));
  for (int i = 0; i < 101; ++i) inject_frame(frame);
  EXPECT_EQ(count("no_listener"), 101u);
  EXPECT_EQ(count("port_unreachable_sent"), 100u);
  EXPECT_EQ(count("icmp_rate_limited"), 1u);
  EXPECT_EQ(outputs_.frames.size(), 100u);
  server_->on_tick(now_ + 1000);  // a new second, a new budget
  inject_frame(frame);
  EXPECT_EQ(outputs_.frames.size(), 101u);
}

TEST_F(IpServerTest, ClaimedPortIsDeliveredToItsOwner) {
  claim(kUdpOwner, 5353);
  const Bytes payload = pattern(100, 0x11);
  const Bytes datagram = udp_datagram(4000, 5353, kPeerAddress, kOurAddress, payload);
  const BufferHandle frame = inject_frame(ipv4_frame(ipv4_packet(kPeerAddress, kOurAddress,
                                                                 wire::kProtocolUdp, datagram)));
  ASSERT_EQ(outputs_.deliveries.size(), 1u);
  const Delivery& delivery = outputs_.deliveries[0];
  EXPECT_EQ(delivery.owner, kUdpOwner);
  EXPECT_EQ(delivery.body.segment.index, frame.index);
  EXPECT_EQ(delivery.body.segment.offset, kFrameOffset + wire::kEthernetHeaderBytes + wire::kIpv4HeaderBytes);
  EXPECT_EQ(delivery.body.segment.length, datagram.size());
  EXPECT_EQ(delivery.segment, datagram);
  EXPECT_EQ(delivery.body.remote_address, kPeerAddress);
  EXPECT_EQ(delivery.body.local_address, kOurAddress);
  EXPECT_EQ(delivery.body.remote_port, 4000);
  EXPECT_EQ(delivery.body.local_port, 5353);
  EXPECT_EQ(delivery.body.protocol, wire::kProtocolUdp);
  EXPECT_EQ(count("delivered"), 1u);
  EXPECT_TRUE(outputs_.frames.empty());

  // Ethernet padding is not part of the segment.
  Bytes padded = udp_frame_to_us(5353, pattern(2, 0));
  const std::size_t unpadded = padded.size();
  padded.resize(60);
  inject_frame(padded);
  ASSERT_EQ(outputs_.deliveries.size(), 2u);
  EXPECT_EQ(outputs_.deliveries[1].body.segment.length,
            unpadded - wire::kEthernetHeaderBytes - wire::kIpv4HeaderBytes);
}

TEST_F(IpServerTest, RefusedDeliveryFreesTheBuffer) {
  claim(kUdpOwner, 5353);
  outputs_.accept_deliveries = false;
  inject_frame(udp_frame_to_us(5353, pattern(10, 1)));
  EXPECT_EQ(count("deliver_refused"), 1u);
  EXPECT_TRUE(outputs_.deliveries.empty());
}

TEST_F(IpServerTest, ReleasedPortIsNoLongerDelivered) {
  claim(kUdpOwner, 5353);
  // Only the owner can release it.
  server_->on_port_binding(kIntruder, {wire::kProtocolUdp, stack::BindingChange::release, 5353});
  EXPECT_EQ(count("bindings_refused"), 1u);
  server_->on_port_binding(kIntruder, {wire::kProtocolUdp, stack::BindingChange::claim, 5353});
  EXPECT_EQ(count("bindings_refused"), 2u);
  server_->on_port_binding(kUdpOwner, {wire::kProtocolUdp, stack::BindingChange::claim, 0});
  server_->on_port_binding(kUdpOwner, {wire::kProtocolIcmp, stack::BindingChange::claim, 7});
  EXPECT_EQ(count("bindings_refused"), 4u);
  inject_frame(udp_frame_to_us(5353, pattern(10, 1)));
  ASSERT_EQ(outputs_.deliveries.size(), 1u);
  EXPECT_EQ(outputs_.deliveries[0].owner, kUdpOwner);

  server_->on_port_binding(kUdpOwner, {wire::kProtocolUdp, stack::BindingChange::release, 5353});
  inject_frame(udp_frame_to_us(5353, pattern(10, 1)));
  EXPECT_EQ(outputs_.deliveries.size(), 1u);
  EXPECT_EQ(count("no_listener"), 1u);
}

TEST_F(IpServerTest, TransportMaySendOnlyFromItsOwnPort) {
  learn_peer();
  claim(kUdpOwner, 5000);
  send_from_transport(kIntruder, 5000, kPeerAddress, 4000, pattern(10, 1));  // someone else's
  EXPECT_EQ(count("transport_bad"), 1u);
  send_from_transport(kIntruder, 5001, kPeerAddress, 4000, pattern(10, 1));  // nobody's
  EXPECT_EQ(count("transport_bad"), 2u);
  // Too little headroom for the IPv4 and Ethernet headers.
  send_from_transport(kUdpOwner, 5000, kPeerAddress, 4000, pattern(10, 1), 20);
  EXPECT_EQ(count("transport_bad"), 3u);
  EXPECT_TRUE(outputs_.frames.empty());

  const Bytes payload = pattern(10, 1);
  send_from_transport(kUdpOwner, 5000, kPeerAddress, 4000, payload);
  ASSERT_EQ(outputs_.frames.size(), 1u);
  auto packet = expect_ipv4_frame(outputs_.frames[0], kPeerMac);
  EXPECT_EQ(packet.source(), kOurAddress);
  EXPECT_EQ(packet.protocol(), wire::kProtocolUdp);
  auto udp = wire::UdpDatagram::parse(packet.payload(), kOurAddress, kPeerAddress);
  ASSERT_TRUE(udp.ok());
  EXPECT_EQ(udp->source_port(), 5000);
  EXPECT_EQ(count("transport_bad"), 3u);
}

TEST_F(IpServerTest, UdpToOurOwnAddressIsDeliveredInsideWithoutTheDriverOrArp) {
  claim(kUdpOwner, 5000);
  claim(kUdpOwner, 6000);
  const Bytes payload = pattern(40, 3);
  send_from_transport(kUdpOwner, 5000, kOurAddress, 6000, payload);
  EXPECT_TRUE(outputs_.frames.empty()) << "nothing goes to the driver, not even an ARP request";
  ASSERT_EQ(outputs_.deliveries.size(), 1u);
  const Delivery& delivery = outputs_.deliveries[0];
  EXPECT_EQ(delivery.owner, kUdpOwner);
  EXPECT_EQ(delivery.body.remote_address, kOurAddress);
  EXPECT_EQ(delivery.body.local_address, kOurAddress);
  EXPECT_EQ(delivery.body.remote_port, 5000);
  EXPECT_EQ(delivery.body.local_port, 6000);
  Bytes segment = delivery.segment;
  auto udp = wire::UdpDatagram::parse(segment, kOurAddress, kOurAddress);
  ASSERT_TRUE(udp.ok()) << "the checksum holds for the turned-around datagram";
  EXPECT_TRUE(std::equal(payload.begin(), payload.end(), udp->payload().begin(), udp->payload().end()));
  EXPECT_EQ(count("delivered_locally"), 1u);

  // A closed local port: the port unreachable turns around too, and reaches nobody outside.
  send_from_transport(kUdpOwner, 5000, kOurAddress, 7000, payload);
  EXPECT_EQ(count("no_listener"), 1u);
  EXPECT_EQ(count("port_unreachable_sent"), 1u);
  EXPECT_EQ(count("delivered_locally"), 3u);
  EXPECT_TRUE(outputs_.frames.empty());
  EXPECT_EQ(outputs_.deliveries.size(), 1u);
}

TEST_F(IpServerTest, TooBigForTheLinkIsDropped) {
  learn_peer();
  claim(kUdpOwner, 5000);
  send_from_transport(kUdpOwner, 5000, kPeerAddress, 4000, pattern(1500 - 20 - 8 + 1, 1));
  EXPECT_EQ(count("too_big"), 1u);
  send_from_transport(kUdpOwner, 5000, kPeerAddress, 4000, pattern(1500 - 20 - 8, 1));
  EXPECT_EQ(outputs_.frames.size(), 1u);
}

TEST_F(IpServerTest, DriverRefusalFreesTheFrame) {
  learn_peer();
  outputs_.accept_frames = false;
  inject_frame(ipv4_frame(ipv4_packet(kPeerAddress, kOurAddress, wire::kProtocolIcmp,
                                      echo_request(1, 2, pattern(8, 1)))));
  EXPECT_EQ(count("driver_refused"), 1u);
}

// ---- hostile input ----

TEST_F(IpServerTest, HostileFramesAreCountedAndFreed) {
  claim(kUdpOwner, 5000);
  const Bytes good_packet = ipv4_packet(kPeerAddress, kOurAddress, wire::kProtocolUdp,
                                        udp_datagram(4000, 5000, kPeerAddress, kOurAddress, pattern(20, 1)));
  // A changed header with a checksum that fits it again.
  const auto changed = [&](auto&& change) {
    Bytes packet = good_packet;
    change(packet);
    wire::Ipv4Packet::unchecked(packet).fill_checksum();
    return ipv4_frame(packet);
  };
  struct Case {
    const char* counter;
    Bytes frame;
  };
  std::vector<Case> cases;
  cases.push_back({"too_short", pattern(10, 0)});  // not even an Ethernet header
  cases.push_back({"too_short", ipv4_frame(std::span(good_packet).first(12))});
  cases.push_back({"bad_version", changed([](Bytes& p) { p[0] = std::byte{0x65}; })});
  cases.push_back({"bad_header_length", changed([](Bytes& p) { p[0] = std::byte{0x44}; })});
  Bytes long_header = good_packet;  // IHL 15: a 60-byte header in a 48-byte packet
  long_header[0] = std::byte{0x4f};
  cases.push_back({"bad_header_length", ipv4_frame(long_header)});
  Bytes bad_checksum = ipv4_frame(good_packet);
  bad_checksum[wire::kEthernetHeaderBytes + 10] ^= std::byte{0x01};
  cases.push_back({"bad_checksum", bad_checksum});
  cases.push_back({"bad_total_length", changed([](Bytes& p) {
                     wire::store_be16(p, 2, static_cast<std::uint16_t>(p.size() + 1));
                   })});
  cases.push_back({"bad_total_length", changed([](Bytes& p) { wire::store_be16(p, 2, 19); })});
  cases.push_back({"ttl_zero", changed([](Bytes& p) { wire::store_u8(p, 8, 0); })});
  cases.push_back({"not_for_us", changed([](Bytes& p) { wire::store_be32(p, 16, kOtherOnLink); })});
  cases.push_back({"not_for_us", ethernet_frame(kPeerMac, kPeerMac, wire::kEtherTypeIpv4, good_packet)});
  cases.push_back({"not_ipv4", ethernet_frame(kOurMac, kPeerMac, 0x86dd, good_packet)});
  cases.push_back({"too_short", ethernet_frame(kOurMac, kPeerMac, wire::kEtherTypeArp, pattern(20, 0))});
  cases.push_back({"unsupported", [] {
                     Bytes arp = arp_packet(wire::kArpRequest, kPeerMac, kPeerAddress, kZeroMac, kOurAddress);
                     wire::store_be16(arp, 0, 6);  // IEEE 802 hardware, not Ethernet
                     return ethernet_frame(kOurMac, kPeerMac, wire::kEtherTypeArp, arp);
                   }()});
  // A UDP header cut short inside a valid IPv4 packet: IP needs the ports.
  cases.push_back({"too_short", ipv4_frame(ipv4_packet(kPeerAddress, kOurAddress, wire::kProtocolUdp,
                                                       pattern(6, 0)))});
  cases.push_back({"unknown_protocol", ipv4_frame(ipv4_packet(kPeerAddress, kOurAddress, 99, pattern(8, 0)))});
  cases.push_back({"bad_checksum", ipv4_frame(ipv4_packet(kPeerAddress, kOurAddress, wire::kProtocolIcmp, [] {
                                     Bytes icmp = echo_request(1, 1, pattern(8, 0));
                                     icmp[9] ^= std::byte{0xff};
                                     return icmp;
                                   }()))});

  for (const Case& test_case : cases) {
    SCOPED_TRACE(test_case.counter);
    const std::uint64_t before = count(test_case.counter);
    inject_frame(test_case.frame);
    EXPECT_EQ(count(test_case.counter), before + 1);
    EXPECT_EQ(ip_owned(), server_->buffers_held()) << "the frame was not freed";
  }
  EXPECT_TRUE(outputs_.frames.empty());
  EXPECT_TRUE(outputs_.deliveries.empty());
  EXPECT_EQ(count("frames_in"), cases.size());

  // Nothing stuck: a good packet still gets through.
  inject_frame(ipv4_frame(good_packet));
  EXPECT_EQ(outputs_.deliveries.size(), 1u);
}

TEST_F(IpServerTest, FramesBeforeTheLinkIsKnownAreDropped) {
  outputs_.frames.clear();
  server_.reset();
  ASSERT_EQ(pool_.count_free() + ip_owned(), kPoolBuffers);
  (void)pool_.reclaim(kIp);
  TestRegion fresh(IpServer::state_bytes_needed());
  const IpSettings settings{.address = kOurAddress, .prefix_length = 24, .gateway = 0};
  auto created = IpServer::create(pool_, kIp, fresh.bytes(), settings, outputs_, counters_);
  ASSERT_TRUE(created.ok());
  server_ = std::move(created).value();
  EXPECT_FALSE(server_->has_link());
  const std::uint64_t before = count("not_for_us");
  inject_frame(ethernet_frame(wire::kBroadcastMac, kPeerMac, wire::kEtherTypeArp,
                              arp_packet(wire::kArpRequest, kPeerMac, kPeerAddress, kZeroMac, kOurAddress)));
  EXPECT_EQ(count("not_for_us"), before + 1);
  EXPECT_TRUE(outputs_.frames.empty());

  // Without a gateway, an off-link destination has no route.
  server_->on_link_info(link());
  claim(kUdpOwner, 5000);
  send_from_transport(kUdpOwner, 5000, kFarAway, 53, pattern(4, 0));
  EXPECT_EQ(count("no_route"), 1u);
  EXPECT_TRUE(outputs_.frames.empty());
}

// ---- fragments ----

// Fragment `offset`/`payload` of a UDP datagram from the peer, as a frame.
Bytes fragment_frame(std::uint16_t identification, std::size_t offset, bool more,
                     std::span<const std::byte> payload) {
  Bytes packet = ipv4_packet(kPeerAddress, kOurAddress, wire::kProtocolUdp, payload, identification);
  wire::store_be16(packet, 6, static_cast<std::uint16_t>((more ? 0x2000 : 0) | (offset / 8)));
  wire::Ipv4Packet::unchecked(packet).fill_checksum();
  return ipv4_frame(packet);
}

TEST_F(IpServerTest, TwoFragmentsAreReassembledIntoOneDatagram) {
  claim(kUdpOwner, 5000);
  const Bytes datagram = udp_datagram(4000, 5000, kPeerAddress, kOurAddress, pattern(1000, 0x21));
  const std::size_t split = 504;  // a multiple of 8
  inject_frame(fragment_frame(77, 0, true, std::span(datagram).first(split)));
  EXPECT_TRUE(outputs_.deliveries.empty());
  EXPECT_EQ(ip_owned(), server_->buffers_held()) << "the first fragment's buffer";
  inject_frame(fragment_frame(77, split, false, std::span(datagram).subspan(split)));
  EXPECT_EQ(count("fragments_in"), 2u);
  EXPECT_EQ(count("fragments_reassembled"), 1u);
  ASSERT_EQ(outputs_.deliveries.size(), 1u);
  const Delivery& delivery = outputs_.deliveries[0];
  EXPECT_EQ(delivery.owner, kUdpOwner);
  EXPECT_EQ(delivery.segment, datagram);
  EXPECT_EQ(delivery.body.segment.length, datagram.size());
  EXPECT_EQ(delivery.body.remote_address, kPeerAddress);
  EXPECT_EQ(delivery.body.local_port, 5000);
  EXPECT_TRUE(wire::UdpDatagram::parse(std::span(outputs_.deliveries[0].segment), kPeerAddress, kOurAddress).ok());
}

TEST_F(IpServerTest, FragmentsInReverseOrderWithAFilter) {
  claim(kUdpOwner, 5000);
  outputs_.filter = true;
  const Bytes datagram = udp_datagram(4000, 5000, kPeerAddress, kOurAddress, pattern(64, 0x22));
  inject_frame(fragment_frame(78, 40, false, std::span(datagram).subspan(40)));
  inject_frame(fragment_frame(78, 0, true, std::span(datagram).first(40)));
  ASSERT_EQ(outputs_.verdict_requests.size(), 1u);  // the filter sees the whole datagram only
  auto whole = wire::Ipv4Packet::parse(outputs_.verdict_packets[0]);
  ASSERT_TRUE(whole.ok());
  EXPECT_FALSE(whole->is_fragment());
  EXPECT_TRUE(std::equal(datagram.begin(), datagram.end(), whole->payload().begin(), whole->payload().end()));
  server_->on_verdict(verdict_for(outputs_.verdict_requests[0], stack::Action::pass), now_);
  ASSERT_EQ(outputs_.deliveries.size(), 1u);
  EXPECT_EQ(outputs_.deliveries[0].segment, datagram);
}

TEST_F(IpServerTest, OverlappingFragmentsAreDropped) {
  claim(kUdpOwner, 5000);
  const Bytes datagram = udp_datagram(4000, 5000, kPeerAddress, kOurAddress, pattern(64, 0x23));
  inject_frame(fragment_frame(79, 0, true, std::span(datagram).first(32)));
  Bytes other = pattern(32, 0x99);
  inject_frame(fragment_frame(79, 24, true, other));  // covers 24..56 with other bytes
  EXPECT_EQ(count("fragment_overlaps"), 1u);
  // The datagram is gone: its rest alone completes nothing.
  inject_frame(fragment_frame(79, 32, false, std::span(datagram).subspan(32)));
  EXPECT_TRUE(outputs_.deliveries.empty());
  EXPECT_EQ(count("fragments_reassembled"), 0u);
  // A fragment that is not the last must carry a multiple of 8 bytes.
  inject_frame(fragment_frame(80, 0, true, std::span(datagram).first(20)));
  EXPECT_EQ(count("fragment_drops"), 1u);
}

TEST_F(IpServerTest, UnfinishedFragmentsExpire) {
  claim(kUdpOwner, 5000);
  const Bytes datagram = udp_datagram(4000, 5000, kPeerAddress, kOurAddress, pattern(64, 0x24));
  inject_frame(fragment_frame(81, 0, true, std::span(datagram).first(32)));
  server_->on_tick(now_ + 60'000);
  now_ += 60'000;
  inject_frame(fragment_frame(81, 32, false, std::span(datagram).subspan(32)));
  EXPECT_TRUE(outputs_.deliveries.empty());
}

// ---- restart ----

TEST_F(IpServerTest, RestartOnTheSameStateKeepsSettingsAndFlows) {
  claim(kUdpOwner, 5353);
  server_.reset();
  (void)pool_.reclaim(kIp);  // what the supervisor does after a crash
  // Other settings are ignored: the state store has its own.
  const IpSettings other{.address = 0x0a0a0a0a, .prefix_length = 8, .gateway = 0};
  auto created = IpServer::create(pool_, kIp, region_.bytes(), other, outputs_, counters_);
  ASSERT_TRUE(created.ok());
  server_ = std::move(created).value();
  EXPECT_TRUE(server_->restored());
  EXPECT_EQ(server_->settings().address, kOurAddress);
  EXPECT_EQ(server_->settings().prefix_length, 24);
  EXPECT_TRUE(server_->has_link());
  EXPECT_EQ(server_->flows().lookup(wire::kProtocolUdp, kOurAddress, 5353, kPeerAddress, 4000), kUdpOwner);
  EXPECT_TRUE(server_->routes().lookup(kFarAway).has_value());

  inject_frame(udp_frame_to_us(5353, pattern(10, 1)));
  ASSERT_EQ(outputs_.deliveries.size(), 1u);
  EXPECT_EQ(outputs_.deliveries[0].owner, kUdpOwner);
}

TEST_F(IpServerTest, RestartedIpAsksAgainAboutThePacketsThatWaitedForAVerdict) {
  learn_peer();
  outputs_.filter = true;
  const Bytes data = pattern(24, 0x33);
  inject_frame(ipv4_frame(ipv4_packet(kPeerAddress, kOurAddress, wire::kProtocolIcmp, echo_request(7, 8, data))));
  ASSERT_EQ(outputs_.verdict_requests.size(), 1u);
  const auto before_crash = outputs_.verdict_requests[0];
  // A buffer parked by the dead incarnation but named by no entry (it died between the two steps).
  BufferHandle orphan;
  ASSERT_EQ(pool_.alloc_burst(parked_owner(kIp), std::span(&orphan, 1)), 1u);

  // IP dies: the supervisor reclaims what it owned, but not what it parked.
  server_.reset();
  (void)pool_.reclaim(kIp);
  EXPECT_EQ(pool_.count_owned(parked_owner(kIp)), 2u);
  auto created = IpServer::create(pool_, kIp, region_.bytes(), IpSettings{}, outputs_, counters_);
  ASSERT_TRUE(created.ok());
  server_ = std::move(created).value();
  EXPECT_EQ(server_->pending_verdicts(), 1u);
  EXPECT_EQ(count("verdicts_restored"), 1u);
  EXPECT_EQ(pool_.count_owned(parked_owner(kIp)), 1u) << "the orphan went back to the pool";
  learn_peer();  // the ARP cache is private memory: the new incarnation learns the peer again
  const std::size_t frames_before = outputs_.frames.size();

  // The first tick asks again; the answer to the old request is stale, the new one counts.
  server_->on_tick(now_ + 1);
  ASSERT_EQ(outputs_.verdict_requests.size(), 2u);
  const auto after_crash = outputs_.verdict_requests[1];
  EXPECT_EQ(after_crash.ticket, before_crash.ticket);
  EXPECT_EQ(after_crash.packet.index, before_crash.packet.index);
  EXPECT_EQ(outputs_.verdict_packets[1], outputs_.verdict_packets[0]);
  server_->on_verdict(verdict_for(after_crash, stack::Action::pass), now_ + 2);
  // The echo reply now waits for its own verdict, and then leaves.
  ASSERT_EQ(outputs_.verdict_requests.size(), 3u);
  server_->on_verdict(verdict_for(outputs_.verdict_requests[2], stack::Action::pass), now_ + 3);
  ASSERT_EQ(outputs_.frames.size(), frames_before + 1);
  auto reply = expect_ipv4_frame(outputs_.frames.back(), kPeerMac);
  EXPECT_EQ(reply.destination(), kPeerAddress);
}

// ---- TCP replicas ----

constexpr ComponentId kTcp0 = 7;
constexpr ComponentId kTcp1 = 8;

Bytes tcp_segment(std::uint16_t source_port, std::uint16_t destination_port, std::uint32_t source,
                  std::uint32_t destination, std::uint8_t flags) {
  Bytes out(wire::kTcpHeaderBytes);
  const wire::TcpHeader header{.source_port = source_port,
                               .destination_port = destination_port,
                               .sequence = 1000,
                               .acknowledgment = 0,
                               .flags = flags,
                               .window = 65535};
  EXPECT_EQ(wire::emit_tcp(out, header, source, destination, 0), out.size());
  return out;
}

Bytes tcp_frame_to_us(std::uint16_t remote_port, std::uint16_t local_port) {
  return ipv4_frame(ipv4_packet(kPeerAddress, kOurAddress, wire::kProtocolTcp,
                                tcp_segment(remote_port, local_port, kPeerAddress, kOurAddress, wire::kTcpSyn)));
}

class IpTcpReplicaTest : public IpServerTest {
 protected:
  void announce(ComponentId replica, std::uint16_t index, bool fresh) {
    announce(replica, index, fresh ? stack::TcpReplicaMode::fresh : stack::TcpReplicaMode::ip_restarted);
  }
  void announce(ComponentId replica, std::uint16_t index, stack::TcpReplicaMode mode) {
    server_->on_tcp_replica(replica, stack::TcpReplicaBody{index, 2, mode, {}});
  }
  void bind_flow(ComponentId from, stack::BindingChange change, std::uint16_t local_port, std::uint16_t remote_port) {
    server_->on_flow_binding(from, stack::FlowBindingBody{kOurAddress, kPeerAddress, local_port, remote_port,
                                                          wire::kProtocolTcp, change, {}});
  }
  // Which component IP delivered a SYN from remote_port to local port 80 to (kNoComponent: none).
  ComponentId delivered_to(std::uint16_t remote_port) {
    const std::size_t before = outputs_.deliveries.size();
    inject_frame(tcp_frame_to_us(remote_port, 80));
    return outputs_.deliveries.size() == before ? kNoComponent : outputs_.deliveries.back().owner;
  }
  void send_tcp_from(ComponentId from, std::uint16_t local_port, std::uint16_t remote_port) {
    const Bytes segment = tcp_segment(local_port, remote_port, kOurAddress, kPeerAddress, wire::kTcpRst);
    const stack::TransportPacketBody body{.segment = give_to_ip(from, segment, stack::kHeadroom),
                                          .remote_address = kPeerAddress,
                                          .local_address = kOurAddress,
                                          .remote_port = remote_port,
                                          .local_port = local_port,
                                          .protocol = wire::kProtocolTcp,
                                          .reserved = {}};
    server_->on_transport_packet(from, body, now_);
  }
  void TearDown() override {
    EXPECT_EQ(pool_.count_owned(kTcp0), 0u);
    EXPECT_EQ(pool_.count_owned(kTcp1), 0u);
    IpServerTest::TearDown();
  }
};

TEST_F(IpTcpReplicaTest, WithoutReplicasTcpIsDroppedAndCounted) {
  EXPECT_EQ(delivered_to(40000), kNoComponent);
  EXPECT_EQ(count("tcp_no_replica"), 1u);
  EXPECT_EQ(count("no_listener"), 1u);
}

TEST_F(IpTcpReplicaTest, UnclaimedSegmentsAreSpreadOverTheReplicasByTheirTuple) {
  announce(kTcp0, 0, true);
  announce(kTcp1, 1, true);
  std::size_t to_replica[2] = {0, 0};
  for (std::uint16_t port = 40000; port < 40064; ++port) {
    const ComponentId owner = delivered_to(port);
    ASSERT_TRUE(owner == kTcp0 || owner == kTcp1) << "port " << port;
    EXPECT_EQ(delivered_to(port), owner) << "the same tuple must reach the same replica";
    EXPECT_EQ(server_->tcp_replica_for(kPeerAddress, port, 80), owner);
    ++to_replica[owner == kTcp0 ? 0 : 1];
  }
  EXPECT_GT(to_replica[0], 8u);
  EXPECT_GT(to_replica[1], 8u);
  EXPECT_EQ(count("tcp_to_replica"), 128u);
}

TEST_F(IpTcpReplicaTest, AnExactFlowGoesToItsOwnerUntilReleased) {
  announce(kTcp0, 0, true);
  announce(kTcp1, 1, true);
  std::uint16_t port = 40000;
  while (server_->tcp_replica_for(kPeerAddress, port, 80) != kTcp0) ++port;
  bind_flow(kTcp1, stack::BindingChange::claim, 80, port);
  EXPECT_EQ(delivered_to(port), kTcp1);
  // Another replica cannot take it or release it, and a non-replica cannot claim at all.
  bind_flow(kTcp0, stack::BindingChange::claim, 80, port);
  bind_flow(kTcp0, stack::BindingChange::release, 80, port);
  bind_flow(kIntruder, stack::BindingChange::claim, 80, port + 1);
  EXPECT_EQ(count("bindings_refused"), 3u);
  EXPECT_EQ(delivered_to(port), kTcp1);
  bind_flow(kTcp1, stack::BindingChange::release, 80, port);
  EXPECT_EQ(delivered_to(port), kTcp0);
}

TEST_F(IpTcpReplicaTest, AFreshIncarnationLosesItsFlowsAndARepeatedAnnouncementKeepsThem) {
  announce(kTcp0, 0, true);
  announce(kTcp1, 1, true);
  std::uint16_t port = 40000;
  while (server_->tcp_replica_for(kPeerAddress, port, 80) != kTcp0) ++port;
  bind_flow(kTcp1, stack::BindingChange::claim, 80, port);
  announce(kTcp1, 1, false);  // IP restarted and asked: the flows stand
  EXPECT_EQ(delivered_to(port), kTcp1);
  announce(kTcp1, 1, true);  // the replica restarted: its connections are gone
  EXPECT_EQ(delivered_to(port), kTcp0);
}

TEST_F(IpTcpReplicaTest, ARecoveringReplicaKeepsTheFlowsItClaimsAgainAndLosesTheRestWhenRecovered) {
  announce(kTcp0, 0, true);
  announce(kTcp1, 1, true);
  // Three flows of kTcp1 whose tuples hash to kTcp0, and one of kTcp0.
  std::vector<std::uint16_t> ports;
  for (std::uint16_t port = 40000; ports.size() < 4; ++port) {
    if (server_->tcp_replica_for(kPeerAddress, port, 80) == kTcp0) ports.push_back(port);
  }
  for (std::size_t i = 0; i < 3; ++i) bind_flow(kTcp1, stack::BindingChange::claim, 80, ports[i]);
  bind_flow(kTcp0, stack::BindingChange::claim, 80, ports[3]);

  announce(kTcp1, 1, stack::TcpReplicaMode::recovering);
  EXPECT_EQ(count("tcp_flows_kept"), 3u);
  // While it restores, every flow still reaches it.
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(delivered_to(ports[i]), kTcp1) << i;
  // It restored the first two (claims them again) and lost the third.
  bind_flow(kTcp1, stack::BindingChange::claim, 80, ports[0]);
  bind_flow(kTcp1, stack::BindingChange::claim, 80, ports[1]);
  EXPECT_EQ(count("bindings_refused"), 0u);
  announce(kTcp1, 1, stack::TcpReplicaMode::recovered);
  EXPECT_EQ(count("tcp_flows_swept"), 1u);
  EXPECT_EQ(delivered_to(ports[0]), kTcp1);
  EXPECT_EQ(delivered_to(ports[1]), kTcp1);
  EXPECT_EQ(delivered_to(ports[2]), kTcp0) << "the flow it did not claim again is swept";
  EXPECT_EQ(delivered_to(ports[3]), kTcp0) << "another replica's flow is untouched";
  EXPECT_EQ(server_->flows().size(), 3u);
  // A second recovery that claims nothing again loses everything it had.
  announce(kTcp1, 1, stack::TcpReplicaMode::recovering);
  announce(kTcp1, 1, stack::TcpReplicaMode::recovered);
  EXPECT_EQ(count("tcp_flows_swept"), 3u);
  EXPECT_EQ(delivered_to(ports[0]), kTcp0);
  EXPECT_EQ(server_->flows().size(), 1u);
}

TEST_F(IpTcpReplicaTest, AReplicaAnswersForUnownedFlowsButNeverForAnothersFlow) {
  learn_peer();
  announce(kTcp0, 0, true);
  announce(kTcp1, 1, true);
  bind_flow(kTcp1, stack::BindingChange::claim, 80, 40000);
  send_tcp_from(kTcp0, 80, 40000);  // kTcp1's flow
  EXPECT_EQ(count("transport_bad"), 1u);
  send_tcp_from(kIntruder, 80, 40001);  // nobody's, but not a replica
  EXPECT_EQ(count("transport_bad"), 2u);
  EXPECT_TRUE(outputs_.frames.empty());
  send_tcp_from(kTcp0, 80, 40001);  // nobody's: a replica may answer (a RST)
  send_tcp_from(kTcp1, 80, 40000);  // its own
  ASSERT_EQ(outputs_.frames.size(), 2u);
  auto packet = expect_ipv4_frame(outputs_.frames[0], kPeerMac);
  EXPECT_EQ(packet.protocol(), wire::kProtocolTcp);
  EXPECT_EQ(count("transport_bad"), 2u);
}

TEST_F(IpTcpReplicaTest, TcpToOurOwnAddressPassesTheFilterBothWaysAndReachesTheReplicaInside) {
  announce(kTcp0, 0, true);
  announce(kTcp1, 1, true);
  outputs_.filter = true;
  const auto syn_from = [&](ComponentId replica, std::uint16_t local_port) {
    const Bytes segment = tcp_segment(local_port, 80, kOurAddress, kOurAddress, wire::kTcpSyn);
    server_->on_transport_packet(replica,
                                 stack::TransportPacketBody{.segment = give_to_ip(replica, segment, stack::kHeadroom),
                                                            .remote_address = kOurAddress,
                                                            .local_address = kOurAddress,
                                                            .remote_port = 80,
                                                            .local_port = local_port,
                                                            .protocol = wire::kProtocolTcp,
                                                            .reserved = {}},
                                 now_);
    return segment;
  };
  // A client on kTcp0 connects to a server on this stack: the SYN is filtered out, then in.
  server_->on_flow_binding(kTcp0, stack::FlowBindingBody{kOurAddress, kOurAddress, 40000, 80,
                                                         wire::kProtocolTcp, stack::BindingChange::claim, {}});
  const Bytes syn = syn_from(kTcp0, 40000);
  ASSERT_EQ(outputs_.verdict_requests.size(), 1u);
  EXPECT_EQ(outputs_.verdict_requests[0].direction, stack::Direction::out);
  server_->on_verdict(verdict_for(outputs_.verdict_requests[0], stack::Action::pass), now_);
  ASSERT_EQ(outputs_.verdict_requests.size(), 2u);
  EXPECT_EQ(outputs_.verdict_requests[1].direction, stack::Direction::in);
  EXPECT_TRUE(outputs_.deliveries.empty()) << "delivered before the inbound verdict";
  server_->on_verdict(verdict_for(outputs_.verdict_requests[1], stack::Action::pass), now_);
  ASSERT_EQ(outputs_.deliveries.size(), 1u);
  // Nobody owns the server's side of the flow yet: the listener's replica by the tuple's hash.
  EXPECT_EQ(outputs_.deliveries[0].owner, server_->tcp_replica_for(kOurAddress, 40000, 80));
  EXPECT_EQ(outputs_.deliveries[0].body.remote_port, 40000);
  EXPECT_EQ(outputs_.deliveries[0].body.local_port, 80);
  EXPECT_EQ(outputs_.deliveries[0].segment, syn);
  EXPECT_TRUE(outputs_.frames.empty());

  // An inbound block stops it as it stops a packet from the wire.
  (void)syn_from(kTcp0, 40000);
  ASSERT_EQ(outputs_.verdict_requests.size(), 3u);
  server_->on_verdict(verdict_for(outputs_.verdict_requests[2], stack::Action::pass), now_);
  ASSERT_EQ(outputs_.verdict_requests.size(), 4u);
  server_->on_verdict(verdict_for(outputs_.verdict_requests[3], stack::Action::block), now_);
  EXPECT_EQ(count("filter_blocked_in"), 1u);
  EXPECT_EQ(outputs_.deliveries.size(), 1u);
  EXPECT_EQ(count("delivered_locally"), 2u);
  EXPECT_TRUE(outputs_.frames.empty());
}

// A pass pf marks cacheable lets the rest of the flow's packets by without asking, in this
// direction only, until the entry is VerdictCache::kLifetimeMs old; SYN, FIN and RST always ask.
TEST_F(IpTcpReplicaTest, ACacheablePassLetsTheFlowSkipTheFilterUntilItAges) {
  announce(kTcp0, 0, true);
  announce(kTcp1, 1, true);
  outputs_.filter = true;
  const auto segment_in = [&](std::uint16_t remote_port, std::uint8_t flags) {
    inject_frame(ipv4_frame(ipv4_packet(kPeerAddress, kOurAddress, wire::kProtocolTcp,
                                        tcp_segment(remote_port, 80, kPeerAddress, kOurAddress, flags))));
  };
  auto cacheable_pass = [&](std::size_t request) {
    auto verdict = verdict_for(outputs_.verdict_requests.at(request), stack::Action::pass);
    verdict.flags = stack::kVerdictCacheable;
    server_->on_verdict(verdict, now_);
  };
  segment_in(40000, wire::kTcpAck);
  ASSERT_EQ(outputs_.verdict_requests.size(), 1u);
  cacheable_pass(0);
  ASSERT_EQ(outputs_.deliveries.size(), 1u);

  for (int i = 0; i < 5; ++i) segment_in(40000, wire::kTcpAck);
  EXPECT_EQ(outputs_.verdict_requests.size(), 1u) << "the flow's packets still asked the filter";
  EXPECT_EQ(outputs_.deliveries.size(), 6u);
  EXPECT_EQ(count("filter_cache_hits"), 5u);

  segment_in(40000, wire::kTcpAck | wire::kTcpFin);
  EXPECT_EQ(outputs_.verdict_requests.size(), 2u) << "a FIN moves pf's states: it must ask";
  segment_in(40000, wire::kTcpAck);
  EXPECT_EQ(outputs_.verdict_requests.size(), 3u) << "a packet overtook one waiting for its verdict";
  EXPECT_EQ(outputs_.deliveries.size(), 6u);
  cacheable_pass(1);
  cacheable_pass(2);
  EXPECT_EQ(outputs_.deliveries.size(), 8u);
  ASSERT_GE(outputs_.deliveries.back().segment.size(), 14u);

  segment_in(40001, wire::kTcpAck);  // another flow has its own entry
  EXPECT_EQ(outputs_.verdict_requests.size(), 4u);
  server_->on_verdict(verdict_for(outputs_.verdict_requests[3], stack::Action::pass), now_);  // not cacheable
  segment_in(40001, wire::kTcpAck);
  EXPECT_EQ(outputs_.verdict_requests.size(), 5u) << "a pass not marked cacheable was cached";
  server_->on_verdict(verdict_for(outputs_.verdict_requests[4], stack::Action::block), now_);

  now_ += VerdictCache::kLifetimeMs;
  segment_in(40000, wire::kTcpAck);
  EXPECT_EQ(outputs_.verdict_requests.size(), 6u) << "an aged entry still passed packets";
  server_->on_verdict(verdict_for(outputs_.verdict_requests[5], stack::Action::block), now_);
  EXPECT_EQ(count("filter_blocked_in"), 2u);
}

TEST_F(IpTcpReplicaTest, BadAnnouncementsAreRefused) {
  constexpr auto kFresh = stack::TcpReplicaMode::fresh;
  server_->on_tcp_replica(kTcp0, stack::TcpReplicaBody{2, 2, kFresh, {}});
  server_->on_tcp_replica(kTcp0, stack::TcpReplicaBody{0, 0, kFresh, {}});
  server_->on_tcp_replica(kTcp0, stack::TcpReplicaBody{0, 17, kFresh, {}});
  server_->on_tcp_replica(kTcp0, stack::TcpReplicaBody{0, 2, static_cast<stack::TcpReplicaMode>(4), {}});
  server_->on_tcp_replica(kTcp0, stack::TcpReplicaBody{0, 2, static_cast<stack::TcpReplicaMode>(255), {}});
  EXPECT_EQ(count("bindings_refused"), 5u);
  EXPECT_EQ(count("tcp_replicas_announced"), 0u);
  EXPECT_EQ(delivered_to(40000), kNoComponent);
}

}  // namespace
}  // namespace flotilla::ip
