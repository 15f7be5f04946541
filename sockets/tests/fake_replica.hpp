// A fake TCP replica for tests of the application side: it formats a region in plain memory,
// answers opens, moves bytes through the pages' rings and raises events the way
// components/formats/tcp_socket_page.hpp describes. The messages between the two sides are plain vectors.
// It is a second implementation of the replica's half of the protocol and can drift from the real
// one (components/tcp/replica_server.hpp), so tests use the real replica (replica_loopback.hpp)
// wherever they can, and this only for states the real one cannot be driven into or held in: the
// moment between two of its messages, a replica that misbehaves, one that refuses alone.
#pragma once

#include <algorithm>
#include <iterator>
#include <memory>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "sockets/tcp_sockets.hpp"
#include "dataplane/tests/test_memory.hpp"

namespace flotilla::sockets::testing {

using flotilla::testing::PageMemory;
using stack::TcpAcceptedBody;
using stack::TcpOpenBody;
using stack::TcpOpenedBody;
using stack::TcpOpenOperation;
using stack::TcpPageBody;

constexpr std::size_t kRingBytes = 4096;
constexpr std::size_t kPages = 6;
constexpr std::uint32_t kPeer = 0x0a000002;  // 10.0.0.2

// One replica's side of the world: its region and the messages sent to it.
struct ReplicaSide {
  PageMemory region{TcpRegion::bytes_for(kPages, kRingBytes)};
  std::vector<Message> inbox;
  std::size_t room = 1000;  // how many more messages its channel takes
  std::uint64_t incarnation = 0;  // as the channel tells it (0: not known)
};

class FakeLinks final : public TcpReplicaLinks {
 public:
  explicit FakeLinks(std::vector<std::unique_ptr<ReplicaSide>>& sides) : sides_(sides) {}
  std::size_t replica_count() const override { return sides_.size(); }
  Result<std::size_t> send(std::size_t replica, std::span<const Message> messages) override {
    ReplicaSide& side = *sides_[replica];
    const std::size_t count = std::min(side.room, messages.size());
    side.inbox.insert(side.inbox.end(), messages.begin(), messages.begin() + static_cast<std::ptrdiff_t>(count));
    side.room -= count;
    return count;
  }
  std::span<std::byte> region(std::size_t replica) override { return sides_[replica]->region.bytes(); }
  std::uint64_t incarnation(std::size_t replica) const override { return sides_[replica]->incarnation; }

 private:
  std::vector<std::unique_ptr<ReplicaSide>>& sides_;
};

// The replica's half of the protocol, as much of it as the tests need.
class FakeReplica {
 public:
  FakeReplica(std::size_t index, ReplicaSide& side, TcpSockets& sockets)
      : index_(index), side_(side), sockets_(sockets) {}

  void format() {
    region_ = TcpRegion::format(side_.region.bytes(), kRingBytes);
    ASSERT_TRUE(region_.valid());
  }
  const TcpRegion& region() const { return region_; }

  // Takes every message sent to this replica so far.
  std::vector<Message> drain() { return std::exchange(side_.inbox, {}); }
  std::vector<Message> drain(MessageKind kind) {
    std::vector<Message> all = drain(), matching;
    std::copy_if(all.begin(), all.end(), std::back_inserter(matching), [&](const Message& m) { return m.kind == kind; });
    return matching;
  }
  TcpOpenBody take_open() {
    auto opens = drain(stack::kTcpOpenKind);
    EXPECT_EQ(opens.size(), 1u);
    return opens.empty() ? TcpOpenBody{} : opens[0].read<TcpOpenBody>();
  }

  // Hands the lowest free page out, as the replica does before it answers; kPages when none is free.
  std::uint32_t hand_out(TcpSocketStatus status) {
    std::uint32_t page = 0;
    while (page < kPages && control(page).status.load() != TcpSocketStatus::free) ++page;
    if (page == kPages) return kPages;
    auto& words = control(page);
    words.generation.fetch_add(1);
    words.status.store(status);
    words.error.store(0);
    words.flags.store(0);
    words.event_pending.store(0);
    replica_send_[page] = ByteRingConsumer(&region_.page(page)->send, region_.send_bytes(page));
    replica_receive_[page] = ByteRingProducer(&region_.page(page)->receive, region_.receive_bytes(page));
    return page;
  }
  bool has_free_page() {
    for (std::uint32_t page = 0; page < kPages; ++page) {
      if (control(page).status.load() == TcpSocketStatus::free) return true;
    }
    return false;
  }
  std::uint32_t generation(std::uint32_t page) const { return region_.page(page)->control.generation.load(); }
  TcpSocketControl& control(std::uint32_t page) { return region_.page(page)->control; }

