// Hostile application memory while its replica is under load (issue 18). An application's socket
// pages are the application's to write, so a TCP replica trusts nothing in them (DESIGN.md,
// "Exposed sockets"). This test leases an application seat as the preload library does, keeps
// steady streams going to the kernel in the peer namespace, all on tcp0, and meanwhile, round after
// round, opens another connection on tcp0, writes random values over one to three fields of its
// page chosen at random among all of them (the control words either side writes, and the four ring
// indices), kicks the replica about it and gives the connection up. The replica must stay up and
// not spin, the steady streams' bytes must arrive intact, and the bad input must be counted
// (root: skipped without).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <future>
#include <map>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "apps/tcp_perf/perf_streams.hpp"
#include "components/formats/stack_messages.hpp"
#include "dataplane/component_host.hpp"
#include "recovery/default_config.hpp"
#include "sockets/tcp_sockets.hpp"
#include "tests/hardening/process_stats.hpp"
#include "tests/stack/stack_fixture.hpp"
#include "tests/support/kernel_tcp.hpp"

namespace flotilla::testing {
namespace {

using namespace std::chrono_literals;

constexpr std::uint16_t kSteadyPort = 5003;  // a kernel sink hashing each stream
constexpr std::uint16_t kVictimPort = 5004;  // a kernel listener that never accepts
constexpr std::size_t kSteadyStreams = 3;
constexpr int kRounds = 150;

// One field of a socket page: its name and its bytes.
struct PageField {
  const char* name;
  std::span<std::byte> (*bytes)(formats::TcpSocketPageHeader& page);
};

#define FLOTILLA_PAGE_FIELD(path)                                                            \
  PageField {                                                                                \
    #path, [](formats::TcpSocketPageHeader& page) {                                          \
      return std::span<std::byte>(reinterpret_cast<std::byte*>(&page.path), sizeof(page.path)); \
    }                                                                                        \
  }

// Every field of the page, whichever side writes it.
const std::array kPageFields = {
    FLOTILLA_PAGE_FIELD(control.generation),     FLOTILLA_PAGE_FIELD(control.status),
    FLOTILLA_PAGE_FIELD(control.error),          FLOTILLA_PAGE_FIELD(control.flags),
    FLOTILLA_PAGE_FIELD(control.accept_ready),   FLOTILLA_PAGE_FIELD(control.event_pending),
    FLOTILLA_PAGE_FIELD(control.local_address),  FLOTILLA_PAGE_FIELD(control.remote_address),
    FLOTILLA_PAGE_FIELD(control.local_port),     FLOTILLA_PAGE_FIELD(control.remote_port),
    FLOTILLA_PAGE_FIELD(control.reserved0),      FLOTILLA_PAGE_FIELD(control.requests),
    FLOTILLA_PAGE_FIELD(control.kick_pending),   FLOTILLA_PAGE_FIELD(control.accepted),
    FLOTILLA_PAGE_FIELD(control.reserved1),      FLOTILLA_PAGE_FIELD(control.tcp_state),
    FLOTILLA_PAGE_FIELD(control.rtt_us),         FLOTILLA_PAGE_FIELD(control.rto_ms),
    FLOTILLA_PAGE_FIELD(control.mss),            FLOTILLA_PAGE_FIELD(control.cwnd_bytes),
    FLOTILLA_PAGE_FIELD(control.retransmits),    FLOTILLA_PAGE_FIELD(control.bytes_sent),
    FLOTILLA_PAGE_FIELD(control.bytes_received), FLOTILLA_PAGE_FIELD(control.segments_in),
    FLOTILLA_PAGE_FIELD(send.tail),              FLOTILLA_PAGE_FIELD(send.head),
    FLOTILLA_PAGE_FIELD(receive.tail),           FLOTILLA_PAGE_FIELD(receive.head),
};

#undef FLOTILLA_PAGE_FIELD

// Writes a hostile value over `field`: random bits, zero, all ones, or the value it holds moved by
// a little or by about a ring (the values a bounds check is most likely to get wrong).
void scribble(std::span<std::byte> field, std::size_t ring_bytes, std::mt19937_64& random) {
  std::uint64_t value = 0;
  const std::size_t width = std::min(field.size(), sizeof(value));
  std::memcpy(&value, field.data(), width);
  switch (random() % 5) {
    case 0: value = random(); break;
    case 1: value = 0; break;
    case 2: value = ~std::uint64_t{0}; break;
    case 3: value += random() % 64 - 32; break;
    case 4: value += ring_bytes + random() % 3 - 1; break;
  }
  if (field.size() > sizeof(value)) {  // a reserved array: random bytes all over it
    for (auto& byte : field) byte = static_cast<std::byte>(random());
    return;
  }
  std::memcpy(field.data(), &value, width);
}

class HostileMemory : public StackTest {};

TEST_F(HostileMemory, RandomFieldsOfSocketPagesWhileTheReplicaCarriesOtherStreams) {
  ASSERT_TRUE(start("pass all", recovery::app_seats_config(1)));
  auto pids_before = stack_.pids();
  pids_before.erase("app0");

  // The kernel's ends: a sink for the steady streams, and a listener for the victims that leaves
  // their connections in its backlog (what they send is never looked at).
  std::atomic<bool> listening{false};
  auto sink = std::async(std::launch::async, [&] {
    return in_namespace(names_.peer_namespace, [&] {
      return kernel_sink(KernelSinkOptions{.port = kSteadyPort, .connections = kSteadyStreams, .deadline = 180s,
                                           .listening = &listening});
    });
  });
  const int victim_listener = in_namespace(names_.peer_namespace, [&] {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(kVictimPort);
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 || ::listen(fd, 1024) != 0) {
      return -1;
    }
    return fd;
  });
  ASSERT_GE(victim_listener, 0);
  ASSERT_TRUE(wait_for([&] { return listening.load(); }, 10s));

