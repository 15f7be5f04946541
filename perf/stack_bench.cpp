// flotilla-stack-bench: the stack end to end against the Linux kernel, side by side in one run.
//
//   udp-echo   A kernel UDP client in the peer namespace keeps --window requests in flight to an
//              echo server for --seconds, once against Flotilla's echo server (over the veth pair
//              Flotilla drives) and once against a kernel echo server in a second namespace (over a
//              veth pair of the same kind), alternating, --runs times each. Reports requests/s and
//              packets/s (medians) and the ratio Flotilla / kernel.
//   driver-rx  A sender in the peer namespace sends 64-byte UDP datagrams as fast as it can for
//              --seconds, to Flotilla (driver af_xdp, then dpdk) and to a kernel socket in the
//              second namespace. Reports what the sender sent and what each receiver took in
//              (driver rx_frames; the kernel socket's reads), in packets/s.
//
// Needs root. Host steal time (from /proc/stat) is printed beside each figure: this machine is a
// shared VM and its figures swing 2-3x from run to run, so compare the ratios, not the absolutes.
#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <map>
#include <atomic>
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "dataplane/clock.hpp"
#include "tests/support/stack_harness.hpp"

namespace {

using namespace flotilla;
using namespace flotilla::testing;

// The second namespace, holding the kernel's own servers: joined to the peer namespace by a veth
// pair of the same kind as Flotilla's.
struct KernelSide {
  std::string ns;
  std::string client_interface;  // in the peer namespace
  std::string server_interface;  // in the kernel namespace
  std::string client_address = "10.80.0.1";
  std::string server_address = "10.80.0.2";

