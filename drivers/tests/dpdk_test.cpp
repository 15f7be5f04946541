// The DPDK port on net_af_packet and net_af_xdp vdevs over a veth pair whose other end lives in a network
// namespace: frames sent by the kernel there arrive, a hand-built UDP/IPv4 frame we transmit is
// received by a socket there, buffers all come back, EAL's runtime directories are cleaned up.
// EAL can start only once per process, so everything runs in one test, in order. Also prints the
// copy cost quoted in dpdk_port.hpp.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include "dataplane/buffer_pool.hpp"
#include "dataplane/clock.hpp"
#include "drivers/dpdk/dpdk_port.hpp"

namespace flotilla::drivers {
namespace {

constexpr ComponentId kDriver = 3;
constexpr std::uint32_t kPoolBuffers = 1024;
constexpr std::uint16_t kRxPort = 9999;   // kernel -> port
constexpr std::uint16_t kTxPort = 7777;   // port -> kernel socket
constexpr std::uint8_t kRootMac[6] = {0x02, 0, 0, 0, 0x98, 0x01};
constexpr std::uint8_t kPeerMac[6] = {0x02, 0, 0, 0, 0x98, 0x02};

bool run(const std::string& command) {
  return std::system((command + " >/dev/null 2>&1").c_str()) == 0;
}

// A namespace flo<pid>d holding one end of a veth pair (10.98.0.1/24, offloads off); the other end
// flo<pid>r stays in the root namespace, up, without an address. Torn down by the destructor.
struct Netns {
  std::string ns = "flo" + std::to_string(::getpid()) + "d";
  std::string root_end = "flo" + std::to_string(::getpid()) + "r";
  std::string peer_end = "flo" + std::to_string(::getpid()) + "p";
  bool ready = false;

