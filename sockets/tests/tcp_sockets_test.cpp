// The native TCP socket API's own half of the protocol, against fake replicas (fake_replica.hpp):
// no processes, plain memory. What a socket does end to end (connect, refusal, transfer, EOF,
// accept from every replica, abort) is tested against the real replicas in
// tcp_replica_sockets_test.cpp. The fake stays here for what the real replica cannot be made to
// hold still or do on purpose: the exact messages and request bits the application sends, states
// between an answer and the event after it, events coalescing while one is pending, an open
// answered after the socket closed, one replica refusing what another accepts, a channel without
// room, a region formatted late, a restart that formats the region under live sockets, and one
// that keeps it (a recovering replica) between an open and its answer or a write and its kick.
#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <memory>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "sockets/tests/byte_pattern.hpp"
#include "sockets/tests/fake_replica.hpp"

namespace flotilla::sockets {
namespace {

using namespace testing;

class TcpSocketsTest : public ::testing::Test {
 protected:
  explicit TcpSocketsTest(std::size_t replicas = 2, bool format = true)
      : stack_(replicas, format), sides_(stack_.sides), sockets_(stack_.sockets), replicas_(stack_.fakes) {
    sockets_->on_ready([this] { ++ready_calls_; });
  }

  FakeReplica& replica(std::size_t index) { return stack_.replica(index); }

  // Three connects, to ports 1, 2 and 3 (replicas 0, 1, 0).
  std::array<int, 3> connect_three() {
    std::array<int, 3> ids{-1, -1, -1};
    for (std::uint16_t port = 1; port <= 3; ++port) {
      auto id = sockets_->connect(kPeer, port);
      EXPECT_TRUE(id.ok());
      if (id) ids[port - 1] = id.value();
    }
    return ids;
  }

  // Connects until the round robin lands on `replica_index`, answers and establishes it.
  int establish(std::size_t replica_index, std::uint32_t& page) {
    for (std::size_t attempt = 0; attempt < replicas_.size(); ++attempt) {
      auto id = sockets_->connect(kPeer, 5001);
      EXPECT_TRUE(id.ok());
      for (std::size_t other = 0; other < replicas_.size(); ++other) {
        auto opens = replica(other).drain(stack::kTcpOpenKind);
        if (opens.empty()) continue;
        const TcpOpenBody open = opens[0].read<TcpOpenBody>();
        if (other != replica_index) {
          replica(other).answer_open(open, ECONNREFUSED);
          EXPECT_TRUE(sockets_->close(id.value()).ok());
          continue;
        }
        page = replica(other).answer_open(open);
        replica(other).set_status(page, TcpSocketStatus::connected);
        replica(other).event(page);
        return id.value();
      }
    }
    ADD_FAILURE() << "no connect reached replica " << replica_index;
    return -1;
  }

