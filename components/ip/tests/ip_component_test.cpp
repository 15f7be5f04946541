// IpComponent as the ip process runs it, on in-memory channels to a driver, a packet filter and a
// UDP server: each channel's kinds reach the right IpServer call, with the sending channel's peer;
// other kinds are counted; a filter restart makes IP ask again; a delivery finds its transport's
// channel through the peer table.
#include "components/ip/ip_component.hpp"

#include <gtest/gtest.h>

#include <optional>
#include <vector>

#include "components/wire/ethernet.hpp"
#include "components/wire/ipv4.hpp"
#include "components/wire/udp.hpp"
#include "dataplane/tests/test_channels.hpp"

namespace flotilla::ip {
namespace {

using flotilla::testing::PageMemory;
using flotilla::testing::ComponentFixture;

constexpr ComponentId kIp = 2;
constexpr ComponentId kDriver = 3;
constexpr ComponentId kPf = 4;
constexpr ComponentId kUdp = 5;
constexpr std::size_t kDriverChannel = 0;
constexpr std::size_t kFilterChannel = 1;
constexpr std::size_t kUdpChannel = 2;
constexpr std::uint32_t kOurAddress = 0x0a4d0002;   // 10.77.0.2/24
constexpr std::uint32_t kPeerAddress = 0x0a4d0001;  // 10.77.0.1
constexpr wire::MacAddress kOurMac{0x02, 0x00, 0x0a, 0x4d, 0x00, 0x02};
constexpr wire::MacAddress kPeerMac{0x02, 0x00, 0x0a, 0x4d, 0x00, 0x01};
constexpr std::uint16_t kPort = 7;

class IpComponentTest : public ::testing::Test {
 protected:
  IpComponentTest()
      : fixture_({{"driver-ip", kDriver}, {"ip-pf", kPf}, {"ip-udp", kUdp}}, kIp),
        state_(IpServer::state_bytes_needed()) {
    auto created = IpComponent::create(fixture_.channels.outputs(), kDriverChannel, kFilterChannel, state_.bytes(),
                                       IpSettings{kOurAddress, 24, 0}, fixture_.counters);
    if (!created) std::abort();  // nothing to test without the component
    component_ = std::move(created.value());
    fixture_.run(*component_);
  }

  void from(std::size_t channel, const Message& message) {
    ASSERT_TRUE(fixture_.channels.send_from_peer(channel, message));
  }

  // A UDP datagram from the peer to kPort, as the driver hands it to IP.
  Message frame() {
    BufferHandle handle{};
    EXPECT_EQ(fixture_.pool.alloc_burst(kIp, std::span(&handle, 1)), 1u);  // the driver handed it over
    const std::size_t ip_offset = wire::kEthernetHeaderBytes;
    const std::size_t udp_offset = ip_offset + wire::kIpv4HeaderBytes;
    handle.length = static_cast<std::uint16_t>(udp_offset + wire::kUdpHeaderBytes);
    auto bytes = fixture_.pool.bytes(kIp, handle).value();
    EXPECT_EQ(wire::emit_ethernet_header(bytes, kOurMac, kPeerMac, wire::kEtherTypeIpv4), ip_offset);
    EXPECT_EQ(wire::emit_udp(bytes.subspan(udp_offset), 40000, kPort, kPeerAddress, kOurAddress, 0),
              wire::kUdpHeaderBytes);
    const wire::Ipv4Header header{.source = kPeerAddress, .destination = kOurAddress,
                                  .protocol = wire::kProtocolUdp, .payload_length = wire::kUdpHeaderBytes};
    EXPECT_EQ(wire::emit_ipv4_header(bytes.subspan(ip_offset), header), wire::kIpv4HeaderBytes);
    return Message::make(stack::kFrameKind, stack::FrameBody{handle});
  }

  static Message link() {
    stack::LinkInfoBody body{};
    std::copy(kOurMac.begin(), kOurMac.end(), body.mac);
    body.mtu = 1500;
    return Message::make(stack::kLinkInfoKind, body);
  }

  std::vector<stack::VerdictRequestBody> verdict_requests() {
    std::vector<stack::VerdictRequestBody> requests;
    for (const Message& message : fixture_.channels.take_sent(kFilterChannel)) {
      EXPECT_EQ(message.kind, stack::kVerdictRequestKind);
      requests.push_back(message.read<stack::VerdictRequestBody>());
    }
    return requests;
  }

  std::uint64_t malformed() { return fixture_.counter("malformed_messages"); }

  ComponentFixture fixture_;
  PageMemory state_;
  std::unique_ptr<IpComponent> component_;
};

TEST_F(IpComponentTest, AFrameIsFilteredThenDeliveredOnItsOwnersChannel) {
  from(kUdpChannel, Message::make(stack::kPortBindingKind,
                                  stack::PortBindingBody{wire::kProtocolUdp, stack::BindingChange::claim, kPort}));
  from(kDriverChannel, link());
  from(kDriverChannel, frame());
  (void)fixture_.loop.poll_once();
  EXPECT_TRUE(component_->server().has_link());
  EXPECT_EQ(fixture_.channels.link().served_count(), 1u) << "a frame served";
  const auto requests = verdict_requests();
  ASSERT_EQ(requests.size(), 1u);

  const stack::VerdictBody pass{requests[0].ticket, stack::Action::pass, 0, 1, requests[0].packet.generation};
  from(kFilterChannel, Message::make(stack::kVerdictKind, pass));
  (void)fixture_.loop.poll_once();
  const auto delivered = fixture_.channels.take_sent(kUdpChannel);
  ASSERT_EQ(delivered.size(), 1u);
  EXPECT_EQ(delivered[0].kind, stack::kTransportPacketKind);
  const auto packet = delivered[0].read<stack::TransportPacketBody>();
  EXPECT_EQ(packet.local_port, kPort);
  EXPECT_EQ(fixture_.pool.count_owned(kUdp), 1u) << "the buffer went with the message";
  EXPECT_EQ(malformed(), 0u);
}

TEST_F(IpComponentTest, AsksAgainWhenTheFilterRestarts) {
  from(kDriverChannel, link());
  from(kDriverChannel, frame());
  (void)fixture_.loop.poll_once();
  const auto first = verdict_requests();
  ASSERT_EQ(first.size(), 1u);
  component_->on_peer_restarted(kUdp);
  EXPECT_TRUE(verdict_requests().empty()) << "only the filter's restart matters here";
  component_->on_peer_restarted(kPf);
  const auto again = verdict_requests();
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].ticket, first[0].ticket);
}

TEST_F(IpComponentTest, CountsKindsThatDoNotBelongOnAChannel) {
  from(kDriverChannel, Message::make(stack::kVerdictKind, stack::VerdictBody{}));
  from(kFilterChannel, link());
  from(kUdpChannel, link());
  (void)fixture_.loop.poll_once();
  EXPECT_EQ(malformed(), 3u);
  EXPECT_FALSE(component_->server().has_link());
  EXPECT_TRUE(verdict_requests().empty());
}

}  // namespace
}  // namespace flotilla::ip
