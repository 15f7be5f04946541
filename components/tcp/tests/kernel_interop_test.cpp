// The engine against the Linux kernel's TCP, over a TUN device in a private network namespace:
// the kernel at 10.9.0.1 (the TUN's address), the engine at 10.9.0.2 behind it, this process
// moving IPv4 packets between the TUN and the engine. Transfers both ways are checked byte for
// byte, on a clean link and with netem loss, delay and reordering on the kernel's side. Needs root
// (a network namespace and a TUN device); skips without.
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "components/tcp/tests/sim.hpp"
#include "components/wire/ipv4.hpp"
#include "dataplane/clock.hpp"

namespace flotilla::tcp::sim {
namespace {

constexpr std::uint32_t kKernel = 0x0a090001;  // 10.9.0.1
constexpr std::uint32_t kEngine = 0x0a090002;  // 10.9.0.2
constexpr std::uint64_t kMiB = 1024 * 1024;

// The kernel side of one transfer: sends `send` bytes of `send_pattern`, then reads until EOF and
// checks every byte against `receive_pattern`.
struct KernelPeer {
  std::uint64_t send = 0;
  std::uint64_t send_pattern = 0;
  std::uint64_t receive_pattern = 0;
  std::atomic<bool> done{false};
  std::uint64_t received = 0;
  std::uint64_t mismatches = 0;
  std::string error;

  void run(int fd) {
    std::vector<std::byte> buffer(256 * 1024);
    std::vector<std::byte> expected(buffer.size());
    std::uint64_t sent = 0;
    // Send and receive together (poll), so neither side's window blocks the other.
    bool shut = send == 0;
    if (shut) ::shutdown(fd, SHUT_WR);
    for (;;) {
      pollfd p{fd, static_cast<short>(POLLIN | (shut ? 0 : POLLOUT)), 0};
      if (::poll(&p, 1, 60'000) <= 0) {
        error = "kernel peer: poll timed out";
        break;
      }
      if (!shut && (p.revents & POLLOUT)) {
        const std::size_t count = static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size(), send - sent));
        fill_pattern(send_pattern, sent, std::span(buffer).first(count));
        const ssize_t wrote = ::send(fd, buffer.data(), count, MSG_NOSIGNAL);
        if (wrote < 0) {
          error = std::string("kernel peer: send: ") + std::strerror(errno);
          break;
        }
        sent += static_cast<std::uint64_t>(wrote);
        if (sent == send) {
          ::shutdown(fd, SHUT_WR);
          shut = true;
        }
      }
      if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
        const ssize_t got = ::recv(fd, buffer.data(), buffer.size(), 0);
        if (got < 0) {
          error = std::string("kernel peer: recv: ") + std::strerror(errno);
          break;
        }
        if (got == 0) break;
        fill_pattern(receive_pattern, received, std::span(expected).first(static_cast<std::size_t>(got)));
        if (std::memcmp(buffer.data(), expected.data(), static_cast<std::size_t>(got)) != 0) ++mismatches;
        received += static_cast<std::uint64_t>(got);
      }
    }
    ::close(fd);
    done = true;
  }
};

class TunHost final : public EngineHost {
 public:
  TunHost(int tun, const EngineSettings& settings) : tun_(tun), scratch_(max_segment_bytes(65535)) {
    table_.resize(Engine::table_bytes(settings.max_connections) + 64);
    auto* base = table_.data() + (64 - reinterpret_cast<std::uintptr_t>(table_.data()) % 64) % 64;
    auto created = Engine::create(std::span(base, Engine::table_bytes(settings.max_connections)), settings,
                                  *this, counters_, monotonic_ns());
    if (!created) std::abort();
    engine_ = std::move(created.value());
  }