  FakeStack stack_;
  std::vector<std::unique_ptr<ReplicaSide>>& sides_;
  std::unique_ptr<TcpSockets>& sockets_;
  std::vector<std::unique_ptr<FakeReplica>>& replicas_;
  int ready_calls_ = 0;
};

TEST_F(TcpSocketsTest, ConnectOpensThroughOneReplicaAndBecomesWritableWhenEstablished) {
  auto id = sockets_->connect(kPeer, 5001, SocketOptions{.no_delay = true, .keepalive = false, .newreno = true, .local_port = 0});
  ASSERT_TRUE(id.ok());
  const TcpOpenBody open = replica(0).take_open();
  EXPECT_TRUE(replica(1).drain().empty());
  EXPECT_EQ(open.operation, TcpOpenOperation::connect);
  EXPECT_EQ(open.remote_address, kPeer);
  EXPECT_EQ(open.remote_port, 5001);
  EXPECT_EQ(open.options, stack::kTcpOpenNoDelay | stack::kTcpOpenNewReno);
  EXPECT_FALSE(sockets_->writable(id.value()));

  const std::uint32_t page = replica(0).answer_open(open);
  EXPECT_EQ(ready_calls_, 1);
  EXPECT_FALSE(sockets_->connected(id.value()));
  EXPECT_FALSE(sockets_->writable(id.value()));
  auto early = sockets_->send(id.value(), pattern(10, 1));
  ASSERT_FALSE(early.ok());
  EXPECT_EQ(early.error().code, Errc::would_block);

  replica(0).set_status(page, TcpSocketStatus::connected);
  EXPECT_TRUE(replica(0).event(page));
  EXPECT_EQ(ready_calls_, 2);
  EXPECT_TRUE(sockets_->connected(id.value()));
  EXPECT_TRUE(sockets_->writable(id.value()));
  EXPECT_FALSE(sockets_->readable(id.value()));
  EXPECT_EQ(sockets_->error(id.value()), 0);
  EXPECT_EQ(sockets_->endpoints(id.value()).local_port, 40000 + page);
  EXPECT_EQ(sockets_->endpoints(id.value()).remote_address, kPeer);
}

TEST_F(TcpSocketsTest, ConnectionsAreSpreadRoundRobin) {
  const auto ids = connect_three();
  auto to_zero = replica(0).drain(stack::kTcpOpenKind);
  auto to_one = replica(1).drain(stack::kTcpOpenKind);
  ASSERT_EQ(to_zero.size(), 2u);
  ASSERT_EQ(to_one.size(), 1u);
  EXPECT_EQ(to_zero[0].read<TcpOpenBody>().remote_port, 1);
  EXPECT_EQ(to_one[0].read<TcpOpenBody>().remote_port, 2);
  EXPECT_EQ(to_zero[1].read<TcpOpenBody>().remote_port, 3);
  EXPECT_NE(ids[0], ids[1]);
}

TEST_F(TcpSocketsTest, APinnedReplicaTakesEveryConnection) {
  EXPECT_FALSE(sockets_->pin_replica(2));
  ASSERT_TRUE(sockets_->pin_replica(1));
  connect_three();
  EXPECT_EQ(replica(0).drain(stack::kTcpOpenKind).size(), 0u);
  EXPECT_EQ(replica(1).drain(stack::kTcpOpenKind).size(), 3u);
}

TEST_F(TcpSocketsTest, AnOpenTheReplicaRefusesFailsTheSocket) {
  auto id = sockets_->connect(kPeer, 5001);
  ASSERT_TRUE(id.ok());
  replica(0).answer_open(replica(0).take_open(), EADDRNOTAVAIL);
  EXPECT_EQ(sockets_->error(id.value()), EADDRNOTAVAIL);
  EXPECT_TRUE(sockets_->writable(id.value()));
  EXPECT_TRUE(sockets_->close(id.value()).ok());
  EXPECT_TRUE(replica(0).drain().empty());  // no page to give back
  EXPECT_EQ(sockets_->open_sockets(), 0u);
}

TEST_F(TcpSocketsTest, SendCopiesIntoTheRingAndKicksOncePerBatch) {
  std::uint32_t page = 0;
  const int id = establish(0, page);
  ASSERT_GE(id, 0);
  replica(0).drain();
  const auto first = pattern(100, 1), second = pattern(200, 2), third = pattern(50, 3);
  for (const auto* bytes : {&first, &second, &third}) {
    auto sent = sockets_->send(id, *bytes);
    ASSERT_TRUE(sent.ok());
    EXPECT_EQ(sent.value(), bytes->size());
  }
  // Three sends, one kick: the replica has not taken the first yet.
  auto kicks = replica(0).drain(stack::kTcpKickKind);
  ASSERT_EQ(kicks.size(), 1u);
  EXPECT_EQ(kicks[0].read<TcpPageBody>().page, page);
  EXPECT_EQ(kicks[0].read<TcpPageBody>().generation, replica(0).generation(page));
  EXPECT_EQ(replica(0).take_requests(page), kTcpRequestSend);
  ByteRingConsumer& ring = replica(0).send_ring(page);
  ASSERT_EQ(ring.readable(), 350u);
  EXPECT_EQ(sockets_->unacknowledged(id), 350u);
  std::vector<std::byte> got(350);
  ASSERT_EQ(ring.read(got), 350u);
  EXPECT_EQ(sockets_->unacknowledged(id), 0u);
  EXPECT_TRUE(std::equal(first.begin(), first.end(), got.begin()));
  EXPECT_TRUE(std::equal(second.begin(), second.end(), got.begin() + 100));
  EXPECT_TRUE(std::equal(third.begin(), third.end(), got.begin() + 300));

  // The kick was taken, so the next send kicks again.
  ASSERT_TRUE(sockets_->send(id, first).ok());
  EXPECT_EQ(replica(0).drain(stack::kTcpKickKind).size(), 1u);
}

TEST_F(TcpSocketsTest, AFullSendRingWouldBlockAndTakesWhatFits) {
  std::uint32_t page = 0;
  const int id = establish(0, page);
  const auto big = pattern(kRingBytes + 500, 9);
  auto sent = sockets_->send(id, big);
  ASSERT_TRUE(sent.ok());
  EXPECT_EQ(sent.value(), kRingBytes);
  EXPECT_FALSE(sockets_->writable(id));
  auto more = sockets_->send(id, big);
  ASSERT_FALSE(more.ok());
  EXPECT_EQ(more.error().code, Errc::would_block);
  std::vector<std::byte> sink(1000);
  ASSERT_EQ(replica(0).send_ring(page).read(sink), 1000u);
  EXPECT_TRUE(sockets_->writable(id));
}

TEST_F(TcpSocketsTest, RecvCopiesOutAndAsksForTheWindowOncePerBatch) {
  std::uint32_t page = 0;
  const int id = establish(1, page);
  replica(1).drain();
  std::byte out[64];
  auto nothing = sockets_->recv(id, out);
  ASSERT_FALSE(nothing.ok());
  EXPECT_EQ(nothing.error().code, Errc::would_block);

  const auto data = pattern(300, 4);
  ASSERT_EQ(replica(1).receive_ring(page).write(data), 300u);
  const int calls = ready_calls_;
  EXPECT_TRUE(replica(1).event(page));
  EXPECT_EQ(ready_calls_, calls + 1);
  EXPECT_TRUE(sockets_->readable(id));
  std::vector<std::byte> got;
  while (true) {
    auto received = sockets_->recv(id, out);
    if (!received.ok()) {
      EXPECT_EQ(received.error().code, Errc::would_block);
      break;
    }
    got.insert(got.end(), out, out + received.value());
  }
  EXPECT_EQ(got, data);
  EXPECT_FALSE(sockets_->readable(id));
  // Five reads, one window kick.
  EXPECT_EQ(replica(1).drain(stack::kTcpKickKind).size(), 1u);
  EXPECT_EQ(replica(1).take_requests(page), kTcpRequestWindow);
  EXPECT_EQ(replica(1).send_ring(page).readable(), 0u);

  // The application cleared event_pending, so the next change sends a new event.
  ASSERT_EQ(replica(1).receive_ring(page).write(pattern(5, 0)), 5u);
  EXPECT_TRUE(replica(1).event(page));
  // ...but a change while that one is unhandled would not (here: handled already, so it does).
  EXPECT_EQ(replica(1).control(page).event_pending.load(), 0u);
}

TEST_F(TcpSocketsTest, EventsCoalesceUntilTheApplicationTakesOne) {
  std::uint32_t page = 0;
  const int id = establish(0, page);
  // The replica raises event_pending itself and delivers later: a second change sends nothing.
  replica(0).control(page).event_pending.store(1);
  EXPECT_FALSE(replica(0).event(page));
  replica(0).deliver(Message::make(stack::kTcpEventKind, TcpPageBody{page, replica(0).generation(page)}));
  EXPECT_EQ(replica(0).control(page).event_pending.load(), 0u);
  EXPECT_TRUE(replica(0).event(page));
  EXPECT_TRUE(sockets_->connected(id));
}

TEST_F(TcpSocketsTest, ShutdownCloseAndAbortSetTheirRequestBits) {
  std::uint32_t page_a = 0, page_b = 0;
  const int a = establish(0, page_a);
  const int b = establish(0, page_b);
  replica(0).drain();
  ASSERT_TRUE(sockets_->shutdown_write(a).ok());
  auto sent = sockets_->send(a, pattern(1, 0));
  ASSERT_FALSE(sent.ok());
  EXPECT_EQ(sent.error().sys_errno, EPIPE);
  EXPECT_EQ(replica(0).take_requests(page_a), kTcpRequestShutdownWrite);
  ASSERT_TRUE(sockets_->close(a).ok());
  EXPECT_EQ(replica(0).take_requests(page_a), kTcpRequestClose);
  ASSERT_TRUE(sockets_->abort(b).ok());
  EXPECT_NE(replica(0).take_requests(page_b) & kTcpRequestAbort, 0u);
  EXPECT_EQ(replica(0).drain(stack::kTcpKickKind).size(), 3u);
  EXPECT_FALSE(sockets_->close(a).ok());  // the id is free
  EXPECT_EQ(sockets_->open_sockets(), 0u);
  // Events about closed pages are stale, not trouble.
  replica(0).event(page_a);
  EXPECT_EQ(sockets_->stale_messages(), 1u);
  EXPECT_EQ(sockets_->bad_messages(), 0u);
}

TEST_F(TcpSocketsTest, ClosingWhileTheOpenIsInFlightGivesThePageBackWhenItArrives) {
  auto id = sockets_->connect(kPeer, 5001);
  ASSERT_TRUE(id.ok());
  const TcpOpenBody open = replica(0).take_open();
  ASSERT_TRUE(sockets_->close(id.value()).ok());
  // The id is reused at once; the late answer must not land on the new socket.
  auto again = sockets_->connect(kPeer, 5002);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again.value(), id.value());
  const std::uint32_t page = replica(0).answer_open(open);
  EXPECT_EQ(replica(0).take_requests(page), kTcpRequestClose);
  EXPECT_FALSE(sockets_->connected(again.value()));
  EXPECT_EQ(sockets_->error(again.value()), 0);
  // The second connect went to replica 1 and still completes normally.
  const std::uint32_t page2 = replica(1).answer_open(replica(1).take_open());
  replica(1).set_status(page2, TcpSocketStatus::connected);
  replica(1).event(page2);
  EXPECT_TRUE(sockets_->connected(again.value()));
}

TEST_F(TcpSocketsTest, OptionsGoToThePageAndWaitForItWhileConnecting) {
  auto id = sockets_->connect(kPeer, 5001);
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(sockets_->set_option(id.value(), stack::TcpOption::nodelay, 1).ok());
  EXPECT_FALSE(sockets_->set_option(id.value(), static_cast<stack::TcpOption>(99), 1).ok());
  const TcpOpenBody open = replica(0).take_open();
  const std::uint32_t page = replica(0).answer_open(open);
  auto options = replica(0).drain(stack::kTcpOptionKind);
  ASSERT_EQ(options.size(), 1u);
  const auto body = options[0].read<stack::TcpOptionBody>();
  EXPECT_EQ(body.page, page);
  EXPECT_EQ(body.generation, replica(0).generation(page));
  EXPECT_EQ(body.option, stack::TcpOption::nodelay);
  EXPECT_EQ(body.value, 1u);
  ASSERT_TRUE(sockets_->set_option(id.value(), stack::TcpOption::keepalive, 1).ok());
  EXPECT_EQ(replica(0).drain(stack::kTcpOptionKind).size(), 1u);
}

struct Listener {
  int id;
  std::uint32_t pages[2];
};

class TcpSocketsListenTest : public TcpSocketsTest {
 protected:
  Listener listen_on_both() {
    Listener listener{};
    auto id = sockets_->listen(0, 5001, 16);
    EXPECT_TRUE(id.ok());
    listener.id = id.value();
    for (std::size_t r = 0; r < 2; ++r) {
      const TcpOpenBody open = replica(r).take_open();
      EXPECT_EQ(open.operation, TcpOpenOperation::listen);
      EXPECT_EQ(open.local_port, 5001);
      EXPECT_EQ(open.backlog, 16);
      EXPECT_FALSE(sockets_->listening(listener.id) && r == 0);
      listener.pages[r] = replica(r).answer_open(open);
    }
    EXPECT_TRUE(sockets_->listening(listener.id));
    return listener;
  }
};

TEST_F(TcpSocketsListenTest, PortZeroIsRefused) {
  auto id = sockets_->listen(0, 0, 16);
  ASSERT_FALSE(id.ok());
  EXPECT_EQ(id.error().code, Errc::invalid_argument);
}

TEST_F(TcpSocketsListenTest, OneReplicaRefusingFailsTheListenerAndFreesTheOtherPart) {
  auto id = sockets_->listen(0, 5001, 4);
  ASSERT_TRUE(id.ok());
  const std::uint32_t page = replica(0).answer_open(replica(0).take_open());
  replica(1).answer_open(replica(1).take_open(), EADDRINUSE);
  EXPECT_EQ(sockets_->error(id.value()), EADDRINUSE);
  EXPECT_FALSE(sockets_->listening(id.value()));
  EXPECT_EQ(replica(0).take_requests(page), kTcpRequestClose);
  auto accepted = sockets_->accept(id.value());
  ASSERT_FALSE(accepted.ok());
  EXPECT_EQ(accepted.error().sys_errno, EADDRINUSE);
}

TEST_F(TcpSocketsListenTest, ClosingAListenerClosesItsUnacceptedConnections) {
  const Listener listener = listen_on_both();
  const std::uint32_t waiting = replica(0).accept_one(listener.pages[0], 40001);
  ASSERT_TRUE(sockets_->close(listener.id).ok());
  EXPECT_EQ(replica(0).take_requests(waiting), kTcpRequestClose);
  EXPECT_EQ(replica(0).take_requests(listener.pages[0]), kTcpRequestClose);
  EXPECT_EQ(replica(1).take_requests(listener.pages[1]), kTcpRequestClose);
  EXPECT_EQ(sockets_->open_sockets(), 0u);
  // A connection the replica announced before it saw the close is given back too.
  const std::uint32_t late = replica(1).accept_one(listener.pages[1], 40002);
  EXPECT_EQ(replica(1).take_requests(late), kTcpRequestClose);
  EXPECT_EQ(sockets_->open_sockets(), 0u);
}

TEST_F(TcpSocketsListenTest, ReplicaRestartResetsOnlyItsConnectionsAndTakesTheListenerBack) {
  const Listener listener = listen_on_both();
  std::uint32_t page0 = 0, page1 = 0;
  const int on_zero = establish(0, page0);
  const int on_one = establish(1, page1);
  const std::uint32_t queued = replica(1).accept_one(listener.pages[1], 40009);
  (void)queued;
  replica(0).drain();
  replica(1).drain();
  const int calls = ready_calls_;

  // Replica 1 restarts: it formats its region afresh and we are told.
  replica(1).format();
  sockets_->replica_restarted(1);
  EXPECT_GT(ready_calls_, calls);
  EXPECT_EQ(sockets_->error(on_one), ECONNRESET);
  EXPECT_TRUE(sockets_->readable(on_one));
  EXPECT_TRUE(sockets_->writable(on_one));
  std::byte out[8];
  auto received = sockets_->recv(on_one, out);
  ASSERT_FALSE(received.ok());
  EXPECT_EQ(received.error().sys_errno, ECONNRESET);
  auto sent = sockets_->send(on_one, pattern(4, 0));
  ASSERT_FALSE(sent.ok());
  EXPECT_EQ(sent.error().sys_errno, ECONNRESET);
  // The connection it had announced but we had not accepted is simply gone.
  EXPECT_FALSE(sockets_->acceptable(listener.id));

  // Replica 0's connection is untouched.
  EXPECT_TRUE(sockets_->connected(on_zero));
  EXPECT_EQ(sockets_->error(on_zero), 0);
  ASSERT_TRUE(sockets_->send(on_zero, pattern(4, 0)).ok());
  EXPECT_EQ(replica(0).send_ring(page0).readable(), 4u);

  // The listener is sent again to the new incarnation only, and listens again once it answers.
  EXPECT_TRUE(replica(0).drain(stack::kTcpOpenKind).empty());
  const TcpOpenBody again = replica(1).take_open();
  EXPECT_EQ(again.operation, TcpOpenOperation::listen);
  EXPECT_EQ(again.local_port, 5001);
  EXPECT_FALSE(sockets_->listening(listener.id));
  const std::uint32_t new_page = replica(1).answer_open(again);
  EXPECT_TRUE(sockets_->listening(listener.id));
  replica(1).accept_one(new_page, 40010);
  auto accepted = sockets_->accept(listener.id);
  ASSERT_TRUE(accepted.ok());
  EXPECT_EQ(sockets_->endpoints(accepted.value()).remote_port, 40010);
  EXPECT_EQ(replica(1).control(new_page).accepted.load(), 1u);

  // Closing the reset socket tells nobody: the page is not ours in the new region.
  replica(1).drain();
  ASSERT_TRUE(sockets_->close(on_one).ok());
  EXPECT_TRUE(replica(1).drain(stack::kTcpKickKind).empty());
}

TEST_F(TcpSocketsTest, MessagesAChannelHadNoRoomForAreSentLaterInOrder) {
  sides_[0]->room = 0;
  auto first = sockets_->connect(kPeer, 1);
  (void)sockets_->connect(kPeer, 2);  // replica 1
  auto third = sockets_->connect(kPeer, 3);
  ASSERT_TRUE(first && third);
  EXPECT_EQ(sockets_->deferred_messages(), 2u);
  EXPECT_FALSE(sockets_->flush());
  sides_[0]->room = 1;
  EXPECT_TRUE(sockets_->flush());
  sides_[0]->room = 10;
  EXPECT_TRUE(sockets_->flush());
  EXPECT_EQ(sockets_->deferred_messages(), 0u);
  auto opens = replica(0).drain(stack::kTcpOpenKind);
  ASSERT_EQ(opens.size(), 2u);
  EXPECT_EQ(opens[0].read<TcpOpenBody>().remote_port, 1);
  EXPECT_EQ(opens[1].read<TcpOpenBody>().remote_port, 3);
}

// The messages of `kind` among `messages`, in order.
std::vector<Message> of_kind(const std::vector<Message>& messages, MessageKind kind) {
  std::vector<Message> matching;
  std::copy_if(messages.begin(), messages.end(), std::back_inserter(matching),
               [&](const Message& m) { return m.kind == kind; });
  return matching;
}

// Whether `message` sets `option` to `value` on `page`, at the generation `replica` gave the page.
::testing::AssertionResult sets_option(const Message& message, const FakeReplica& replica, std::uint32_t page,
                                       stack::TcpOption option, std::uint32_t value) {
  const auto body = message.read<stack::TcpOptionBody>();
  if (body.page == page && body.generation == replica.generation(page) && body.option == option && body.value == value) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "page " << body.page << " generation " << body.generation << " option "
                                       << static_cast<int>(body.option) << " value " << body.value;
}

// Fills the outbox of the replica connections are pinned to, whose channel `side` takes nothing.
void fill_outbox(TcpSockets& sockets, ReplicaSide& side) {
  side.room = 0;
  while (sockets.deferred_messages() < TcpSockets::kOutboxMessages) {
    ASSERT_TRUE(sockets.connect(kPeer, 1).ok());
  }
}

TEST_F(TcpSocketsTest, ConnectFailsWithEnobufsWhenTheOutboxIsFullAndWhatWaitsIsKept) {
  ASSERT_TRUE(sockets_->pin_replica(0));
  fill_outbox(*sockets_, *sides_[0]);
  const std::size_t open_before = sockets_->open_sockets();
  auto refused = sockets_->connect(kPeer, 2);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, Errc::exhausted);
  EXPECT_EQ(refused.error().sys_errno, ENOBUFS);
  EXPECT_EQ(sockets_->outbox_overflows(), 1u);
  EXPECT_EQ(sockets_->open_sockets(), open_before);  // the refused socket was not kept

