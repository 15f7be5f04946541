// Connections shared over fork (issue 14), through TcpSockets and the real replicas
// (replica_loopback.hpp): a process pins its connections before it forks, a close of a pinned
// connection leaves it open, a fork child claims one into its own seat with every unread and
// unsent byte, and once every process of a fork is gone its pins go and a connection nobody holds
// is closed. A parent that did not close its copy holds the connection still: it may use it again,
// the carrier's exit or close hands it back, and the last holder's close ends it.
#include <cerrno>
#include <optional>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include "sockets/tests/replica_loopback.hpp"

namespace flotilla::sockets {
namespace {

using testing::kStackAddress;
using testing::LoopbackSettings;
using testing::ReplicaLoopback;

constexpr std::uint16_t kPort = 7000;
constexpr std::uint64_t kFork = 0x1234'5678'9abc'def0ull;

// Application 0 is the server that accepts and forks, 1 its child, 2 the client.
class ForkClaims : public ::testing::Test {
 protected:
  ForkClaims() : net_(LoopbackSettings{.replicas = 2, .pages = 16, .ring_bytes = 1u << 14, .apps = 3}) {}

  void SetUp() override {
    listener_ = net_.listen_on_every_replica(kPort, 0);
    ASSERT_GE(listener_, 0);
    std::tie(client_, server_) = net_.connect_to(listener_, kPort, 0, 2);
    ASSERT_GE(server_, 0);
  }

  TcpSockets& parent() { return net_.sockets(0); }
  TcpSockets& child() { return net_.sockets(1); }
  TcpSockets& client_side() { return net_.sockets(2); }
  std::uint64_t total(std::string_view counter) { return net_.counter(0, counter) + net_.counter(1, counter); }

