// The af_xdp port against the kernel: each test makes a network namespace and a veth pair, drives
// the root-namespace end with the port and talks to it from kernel sockets inside the namespace.
// Needs root; skips with a message where namespaces or veth cannot be made.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "dataplane/buffer_pool.hpp"
#include "dataplane/clock.hpp"
#include "dataplane/tests/test_support.hpp"
#include "dataplane/unique_fd.hpp"
#include "drivers/af_xdp/af_xdp_port.hpp"

namespace flotilla::drivers {
namespace {

constexpr ComponentId kDriver = 5;
constexpr ComponentId kDeadDriver = 6;
constexpr std::uint32_t kBufferCount = 4096;
constexpr std::uint64_t kGiveUpMs = 10'000;  // a bound on waiting, never an assertion on time

using Mac = std::array<std::uint8_t, 6>;
constexpr Mac kHostMac = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};  // the port's end
constexpr Mac kPeerMac = {0x02, 0x00, 0x00, 0x00, 0x00, 0x02};  // the namespace's end
constexpr Mac kFakeMac = {0x02, 0x00, 0x00, 0x00, 0x00, 0x03};  // static neighbour, nobody's

std::string mac_text(const Mac& mac) {
  char text[18];
  std::snprintf(text, sizeof text, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3],
                mac[4], mac[5]);
  return text;
}

bool run(const std::string& command) { return std::system((command + " >/dev/null 2>&1").c_str()) == 0; }

std::string output_of(const std::string& command) {
  std::string output;
  if (FILE* pipe = ::popen((command + " 2>&1").c_str(), "r")) {
    char chunk[256];
    while (std::fgets(chunk, sizeof chunk, pipe) != nullptr) output += chunk;
    ::pclose(pipe);
  }
  return output;
}

// A namespace `flo<pid>x<n>` holding one end of a veth pair (address 10.99.<n>.1/24, a static
// neighbour 10.99.<n>.2 so nothing waits for ARP); the other end stays in the root namespace, up,
// without an address, for the port. Torn down in the destructor whatever happened.
class Veth {
 public:
  static std::optional<Veth> create(int n, std::string& why) {
    Veth veth(n);
    const std::string in_ns = "ip netns exec " + veth.netns + " ";
    const std::vector<std::string> steps = {
        "ip netns add " + veth.netns,
        "ip link add " + veth.host + " address " + mac_text(kHostMac) + " type veth peer name " +
            veth.peer + " address " + mac_text(kPeerMac) + " netns " + veth.netns,
        "sysctl -qw net.ipv6.conf." + veth.host + ".disable_ipv6=1",
        "ip link set " + veth.host + " up",
        in_ns + "sysctl -qw net.ipv6.conf." + veth.peer + ".disable_ipv6=1",
        in_ns + "ip addr add " + veth.peer_address + "/24 dev " + veth.peer,
        in_ns + "ip link set " + veth.peer + " up",
        in_ns + "ip link set lo up",
        in_ns + "ethtool -K " + veth.peer + " tx off tso off gso off",
        in_ns + "ip neigh replace " + veth.fake_address + " lladdr " + mac_text(kFakeMac) +
            " dev " + veth.peer + " nud permanent",
    };
    for (const auto& step : steps) {
      if (!run(step)) {
        why = "cannot set up the namespace and veth pair: `" + step + "` failed";
        return std::nullopt;
      }
    }
    return veth;
  }

  Veth(Veth&& other) noexcept
      : host(other.host), peer(other.peer), netns(other.netns), peer_address(other.peer_address),
        fake_address(other.fake_address), owns_(std::exchange(other.owns_, false)) {}
  Veth& operator=(Veth&&) = delete;
  ~Veth() {
    if (!owns_) return;
    run("ip netns del " + netns);  // takes the peer end, and so the pair, with it
    run("ip link del " + host);
  }