  sides_[0]->room = 2 * TcpSockets::kOutboxMessages;
  EXPECT_TRUE(sockets_->flush());
  EXPECT_EQ(replica(0).drain(stack::kTcpOpenKind).size(), TcpSockets::kOutboxMessages);
  EXPECT_TRUE(sockets_->connect(kPeer, 2).ok());
}

TEST_F(TcpSocketsTest, AKickAndAnOptionThatFindTheOutboxFullAreSentOnceThereIsRoom) {
  std::uint32_t page = 0;
  const int id = establish(0, page);
  ASSERT_GE(id, 0);
  replica(0).drain();
  ASSERT_TRUE(sockets_->pin_replica(0));
  fill_outbox(*sockets_, *sides_[0]);

  ASSERT_TRUE(sockets_->send(id, pattern(10, 1)).ok());  // the bytes are in the ring; the kick waits
  EXPECT_EQ(sockets_->outbox_overflows(), 1u);
  EXPECT_EQ(replica(0).control(page).kick_pending.load(), 0u);  // no kick is on its way
  // An option waits too, as Linux never refuses one for want of buffers; it goes before the kick.
  ASSERT_TRUE(sockets_->set_option(id, stack::TcpOption::nodelay, 1).ok());

  sides_[0]->room = 2 * TcpSockets::kOutboxMessages;
  EXPECT_TRUE(sockets_->flush());
  const std::vector<Message> sent = replica(0).drain();
  const auto options = of_kind(sent, stack::kTcpOptionKind);
  ASSERT_EQ(options.size(), 1u);
  EXPECT_TRUE(sets_option(options[0], replica(0), page, stack::TcpOption::nodelay, 1));
  EXPECT_EQ(sent.back().kind, stack::kTcpKickKind);
  auto kicks = of_kind(sent, stack::kTcpKickKind);
  ASSERT_EQ(kicks.size(), 1u);
  EXPECT_EQ(kicks[0].read<TcpPageBody>().page, page);
  EXPECT_EQ(kicks[0].read<TcpPageBody>().generation, replica(0).generation(page));
  EXPECT_EQ(replica(0).take_requests(page), kTcpRequestSend);
  EXPECT_FALSE(sockets_->flush());  // nothing is owed any more
}

