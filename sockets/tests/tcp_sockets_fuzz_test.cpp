// Random interleavings of every TcpSockets call with fake replicas that answer, refuse, move bytes,
// reset connections, restart, corrupt ring indices and send garbage, from a seeded RNG. Nothing
// may crash, and once the application closes every id no socket is left open (none leaks in an
// accept queue or a half-answered open). A failing seed is printed so it can be replayed. The same
// again with connections placed by a fake name server (fake_name_server.hpp) that answers late,
// wrongly, twice or never: every connection is placed once its lookup is answered or times out.
// The replicas are fakes because misbehaving is their job here: the real replica never corrupts
// its indices or sends garbage on purpose, and the application must survive one that does.
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <random>

#include <gtest/gtest.h>

#include "sockets/tests/fake_name_server.hpp"
#include "sockets/tests/fake_replica.hpp"

namespace flotilla::sockets {
namespace {

using namespace testing;

constexpr int kSeeds = 30;
constexpr int kSteps = 3000;

class Fuzzer {
 public:
  Fuzzer(std::uint64_t seed, bool name_placement) : random_(seed), stack_(2), name_placement_(name_placement) {
    if (name_placement_) {
      EXPECT_TRUE(stack_.sockets->use_name_fleet(std::make_unique<FakeNameLink>(server_), fake_name_peers()).ok());
    }
  }

  void run() {
    for (int step = 0; step < kSteps; ++step) {
      if (name_placement_ && random_() % 4 == 0) {
        name_step();
      } else if (random_() % 2 == 0) {
        // A step makes one call: only a close (or abort) can end a lookup here.
        const std::size_t waiting = stack_.sockets->pending_lookups();
        app_step();
        closed_waiting_ += waiting - std::min(waiting, stack_.sockets->pending_lookups());
      } else {
        const std::size_t index = random_() % 2;
        replica_step(stack_.replica(index), index);
      }
    }
    // Whatever the server did, every lookup is settled once its time is up.
    server_.now_ms += TcpSockets::kLookupTimeoutMs;
    stack_.sockets->expire_lookups();
    EXPECT_EQ(stack_.sockets->pending_lookups(), 0u);
    for (int id = 0; id < static_cast<int>(TcpSockets::kMaxSockets); ++id) (void)stack_.sockets->close(id);
    EXPECT_EQ(stack_.sockets->open_sockets(), 0u);
    const TcpPlacementStats& placement = stack_.sockets->placement_stats();
    if (name_placement_) {
      EXPECT_EQ(placement.by_name + placement.by_fallback + lookups_dropped(), server_.received.size() + placement.unsent);
      EXPECT_GT(placement.by_name, 0u);
    }
  }
  std::uint64_t lookup_timeouts() const { return stack_.sockets->placement_stats().timeouts; }

 private:
  // Mostly a socket the application holds, sometimes any number at all.
  int any_id() {
    if (!live_.empty() && random_() % 8 != 0) return live_[random_() % live_.size()];
    return static_cast<int>(random_() % 100) - 1;
  }
  void hold(const Result<int>& id) {
    if (id) live_.push_back(id.value());
  }
  void drop(int id) { std::erase(live_, id); }
  std::vector<std::byte> bytes(std::size_t count) {
    std::vector<std::byte> out(count);
    for (auto& b : out) b = static_cast<std::byte>(random_());
    return out;
  }

  void app_step() {
    TcpSockets& sockets = *stack_.sockets;
    const int id = any_id();
    switch (random_() % 12) {
      case 0:
        if (live_.size() < 8) hold(sockets.connect(0x0a000002, static_cast<std::uint16_t>(1 + random_() % 3)));
        break;
      case 1:
        if (live_.size() < 8) hold(sockets.listen(0, static_cast<std::uint16_t>(1 + random_() % 3), 4));
        break;
      case 2: hold(sockets.accept(id)); break;
      case 3: (void)sockets.send(id, bytes(random_() % 6000)); break;
      case 4: {
        std::vector<std::byte> out(random_() % 6000);
        (void)sockets.recv(id, out);
        break;
      }
      case 5:
        if (random_() % 3 == 0 && sockets.close(id)) drop(id);
        break;
      case 6:
        if (random_() % 3 == 0 && sockets.abort(id)) drop(id);
        break;
      case 7: (void)sockets.shutdown_write(id); break;
      case 8: (void)sockets.set_option(id, static_cast<stack::TcpOption>(random_() % 8), 1); break;
      case 9: (void)sockets.flush(); break;
      default: {
        (void)sockets.readable(id);
        (void)sockets.writable(id);
        (void)sockets.acceptable(id);
        (void)sockets.eof(id);
        (void)sockets.error(id);
        (void)sockets.info(id);
        (void)sockets.unacknowledged(id);
        (void)sockets.endpoints(id);
        (void)sockets.listening(id);
        (void)sockets.connected(id);
      }
    }
  }