  Netns() {
    ready = run("ip netns add " + ns) &&
            run("ip link add " + root_end + " address 02:00:00:00:98:01 type veth peer name " +
                peer_end + " address 02:00:00:00:98:02 netns " + ns) &&
            run("sysctl -w net.ipv6.conf." + root_end + ".disable_ipv6=1") &&
            run("ip link set " + root_end + " up") &&
            run("ip -n " + ns + " addr add 10.98.0.1/24 dev " + peer_end) &&
            run("ip -n " + ns + " link set " + peer_end + " up") &&
            run("ip netns exec " + ns + " ethtool -K " + peer_end + " tx off tso off gso off") &&
            run("ip -n " + ns + " neigh add 10.98.0.2 lladdr 02:00:00:00:98:01 dev " + peer_end);
  }
  ~Netns() {
    run("ip netns del " + ns);
    run("ip link del " + root_end);
  }
};

// Runs `work` on a thread that has entered the namespace (network namespaces are per thread).
template <class Work>
std::thread in_namespace(const std::string& ns, Work work) {
  return std::thread([ns, work]() mutable {
    const int fd = ::open(("/var/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ::setns(fd, CLONE_NEWNET) != 0) {
      ADD_FAILURE() << "cannot enter namespace " << ns;
      if (fd >= 0) ::close(fd);
      return;
    }
    ::close(fd);
    work();
  });
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

// Ethernet + IPv4 (10.98.0.2 -> 10.98.0.1) + UDP (5555 -> kTxPort) around `payload`, checksums done.
std::vector<std::uint8_t> udp_frame(const std::string& payload, std::uint16_t ip_id) {
  const std::size_t udp_length = 8 + payload.size();
  const std::size_t ip_length = 20 + udp_length;
  std::vector<std::uint8_t> frame(14 + ip_length, 0);
  std::memcpy(frame.data(), kPeerMac, 6);
  std::memcpy(frame.data() + 6, kRootMac, 6);
  put16(&frame[12], 0x0800);
  std::uint8_t* ip = &frame[14];
  ip[0] = 0x45;
  put16(ip + 2, static_cast<std::uint16_t>(ip_length));
  put16(ip + 4, ip_id);
  put16(ip + 6, 0x4000);  // don't fragment
  ip[8] = 64;
  ip[9] = 17;
  const std::uint8_t source[4] = {10, 98, 0, 2};
  const std::uint8_t destination[4] = {10, 98, 0, 1};
  std::memcpy(ip + 12, source, 4);
  std::memcpy(ip + 16, destination, 4);
  put16(ip + 10, fold(sum16(ip, 20)));
  std::uint8_t* udp = ip + 20;
  put16(udp, 5555);
  put16(udp + 2, kTxPort);
  put16(udp + 4, static_cast<std::uint16_t>(udp_length));
  std::memcpy(udp + 8, payload.data(), payload.size());
  std::uint32_t pseudo = sum16(ip + 12, 8) + 17 + static_cast<std::uint32_t>(udp_length);
  std::uint16_t checksum = fold(sum16(udp, udp_length, pseudo));
  put16(udp + 6, checksum == 0 ? 0xffff : checksum);
  return frame;
}

// The UDP payload of an IPv4 frame to `port`, or empty.
std::string udp_payload_to(std::span<const std::byte> bytes, std::uint16_t port) {
  const auto* frame = reinterpret_cast<const std::uint8_t*>(bytes.data());
  if (bytes.size() < 14 + 20 + 8 || frame[12] != 0x08 || frame[13] != 0x00) return {};
  const std::uint8_t* ip = frame + 14;
  const std::size_t header = std::size_t{ip[0] & 0x0fu} * 4;
  if (ip[9] != 17 || bytes.size() < 14 + header + 8) return {};
  const std::uint8_t* udp = ip + header;
  if (((udp[2] << 8) | udp[3]) != port) return {};
  const std::size_t udp_length = (udp[4] << 8) | udp[5];
  if (udp_length < 8 || 14 + header + udp_length > bytes.size()) return {};
  return std::string(reinterpret_cast<const char*>(udp + 8), udp_length - 8);
}

// ns per 1500-byte frame for the two copies the port makes, bursts of 32, warm caches.
void print_copy_cost(BufferPool& pool) {
  rte_mempool* mbufs = rte_pktmbuf_pool_create("flo_copy_cost", 1023, 256, 0,
                                               RTE_MBUF_DEFAULT_BUF_SIZE, SOCKET_ID_ANY);
  ASSERT_NE(mbufs, nullptr);
  PoolCache cache(pool, kDriver);
  constexpr std::size_t kBurst = 32;
  constexpr int kRounds = 20'000;
  std::array<BufferHandle, kBurst> handles{};
  std::array<rte_mbuf*, kBurst> burst{};

  // Into mbufs: the transmit path (mbuf alloc, append, copy, free the mbufs in the device's stead).
  ASSERT_EQ(pool.alloc_burst(kDriver, handles), kBurst);
  for (auto& handle : handles) handle.length = 1500;
  std::uint64_t start = 0;
  for (int round = -1000; round < kRounds; ++round) {
    if (round == 0) start = monotonic_ns();
    if (rte_pktmbuf_alloc_bulk(mbufs, burst.data(), kBurst) != 0) FAIL() << "mbuf alloc";
    for (std::size_t i = 0; i < kBurst; ++i) {
      char* to = rte_pktmbuf_append(burst[i], 1500);
      std::memcpy(to, pool.bytes(kDriver, handles[i])->data(), 1500);
    }
    rte_pktmbuf_free_bulk(burst.data(), kBurst);
  }
  const double into_mbuf = double(monotonic_ns() - start) / (double(kRounds) * kBurst);
  for (auto& handle : handles) ASSERT_TRUE(pool.free(kDriver, handle).ok());

  // Out of mbufs: the receive path (pool buffers from the cache, copy, back to the cache).
  ASSERT_EQ(rte_pktmbuf_alloc_bulk(mbufs, burst.data(), kBurst), 0);
  for (auto* mbuf : burst) std::memset(rte_pktmbuf_append(mbuf, 1500), 0x5a, 1500);
  for (int round = -1000; round < kRounds; ++round) {
    if (round == 0) start = monotonic_ns();
    if (cache.alloc_burst(handles) != kBurst) FAIL() << "pool alloc";
    for (std::size_t i = 0; i < kBurst; ++i) {
      handles[i].length = 1500;
      std::memcpy(pool.bytes(kDriver, handles[i])->data(), rte_pktmbuf_mtod(burst[i], void*), 1500);
    }
    if (cache.free_burst(handles) != kBurst) FAIL() << "pool free";
  }
  const double out_of_mbuf = double(monotonic_ns() - start) / (double(kRounds) * kBurst);
  rte_pktmbuf_free_bulk(burst.data(), kBurst);
  cache.drain();
  rte_mempool_free(mbufs);
  std::printf("copy cost per 1500-byte frame: into an mbuf %.1f ns, out of an mbuf %.1f ns\n",
              into_mbuf, out_of_mbuf);
}

TEST(DpdkPortTest, AfPacketVethBothWays) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces, AF_PACKET)";
  Netns net;
  // As root, a namespace that cannot be made is a broken test machine: a failure, not a skip.
  ASSERT_TRUE(net.ready) << "cannot create the namespace and veth pair " << net.ns;
  auto pool = BufferPool::create(7, kDefaultBufferSize, kPoolBuffers);
  ASSERT_TRUE(pool.ok());

  // A runtime directory left by a dead process is removed when EAL starts.
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ASSERT_EQ(::waitpid(dead, nullptr, 0), dead);
  const std::filesystem::path stale = "/var/run/dpdk/flo" + std::to_string(dead);
  std::filesystem::create_directories(stale);
  std::ofstream(stale / "config") << "stale";

  // A device no driver knows: a clear error, not an abort; EAL starts on the way.
  auto unknown = DpdkPort::open(DpdkOptions{{}, "net_flonothing0", 256, 256, 1023}, *pool, kDriver);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code, Errc::system);
  EXPECT_STREQ(unknown.error().context, "rte_dev_probe (no such driver or device?)");
  EXPECT_FALSE(std::filesystem::exists(stale)) << "the dead process's directory is gone";