  void send_all(TcpSockets& sockets, int socket, std::string_view text) {
    std::size_t sent = 0;
    ASSERT_TRUE(net_.run_until([&] {
      auto wrote = sockets.send(socket, std::as_bytes(std::span(text.substr(sent))));
      if (wrote) sent += wrote.value();
      return sent == text.size();
    }));
  }
  // Everything `socket` receives until `bytes` arrived (or EOF).
  std::string receive(TcpSockets& sockets, int socket, std::size_t bytes) {
    std::string got;
    (void)net_.run_until([&] {
      char buffer[256];
      auto read = sockets.recv(socket, std::as_writable_bytes(std::span(buffer)));
      if (read && read.value() > 0) got.append(buffer, read.value());
      return got.size() >= bytes || (read && read.value() == 0);
    }, 2'000'000'000);
    return got;
  }
  // `text` sent on `from_socket` arrives whole on `to_socket`.
  void expect_carried(TcpSockets& from, int from_socket, TcpSockets& to, int to_socket, std::string_view text) {
    send_all(from, from_socket, text);
    EXPECT_EQ(receive(to, to_socket, text.size()), text);
  }
  // Whether the client saw its connection end (EOF or an error) within a simulated second.
  bool client_sees_end() {
    return net_.run_until([&] { return client_side().eof(client_) || client_side().error(client_) != 0; },
                          1'000'000'000);
  }

  // The parent forks, pinning its connections, and the child claims the server's: the child's socket.
  int fork_and_claim() {
    if (!parent().hold_for_fork(kFork)) return -1;
    share_ = parent().share_connection(server_);
    if (!share_) return -1;
    auto claimed = child().claim(*share_, kFork);
    return claimed ? claimed.value() : -1;
  }

  // The page of `socket` of application `app`, as its process sees it.
  formats::TcpSocketPageHeader* page_of(std::size_t app, int socket) {
    const auto share = net_.sockets(app).share_connection(socket);
    if (!share) return nullptr;
    return net_.region(share->replica, app).page(share->page);
  }
  // What a process interrupted inside its send does when it goes on: `text` lands in the send ring
  // of the page it was carrying, and it leaves the rings.
  void finish_interrupted_send(std::size_t app, int socket, std::string_view text) {
    const auto share = net_.sockets(app).share_connection(socket);
    ASSERT_TRUE(share.has_value());
    formats::TcpRegion region = net_.region(share->replica, app);
    formats::TcpSocketPageHeader* page = region.page(share->page);
    ASSERT_NE(page, nullptr);
    formats::ByteRingProducer ring(&page->send, region.send_bytes(share->page), page->send.tail.load());
    ASSERT_EQ(ring.write(std::as_bytes(std::span(text))), text.size());
    page->control.in_use.store(0);
  }

  // The child carries the connection (after one send of its own) and is interrupted inside a send;
  // then the parent's send asks for the connection. The child's socket, or -1.
  int child_interrupted_while_parent_asks() {
    const int mine = fork_and_claim();
    if (mine < 0) return -1;
    expect_carried(child(), mine, client_side(), client_, "one ");
    formats::TcpSocketPageHeader* carrier = page_of(1, mine);
    if (carrier == nullptr) return -1;
    carrier->control.in_use.store(1);
    const std::string_view two = "two";
    EXPECT_FALSE(parent().send(server_, std::as_bytes(std::span(two))).ok());
    net_.pump();
    return mine;
  }

  ReplicaLoopback net_;
  std::optional<ConnectionShare> share_;
  int listener_ = -1;
  int client_ = -1;
  int server_ = -1;
};

TEST_F(ForkClaims, AChildTakesOverAConnectionItsParentClosedWithItsUnreadAndUnsentBytes) {
  send_all(client_side(), client_, "request");
  send_all(parent(), server_, "hello ");
  ASSERT_TRUE(parent().hold_for_fork(kFork));
  const auto share = parent().share_connection(server_);
  ASSERT_TRUE(share.has_value());
  ASSERT_TRUE(parent().close(server_).ok());
  EXPECT_FALSE(client_sees_end()) << "the parent's close ended a connection its child still holds";
  auto claimed = child().claim(*share, kFork);
  ASSERT_TRUE(claimed.ok());
  const int mine = claimed.value();
  EXPECT_EQ(receive(child(), mine, 7), "request");
  EXPECT_EQ(child().error(mine), 0);
  send_all(child(), mine, "world");
  EXPECT_EQ(receive(client_side(), client_, 11), "hello world");
  EXPECT_EQ(total("claims"), 1u);
  // The child is the last holder: its close ends the connection.
  ASSERT_TRUE(child().close(mine).ok());
  EXPECT_TRUE(client_sees_end());
  EXPECT_EQ(client_side().error(client_), 0);
}

TEST_F(ForkClaims, AClosedConnectionNoChildClaimedEndsWhenItsForkEnds) {
  ASSERT_TRUE(parent().hold_for_fork(kFork));
  ASSERT_TRUE(parent().close(server_).ok());
  EXPECT_FALSE(client_sees_end());
  net_.fork_ended(kFork);
  EXPECT_TRUE(client_sees_end());
  EXPECT_EQ(client_side().error(client_), 0);  // a FIN: nothing was left unread
}

TEST_F(ForkClaims, AConnectionStillInTheAcceptQueueAtTheForkIsNotPinned) {
  auto later = client_side().connect(kStackAddress, kPort);
  ASSERT_TRUE(later.ok());
  ASSERT_TRUE(net_.run_until([&] { return parent().acceptable(listener_) && client_side().connected(later.value()); }));
  ASSERT_TRUE(parent().hold_for_fork(kFork));
  net_.pump();
  auto accepted = parent().accept(listener_);
  ASSERT_TRUE(accepted.ok());
  // The child never had it: the parent's close ends it.
  ASSERT_TRUE(parent().close(accepted.value()).ok());
  EXPECT_TRUE(net_.run_until([&] { return client_side().eof(later.value()); }, 1'000'000'000));
  // The one accepted before the fork is pinned.
  ASSERT_TRUE(parent().close(server_).ok());
  EXPECT_FALSE(client_sees_end());
}

TEST_F(ForkClaims, AClaimWithoutItsForksPinIsRefused) {
  ASSERT_TRUE(parent().hold_for_fork(kFork));
  const auto share = parent().share_connection(server_);
  ASSERT_TRUE(share.has_value());
  auto wrong = child().claim(*share, kFork + 1);
  ASSERT_TRUE(wrong.ok());
  ASSERT_TRUE(net_.run_until([&] { return child().error(wrong.value()) != 0; }));
  EXPECT_EQ(child().error(wrong.value()), EBADF);
  // The fork ended: its pin is no proof any more, and the parent's connection goes on.
  net_.fork_ended(kFork);
  auto late = child().claim(*share, kFork);
  ASSERT_TRUE(late.ok());
  ASSERT_TRUE(net_.run_until([&] { return child().error(late.value()) != 0; }));
  EXPECT_EQ(child().error(late.value()), EBADF);
  EXPECT_FALSE(client_sees_end());
  expect_carried(parent(), server_, client_side(), client_, "still here");
}

TEST_F(ForkClaims, AClaimThatComesBeforeItsForksHoldWaitsForIt) {
  const auto share = parent().share_connection(server_);
  ASSERT_TRUE(share.has_value());
  auto claimed = child().claim(*share, kFork);
  ASSERT_TRUE(claimed.ok());
  net_.pump();
  EXPECT_EQ(child().error(claimed.value()), 0);
  ASSERT_TRUE(parent().hold_for_fork(kFork));
  ASSERT_TRUE(parent().close(server_).ok());
  expect_carried(child(), claimed.value(), client_side(), client_, "late");
  EXPECT_EQ(total("claims"), 1u);
  EXPECT_EQ(total("claims_refused"), 0u);
}

TEST_F(ForkClaims, PinsOutliveTheParentsLeaseAndAReplicaCrash) {
  send_all(client_side(), client_, "queued");
  ASSERT_TRUE(parent().hold_for_fork(kFork));
  const auto share = parent().share_connection(server_);
  ASSERT_TRUE(share.has_value());
  net_.pump();
  net_.restart_app(0);  // the parent exits
  EXPECT_FALSE(client_sees_end());
  net_.crash(share->replica);
  auto claimed = child().claim(*share, kFork);
  ASSERT_TRUE(claimed.ok());
  EXPECT_EQ(receive(child(), claimed.value(), 6), "queued");
  expect_carried(child(), claimed.value(), client_side(), client_, "answer");
}

// Holders: the parent that did not close its copy holds the connection still.
TEST_F(ForkClaims, AParentUsesTheConnectionAfterTheChildThatClaimedItExits) {
  send_all(client_side(), client_, "request");
  const int mine = fork_and_claim();
  ASSERT_GE(mine, 0);
  EXPECT_EQ(receive(child(), mine, 7), "request");
  expect_carried(child(), mine, client_side(), client_, "from the child ");
  // The child carries it: the parent's copy is readable as the child's is (a poller holding it
  // wakes, as every Linux process polling one socket does); the bytes wait for whoever reads.
  EXPECT_FALSE(parent().readable(server_));
  send_all(client_side(), client_, "later");
  net_.pump();
  EXPECT_TRUE(parent().readable(server_));
  EXPECT_EQ(parent().error(server_), 0);
  net_.restart_app(1);  // the child exits
  net_.fork_ended(kFork);
  EXPECT_FALSE(client_sees_end()) << "the child's exit ended a connection its parent holds";
  EXPECT_EQ(total("returns_to_holders"), 1u);
  EXPECT_EQ(receive(parent(), server_, 5), "later");
  expect_carried(parent(), server_, client_side(), client_, "from the parent");
  // The parent is the last holder: its close ends the connection, in order.
  ASSERT_TRUE(parent().close(server_).ok());
  EXPECT_TRUE(client_sees_end());
  EXPECT_EQ(client_side().error(client_), 0);
}

TEST_F(ForkClaims, AParentAndItsLiveChildTakeTurnsCarryingTheConnection) {
  const int mine = fork_and_claim();
  ASSERT_GE(mine, 0);
  expect_carried(child(), mine, client_side(), client_, "one ");
  expect_carried(parent(), server_, client_side(), client_, "two ");  // asks for it back
  EXPECT_TRUE(child().writable(mine)) << "the holder sees the carrier's room";
  EXPECT_FALSE(child().readable(mine));
  expect_carried(child(), mine, client_side(), client_, "three ");
  expect_carried(client_side(), client_, child(), mine, "four");
  expect_carried(client_side(), client_, parent(), server_, "five");
  EXPECT_GE(total("carries"), 3u);
  // The child lets go first: the connection goes back to the parent, which closes it last.
  ASSERT_TRUE(child().close(mine).ok());
  EXPECT_FALSE(client_sees_end());
  expect_carried(parent(), server_, client_side(), client_, "six");
  ASSERT_TRUE(parent().close(server_).ok());
  EXPECT_TRUE(client_sees_end());
  EXPECT_EQ(client_side().error(client_), 0);
}

TEST_F(ForkClaims, AHolderThatClosesFirstLeavesTheCarrierTheLastHolder) {
  const int mine = fork_and_claim();
  ASSERT_GE(mine, 0);
  expect_carried(child(), mine, client_side(), client_, "x");
  ASSERT_TRUE(parent().close(server_).ok());
  EXPECT_FALSE(client_sees_end());
  ASSERT_TRUE(child().close(mine).ok());
  EXPECT_TRUE(client_sees_end());
}

TEST_F(ForkClaims, TheHoldersOfAConnectionSurviveAReplicaCrash) {
  const int mine = fork_and_claim();
  ASSERT_GE(mine, 0);
  expect_carried(child(), mine, client_side(), client_, "before ");
  net_.crash(share_->replica);
  EXPECT_EQ(parent().error(server_), 0);
  expect_carried(parent(), server_, client_side(), client_, "after");
  // The parent carries it now, the child holds it: the child's close leaves it open.
  ASSERT_TRUE(child().close(mine).ok());
  EXPECT_FALSE(client_sees_end());
  ASSERT_TRUE(parent().close(server_).ok());
  EXPECT_TRUE(client_sees_end());
}

// A holder's close still waiting in its outbox (the channel full) when the replica restarts is
// told to the new incarnation: the carrier's close then ends the connection.
TEST_F(ForkClaims, AHoldersCloseWaitingAtAReplicaCrashStillCounts) {
  const int mine = fork_and_claim();
  ASSERT_GE(mine, 0);
  expect_carried(child(), mine, client_side(), client_, "x");
  net_.set_room(0, false);
  ASSERT_TRUE(parent().close(server_).ok());
  net_.crash(share_->replica);
  net_.pump();
  net_.set_room(0, true);
  net_.pump();
  EXPECT_FALSE(client_sees_end());
  ASSERT_TRUE(child().close(mine).ok());
  EXPECT_TRUE(client_sees_end());
}

TEST_F(ForkClaims, ACarryNamingACarrierOrAStalePageChangesNothing) {
  const auto share = parent().share_connection(server_);
  ASSERT_TRUE(share.has_value());
  // The parent carries it: a carry changes nothing; one naming a wrong generation is stale.
  net_.send_raw(share->replica, Message::make(stack::kTcpCarryKind, stack::TcpPageBody{share->page, share->generation}));
  net_.send_raw(share->replica, Message::make(stack::kTcpCarryKind, stack::TcpPageBody{share->page, share->generation + 7}));
  net_.pump();
  EXPECT_EQ(total("carries"), 0u);
  expect_carried(parent(), server_, client_side(), client_, "fine");
}

// A holder's ask waits while the carrier's process is inside a ring operation: what that operation
// writes is carried along, not lost with the old page.
TEST_F(ForkClaims, ACarryWaitsUntilTheCarrierIsOutsideItsRings) {
  const int mine = child_interrupted_while_parent_asks();
  ASSERT_GE(mine, 0);
  EXPECT_EQ(total("carries"), 0u) << "moved while the carrier was inside its rings";
  EXPECT_GE(total("carries_waited"), 1u);
  finish_interrupted_send(1, mine, "mid ");
  send_all(parent(), server_, "two");
  EXPECT_EQ(receive(client_side(), client_, 7), "mid two");
  // The child, revoked and then a holder, gets it back when it uses it again.
  expect_carried(child(), mine, client_side(), client_, "three");
}

// A process leaving its rings says nothing: a move that waits for it wakes its replica itself,
// which then moves the connection with no further message.
TEST_F(ForkClaims, AWaitingCarryWakesItsReplicaWithoutAnotherMessage) {
  const int mine = child_interrupted_while_parent_asks();
  ASSERT_GE(mine, 0);
  const auto share = child().share_connection(mine);
  ASSERT_TRUE(share.has_value());
  tcp::ReplicaServer& replica = net_.server(share->replica);
  EXPECT_LE(replica.next_deadline_ns(), net_.now_ns() + 1'000'000) << "the waiting carry sleeps until a message";
  const std::uint64_t carries = total("carries");
  page_of(1, mine)->control.in_use.store(0);
  (void)replica.poll(replica.next_deadline_ns());
  EXPECT_EQ(total("carries"), carries + 1);
  send_all(parent(), server_, "two");
  EXPECT_EQ(receive(client_side(), client_, 3), "two");
}

// A fork child's claim waits the same way for a parent still inside its rings.
TEST_F(ForkClaims, AClaimWaitsUntilTheParentIsOutsideItsRings) {
  expect_carried(parent(), server_, client_side(), client_, "one ");
  formats::TcpSocketPageHeader* carrier = page_of(0, server_);
  ASSERT_NE(carrier, nullptr);
  carrier->control.in_use.store(1);  // the parent is inside a send
  const int mine = fork_and_claim();
  ASSERT_GE(mine, 0);
  net_.pump();
  EXPECT_EQ(total("claims"), 0u) << "claimed while the parent was inside its rings";
  finish_interrupted_send(0, server_, "mid ");
  send_all(child(), mine, "two");
  EXPECT_EQ(receive(client_side(), client_, 7), "mid two");
  EXPECT_EQ(total("claims"), 1u);
}

// A carrier whose process died inside its rings never leaves them: its lease's end hands the
// connection to the holder that waits.
TEST_F(ForkClaims, ACarrierThatDiedInsideItsRingsHandsTheConnectionOver) {
  ASSERT_GE(child_interrupted_while_parent_asks(), 0);
  net_.restart_app(1);
  send_all(parent(), server_, "two");
  EXPECT_EQ(receive(client_side(), client_, 3), "two");
  EXPECT_FALSE(client_sees_end());
}

}  // namespace
}  // namespace flotilla::sockets