  bool create(const std::string& peer_namespace) {
    const std::string id = std::to_string(::getpid() % 10'000'000);
    ns = "flo" + id + "k";
    client_interface = "flo" + id + "a";
    server_interface = "flo" + id + "b";
    const std::vector<std::vector<std::string>> steps = {
        {"ip", "netns", "add", ns},
        {"ip", "link", "add", client_interface, "netns", peer_namespace, "type", "veth", "peer", "name",
         server_interface, "netns", ns},
        {"ip", "-n", peer_namespace, "addr", "add", client_address + "/24", "dev", client_interface},
        {"ip", "-n", ns, "addr", "add", server_address + "/24", "dev", server_interface},
        {"ip", "-n", peer_namespace, "link", "set", client_interface, "up"},
        {"ip", "-n", ns, "link", "set", server_interface, "up"},
        {"ip", "-n", ns, "link", "set", "lo", "up"},
        // The same offload settings as the peer's end of Flotilla's link.
        {"ip", "netns", "exec", peer_namespace, "ethtool", "-K", client_interface, "tx", "off", "tso", "off", "gso", "off"},
    };
    for (const auto& step : steps) {
      if (recovery::run_command(step) != 0) {
        std::fprintf(stderr, "stack-bench: '%s ...' failed\n", step[0].c_str());
        return false;
      }
    }
    return true;
  }
  ~KernelSide() {
    if (ns.empty()) return;
    (void)recovery::run_command({"ip", "netns", "del", ns});
  }
};

std::uint64_t steal_ticks() {
  std::ifstream stat("/proc/stat");
  std::string cpu;
  std::uint64_t value = 0;
  std::uint64_t steal = 0;
  stat >> cpu;
  for (int field = 0; field < 8 && stat >> value; ++field) {
    if (field == 7) steal = value;
  }
  return steal;
}

// A steal percentage over an interval of `seconds` on all CPUs.
double steal_percent(std::uint64_t before, double seconds) {
  const double ticks = static_cast<double>(steal_ticks() - before);
  const double cpus = static_cast<double>(std::thread::hardware_concurrency());
  return 100.0 * ticks / (static_cast<double>(::sysconf(_SC_CLK_TCK)) * seconds * cpus);
}

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// A kernel UDP echo server in `ns` on port 7, batching with recvmmsg/sendmmsg: the strongest plain
// kernel server, not a strawman.
class KernelEchoServer {
 public:
  KernelEchoServer(std::string ns, std::uint16_t port) {
    worker_ = std::thread([this, ns, port] {
      in_namespace(ns, [&] {
        const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_port = htons(port);
        if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) return 0;
        ready_ = true;
        constexpr int kBatch = 32;
        std::vector<std::array<char, 2048>> buffers(kBatch);
        std::vector<sockaddr_in> peers(kBatch);
        std::vector<iovec> vectors(kBatch);
        std::vector<mmsghdr> messages(kBatch);
        while (!stop_) {
          pollfd waiting{fd, POLLIN, 0};
          if (::poll(&waiting, 1, 20) != 1) continue;
          for (int i = 0; i < kBatch; ++i) {
            vectors[i] = iovec{buffers[i].data(), buffers[i].size()};
            messages[i] = mmsghdr{};
            messages[i].msg_hdr.msg_name = &peers[i];
            messages[i].msg_hdr.msg_namelen = sizeof(sockaddr_in);
            messages[i].msg_hdr.msg_iov = &vectors[i];
            messages[i].msg_hdr.msg_iovlen = 1;
          }
          const int got = ::recvmmsg(fd, messages.data(), kBatch, MSG_DONTWAIT, nullptr);
          if (got <= 0) continue;
          for (int i = 0; i < got; ++i) vectors[i].iov_len = messages[i].msg_len;
          (void)::sendmmsg(fd, messages.data(), static_cast<unsigned>(got), 0);
        }
        ::close(fd);
        return 0;
      });
    });
    wait_for([&] { return ready_.load(); }, std::chrono::seconds(5));
  }
  ~KernelEchoServer() {
    stop_ = true;
    worker_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<bool> ready_{false};
  std::thread worker_;
};

struct EchoResult {
  double requests_per_second = 0;
  std::uint64_t lost = 0;
  double steal = 0;
};

// A closed-loop client in `ns`: `window` requests in flight, for `seconds`.
EchoResult echo_client(const std::string& ns, const std::string& address, std::uint16_t port,
                       int window, std::size_t size, double seconds) {
  EchoResult result;
  in_namespace(ns, [&] {
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in server{};
    server.sin_family = AF_INET;
    server.sin_port = htons(port);
    ::inet_pton(AF_INET, address.c_str(), &server.sin_addr);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&server), sizeof(server)) != 0) return 0;
    std::vector<char> payload(size, 'x');
    std::vector<char> reply(2048);
    // Warm up (ARP, caches), then measure.
    (void)::send(fd, payload.data(), size, 0);
    pollfd waiting{fd, POLLIN, 0};
    (void)::poll(&waiting, 1, 1000);
    (void)::recv(fd, reply.data(), reply.size(), MSG_DONTWAIT);
    const std::uint64_t steal_before = steal_ticks();
    const std::uint64_t start = monotonic_ns();
    const std::uint64_t end = start + static_cast<std::uint64_t>(seconds * 1e9);
    std::uint64_t answered = 0;
    int in_flight = 0;
    while (monotonic_ns() < end) {
      while (in_flight < window) {
        if (::send(fd, payload.data(), size, 0) < 0) break;
        ++in_flight;
      }
      if (::poll(&waiting, 1, 100) != 1) {
        result.lost += static_cast<std::uint64_t>(in_flight);  // nothing for 100 ms: count them lost
        in_flight = 0;
        continue;
      }
      while (::recv(fd, reply.data(), reply.size(), MSG_DONTWAIT) > 0) {
        ++answered;
        if (in_flight > 0) --in_flight;
      }
    }
    const double elapsed = static_cast<double>(monotonic_ns() - start) / 1e9;
    result.requests_per_second = static_cast<double>(answered) / elapsed;
    result.steal = steal_percent(steal_before, elapsed);
    ::close(fd);
    return 0;
  });
  return result;
}