  // A socket made inside the namespace (a socket keeps the namespace it was born in).
  UniqueFd socket_inside(int type) const {
    int fd = -1;
    std::thread([&] {
      UniqueFd ns(::open(("/var/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC));
      if (ns.valid() && ::setns(ns.get(), CLONE_NEWNET) == 0) {
        fd = ::socket(AF_INET, type | SOCK_CLOEXEC, 0);
      }
    }).join();
    return UniqueFd(fd);
  }

  std::string host, peer, netns, peer_address, fake_address;

 private:
  explicit Veth(int n)
      : host("flo" + std::to_string(::getpid()) + "h" + std::to_string(n)),
        peer("flo" + std::to_string(::getpid()) + "p" + std::to_string(n)),
        netns("flo" + std::to_string(::getpid()) + "x" + std::to_string(n)),
        peer_address("10.99." + std::to_string(n) + ".1"),
        fake_address("10.99." + std::to_string(n) + ".2") {}
  bool owns_ = true;  // a failed set-up is torn down too; a moved-from one is not
};

sockaddr_in address_of(const std::string& ip, std::uint16_t port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  ::inet_pton(AF_INET, ip.c_str(), &address.sin_addr);
  return address;
}

// What the tests look for in a received frame: a UDP/IPv4 datagram.
struct UdpFrame {
  Mac destination_mac{};
  std::uint32_t source_address = 0;  // network order
  std::uint32_t destination_address = 0;
  std::uint16_t destination_port = 0;
  std::string payload;
};

std::uint16_t read16(const std::byte* at) {
  return static_cast<std::uint16_t>((std::to_integer<unsigned>(at[0]) << 8) |
                                    std::to_integer<unsigned>(at[1]));
}

std::optional<UdpFrame> parse_udp(std::span<const std::byte> frame) {
  if (frame.size() < 14 + 20 + 8 || read16(frame.data() + 12) != 0x0800) return std::nullopt;
  const std::byte* ip = frame.data() + 14;
  const std::size_t ip_length = (std::to_integer<unsigned>(ip[0]) & 0xf) * 4u;
  if (std::to_integer<unsigned>(ip[9]) != IPPROTO_UDP || frame.size() < 14 + ip_length + 8) {
    return std::nullopt;
  }
  const std::byte* udp = ip + ip_length;
  const std::size_t udp_length = read16(udp + 4);
  if (udp_length < 8 || 14 + ip_length + udp_length > frame.size()) return std::nullopt;
  UdpFrame parsed;
  std::memcpy(parsed.destination_mac.data(), frame.data(), 6);
  std::memcpy(&parsed.source_address, ip + 12, 4);
  std::memcpy(&parsed.destination_address, ip + 16, 4);
  parsed.destination_port = read16(udp + 2);
  parsed.payload.assign(reinterpret_cast<const char*>(udp + 8), udp_length - 8);
  return parsed;
}

std::uint32_t sum16(const std::uint8_t* data, std::size_t length, std::uint32_t sum = 0) {
  for (std::size_t i = 0; i + 1 < length; i += 2) sum += (data[i] << 8) | data[i + 1];
  if (length % 2 != 0) sum += data[length - 1] << 8;
  return sum;
}

std::uint16_t fold(std::uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(~sum);
}

void put16(std::uint8_t* at, std::uint16_t value) {
  at[0] = static_cast<std::uint8_t>(value >> 8);
  at[1] = static_cast<std::uint8_t>(value);
}

// Writes an Ethernet + IPv4 + UDP frame, checksums included, and returns its length.
std::size_t build_udp_frame(std::span<std::byte> buffer, const Mac& source_mac,
                            const Mac& destination_mac, const std::string& source_ip,
                            const std::string& destination_ip, std::uint16_t source_port,
                            std::uint16_t destination_port, const std::string& payload) {
  auto* frame = reinterpret_cast<std::uint8_t*>(buffer.data());
  const std::size_t udp_length = 8 + payload.size();
  const std::size_t ip_length = 20 + udp_length;
  std::memcpy(frame, destination_mac.data(), 6);
  std::memcpy(frame + 6, source_mac.data(), 6);
  put16(frame + 12, 0x0800);
  std::uint8_t* ip = frame + 14;
  std::memset(ip, 0, 20);
  ip[0] = 0x45;
  put16(ip + 2, static_cast<std::uint16_t>(ip_length));
  put16(ip + 4, 0x1234);  // identification
  put16(ip + 6, 0x4000);  // don't fragment
  ip[8] = 64;
  ip[9] = IPPROTO_UDP;
  ::inet_pton(AF_INET, source_ip.c_str(), ip + 12);
  ::inet_pton(AF_INET, destination_ip.c_str(), ip + 16);
  put16(ip + 10, fold(sum16(ip, 20)));
  std::uint8_t* udp = ip + 20;
  put16(udp, source_port);
  put16(udp + 2, destination_port);
  put16(udp + 4, static_cast<std::uint16_t>(udp_length));
  put16(udp + 6, 0);
  std::memcpy(udp + 8, payload.data(), payload.size());
  // The pseudo-header: addresses, protocol, UDP length.
  std::uint32_t sum = sum16(ip + 12, 8);
  sum += IPPROTO_UDP + udp_length;
  std::uint16_t checksum = fold(sum16(udp, udp_length, sum));
  put16(udp + 6, checksum == 0 ? 0xffff : checksum);
  return 14 + ip_length;
}

class AfXdpPortTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces, veth, XDP)";
    static int next_subnet = 1;
    std::string why;
    auto veth = Veth::create(next_subnet++, why);
    // As root, a veth pair that cannot be made is a broken test machine: a failure, not a skip.
    ASSERT_TRUE(veth) << why;
    veth_.emplace(std::move(*veth));
    auto pool = BufferPool::create(1, kDefaultBufferSize, kBufferCount);
    ASSERT_TRUE(pool) << pool.error().message();
    pool_.emplace(std::move(pool.value()));
  }

