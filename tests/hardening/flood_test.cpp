// Floods from the peer namespace (issue 18): a SYN flood from spoofed sources, UDP floods to a
// closed and to an open port, and a flood of malformed frames, each a few seconds of thousands of
// frames a second through a packet socket on the peer's end of the link. Each test shows that a
// legitimate kernel client is served during and after the flood (a TCP connection whose bytes come
// back from flotilla-tcp-echo, checked by SHA-256), that no component exits or is restarted, that
// the drops are counted under their names, and that no component keeps spinning once the flood
// stops (root: skipped without).
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <sys/socket.h>

#include <atomic>
#include <fstream>
#include <functional>
#include <future>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "components/wire/address.hpp"
#include "components/wire/checksum.hpp"
#include "components/wire/ethernet.hpp"
#include "components/wire/ipv4.hpp"
#include "components/wire/tcp.hpp"
#include "components/wire/udp.hpp"
#include "tests/stack/stack_fixture.hpp"
#include "tests/support/kernel_tcp.hpp"

namespace flotilla::testing {
namespace {

using namespace std::chrono_literals;

constexpr std::uint16_t kEchoPort = 7;  // flotilla-tcp-echo (TCP) and flotilla-udp-echo (UDP)
constexpr std::uint16_t kClosedPort = 9999;
constexpr auto kFloodTime = 3s;
constexpr int kFramesPerMillisecond = 10;  // about 10,000 frames a second
constexpr int kHangLimitMs = 1000;  // the supervisor's heartbeat timeout in these tests

// Ticks of CPU time (user and system, all threads) a process has used; -1 when it is gone.
std::int64_t cpu_ticks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(in, text)) return -1;
  // The command name may hold spaces; the fields after it are space-separated.
  std::istringstream fields(text.substr(text.rfind(')') + 2));
  std::string field;
  std::int64_t user = 0, system = 0;
  for (int index = 3; fields >> field; ++index) {
    if (index == 14) user = std::stoll(field);
    if (index == 15) {
      system = std::stoll(field);
      break;
    }
  }
  return user + system;
}

// A packet socket on the peer's interface, sending whole Ethernet frames as given.
class FrameSender {
 public:
  // Call inside the peer namespace.
  bool open(const std::string& interface) {
    fd_ = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return false;
    sockaddr_ll address{};
    address.sll_family = AF_PACKET;
    address.sll_ifindex = static_cast<int>(::if_nametoindex(interface.c_str()));
    address.sll_protocol = 0;  // send only: nothing is queued for reading
    return ::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
  }
  ~FrameSender() {
    if (fd_ >= 0) ::close(fd_);
  }
  // A full transmit queue loses the frame, as a flood would.
  void send(std::span<const std::byte> frame) {
    if (::send(fd_, frame.data(), frame.size(), MSG_DONTWAIT) == static_cast<ssize_t>(frame.size())) ++sent_;
  }
  std::uint64_t sent() const { return sent_; }

 private:
  int fd_ = -1;
  std::uint64_t sent_ = 0;
};

// Builds IPv4 frames from any source to the stack.
struct FrameBuilder {
  wire::MacAddress stack_mac{};
  std::uint32_t stack_address = 0;

  // An Ethernet and IPv4 header (checksum filled) for `transport_bytes` of payload, zeroed.
  std::vector<std::byte> ipv4(const wire::MacAddress& source_mac, std::uint32_t source, std::uint8_t protocol,
                              std::size_t transport_bytes, std::uint16_t identification = 0) const {
    std::vector<std::byte> frame(wire::kEthernetHeaderBytes + wire::kIpv4HeaderBytes + transport_bytes);
    wire::emit_ethernet_header(frame, stack_mac, source_mac, wire::kEtherTypeIpv4);
    wire::emit_ipv4_header(std::span(frame).subspan(wire::kEthernetHeaderBytes),
                           wire::Ipv4Header{.source = source, .destination = stack_address, .protocol = protocol,
                                            .identification = identification, .dont_fragment = false,
                                            .payload_length = static_cast<std::uint16_t>(transport_bytes)});
    return frame;
  }