int run_udp_echo(double seconds, int runs, int window, std::size_t size) {
  RunningStack stack;
  const StackNames names = unique_names();
  std::printf("udp-echo: starting the Flotilla stack (af_xdp) and a kernel namespace\n");
  if (std::string problem = stack.start(names, stack_config(names, "pass all")); !problem.empty()) {
    std::fprintf(stderr, "stack-bench: %s\n", problem.c_str());
    return 1;
  }
  KernelSide kernel;
  if (!kernel.create(names.peer_namespace)) return 1;
  KernelEchoServer kernel_server(kernel.ns, 7);
  std::vector<double> flotilla_rps;
  std::vector<double> kernel_rps;
  std::printf("%-5s %-9s %14s %12s %8s %8s\n", "run", "server", "requests/s", "packets/s", "lost", "steal%");
  for (int run = 0; run < runs; ++run) {
    for (const bool on_flotilla : {true, false}) {
      const EchoResult result = on_flotilla
                                    ? echo_client(names.peer_namespace, names.stack_address, 7, window, size, seconds)
                                    : echo_client(names.peer_namespace, kernel.server_address, 7, window, size, seconds);
      (on_flotilla ? flotilla_rps : kernel_rps).push_back(result.requests_per_second);
      std::printf("%-5d %-9s %14.0f %12.0f %8llu %8.1f\n", run + 1, on_flotilla ? "flotilla" : "kernel",
                  result.requests_per_second, 2 * result.requests_per_second,
                  static_cast<unsigned long long>(result.lost), result.steal);
      std::fflush(stdout);
    }
  }
  const double f = median(flotilla_rps);
  const double k = median(kernel_rps);
  std::printf("\nUDP echo, %zu-byte payloads, %d in flight, medians of %d runs of %.1f s:\n", size, window, runs, seconds);
  std::printf("  flotilla %12.0f requests/s %12.0f packets/s\n", f, 2 * f);
  std::printf("  kernel   %12.0f requests/s %12.0f packets/s\n", k, 2 * k);
  std::printf("  ratio flotilla/kernel: %.2f\n", k > 0 ? f / k : 0.0);
  return 0;
}

// Sends 64-byte datagrams from `ns` to address:port as fast as one thread can, for `seconds`.
// Returns datagrams sent per second.
double flood(const std::string& ns, const std::string& address, std::uint16_t port, double seconds) {
  double rate = 0;
  in_namespace(ns, [&] {
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in target{};
    target.sin_family = AF_INET;
    target.sin_port = htons(port);
    ::inet_pton(AF_INET, address.c_str(), &target.sin_addr);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&target), sizeof(target)) != 0) return 0;
    constexpr int kBatch = 64;
    char payload[18] = {};
    std::vector<iovec> vectors(kBatch, iovec{payload, sizeof(payload)});
    std::vector<mmsghdr> messages(kBatch);
    for (int i = 0; i < kBatch; ++i) {
      messages[i].msg_hdr.msg_iov = &vectors[i];
      messages[i].msg_hdr.msg_iovlen = 1;
    }
    const std::uint64_t start = monotonic_ns();
    const std::uint64_t end = start + static_cast<std::uint64_t>(seconds * 1e9);
    std::uint64_t sent = 0;
    while (monotonic_ns() < end) {
      const int done = ::sendmmsg(fd, messages.data(), kBatch, 0);
      if (done > 0) sent += static_cast<std::uint64_t>(done);
    }
    rate = static_cast<double>(sent) / (static_cast<double>(monotonic_ns() - start) / 1e9);
    ::close(fd);
    return 0;
  });
  return rate;
}

// A kernel socket in `ns` reading as fast as it can until stopped; counts datagrams.
class KernelSink {
 public:
  KernelSink(std::string ns, std::uint16_t port) {
    worker_ = std::thread([this, ns, port] {
      in_namespace(ns, [&] {
        const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_port = htons(port);
        ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
        ready_ = true;
        constexpr int kBatch = 64;
        std::vector<std::array<char, 128>> buffers(kBatch);
        std::vector<iovec> vectors(kBatch);
        std::vector<mmsghdr> messages(kBatch);
        for (int i = 0; i < kBatch; ++i) {
          vectors[i] = iovec{buffers[i].data(), buffers[i].size()};
          messages[i].msg_hdr.msg_iov = &vectors[i];
          messages[i].msg_hdr.msg_iovlen = 1;
        }
        while (!stop_) {
          pollfd waiting{fd, POLLIN, 0};
          if (::poll(&waiting, 1, 20) != 1) continue;
          const int got = ::recvmmsg(fd, messages.data(), kBatch, MSG_DONTWAIT, nullptr);
          if (got > 0) received_ += static_cast<std::uint64_t>(got);
        }
        ::close(fd);
        return 0;
      });
    });
    wait_for([&] { return ready_.load(); }, std::chrono::seconds(5));
  }
  ~KernelSink() {
    stop_ = true;
    worker_.join();
  }
  std::uint64_t received() const { return received_.load(); }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<bool> ready_{false};
  std::atomic<std::uint64_t> received_{0};
  std::thread worker_;
};