TEST_F(TcpSocketsTest, ListenFailsWithEnobufsWhenAnyReplicasOutboxIsFull) {
  ASSERT_TRUE(sockets_->pin_replica(0));
  fill_outbox(*sockets_, *sides_[0]);
  auto refused = sockets_->listen(0, 5001, 8);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().sys_errno, ENOBUFS);
  EXPECT_TRUE(replica(1).drain(stack::kTcpOpenKind).empty());  // no half-made listener
}

class TcpSocketsLateRegionTest : public TcpSocketsTest {
 protected:
  TcpSocketsLateRegionTest() : TcpSocketsTest(1, false) {}
};

TEST_F(TcpSocketsLateRegionTest, ARegionFormattedAfterAttachIsPickedUpWithTheFirstMessage) {
  auto id = sockets_->connect(kPeer, 5001);
  ASSERT_TRUE(id.ok());
  const TcpOpenBody open = replica(0).take_open();
  replica(0).format();
  const std::uint32_t page = replica(0).answer_open(open);
  replica(0).set_status(page, TcpSocketStatus::connected);
  replica(0).event(page);
  EXPECT_TRUE(sockets_->connected(id.value()));
  EXPECT_EQ(sockets_->bad_messages(), 0u);
}

TEST_F(TcpSocketsLateRegionTest, AnOpenAnsweredWithoutARegionFails) {
  auto id = sockets_->connect(kPeer, 5001);
  ASSERT_TRUE(id.ok());
  const TcpOpenBody open = replica(0).take_open();
  replica(0).deliver(Message::make(stack::kTcpOpenedKind, TcpOpenedBody{open.socket, 0, 0, 1, 1234, 0, open.nonce}));
  EXPECT_EQ(sockets_->error(id.value()), EPROTO);
  EXPECT_EQ(sockets_->bad_messages(), 1u);
}