  void TearDown() override { veth_.reset(); }

  AfXdpOptions options() const {
    AfXdpOptions options;
    options.interface = veth_->host;
    options.fill_buffers = 512;
    return options;
  }

  std::unique_ptr<AfXdpPort> open_port(const AfXdpOptions& options, ComponentId owner = kDriver) {
    auto port = AfXdpPort::open(options, *pool_, owner);
    EXPECT_TRUE(port) << port.error().message();
    if (!port) return nullptr;
    return std::move(port.value());
  }

  // Sends UDP datagrams from inside the namespace to the static neighbour, i.e. out to the port.
  void send_from_namespace(std::uint16_t port, int count, const std::string& tag) {
    UniqueFd socket = veth_->socket_inside(SOCK_DGRAM);
    ASSERT_TRUE(socket.valid());
    const sockaddr_in to = address_of(veth_->fake_address, port);
    for (int i = 0; i < count; ++i) {
      const std::string payload = tag + std::to_string(i);
      ASSERT_EQ(::sendto(socket.get(), payload.data(), payload.size(), 0,
                         reinterpret_cast<const sockaddr*>(&to), sizeof to),
                static_cast<ssize_t>(payload.size()));
    }
  }

  // Drives the port until `enough` says so (or the give-up bound), keeping the UDP frames to the
  // neighbour's address and freeing every received buffer.
  std::vector<UdpFrame> receive_until(AfXdpPort& port,
                                      const std::function<bool(const std::vector<UdpFrame>&)>& enough) {
    std::vector<UdpFrame> frames;
    std::array<BufferHandle, 32> burst{};
    const std::uint64_t give_up = monotonic_ms() + kGiveUpMs;
    std::uint32_t fake = 0;
    ::inet_pton(AF_INET, veth_->fake_address.c_str(), &fake);
    while (!enough(frames) && monotonic_ms() < give_up) {
      (void)port.service();
      const std::size_t count = port.receive_burst(burst);
      for (std::size_t i = 0; i < count; ++i) {
        auto bytes = pool_->bytes(kDriver, burst[i]);
        EXPECT_TRUE(bytes);
        if (bytes) {
          auto parsed = parse_udp(bytes.value());
          if (parsed && parsed->destination_address == fake) frames.push_back(*parsed);
        }
        EXPECT_TRUE(pool_->free(kDriver, burst[i]));
      }
      if (count == 0) std::this_thread::yield();
    }
    return frames;
  }