int run_driver_rx(double seconds, int runs) {
  std::printf("%-5s %-9s %14s %14s %8s %8s\n", "run", "receiver", "sent pkt/s", "received pkt/s", "ratio", "steal%");
  std::map<std::string, std::vector<double>> received;
  std::map<std::string, std::vector<double>> sent;
  for (const std::string driver : {"af_xdp", "dpdk"}) {
    RunningStack stack;
    const StackNames names = unique_names();
    if (std::string problem = stack.start(names, stack_config(names, "pass all", "", driver)); !problem.empty()) {
      std::fprintf(stderr, "stack-bench: %s: %s\n", driver.c_str(), problem.c_str());
      return 1;
    }
    KernelSide kernel;
    if (!kernel.create(names.peer_namespace)) return 1;
    KernelSink sink(kernel.ns, 9);
    // Resolve ARP both ways before flooding.
    (void)flood(names.peer_namespace, names.stack_address, 9, 0.05);
    (void)flood(names.peer_namespace, kernel.server_address, 9, 0.05);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    for (int run = 0; run < runs; ++run) {
      for (const bool on_flotilla : {true, false}) {
        const std::string label = on_flotilla ? driver : "kernel";
        const std::int64_t before = on_flotilla ? stack.counter("driver", "rx_frames")
                                                : static_cast<std::int64_t>(sink.received());
        const std::uint64_t steal_before = steal_ticks();
        const std::uint64_t start = monotonic_ns();
        const double rate = flood(names.peer_namespace, on_flotilla ? names.stack_address : kernel.server_address,
                                  9, seconds);
        std::this_thread::sleep_for(std::chrono::milliseconds(300));  // let the receiver drain
        const double elapsed = static_cast<double>(monotonic_ns() - start) / 1e9 - 0.3;
        const std::int64_t after = on_flotilla ? stack.counter("driver", "rx_frames")
                                               : static_cast<std::int64_t>(sink.received());
        const double in_rate = static_cast<double>(after - before) / elapsed;
        sent[label].push_back(rate);
        received[label].push_back(in_rate);
        std::printf("%-5d %-9s %14.0f %14.0f %8.2f %8.1f\n", run + 1, label.c_str(), rate, in_rate,
                    rate > 0 ? in_rate / rate : 0.0, steal_percent(steal_before, elapsed + 0.3));
        std::fflush(stdout);
      }
    }
  }
  std::printf("\nreceive rate, 64-byte UDP, one sending thread, medians of %d runs of %.1f s:\n", runs, seconds);
  for (const auto& [label, values] : received) {
    std::printf("  %-8s received %12.0f pkt/s of %12.0f sent (%.2f)\n", label.c_str(), median(values),
                median(sent[label]), median(sent[label]) > 0 ? median(values) / median(sent[label]) : 0.0);
  }
  const double kernel_rate = median(received["kernel"]);
  for (const std::string driver : {"af_xdp", "dpdk"}) {
    std::printf("  ratio %s/kernel: %.2f\n", driver.c_str(), kernel_rate > 0 ? median(received[driver]) / kernel_rate : 0.0);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"flotilla-stack-bench: the Flotilla stack against the Linux kernel, side by side (needs root)"};
  app.require_subcommand(1);
  double seconds = 3;
  int runs = 3;
  int window = 16;
  std::size_t size = 64;
  auto* echo = app.add_subcommand("udp-echo", "UDP echo requests/s: Flotilla's echo server vs a kernel one");
  echo->add_option("--seconds", seconds, "Length of each run")->check(CLI::Range(0.2, 600.0))->capture_default_str();
  echo->add_option("--runs", runs, "Runs per server")->check(CLI::Range(1, 100))->capture_default_str();
  echo->add_option("--window", window, "Requests in flight")->check(CLI::Range(1, 1024))->capture_default_str();
  echo->add_option("--size", size, "Payload bytes")->check(CLI::Range(1, 1472))->capture_default_str();
  auto* rx = app.add_subcommand("driver-rx", "Receive packets/s of the af_xdp and dpdk drivers vs a kernel socket");
  rx->add_option("--seconds", seconds, "Length of each run")->check(CLI::Range(0.2, 600.0))->capture_default_str();
  rx->add_option("--runs", runs, "Runs per receiver")->check(CLI::Range(1, 100))->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (::geteuid() != 0) {
    std::fprintf(stderr, "flotilla-stack-bench: needs root (network namespaces, veth, XDP)\n");
    return 2;
  }
  if (echo->parsed()) return run_udp_echo(seconds, runs, window, size);
  return run_driver_rx(seconds, runs);
}