// A program that leases a seat another one left may find that one's answers still in the seat's
// ring, with the tickets it uses itself (both count from the same start): they are not its own.
TEST_F(TcpSocketsTest, AnAnswerMeantForTheSeatsEarlierProgramIsNotTaken) {
  auto id = sockets_->connect(kPeer, 5001);
  ASSERT_TRUE(id.ok());
  const TcpOpenBody open = replica(0).take_open();
  EXPECT_NE(open.nonce, 0u);
  TcpOpenBody earlier = open;
  earlier.nonce = open.nonce + 1;
  (void)replica(0).answer_open(earlier);
  EXPECT_EQ(sockets_->error(id.value()), 0);
  EXPECT_EQ(sockets_->stale_messages(), 1u);
  const std::uint32_t page = replica(0).answer_open(open);
  replica(0).set_status(page, TcpSocketStatus::connected);
  replica(0).event(page);
  EXPECT_TRUE(sockets_->connected(id.value()));
  EXPECT_EQ(sockets_->bad_messages(), 0u);
}

TEST_F(TcpSocketsTest, AnswersNamingBadPagesAreRefused) {
  const auto [a, b, c] = connect_three();
  auto opens = replica(0).drain(stack::kTcpOpenKind);
  ASSERT_EQ(opens.size(), 2u);
  const std::uint32_t page = replica(0).answer_open(opens[0].read<TcpOpenBody>());
  // The second answer names the page the first one already has.
  const TcpOpenBody second = opens[1].read<TcpOpenBody>();
  replica(0).deliver(Message::make(stack::kTcpOpenedKind,
                                   TcpOpenedBody{second.socket, 0, page, replica(0).generation(page), 1, 0, second.nonce}));
  EXPECT_EQ(sockets_->error(c), EPROTO);
  // Out of range, and a generation the page does not have.
  const TcpOpenBody open_b = replica(1).take_open();
  replica(1).deliver(Message::make(stack::kTcpOpenedKind, TcpOpenedBody{open_b.socket, 0, 1000, 1, 1, 0, open_b.nonce}));
  EXPECT_EQ(sockets_->error(b), EPROTO);
  EXPECT_EQ(sockets_->bad_messages(), 2u);
  EXPECT_EQ(sockets_->error(a), 0);
}

TEST_F(TcpSocketsTest, GarbageFromAReplicaIsCountedAndChangesNothing) {
  std::uint32_t page = 0;
  const int id = establish(0, page);
  const auto listener = sockets_->listen(0, 80, 4);
  ASSERT_TRUE(listener.ok());
  const std::uint32_t listener_page = replica(0).answer_open(replica(0).take_open());
  replica(1).answer_open(replica(1).take_open());
  replica(0).drain();

  std::mt19937_64 random(12345);
  const MessageKind kinds[] = {stack::kTcpOpenedKind, stack::kTcpAcceptedKind, stack::kTcpEventKind,
                               stack::kTcpKickKind, stack::kFrameKind, MessageKind::data};
  std::vector<Message> garbage;
  for (int i = 0; i < 5000; ++i) {
    Message message;
    message.kind = kinds[random() % std::size(kinds)];
    for (auto& byte : message.body) byte = static_cast<std::byte>(random());
    // Half with small numbers, so pages and tickets are often in range.
    if (i % 2 == 0) {
      for (std::size_t word = 0; word < Message::kBodyBytes / 4; ++word) {
        const std::uint32_t value = static_cast<std::uint32_t>(random() % 8);
        std::memcpy(message.body.data() + word * 4, &value, 4);
      }
    }
    garbage.push_back(message);
  }
  sockets_->handle_messages(0, garbage);
  sockets_->handle_messages(1, garbage);
  sockets_->handle_messages(7, garbage);  // no such replica
  EXPECT_GT(sockets_->bad_messages() + sockets_->stale_messages(), 0u);

  // The established connection still works, both ways.
  EXPECT_TRUE(sockets_->connected(id));
  ASSERT_TRUE(sockets_->send(id, pattern(10, 1)).ok());
  ASSERT_EQ(replica(0).receive_ring(page).write(pattern(10, 2)), 10u);
  std::byte out[10];
  auto received = sockets_->recv(id, out);
  ASSERT_TRUE(received.ok());
  EXPECT_EQ(received.value(), 10u);
  EXPECT_EQ(replica(0).send_ring(page).readable(), 10u);
  (void)listener_page;
}

