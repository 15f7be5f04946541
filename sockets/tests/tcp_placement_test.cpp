// Placing connections by the name fleet: TcpSockets against fake replicas (fake_replica.hpp) and a
// fake name server (fake_name_server.hpp) whose answers each test writes, on a clock it moves.
// Placement is the application's decision alone: the fake replicas record where each open went,
// before any replica would have answered it, which the real replica cannot be held still for.
#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include <gtest/gtest.h>

#include "sockets/tests/fake_name_server.hpp"
#include "sockets/tests/fake_replica.hpp"

namespace flotilla::sockets {
namespace {

using namespace testing;

constexpr ComponentId kSelf = kAppComponent;
constexpr ComponentId kServer = kNameServer;

class TcpPlacementTest : public ::testing::Test {
 protected:
  TcpPlacementTest() {
    auto used = stack_.sockets->use_name_fleet(
        std::make_unique<FakeNameLink>(server_), fake_name_peers());
    EXPECT_TRUE(used.ok());
  }

  TcpSockets& sockets() { return *stack_.sockets; }
  FakeReplica& replica(std::size_t index) { return stack_.replica(index); }

  // The lookup the last connect sent.
  name::NameMessage last_lookup() {
    EXPECT_FALSE(server_.received.empty());
    return server_.received.empty() ? name::NameMessage{} : server_.received.back();
  }

  // Opens waiting at each replica.
  std::size_t opens_at(std::size_t index) { return replica(index).drain(stack::kTcpOpenKind).size(); }

