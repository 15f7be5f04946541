// Listener groups (issue 14), through TcpSockets and the real replicas (replica_loopback.hpp) with
// several applications: processes that inherited a listener join its group and share one accept
// queue, as on Linux. A member gets new connections once its process accepts (activate); each goes
// to an accepting member waiting to accept, with the shortest accept queue, round robin on ties;
// one that comes while no member waits is held for whichever accepts first (a take), and every
// member reads readable meanwhile. A member that leaves takes nothing with it from the others: the
// connections queued at it go to another member.
#include <cerrno>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "sockets/tests/replica_loopback.hpp"

namespace flotilla::sockets {
namespace {

using testing::kStackAddress;
using testing::LoopbackSettings;
using testing::ReplicaLoopback;

constexpr std::uint16_t kPort = 8080;

// Application 0 is the process that opened the listener (an nginx master) and makes the client
// connections; 1 and 2 are its forked workers.
class ListenerGroups : public ::testing::Test {
 protected:
  ListenerGroups() : net_(LoopbackSettings{.replicas = 2, .pages = 48, .ring_bytes = 1u << 14, .apps = 3}) {}

  std::uint64_t total(std::string_view counter) { return net_.counter(0, counter) + net_.counter(1, counter); }

  // Worker 1 is placed connections whose clients send a request, and leaves them queued; worker 2
  // joins, then worker 1 leaves (`leave`). Worker 2 must accept every one with its request intact,
  // and its answer must reach the client.
  template <typename Leave>
  void queued_connections_go_to_the_member_that_stays(Leave&& leave) {
    constexpr int kQueued = 8;
    const int home = net_.listen_on_every_replica(kPort);
    const int leaving = net_.join_listener(1, 0, home);
    ASSERT_GE(leaving, 0);
    const std::vector<int> clients = clients_with_requests(kQueued);
    ASSERT_EQ(clients.size(), static_cast<std::size_t>(kQueued));
    ASSERT_TRUE(net_.run_until([&] { return net_.sockets(1).acceptable(leaving); }));
    const int staying = net_.join_listener(2, 0, home);
    ASSERT_GE(staying, 0);
    leave(leaving);
    expect_served(2, staying, clients);
    EXPECT_EQ(total("group_moved_on_leave"), static_cast<std::uint64_t>(kQueued));
    EXPECT_EQ(total("group_reset_on_leave"), 0u);
  }

  // `count` clients of application 0 connected to kPort, client i having sent "request i", which
  // has arrived.
  std::vector<int> clients_with_requests(int count) {
    const auto spread = net_.connect_many(0, kPort, count, {});
    for (std::size_t i = 0; i < spread.clients.size(); ++i) {
      write_all(net_.sockets(0), spread.clients[i], "request " + std::to_string(i));
    }
    (void)net_.run_until([] { return false; }, 10'000'000);
    return spread.clients;
  }
  // Application 0 listens on kPort and never accepts (a master): `count` clients_with_requests
  // come, and are held, unannounced; its poll sees the listener readable (postfix's master forks
  // a server when it does). Returns the listener and the clients.
  std::pair<int, std::vector<int>> held_by_a_lone_master(int count) {
    const int home = net_.listen_on_every_replica(kPort);
    std::vector<int> clients = clients_with_requests(count);
    EXPECT_EQ(total("group_held"), static_cast<std::uint64_t>(count));
    EXPECT_TRUE(net_.sockets(0).acceptable(home));
    EXPECT_FALSE(net_.sockets(0).queued(home));
    return {home, std::move(clients)};
  }
  // Application `server` accepts one connection on `listener` for each of `clients`
  // (clients_with_requests): every request arrives intact, and every answer reaches its client.
  void expect_served(std::size_t server, int listener, const std::vector<int>& clients) {
    TcpSockets& sockets = net_.sockets(server);
    std::vector<int> accepted;
    ASSERT_TRUE(net_.run_until([&] {
      while (auto next = sockets.accept(listener)) accepted.push_back(next.value());
      return accepted.size() == clients.size();
    }));
    std::set<std::string> requests;
    for (const int connection : accepted) {
      const std::string request = read_exactly(sockets, connection, 9);
      requests.insert(request);
      write_all(sockets, connection, "answer to " + request);
    }
    std::set<std::string> expected;
    for (std::size_t i = 0; i < clients.size(); ++i) expected.insert("request " + std::to_string(i));
    EXPECT_EQ(requests, expected);
    for (std::size_t i = 0; i < clients.size(); ++i) {
      EXPECT_EQ(read_exactly(net_.sockets(0), clients[i], 19), "answer to request " + std::to_string(i));
      EXPECT_EQ(net_.sockets(0).error(clients[i]), 0);
    }
  }