TEST_F(TcpSocketsTest, ACorruptRingFailsTheSocketWithEproto) {
  std::uint32_t page = 0;
  const int id = establish(0, page);
  ASSERT_TRUE(sockets_->send(id, pattern(10, 1)).ok());
  replica(0).region().page(page)->send.head.store(1u << 30);  // "consumed" more than was sent
  auto sent = sockets_->send(id, pattern(10, 1));
  ASSERT_FALSE(sent.ok());
  EXPECT_EQ(sent.error().sys_errno, EPROTO);
  EXPECT_EQ(sockets_->error(id), EPROTO);

  std::uint32_t page2 = 0;
  const int other = establish(0, page2);
  replica(0).region().page(page2)->receive.tail.store(kRingBytes * 3);
  std::byte out[4];
  auto received = sockets_->recv(other, out);
  ASSERT_FALSE(received.ok());
  EXPECT_EQ(received.error().sys_errno, EPROTO);
  EXPECT_TRUE(sockets_->readable(other));
}

// ---- a replica that restarts and keeps the region (recovering) ----

TEST_F(TcpSocketsTest, ARecoveringReplicaKeepsItsConnectionsAndIsAskedAgainForAnOpenItNeverAnswered) {
  std::uint32_t page = 0;
  const int kept = establish(0, page);
  ASSERT_TRUE(sockets_->set_option(kept, stack::TcpOption::nodelay, 1).ok());
  ASSERT_TRUE(sockets_->set_option(kept, stack::TcpOption::nodelay, 0).ok());
  const auto unread = pattern(20, 5);
  ASSERT_EQ(replica(0).receive_ring(page).write(unread), unread.size());
  ASSERT_TRUE(sockets_->pin_replica(0));
  auto pending = sockets_->connect(kPeer, 6000, SocketOptions{.no_delay = true});
  ASSERT_TRUE(pending.ok());
  const TcpOpenBody first_open = replica(0).take_open();
  // The dead incarnation took the open and handed a page out, but never answered: the new one
  // aborts that page.
  const std::uint32_t dead_page = replica(0).hand_out(TcpSocketStatus::connecting);
  replica(0).drain();
  replica(0).set_status(dead_page, TcpSocketStatus::free);

  replica(0).recover(2);
  EXPECT_TRUE(sockets_->connected(kept));
  EXPECT_EQ(sockets_->error(kept), 0);
  EXPECT_EQ(sockets_->bad_messages(), 0u);
  const std::vector<Message> sent = replica(0).drain();
  const auto opens = of_kind(sent, stack::kTcpOpenKind);
  ASSERT_EQ(opens.size(), 1u);
  const TcpOpenBody again = opens[0].read<TcpOpenBody>();
  EXPECT_NE(again.socket, first_open.socket) << "a new ticket: a late answer to the first is told apart";
  EXPECT_EQ(again.operation, TcpOpenOperation::connect);
  EXPECT_EQ(again.remote_port, 6000);
  EXPECT_EQ(again.options, stack::kTcpOpenNoDelay);
  // The kept socket's options go again, each once, with its latest value.
  const auto options = of_kind(sent, stack::kTcpOptionKind);
  ASSERT_EQ(options.size(), 1u);
  EXPECT_TRUE(sets_option(options[0], replica(0), page, stack::TcpOption::nodelay, 0));

  // Unread bytes survived, and the connection goes on both ways.
  std::byte out[64];
  auto received = sockets_->recv(kept, out);
  ASSERT_TRUE(received.ok());
  EXPECT_TRUE(std::equal(unread.begin(), unread.end(), out, out + received.value()));
  ASSERT_TRUE(sockets_->send(kept, pattern(8, 1)).ok());
  EXPECT_EQ(replica(0).send_ring(page).readable(), 8u);

  const std::uint32_t new_page = replica(0).answer_open(again);
  replica(0).set_status(new_page, TcpSocketStatus::connected);
  replica(0).event(new_page);
  EXPECT_TRUE(sockets_->connected(pending.value()));
  // The first open was still in the channel after all, and the new incarnation answers it too:
  // that page is given back.
  const std::uint32_t late_page = replica(0).answer_open(first_open);
  EXPECT_EQ(replica(0).take_requests(late_page), kTcpRequestClose);
  EXPECT_TRUE(sockets_->connected(pending.value()));
  EXPECT_EQ(sockets_->bad_messages(), 0u);
}

TEST_F(TcpSocketsTest, AWriteWhoseKickDiedWithTheReplicaIsKickedAgain) {
  std::uint32_t page = 0, idle_page = 0;
  const int id = establish(0, page);
  const int idle = establish(0, idle_page);
  replica(0).drain();
  const auto data = pattern(100, 7);
  ASSERT_TRUE(sockets_->send(id, data).ok());
  ASSERT_EQ(replica(0).drain(stack::kTcpKickKind).size(), 1u);  // taken by the incarnation that dies
  EXPECT_EQ(replica(0).control(page).kick_pending.load(), 1u);

  replica(0).recover(2);
  const auto kicks = replica(0).drain(stack::kTcpKickKind);
  ASSERT_EQ(kicks.size(), 1u) << "the page with requests is kicked, the idle one is not";
  EXPECT_EQ(kicks[0].read<TcpPageBody>().page, page);
  EXPECT_EQ(kicks[0].read<TcpPageBody>().generation, replica(0).generation(page));
  EXPECT_EQ(replica(0).take_requests(page), kTcpRequestSend);
  std::vector<std::byte> got(100);
  ASSERT_EQ(replica(0).send_ring(page).read(got), 100u);
  EXPECT_EQ(got, data);
  EXPECT_TRUE(sockets_->connected(idle));
}

TEST_F(TcpSocketsTest, AKickOwedWhenTheReplicaDiedIsSentToTheNewIncarnation) {
  std::uint32_t page = 0;
  const int id = establish(0, page);
  replica(0).drain();
  ASSERT_TRUE(sockets_->pin_replica(0));
  fill_outbox(*sockets_, *sides_[0]);
  ASSERT_TRUE(sockets_->send(id, pattern(10, 1)).ok());  // the kick is owed
  sides_[0]->room = 4 * TcpSockets::kOutboxMessages;

  replica(0).recover(2);
  // Every waiting open went again with a new ticket, then the owed kick.
  const std::vector<Message> sent = replica(0).drain();
  EXPECT_EQ(of_kind(sent, stack::kTcpOpenKind).size(), TcpSockets::kOutboxMessages);
  const auto kicks = of_kind(sent, stack::kTcpKickKind);
  ASSERT_EQ(kicks.size(), 1u);
  EXPECT_EQ(kicks[0].read<TcpPageBody>().page, page);
  EXPECT_EQ(sent.back().kind, stack::kTcpKickKind);
  EXPECT_EQ(sockets_->deferred_messages(), 0u);
  EXPECT_FALSE(sockets_->flush());
}