  std::vector<std::byte> tcp(const wire::MacAddress& source_mac, std::uint32_t source, std::uint16_t source_port,
                             std::uint16_t port, std::uint8_t flags, std::uint32_t sequence,
                             std::span<const std::byte> options = {}) const {
    auto frame = ipv4(source_mac, source, wire::kProtocolTcp, wire::tcp_header_length(options.size()));
    wire::emit_tcp(std::span(frame).subspan(wire::kEthernetHeaderBytes + wire::kIpv4HeaderBytes),
                   wire::TcpHeader{.source_port = source_port, .destination_port = port, .sequence = sequence,
                                   .flags = flags, .window = 65535, .options = options},
                   source, stack_address, 0);
    return frame;
  }

  std::vector<std::byte> udp(const wire::MacAddress& source_mac, std::uint32_t source, std::uint16_t source_port,
                             std::uint16_t port, std::size_t payload) const {
    auto frame = ipv4(source_mac, source, wire::kProtocolUdp, wire::kUdpHeaderBytes + payload);
    auto datagram = std::span(frame).subspan(wire::kEthernetHeaderBytes + wire::kIpv4HeaderBytes);
    for (std::size_t i = 0; i < payload; ++i) datagram[wire::kUdpHeaderBytes + i] = static_cast<std::byte>(i);
    wire::emit_udp(datagram, source_port, port, source, stack_address, payload);
    return frame;
  }

  // Refills the IPv4 header checksum after a field was changed, over the first 20 bytes whatever
  // the header length field says (it may claim more than the frame holds).
  static void refill_ipv4_checksum(std::vector<std::byte>& frame) {
    auto header = std::span(frame).subspan(wire::kEthernetHeaderBytes, wire::kIpv4HeaderBytes);
    header[10] = header[11] = std::byte{0};
    const std::uint16_t sum = wire::internet_checksum(header);
    header[10] = static_cast<std::byte>(sum >> 8);
    header[11] = static_cast<std::byte>(sum);
  }
};

class Flood : public StackTest {
 protected:
  // The stack with flotilla-tcp-echo on kEchoPort: `slots` sockets in its region, its listener's
  // backlog (per replica) as given. Call as ASSERT_NO_FATAL_FAILURE(bring_up()).
  void bring_up(std::size_t slots = 16, int backlog = 128) {
    names_ = unique_names();
    std::string config = stack_config(
        names_, "pass all",
        tcp_app_config("tcpecho", "flotilla-tcp-echo",
                       {"--port", std::to_string(kEchoPort), "--backlog", std::to_string(backlog), "--channels",
                        "tcp0-tcpecho,tcp1-tcpecho"},
                       slots));
    // The tests' 200 ms hang limit is shorter than a component can go unscheduled on a loaded
    // machine while a flood runs beside it; a flood must show no crash, not that scheduling.
    const std::string tight = "heartbeat_timeout_ms = 200";
    const auto at = config.find(tight);
    ASSERT_NE(at, std::string::npos);
    config.replace(at, tight.size(), "heartbeat_timeout_ms = " + std::to_string(kHangLimitMs));
    const std::string problem = stack_.start(names_, config);
    ASSERT_EQ(problem, "") << "the stack did not come up";
    std::ifstream mac_file("/sys/class/net/" + names_.stack_interface + "/address");
    std::string mac_text;
    mac_file >> mac_text;
    const auto mac = wire::parse_mac(mac_text);
    ASSERT_TRUE(mac.has_value()) << mac_text;
    frames_.stack_mac = *mac;
    frames_.stack_address = *wire::parse_ipv4(names_.stack_address);
    peer_address_ = *wire::parse_ipv4(names_.peer_address);
    // The peer's interface is in its namespace: read its MAC there.
    peer_mac_ = in_namespace(names_.peer_namespace, [&] {
      std::ifstream file("/sys/class/net/" + names_.peer_interface + "/address");
      std::string text;
      file >> text;
      return wire::parse_mac(text).value_or(wire::MacAddress{});
    });
    ASSERT_TRUE(echo_round_trip()) << "no echo before the flood\n" << events();
    pids_before_ = stack_.pids();
  }

