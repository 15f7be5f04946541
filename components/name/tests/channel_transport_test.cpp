#include "components/name/channel_transport.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>
#include <new>

#include "components/name/name_client.hpp"
#include "components/name/tests/change_builders.hpp"
#include "dataplane/clock.hpp"
#include "dataplane/cpu.hpp"
#include "dataplane/shared_region.hpp"

namespace flotilla::name {
namespace {

using testing::owner_change;
using testing::register_change;

// Both ends of one channel in this process.
struct Pair {
  SharedRegion region;
  NameChannel a;
  NameChannel b;
};

Pair make_pair(std::uint32_t capacity) {
  auto region = SharedRegion::create("name-transport-test", channel_bytes(capacity));
  EXPECT_TRUE(region.ok());
  Pair pair{std::move(region).value(), {}, {}};
  EXPECT_TRUE(format_channel(pair.region.bytes(), capacity).ok());
  auto a = NameChannel::attach(pair.region.bytes(), capacity, ChannelSide::a, 1, nullptr, nullptr);
  auto b = NameChannel::attach(pair.region.bytes(), capacity, ChannelSide::b, 1, nullptr, nullptr);
  EXPECT_TRUE(a.ok());
  EXPECT_TRUE(b.ok());
  pair.a = a.value();
  pair.b = b.value();
  return pair;
}


std::size_t chunks_of(const NameMessage& message) {
  std::array<Message, kMaxChunks> chunks;
  return encode_chunks(message, 1, chunks);
}

TEST(NameTransport, RoundTripOverARealRing) {
  Pair pair = make_pair(64);
  const NameMessage prepare = testing::long_prepare();
  const NameMessage lookup = NameClient::lookup_request(42, 7, "/svc/x");
  ASSERT_EQ(chunks_of(prepare), kMaxChunks);
  for (int round = 0; round < 40; ++round) {  // enough rounds to wrap the 64-slot ring
    auto sent = pair.a.send(prepare);
    ASSERT_TRUE(sent.ok());
    ASSERT_EQ(*sent, SendOutcome::sent);
    sent = pair.a.send(lookup);
    ASSERT_TRUE(sent.ok());
    ASSERT_EQ(*sent, SendOutcome::sent);
    std::vector<NameMessage> got;
    auto received = pair.b.receive(got);
    ASSERT_TRUE(received.ok());
    ASSERT_EQ(*received, 2u);
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(std::memcmp(&got[0], &prepare, sizeof(NameMessage)), 0);
    EXPECT_EQ(std::memcmp(&got[1], &lookup, sizeof(NameMessage)), 0);
  }
  // And the other direction.
  ASSERT_EQ(*pair.b.send(lookup), SendOutcome::sent);
  std::vector<NameMessage> back;
  ASSERT_EQ(*pair.a.receive(back), 1u);
  EXPECT_EQ(name_of(back[0]), "/svc/x");
  EXPECT_EQ(pair.a.stats().messages_sent, 40u * 2);
  EXPECT_EQ(pair.b.stats().messages_received, 40u * 2);
  EXPECT_EQ(pair.b.stats().chunks_rejected, 0u);
  EXPECT_EQ(pair.b.stats().messages_malformed, 0u);
}

TEST(NameTransport, FullRingTakesAllChunksOrNone) {
  Pair pair = make_pair(8);
  const NameMessage prepare = testing::long_prepare();  // 4 chunks
  const NameMessage lookup = NameClient::lookup_request(42, 7, "/svc/x");
  const std::size_t lookup_chunks = chunks_of(lookup);
  ASSERT_GE(lookup_chunks, 2u);

  std::size_t lookups = 0;
  while (*pair.a.end().out.room() >= kMaxChunks) {  // fill until a 4-chunk message no longer fits
    ASSERT_EQ(*pair.a.send(lookup), SendOutcome::sent);
    ++lookups;
  }
  const std::uint64_t published = pair.a.end().out.published();
  auto room = pair.a.end().out.room();
  ASSERT_TRUE(room.ok());
  ASSERT_LT(*room, kMaxChunks);
  ASSERT_GT(*room, 0u);  // some room, just not enough: a plain send_burst would split it

  auto refused = pair.a.send(prepare);
  ASSERT_TRUE(refused.ok());
  EXPECT_EQ(*refused, SendOutcome::ring_full);
  EXPECT_EQ(pair.a.end().out.published(), published);  // not one chunk went out
  EXPECT_EQ(pair.a.stats().refused_full, 1u);

  std::vector<NameMessage> got;
  ASSERT_EQ(*pair.b.receive(got), lookups);
  ASSERT_EQ(*pair.a.send(prepare), SendOutcome::sent);  // room again
  got.clear();
  ASSERT_EQ(*pair.b.receive(got), 1u);
  EXPECT_EQ(std::memcmp(&got[0], &prepare, sizeof(NameMessage)), 0);
  EXPECT_EQ(pair.b.stats().chunks_rejected, 0u);
}

TEST(NameTransport, GarbageIsCountedAndDropped) {
  Pair pair = make_pair(64);
  RingProducer& raw = pair.a.end().out;
  std::vector<Message> garbage;
  garbage.push_back(Message::make(MessageKind::data, std::uint64_t{12345}));  // wrong kind
  NameChunk middle{};
  middle.sequence = 9;
  middle.index = 2;  // a continuation with no start
  middle.count = 3;
  garbage.push_back(Message::make(kNameChunkKind, middle));
  NameChunk too_many{};
  too_many.index = 0;
  too_many.count = kMaxChunks + 1;  // more chunks than any message has
  garbage.push_back(Message::make(kNameChunkKind, too_many));
  // A whole one-chunk "message" of random bytes: reassembles, but is no NameMessage.
  NameChunk bogus{};
  bogus.index = 0;
  bogus.count = 1;
  for (std::size_t i = 0; i < bogus.payload.size(); ++i) {
    bogus.payload[i] = static_cast<std::byte>(0xa5 ^ (i * 37));
  }
  garbage.push_back(Message::make(kNameChunkKind, bogus));
  // The first chunk of a real message, then the first chunk of the next one: the first is cut.
  std::array<Message, kMaxChunks> chunks;
  const std::size_t count = encode_chunks(testing::long_prepare(), 500, chunks);
  garbage.push_back(chunks[0]);
  ASSERT_TRUE(raw.send_burst(garbage).ok());

  // A good message after all that still arrives whole.
  ASSERT_EQ(*pair.a.send(testing::long_prepare()), SendOutcome::sent);
  std::vector<NameMessage> got;
  auto received = pair.b.receive(got);
  ASSERT_TRUE(received.ok());
  ASSERT_EQ(*received, 1u);
  EXPECT_EQ(name_of(got[0]), name_of(testing::long_prepare()));
  EXPECT_EQ(member_of(got[0]), member_of(testing::long_prepare()));
  const TransportStats& stats = pair.b.stats();
  // wrong kind, orphan continuation, bad count, and the cut-off message: four.
  EXPECT_EQ(stats.chunks_rejected, 4u);
  EXPECT_EQ(stats.messages_malformed, 1u);  // the random bytes
  EXPECT_EQ(stats.messages_received, 1u);
  EXPECT_EQ(stats.chunks_received, garbage.size() + count);
}

TEST(NameTransport, CorruptConsumerIndexIsAnError) {
  Pair pair = make_pair(8);
  auto* layout = reinterpret_cast<RingLayout*>(pair.region.data());  // side a's producer ring
  layout->tail.value.store(1'000, std::memory_order_release);        // "consumed" the future
  auto sent = pair.a.send(testing::long_prepare());
  ASSERT_FALSE(sent.ok());
  EXPECT_EQ(sent.error().code, Errc::corrupt_index);
}

TEST(NameTransport, PumpDropsMessagesFromTheWrongSender) {
  Pair pair = make_pair(64);
  NameServer server(ServerConfig{}, {0});
  ServerPump pump(server);
  pump.add_client(42, pair.b);
  // Claims to be client 43 on client 42's channel.
  ASSERT_EQ(*pair.a.send(NameClient::lookup_request(43, 1, "/svc/x")), SendOutcome::sent);
  ASSERT_EQ(*pair.a.send(NameClient::lookup_request(42, 2, "/svc/x")), SendOutcome::sent);
  auto handled = pump.poll(1);
  ASSERT_TRUE(handled.ok());
  EXPECT_EQ(*handled, 1u);
  EXPECT_EQ(pump.spoofed(), 1u);
  std::vector<NameMessage> got;
  ASSERT_EQ(*pair.a.receive(got), 1u);
  EXPECT_EQ(got[0].cookie, 2u);
  EXPECT_EQ(got[0].status, NameErrc::not_found);
}

// A member that died left prepares in its channel; they must not reach the server as its new
// incarnation's, which would not know them.
TEST(NameTransport, PumpDiscardsWhatADeadIncarnationLeft) {
  Pair pair = make_pair(64);
  ServerConfig config;
  config.self = 1;
  NameServer server(config, {1, 2});
  ServerPump pump(server);
  pump.add_member(2, pair.b);
  const auto prepare = [](std::string name, std::uint32_t request) {
    NameMessage message;
    message.kind = NameMsgKind::prepare;
    message.from = 2;
    message.txn = TxnId{5, request, 2, 0};
    put_change(message, register_change(std::move(name), 7));
    return message;
  };
  for (std::uint32_t i = 0; i < 10; ++i) {
    ASSERT_EQ(*pair.a.send(prepare("/old/" + std::to_string(i), i)), SendOutcome::sent);
  }
  auto dropped = pump.discard_input(2);
  ASSERT_TRUE(dropped.ok());
  EXPECT_EQ(*dropped, 10u);
  EXPECT_EQ(*pump.poll(1), 0u);
  EXPECT_EQ(server.prepared_count(), 0u);
  // What the new incarnation sends afterwards goes through.
  ASSERT_EQ(*pair.a.send(prepare("/new", 11)), SendOutcome::sent);
  EXPECT_EQ(*pump.poll(2), 1u);
  EXPECT_EQ(server.prepared_count(), 1u);
}

// ---- Two processes ----

struct alignas(kCacheLine) Control {
  std::atomic<std::uint32_t> stop{0};
};

constexpr std::uint32_t kCapacity = 256;
constexpr ComponentId kClient = 42;

class Child {
 public:
  explicit Child(pid_t pid) : pid_(pid) {}
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      reap();
    }
  }
  // The child's exit code, 128+signal when a signal ended it.
  int reap() {
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0) {
      if (errno != EINTR) return -1;
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

 private:
  pid_t pid_;
};

int run_server(SharedRegion& region) {
  auto* control = reinterpret_cast<Control*>(region.data());
  auto channel = NameChannel::attach(region.bytes().subspan(kCacheLine), kCapacity,
                                     ChannelSide::b, 2, nullptr, nullptr);
  if (!channel) return 10;
  ServerConfig config;
  config.self = 1;
  NameServer server(config, {1});
  ServerPump pump(server);
  pump.add_client(kClient, *channel);
  const std::uint64_t deadline = monotonic_ms() + 20'000;
  while (control->stop.load(std::memory_order_acquire) == 0) {
    if (!pump.poll(monotonic_ms()).ok()) return 11;
    if (monotonic_ms() > deadline) return 12;
    cpu_relax();
  }
  return pump.spoofed() == 0 && pump.unroutable() == 0 ? 0 : 13;
}

// Sends `request` and waits for the reply with its cookie.
std::optional<NameMessage> ask(NameChannel& channel, const NameMessage& request) {
  auto sent = channel.send(request);
  if (!sent.ok() || *sent != SendOutcome::sent) return std::nullopt;
  const std::uint64_t deadline = monotonic_ms() + 5'000;
  std::vector<NameMessage> got;
  while (monotonic_ms() < deadline) {
    got.clear();
    if (!channel.receive(got).ok()) return std::nullopt;
    for (const NameMessage& message : got) {
      if (message.kind == NameMsgKind::reply && message.cookie == request.cookie) return message;
    }
    ::sched_yield();  // the server may share this core
  }
  return std::nullopt;
}

TEST(NameTransport, RegisterAndLookupAcrossProcesses) {
  auto created = SharedRegion::create("name-transport-2p", kCacheLine + channel_bytes(kCapacity));
  ASSERT_TRUE(created.ok());
  SharedRegion region = std::move(created).value();
  auto* control = new (region.data()) Control{};
  ASSERT_TRUE(format_channel(region.bytes().subspan(kCacheLine), kCapacity).ok());

  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(3);
    ::_exit(run_server(region));
  }
  Child child(pid);