  void replica_step(FakeReplica& replica, std::size_t index) {
    TcpSockets& sockets = *stack_.sockets;
    switch (random_() % 10) {
      case 0: {  // answer the opens
        for (const Message& message : replica.drain()) {
          if (message.kind == stack::kTcpKickKind) {
            take_kick(replica, message.read<stack::TcpPageBody>().page);
            continue;
          }
          if (message.kind != stack::kTcpOpenKind) continue;
          const auto open = message.read<stack::TcpOpenBody>();
          if (random_() % 4 == 0 || !replica.has_free_page()) {
            replica.answer_open(open, ECONNREFUSED);
          } else {
            replica.answer_open(open);
          }
        }
        break;
      }
      case 1: {  // connections get established, now and then one is reset
        for (std::uint32_t page = 0; page < kPages; ++page) {
          const auto status = replica.control(page).status.load();
          if (status == TcpSocketStatus::connecting) {
            replica.set_status(page, random_() % 8 == 0 ? TcpSocketStatus::closed : TcpSocketStatus::connected,
                              ECONNREFUSED);
          } else if (status == TcpSocketStatus::connected && random_() % 30 == 0) {
            replica.set_status(page, TcpSocketStatus::closed, ECONNRESET);
          } else {
            continue;
          }
          replica.event(page);
        }
        break;
      }
      case 2: {  // data arrives on every connection
        for (std::uint32_t page = 0; page < kPages; ++page) {
          if (replica.control(page).status.load() != TcpSocketStatus::connected) continue;
          (void)replica.receive_ring(page).write(bytes(random_() % 3000));
          replica.event(page);
        }
        break;
      }
      case 3: {  // a listener gets a connection
        if (!replica.has_free_page()) break;
        const std::uint32_t page = random_() % kPages;
        if (replica.control(page).status.load() == TcpSocketStatus::listening) replica.accept_one(page, 40000);
        break;
      }
      case 4: {  // a peer closes
        if (random_() % 4 != 0) break;
        const std::uint32_t page = random_() % kPages;
        replica.control(page).flags.fetch_or(kTcpPeerClosed);
        replica.event(page);
        break;
      }
      case 5: {  // consume the send rings (acknowledged)
        for (std::uint32_t page = 0; page < kPages; ++page) {
          auto& ring = replica.send_ring(page);
          if (ring.valid()) ring.consume(ring.readable());
        }
        break;
      }
      case 6:
        if (random_() % 20 == 0) {
          replica.format();
          sockets.replica_restarted(index);
        }
        break;
      case 7: {  // garbage
        Message message;
        const MessageKind kinds[] = {stack::kTcpOpenedKind, stack::kTcpAcceptedKind, stack::kTcpEventKind,
                                     MessageKind::data};
        message.kind = kinds[random_() % 4];
        for (std::size_t word = 0; word < Message::kBodyBytes / 4; ++word) {
          const std::uint32_t value = random_() % 2 == 0 ? static_cast<std::uint32_t>(random_() % 8)
                                                         : static_cast<std::uint32_t>(random_());
          std::memcpy(message.body.data() + word * 4, &value, 4);
        }
        replica.deliver(message);
        break;
      }
      case 8: {  // a corrupt ring index
        if (random_() % 50 != 0) break;
        const std::uint32_t page = random_() % kPages;
        replica.region().page(page)->send.head.store(random_());
        break;
      }
      default:
        stack_.sides[index]->room = random_() % 3 == 0 ? 0 : 1000;  // a full channel now and then
    }
  }

  // The name server answers some lookup it was sent (rightly or not), repeats or forges an answer,
  // lets time pass, or fills its channel.
  void name_step() {
    TcpSockets& sockets = *stack_.sockets;
    const auto& received = server_.received;
    const name::NameMessage lookup = received.empty() ? name::NameMessage{} : received[random_() % received.size()];
    switch (random_() % 7) {
      case 0:
      case 1:
        sockets.handle_name_reply(reply_to(lookup, kReplicaComponents[random_() % 2]));
        break;
      case 2:
        sockets.handle_name_reply(reply_to(lookup, static_cast<ComponentId>(random_() % 16),
                                           static_cast<name::NameErrc>(random_() % 4)));
        break;
      case 3: {
        name::NameMessage garbage = reply_to(lookup, kReplicaComponents[0]);
        auto* raw = reinterpret_cast<unsigned char*>(&garbage);
        for (int flips = 0; flips < 4; ++flips) raw[random_() % sizeof garbage] = static_cast<unsigned char>(random_());
        sockets.handle_name_reply(garbage);
        break;
      }
      case 4:
      case 5:
        server_.now_ms += random_() % 120;
        sockets.expire_lookups();
        break;
      default:
        server_.room = random_() % 4 != 0;
    }
  }

  // Lookups whose connection was closed before they were settled (neither placement counter moves).
  std::uint64_t lookups_dropped() const { return closed_waiting_; }

  void take_kick(FakeReplica& replica, std::uint32_t page) {
    if (page >= kPages) return;
    const std::uint32_t requests = replica.take_requests(page);
    if ((requests & (kTcpRequestClose | kTcpRequestAbort)) != 0) {
      replica.control(page).status.store(TcpSocketStatus::free);
    }
  }

  std::mt19937_64 random_;
  FakeStack stack_;
  NameServerSide server_;
  bool name_placement_;
  std::uint64_t closed_waiting_ = 0;
  std::vector<int> live_;
};

void fuzz(bool name_placement) {
  std::uint64_t timeouts = 0;
  for (int seed = 1; seed <= kSeeds; ++seed) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    Fuzzer fuzzer(static_cast<std::uint64_t>(seed), name_placement);
    fuzzer.run();
    timeouts += fuzzer.lookup_timeouts();
    if (::testing::Test::HasFailure()) {
      std::fprintf(stderr, "failing seed: %d\n", seed);
      return;
    }
  }
  // The runs did exercise lookups that timed out, not only answered ones.
  if (name_placement) {
    EXPECT_GT(timeouts, 0u);
  }
}

TEST(TcpSocketsFuzz, RandomCallsAndReplicaBehaviourNeverCrash) { fuzz(false); }

TEST(TcpSocketsFuzz, PlacementByANameServerThatMisbehavesNeverCrashesOrStrands) { fuzz(true); }

}  // namespace
}  // namespace flotilla::sockets