  // One legitimate connection from the kernel in the peer namespace: `bytes` to the TCP echo
  // server and every one back.
  bool echo_round_trip(std::uint64_t bytes = 64 * 1024) const {
    const auto outcome = in_namespace(names_.peer_namespace, [&] {
      return kernel_source(KernelSourceOptions{.address = names_.stack_address, .port = kEchoPort, .bytes = bytes,
                                               .deadline = 20s, .half_close = true});
    });
    return outcome.connected && outcome.echo.bytes == bytes && outcome.echo.sha256 == outcome.sent.sha256;
  }

  // Each component's CPU ticks over one second of the stack left alone (serving nothing).
  std::map<std::string, std::int64_t> idle_ticks() const {
    std::map<std::string, std::int64_t> before;
    const auto pids = stack_.pids();
    for (const auto& [name, pid] : pids) before[name] = cpu_ticks(pid);
    std::this_thread::sleep_for(1s);
    std::map<std::string, std::int64_t> used;
    for (const auto& [name, pid] : pids) used[name] = cpu_ticks(pid) - before[name];
    return used;
  }

  // Runs `flood` (given the sender, until it returns false) in the peer namespace for kFloodTime
  // while a kernel client keeps making echo connections; then checks what every flood must show.
  void run_flood(const std::function<void(FrameSender&, std::uint64_t round)>& flood) {
    const auto idle_before = idle_ticks();
    std::atomic<bool> flooding{true};
    std::atomic<int> echoes_during{0}, echoes_failed_during{0};
    auto client = std::async(std::launch::async, [&] {
      while (flooding.load()) (echo_round_trip() ? echoes_during : echoes_failed_during)++;
    });
    const std::uint64_t sent = in_namespace(names_.peer_namespace, [&]() -> std::uint64_t {
      FrameSender sender;
      if (!sender.open(names_.peer_interface)) return 0;
      const auto until = std::chrono::steady_clock::now() + kFloodTime;
      for (std::uint64_t round = 0; std::chrono::steady_clock::now() < until; ++round) {
        for (int i = 0; i < kFramesPerMillisecond; ++i) flood(sender, round * kFramesPerMillisecond + i);
        std::this_thread::sleep_for(1ms);
      }
      return sender.sent();
    });
    flooding = false;
    client.get();
    frames_sent_ = sent;
    std::printf("flood: %llu frames in %lld s; echo connections during it: %d served, %d failed\n",
                static_cast<unsigned long long>(sent), static_cast<long long>(kFloodTime.count()),
                echoes_during.load(), echoes_failed_during.load());
    EXPECT_GE(sent, 1000u) << "the flood did not get out";
    EXPECT_GE(echoes_during.load(), 1) << "no legitimate connection was served during the flood\n" << all_counters_text();
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(echo_round_trip()) << "echo " << i << " after the flood\n" << events();

    // Nothing exited or was restarted.
    const std::string log = events();
    EXPECT_EQ(log.find("exit "), std::string::npos) << "a component died:\n" << log;
    EXPECT_EQ(stack_.pids(), pids_before_) << log;
    const CommandOutcome status = cli("status");
    EXPECT_EQ(status.exit_code, 0) << status.output;

    // Once the flood is over, no component uses more CPU than it did idle before it (give or take
    // a third of a core, for the work still queued when the flood stopped).
    const auto idle_after = idle_ticks();
    const long ticks_per_second = ::sysconf(_SC_CLK_TCK);
    for (const auto& [name, ticks] : idle_after) {
      std::printf("cpu: %-8s %3lld ticks/s idle before, %3lld after\n", name.c_str(),
                  static_cast<long long>(idle_before.at(name)), static_cast<long long>(ticks));
      EXPECT_LE(ticks, idle_before.at(name) + ticks_per_second / 3) << name << " keeps spinning after the flood";
    }
  }

  std::string all_counters_text() const {
    std::string text;
    for (const auto& [component, table] : all_counters()) {
      for (const auto& [name, value] : table) {
        if (value != 0) text += component + "." + name + "=" + std::to_string(value) + " ";
      }
    }
    return text;
  }

  // The sum of `name` over the TCP replicas.
  std::int64_t tcp_total(const char* name) const {
    return std::max<std::int64_t>(counter("tcp0", name), 0) + std::max<std::int64_t>(counter("tcp1", name), 0);
  }