  FakeStack stack_;
  NameServerSide server_;
};

TEST_F(TcpPlacementTest, AConnectAsksTheNameServerFirstAndWaits) {
  auto id = sockets().connect(kPeer, 5001);
  ASSERT_TRUE(id.ok());
  ASSERT_EQ(server_.received.size(), 1u);
  const name::NameMessage lookup = last_lookup();
  EXPECT_EQ(lookup.kind, name::NameMsgKind::lookup);
  EXPECT_EQ(name::name_of(lookup), "/net/tcp");
  EXPECT_EQ(lookup.client, kSelf);
  EXPECT_EQ(lookup.from, name::kClientSource);
  EXPECT_NE(lookup.cookie, 0u);
  EXPECT_TRUE(name::well_formed(lookup));
  // Nothing went to a replica yet; the socket is connecting.
  EXPECT_EQ(opens_at(0) + opens_at(1), 0u);
  EXPECT_EQ(sockets().pending_lookups(), 1u);
  EXPECT_FALSE(sockets().replica_of(id.value()).has_value());
  EXPECT_FALSE(sockets().writable(id.value()));
  EXPECT_FALSE(sockets().connected(id.value()));
  EXPECT_EQ(sockets().error(id.value()), 0);
  auto early = sockets().send(id.value(), std::vector<std::byte>(4));
  ASSERT_FALSE(early.ok());
  EXPECT_EQ(early.error().code, Errc::would_block);
  ASSERT_TRUE(server_.wake_at.has_value());
  EXPECT_EQ(*server_.wake_at, server_.now_ms + TcpSockets::kLookupTimeoutMs);
}

TEST_F(TcpPlacementTest, EachConnectionGoesWhereItsOwnLookupSays) {
  // Round robin would alternate; the answers send all three to replica 1, then one to replica 0.
  std::vector<int> ids;
  std::vector<name::NameMessage> lookups;
  for (int i = 0; i < 4; ++i) {
    auto id = sockets().connect(kPeer, static_cast<std::uint16_t>(5001 + i));
    ASSERT_TRUE(id.ok());
    ids.push_back(id.value());
    lookups.push_back(last_lookup());
  }
  EXPECT_EQ(server_.received.size(), 4u);  // uncached: one lookup per connection
  EXPECT_NE(lookups[0].cookie, lookups[1].cookie);
  for (int i = 0; i < 3; ++i) sockets().handle_name_reply(reply_to(lookups[i], kReplicaComponents[1]));
  sockets().handle_name_reply(reply_to(lookups[3], kReplicaComponents[0]));
  auto at_one = replica(1).drain(stack::kTcpOpenKind);
  auto at_zero = replica(0).drain(stack::kTcpOpenKind);
  ASSERT_EQ(at_one.size(), 3u);
  ASSERT_EQ(at_zero.size(), 1u);
  EXPECT_EQ(at_one[0].read<TcpOpenBody>().remote_port, 5001);
  EXPECT_EQ(at_one[2].read<TcpOpenBody>().remote_port, 5003);
  EXPECT_EQ(at_zero[0].read<TcpOpenBody>().remote_port, 5004);
  EXPECT_EQ(sockets().replica_of(ids[0]), 1u);
  EXPECT_EQ(sockets().replica_of(ids[3]), 0u);
  EXPECT_EQ(sockets().placement_stats().by_name, 4u);
  EXPECT_EQ(sockets().placement_stats().by_fallback, 0u);
  EXPECT_EQ(sockets().pending_lookups(), 0u);

  // The placed connection completes as any other.
  const std::uint32_t page = replica(1).answer_open(at_one[0].read<TcpOpenBody>());
  replica(1).set_status(page, TcpSocketStatus::connected);
  replica(1).event(page);
  EXPECT_TRUE(sockets().connected(ids[0]));
  EXPECT_TRUE(sockets().writable(ids[0]));
  auto sent = sockets().send(ids[0], std::vector<std::byte>(100, std::byte{7}));
  ASSERT_TRUE(sent.ok());
  EXPECT_EQ(sent.value(), 100u);
}

TEST_F(TcpPlacementTest, OptionsAndShutdownAskedWhileWaitingReachTheReplica) {
  auto id = sockets().connect(kPeer, 5001, SocketOptions{.no_delay = true});
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(sockets().set_option(id.value(), stack::TcpOption::keepalive, 1).ok());
  ASSERT_TRUE(sockets().shutdown_write(id.value()).ok());
  sockets().handle_name_reply(reply_to(last_lookup(), kReplicaComponents[1]));
  const TcpOpenBody open = replica(1).take_open();
  EXPECT_EQ(open.options, stack::kTcpOpenNoDelay);
  const std::uint32_t page = replica(1).answer_open(open);
  EXPECT_EQ(replica(1).drain(stack::kTcpOptionKind).size(), 1u);
  EXPECT_NE(replica(1).take_requests(page) & kTcpRequestShutdownWrite, 0u);
}

TEST_F(TcpPlacementTest, AnErrorAnswerFallsBackToRoundRobin) {
  auto id = sockets().connect(kPeer, 5001);
  ASSERT_TRUE(id.ok());
  sockets().handle_name_reply(reply_to(last_lookup(), kNoComponent, name::NameErrc::not_found));
  EXPECT_EQ(opens_at(0), 1u);
  EXPECT_EQ(sockets().replica_of(id.value()), 0u);
  EXPECT_EQ(sockets().placement_stats().error_replies, 1u);
  EXPECT_EQ(sockets().placement_stats().by_fallback, 1u);
  EXPECT_EQ(sockets().placement_stats().by_name, 0u);
}

TEST_F(TcpPlacementTest, AnAnswerNamingNoReplicaOfOursFallsBack) {
  auto first = sockets().connect(kPeer, 5001);
  auto second = sockets().connect(kPeer, 5002);
  ASSERT_TRUE(first.ok() && second.ok());
  sockets().handle_name_reply(reply_to(server_.received[0], 99));
  sockets().handle_name_reply(reply_to(server_.received[1], kNoComponent));
  // Round robin from the start: replica 0, then replica 1.
  EXPECT_EQ(sockets().replica_of(first.value()), 0u);
  EXPECT_EQ(sockets().replica_of(second.value()), 1u);
  EXPECT_EQ(opens_at(0), 1u);
  EXPECT_EQ(opens_at(1), 1u);
  EXPECT_EQ(sockets().placement_stats().unknown_replicas, 2u);
  EXPECT_EQ(sockets().placement_stats().by_fallback, 2u);
}

TEST_F(TcpPlacementTest, NoAnswerInTimeFallsBackAndTheLateAnswerIsIgnored) {
  auto id = sockets().connect(kPeer, 5001);
  ASSERT_TRUE(id.ok());
  const name::NameMessage lookup = last_lookup();
  server_.now_ms += TcpSockets::kLookupTimeoutMs - 1;
  sockets().expire_lookups();
  EXPECT_EQ(sockets().pending_lookups(), 1u);
  EXPECT_EQ(opens_at(0) + opens_at(1), 0u);
  server_.now_ms += 1;
  sockets().expire_lookups();
  EXPECT_EQ(sockets().pending_lookups(), 0u);
  EXPECT_EQ(opens_at(0), 1u);
  EXPECT_EQ(sockets().placement_stats().timeouts, 1u);
  EXPECT_EQ(sockets().placement_stats().by_fallback, 1u);

  sockets().handle_name_reply(reply_to(lookup, kReplicaComponents[1]));
  EXPECT_EQ(opens_at(0) + opens_at(1), 0u);
  EXPECT_EQ(sockets().replica_of(id.value()), 0u);
  EXPECT_EQ(sockets().placement_stats().late_replies, 1u);
  EXPECT_EQ(sockets().placement_stats().by_name, 0u);
}

TEST_F(TcpPlacementTest, TimeoutsExpireOldestFirstAndAskToBeWokenForTheNext) {
  auto first = sockets().connect(kPeer, 5001);
  server_.now_ms += 50;
  auto second = sockets().connect(kPeer, 5002);
  ASSERT_TRUE(first.ok() && second.ok());
  server_.now_ms += TcpSockets::kLookupTimeoutMs - 50;
  sockets().expire_lookups();
  EXPECT_FALSE(sockets().replica_of(second.value()).has_value());
  EXPECT_TRUE(sockets().replica_of(first.value()).has_value());
  ASSERT_TRUE(server_.wake_at.has_value());
  EXPECT_EQ(*server_.wake_at, server_.now_ms + 50);
}

// The seat's earlier program counted its cookies from the same low number: its late reply is not
// taken for ours.
TEST_F(TcpPlacementTest, AReplyToTheSeatsEarlierProgramDoesNotPlace) {
  auto id = sockets().connect(kPeer, 5001);
  ASSERT_TRUE(id.ok());
  const name::NameMessage lookup = last_lookup();
  EXPECT_NE(lookup.cookie >> 32, 0u) << "cookies count from 1, as every program's would";
  name::NameMessage earlier = reply_to(lookup, kReplicaComponents[1]);
  earlier.cookie = lookup.cookie ^ (std::uint64_t{1} << 40);
  sockets().handle_name_reply(earlier);
  EXPECT_EQ(opens_at(0) + opens_at(1), 0u);
  EXPECT_EQ(sockets().pending_lookups(), 1u);
  sockets().handle_name_reply(reply_to(lookup, kReplicaComponents[1]));
  EXPECT_EQ(sockets().replica_of(id.value()), 1u);
}

TEST_F(TcpPlacementTest, AnswersThatFailTheChecksAreCountedAndIgnored) {
  auto id = sockets().connect(kPeer, 5001);
  ASSERT_TRUE(id.ok());
  const name::NameMessage lookup = last_lookup();
  name::NameMessage forged_cookie = reply_to(lookup, kReplicaComponents[1]);
  forged_cookie.cookie = lookup.cookie + 1000;
  name::NameMessage zero_cookie = reply_to(lookup, kReplicaComponents[1]);
  zero_cookie.cookie = 0;
  name::NameMessage other_client = reply_to(lookup, kReplicaComponents[1]);
  other_client.client = kSelf + 1;
  name::NameMessage other_server = reply_to(lookup, kReplicaComponents[1]);
  other_server.from = static_cast<name::MemberId>(kServer + 1);
  name::NameMessage not_a_reply = reply_to(lookup, kReplicaComponents[1]);
  not_a_reply.kind = name::NameMsgKind::lookup;
  name::NameMessage garbage;
  std::memset(static_cast<void*>(&garbage), 0xa5, sizeof garbage);
  for (const auto& bad : {forged_cookie, zero_cookie, other_client, other_server, not_a_reply, garbage}) {
    sockets().handle_name_reply(bad);
  }
  EXPECT_EQ(sockets().placement_stats().bad_replies, 6u);
  EXPECT_EQ(sockets().pending_lookups(), 1u);
  EXPECT_EQ(opens_at(0) + opens_at(1), 0u);
  // The genuine answer still places it; a copy of it afterwards is late.
  sockets().handle_name_reply(reply_to(lookup, kReplicaComponents[1]));
  EXPECT_EQ(opens_at(1), 1u);
  sockets().handle_name_reply(reply_to(lookup, kReplicaComponents[0]));
  EXPECT_EQ(opens_at(0), 0u);
  EXPECT_EQ(sockets().replica_of(id.value()), 1u);
  EXPECT_EQ(sockets().placement_stats().by_name, 1u);
  EXPECT_EQ(sockets().placement_stats().late_replies, 1u);
}

TEST_F(TcpPlacementTest, AFullNameChannelFallsBackAtOnce) {
  server_.room = false;
  auto id = sockets().connect(kPeer, 5001);
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(opens_at(0), 1u);
  EXPECT_EQ(sockets().pending_lookups(), 0u);
  EXPECT_EQ(sockets().placement_stats().unsent, 1u);
  EXPECT_EQ(sockets().placement_stats().by_fallback, 1u);
}

TEST_F(TcpPlacementTest, AConnectionClosedWhileWaitingNeverReachesAReplica) {
  auto id = sockets().connect(kPeer, 5001);
  ASSERT_TRUE(id.ok());
  const name::NameMessage lookup = last_lookup();
  ASSERT_TRUE(sockets().close(id.value()).ok());
  EXPECT_EQ(sockets().pending_lookups(), 0u);
  EXPECT_EQ(sockets().open_sockets(), 0u);
  sockets().handle_name_reply(reply_to(lookup, kReplicaComponents[0]));
  server_.now_ms += TcpSockets::kLookupTimeoutMs;
  sockets().expire_lookups();
  EXPECT_EQ(opens_at(0) + opens_at(1), 0u);
  EXPECT_EQ(sockets().placement_stats().late_replies, 1u);
  EXPECT_EQ(sockets().placement_stats().by_name + sockets().placement_stats().by_fallback, 0u);
}

TEST_F(TcpPlacementTest, AReplicaRestartDoesNotTouchAConnectionStillWaiting) {
  auto id = sockets().connect(kPeer, 5001);
  ASSERT_TRUE(id.ok());
  sockets().replica_restarted(0);
  EXPECT_EQ(sockets().error(id.value()), 0);
  sockets().handle_name_reply(reply_to(last_lookup(), kReplicaComponents[0]));
  EXPECT_EQ(opens_at(0), 1u);
  EXPECT_EQ(sockets().error(id.value()), 0);
}

TEST(TcpPlacement, TheNameFleetNeedsOneComponentPerReplica) {
  FakeStack stack;
  NameServerSide server;
  EXPECT_FALSE(stack.sockets->use_name_fleet(std::make_unique<FakeNameLink>(server), TcpNamePeers{kSelf, kServer, {11}}).ok());
  EXPECT_FALSE(stack.sockets->use_name_fleet(nullptr, TcpNamePeers{kSelf, kServer, {11, 12}}).ok());
}

TEST(TcpPlacement, WithoutANameServerConnectionsGoRoundRobin) {
  FakeStack stack;
  std::vector<int> ids;
  for (int i = 0; i < 4; ++i) {
    auto id = stack.sockets->connect(kPeer, 5001);
    ASSERT_TRUE(id.ok());
    ids.push_back(id.value());
  }
  for (int i = 0; i < 4; ++i) EXPECT_EQ(stack.sockets->replica_of(ids[i]), static_cast<std::size_t>(i % 2));
  EXPECT_EQ(stack.replica(0).drain(stack::kTcpOpenKind).size(), 2u);
  EXPECT_EQ(stack.replica(1).drain(stack::kTcpOpenKind).size(), 2u);
  EXPECT_EQ(stack.sockets->pending_lookups(), 0u);
  EXPECT_EQ(stack.sockets->placement_stats().by_name + stack.sockets->placement_stats().by_fallback, 0u);
  // A stray name message is not taken for an answer.
  name::NameMessage reply;
  reply.kind = name::NameMsgKind::reply;
  stack.sockets->handle_name_reply(reply);
  EXPECT_EQ(stack.sockets->placement_stats().by_name, 0u);
}

}  // namespace
}  // namespace flotilla::sockets
