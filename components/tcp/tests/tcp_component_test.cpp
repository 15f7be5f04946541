// TcpComponent as the tcp process runs it, on in-memory channels to IP and an application: the
// replica announces itself to IP on its channel, again (not fresh) when IP restarts, serves
// segments from IP, and counts what does not belong on the IP channel.
#include "components/tcp/tcp_component.hpp"

#include <gtest/gtest.h>

#include <optional>
#include <vector>

#include "dataplane/tests/test_channels.hpp"

namespace flotilla::tcp {
namespace {

using flotilla::testing::PageMemory;
using flotilla::testing::ComponentFixture;

constexpr ComponentId kTcp = 6;
constexpr ComponentId kIp = 2;
constexpr ComponentId kApp = 8;
constexpr std::size_t kAppChannel = 0;
constexpr std::size_t kIpChannel = 1;

class TcpComponentTest : public ::testing::Test {
 protected:
  TcpComponentTest()
      : fixture_({{"tcp-app", kApp}, {"ip-tcp", kIp}}, kTcp) {
    settings_.address = 0x0a4d0002;
    settings_.engine.max_connections = 16;
    const std::uint32_t pages[] = {0};  // the application channel has no region
    state_.emplace(ReplicaServer::state_bytes(settings_, pages));
    auto created = TcpComponent::create(fixture_.channels.outputs(), kIpChannel, state_->bytes(), {}, settings_, fixture_.counters,
                                        1, 1'000'000'000);
    if (!created) std::abort();  // nothing to test without the component
    component_ = std::move(created.value());
    fixture_.run(*component_);
  }

  std::vector<stack::TcpReplicaBody> announcements() {
    std::vector<stack::TcpReplicaBody> out;
    for (const Message& message : fixture_.channels.take_sent(kIpChannel)) {
      if (message.kind == stack::kTcpReplicaKind) out.push_back(message.read<stack::TcpReplicaBody>());
    }
    return out;
  }

  ComponentFixture fixture_;
  ReplicaSettings settings_;
  std::optional<PageMemory> state_;
  std::unique_ptr<TcpComponent> component_;
};

TEST_F(TcpComponentTest, AnnouncesItselfFreshThenAgainWhenIpRestarts) {
  const auto first = announcements();
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].mode, stack::TcpReplicaMode::fresh);
  EXPECT_EQ(component_->app_count(), 1u) << "every channel but IP's is an application";
  component_->on_peer_restarted(kApp);
  EXPECT_TRUE(announcements().empty());
  component_->on_peer_restarted(kIp);
  const auto again = announcements();
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].mode, stack::TcpReplicaMode::ip_restarted);
}

TEST_F(TcpComponentTest, ServesSegmentsFromIpAndCountsOtherKindsThere) {
  (void)announcements();
  ASSERT_TRUE(fixture_.channels.send_from_peer(kIpChannel, Message::make(stack::kTransportPacketKind,
                                                                 stack::TransportPacketBody{})));
  ASSERT_TRUE(fixture_.channels.send_from_peer(kIpChannel, Message::make(stack::kSocketOpenKind, stack::SocketOpenBody{})));
  (void)fixture_.loop.poll_once();
  EXPECT_EQ(fixture_.counter("malformed_messages"), 1u);
  EXPECT_EQ(fixture_.channels.link().served_count(), 1u);
}

}  // namespace
}  // namespace flotilla::tcp