  FrameBuilder frames_;
  std::uint32_t peer_address_ = 0;
  wire::MacAddress peer_mac_{};
  std::map<std::string, pid_t> pids_before_;
  std::uint64_t frames_sent_ = 0;
};

// A made-up MAC for the frame numbered `n`, never the peer's.
wire::MacAddress spoofed_mac(std::uint64_t n) {
  return {0x02, 0x5f, static_cast<std::uint8_t>(n >> 24), static_cast<std::uint8_t>(n >> 16),
          static_cast<std::uint8_t>(n >> 8), static_cast<std::uint8_t>(n)};
}

// Spoofed SYNs to the echo port, half from addresses on the link nobody answers ARP for, half from
// beyond it (no route back): the SYN-ACKs go nowhere and the handshakes never complete.
void syn_flood(const FrameBuilder& frames, FrameSender& sender, std::uint64_t n, std::mt19937& random) {
  const std::uint32_t source = n % 2 == 0 ? (frames.stack_address & 0xffffff00u) | (3 + random() % 250)
                                          : 0xcb007100u | (random() & 0xff);  // 203.0.113.x
  sender.send(frames.tcp(spoofed_mac(n), source, static_cast<std::uint16_t>(1024 + random() % 60000), kEchoPort,
                         wire::kTcpSyn, static_cast<std::uint32_t>(random())));
}

// A listener whose backlog is smaller than its application's sockets: the SYN queue fills, SYN
// cookies engage, and the legitimate handshakes complete through them.
TEST_F(Flood, SynFloodFromSpoofedSourcesLeavesTheListenerServing) {
  ASSERT_NO_FATAL_FAILURE(bring_up(16, 4));
  std::mt19937 random(18);
  run_flood([&](FrameSender& sender, std::uint64_t n) { syn_flood(frames_, sender, n, random); });
  auto after = all_counters();
  std::printf("counters after: %s\n", all_counters_text().c_str());
  // The SYNs reached the replicas, which answered them with cookies once the SYN queue was full.
  EXPECT_GE(after["ip"]["tcp_to_replica"], frames_sent_ / 2) << all_counters_text();
  EXPECT_GE(tcp_total("syn_cookies_sent"), static_cast<std::int64_t>(frames_sent_ / 2)) << all_counters_text();
  // The SYN-ACKs to addresses nobody answers for are dropped and counted by IP.
  EXPECT_GT(after["ip"]["arp_unresolved"] + after["ip"]["arp_queue_full"], 0u) << all_counters_text();
  EXPECT_GT(after["ip"]["no_route"], 0u) << all_counters_text();
}

// The default backlog (128 per replica) with fewer sockets in the application's region (16).
TEST_F(Flood, SynFloodAgainstABacklogLargerThanTheApplicationsSockets) {
  ASSERT_NO_FATAL_FAILURE(bring_up(16, 128));
  std::mt19937 random(18);
  run_flood([&](FrameSender& sender, std::uint64_t n) { syn_flood(frames_, sender, n, random); });
  EXPECT_EQ(tcp_total("refused_by_host"), 0) << all_counters_text();
}

// Datagrams from spoofed sources to a port nobody has open, and from the peer to the open echo
// port, alternately.
TEST_F(Flood, UdpFloodToAClosedAndAnOpenPort) {
  ASSERT_NO_FATAL_FAILURE(bring_up());
  std::mt19937 random(17);
  run_flood([&](FrameSender& sender, std::uint64_t n) {
    const auto source_port = static_cast<std::uint16_t>(1024 + random() % 60000);
    if (n % 2 == 0) {
      const std::uint32_t source = (frames_.stack_address & 0xffffff00u) | (3 + random() % 250);
      sender.send(frames_.udp(spoofed_mac(n), source, source_port, kClosedPort, 64 + random() % 1000));
    } else {
      sender.send(frames_.udp(peer_mac_, peer_address_, source_port, kEchoPort, 64 + random() % 1000));
    }
  });
  auto after = all_counters();
  std::printf("counters after: %s\n", all_counters_text().c_str());
  // IP knows the bound ports: the closed port's datagrams stop there, the open port's reach udp.
  EXPECT_GE(after["ip"]["no_listener"], frames_sent_ / 4) << all_counters_text();
  EXPECT_GE(after["udp"]["datagrams_in"], frames_sent_ / 4) << all_counters_text();
  // Port unreachables are answered at a bounded rate; the rest are counted as limited.
  EXPECT_GT(after["ip"]["port_unreachable_sent"], 0u) << all_counters_text();
  EXPECT_GT(after["ip"]["icmp_rate_limited"], 0u) << all_counters_text();
  EXPECT_GT(after["echo"]["messages_in"], 0u) << all_counters_text();
}