  void deliver(const Message& message) { sockets_.handle_messages(index_, std::span(&message, 1)); }
  std::uint32_t answer_open(const TcpOpenBody& open, std::int32_t error = 0) {
    const std::uint32_t page = error == 0 ? hand_out(open.operation == TcpOpenOperation::listen
                                                          ? TcpSocketStatus::listening
                                                          : TcpSocketStatus::connecting)
                                          : 0;
    deliver(Message::make(stack::kTcpOpenedKind,
                          TcpOpenedBody{open.socket, error, page, error == 0 ? generation(page) : 0,
                                        static_cast<std::uint16_t>(open.local_port != 0 ? open.local_port : 40000 + page), 0,
                                        open.nonce}));
    return page;
  }
  // A connection established on `listener`, announced to the application.
  std::uint32_t accept_one(std::uint32_t listener, std::uint16_t remote_port) {
    const std::uint32_t page = hand_out(TcpSocketStatus::connected);
    deliver(Message::make(stack::kTcpAcceptedKind,
                          TcpAcceptedBody{listener, generation(listener), page, generation(page), kPeer,
                                          remote_port, 5001, 0x0a000001}));
    return page;
  }

  void announce(stack::TcpReplicaMode mode, std::uint64_t incarnation) {
    deliver(Message::make(stack::kTcpAnnounceKind, stack::TcpAnnounceBody{incarnation, mode, {}}));
  }
  // A new incarnation that kept the region (the contract in stack_messages.hpp: TcpAnnounceBody):
  // what the dead one had not answered is lost with it, every live page has its kick_pending
  // cleared, the announce goes first, then one event per live page.
  void recover(std::uint64_t incarnation) {
    side_.inbox.clear();
    for (std::uint32_t page = 0; page < kPages; ++page) {
      if (control(page).status.load() != TcpSocketStatus::free) control(page).kick_pending.store(0);
    }
    announce(stack::TcpReplicaMode::recovering, incarnation);
    for (std::uint32_t page = 0; page < kPages; ++page) {
      if (control(page).status.load() == TcpSocketStatus::free) continue;
      control(page).event_pending.store(0);
      event(page);
    }
  }

  // State words changed: notify unless a notification is still pending. Returns whether it sent.
  bool event(std::uint32_t page) {
    if (control(page).event_pending.exchange(1) != 0) return false;
    deliver(Message::make(stack::kTcpEventKind, TcpPageBody{page, generation(page)}));
    return true;
  }
  void set_status(std::uint32_t page, TcpSocketStatus status, std::int32_t error = 0) {
    control(page).error.store(error);
    control(page).status.store(status);
  }
  // Takes a kick: clears kick_pending first, then the requests (the order the protocol needs).
  std::uint32_t take_requests(std::uint32_t page) {
    control(page).kick_pending.store(0);
    return control(page).requests.exchange(0);
  }

  ByteRingConsumer& send_ring(std::uint32_t page) { return replica_send_[page]; }
  ByteRingProducer& receive_ring(std::uint32_t page) { return replica_receive_[page]; }

 private:
  std::size_t index_;
  ReplicaSide& side_;
  TcpSockets& sockets_;
  TcpRegion region_;
  ByteRingConsumer replica_send_[kPages];
  ByteRingProducer replica_receive_[kPages];
};

// TcpSockets over `replicas` fake replicas, their regions formatted first unless told otherwise.
struct FakeStack {
  explicit FakeStack(std::size_t replicas = 2, bool format = true) {
    for (std::size_t i = 0; i < replicas; ++i) sides.push_back(std::make_unique<ReplicaSide>());
    if (format) {
      for (auto& side : sides) EXPECT_TRUE(TcpRegion::format(side->region.bytes(), kRingBytes).valid());
    }
    sockets = std::make_unique<TcpSockets>(std::make_unique<FakeLinks>(sides));
    for (std::size_t i = 0; i < replicas; ++i) {
      fakes.push_back(std::make_unique<FakeReplica>(i, *sides[i], *sockets));
      if (format) fakes.back()->format();
    }
  }
  FakeReplica& replica(std::size_t index) { return *fakes[index]; }

  std::vector<std::unique_ptr<ReplicaSide>> sides;
  std::unique_ptr<TcpSockets> sockets;
  std::vector<std::unique_ptr<FakeReplica>> fakes;
};

}  // namespace flotilla::sockets::testing
