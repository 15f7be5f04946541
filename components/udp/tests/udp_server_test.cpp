// UdpServer driven with plain calls: applications open, send and close; IP delivers datagrams; a
// fake UdpOutputs records what goes to IP and to the applications. A real BufferPool checks the
// buffer accounting: the server keeps no buffer, so after each test every buffer is free again and
// the pool never refused a handle (no double free, no use after hand-off).
#include "components/udp/udp_server.hpp"

#include <array>
#include <optional>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <string_view>
#include <utility>
#include <vector>

#include "dataplane/tests/test_memory.hpp"
#include "components/wire/ipv4.hpp"
#include "components/wire/udp.hpp"

namespace flotilla::udp {
namespace {

using Bytes = std::vector<std::byte>;
using flotilla::testing::PageMemory;

constexpr ComponentId kIp = 2;
constexpr ComponentId kUdp = 4;
constexpr ComponentId kAppA = 7;
constexpr ComponentId kAppB = 8;
constexpr std::uint32_t kPoolBuffers = 256;
constexpr std::uint32_t kOurAddress = 0x0a4d0002;   // 10.77.0.2
constexpr std::uint32_t kPeerAddress = 0x0a4d0001;  // 10.77.0.1
// Where IP's segments start in their buffers: behind a frame's Ethernet and IPv4 headers.
constexpr std::uint16_t kSegmentOffset = 64 + 14 + 20;

Bytes pattern(std::size_t length, std::uint8_t seed) {
  Bytes out(length);
  for (std::size_t i = 0; i < length; ++i) out[i] = std::byte{static_cast<std::uint8_t>(seed + i * 5)};
  return out;
}

Bytes udp_datagram(std::uint16_t source_port, std::uint16_t destination_port,
                   std::span<const std::byte> payload) {
  Bytes out(wire::kUdpHeaderBytes + payload.size());
  std::copy(payload.begin(), payload.end(), out.begin() + wire::kUdpHeaderBytes);
  EXPECT_EQ(wire::emit_udp(out, source_port, destination_port, kPeerAddress, kOurAddress, payload.size()),
            out.size());
  return out;
}

struct ToApp {
  ComponentId app;
  stack::SocketDatagramBody body;
  Bytes payload;
};
struct ToIp {
  stack::TransportPacketBody body;
  Bytes segment;
};
// Who got a datagram: the application and its socket ({kNoComponent, 0}: nobody).
using Receiver = std::pair<ComponentId, std::uint32_t>;
struct StatusToApp {
  ComponentId app;
  stack::SocketStatusBody body;
};

// Takes the buffers UDP passes on like the peer would (hand-off), copies them and frees them.
class FakeOutputs final : public UdpOutputs {
 public:
  explicit FakeOutputs(BufferPool& pool) : pool_(pool) {}

  bool to_ip(const stack::TransportPacketBody& packet) override {
    if (!accept_ip) return false;
    to_ip_packets.push_back(ToIp{packet, take(packet.segment, kIp)});
    return true;
  }
  bool bind_port(const stack::PortBindingBody& binding) override {
    if (!accept_bindings) return false;
    bindings.push_back(binding);
    return true;
  }
  bool to_app(ComponentId app, const stack::SocketDatagramBody& datagram) override {
    if (!accept_app) return false;
    to_app_datagrams.push_back(ToApp{app, datagram, take(datagram.payload, app)});
    return true;
  }
  bool status_to_app(ComponentId app, const stack::SocketStatusBody& status) override {
    statuses.push_back(StatusToApp{app, status});
    return true;
  }
  formats::ExposedSocketTable exposed(ComponentId app) override {
    return app == exposed_app ? exposed_table : formats::ExposedSocketTable{};
  }

  ComponentId exposed_app = kNoComponent;  // the application given an exposed-socket table
  formats::ExposedSocketTable exposed_table;

  bool accept_ip = true;
  bool accept_bindings = true;
  bool accept_app = true;
  std::vector<ToIp> to_ip_packets;
  std::vector<stack::PortBindingBody> bindings;
  std::vector<ToApp> to_app_datagrams;
  std::vector<StatusToApp> statuses;

 private:
  Bytes take(const BufferHandle& handle, ComponentId to) {
    auto bytes = pool_.bytes(kUdp, handle);
    EXPECT_TRUE(bytes.ok()) << "UDP passed on a buffer it does not hold";
    if (!bytes) return {};
    Bytes copy(bytes->begin(), bytes->end());
    EXPECT_TRUE(pool_.hand_off(handle, kUdp, to).ok());
    EXPECT_TRUE(pool_.free(to, handle).ok());
    return copy;
  }

  BufferPool& pool_;
};

class UdpServerTest : public ::testing::Test {
 protected:
  UdpServerTest() : pool_(make_pool()), outputs_(pool_), region_(UdpServer::state_bytes_for(16)) {}

  static BufferPool make_pool() {
    auto pool = BufferPool::create(1, 2048, kPoolBuffers);
    if (!pool) std::abort();  // nothing to test without a pool
    return std::move(pool).value();
  }

  void SetUp() override {
    pool_.set_counters(&pool_counters_);
    start_server();
    ASSERT_NE(server_, nullptr);
    EXPECT_FALSE(server_->restored());
  }

  void TearDown() override {
    EXPECT_EQ(pool_.count_free(), kPoolBuffers) << "a buffer was kept or lost";
    EXPECT_EQ(pool_counters_.read(Counter::bad_handles), 0u) << "the pool refused a handle";
  }

  void start_server() {
    auto created = UdpServer::create(pool_, kUdp, kOurAddress, region_.bytes(), outputs_, counters_);
    ASSERT_TRUE(created.ok()) << created.error().message();
    server_ = std::move(created).value();
  }