// Frames that are wrong at every layer a parser looks at.
TEST_F(Flood, MalformedFramesAreCountedAndDropped) {
  ASSERT_NO_FATAL_FAILURE(bring_up());
  std::mt19937 random(16);
  run_flood([&](FrameSender& sender, std::uint64_t n) {
    const auto port = static_cast<std::uint16_t>(1024 + random() % 60000);
    auto frame = frames_.tcp(spoofed_mac(n), peer_address_, port, kEchoPort, wire::kTcpSyn,
                             static_cast<std::uint32_t>(random()));
    auto ip = std::span(frame).subspan(wire::kEthernetHeaderBytes);
    switch (n % 8) {
      case 0:  // a header length under 20 bytes
        ip[0] = std::byte{0x44};
        FrameBuilder::refill_ipv4_checksum(frame);
        break;
      case 1:  // a header length past the end of the frame
        ip[0] = std::byte{0x4f};
        frame.resize(wire::kEthernetHeaderBytes + 40);
        FrameBuilder::refill_ipv4_checksum(frame);
        break;
      case 2:  // a bad header checksum
        ip[10] ^= std::byte{0x5a};
        break;
      case 3:  // a total length longer than the frame
        ip[2] = std::byte{0x05};
        ip[3] = std::byte{0xdc};
        FrameBuilder::refill_ipv4_checksum(frame);
        break;
      case 4: {  // the first piece of a datagram that never completes
        frame = frames_.udp(spoofed_mac(n), peer_address_, port, kClosedPort, 64);
        auto fragment = std::span(frame).subspan(wire::kEthernetHeaderBytes);
        fragment[4] = static_cast<std::byte>(n >> 8);
        fragment[5] = static_cast<std::byte>(n);
        fragment[6] = std::byte{0x20};  // more fragments, offset 0
        FrameBuilder::refill_ipv4_checksum(frame);
        break;
      }
      case 5: {  // a TCP option whose length runs past the header
        const std::byte truncated[4] = {std::byte{wire::kTcpOptionMss}, std::byte{40}, std::byte{5}, std::byte{0xb4}};
        frame = frames_.tcp(spoofed_mac(n), peer_address_, port, kEchoPort, wire::kTcpSyn,
                            static_cast<std::uint32_t>(random()), truncated);
        break;
      }
      case 6:  // a bad TCP checksum
        frame[wire::kEthernetHeaderBytes + wire::kIpv4HeaderBytes + 16] ^= std::byte{0xff};
        break;
      case 7:  // a TCP data offset past the end of the segment
        frame[wire::kEthernetHeaderBytes + wire::kIpv4HeaderBytes + 12] = std::byte{0xf0};
        break;
    }
    sender.send(frame);
  });
  auto after = all_counters();
  std::printf("counters after: %s\n", all_counters_text().c_str());
  const std::uint64_t each = frames_sent_ / 8 / 2;  // half of each kind, for what a full queue lost
  EXPECT_GE(after["ip"]["bad_header_length"], 2 * each) << all_counters_text();
  EXPECT_GE(after["ip"]["bad_checksum"], each) << all_counters_text();
  EXPECT_GE(after["ip"]["bad_total_length"], each) << all_counters_text();
  EXPECT_GE(after["ip"]["fragments_in"], each) << all_counters_text();
  EXPECT_GE(tcp_total("bad_options") + tcp_total("bad_header"), static_cast<std::int64_t>(2 * each))
      << all_counters_text();
  EXPECT_GE(tcp_total("bad_checksum"), static_cast<std::int64_t>(each)) << all_counters_text();
}

}  // namespace
}  // namespace flotilla::testing