  // Transmits one hand-built datagram to the namespace's address.
  void transmit_to_namespace(AfXdpPort& port, std::uint16_t destination_port,
                             const std::string& payload) {
    BufferHandle handle;
    ASSERT_EQ(pool_->alloc_burst(kDriver, std::span(&handle, 1)), 1u);
    handle.offset = 64;  // anywhere inside the buffer will do
    handle.length = AfXdpPort::kMaxFrameLength;
    auto bytes = pool_->bytes(kDriver, handle);
    ASSERT_TRUE(bytes);
    handle.length = static_cast<std::uint16_t>(build_udp_frame(
        bytes.value(), kHostMac, kPeerMac, veth_->fake_address, veth_->peer_address, 5555,
        destination_port, payload));
    ASSERT_EQ(port.transmit_burst(std::span(&handle, 1)), 1u);
  }

  // Services the port until every buffer but `held` is back in the pool.
  void drain_until_free(AfXdpPort& port, std::size_t expected_free) {
    const std::uint64_t give_up = monotonic_ms() + kGiveUpMs;
    while (pool_->count_free() != expected_free && monotonic_ms() < give_up) {
      (void)port.service();
      std::this_thread::yield();
    }
  }

  std::optional<Veth> veth_;
  std::optional<BufferPool> pool_;
};

std::function<bool(const std::vector<UdpFrame>&)> at_least(std::size_t count) {
  return [count](const std::vector<UdpFrame>& frames) { return frames.size() >= count; };
}

TEST_F(AfXdpPortTest, ReceivesFramesSentFromTheNamespace) {
  auto port = open_port(options());
  ASSERT_TRUE(port);
  std::printf("[ port     ] %s\n", port->describe().c_str());
  EXPECT_NE(output_of("ip link show dev " + veth_->host).find("xdp"), std::string::npos);

  send_from_namespace(7777, 20, "hello ");
  const auto frames = receive_until(*port, at_least(20));
  ASSERT_EQ(frames.size(), 20u);
  std::uint32_t peer = 0;
  ::inet_pton(AF_INET, veth_->peer_address.c_str(), &peer);
  for (std::size_t i = 0; i < frames.size(); ++i) {
    EXPECT_EQ(frames[i].destination_mac, kFakeMac);
    EXPECT_EQ(frames[i].source_address, peer);
    EXPECT_EQ(frames[i].destination_port, 7777);
    EXPECT_EQ(frames[i].payload, "hello " + std::to_string(i));  // a veth keeps the order
  }
  const PortStats stats = port->stats();
  EXPECT_GE(stats.rx_frames, 20u);
  EXPECT_EQ(stats.early_drops, 0u);
}

TEST_F(AfXdpPortTest, SkbModeReceivesToo) {
  AfXdpOptions skb = options();
  skb.mode = AfXdpOptions::Mode::skb;
  auto port = open_port(skb);
  ASSERT_TRUE(port);
  EXPECT_EQ(port->attach_mode(), AfXdpPort::Attach::skb);
  EXPECT_NE(port->describe().find("skb"), std::string::npos) << port->describe();
  EXPECT_NE(output_of("ip link show dev " + veth_->host).find("xdpgeneric"), std::string::npos);
  send_from_namespace(7777, 5, "generic ");
  EXPECT_EQ(receive_until(*port, at_least(5)).size(), 5u);
}