  // The server stops and starts again on the same state store; the claims it made before are
  // forgotten, so what follows shows only its new ones.
  void restart_server() {
    server_.reset();
    outputs_.bindings.clear();
    start_server();
    ASSERT_NE(server_, nullptr);
    EXPECT_TRUE(server_->restored());
  }

  // Opens a socket and returns the status it got.
  stack::SocketStatusBody open(ComponentId app, std::uint32_t socket, std::uint16_t port,
                               std::uint8_t protocol = wire::kProtocolUdp, std::uint8_t options = 0) {
    const std::size_t before = outputs_.statuses.size();
    server_->on_open(app, stack::SocketOpenBody{socket, port, protocol, options, 0});
    EXPECT_EQ(outputs_.statuses.size(), before + 1) << "every open is answered";
    if (outputs_.statuses.size() != before + 1) return {};
    EXPECT_EQ(outputs_.statuses.back().app, app);
    EXPECT_EQ(outputs_.statuses.back().body.socket, socket);
    return outputs_.statuses.back().body;
  }

  BufferHandle give_to_udp(ComponentId owner, std::span<const std::byte> bytes, std::uint16_t offset) {
    BufferHandle handle;
    EXPECT_EQ(pool_.alloc_burst(owner, std::span(&handle, 1)), 1u);
    handle.offset = offset;
    handle.length = static_cast<std::uint16_t>(bytes.size());
    auto data = pool_.bytes(owner, handle);
    EXPECT_TRUE(data.ok());
    if (data) std::copy(bytes.begin(), bytes.end(), data->begin());
    EXPECT_TRUE(pool_.hand_off(handle, owner, kUdp).ok());
    return handle;
  }

  stack::SocketStatusBody open_sharing(ComponentId app, std::uint32_t socket, std::uint16_t port) {
    return open(app, socket, port, wire::kProtocolUdp, stack::kSocketOpenReusePort);
  }

  stack::SocketStatusBody open_reusing(ComponentId app, std::uint32_t socket, std::uint16_t port) {
    return open(app, socket, port, wire::kProtocolUdp, stack::kSocketOpenReuseAddress);
  }

  // The application's socket on `port` takes datagrams from kPeerAddress:remote_port only (0: from
  // anyone again).
  void connect(ComponentId app, std::uint32_t socket, std::uint16_t port, std::uint16_t remote_port) {
    server_->on_connect(app, stack::SocketConnectBody{socket, remote_port != 0 ? kPeerAddress : 0, remote_port, port});
  }

  // A segment from IP, as it delivers one (handle at the UDP header).
  BufferHandle from_ip(std::span<const std::byte> segment, std::uint16_t local_port,
                       std::uint32_t remote_address = kPeerAddress) {
    const BufferHandle handle = give_to_udp(kIp, segment, kSegmentOffset);
    server_->on_ip_packet(stack::TransportPacketBody{.segment = handle,
                                                     .remote_address = remote_address,
                                                     .local_address = kOurAddress,
                                                     .remote_port = 4000,
                                                     .local_port = local_port,
                                                     .protocol = wire::kProtocolUdp,
                                                     .reserved = {}});
    return handle;
  }

  // The port the server reported for the application's socket (0 when it was never bound).
  std::uint16_t bound_port(ComponentId app, std::uint32_t socket) const {
    for (auto status = outputs_.statuses.rbegin(); status != outputs_.statuses.rend(); ++status) {
      if (status->app == app && status->body.socket == socket) return status->body.error == 0 ? status->body.local_port : 0;
    }
    return 0;
  }

  // An application's datagram: payload only, with `headroom` bytes free in front of it, naming
  // the socket and its bound port (by default the one the server reported).
  BufferHandle from_app(ComponentId app, std::uint32_t socket, std::span<const std::byte> payload,
                        std::uint16_t remote_port = 4000,
                        std::uint16_t headroom = stack::kHeadroom + 8,
                        std::optional<std::uint16_t> local_port = std::nullopt) {
    const BufferHandle handle = give_to_udp(app, payload, headroom);
    server_->on_app_datagram(app, stack::SocketDatagramBody{.payload = handle,
                                                            .socket = socket,
                                                            .remote_address = kPeerAddress,
                                                            .remote_port = remote_port,
                                                            .local_port = local_port.value_or(bound_port(app, socket))});
    return handle;
  }

  static std::vector<std::uint16_t> many_sources() {
    std::vector<std::uint16_t> sources;
    for (std::uint16_t port = 40000; port < 40064; ++port) sources.push_back(port);
    return sources;
  }

  // Sends one datagram to `port` from each of `sources` (peer ports; by default 64 of them) and
  // returns who got each, in order.
  std::vector<Receiver> receivers(std::uint16_t port, const std::vector<std::uint16_t>& sources = many_sources()) {
    std::vector<Receiver> out;
    for (const std::uint16_t source : sources) {
      const std::size_t before = outputs_.to_app_datagrams.size();
      from_ip(udp_datagram(source, port, pattern(8, static_cast<std::uint8_t>(source))), port);
      if (outputs_.to_app_datagrams.size() == before + 1) {
        EXPECT_EQ(outputs_.to_app_datagrams.back().body.remote_port, source);
        out.emplace_back(outputs_.to_app_datagrams.back().app, outputs_.to_app_datagrams.back().body.socket);
      } else {
        out.emplace_back(kNoComponent, 0);
      }
    }
    return out;
  }