  // af_packet twice (the device is removed on close and probed again), then af_xdp on the same
  // veth. af_xdp wants 1024 descriptors: with 256 its xsk set-up fails with EINVAL.
  struct Variant {
    std::string device;
    std::uint16_t descriptors;
    std::string described;
  };
  const Variant variants[] = {
      {"net_af_packet0,iface=" + net.root_end, 256, "dpdk net_af_packet net_af_packet0 "},
      {"net_af_packet0,iface=" + net.root_end, 256, "dpdk net_af_packet net_af_packet0 "},
      {"net_af_xdp0,iface=" + net.root_end, 1024, "dpdk net_af_xdp net_af_xdp0 "},
  };
  for (int incarnation = 0; incarnation < 3; ++incarnation) {
    const Variant& variant = variants[incarnation];
    SCOPED_TRACE("incarnation " + std::to_string(incarnation) + ": " + variant.device);
    DpdkOptions options;
    options.device = variant.device;
    options.rx_descriptors = variant.descriptors;
    options.tx_descriptors = variant.descriptors;
    options.mbufs = 4095;
    auto opened = DpdkPort::open(options, *pool, kDriver);
    ASSERT_TRUE(opened.ok()) << opened.error().message();
    std::unique_ptr<DpdkPort> port = std::move(opened.value());
    EXPECT_EQ(port->describe().rfind(variant.described, 0), 0u) << port->describe();

    // Kernel -> port: datagrams sent in the namespace to 10.98.0.2 (a static neighbour entry
    // pointing at our end) arrive as whole frames.
    constexpr int kDatagrams = 20;
    std::thread sender = in_namespace(net.ns, [&] {
      const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      sockaddr_in to{};
      to.sin_family = AF_INET;
      to.sin_port = htons(kRxPort);
      ::inet_pton(AF_INET, "10.98.0.2", &to.sin_addr);
      for (int i = 0; i < kDatagrams; ++i) {
        const std::string payload = "flotilla-rx-" + std::to_string(incarnation) + "-" + std::to_string(i);
        EXPECT_EQ(::sendto(fd, payload.data(), payload.size(), 0, reinterpret_cast<sockaddr*>(&to),
                           sizeof to),
                  static_cast<ssize_t>(payload.size()));
      }
      ::close(fd);
    });
    sender.join();
    std::set<std::string> seen;
    std::array<BufferHandle, 32> handles{};
    for (const std::uint64_t deadline = monotonic_ms() + 10'000;
         seen.size() < kDatagrams && monotonic_ms() < deadline;) {
      const std::size_t got = port->receive_burst(handles);
      for (std::size_t i = 0; i < got; ++i) {
        EXPECT_EQ(pool->owner_of(handles[i].index), kDriver);
        auto bytes = pool->bytes(kDriver, handles[i]);
        ASSERT_TRUE(bytes.ok());
        const std::string payload = udp_payload_to(bytes.value(), kRxPort);
        if (!payload.empty()) seen.insert(payload);
        ASSERT_TRUE(pool->free(kDriver, handles[i]).ok());
      }
    }
    EXPECT_EQ(seen.size(), std::size_t{kDatagrams});
    for (int i = 0; i < kDatagrams; ++i) {
      EXPECT_TRUE(seen.count("flotilla-rx-" + std::to_string(incarnation) + "-" + std::to_string(i)))
          << i;
    }

    // Port -> kernel: hand-built UDP/IPv4 frames reach a socket in the namespace, checksums and all.
    constexpr int kFrames = 10;
    std::atomic<bool> listening{false};
    std::set<std::string> delivered;
    std::thread receiver = in_namespace(net.ns, [&] {
      const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      sockaddr_in at{};
      at.sin_family = AF_INET;
      at.sin_port = htons(kTxPort);
      ::inet_pton(AF_INET, "10.98.0.1", &at.sin_addr);
      const timeval wait{5, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
      if (::bind(fd, reinterpret_cast<sockaddr*>(&at), sizeof at) != 0) {
        ADD_FAILURE() << "bind 10.98.0.1:" << kTxPort;
        listening = true;
        return;
      }
      listening = true;
      char buffer[2048];
      for (int i = 0; i < kFrames; ++i) {
        sockaddr_in from{};
        socklen_t from_length = sizeof from;
        const ssize_t got = ::recvfrom(fd, buffer, sizeof buffer, 0,
                                       reinterpret_cast<sockaddr*>(&from), &from_length);
        if (got < 0) break;  // timed out: the count below tells
        EXPECT_EQ(ntohs(from.sin_port), 5555);
        EXPECT_EQ(ntohl(from.sin_addr.s_addr), 0x0a620002u);
        delivered.insert(std::string(buffer, static_cast<std::size_t>(got)));
      }
      ::close(fd);
    });
    while (!listening) std::this_thread::yield();
    for (int i = 0; i < kFrames; ++i) {
      const std::string payload = "flotilla-tx-" + std::to_string(incarnation) + "-" + std::to_string(i);
      const std::vector<std::uint8_t> frame = udp_frame(payload, static_cast<std::uint16_t>(i));
      BufferHandle handle;
      ASSERT_EQ(pool->alloc_burst(kDriver, {&handle, 1}), 1u);
      handle.length = static_cast<std::uint16_t>(frame.size());
      std::memcpy(pool->bytes(kDriver, handle)->data(), frame.data(), frame.size());
      std::size_t accepted = 0;
      for (int attempt = 0; attempt < 1'000'000 && accepted == 0; ++attempt) {
        accepted = port->transmit_burst({&handle, 1});
        if (accepted == 0) port->service();
      }
      ASSERT_EQ(accepted, 1u);
    }
    for (int i = 0; i < 1000; ++i) port->service();
    receiver.join();
    EXPECT_EQ(delivered.size(), std::size_t{kFrames});

    const PortStats stats = port->stats();
    EXPECT_GE(stats.rx_frames, std::uint64_t{kDatagrams});
    EXPECT_GE(stats.tx_frames, std::uint64_t{kFrames});
    EXPECT_EQ(stats.tx_dropped, 0u);

    // A handle the driver does not hold is refused, counted, and not freed.
    BufferHandle foreign;
    ASSERT_EQ(pool->alloc_burst(kDriver + 1, {&foreign, 1}), 1u);
    foreign.length = 60;
    EXPECT_EQ(port->transmit_burst({&foreign, 1}), 1u);
    EXPECT_EQ(port->stats().tx_dropped, 1u);
    EXPECT_EQ(pool->owner_of(foreign.index), kDriver + 1);
    ASSERT_TRUE(pool->free(kDriver + 1, foreign).ok());

    const std::string runtime = DpdkPort::runtime_directory();
    EXPECT_EQ(runtime, "/var/run/dpdk/flo" + std::to_string(::getpid()));
    port.reset();
    EXPECT_FALSE(std::filesystem::exists(runtime)) << "close removes EAL's runtime directory";
    EXPECT_EQ(pool->count_free(), kPoolBuffers) << "every buffer is back in the pool";
  }

  print_copy_cost(*pool);
  EXPECT_EQ(pool->count_free(), kPoolBuffers);
}

}  // namespace
}  // namespace flotilla::drivers