TEST_F(AfXdpPortTest, TransmittedFrameReachesASocketInTheNamespace) {
  auto port = open_port(options());
  ASSERT_TRUE(port);
  UniqueFd receiver = veth_->socket_inside(SOCK_DGRAM);
  ASSERT_TRUE(receiver.valid());
  const sockaddr_in bind_to = address_of(veth_->peer_address, 6666);
  ASSERT_EQ(::bind(receiver.get(), reinterpret_cast<const sockaddr*>(&bind_to), sizeof bind_to), 0);

  const std::string payload = "from the port, by hand";
  transmit_to_namespace(*port, 6666, payload);

  char received[256];
  sockaddr_in from{};
  socklen_t from_length = sizeof from;
  ssize_t length = -1;
  const std::uint64_t give_up = monotonic_ms() + kGiveUpMs;
  while (length < 0 && monotonic_ms() < give_up) {
    (void)port->service();  // kicks the kernel again if the first kick was not enough
    pollfd ready{receiver.get(), POLLIN, 0};
    if (::poll(&ready, 1, 10) == 1) {
      length = ::recvfrom(receiver.get(), received, sizeof received, MSG_DONTWAIT,
                          reinterpret_cast<sockaddr*>(&from), &from_length);
    }
  }
  ASSERT_EQ(length, static_cast<ssize_t>(payload.size()));
  EXPECT_EQ(std::string(received, static_cast<std::size_t>(length)), payload);
  char from_text[INET_ADDRSTRLEN];
  ::inet_ntop(AF_INET, &from.sin_addr, from_text, sizeof from_text);
  EXPECT_EQ(from_text, veth_->fake_address);
  EXPECT_EQ(ntohs(from.sin_port), 5555);
  EXPECT_EQ(port->stats().tx_frames, 1u);
}

TEST_F(AfXdpPortTest, TransmitRefusesBadHandlesAndNeverPostsOneTwice) {
  auto port = open_port(options());
  ASSERT_TRUE(port);
  std::array<BufferHandle, 3> handles{};
  ASSERT_EQ(pool_->alloc_burst(kDriver, handles), 3u);
  handles[0].length = AfXdpPort::kMaxFrameLength + 1;  // too long: taken, dropped, freed
  handles[1].length = 60;
  BufferHandle foreign = handles[2];
  ASSERT_TRUE(pool_->hand_off(foreign, kDriver, kDeadDriver));
  foreign.length = 60;  // not the driver's: taken, dropped, left with its owner
  const std::array<BufferHandle, 3> frames = {handles[0], handles[1], foreign};
  EXPECT_EQ(port->transmit_burst(frames), 3u);
  EXPECT_EQ(port->stats().tx_dropped, 2u);
  EXPECT_EQ(port->stats().tx_frames, 1u);
  // The accepted handle went stale when the port took it: posting it again is refused.
  EXPECT_EQ(port->transmit_burst(std::span(&handles[1], 1)), 1u);
  EXPECT_EQ(port->stats().tx_dropped, 3u);
  EXPECT_EQ(pool_->owner_of(foreign.index), kDeadDriver);
  EXPECT_EQ(pool_->reclaim(kDeadDriver), 1u);
}

TEST_F(AfXdpPortTest, BlockRulesDropEarlyAndAreCounted) {
  auto port = open_port(options());
  ASSERT_TRUE(port);
  flotilla_xdp_block_rule rule{};
  rule.protocol = IPPROTO_UDP;
  rule.src_port_min = 0;
  rule.src_port_max = 0xffff;
  rule.dst_port_min = 9999;
  rule.dst_port_max = 9999;
  ASSERT_TRUE(port->set_block_rules(std::span(&rule, 1)));

  send_from_namespace(9999, 10, "blocked ");
  send_from_namespace(9998, 7, "passed ");
  const auto frames = receive_until(*port, [&](const std::vector<UdpFrame>& got) {
    return got.size() >= 7 && port->early_drops() >= 10;
  });
  EXPECT_EQ(port->early_drops(), 10u);
  EXPECT_EQ(port->stats().early_drops, 10u);
  ASSERT_EQ(frames.size(), 7u);
  for (const auto& frame : frames) EXPECT_EQ(frame.destination_port, 9998);

  // Clearing the rules lets 9999 through again.
  ASSERT_TRUE(port->set_block_rules({}));
  send_from_namespace(9999, 3, "open ");
  const auto reopened = receive_until(*port, at_least(3));
  ASSERT_EQ(reopened.size(), 3u);
  for (const auto& frame : reopened) EXPECT_EQ(frame.destination_port, 9999);
  EXPECT_EQ(port->early_drops(), 10u);

  std::vector<flotilla_xdp_block_rule> too_many(FLOTILLA_XDP_MAX_RULES + 1);
  EXPECT_EQ(port->set_block_rules(too_many).error().code, Errc::invalid_argument);
}