  auto attached = NameChannel::attach(region.bytes().subspan(kCacheLine), kCapacity,
                                      ChannelSide::a, 1, nullptr, nullptr);
  ASSERT_TRUE(attached.ok());
  NameChannel& channel = attached.value();

  const Change change = register_change("/svc/echo", kClient, 7);
  auto registered = ask(channel, NameClient::change_request(kClient, 1, change));
  ASSERT_TRUE(registered.has_value());
  EXPECT_EQ(registered->status, NameErrc::ok);
  EXPECT_EQ(registered->version, 1u);

  auto found = ask(channel, NameClient::lookup_request(kClient, 2, "/svc/echo"));
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->status, NameErrc::ok);
  EXPECT_EQ(found->endpoint, change.endpoint);
  EXPECT_EQ(found->version, 1u);

  auto missing = ask(channel, NameClient::lookup_request(kClient, 3, "/svc/none"));
  ASSERT_TRUE(missing.has_value());
  EXPECT_EQ(missing->status, NameErrc::not_found);

  auto removed = ask(channel, NameClient::change_request(
                                  kClient, 4, owner_change(ChangeOp::unregister, "/svc/echo", kClient)));
  ASSERT_TRUE(removed.has_value());
  EXPECT_EQ(removed->status, NameErrc::ok);
  auto gone = ask(channel, NameClient::lookup_request(kClient, 5, "/svc/echo"));
  ASSERT_TRUE(gone.has_value());
  EXPECT_EQ(gone->status, NameErrc::not_found);

  control->stop.store(1, std::memory_order_release);
  EXPECT_EQ(child.reap(), 0);
}

}  // namespace
}  // namespace flotilla::name