  auto leased = ComponentHost::lease(stack_.socket_path());
  ASSERT_TRUE(leased) << leased.error().message();
  ComponentHost& host = **leased;
  const std::vector<std::string> channels{"tcp0-app0", "tcp1-app0"};
  auto attached = sockets::TcpSockets::attach(host, channels);
  ASSERT_TRUE(attached) << attached.error().message();
  sockets::TcpSockets& tcp = **attached;
  ASSERT_TRUE(tcp.pin_replica(0));  // the steady streams and the victims share tcp0
  const std::uint32_t peer = ntohl(::inet_addr(names_.peer_address.c_str()));

  // Runs the host's loop for `time`, keeping every steady stream's send ring full of the pattern.
  std::array<int, kSteadyStreams> steady{};
  std::array<std::uint64_t, kSteadyStreams> steady_sent{};
  std::array<int, kSteadyStreams> steady_error{};
  std::vector<std::byte> chunk(64 * 1024);
  std::size_t streams_open = 0;
  auto pump = [&](std::chrono::microseconds time) {
    const auto until = std::chrono::steady_clock::now() + time;
    do {
      for (std::size_t i = 0; i < streams_open; ++i) {
        while (steady_error[i] == 0) {
          apps::fill_pattern(steady_sent[i], chunk);
          auto took = tcp.send(steady[i], chunk);
          if (!took) {
            if (took.error().code != Errc::would_block) steady_error[i] = took.error().sys_errno;
            break;
          }
          steady_sent[i] += took.value();
        }
      }
      if (!host.loop().poll_once()) std::this_thread::sleep_for(50us);
    } while (std::chrono::steady_clock::now() < until);
  };
  auto pump_until = [&](auto done, std::chrono::milliseconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (!done()) {
      if (std::chrono::steady_clock::now() > until) return false;
      pump(1ms);
    }
    return true;
  };

  for (; streams_open < kSteadyStreams; ++streams_open) {
    auto opened = tcp.connect(peer, kSteadyPort);
    ASSERT_TRUE(opened) << opened.error().message();
    const int socket = *opened;
    ASSERT_TRUE(pump_until([&] { return tcp.connected(socket) || tcp.error(socket) != 0; }, 10s));
    ASSERT_TRUE(tcp.connected(socket)) << "error " << tcp.error(socket);
    ASSERT_EQ(tcp.replica_of(socket), std::optional<std::size_t>(0));
    steady[streams_open] = socket;
  }
  pump(500ms);