TEST_F(AfXdpPortTest, RulesWithPortsCannotMatchLaterFragments) {
  auto port = open_port(options());
  ASSERT_TRUE(port);
  UniqueFd sender = veth_->socket_inside(SOCK_DGRAM);
  ASSERT_TRUE(sender.valid());
  const int dont = IP_PMTUDISC_DONT;  // let the kernel fragment instead of refusing
  ASSERT_EQ(::setsockopt(sender.get(), IPPROTO_IP, IP_MTU_DISCOVER, &dont, sizeof dont), 0);
  const sockaddr_in to = address_of(veth_->fake_address, 9999);
  // Three fragments at MTU 1500. The bytes read as port 9999 (0x270f) wherever a later fragment
  // starts, so a program that took a later fragment's first bytes for ports would drop it too.
  std::string big;
  while (big.size() < 3000) big += "\x27\x0f";
  std::uint32_t fake = 0;
  ::inet_pton(AF_INET, veth_->fake_address.c_str(), &fake);

  // Sends the datagram and counts the fragments that reach the port, by fragment offset.
  auto send_and_count = [&](std::uint64_t expected_drops,
                            std::size_t expected_fragments) -> std::pair<std::size_t, std::size_t> {
    EXPECT_EQ(::sendto(sender.get(), big.data(), big.size(), 0,
                       reinterpret_cast<const sockaddr*>(&to), sizeof to),
              static_cast<ssize_t>(big.size()));
    std::size_t first = 0, later = 0;
    std::array<BufferHandle, 32> burst{};
    const std::uint64_t give_up = monotonic_ms() + kGiveUpMs;
    while ((port->early_drops() < expected_drops || first + later < expected_fragments) &&
           monotonic_ms() < give_up) {
      (void)port->service();
      const std::size_t count = port->receive_burst(burst);
      for (std::size_t i = 0; i < count; ++i) {
        auto bytes = pool_->bytes(kDriver, burst[i]);
        EXPECT_TRUE(bytes);
        if (!bytes) continue;
        const std::byte* frame = bytes->data();
        std::uint32_t destination = 0;
        if (bytes->size() >= 34 && read16(frame + 12) == 0x0800) {
          std::memcpy(&destination, frame + 14 + 16, 4);
          if (destination == fake) ++((read16(frame + 14 + 6) & 0x1fff) == 0 ? first : later);
        }
        EXPECT_TRUE(pool_->free(kDriver, burst[i]));
      }
    }
    return std::pair{first, later};
  };

  // A port rule drops the first fragment (it has the ports) and must let the others through.
  flotilla_xdp_block_rule ports_rule{};
  ports_rule.protocol = IPPROTO_UDP;
  ports_rule.src_port_max = 0xffff;
  ports_rule.dst_port_min = 9999;
  ports_rule.dst_port_max = 9999;
  ASSERT_TRUE(port->set_block_rules(std::span(&ports_rule, 1)));
  EXPECT_EQ(send_and_count(1, 2), (std::pair<std::size_t, std::size_t>{0, 2}));
  EXPECT_EQ(port->early_drops(), 1u);

  // A rule without ports (UDP to the neighbour's address) drops every fragment.
  flotilla_xdp_block_rule address_rule{};
  address_rule.protocol = IPPROTO_UDP;
  address_rule.dst_addr = fake;
  address_rule.dst_mask = 0xffffffffu;
  address_rule.src_port_max = 0xffff;
  address_rule.dst_port_max = 0xffff;
  ASSERT_TRUE(port->set_block_rules(std::span(&address_rule, 1)));
  EXPECT_EQ(send_and_count(4, 0), (std::pair<std::size_t, std::size_t>{0, 0}));
  EXPECT_EQ(port->early_drops(), 4u);
}