  void write_all(TcpSockets& sockets, int socket, const std::string& text) {
    std::size_t written = 0;
    ASSERT_TRUE(net_.run_until([&] {
      if (auto wrote = sockets.send(socket, std::as_bytes(std::span(text).subspan(written)))) written += wrote.value();
      return written == text.size() || sockets.error(socket) != 0;
    }));
    EXPECT_EQ(written, text.size());
  }
  // The first `bytes` bytes `socket` receives (fewer at EOF, an error, or after a simulated second).
  std::string read_exactly(TcpSockets& sockets, int socket, std::size_t bytes) {
    std::string got(bytes, '\0');
    std::size_t filled = 0;
    (void)net_.run_until([&] {
      auto read = sockets.recv(socket, std::as_writable_bytes(std::span(got).subspan(filled)));
      if (read) filled += read.value();
      return filled == bytes || (read && read.value() == 0) || sockets.error(socket) != 0;
    }, 1'000'000'000);
    got.resize(filled);
    return got;
  }

  ReplicaLoopback net_;
};

// A master listens alone and never accepts (apache2, nginx): connections that come before its
// workers join wait at the replica, and are the first accepting worker's, requests intact; the
// master's process is told of none of them.
TEST_F(ListenerGroups, ConnectionsPlacedWithALoneMasterGoToTheFirstWorkerThatAccepts) {
  const auto [home, clients] = held_by_a_lone_master(4);
  ASSERT_EQ(clients.size(), 4u);
  // A worker joins, not accepting yet: nothing moves, but its poll sees them too.
  const int worker = net_.join_listener(1, 0, home, /*active=*/false);
  ASSERT_GE(worker, 0);
  (void)net_.run_until([] { return false; }, 10'000'000);
  EXPECT_TRUE(net_.sockets(1).acceptable(worker));
  EXPECT_FALSE(net_.sockets(1).queued(worker));
  EXPECT_EQ(total("group_takes"), 0u);
  expect_served(1, worker, clients);
  EXPECT_EQ(total("group_takes"), 4u);  // each accept took one from the master's region
  EXPECT_FALSE(net_.sockets(0).acceptable(home));
  EXPECT_FALSE(net_.sockets(1).acceptable(worker));
}

// A program that listens, connects to itself and only then accepts (no other process shares the
// listener): its accept shows it accepts, and the held connection is its.
TEST_F(ListenerGroups, AProgramThatConnectsToItselfBeforeItAcceptsGetsTheConnection) {
  const int home = net_.listen_on_every_replica(kPort);
  TcpSockets& sockets = net_.sockets(0);
  auto client = sockets.connect(kStackAddress, kPort);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(net_.run_until([&] { return sockets.connected(client.value()); }));
  write_all(sockets, client.value(), "hello");
  (void)net_.run_until([] { return false; }, 10'000'000);
  EXPECT_EQ(total("group_held"), 1u);
  EXPECT_TRUE(sockets.acceptable(home));  // held until it accepts, and readable meanwhile
  EXPECT_FALSE(sockets.queued(home));
  EXPECT_TRUE(sockets.holds_connections(home));
  int server = -1;
  ASSERT_TRUE(net_.run_until([&] {
    if (auto accepted = sockets.accept(home)) server = accepted.value();
    return server >= 0;
  }));
  EXPECT_EQ(read_exactly(sockets, server, 5), "hello");
  EXPECT_EQ(total("group_held_announced"), 1u);
  EXPECT_FALSE(sockets.accept(home).ok());
  EXPECT_FALSE(sockets.holds_connections(home));
}

// Held connections are in the slot table: after both replicas crash, they are still held, and the
// first worker that accepts takes them with their requests.
TEST_F(ListenerGroups, HeldConnectionsSurviveAReplicaCrash) {
  const auto [home, clients] = held_by_a_lone_master(3);
  ASSERT_EQ(clients.size(), 3u);
  net_.crash(0);
  net_.crash(1);
  (void)net_.run_until([] { return false; }, 10'000'000);
  EXPECT_EQ(net_.counter(0, "slots_dropped") + net_.counter(1, "slots_dropped"), 0u);
  EXPECT_TRUE(net_.sockets(0).acceptable(home));
  EXPECT_FALSE(net_.sockets(0).queued(home));
  const int worker = net_.join_listener(1, 0, home);
  ASSERT_GE(worker, 0);
  expect_served(1, worker, clients);
  EXPECT_FALSE(net_.sockets(0).acceptable(home));
}

// A master holding connections leaves while its worker does not accept yet (a reload): they wait
// with the worker, which takes them once it accepts; when the last member leaves, they are reset.
TEST_F(ListenerGroups, HeldConnectionsFollowTheGroupWhenTheirMemberLeaves) {
  const int home = net_.listen_on_every_replica(kPort);
  const auto early = net_.connect_many(0, kPort, 2, {});
  ASSERT_EQ(early.clients.size(), 2u);
  const int worker = net_.join_listener(1, 0, home, /*active=*/false);
  ASSERT_GE(worker, 0);
  ASSERT_TRUE(net_.sockets(0).close(home).ok());
  (void)net_.run_until([] { return false; }, 10'000'000);
  EXPECT_EQ(total("group_moved_on_leave"), 2u);
  EXPECT_EQ(total("group_reset_on_leave"), 0u);
  int accepted = 0;
  ASSERT_TRUE(net_.run_until([&] {
    while (net_.sockets(1).accept(worker)) ++accepted;
    return accepted == 2;
  }));
  for (const int client : early.clients) EXPECT_EQ(net_.sockets(0).error(client), 0);
  // Held again with a member that never accepts, and that member is the last to leave.
  const int other = net_.listen_on_every_replica(kPort + 1, 2);
  auto late = net_.sockets(0).connect(kStackAddress, kPort + 1);
  ASSERT_TRUE(late.ok());
  ASSERT_TRUE(net_.run_until([&] { return net_.sockets(0).connected(late.value()); }));
  ASSERT_TRUE(net_.sockets(2).close(other).ok());
  ASSERT_TRUE(net_.run_until([&] { return net_.sockets(0).error(late.value()) != 0; }));
  EXPECT_EQ(net_.sockets(0).error(late.value()), ECONNRESET);
  EXPECT_EQ(total("group_reset_on_leave"), 1u);
}

TEST_F(ListenerGroups, ConnectionsQueuedAtAMemberThatClosesItsListenerGoToAnotherMember) {
  queued_connections_go_to_the_member_that_stays([&](int listener) { ASSERT_TRUE(net_.sockets(1).close(listener).ok()); });
}

TEST_F(ListenerGroups, ConnectionsQueuedAtAMemberWhoseLeaseEndsGoToAnotherMember) {
  queued_connections_go_to_the_member_that_stays([&](int) { net_.restart_app(1); });
}

TEST_F(ListenerGroups, JoinedWorkersShareNewConnectionsAndTheOpenerThatNeverAcceptsGetsNone) {
  const int home = net_.listen_on_every_replica(kPort);
  ASSERT_GE(home, 0);
  const int first = net_.join_listener(1, 0, home);
  const int second = net_.join_listener(2, 0, home);
  ASSERT_GE(first, 0);
  ASSERT_GE(second, 0);
  EXPECT_EQ(total("group_joins"), 4u);  // two workers on two replicas
  // Both sleep waiting to accept (in accept, poll or epoll): each connection is pushed to one.
  net_.sockets(1).waiting_to_accept(first, true);
  net_.sockets(2).waiting_to_accept(second, true);
  const auto spread = net_.connect_many(0, kPort, 16, {{1, first}, {2, second}});
  EXPECT_EQ(total("group_held"), 0u);
  EXPECT_EQ(spread.per_app[1] + spread.per_app[2], 16);
  // Round robin on equal queues, per replica: at most one apart on each.
  EXPECT_LE(std::abs(spread.per_app[1] - spread.per_app[2]), 2);
  EXPECT_GE(spread.per_app[1], 7);
  EXPECT_FALSE(net_.sockets(0).acceptable(home));
}

TEST_F(ListenerGroups, WhileNoMemberAcceptsConnectionsWaitAndAnActiveMemberTakesThem) {
  const int home = net_.listen_on_every_replica(kPort);
  const int worker = net_.join_listener(1, 0, home, /*active=*/false);
  ASSERT_GE(worker, 0);
  // Nobody said it accepts (a master whose workers are starting): the connections are established
  // and held, neither process is told of them, and both see the listener readable ...
  const auto waiting = net_.connect_many(0, kPort, 4, {});
  for (const int client : waiting.clients) EXPECT_TRUE(net_.sockets(0).connected(client));
  EXPECT_EQ(total("group_held"), 4u);
  EXPECT_TRUE(net_.sockets(0).acceptable(home));
  EXPECT_TRUE(net_.sockets(1).acceptable(worker));
  EXPECT_FALSE(net_.sockets(0).queued(home));
  EXPECT_FALSE(net_.sockets(1).queued(worker));
  // ... until a member accepts: then every connection is its.
  net_.sockets(1).activate(worker);
  int accepted = 0;
  ASSERT_TRUE(net_.run_until([&] {
    while (net_.sockets(1).accept(worker).ok()) ++accepted;
    return accepted == 4;
  }));
  EXPECT_EQ(total("group_takes"), 4u);
  net_.sockets(1).waiting_to_accept(worker, true);
  auto after = net_.connect_many(0, kPort, 6, {{1, worker}});
  EXPECT_EQ(after.per_app[1], 6);
  EXPECT_FALSE(net_.sockets(0).acceptable(home));
}

// Prefork workers that serve one client at a time (gunicorn's sync workers, apache's prefork,
// postfix's smtpd processes, which take turns waiting under a lock): a connection goes to a worker
// asleep waiting to accept with nothing queued, not to one busy with a client; one that comes
// while no worker waits with an empty queue is held, every worker's poll sees it, and the first
// to accept takes it, while the other's accept finds nothing and is answered at once.
TEST_F(ListenerGroups, AConnectionGoesToAWorkerWaitingToAcceptOrToTheFirstThatAccepts) {
  const int home = net_.listen_on_every_replica(kPort);
  const int first = net_.join_listener(1, 0, home);
  const int second = net_.join_listener(2, 0, home);
  // Worker 1 waits and takes nothing yet; worker 2 is busy. Worker 1 gets one per replica; the
  // rest are held, since it has one to take already.
  net_.sockets(1).waiting_to_accept(first, true);
  auto pushed = net_.connect_many(0, kPort, 4, {});
  ASSERT_EQ(pushed.clients.size(), 4u);
  EXPECT_TRUE(net_.sockets(1).queued(first));
  EXPECT_GE(total("group_held"), 2u);
  EXPECT_TRUE(net_.sockets(2).acceptable(second));
  int taken = 0;
  ASSERT_TRUE(net_.run_until([&] {
    while (net_.sockets(1).accept(first)) ++taken;
    return taken == 4;
  }));
  EXPECT_EQ(total("group_takes"), total("group_held"));
  EXPECT_FALSE(net_.sockets(2).acceptable(second));
  // Now both are busy: the next connection is held, and both see it.
  net_.sockets(1).waiting_to_accept(first, false);
  const std::vector<int> clients = clients_with_requests(1);
  ASSERT_EQ(clients.size(), 1u);
  const std::uint64_t held_before = total("group_held") - 1;
  const std::uint64_t takes_before = total("group_takes");
  EXPECT_TRUE(net_.sockets(1).acceptable(first));
  EXPECT_TRUE(net_.sockets(2).acceptable(second));
  // Both come back to accept at once: each asks for it, one gets it, request intact, and the
  // other's take is answered with nothing.
  EXPECT_FALSE(net_.sockets(2).accept(second).ok());
  EXPECT_FALSE(net_.sockets(1).accept(first).ok());
  EXPECT_TRUE(net_.sockets(1).taking(first));
  EXPECT_TRUE(net_.sockets(2).taking(second));
  ASSERT_TRUE(net_.run_until([&] { return !net_.sockets(1).taking(first) && !net_.sockets(2).taking(second); }));
  EXPECT_EQ(total("group_held"), held_before + 1);
  EXPECT_EQ(total("group_takes"), takes_before + 1);
  EXPECT_EQ(total("group_takes_empty"), 1u);
  EXPECT_NE(net_.sockets(1).queued(first), net_.sockets(2).queued(second));
  const bool second_won = net_.sockets(2).queued(second);
  expect_served(second_won ? 2 : 1, second_won ? second : first, clients);
  EXPECT_FALSE(net_.sockets(1).acceptable(first));
  EXPECT_FALSE(net_.sockets(2).acceptable(second));
}

TEST_F(ListenerGroups, ANewConnectionGoesToTheMemberWithTheShortestQueue) {
  const int home = net_.listen_on_every_replica(kPort);
  const int slow = net_.join_listener(1, 0, home);
  const int quick = net_.join_listener(2, 0, home);
  net_.sockets(1).waiting_to_accept(slow, true);
  net_.sockets(2).waiting_to_accept(quick, true);
  // Worker 1 takes nothing, so its queue grows with what it gets; worker 2 takes each at once.
  const auto spread = net_.connect_many(0, kPort, 12, {{2, quick}});
  int waiting = 0;
  while (net_.sockets(1).accept(slow)) ++waiting;
  EXPECT_EQ(waiting + spread.per_app[2], 12);
  // Each replica gives the slow worker one (the first tie), then always the empty queue.
  EXPECT_LE(waiting, 2);
  EXPECT_GE(spread.per_app[2], 10);
}

TEST_F(ListenerGroups, AMemberThatLeavesGetsNothingMoreAndTheLastToLeaveClosesTheListener) {
  const int home = net_.listen_on_every_replica(kPort);
  const int first = net_.join_listener(1, 0, home);
  const int second = net_.join_listener(2, 0, home);
  ASSERT_TRUE(net_.sockets(2).close(second).ok());
  net_.sockets(1).waiting_to_accept(first, true);
  auto spread = net_.connect_many(0, kPort, 6, {{1, first}});
  EXPECT_EQ(spread.per_app[1], 6);
  EXPECT_EQ(total("group_leaves"), 2u);
  // Worker 1's process ends: its lease ends, and with it its member.
  net_.restart_app(1);
  EXPECT_EQ(total("group_leaves"), 4u);
  // The opener is left. It never accepted, so new connections are held for whichever member
  // accepts first (a reload's successors), and the opener is told of none.
  auto held = net_.sockets(0).connect(kStackAddress, kPort);
  ASSERT_TRUE(held.ok());
  ASSERT_TRUE(net_.run_until([&] { return net_.sockets(0).connected(held.value()); }));
  (void)net_.run_until([] { return false; }, 10'000'000);
  EXPECT_EQ(total("group_held"), 1u);
  EXPECT_FALSE(net_.sockets(0).queued(home));
  // The opener starts accepting: the held connection is its.
  net_.sockets(0).activate(home);
  spread = net_.connect_many(0, kPort, 2, {{0, home}});
  EXPECT_EQ(spread.per_app[0], 3);
  EXPECT_EQ(total("group_held_announced"), 1u);
  ASSERT_TRUE(net_.sockets(0).close(home).ok());
  auto refused = net_.sockets(0).connect(kStackAddress, kPort);
  ASSERT_TRUE(refused.ok());
  ASSERT_TRUE(net_.run_until([&] { return net_.sockets(0).error(refused.value()) != 0; }));
  EXPECT_EQ(net_.sockets(0).error(refused.value()), ECONNREFUSED);
}

TEST_F(ListenerGroups, AJoinWithoutAMemberAsProofIsRefused) {
  const int home = net_.listen_on_every_replica(kPort);
  auto share = net_.sockets(0).share(home);
  ASSERT_TRUE(share.has_value());
  share->members[0].second += 1;  // a generation the replica never handed out
  auto joined = net_.sockets(1).join(*share);
  ASSERT_TRUE(joined.ok());
  ASSERT_TRUE(net_.run_until([&] { return net_.sockets(1).error(joined.value()) != 0; }));
  EXPECT_EQ(net_.sockets(1).error(joined.value()), EADDRNOTAVAIL);
  EXPECT_EQ(total("group_joins_refused"), 1u);
  // A member the opener closed is no proof any more.
  auto stale = net_.sockets(0).share(home);
  ASSERT_TRUE(stale.has_value());
  ASSERT_TRUE(net_.sockets(0).close(home).ok());
  auto late = net_.sockets(2).join(*stale);
  ASSERT_TRUE(late.ok());
  ASSERT_TRUE(net_.run_until([&] { return net_.sockets(2).error(late.value()) != 0; }));
  EXPECT_EQ(net_.sockets(2).error(late.value()), EADDRNOTAVAIL);
}

TEST_F(ListenerGroups, ListensWithReusePortShareTheAddressAndOneWithoutIsRefused) {
  SocketOptions reuse;
  reuse.reuse_port = true;
  const int first = net_.listen_on_every_replica(kPort, 1, reuse);
  const int second = net_.listen_on_every_replica(kPort, 2, reuse);
  ASSERT_GE(first, 0);
  ASSERT_GE(second, 0);
  EXPECT_EQ(net_.sockets(1).error(first), 0);
  EXPECT_EQ(net_.sockets(2).error(second), 0);
  const int plain = net_.listen_on_every_replica(kPort, 0);
  EXPECT_EQ(net_.sockets(0).error(plain), EADDRINUSE);
  net_.sockets(1).activate(first);
  net_.sockets(2).activate(second);
  net_.sockets(1).waiting_to_accept(first, true);
  net_.sockets(2).waiting_to_accept(second, true);
  const auto spread = net_.connect_many(0, kPort, 8, {{1, first}, {2, second}});
  EXPECT_EQ(spread.per_app[1] + spread.per_app[2], 8);
  EXPECT_GE(spread.per_app[1], 2);
  EXPECT_GE(spread.per_app[2], 2);
}

TEST_F(ListenerGroups, AListenWithReusePortOnAPlainListenersAddressIsRefused) {
  const int plain = net_.listen_on_every_replica(kPort, 0);
  ASSERT_EQ(net_.sockets(0).error(plain), 0);
  SocketOptions reuse;
  reuse.reuse_port = true;
  const int other = net_.listen_on_every_replica(kPort, 1, reuse);
  EXPECT_EQ(net_.sockets(1).error(other), EADDRINUSE);
}

}  // namespace
}  // namespace flotilla::sockets