  bool transmit(const OutgoingSegment& segment) override {
    std::array<std::byte, 65536> packet;
    const std::size_t length = build_segment(std::span(packet).subspan(wire::kIpv4HeaderBytes), segment);
    if (length == 0) return false;
    const wire::Ipv4Header header{.source = segment.tuple.local_address,
                                  .destination = segment.tuple.remote_address,
                                  .protocol = wire::kProtocolTcp,
                                  .payload_length = static_cast<std::uint16_t>(length)};
    if (wire::emit_ipv4_header(packet, header) == 0) return false;
    return ::write(tun_, packet.data(), wire::kIpv4HeaderBytes + length) > 0;
  }
  std::optional<StreamRings> rings_for(ListenerId, ConnectionHandle connection, const FourTuple&) override {
    auto endpoint = std::make_unique<Endpoint>(4 * kMiB);
    endpoint->handle = connection;
    endpoint->has_handle = true;
    endpoint->send_total = accept_send_total;
    endpoint->send_pattern = accept_send_pattern;
    endpoint->receive_pattern = accept_receive_pattern;
    StreamRings rings = endpoint->engine_rings();
    endpoints_.push_back(std::move(endpoint));
    return rings;
  }
  bool claim_flow(const FourTuple&) override { return true; }
  void release_flow(const FourTuple&) override {}
  void on_events(ConnectionHandle connection, std::uint32_t events, int error) override {
    for (auto& e : endpoints_) {
      if (e->handle == connection && !e->released) apply_events(*e, events, error);
    }
  }
  void on_accept_ready(ListenerId listener, ConnectionHandle, const FourTuple&) override {
    engine_->accepted(listener, 1);
  }

  Endpoint* connect(std::uint16_t local_port, std::uint16_t remote_port) {
    auto endpoint = std::make_unique<Endpoint>(4 * kMiB);
    const FourTuple tuple{kEngine, kKernel, local_port, remote_port};
    auto handle = engine_->connect(tuple, endpoint->engine_rings(), {}, monotonic_ns());
    if (!handle) return nullptr;
    endpoint->handle = *handle;
    endpoint->has_handle = true;
    endpoints_.push_back(std::move(endpoint));
    return endpoints_.back().get();
  }

  // Moves packets, timers and applications until `done()` or `seconds` pass.
  template <class Done>
  bool run(Done&& done, int seconds) {
    const std::uint64_t limit = monotonic_ns() + std::uint64_t(seconds) * 1'000'000'000;
    std::array<std::byte, 65536> packet;
    while (!done()) {
      const std::uint64_t now = monotonic_ns();
      if (now > limit) return false;
      const std::uint64_t deadline = engine_->next_deadline_ns();
      const int wait_ms = deadline <= now ? 0 : static_cast<int>(std::min<std::uint64_t>((deadline - now) / 1'000'000 + 1, 5));
      pollfd p{tun_, POLLIN, 0};
      if (::poll(&p, 1, wait_ms) > 0) {
        for (int burst = 0; burst < 256; ++burst) {
          const ssize_t got = ::read(tun_, packet.data(), packet.size());
          if (got <= 0) break;
          auto parsed = wire::Ipv4Packet::parse(std::span(packet).first(static_cast<std::size_t>(got)));
          if (!parsed || parsed->protocol() != wire::kProtocolTcp || parsed->destination() != kEngine) continue;
          engine_->on_packet(parsed->source(), parsed->destination(), parsed->payload(), monotonic_ns());
        }
      }
      engine_->on_timer(monotonic_ns());
      pump_applications(*engine_, endpoints_, scratch_, monotonic_ns());
    }
    return true;
  }

  Engine& engine() { return *engine_; }
  void print_counters(const char* link) {
    std::string line;
    for (std::size_t i = 0; i < counters_.published(); ++i) {
      if (counters_.entries[i].read() != 0) {
        line += std::string(" ") + counters_.entries[i].name + "=" + std::to_string(counters_.entries[i].read());
      }
    }
    std::printf("%s:%s\n", link, line.c_str());
  }
  std::uint64_t counter(const char* name) { return counters_.counter(name).read(); }
  std::vector<std::unique_ptr<Endpoint>>& endpoints() { return endpoints_; }
  std::uint64_t accept_send_total = 0;
  std::uint64_t accept_send_pattern = 0;
  std::uint64_t accept_receive_pattern = 0;

 private:
  int tun_;
  std::vector<std::byte> table_;
  NamedCounterTable counters_;
  std::unique_ptr<Engine> engine_;
  std::vector<std::unique_ptr<Endpoint>> endpoints_;
  std::vector<std::byte> scratch_;
};

