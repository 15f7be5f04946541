// The engine against the Linux kernel's TCP, over a TUN device in a private network namespace:
// the kernel at 10.9.0.1 (the TUN's address), the engine at 10.9.0.2 behind it, this process
// moving IPv4 packets between the TUN and the engine. Transfers both ways are checked byte for
// byte, on a clean link and with loss, delay and reordering (applied here, both ways). Needs root
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
#include <map>
#include <random>
#include <thread>

#include "components/tcp/tests/sim.hpp"
#include "components/wire/ipv4.hpp"
#include "dataplane/clock.hpp"

namespace flotilla::tcp::sim {
namespace {

constexpr std::uint32_t kKernel = 0x0a090001;  // 10.9.0.1
constexpr std::uint32_t kEngine = 0x0a090002;  // 10.9.0.2
constexpr std::uint64_t kMiB = 1024 * 1024;

// Impairments applied in this process to packets both ways (netem may not exist where this runs).
struct Impairment {
  const char* name;
  double loss = 0;
  std::uint64_t delay_ns = 0;  // each way
  double reorder = 0;          // share of packets held back a further 0..4 ms
};

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
    bool eof = false;
    if (shut) ::shutdown(fd, SHUT_WR);
    while (!(shut && eof)) {
      pollfd p{fd, static_cast<short>((eof ? 0 : POLLIN) | (shut ? 0 : POLLOUT)), 0};
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
      if (!eof && (p.revents & (POLLIN | POLLHUP | POLLERR))) {
        const ssize_t got = ::recv(fd, buffer.data(), buffer.size(), 0);
        if (got < 0) {
          error = std::string("kernel peer: recv: ") + std::strerror(errno);
          break;
        }
        if (got == 0) {
          eof = true;
          continue;
        }
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
  TunHost(int tun, const EngineSettings& settings, const Impairment& impairment)
      : tun_(tun), impairment_(impairment), scratch_(max_segment_bytes(65535)) {
    table_.resize(Engine::table_bytes(settings) + 64);
    auto* base = table_.data() + (64 - reinterpret_cast<std::uintptr_t>(table_.data()) % 64) % 64;
    auto created = Engine::create(std::span(base, Engine::table_bytes(settings)), settings,
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
    impair(true, std::span(packet).first(wire::kIpv4HeaderBytes + length));
    return true;
  }
  // Nothing here restarts, so segments go out as transmit() takes them.
  void flush_segments() override {}
  std::optional<StreamRings> rings_for_restored(ConnectionHandle, const FourTuple&, ListenerId) override {
    return std::nullopt;
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
      const std::uint64_t deadline =
          std::min(engine_->next_deadline_ns(), held_.empty() ? UINT64_MAX : held_.begin()->first);
      const int wait_ms = deadline <= now ? 0 : static_cast<int>(std::min<std::uint64_t>((deadline - now) / 1'000'000 + 1, 5));
      pollfd p{tun_, POLLIN, 0};
      if (::poll(&p, 1, wait_ms) > 0) {
        for (int burst = 0; burst < 256; ++burst) {
          const ssize_t got = ::read(tun_, packet.data(), packet.size());
          if (got <= 0) break;
          impair(false, std::span(packet).first(static_cast<std::size_t>(got)));
        }
      }
      release_due(monotonic_ns());
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
  struct Held {
    bool to_kernel;
    std::vector<std::byte> bytes;
  };

  // Drops or holds a packet going one way, as the impairment says.
  void impair(bool to_kernel, std::span<const std::byte> bytes) {
    if (impairment_.loss > 0 && std::uniform_real_distribution<double>(0, 1)(rng_) < impairment_.loss) return;
    std::uint64_t release = monotonic_ns() + impairment_.delay_ns;
    if (impairment_.reorder > 0 && std::uniform_real_distribution<double>(0, 1)(rng_) < impairment_.reorder) {
      release += std::uniform_int_distribution<std::uint64_t>(0, 4'000'000)(rng_);
    }
    held_.emplace(release, Held{to_kernel, std::vector<std::byte>(bytes.begin(), bytes.end())});
    if (impairment_.delay_ns == 0 && impairment_.reorder == 0) release_due(monotonic_ns());
  }

  void release_due(std::uint64_t now) {
    while (!held_.empty() && held_.begin()->first <= now) {
      Held held = std::move(held_.begin()->second);
      held_.erase(held_.begin());
      if (held.to_kernel) {
        (void)::write(tun_, held.bytes.data(), held.bytes.size());
        continue;
      }
      auto parsed = wire::Ipv4Packet::parse(held.bytes);
      if (!parsed || parsed->protocol() != wire::kProtocolTcp || parsed->destination() != kEngine) continue;
      engine_->on_packet(parsed->source(), parsed->destination(), parsed->payload(), monotonic_ns());
    }
  }

  int tun_;
  Impairment impairment_;
  std::mt19937_64 rng_{42};
  std::multimap<std::uint64_t, Held> held_;
  std::vector<std::byte> table_;
  NamedCounterTable counters_;
  std::unique_ptr<Engine> engine_;
  std::vector<std::unique_ptr<Endpoint>> endpoints_;
  std::vector<std::byte> scratch_;
};

// A private network namespace with a TUN device the kernel reaches the engine through.
class NamespacedTun : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (a network namespace and a TUN device)";
    // As root, a namespace or TUN device that cannot be made is a broken test machine: a failure.
    ASSERT_EQ(::unshare(CLONE_NEWNET), 0) << "cannot make a network namespace: " << std::strerror(errno);
    tun_ = ::open("/dev/net/tun", O_RDWR | O_NONBLOCK);
    ASSERT_GE(tun_, 0) << "no /dev/net/tun: " << std::strerror(errno);
    ifreq request{};
    request.ifr_flags = IFF_TUN | IFF_NO_PI;
    std::snprintf(request.ifr_name, IFNAMSIZ, "flotcp%d", static_cast<int>(::getpid() % 100000));
    ASSERT_EQ(::ioctl(tun_, TUNSETIFF, &request), 0) << std::strerror(errno);
    name_ = request.ifr_name;
    ASSERT_EQ(std::system(("ip link set lo up && ip addr add 10.9.0.1/24 dev " + name_ + " && ip link set " + name_ +
                           " up mtu 1500").c_str()),
              0);
  }
  void TearDown() override {
    if (tun_ >= 0) ::close(tun_);  // the namespace (and the device) go with the process
  }

  int tun_ = -1;
  std::string name_;
};

class KernelInterop : public NamespacedTun, public ::testing::WithParamInterface<Impairment> {};

using KernelInteropEvents = NamespacedTun;

// A kernel socket to the engine's port (blocking); -1 with errno on failure.
int kernel_connect(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(kEngine);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    const int error = errno;
    ::close(fd);
    errno = error;
    return -1;
  }
  return fd;
}

// A kernel thread that connects to the engine's port, waits `pause_s` seconds without reading,
// then runs `peer`.
std::thread kernel_session(KernelPeer& peer, std::uint16_t port, unsigned pause_s) {
  return std::thread([&peer, port, pause_s] {
    const int fd = kernel_connect(port);
    if (fd < 0) {
      peer.error = std::string("connect: ") + std::strerror(errno);
      peer.done = true;
      return;
    }
    if (pause_s > 0) ::sleep(pause_s);
    peer.run(fd);
  });
}

TEST_F(KernelInteropEvents, NobodyListeningIsConnectionRefused) {
  TunHost host(tun_, EngineSettings{}, Impairment{"clean"});
  Endpoint* e = host.connect(40000, 9999);
  ASSERT_NE(e, nullptr);
  ASSERT_TRUE(host.run([&] { return e->released; }, 10));
  EXPECT_TRUE(e->failed);
  EXPECT_EQ(e->error, ECONNREFUSED);
}

TEST_F(KernelInteropEvents, AKernelResetEndsTheTransferWithEconnreset) {
  TunHost host(tun_, EngineSettings{}, Impairment{"clean"});
  ASSERT_TRUE(host.engine().listen(0, 80, 16, {}).ok());
  host.accept_send_total = 64 * kMiB;
  std::atomic<bool> reset{false};
  std::thread kernel([&] {
    const int fd = kernel_connect(80);
    if (fd < 0) return;
    std::vector<std::byte> buffer(64 * 1024);
    std::size_t got = 0;
    while (got < 1024 * 1024) {
      const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
      if (n <= 0) break;
      got += static_cast<std::size_t>(n);
    }
    const linger abortive{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &abortive, sizeof abortive);
    ::close(fd);  // unread data and linger 0: RST
    reset = true;
  });
  const bool ended = host.run([&] { return reset && !host.endpoints().empty() && host.endpoints()[0]->released; }, 30);
  kernel.join();
  ASSERT_TRUE(ended);
  EXPECT_TRUE(host.endpoints()[0]->failed);
  EXPECT_EQ(host.endpoints()[0]->error, ECONNRESET);
  EXPECT_EQ(host.engine().connection_count(), 0u);
}

// The kernel's reader stops (its window closes, the engine probes it), then reads everything.
TEST_F(KernelInteropEvents, AKernelReaderThatPausesGetsEveryByte) {
  TunHost host(tun_, EngineSettings{}, Impairment{"clean"});
  ASSERT_TRUE(host.engine().listen(0, 80, 16, {}).ok());
  const std::uint64_t size = 32 * kMiB;
  host.accept_send_total = size;
  host.accept_send_pattern = 9;
  KernelPeer peer;
  peer.receive_pattern = 9;
  std::thread kernel = kernel_session(peer, 80, 3);  // 3 s not reading: the window closes
  const bool finished = host.run(
      [&] { return peer.done && !host.endpoints().empty() && host.endpoints()[0]->released; }, 120);
  kernel.join();
  ASSERT_TRUE(finished);
  EXPECT_EQ(peer.error, "");
  EXPECT_EQ(peer.received, size);
  EXPECT_EQ(peer.mismatches, 0u);
  EXPECT_GT(host.counter("persist_probes"), 0u);
  EXPECT_FALSE(host.endpoints()[0]->failed);
}

// The engine's application stops reading (the engine's window closes; Linux probes it).
TEST_F(KernelInteropEvents, AnEngineReaderThatPausesGetsEveryByte) {
  TunHost host(tun_, EngineSettings{}, Impairment{"clean"});
  ASSERT_TRUE(host.engine().listen(0, 80, 16, {}).ok());
  host.accept_send_pattern = 5;
  host.accept_receive_pattern = 6;
  const std::uint64_t size = 32 * kMiB;
  KernelPeer peer;
  peer.send = size;
  peer.send_pattern = 6;
  std::thread kernel = kernel_session(peer, 80, 0);
  host.run([&] { return !host.endpoints().empty() && host.endpoints()[0]->established; }, 10);
  ASSERT_FALSE(host.endpoints().empty());
  Endpoint& e = *host.endpoints()[0];
  e.reading = false;
  host.run([] { return false; }, 3);
  EXPECT_LT(e.received, size);
  // The ring filled up to the window scale's granularity: the window was closed.
  EXPECT_GE(e.app_receive.readable(), 4 * kMiB - 2 * 128);
  e.reading = true;
  const bool finished = host.run([&] { return peer.done && e.released && e.app_receive.readable() == 0; }, 120);
  kernel.join();
  ASSERT_TRUE(finished);
  EXPECT_EQ(peer.error, "");
  EXPECT_EQ(e.received, size);
  EXPECT_EQ(e.mismatches, 0u);
  EXPECT_FALSE(e.failed);
}

TEST_P(KernelInterop, KernelClientEngineServerBothWays) {
  EngineSettings settings;
  settings.max_connections = 16;
  TunHost host(tun_, settings, GetParam());
  ASSERT_TRUE(host.engine().listen(0, 80, 16, {}).ok());
  const std::uint64_t size = 16 * kMiB;
  host.accept_send_total = size;
  host.accept_send_pattern = 2;
  host.accept_receive_pattern = 1;
  KernelPeer peer;
  peer.send = size;
  peer.send_pattern = 1;
  peer.receive_pattern = 2;
  std::thread kernel = kernel_session(peer, 80, 0);
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
  host.print_counters(GetParam().name);
}

TEST_P(KernelInterop, EngineClientKernelServerBothWays) {
  EngineSettings settings;
  settings.max_connections = 16;
  TunHost host(tun_, settings, GetParam());
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
  host.print_counters(GetParam().name);
}

INSTANTIATE_TEST_SUITE_P(Links, KernelInterop,
                         ::testing::Values(Impairment{"clean"}, Impairment{"loss_1_percent", 0.01},
                                           Impairment{"delay_5ms_each_way", 0, 5'000'000},
                                           Impairment{"reordering", 0, 1'000'000, 0.1}),
                         [](const ::testing::TestParamInfo<Impairment>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace flotilla::tcp::sim