TEST_F(AfXdpPortTest, RestartAfterSigkillReplacesTheDeadProgram) {
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  UniqueFd ready_read(ready[0]), ready_write(ready[1]);
  const AfXdpOptions port_options = options();
  // The dead incarnation ran in SKB mode: a native attach beside it would be refused (the kernel
  // keeps one mode per interface) unless open() removes it first.
  AfXdpOptions dead_options = port_options;
  dead_options.mode = AfXdpOptions::Mode::skb;
  BufferPool& pool = *pool_;
  const pid_t child = testing::fork_child([&] {
    ready_read.reset();
    auto port = AfXdpPort::open(dead_options, pool, kDeadDriver);
    const char verdict = port ? 'y' : 'n';
    if (::write(ready_write.get(), &verdict, 1) != 1) return 1;
    ::pause();  // until SIGKILL
    return 0;
  });
  ASSERT_GT(child, 0);
  ready_write.reset();
  char verdict = 0;
  ASSERT_EQ(::read(ready_read.get(), &verdict, 1), 1);
  ASSERT_EQ(verdict, 'y');
  EXPECT_EQ(pool_->count_owned(kDeadDriver), port_options.fill_buffers);
  ASSERT_EQ(::kill(child, SIGKILL), 0);
  EXPECT_EQ(testing::wait_child(child), 128 + SIGKILL);
  // The dead driver's program is still on the interface: nobody removed it.
  EXPECT_NE(output_of("ip link show dev " + veth_->host).find("xdpgeneric"), std::string::npos);

  {
    AfXdpOptions native = port_options;
    native.mode = AfXdpOptions::Mode::native;
    auto port = open_port(native);
    ASSERT_TRUE(port);
    EXPECT_EQ(port->attach_mode(), AfXdpPort::Attach::native);
    const std::string attached = output_of("ip link show dev " + veth_->host);
    EXPECT_EQ(attached.find("xdpgeneric"), std::string::npos) << attached;
    EXPECT_EQ(pool_->reclaim(kDeadDriver), port_options.fill_buffers);
    send_from_namespace(7777, 5, "again ");
    EXPECT_EQ(receive_until(*port, at_least(5)).size(), 5u);
  }
  const std::string link = output_of("ip link show dev " + veth_->host);
  EXPECT_EQ(link.find("xdp"), std::string::npos) << link;
  EXPECT_EQ(pool_->count_free(), kBufferCount);
}

TEST_F(AfXdpPortTest, EveryBufferComesBackAfterTraffic) {
  {
    auto port = open_port(options());
    ASSERT_TRUE(port);
    EXPECT_EQ(pool_->count_owned(kDriver), 512u);  // the fill ring

    // Received frames bounce straight back out; more are built by hand.
    send_from_namespace(7777, 100, "bounce ");
    std::array<BufferHandle, 32> burst{};
    std::size_t bounced = 0;
    const std::uint64_t give_up = monotonic_ms() + kGiveUpMs;
    while (bounced < 100 && monotonic_ms() < give_up) {
      (void)port->service();
      const std::size_t count = port->receive_burst(burst);
      std::size_t sent = 0;
      while (sent < count && monotonic_ms() < give_up) {
        sent += port->transmit_burst(std::span(burst).subspan(sent, count - sent));
        (void)port->service();
      }
      bounced += count;
    }
    for (int i = 0; i < 300; ++i) transmit_to_namespace(*port, 6666, "built " + std::to_string(i));
    drain_until_free(*port, kBufferCount - 512);
    EXPECT_EQ(pool_->count_free(), kBufferCount - 512);
    EXPECT_GE(port->stats().tx_frames, 300u + 100u);
    EXPECT_GE(bounced, 100u);  // other frames (none expected) would only add to it
  }
  EXPECT_EQ(pool_->count_free(), kBufferCount);
}

}  // namespace
}  // namespace flotilla::drivers