// A recovered replica keeps thousands of connections (nginx's 10,000 keep-alive connections, each
// with TCP_NODELAY): their options go again, more than the outbox holds. The ones that find no room
// are owed, not failed: the connection goes on, and they follow once there is room.
TEST_F(TcpSocketsTest, KeptConnectionsWhoseOptionsFindNoRoomAtARecoveryGoOnAndGetThemLater) {
  std::uint32_t page = 0;
  const int kept = establish(0, page);
  ASSERT_TRUE(sockets_->set_option(kept, stack::TcpOption::nodelay, 1).ok());
  replica(0).drain();
  ASSERT_TRUE(sockets_->pin_replica(0));
  fill_outbox(*sockets_, *sides_[0]);  // the opens asked again at the recovery fill it once more

  replica(0).recover(2);
  EXPECT_EQ(sockets_->error(kept), 0);
  EXPECT_TRUE(sockets_->connected(kept));
  ASSERT_TRUE(sockets_->send(kept, pattern(8, 1)).ok());

  sides_[0]->room = 4 * TcpSockets::kOutboxMessages;
  EXPECT_TRUE(sockets_->flush());
  const std::vector<Message> sent = replica(0).drain();
  const auto options = of_kind(sent, stack::kTcpOptionKind);
  ASSERT_EQ(options.size(), 1u);
  EXPECT_TRUE(sets_option(options[0], replica(0), page, stack::TcpOption::nodelay, 1));
  EXPECT_EQ(of_kind(sent, stack::kTcpKickKind).size(), 1u);
  EXPECT_EQ(replica(0).send_ring(page).readable(), 8u);
  EXPECT_FALSE(sockets_->flush()) << "nothing is owed any more";
}

TEST_F(TcpSocketsTest, AfterARecoveryOnlyTheConnectionsWhosePagesChangedFail) {
  std::uint32_t page_a = 0, page_b = 0, page_c = 0;
  const int a = establish(0, page_a);
  const int b = establish(0, page_b);
  const int c = establish(0, page_c);
  std::uint32_t other_page = 0;
  const int other = establish(1, other_page);
  replica(0).drain();
  // The restore could not keep b (its page was handed out again: new generation, words reset)
  // nor c (its page was freed).
  replica(0).control(page_b).generation.fetch_add(1);
  replica(0).set_status(page_c, TcpSocketStatus::free);

  replica(0).recover(2);
  EXPECT_TRUE(sockets_->connected(a));
  EXPECT_EQ(sockets_->error(a), 0);
  for (const int lost : {b, c}) {
    EXPECT_EQ(sockets_->error(lost), ECONNRESET);
    auto sent = sockets_->send(lost, pattern(4, 1));
    ASSERT_FALSE(sent.ok());
    EXPECT_EQ(sent.error().sys_errno, ECONNRESET);
  }
  EXPECT_TRUE(sockets_->connected(other));
  EXPECT_EQ(sockets_->stale_messages(), 1u) << "the event for b's page is about someone else's socket";
  ASSERT_TRUE(sockets_->close(b).ok());
  ASSERT_TRUE(sockets_->close(c).ok());
  EXPECT_TRUE(replica(0).drain().empty()) << "closing a lost socket tells nobody";
  EXPECT_EQ(replica(0).control(page_b).requests.load(), 0u);
}

TEST_F(TcpSocketsTest, WhatWaitsInTheOutboxAboutAPageThatIsGoneIsDroppedAtARecovery) {
  std::uint32_t page_a = 0, page_b = 0;
  const int a = establish(0, page_a);
  const int b = establish(0, page_b);
  replica(0).drain();
  ASSERT_TRUE(sockets_->pin_replica(0));
  sides_[0]->room = 0;
  auto waiting = sockets_->connect(kPeer, 7000);  // its open waits first
  ASSERT_TRUE(waiting.ok());
  ASSERT_TRUE(sockets_->send(a, pattern(4, 1)).ok());
  ASSERT_TRUE(sockets_->send(b, pattern(4, 2)).ok());
  ASSERT_TRUE(sockets_->set_option(b, stack::TcpOption::cork, 1).ok());
  EXPECT_EQ(sockets_->deferred_messages(), 4u);
  // b's page was handed out again, its words reset for the new owner.
  replica(0).control(page_b).generation.fetch_add(1);
  replica(0).control(page_b).requests.store(0);

  replica(0).recover(2);
  sides_[0]->room = 100;
  EXPECT_TRUE(sockets_->flush());
  const std::vector<Message> sent = replica(0).drain();
  ASSERT_EQ(sent.size(), 2u) << "a's kick, kept in order, and the open again; nothing about b's page";
  EXPECT_EQ(sent[0].kind, stack::kTcpKickKind);
  EXPECT_EQ(sent[0].read<TcpPageBody>().page, page_a);
  EXPECT_EQ(sent[1].kind, stack::kTcpOpenKind);
  EXPECT_EQ(sent[1].read<TcpOpenBody>().remote_port, 7000);
  EXPECT_EQ(replica(0).take_requests(page_a), kTcpRequestSend);
  EXPECT_EQ(sockets_->error(b), ECONNRESET);
}

TEST_F(TcpSocketsListenTest, ARecoveringReplicaKeepsTheListenerAndItsQueue) {
  const Listener listener = listen_on_both();
  const std::uint32_t queued = replica(0).accept_one(listener.pages[0], 40001);
  replica(0).drain();

  replica(0).recover(2);
  // It announces again the connection still in its accept queue: we have it already.
  replica(0).deliver(Message::make(stack::kTcpAcceptedKind,
                                   TcpAcceptedBody{listener.pages[0], replica(0).generation(listener.pages[0]), queued,
                                                   replica(0).generation(queued), kPeer, 40001, 5001, 0x0a000001}));
  EXPECT_EQ(sockets_->bad_messages(), 0u);
  EXPECT_TRUE(sockets_->listening(listener.id));
  EXPECT_TRUE(replica(0).drain(stack::kTcpOpenKind).empty()) << "no listen again";
  auto accepted = sockets_->accept(listener.id);
  ASSERT_TRUE(accepted.ok());
  EXPECT_EQ(sockets_->endpoints(accepted.value()).remote_port, 40001);
  EXPECT_FALSE(sockets_->acceptable(listener.id)) << "accepted once, not twice";
  replica(0).accept_one(listener.pages[0], 40002);
  auto next = sockets_->accept(listener.id);
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(sockets_->endpoints(next.value()).remote_port, 40002);
}