  auto region = formats::TcpRegion::attach(host.region(formats::tcp_region_name(channels[0])));
  ASSERT_TRUE(region.valid());
  ChannelEnd* link = host.channel(channels[0]);
  ASSERT_NE(link, nullptr);
  std::mt19937_64 random(20261206);
  std::array<int, kPageFields.size()> scribbled{};
  int victims = 0, refused = 0;
  std::map<int, int> refusals;  // by errno
  for (int round = 0; round < kRounds; ++round) {
    auto opened = tcp.connect(peer, kVictimPort);
    if (!opened) {  // the hostile application may have used up its own pages: its own loss
      ++refused;
      ++refusals[opened.error().sys_errno];
      pump(10ms);
      continue;
    }
    const int victim = *opened;
    if (!pump_until([&] { return tcp.connected(victim) || tcp.error(victim) != 0; }, 5s) || !tcp.connected(victim)) {
      ++refused;
      ++refusals[tcp.error(victim)];
      (void)tcp.abort(victim);
      continue;
    }
    ++victims;
    std::vector<std::byte> some(4096 + random() % 32768);
    apps::fill_pattern(0, some);
    (void)tcp.send(victim, some);
    pump(2ms);
    // Its page: connected to the victims' port from its own local port (a page scribbled in an
    // earlier round may claim anything, so the newest generation wins).
    const std::uint16_t local_port = tcp.endpoints(victim).local_port;
    formats::TcpSocketPageHeader* page = nullptr;
    std::uint32_t page_index = 0;
    for (std::uint32_t i = 0; i < region.page_count(); ++i) {
      auto* candidate = region.page(i);
      const auto& control = candidate->control;
      if (control.status.load() != formats::TcpSocketStatus::connected || control.remote_port != kVictimPort ||
          control.local_port != local_port) {
        continue;
      }
      if (page == nullptr || control.generation.load() > page->control.generation.load()) {
        page = candidate;
        page_index = i;
      }
    }
    if (page == nullptr) {
      (void)tcp.abort(victim);
      continue;
    }
    const std::uint32_t generation = page->control.generation.load();
    const int fields = 1 + static_cast<int>(random() % 3);
    for (int f = 0; f < fields; ++f) {
      const std::size_t which = random() % kPageFields.size();
      scribble(kPageFields[which].bytes(*page), region.ring_bytes(), random);
      ++scribbled[which];
    }
    const Message kick = Message::make(stack::kTcpKickKind, stack::TcpPageBody{page_index, generation});
    (void)host.send(*link, std::span(&kick, 1));
    // The application carries on as if nothing happened for a moment, then gives the socket up.
    (void)tcp.send(victim, some);
    pump(std::chrono::microseconds(5000 + random() % 20000));
    if (random() % 2 == 0) {
      (void)tcp.abort(victim);
    } else {
      (void)tcp.close(victim);
    }
    pump(2ms);
  }
  std::printf("rounds: %d, victims scribbled: %d, connections refused to the hostile application: %d\n", kRounds,
              victims, refused);
  for (const auto& [error, count] : refusals) std::printf("  refused with errno %d: %d\n", error, count);
  for (std::size_t i = 0; i < kPageFields.size(); ++i) std::printf("  %-24s %3d\n", kPageFields[i].name, scribbled[i]);
  EXPECT_GE(victims, kRounds / 2) << "too few rounds got a page to scribble on";

  // The steady streams end cleanly and arrive intact.
  for (std::size_t i = 0; i < kSteadyStreams; ++i) EXPECT_EQ(steady_error[i], 0) << "steady stream " << i;
  const auto streams_open_before_shutdown = streams_open;
  streams_open = 0;  // stop feeding them
  for (std::size_t i = 0; i < streams_open_before_shutdown; ++i) ASSERT_TRUE(tcp.shutdown_write(steady[i]));
  ASSERT_TRUE(pump_until([&] { return sink.wait_for(0s) == std::future_status::ready; }, 60s))
      << "the steady streams never ended";
  const auto results = sink.get();
  ASSERT_EQ(results.size(), kSteadyStreams);
  for (std::size_t i = 0; i < kSteadyStreams; ++i) {
    std::printf("steady stream %zu: %llu bytes sent\n", i, static_cast<unsigned long long>(steady_sent[i]));
    const std::string expected = pattern_sha256(steady_sent[i]);
    const bool arrived = std::any_of(results.begin(), results.end(), [&](const StreamResult& result) {
      return result.bytes == steady_sent[i] && result.sha256 == expected && result.error == 0;
    });
    EXPECT_TRUE(arrived) << "steady stream " << i << " did not arrive intact";
  }
  for (int socket : steady) (void)tcp.close(socket);
  pump(100ms);
  ::close(victim_listener);

  // The bad input was counted...
  const std::int64_t counted = counter("tcp0", "bad_app_messages") + counter("tcp0", "stale_app_messages") +
                               counter("tcp0", "ring_corrupt");
  std::printf("tcp0: bad_app_messages=%lld stale_app_messages=%lld ring_corrupt=%lld\n",
              static_cast<long long>(counter("tcp0", "bad_app_messages")),
              static_cast<long long>(counter("tcp0", "stale_app_messages")),
              static_cast<long long>(counter("tcp0", "ring_corrupt")));
  EXPECT_GT(counted, 0) << events();
  // ...no component was restarted (the seat's holder aside)...
  auto pids_after = stack_.pids();
  pids_after.erase("app0");
  EXPECT_EQ(pids_after, pids_before) << events();
  // ...and tcp0 does not spin once it is left alone.
  std::this_thread::sleep_for(500ms);
  const std::int64_t before = cpu_ticks(pids_after["tcp0"]);
  std::this_thread::sleep_for(1s);
  const std::int64_t used = cpu_ticks(pids_after["tcp0"]) - before;
  std::printf("tcp0: %lld ticks of CPU in the second after\n", static_cast<long long>(used));
  EXPECT_LE(used, ::sysconf(_SC_CLK_TCK) / 3) << "tcp0 keeps spinning";
}

}  // namespace
}  // namespace flotilla::testing
