// UdpComponent as the udp process runs it, on in-memory channels to IP and to two applications:
// each application's requests are told apart by their channel's peer, answers find that
// application's channel through the peer table, its exposed sockets show in its own region, and
// restarts of IP and of an application reach the server.
#include "components/udp/udp_component.hpp"

#include <gtest/gtest.h>

#include <optional>
#include <vector>

#include "dataplane/tests/test_channels.hpp"

namespace flotilla::udp {
namespace {

using flotilla::testing::PageMemory;
using flotilla::testing::ComponentFixture;

constexpr ComponentId kUdp = 5;
constexpr ComponentId kIp = 2;
constexpr ComponentId kApp = 8;
constexpr ComponentId kOtherApp = 9;
constexpr std::size_t kIpChannel = 1;  // not first: the IP channel is found by its index, not its place
constexpr std::size_t kAppChannel = 0;
constexpr std::size_t kOtherAppChannel = 2;

class UdpComponentTest : public ::testing::Test {
 protected:
  UdpComponentTest()
      : fixture_({{"udp-app", kApp}, {"ip-udp", kIp}, {"udp-other", kOtherApp}}, kUdp),
        state_(UdpServer::state_bytes_for(64)),
        exposed_(formats::ExposedSocketTable::bytes_for(8)) {
    const std::vector<std::span<std::byte>> regions{exposed_.bytes()};  // the first application's only
    auto created = UdpComponent::create(fixture_.channels.outputs(), kIpChannel, 0x0a4d0002, state_.bytes(), regions,
                                        fixture_.counters);
    if (!created) std::abort();  // nothing to test without the component
    component_ = std::move(created.value());
    fixture_.run(*component_);
  }

  void open(std::size_t channel, std::uint32_t socket, std::uint16_t port) {
    ASSERT_TRUE(fixture_.channels.send_from_peer(channel, Message::make(stack::kSocketOpenKind,
                                                                stack::SocketOpenBody{socket, port, 17, 0, 0})));
  }
  std::vector<stack::PortBindingBody> bindings() {
    std::vector<stack::PortBindingBody> out;
    for (const Message& message : fixture_.channels.take_sent(kIpChannel)) {
      EXPECT_EQ(message.kind, stack::kPortBindingKind);
      out.push_back(message.read<stack::PortBindingBody>());
    }
    return out;
  }
  std::vector<stack::SocketStatusBody> statuses(std::size_t channel) {
    std::vector<stack::SocketStatusBody> out;
    for (const Message& message : fixture_.channels.take_sent(channel)) {
      EXPECT_EQ(message.kind, stack::kSocketStatusKind);
      out.push_back(message.read<stack::SocketStatusBody>());
    }
    return out;
  }

  ComponentFixture fixture_;
  PageMemory state_;
  PageMemory exposed_;
  std::unique_ptr<UdpComponent> component_;
};

TEST_F(UdpComponentTest, EachApplicationIsAnsweredOnItsOwnChannel) {
  open(kAppChannel, 1, 7);
  open(kOtherAppChannel, 1, 9);
  (void)fixture_.loop.poll_once();
  const auto claimed = bindings();
  ASSERT_EQ(claimed.size(), 2u);
  EXPECT_EQ(claimed[0].local_port, 7);
  EXPECT_EQ(claimed[1].local_port, 9);
  const auto first = statuses(kAppChannel);
  const auto second = statuses(kOtherAppChannel);
  ASSERT_EQ(first.size(), 1u);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(first[0].local_port, 7);
  EXPECT_NE(first[0].exposed_slot, 0) << "the first application has an exposed table";
  EXPECT_EQ(second[0].local_port, 9);
  EXPECT_EQ(second[0].exposed_slot, 0) << "the second has none";
  EXPECT_EQ(component_->server().open_sockets(), 2u);
}

TEST_F(UdpComponentTest, RestartsOfIpAndOfAnApplicationReachTheServer) {
  open(kAppChannel, 1, 7);
  open(kOtherAppChannel, 1, 9);
  (void)fixture_.loop.poll_once();
  (void)bindings();
  component_->on_peer_restarted(kIp);
  EXPECT_EQ(bindings().size(), 2u) << "every bound port claimed again";
  component_->on_peer_restarted(kOtherApp);
  EXPECT_EQ(component_->server().open_sockets(), 1u);
  const auto released = bindings();
  ASSERT_EQ(released.size(), 1u);
  EXPECT_EQ(released[0].change, stack::BindingChange::release);
  EXPECT_EQ(released[0].local_port, 9);
}

TEST_F(UdpComponentTest, ConnectsReachTheServerAsTheirChannelsApplication) {
  open(kAppChannel, 1, 7);
  (void)fixture_.loop.poll_once();
  const stack::SocketConnectBody connect{1, 0x0a4d0001, 40000, 7};
  ASSERT_TRUE(fixture_.channels.send_from_peer(kAppChannel, Message::make(stack::kSocketConnectKind, connect)));
  // The same socket named on the other application's channel is not that application's.
  ASSERT_TRUE(fixture_.channels.send_from_peer(kOtherAppChannel, Message::make(stack::kSocketConnectKind, connect)));
  (void)fixture_.loop.poll_once();
  EXPECT_EQ(fixture_.counter("bad_request"), 1u);
  EXPECT_EQ(fixture_.counter("malformed_messages"), 0u);
}

TEST_F(UdpComponentTest, CountsKindsThatDoNotBelongOnAChannel) {
  ASSERT_TRUE(fixture_.channels.send_from_peer(kIpChannel, Message::make(stack::kSocketOpenKind, stack::SocketOpenBody{})));
  ASSERT_TRUE(fixture_.channels.send_from_peer(kAppChannel, Message::make(stack::kTransportPacketKind,
                                                                  stack::TransportPacketBody{})));
  (void)fixture_.loop.poll_once();
  EXPECT_EQ(fixture_.counter("malformed_messages"), 2u);
  EXPECT_EQ(component_->server().open_sockets(), 0u);
}

}  // namespace
}  // namespace flotilla::udp