// A private network namespace with a TUN device the kernel reaches the engine through.
class KernelInterop : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (a network namespace and a TUN device)";
    if (::unshare(CLONE_NEWNET) != 0) GTEST_SKIP() << "cannot make a network namespace: " << std::strerror(errno);
    tun_ = ::open("/dev/net/tun", O_RDWR | O_NONBLOCK);
    if (tun_ < 0) GTEST_SKIP() << "no /dev/net/tun: " << std::strerror(errno);
    ifreq request{};
    request.ifr_flags = IFF_TUN | IFF_NO_PI;
    std::snprintf(request.ifr_name, IFNAMSIZ, "flotcp%d", static_cast<int>(::getpid() % 100000));
    ASSERT_EQ(::ioctl(tun_, TUNSETIFF, &request), 0) << std::strerror(errno);
    name_ = request.ifr_name;
    ASSERT_EQ(std::system(("ip link set lo up && ip addr add 10.9.0.1/24 dev " + name_ + " && ip link set " + name_ +
                           " up mtu 1500").c_str()),
              0);
    if (std::string(GetParam()) != "clean") {
      if (std::system(("tc qdisc add dev " + name_ + " root netem " + GetParam() + " 2>/dev/null").c_str()) != 0) {
        GTEST_SKIP() << "tc netem is not available";
      }
    }
  }
  void TearDown() override {
    if (tun_ >= 0) ::close(tun_);  // the namespace (and the device) go with the process
  }

  int tun_ = -1;
  std::string name_;
};

TEST_P(KernelInterop, KernelClientEngineServerBothWays) {
  EngineSettings settings;
  settings.max_connections = 16;
  TunHost host(tun_, settings);
  ASSERT_TRUE(host.engine().listen(0, 80, 16, {}).ok());
  const std::uint64_t size = 16 * kMiB;
  host.accept_send_total = size;
  host.accept_send_pattern = 2;
  host.accept_receive_pattern = 1;
  KernelPeer peer;
  peer.send = size;
  peer.send_pattern = 1;
  peer.receive_pattern = 2;
  std::thread kernel([&] {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(80);
    address.sin_addr.s_addr = htonl(kEngine);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
      peer.error = std::string("connect: ") + std::strerror(errno);
      ::close(fd);
      peer.done = true;
      return;
    }
    peer.run(fd);
  });
  const bool finished = host.run(
      [&] {
        return peer.done && !host.endpoints().empty() && host.endpoints()[0]->released &&
               host.endpoints()[0]->app_receive.readable() == 0;
      },
      120);
  kernel.join();
  ASSERT_TRUE(finished) << "engine endpoint: " << (host.endpoints().empty() ? 0 : host.endpoints()[0]->received)
                        << " received; kernel received " << peer.received;
  EXPECT_EQ(peer.error, "");
  const Endpoint& e = *host.endpoints()[0];
  EXPECT_FALSE(e.failed) << e.error;
  EXPECT_EQ(e.received, size);
  EXPECT_EQ(e.mismatches, 0u);
  EXPECT_EQ(peer.received, size);
  EXPECT_EQ(peer.mismatches, 0u);
  host.print_counters(GetParam());
}

TEST_P(KernelInterop, EngineClientKernelServerBothWays) {
  EngineSettings settings;
  settings.max_connections = 16;
  TunHost host(tun_, settings);
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(9000);
  address.sin_addr.s_addr = htonl(kKernel);
  const int one = 1;
  ::setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address), 0) << std::strerror(errno);
  ASSERT_EQ(::listen(listener, 4), 0);
  const std::uint64_t size = 16 * kMiB;
  KernelPeer peer;
  peer.send = size;
  peer.send_pattern = 4;
  peer.receive_pattern = 3;
  std::thread kernel([&] {
    const int fd = ::accept(listener, nullptr, nullptr);
    if (fd < 0) {
      peer.error = std::string("accept: ") + std::strerror(errno);
      peer.done = true;
      return;
    }
    peer.run(fd);
  });
  Endpoint* e = host.connect(40000, 9000);
  ASSERT_NE(e, nullptr);
  e->send_total = size;
  e->send_pattern = 3;
  e->receive_pattern = 4;
  const bool finished =
      host.run([&] { return peer.done && e->released && e->app_receive.readable() == 0; }, 120);
  if (!peer.done) ::shutdown(listener, SHUT_RDWR);
  kernel.join();
  ::close(listener);
  ASSERT_TRUE(finished) << "engine received " << e->received << "; kernel received " << peer.received
                        << " failed " << e->failed << " error " << e->error;
  EXPECT_EQ(peer.error, "");
  EXPECT_FALSE(e->failed) << e->error;
  EXPECT_EQ(e->received, size);
  EXPECT_EQ(e->mismatches, 0u);
  EXPECT_EQ(peer.received, size);
  EXPECT_EQ(peer.mismatches, 0u);
  host.print_counters(GetParam());
}

INSTANTIATE_TEST_SUITE_P(Links, KernelInterop,
                         ::testing::Values("clean", "loss 1%", "delay 10ms", "delay 5ms reorder 10% 50%"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return name;
                         });

}  // namespace
}  // namespace flotilla::tcp::sim