// A burst of accepted connections while the channel is backed up: each takes its listener's
// options, and the ones that find no room wait for it; no connection fails for it.
TEST_F(TcpSocketsListenTest, AnAcceptedConnectionWhoseOptionsFindNoRoomIsServedAndGetsThemLater) {
  const Listener listener = listen_on_both();
  ASSERT_TRUE(sockets_->set_option(listener.id, stack::TcpOption::nodelay, 1).ok());
  replica(0).drain();
  ASSERT_TRUE(sockets_->pin_replica(0));
  fill_outbox(*sockets_, *sides_[0]);
  const std::uint32_t page = replica(0).accept_one(listener.pages[0], 40001);

  auto accepted = sockets_->accept(listener.id);
  ASSERT_TRUE(accepted.ok());
  EXPECT_EQ(sockets_->error(accepted.value()), 0);
  EXPECT_TRUE(sockets_->connected(accepted.value()));
  ASSERT_TRUE(sockets_->send(accepted.value(), pattern(8, 1)).ok());

  sides_[0]->room = 4 * TcpSockets::kOutboxMessages;
  EXPECT_TRUE(sockets_->flush());
  const auto options = of_kind(replica(0).drain(), stack::kTcpOptionKind);
  ASSERT_EQ(options.size(), 1u);
  EXPECT_TRUE(sets_option(options[0], replica(0), page, stack::TcpOption::nodelay, 1));
  EXPECT_FALSE(sockets_->flush()) << "nothing is owed any more";
}

TEST_F(TcpSocketsListenTest, AFreshAnnounceLosesEverythingOnThatReplicaAsBefore) {
  const Listener listener = listen_on_both();
  std::uint32_t page = 0;
  const int connection = establish(0, page);
  replica(0).accept_one(listener.pages[0], 40001);
  replica(0).drain();

  replica(0).format();
  replica(0).announce(stack::TcpReplicaMode::fresh, 2);
  EXPECT_EQ(sockets_->error(connection), ECONNRESET);
  EXPECT_FALSE(sockets_->acceptable(listener.id));
  EXPECT_FALSE(sockets_->listening(listener.id));
  const TcpOpenBody again = replica(0).take_open();
  EXPECT_EQ(again.operation, TcpOpenOperation::listen);
  replica(0).answer_open(again);
  EXPECT_TRUE(sockets_->listening(listener.id));
  // The host's notice of the same incarnation, arriving after the announce, changes nothing.
  sockets_->replica_restarted(0, 2);
  EXPECT_TRUE(sockets_->listening(listener.id));
  EXPECT_TRUE(replica(0).drain().empty());
}

TEST_F(TcpSocketsTest, TheNoticeOfAReplicaThatAnnouncesWaitsForItsAnnounce) {
  replica(0).announce(stack::TcpReplicaMode::ip_restarted, 1);  // it announces itself
  std::uint32_t page = 0, other_page = 0;
  const int on_zero = establish(0, page);
  const int on_one = establish(1, other_page);
  // The notice comes before the replica restored anything: nothing is decided yet.
  sockets_->replica_restarted(0, 2);
  sockets_->replica_restarted(1, 2);  // replica 1 never announced: an older replica, so fresh
  EXPECT_TRUE(sockets_->connected(on_zero));
  EXPECT_EQ(sockets_->error(on_one), ECONNRESET);
  replica(0).recover(2);
  EXPECT_TRUE(sockets_->connected(on_zero));
  // Announces of an incarnation already handled are no new restart.
  replica(0).announce(stack::TcpReplicaMode::fresh, 2);
  EXPECT_TRUE(sockets_->connected(on_zero));
  EXPECT_EQ(sockets_->bad_messages(), 0u);
  replica(0).announce(static_cast<stack::TcpReplicaMode>(9), 3);
  EXPECT_EQ(sockets_->bad_messages(), 1u);
  EXPECT_TRUE(sockets_->connected(on_zero));
}

TEST(TcpSocketsAttachTest, AnAnnounceFromTheIncarnationWeAttachedToIsNoRestart) {
  std::vector<std::unique_ptr<ReplicaSide>> sides;
  sides.push_back(std::make_unique<ReplicaSide>());
  sides[0]->incarnation = 4;
  ASSERT_TRUE(TcpRegion::format(sides[0]->region.bytes(), kRingBytes).valid());
  TcpSockets sockets(std::make_unique<FakeLinks>(sides));
  FakeReplica replica(0, *sides[0], sockets);
  replica.format();
  auto id = sockets.connect(kPeer, 5001);
  ASSERT_TRUE(id.ok());
  const TcpOpenBody open = replica.take_open();
  // Its announce from when it started was still in the channel, unread by an earlier program.
  replica.announce(stack::TcpReplicaMode::fresh, 4);
  EXPECT_EQ(sockets.error(id.value()), 0);
  EXPECT_TRUE(replica.drain().empty());
  const std::uint32_t page = replica.answer_open(open);
  replica.set_status(page, TcpSocketStatus::connected);
  replica.event(page);
  EXPECT_TRUE(sockets.connected(id.value()));
  // A later incarnation's fresh announce is a restart.
  replica.format();
  replica.announce(stack::TcpReplicaMode::fresh, 5);
  EXPECT_EQ(sockets.error(id.value()), ECONNRESET);
}

TEST_F(TcpSocketsTest, UnknownIdsAreRefusedAndReadAsNotReady) {
  for (const int id : {-1, 0, 5, 70000}) {
    EXPECT_FALSE(sockets_->readable(id));
    EXPECT_FALSE(sockets_->writable(id));
    EXPECT_FALSE(sockets_->acceptable(id));
    EXPECT_EQ(sockets_->error(id), 0);
    std::byte out[4];
    EXPECT_EQ(sockets_->recv(id, out).error().code, Errc::invalid_argument);
    EXPECT_EQ(sockets_->send(id, out).error().code, Errc::invalid_argument);
    EXPECT_FALSE(sockets_->close(id).ok());
    EXPECT_FALSE(sockets_->accept(id).ok());
  }
  EXPECT_FALSE(sockets_->connect(0, 80).ok());
  EXPECT_FALSE(sockets_->connect(kPeer, 0).ok());
}

}  // namespace
}  // namespace flotilla::sockets