  std::uint64_t count(std::string_view name) const {
    for (std::size_t i = 0; i < counters_.published(); ++i) {
      if (std::string_view(counters_.entries[i].name) == name) return counters_.entries[i].read();
    }
    ADD_FAILURE() << "no counter named " << name;
    return 0;
  }

  void expect_binding(std::size_t index, stack::BindingChange change, std::uint16_t port) {
    ASSERT_LT(index, outputs_.bindings.size());
    EXPECT_EQ(outputs_.bindings[index].protocol, wire::kProtocolUdp);
    EXPECT_EQ(outputs_.bindings[index].change, change);
    EXPECT_EQ(outputs_.bindings[index].local_port, port);
  }

  BufferPool pool_;
  CounterBlock pool_counters_{};
  FakeOutputs outputs_;
  NamedCounterTable counters_{};
  PageMemory region_;
  std::unique_ptr<UdpServer> server_;
};

// ---- sockets ----

TEST_F(UdpServerTest, OpenClaimsThePortAndReportsIt) {
  const auto status = open(kAppA, 1, 5000);
  EXPECT_EQ(status.error, 0);
  EXPECT_EQ(status.local_port, 5000);
  ASSERT_EQ(outputs_.bindings.size(), 1u);
  expect_binding(0, stack::BindingChange::claim, 5000);
  EXPECT_EQ(server_->open_sockets(), 1u);
}

TEST_F(UdpServerTest, PortInUseAndBadOpensAreRefused) {
  ASSERT_EQ(open(kAppA, 1, 5000).error, 0);
  auto status = open(kAppB, 1, 5000);
  EXPECT_EQ(status.error, EADDRINUSE);
  EXPECT_EQ(count("port_in_use"), 1u);
  status = open(kAppA, 2, 5000);  // the same app, another socket: the port is still taken
  EXPECT_EQ(status.error, EADDRINUSE);
  status = open(kAppA, 1, 5001);  // the socket id is in use
  EXPECT_EQ(status.error, EINVAL);
  status = open(kAppA, 3, 5002, 6);  // not UDP
  EXPECT_EQ(status.error, EINVAL);
  EXPECT_EQ(count("bad_request"), 2u);
  EXPECT_EQ(outputs_.bindings.size(), 1u) << "a refused open claimed a port";
  EXPECT_EQ(server_->open_sockets(), 1u);
}

TEST_F(UdpServerTest, EphemeralPortsAreDistinctAndSkipTakenOnes) {
  const auto first = open(kAppA, 1, 0);
  ASSERT_EQ(first.error, 0);
  EXPECT_GE(first.local_port, UdpServer::kEphemeralFirst);
  ASSERT_EQ(open(kAppA, 2, first.local_port + 1).error, 0);  // taken explicitly
  const auto second = open(kAppB, 1, 0);
  ASSERT_EQ(second.error, 0);
  EXPECT_GE(second.local_port, UdpServer::kEphemeralFirst);
  EXPECT_NE(second.local_port, first.local_port);
  EXPECT_NE(second.local_port, first.local_port + 1);
  ASSERT_EQ(outputs_.bindings.size(), 3u);
  expect_binding(0, stack::BindingChange::claim, first.local_port);
  expect_binding(2, stack::BindingChange::claim, second.local_port);
}

TEST_F(UdpServerTest, OpenWhoseClaimCannotReachIpFails) {
  // The claim is what makes IP deliver the port's datagrams: a socket whose claim was not sent
  // would be bound but deaf, so the open fails and can be retried.
  outputs_.accept_bindings = false;
  EXPECT_EQ(open(kAppA, 1, 5000).error, EAGAIN);
  EXPECT_EQ(server_->open_sockets(), 0u);
  EXPECT_EQ(count("ip_queue_full"), 1u);
  outputs_.accept_bindings = true;
  const auto status = open(kAppA, 1, 5000);
  EXPECT_EQ(status.error, 0);
  EXPECT_EQ(status.local_port, 5000);
  EXPECT_EQ(server_->open_sockets(), 1u);
}

TEST_F(UdpServerTest, FullTableAnswersEnobufs) {
  const std::size_t capacity = (region_.bytes().size() - sizeof(UdpStateHeader)) / sizeof(SocketEntry);
  for (std::uint32_t socket = 0; socket < capacity; ++socket) {
    ASSERT_EQ(open(kAppA, socket, 0).error, 0);
  }
  EXPECT_EQ(open(kAppA, 1000, 0).error, ENOBUFS);
  EXPECT_EQ(count("sockets_full"), 1u);
  EXPECT_EQ(server_->open_sockets(), capacity);
}

TEST_F(UdpServerTest, CloseReleasesThePort) {
  ASSERT_EQ(open(kAppA, 1, 5000).error, 0);
  server_->on_close(kAppB, {1});  // not B's socket
  EXPECT_EQ(count("bad_request"), 1u);
  EXPECT_EQ(server_->open_sockets(), 1u);
  server_->on_close(kAppA, {1});
  ASSERT_EQ(outputs_.bindings.size(), 2u);
  expect_binding(1, stack::BindingChange::release, 5000);
  EXPECT_EQ(server_->open_sockets(), 0u);
  server_->on_close(kAppA, {1});
  EXPECT_EQ(count("bad_request"), 2u);
  EXPECT_EQ(open(kAppB, 9, 5000).error, 0);  // free for anyone now
}

// ---- SO_REUSEPORT: port groups ----

TEST_F(UdpServerTest, ReusePortSocketsShareAPortAndEachClientStaysWithOne) {
  ASSERT_EQ(open_sharing(kAppA, 1, 5300).error, 0);
  ASSERT_EQ(open_sharing(kAppB, 2, 5300).error, 0);  // another application of the stack
  ASSERT_EQ(outputs_.bindings.size(), 1u) << "the group's first member claims the port for all";
  expect_binding(0, stack::BindingChange::claim, 5300);
  EXPECT_EQ(server_->open_sockets(), 2u);

  const auto first = receivers(5300);
  const auto again = receivers(5300);
  EXPECT_EQ(first, again) << "a client moved to another member while the group was unchanged";
  const auto to_a = std::count(first.begin(), first.end(), Receiver{kAppA, 1});
  const auto to_b = std::count(first.begin(), first.end(), Receiver{kAppB, 2});
  EXPECT_GT(to_a, 0) << "one member got no client";
  EXPECT_GT(to_b, 0) << "one member got no client";
  EXPECT_EQ(static_cast<std::size_t>(to_a + to_b), first.size());
  // A client at another address finds a member too (no checksum: the helper sums for the peer's).
  const std::size_t before = outputs_.to_app_datagrams.size();
  Bytes unchecked = udp_datagram(40000, 5300, pattern(8, 1));
  wire::store_be16(unchecked, 6, 0);
  from_ip(unchecked, 5300, kPeerAddress + 1);
  EXPECT_EQ(outputs_.to_app_datagrams.size(), before + 1);

  // Each member sends from the shared port; a member's socket named by another app is refused.
  from_app(kAppA, 1, pattern(10, 1));
  from_app(kAppB, 2, pattern(10, 2));
  ASSERT_EQ(outputs_.to_ip_packets.size(), 2u);
  EXPECT_EQ(outputs_.to_ip_packets[0].body.local_port, 5300);
  EXPECT_EQ(outputs_.to_ip_packets[1].body.local_port, 5300);
  from_app(kAppA, 2, pattern(10, 3), 4000, stack::kHeadroom + 8, 5300);
  EXPECT_EQ(count("bad_request"), 1u);
}

TEST_F(UdpServerTest, ReusePortGroupRefusesSocketsThatDidNotAskForIt) {
  ASSERT_EQ(open_sharing(kAppA, 1, 5300).error, 0);
  EXPECT_EQ(open(kAppA, 2, 5300).error, EADDRINUSE);  // no SO_REUSEPORT
  ASSERT_EQ(open(kAppB, 1, 5301).error, 0);
  EXPECT_EQ(open_sharing(kAppA, 3, 5301).error, EADDRINUSE);  // the one there did not ask for it
  EXPECT_EQ(count("port_in_use"), 2u);
  EXPECT_EQ(open(kAppA, 4, 5302, wire::kProtocolUdp, 0x80).error, EINVAL);  // an unknown option
  EXPECT_EQ(count("bad_request"), 1u);
  EXPECT_EQ(server_->open_sockets(), 2u);
  EXPECT_EQ(outputs_.bindings.size(), 2u);
  // An ephemeral port is not shared with a group, whatever the socket asked.
  const auto ephemeral = open_sharing(kAppA, 5, 0);
  ASSERT_EQ(ephemeral.error, 0);
  EXPECT_NE(ephemeral.local_port, 5300);
  EXPECT_NE(ephemeral.local_port, 5301);
}

TEST_F(UdpServerTest, AMemberLeavingKeepsTheOthersAndTheLastReleasesThePort) {
  ASSERT_EQ(open_sharing(kAppA, 1, 5300).error, 0);
  ASSERT_EQ(open_sharing(kAppA, 2, 5300).error, 0);
  ASSERT_EQ(open_sharing(kAppB, 3, 5300).error, 0);
  const auto before = receivers(5300);

  server_->on_close(kAppA, {1});
  EXPECT_EQ(outputs_.bindings.size(), 1u) << "a member's close released the group's port";
  const auto after_close = receivers(5300);
  for (const auto& receiver : after_close) {
    EXPECT_NE(receiver, (Receiver{kAppA, 1})) << "the closed member still receives";
    EXPECT_NE(receiver.first, kNoComponent) << "a datagram found no member";
  }
  EXPECT_GT(std::count(after_close.begin(), after_close.end(), Receiver{kAppA, 2}), 0);
  EXPECT_GT(std::count(after_close.begin(), after_close.end(), Receiver{kAppB, 3}), 0);
  EXPECT_NE(before, after_close) << "the closed member's clients went nowhere else";

  server_->on_app_restarted(kAppB);  // removes only B's member
  EXPECT_EQ(outputs_.bindings.size(), 1u);
  for (const auto& receiver : receivers(5300)) {
    EXPECT_EQ(receiver, (Receiver{kAppA, 2}));
  }
  EXPECT_EQ(open(kAppB, 4, 5300).error, EADDRINUSE) << "the group's port was given away";

  server_->on_close(kAppA, {2});
  ASSERT_EQ(outputs_.bindings.size(), 2u);
  expect_binding(1, stack::BindingChange::release, 5300);
  EXPECT_EQ(server_->open_sockets(), 0u);
  EXPECT_EQ(receivers(5300, {40000}).front().first, kNoComponent);
  EXPECT_EQ(open(kAppB, 5, 5300).error, 0) << "the port is free again, for a socket without SO_REUSEPORT too";
}

TEST_F(UdpServerTest, ServerRestartRebuildsThePortGroups) {
  ASSERT_EQ(open_sharing(kAppA, 1, 5300).error, 0);
  ASSERT_EQ(open(kAppA, 9, 5400).error, 0);
  ASSERT_EQ(open_sharing(kAppB, 2, 5300).error, 0);
  const auto before = receivers(5300);
  restart_server();
  EXPECT_EQ(server_->open_sockets(), 3u);
  server_->claim_all();
  ASSERT_EQ(outputs_.bindings.size(), 2u) << "one claim for each port, not for each member";
  EXPECT_EQ(receivers(5300), before) << "a client moved to another member across the restart";
  EXPECT_EQ(open(kAppB, 3, 5300).error, EADDRINUSE);
  ASSERT_EQ(open_sharing(kAppB, 4, 5300).error, 0) << "the group still takes members";
  server_->on_close(kAppA, {1});
  server_->on_close(kAppB, {2});
  server_->on_close(kAppB, {4});
  ASSERT_EQ(outputs_.bindings.size(), 3u);
  expect_binding(2, stack::BindingChange::release, 5300);
}

TEST_F(UdpServerTest, ReuseAddressSocketsShareAPortAndTheNewestUnconnectedTakesNewClients) {
  ASSERT_EQ(open_reusing(kAppA, 1, 5500).error, 0);
  ASSERT_EQ(open_reusing(kAppB, 2, 5500).error, 0);
  ASSERT_EQ(outputs_.bindings.size(), 1u) << "the port's first socket claims it for all";
  for (const auto& receiver : receivers(5500)) EXPECT_EQ(receiver, (Receiver{kAppB, 2})) << "not the newest";
  // iperf2's shape: the listener connects to its client and a new listener binds the port.
  connect(kAppB, 2, 5500, 40000);
  ASSERT_EQ(open_reusing(kAppA, 3, 5500).error, 0);
  const auto after = receivers(5500);
  EXPECT_EQ(after.front(), (Receiver{kAppB, 2})) << "the connected socket lost its peer's datagrams";
  for (std::size_t i = 1; i < after.size(); ++i) {
    EXPECT_EQ(after[i], (Receiver{kAppA, 3})) << "a new client did not reach the newest listener";
  }
  server_->on_close(kAppA, {3});
  const auto older = receivers(5500, {40000, 40001});
  EXPECT_EQ(older[0], (Receiver{kAppB, 2}));
  EXPECT_EQ(older[1], (Receiver{kAppA, 1})) << "with the newest gone, the one bound before it";
  EXPECT_EQ(outputs_.bindings.size(), 1u);
}

TEST_F(UdpServerTest, ConnectedSocketTakesItsPeerOnlyUntilItDisconnects) {
  ASSERT_EQ(open(kAppA, 1, 5600).error, 0);
  connect(kAppA, 1, 5600, 40000);
  EXPECT_EQ(receivers(5600, {40000, 40001}), (std::vector<Receiver>{{kAppA, 1}, {kNoComponent, 0}}));
  const std::size_t before = outputs_.to_app_datagrams.size();
  Bytes unchecked = udp_datagram(40000, 5600, pattern(8, 1));  // the peer's port, another host
  wire::store_be16(unchecked, 6, 0);  // no checksum: the helper sums for the peer's address
  from_ip(unchecked, 5600, kPeerAddress + 1);
  EXPECT_EQ(outputs_.to_app_datagrams.size(), before);
  EXPECT_EQ(count("no_socket"), 2u);
  connect(kAppA, 1, 5600, 0);  // AF_UNSPEC
  EXPECT_EQ(receivers(5600, {40000, 40001}), (std::vector<Receiver>{{kAppA, 1}, {kAppA, 1}}));
  EXPECT_EQ(count("bad_request"), 0u);
}

TEST_F(UdpServerTest, ConnectedMemberOfAReusePortGroupTakesItsPeerAndTheHashSharesTheRest) {
  ASSERT_EQ(open_sharing(kAppA, 1, 5300).error, 0);
  ASSERT_EQ(open_sharing(kAppA, 2, 5300).error, 0);
  ASSERT_EQ(open_sharing(kAppB, 3, 5300).error, 0);
  connect(kAppA, 2, 5300, 40005);
  const auto got = receivers(5300);
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (i == 5) {
      EXPECT_EQ(got[i], (Receiver{kAppA, 2}));
    } else {
      EXPECT_NE(got[i], (Receiver{kAppA, 2})) << "the connected member took another client";
      EXPECT_NE(got[i].first, kNoComponent) << "a client found no unconnected member";
    }
  }
  EXPECT_GT(std::count(got.begin(), got.end(), Receiver{kAppA, 1}), 0);
  EXPECT_GT(std::count(got.begin(), got.end(), Receiver{kAppB, 3}), 0);
}

TEST_F(UdpServerTest, ReuseAddressAndReusePortShareOnlyAsOnLinux) {
  ASSERT_EQ(open_reusing(kAppA, 1, 5700).error, 0);
  EXPECT_EQ(open(kAppA, 2, 5700).error, EADDRINUSE);          // neither flag
  EXPECT_EQ(open_sharing(kAppA, 3, 5700).error, EADDRINUSE);  // SO_REUSEPORT only: shares neither
  const std::uint8_t both = stack::kSocketOpenReuseAddress | stack::kSocketOpenReusePort;
  ASSERT_EQ(open(kAppA, 4, 5700, wire::kProtocolUdp, both).error, 0);  // SO_REUSEADDR with the first
  EXPECT_EQ(open_sharing(kAppA, 5, 5700).error, EADDRINUSE) << "shares SO_REUSEPORT with one, nothing with the first";
  ASSERT_EQ(open(kAppB, 1, 5701).error, 0);
  EXPECT_EQ(open_reusing(kAppB, 2, 5701).error, EADDRINUSE) << "the one there did not set SO_REUSEADDR";
  EXPECT_EQ(count("port_in_use"), 4u);
  EXPECT_EQ(server_->open_sockets(), 3u);
}

TEST_F(UdpServerTest, BadConnectsAreCountedAndChangeNothing) {
  ASSERT_EQ(open(kAppA, 1, 5800).error, 0);
  server_->on_connect(kAppA, stack::SocketConnectBody{2, kPeerAddress, 40000, 5800});  // no such socket
  server_->on_connect(kAppB, stack::SocketConnectBody{1, kPeerAddress, 40000, 5800});  // another app's
  server_->on_connect(kAppA, stack::SocketConnectBody{1, kPeerAddress, 40000, 5801});  // not its port
  server_->on_connect(kAppA, stack::SocketConnectBody{1, 0, 40000, 5800});             // no address
  server_->on_connect(kAppA, stack::SocketConnectBody{1, kPeerAddress, 0, 5800});      // no port
  EXPECT_EQ(count("bad_request"), 5u);
  EXPECT_EQ(receivers(5800, {40000, 40001}), (std::vector<Receiver>{{kAppA, 1}, {kAppA, 1}}));
}

TEST_F(UdpServerTest, ServerRestartKeepsConnectedSocketsAndWhichIsNewest) {
  ASSERT_EQ(open_reusing(kAppA, 1, 5500).error, 0);
  ASSERT_EQ(open_reusing(kAppA, 2, 5500).error, 0);
  ASSERT_EQ(open_reusing(kAppA, 3, 5500).error, 0);
  connect(kAppA, 3, 5500, 40000);
  connect(kAppA, 1, 5500, 40001);
  const auto before = receivers(5500, {40000, 40001, 40002});
  EXPECT_EQ(before, (std::vector<Receiver>{{kAppA, 3}, {kAppA, 1}, {kAppA, 2}}));
  restart_server();
  EXPECT_EQ(receivers(5500, {40000, 40001, 40002}), before);
  ASSERT_EQ(open_reusing(kAppB, 1, 5500).error, 0);
  EXPECT_EQ(receivers(5500, {40002}).front(), (Receiver{kAppB, 1})) << "a socket bound after the restart is the newest";
}

// ---- datagrams from IP ----

TEST_F(UdpServerTest, DatagramFromIpGoesToTheOwningApp) {
  ASSERT_EQ(open(kAppA, 11, 5000).error, 0);
  ASSERT_EQ(open(kAppB, 12, 5001).error, 0);
  const Bytes payload = pattern(300, 3);
  const BufferHandle segment = from_ip(udp_datagram(4000, 5001, payload), 5001);
  ASSERT_EQ(outputs_.to_app_datagrams.size(), 1u);
  const ToApp& delivered = outputs_.to_app_datagrams[0];
  EXPECT_EQ(delivered.app, kAppB);
  EXPECT_EQ(delivered.body.socket, 12u);
  EXPECT_EQ(delivered.body.payload.index, segment.index);
  EXPECT_EQ(delivered.body.payload.offset, kSegmentOffset + 8);
  EXPECT_EQ(delivered.body.payload.length, payload.size());
  EXPECT_EQ(delivered.payload, payload);
  EXPECT_EQ(delivered.body.remote_address, kPeerAddress);
  EXPECT_EQ(delivered.body.remote_port, 4000);
  EXPECT_EQ(delivered.body.local_port, 5001);
  EXPECT_EQ(count("datagrams_in"), 1u);
}

TEST_F(UdpServerTest, TrailingBytesAndZeroChecksumAreFine) {
  ASSERT_EQ(open(kAppA, 1, 5000).error, 0);
  // Bytes past the UDP length (IP padding) are not payload.
  Bytes padded = udp_datagram(4000, 5000, pattern(5, 1));
  padded.resize(padded.size() + 7);
  from_ip(padded, 5000);
  ASSERT_EQ(outputs_.to_app_datagrams.size(), 1u);
  EXPECT_EQ(outputs_.to_app_datagrams[0].payload, pattern(5, 1));
  // A zero checksum means "none" over IPv4.
  Bytes unchecked = udp_datagram(4000, 5000, pattern(6, 2));
  wire::store_be16(unchecked, 6, 0);
  from_ip(unchecked, 5000);
  ASSERT_EQ(outputs_.to_app_datagrams.size(), 2u);
  EXPECT_EQ(outputs_.to_app_datagrams[1].payload, pattern(6, 2));
}

TEST_F(UdpServerTest, BadDatagramsFromIpAreCountedAndFreed) {
  ASSERT_EQ(open(kAppA, 1, 5000).error, 0);
  Bytes bad_checksum = udp_datagram(4000, 5000, pattern(20, 1));
  bad_checksum[12] ^= std::byte{0x40};
  from_ip(bad_checksum, 5000);
  EXPECT_EQ(count("bad_checksum"), 1u);

  Bytes too_long = udp_datagram(4000, 5000, pattern(20, 1));
  wire::store_be16(too_long, 4, static_cast<std::uint16_t>(too_long.size() + 1));
  from_ip(too_long, 5000);
  Bytes too_small = udp_datagram(4000, 5000, pattern(20, 1));
  wire::store_be16(too_small, 4, 7);
  from_ip(too_small, 5000);
  from_ip(pattern(6, 0), 5000);  // not even a header
  EXPECT_EQ(count("bad_length"), 3u);

  from_ip(udp_datagram(4000, 5999, pattern(20, 1)), 5999);  // nobody's port
  EXPECT_EQ(count("no_socket"), 1u);
  EXPECT_TRUE(outputs_.to_app_datagrams.empty());
}

TEST_F(UdpServerTest, AppThatCannotTakeADatagramLosesIt) {
  ASSERT_EQ(open(kAppA, 1, 5000).error, 0);
  outputs_.accept_app = false;
  from_ip(udp_datagram(4000, 5000, pattern(20, 1)), 5000);
  EXPECT_EQ(count("app_queue_full"), 1u);
}

TEST_F(UdpServerTest, SocketStateIsExposedToItsApplication) {
  alignas(64) std::array<std::byte, formats::ExposedSocketTable::bytes_for(8)> region{};
  outputs_.exposed_app = kAppA;
  outputs_.exposed_table = formats::ExposedSocketTable::format(region);
  // What the application sees: a read-only view of the same bytes.
  const formats::ExposedSocketTable seen = formats::ExposedSocketTable::read(region);
  ASSERT_TRUE(seen.valid());
  EXPECT_EQ(seen.capacity(), 8u);

  const auto status = open(kAppA, 21, 5000);
  ASSERT_EQ(status.error, 0);
  ASSERT_GT(status.exposed_slot, 0u);
  const formats::ExposedSocket* slot = seen.slot(status.exposed_slot - 1u);
  ASSERT_NE(slot, nullptr);
  EXPECT_EQ(slot->bound.load(), 1u);
  EXPECT_EQ(slot->socket, 21u);
  EXPECT_EQ(slot->local_port, 5000);
  EXPECT_EQ(slot->delivered.load(), 0u);  // not readable yet

  from_ip(udp_datagram(4000, 5000, pattern(10, 1)), 5000);
  from_ip(udp_datagram(4000, 5000, pattern(11, 2)), 5000);
  EXPECT_EQ(slot->delivered.load(), 2u);  // readable: two datagrams wait on the channel
  outputs_.accept_app = false;
  from_ip(udp_datagram(4000, 5000, pattern(12, 3)), 5000);
  EXPECT_EQ(slot->dropped.load(), 1u);
  EXPECT_EQ(slot->delivered.load(), 2u);
  from_app(kAppA, 21, pattern(30, 4));
  EXPECT_EQ(slot->sent.load(), 1u);

  // An application without a table gets no slot; closing a socket clears its slot.
  EXPECT_EQ(open(kAppB, 22, 5001).exposed_slot, 0u);
  server_->on_close(kAppA, stack::SocketCloseBody{21});
  EXPECT_EQ(slot->bound.load(), 0u);
}

TEST(ExposedSocketTable, AReaderSeesNothingUntilTheWriterFormatsAndRefusesSmallRegions) {
  alignas(64) std::array<std::byte, formats::ExposedSocketTable::bytes_for(4)> region{};
  EXPECT_FALSE(formats::ExposedSocketTable::read(region).valid());
  EXPECT_FALSE(formats::ExposedSocketTable::format(std::span(region).first(64)).valid());
  ASSERT_TRUE(formats::ExposedSocketTable::format(region).valid());
  const auto table = formats::ExposedSocketTable::read(region);
  ASSERT_TRUE(table.valid());
  EXPECT_EQ(table.capacity(), 4u);
  EXPECT_EQ(table.slot(4), nullptr);
  // A capacity word claiming more than the region holds is not believed.
  reinterpret_cast<formats::ExposedSocketHeader*>(region.data())->capacity = 1000;
  EXPECT_EQ(formats::ExposedSocketTable::read(region).capacity(), 4u);
}

// ---- datagrams from applications ----

TEST_F(UdpServerTest, AppDatagramGetsItsHeaderAndGoesToIp) {
  const auto status = open(kAppA, 1, 0);
  ASSERT_EQ(status.error, 0);
  const Bytes payload = pattern(200, 9);
  const BufferHandle handle = from_app(kAppA, 1, payload, 6000);
  ASSERT_EQ(outputs_.to_ip_packets.size(), 1u);
  const ToIp& sent = outputs_.to_ip_packets[0];
  EXPECT_EQ(sent.body.segment.index, handle.index);
  EXPECT_EQ(sent.body.segment.offset, handle.offset - 8);
  EXPECT_EQ(sent.body.segment.length, payload.size() + 8);
  EXPECT_EQ(sent.body.remote_address, kPeerAddress);
  EXPECT_EQ(sent.body.local_address, kOurAddress);
  EXPECT_EQ(sent.body.remote_port, 6000);
  EXPECT_EQ(sent.body.local_port, status.local_port);
  EXPECT_EQ(sent.body.protocol, wire::kProtocolUdp);
  // The header as the peer will check it: ports, length, checksum over the pseudo header.
  Bytes segment = sent.segment;
  auto datagram = wire::UdpDatagram::parse(segment, kOurAddress, kPeerAddress);
  ASSERT_TRUE(datagram.ok()) << "bad UDP header or checksum";
  EXPECT_NE(datagram->checksum(), 0) << "IPv4 UDP from us always carries a checksum";
  EXPECT_EQ(datagram->source_port(), status.local_port);
  EXPECT_EQ(datagram->destination_port(), 6000);
  EXPECT_EQ(datagram->length(), payload.size() + 8);
  EXPECT_TRUE(std::equal(payload.begin(), payload.end(), datagram->payload().begin(), datagram->payload().end()));
  EXPECT_EQ(count("datagrams_out"), 1u);
}

TEST_F(UdpServerTest, BadAppDatagramsAreRefusedAndFreed) {
  ASSERT_EQ(open(kAppA, 1, 5000).error, 0);
  from_app(kAppA, 2, pattern(10, 1), 4000, stack::kHeadroom + 8, 5000);  // no such socket, on A's port
  from_app(kAppB, 1, pattern(10, 1), 4000, stack::kHeadroom + 8, 5000);  // A's socket and port, from B
  from_app(kAppA, 1, pattern(10, 1), 4000, stack::kHeadroom + 8, 5001);  // A's socket, a wrong port
  from_app(kAppA, 1, pattern(10, 1), 0);  // no remote port
  from_app(kAppA, 1, pattern(10, 1), 4000, UdpServer::kHeadersBefore - 1);  // no room for headers
  EXPECT_EQ(count("bad_request"), 5u);
  EXPECT_TRUE(outputs_.to_ip_packets.empty());
  // Just enough headroom works.
  from_app(kAppA, 1, pattern(10, 1), 4000, UdpServer::kHeadersBefore);
  EXPECT_EQ(outputs_.to_ip_packets.size(), 1u);
}

TEST_F(UdpServerTest, IpThatCannotTakeADatagramLosesIt) {
  ASSERT_EQ(open(kAppA, 1, 5000).error, 0);
  outputs_.accept_ip = false;
  from_app(kAppA, 1, pattern(10, 1));
  EXPECT_EQ(count("ip_queue_full"), 1u);
  EXPECT_EQ(count("datagrams_out"), 0u);
}

// ---- restarts ----

// A program on a seat another one left uses the same socket ids: the opener's nonce comes back
// with the socket's status and every datagram for it, from the state store too after a restart.
TEST_F(UdpServerTest, StatusAndDatagramsCarryTheOpenersNonce) {
  server_->on_open(kAppA, stack::SocketOpenBody{1, 5000, wire::kProtocolUdp, 0, 77});
  ASSERT_EQ(outputs_.statuses.size(), 1u);
  EXPECT_EQ(outputs_.statuses.back().body.nonce, 77u);
  from_ip(udp_datagram(4000, 5000, pattern(4, 1)), 5000);
  restart_server();
  from_ip(udp_datagram(4000, 5000, pattern(4, 2)), 5000);
  server_->on_app_restarted(kAppA);
  server_->on_open(kAppA, stack::SocketOpenBody{1, 5000, wire::kProtocolUdp, 0, 78});
  EXPECT_EQ(outputs_.statuses.back().body.nonce, 78u);
  from_ip(udp_datagram(4000, 5000, pattern(4, 3)), 5000);
  ASSERT_EQ(outputs_.to_app_datagrams.size(), 3u);
  EXPECT_EQ(outputs_.to_app_datagrams[0].body.nonce, 77u);
  EXPECT_EQ(outputs_.to_app_datagrams[1].body.nonce, 77u);
  EXPECT_EQ(outputs_.to_app_datagrams[2].body.nonce, 78u);
}

TEST_F(UdpServerTest, AppRestartReleasesOnlyItsPorts) {
  ASSERT_EQ(open(kAppA, 1, 5000).error, 0);
  ASSERT_EQ(open(kAppA, 2, 5001).error, 0);
  ASSERT_EQ(open(kAppB, 1, 5002).error, 0);
  outputs_.bindings.clear();
  server_->on_app_restarted(kAppA);
  ASSERT_EQ(outputs_.bindings.size(), 2u);
  std::vector<std::uint16_t> released;
  for (const auto& binding : outputs_.bindings) {
    EXPECT_EQ(binding.change, stack::BindingChange::release);
    released.push_back(binding.local_port);
  }
  std::sort(released.begin(), released.end());
  EXPECT_EQ(released, (std::vector<std::uint16_t>{5000, 5001}));
  EXPECT_EQ(server_->open_sockets(), 1u);

  from_ip(udp_datagram(4000, 5000, pattern(4, 1)), 5000);
  EXPECT_EQ(count("no_socket"), 1u);
  from_ip(udp_datagram(4000, 5002, pattern(4, 1)), 5002);
  ASSERT_EQ(outputs_.to_app_datagrams.size(), 1u);
  EXPECT_EQ(outputs_.to_app_datagrams[0].app, kAppB);
  // The restarted app starts afresh with its old socket ids and ports.
  EXPECT_EQ(open(kAppA, 1, 5000).error, 0);
}

TEST_F(UdpServerTest, ServerRestartKeepsSocketsAndClaimsThemAgain) {
  ASSERT_EQ(open(kAppA, 1, 5000).error, 0);
  const auto ephemeral = open(kAppB, 7, 0);
  ASSERT_EQ(ephemeral.error, 0);
  ASSERT_EQ(open(kAppA, 2, 5001).error, 0);
  server_->on_close(kAppA, {2});
  restart_server();
  EXPECT_EQ(server_->open_sockets(), 2u);
  server_->claim_all();
  ASSERT_EQ(outputs_.bindings.size(), 2u);
  std::vector<std::uint16_t> claimed;
  for (const auto& binding : outputs_.bindings) {
    EXPECT_EQ(binding.change, stack::BindingChange::claim);
    claimed.push_back(binding.local_port);
  }
  std::sort(claimed.begin(), claimed.end());
  EXPECT_EQ(claimed, (std::vector<std::uint16_t>{5000, ephemeral.local_port}));

  // The same sockets receive, and the ports stay taken.
  from_ip(udp_datagram(4000, ephemeral.local_port, pattern(4, 1)), ephemeral.local_port);
  ASSERT_EQ(outputs_.to_app_datagrams.size(), 1u);
  EXPECT_EQ(outputs_.to_app_datagrams[0].app, kAppB);
  EXPECT_EQ(outputs_.to_app_datagrams[0].body.socket, 7u);
  EXPECT_EQ(open(kAppB, 8, 5000).error, EADDRINUSE);
  // Ephemeral ports go on from where they were, not from the start again.
  const auto next = open(kAppB, 9, 0);
  ASSERT_EQ(next.error, 0);
  EXPECT_NE(next.local_port, ephemeral.local_port);
}

}  // namespace
}  // namespace flotilla::udp
