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
//   tcp-bulk   TCP bulk goodput for --seconds, alternating, --runs times: flotilla-perf (a component
//              of a fresh stack) sending to a kernel socket in the peer namespace, or receiving from
//              one; then kernel to kernel between the peer namespace and the second one, the same
//              way, with offloads off (the same per-packet work) and on (the machine's ceiling).
//              Every --streams count in each of --directions. Reports Gbps, steal, and CPU seconds
//              per gigabit: the whole machine's (/proc/stat) and the stack's processes' (/proc/<pid>/stat).
//              --wait NAME=POLICY and --core NAME=CPU place the stack's components (its [wait] table
//              and their cores), as perf/latency_bench.py does, for a placement table.
//   apps-config  Prints the configuration perf/apps_bench.py brings its stack up with (the
//              stack's components and application seats for `flotilla run`, on a network named
//              flo<ID>p/s/q), so that the script and the tests share one definition.
//
// Needs root (but apps-config). Host steal time (from /proc/stat) is printed beside each figure: this machine is a
// shared VM and its figures swing 2-3x from run to run, so compare the ratios, not the absolutes.
#include <arpa/inet.h>
#include <linux/magic.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/vfs.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "dataplane/clock.hpp"
#include "dataplane/control_block.hpp"
#include "dataplane/idle_waiter.hpp"
#include "perf/cpu_ticks.hpp"
#include "tests/support/kernel_namespace.hpp"
#include "tests/support/kernel_tcp.hpp"
#include "tests/support/stack_harness.hpp"

namespace {

using namespace flotilla;
using namespace flotilla::testing;

// Ctrl-C, SIGTERM or SIGHUP must not leave a stack or a namespace behind (the supervisor runs in a
// session of its own and would outlive this program): those signals are blocked in every thread
// but one, which waits for them and takes down what is registered here, then exits.
struct Teardown {
  std::mutex lock;
  RunningStack* stack = nullptr;
  std::string kernel_namespace;
  std::filesystem::path folder;

  static Teardown& instance() {
    static Teardown teardown;
    return teardown;
  }
};

void watch_stop_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  for (const int number : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&signals, number);
  ::pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::thread([signals] {
    int number = 0;
    if (::sigwait(&signals, &number) != 0) return;
    std::fprintf(stderr, "stack-bench: %s: taking everything down\n", ::strsignal(number));
    Teardown& teardown = Teardown::instance();
    const std::lock_guard guard(teardown.lock);
    if (!teardown.kernel_namespace.empty()) (void)recovery::run_command({"ip", "netns", "del", teardown.kernel_namespace});
    if (teardown.stack != nullptr) (void)teardown.stack->stop();
    if (!teardown.folder.empty()) std::filesystem::remove_all(teardown.folder);
    std::_Exit(128 + number);
  }).detach();
}

// Registers a stack for Teardown while it is in scope.
class TeardownStack {
 public:
  explicit TeardownStack(RunningStack& stack) { set(&stack); }
  ~TeardownStack() { set(nullptr); }
  TeardownStack(const TeardownStack&) = delete;
  TeardownStack& operator=(const TeardownStack&) = delete;

 private:
  static void set(RunningStack* stack) {
    const std::lock_guard guard(Teardown::instance().lock);
    Teardown::instance().stack = stack;
  }
};

// The second namespace, holding the kernel's own servers (tests/support/kernel_namespace.hpp),
// registered for Teardown before it is made.
struct KernelSide : KernelNamespace {
  bool create(const std::string& peer_namespace) {
    {
      const std::lock_guard guard(Teardown::instance().lock);
      Teardown::instance().kernel_namespace = ns;
    }
    const std::string failure = KernelNamespace::create(peer_namespace);
    if (!failure.empty()) std::fprintf(stderr, "stack-bench: %s\n", failure.c_str());
    return failure.empty();
  }
  bool set_offloads(const std::string& peer_namespace, bool on) const {
    const std::string failure = KernelNamespace::set_offloads(peer_namespace, on);
    if (!failure.empty()) {
      std::fprintf(stderr, "stack-bench: ethtool -K %s ... %s failed\n", failure.c_str(), on ? "on" : "off");
    }
    return failure.empty();
  }
  ~KernelSide() {
    const std::lock_guard guard(Teardown::instance().lock);
    remove();
    Teardown::instance().kernel_namespace.clear();
  }
};

std::uint64_t steal_ticks() { return bench::CpuTicks::read().ticks[bench::CpuTicks::steal]; }

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
  const TeardownStack teardown(stack);
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
    const TeardownStack teardown(stack);
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

// ---- tcp-bulk ---------------------------------------------------------------------------------

constexpr std::uint16_t kBulkPort = 5001;

// One leg of a run: a transfer one way, over one path.
struct BulkSample {
  double gbps = 0;
  double gigabits = 0;
  double steal = 0;             // % of all CPUs' time the host took during the leg
  double busy_seconds = 0;      // /proc/stat: CPU time not idle and not stolen, all CPUs, during the leg
  double stack_seconds = -1;    // Flotilla legs: utime + stime of the stack's processes
  std::string stack_breakdown;  // Flotilla legs: the same per process
  std::uint64_t retransmits = 0;  // Flotilla sender: what flotilla-perf reported
  double background = 0;        // % of the CPUs busy (steal included) just before the case, all ours idle
  std::string problem;          // not empty: the leg did not end cleanly
};

// The CPU time of a running stack: each component's own time, and the time of the components the
// supervisor has reaped (crashed incarnations), which the kernel adds to the supervisor's
// cutime/cstime when it waits for them.
struct StackCpu {
  std::map<std::string, std::pair<pid_t, std::uint64_t>> own;  // component -> pid, ticks
  pid_t supervisor = -1;
  std::uint64_t supervisor_own = 0;
  std::uint64_t reaped = 0;

  static StackCpu read(const RunningStack& stack) {
    StackCpu out;
    for (const auto& [name, pid] : stack.pids()) {
      const bench::ProcessTicks ticks = bench::ProcessTicks::read(pid);
      if (!ticks.alive) continue;
      out.own[name] = {pid, ticks.own};
      out.supervisor = ticks.parent;
    }
    const bench::ProcessTicks supervisor = bench::ProcessTicks::read(out.supervisor);
    out.supervisor_own = supervisor.own;
    out.reaped = supervisor.reaped_children;
    return out;
  }
};

// CPU seconds the stack spent between two readings, in total and per process ("driver 1.23, ...").
// Processes that exited in between (crashed incarnations) count through the supervisor's
// reaped-children time, less what the first reading had seen of them.
std::pair<double, std::string> stack_cpu_between(const StackCpu& before, const StackCpu& after) {
  std::map<std::string, std::uint64_t> ticks;
  std::uint64_t seen_of_exited = 0;
  for (const auto& [name, entry] : before.own) {
    const auto later = after.own.find(name);
    if (later == after.own.end() || later->second.first != entry.first) seen_of_exited += entry.second;
  }
  for (const auto& [name, entry] : after.own) {
    const auto earlier = before.own.find(name);
    // A process the first reading did not see (a new incarnation) counts from its start.
    const bool same = earlier != before.own.end() && earlier->second.first == entry.first;
    ticks[name] = entry.second - (same ? earlier->second.second : 0);
  }
  const std::uint64_t reaped = after.reaped - before.reaped;
  ticks["exited"] = reaped > seen_of_exited ? reaped - seen_of_exited : 0;
  ticks["supervisor"] = after.supervisor == before.supervisor ? after.supervisor_own - before.supervisor_own : 0;
  std::uint64_t total = 0;
  std::string breakdown;
  for (const auto& [name, value] : ticks) {
    if (value == 0) continue;
    total += value;
    char part[96];
    std::snprintf(part, sizeof(part), "%s%s %.2f", breakdown.empty() ? "" : ", ", name.c_str(),
                  bench::ticks_to_seconds(value));
    breakdown += part;
  }
  return {bench::ticks_to_seconds(total), breakdown};
}

// The leg's window on the whole machine: busy (not idle, not stolen) CPU seconds and steal.
struct MachineWindow {
  bench::CpuTicks start = bench::CpuTicks::read();

  void close(BulkSample& sample) const {
    const bench::CpuTicks end = bench::CpuTicks::read();
    const std::uint64_t steal = end.ticks[bench::CpuTicks::steal] - start.ticks[bench::CpuTicks::steal];
    sample.busy_seconds = bench::ticks_to_seconds(end.busy() - start.busy() - steal);
    const double total = static_cast<double>(end.total() - start.total());
    sample.steal = total > 0 ? 100.0 * static_cast<double>(steal) / total : 0.0;
  }
};

// Goodput as the receiving kernel socket(s) saw it: every byte read, over the longest connection's
// time from accept to end of stream (the streams start together).
void sink_goodput(const std::vector<StreamResult>& received, std::size_t streams, BulkSample& sample) {
  std::uint64_t bytes = 0;
  double seconds = 0;
  for (const StreamResult& stream : received) {
    bytes += stream.bytes;
    seconds = std::max(seconds, stream.seconds);
    if (stream.timed_out) sample.problem = "a kernel receiver gave up waiting for the end of its stream";
    if (stream.error != 0) sample.problem = std::string("a kernel receiver failed: ") + std::strerror(stream.error);
  }
  if (received.size() != streams) {
    sample.problem = std::to_string(received.size()) + " of " + std::to_string(streams) + " connections arrived";
  }
  sample.gigabits = static_cast<double>(bytes) * 8 / 1e9;
  sample.gbps = seconds > 0 ? sample.gigabits / seconds : 0;
}

KernelSinkOptions bulk_sink_options(std::size_t streams, double seconds, std::atomic<bool>* listening) {
  KernelSinkOptions options;
  options.port = kBulkPort;
  options.connections = streams;
  options.deadline = std::chrono::milliseconds(static_cast<std::int64_t>((seconds + 30) * 1000));
  options.listening = listening;
  options.hash = false;
  return options;
}

// `streams` kernel connections from `ns` to address:port, each sending the pattern for `seconds`.
// A refused connection is tried again for a while: a Flotilla listener may still be starting.
std::vector<SourceResult> bulk_sources(const std::string& ns, const std::string& address, std::size_t streams,
                                       double seconds) {
  std::vector<SourceResult> results(streams);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < streams; ++i) {
    threads.emplace_back([&, i] {
      results[i] = in_namespace(ns, [&] {
        KernelSourceOptions options;
        options.address = address;
        options.port = kBulkPort;
        options.bytes = std::numeric_limits<std::uint64_t>::max();
        options.duration = std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000));
        options.deadline = options.duration + std::chrono::seconds(30);
        options.hash = false;
        SourceResult result;
        const std::uint64_t give_up = monotonic_ns() + 10'000'000'000ull;
        do {
          result = kernel_source(options);
          if (result.connected || result.sent.error != ECONNREFUSED) break;
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        } while (monotonic_ns() < give_up);
        return result;
      });
    });
  }
  for (auto& thread : threads) thread.join();
  return results;
}

std::string source_problem(const std::vector<SourceResult>& sent) {
  for (const SourceResult& source : sent) {
    if (!source.connected) return std::string("a kernel sender could not connect: ") + std::strerror(source.sent.error);
    if (source.sent.error != 0) return std::string("a kernel sender failed: ") + std::strerror(source.sent.error);
    if (source.sent.timed_out) return "a kernel sender timed out";
  }
  return "";
}

// Kernel to kernel over the KernelSide pair: `streams` connections from sender_ns to a sink in
// receiver_ns.
BulkSample kernel_bulk(const std::string& sender_ns, const std::string& receiver_ns, const std::string& receiver_address,
                       std::size_t streams, double seconds) {
  BulkSample sample;
  const MachineWindow window;
  std::atomic<bool> listening{false};
  std::vector<StreamResult> received;
  std::thread sink([&] {
    received = in_namespace(receiver_ns, [&] { return kernel_sink(bulk_sink_options(streams, seconds, &listening)); });
  });
  if (wait_for([&] { return listening.load(); }, std::chrono::seconds(5))) {
    const std::vector<SourceResult> sent = bulk_sources(sender_ns, receiver_address, streams, seconds);
    sample.problem = source_problem(sent);
  } else {
    sample.problem = "the kernel receiver did not start listening";
  }
  sink.join();
  window.close(sample);
  const std::string sender_problem = sample.problem;  // says more than the receiver's view of it
  sink_goodput(received, streams, sample);
  if (!sender_problem.empty()) sample.problem = sender_problem;
  return sample;
}

// True once `name` is a network namespace one can enter (`ip netns add` creates the file first and
// bind-mounts the namespace on it after).
bool namespace_ready(const std::string& name) {
  struct statfs info{};
  return ::statfs(("/run/netns/" + name).c_str(), &info) == 0 && info.f_type == NSFS_MAGIC;
}

// A number from flotilla-perf's JSON report line ({"bytes":123,...}); -1 when it is not there.
double report_number(const std::string& json, const std::string& key) {
  const auto report = nlohmann::json::parse(json, nullptr, false);
  if (!report.is_object() || !report.contains(key) || !report[key].is_number()) return -1;
  return report[key].get<double>();
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

// What the TCP side of the stack counted, and its log kept, for a Flotilla leg that went wrong.
void keep_evidence(const RunningStack& stack, const std::string& label, BulkSample& sample) {
  const std::string kept = "/tmp/flotilla-tcp-bench-" + std::to_string(::getpid()) + "-" + label + ".log";
  std::error_code error;
  std::filesystem::copy_file(stack.log_path(), kept, std::filesystem::copy_options::overwrite_existing, error);
  std::fprintf(stderr, "stack-bench: %s: %s\n  stack log kept in %s\n", label.c_str(), sample.problem.c_str(),
               error ? "(could not copy)" : kept.c_str());
  for (const auto& [component, counters] : stack.all_counters()) {
    if (component != "driver" && component != "ip" && !component.starts_with("tcp")) continue;
    std::string line = "  counters " + component + ":";
    for (const auto& [name, value] : counters) {
      if (value != 0) line += " " + name + "=" + std::to_string(value);
    }
    std::fprintf(stderr, "%s\n", line.c_str());
  }
}

// Where the stack's components run and how they wait: --wait NAME=POLICY and --core NAME=CPU.
struct Placement {
  std::vector<std::string> waits;  // "NAME=POLICY": keys of the configuration's [wait] table
  std::vector<std::string> cores;  // "NAME=CPU": `core = CPU` in the [[component]] named NAME
  int app_seats = 0;               // [limits] app_seats: idle application seats beside flotilla-perf

  // `config` with this placement; an error message instead when a core names no component.
  std::string apply(std::string config, std::string& problem) const {
    for (const std::string& setting : cores) {
      const std::size_t equals = setting.find('=');
      const std::string table = "[[component]]\nname = \"" + setting.substr(0, equals) + "\"\n";
      const std::size_t at = config.find(table);
      if (at == std::string::npos) {
        problem = "--core " + setting + ": the stack has no component or group '" + setting.substr(0, equals) + "'";
        return config;
      }
      config.insert(at + table.size(), "core = " + setting.substr(equals + 1) + "\n");
    }
    if (app_seats != 0) config += recovery::app_seats_config(app_seats);
    if (!waits.empty()) {
      config += "\n[wait]\n";
      for (const std::string& setting : waits) {
        const std::size_t equals = setting.find('=');
        config += setting.substr(0, equals) + " = \"" + setting.substr(equals + 1) + "\"\n";
      }
    }
    return config;
  }
  std::string describe() const {
    std::string text;
    for (const std::string& setting : waits) text += " wait." + setting;
    for (const std::string& setting : cores) text += " core." + setting;
    if (app_seats != 0) text += " app_seats=" + std::to_string(app_seats);
    return text.empty() ? " (the binaries' own: shared, unpinned)" : text;
  }
};

// Flotilla's leg: a stack whose configuration holds flotilla-perf as a component (it starts with the
// stack, writes its report when done and idles), against kernel sockets in the peer namespace.
BulkSample flotilla_bulk(RunningStack& stack, const StackNames& names, bool flotilla_sends, std::size_t streams,
                         double seconds, const std::filesystem::path& folder, const std::string& label,
                         const Placement& placement) {
  BulkSample sample;
  const std::string report = (folder / (label + ".json")).string();
  char seconds_text[32];
  std::vector<std::string> args;
  if (flotilla_sends) {
    std::snprintf(seconds_text, sizeof(seconds_text), "%.3f", seconds);
    // --connect-retry: in case the kernel receiver is not listening yet (see the sink below).
    args = {"--role", "send", "--peer", names.peer_address + ":" + std::to_string(kBulkPort), "--seconds",
            seconds_text, "--connect-retry", "10"};
  } else {
    std::snprintf(seconds_text, sizeof(seconds_text), "%.3f", seconds + 60);  // only a limit
    args = {"--role", "receive", "--port", std::to_string(kBulkPort), "--seconds", seconds_text};
  }
  for (const std::string& more : {std::string("--streams"), std::to_string(streams), std::string("--channels"),
                                  std::string("tcp0-perf,tcp1-perf"), std::string("--report"), report}) {
    args.push_back(more);
  }
  std::string problem;
  const std::string config =
      placement.apply(stack_config(names, "pass all", tcp_app_config("perf", "flotilla-perf", args)), problem);
  if (!problem.empty()) {
    sample.problem = problem;
    return sample;
  }

  std::vector<StreamResult> received;
  std::thread sink;
  if (flotilla_sends) {
    // flotilla-perf connects as soon as the stack is up, so the kernel receiver must listen by then:
    // it enters the peer namespace the moment `flotilla up` has made it.
    sink = std::thread([&] {
      if (!wait_for([&] { return namespace_ready(names.peer_namespace); }, std::chrono::seconds(20))) return;
      received = in_namespace(names.peer_namespace,
                              [&] { return kernel_sink(bulk_sink_options(streams, seconds, nullptr)); });
    });
  }
  if (std::string problem = stack.start(names, config); !problem.empty()) {
    sample.problem = "the stack did not start: " + problem;
    keep_evidence(stack, label, sample);
    stack.stop();  // the sink ends at its deadline once the namespace is gone
    if (sink.joinable()) sink.join();
    return sample;
  }
  const StackCpu cpu_before = StackCpu::read(stack);
  const MachineWindow window;
  std::vector<SourceResult> sent;
  if (!flotilla_sends) sent = bulk_sources(names.peer_namespace, names.stack_address, streams, seconds);
  if (sink.joinable()) sink.join();
  // flotilla-perf writes its report once every stream has ended (the sender: once its data is
  // acknowledged), then idles until the stack stops.
  const bool exited = wait_for([&] { return std::filesystem::exists(report); }, std::chrono::seconds(20));
  window.close(sample);
  const StackCpu cpu_after = StackCpu::read(stack);
  std::tie(sample.stack_seconds, sample.stack_breakdown) = stack_cpu_between(cpu_before, cpu_after);

  const std::string json = read_file(report);
  if (flotilla_sends) {
    sink_goodput(received, streams, sample);
    sample.retransmits = static_cast<std::uint64_t>(std::max(0.0, report_number(json, "retransmits")));
  } else {
    const double bytes = report_number(json, "bytes");
    const double elapsed = report_number(json, "seconds");
    sample.gigabits = bytes > 0 ? bytes * 8 / 1e9 : 0;
    sample.gbps = elapsed > 0 ? sample.gigabits / elapsed : 0;
    if (const std::string problem = source_problem(sent); !problem.empty()) sample.problem = problem;
  }
  if (!exited) sample.problem = "flotilla-perf wrote no report within 20 s of the transfer's end";
  else if (report_number(json, "failed_streams") != 0) sample.problem = "flotilla-perf reported failed streams: " + json;
  if (const std::int64_t restarts = stack.counter("perf", "restarts"); restarts > 0) {
    sample.problem += " (perf restarted)";
  }
  if (!sample.problem.empty() || sample.gbps <= 0) {
    if (sample.problem.empty()) sample.problem = "no data moved";
    keep_evidence(stack, label, sample);
  }
  return sample;
}

struct BulkCase {
  bool flotilla_sends;
  std::size_t streams;
  std::string name() const {
    return std::string(flotilla_sends ? "flotilla->kernel" : "kernel->flotilla") + " x" + std::to_string(streams);
  }
};

const char* const kPathNames[] = {"flotilla", "kernel, offloads off", "kernel, offloads on"};

void print_sample(int run, const BulkCase& bulk, int path, const BulkSample& sample) {
  std::printf("%-4d %-20s %-21s %8.2f %7.1f %5.0f %9.3f", run, bulk.name().c_str(), kPathNames[path], sample.gbps,
              sample.steal, sample.background, sample.gigabits > 0 ? sample.busy_seconds / sample.gigabits : 0.0);
  if (sample.stack_seconds >= 0) {
    std::printf(" %9.3f   [%s]", sample.gigabits > 0 ? sample.stack_seconds / sample.gigabits : 0.0,
                sample.stack_breakdown.c_str());
    if (bulk.flotilla_sends) std::printf(" retransmits %llu", static_cast<unsigned long long>(sample.retransmits));
  }
  if (!sample.problem.empty()) std::printf("  PROBLEM: %s", sample.problem.c_str());
  std::printf("\n");
  std::fflush(stdout);
}

int run_tcp_bulk(double seconds, int runs, const std::vector<std::size_t>& stream_counts,
                 const std::vector<std::string>& directions, const std::vector<std::string>& paths,
                 const Placement& placement) {
  auto wanted = [&](int path) {
    static const char* const kOptions[] = {"flotilla", "kernel-off", "kernel-on"};
    return std::find(paths.begin(), paths.end(), kOptions[path]) != paths.end();
  };
  std::vector<BulkCase> cases;
  for (const std::string& direction : directions) {
    for (const std::size_t streams : stream_counts) cases.push_back(BulkCase{direction == "send", streams});
  }
  char pattern[] = "/tmp/flotilla-tcp-bench-XXXXXX";
  if (::mkdtemp(pattern) == nullptr) {
    std::fprintf(stderr, "stack-bench: mkdtemp failed\n");
    return 1;
  }
  const std::filesystem::path folder = pattern;
  {
    const std::lock_guard guard(Teardown::instance().lock);
    Teardown::instance().folder = folder;
  }
  // samples[case][path]
  std::vector<std::array<std::vector<BulkSample>, 3>> samples(cases.size());
  bool clean = true;
  std::printf("tcp-bulk: %zu cases x %d runs x %zu paths, %.1f s each; a fresh stack per case and run; placement:%s\n",
              cases.size(), runs, paths.size(), seconds, placement.describe().c_str());
  std::printf("%-4s %-20s %-21s %8s %7s %5s %9s %9s\n", "run", "case", "path", "Gbps", "steal%", "bg%",
              "busy s/Gb", "stack s/Gb");
  for (int run = 1; run <= runs; ++run) {
    for (std::size_t c = 0; c < cases.size(); ++c) {
      const BulkCase& bulk = cases[c];
      RunningStack stack;
      const TeardownStack teardown(stack);
      const StackNames names = unique_names();
      const std::string label = "run" + std::to_string(run) + "-" + (bulk.flotilla_sends ? "send" : "receive") + "-x" +
                                std::to_string(bulk.streams);
      // Nothing of ours runs now: whatever keeps the CPUs busy is someone else's, and competes with every leg.
      const double background = 100 * bench::others_cpu_share(std::chrono::milliseconds(500));
      if (wanted(0)) {
        BulkSample flotilla = flotilla_bulk(stack, names, bulk.flotilla_sends, bulk.streams, seconds, folder, label,
                                            placement);
        flotilla.background = background;
        print_sample(run, bulk, 0, flotilla);
        clean = clean && flotilla.problem.empty();
        samples[c][0].push_back(flotilla);
      } else if (std::string problem = stack.start(names, stack_config(names, "pass all")); !problem.empty()) {
        // Only kernel paths: the stack is there for its peer namespace.
        std::fprintf(stderr, "stack-bench: the stack did not start: %s\n", problem.c_str());
        clean = false;
      }
      if (!stack.names().peer_namespace.empty()) {
        KernelSide kernel;
        if (!kernel.create(names.peer_namespace)) {
          clean = false;
          continue;
        }
        // Same roles as Flotilla's leg: the peer namespace keeps its part, the kernel namespace
        // takes Flotilla's.
        for (const int path : {1, 2}) {
          if (!wanted(path)) continue;
          if (!kernel.set_offloads(names.peer_namespace, path == 2)) {
            clean = false;
            break;
          }
          BulkSample sample =
              bulk.flotilla_sends
                  ? kernel_bulk(kernel.ns, names.peer_namespace, kernel.client_address, bulk.streams, seconds)
                  : kernel_bulk(names.peer_namespace, kernel.ns, kernel.server_address, bulk.streams, seconds);
          sample.background = background;
          print_sample(run, bulk, path, sample);
          clean = clean && sample.problem.empty();
          samples[c][static_cast<std::size_t>(path)].push_back(sample);
        }
      }
    }
  }
  std::filesystem::remove_all(folder);

  auto median_of = [](const std::vector<BulkSample>& list, auto field) {
    std::vector<double> values;
    for (const BulkSample& sample : list) values.push_back(field(sample));
    return median(values);
  };
  std::printf("\nTCP bulk goodput, medians of %d runs of %.1f s (MTU 1500 veth on both paths):\n", runs, seconds);
  std::printf("%-20s %-21s %8s %7s %5s %10s %10s %14s\n", "case", "path", "Gbps", "steal%", "bg%", "busy s/Gb",
              "stack s/Gb", "flotilla/path");
  for (std::size_t c = 0; c < cases.size(); ++c) {
    const double flotilla_gbps = median_of(samples[c][0], [](const BulkSample& s) { return s.gbps; });
    for (std::size_t path = 0; path < 3; ++path) {
      const auto& list = samples[c][path];
      if (list.empty()) continue;
      const double gbps = median_of(list, [](const BulkSample& s) { return s.gbps; });
      std::printf("%-20s %-21s %8.2f %7.1f %5.0f %10.3f", cases[c].name().c_str(), kPathNames[path], gbps,
                  median_of(list, [](const BulkSample& s) { return s.steal; }),
                  median_of(list, [](const BulkSample& s) { return s.background; }),
                  median_of(list, [](const BulkSample& s) { return s.gigabits > 0 ? s.busy_seconds / s.gigabits : 0; }));
      if (path == 0) {
        std::printf(" %10.3f\n", median_of(list, [](const BulkSample& s) {
                      return s.gigabits > 0 ? s.stack_seconds / s.gigabits : 0;
                    }));
      } else if (!samples[c][0].empty()) {
        std::printf(" %10s %14.2f\n", "-", gbps > 0 ? flotilla_gbps / gbps : 0.0);
      } else {
        std::printf(" %10s\n", "-");
      }
    }
  }
  std::printf(
      "\nWhere the numbers come from:\n"
      "  Gbps        flotilla->kernel and kernel->kernel: bytes the receiving kernel socket(s) read, over the\n"
      "              longest connection's time from accept to end of stream; kernel->flotilla: flotilla-perf's\n"
      "              report (bytes received, from the first byte to the last stream's end).\n"
      "  steal%%      /proc/stat steal ticks over all ticks of all CPUs during the leg.\n"
      "  bg%%         /proc/stat busy share of all CPUs in the 0.5 s before the case, while nothing of the\n"
      "              bench runs: someone else's load, competing with every leg of that case.\n"
      "  busy s/Gb   /proc/stat: CPU seconds not idle, not iowait and not stolen (user, system, irq, softirq,\n"
      "              all CPUs, every process: the kernel peer's work included) during the leg, per gigabit moved.\n"
      "  stack s/Gb  utime+stime from /proc/<pid>/stat of the stack's processes (driver, ip, pf, tcp0, tcp1,\n"
      "              udp, echo, supervisor, flotilla-perf) from the stack being up to flotilla-perf's report, per\n"
      "              gigabit (a process that exited meanwhile counts by the supervisor's cutime+cstime).\n"
      "  offloads    off: ethtool -K tx off tso off gso off gro off on both veth ends (as the peer's end of\n"
      "              Flotilla's link); on: tx on tso on gso on gro off (the kernel's veth defaults).\n"
      "  Every figure on this shared VM moves 2-3x with the host's steal: compare within one run.\n");
  return clean ? 0 : 1;
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
  std::vector<std::size_t> stream_counts = {1, 4};
  std::vector<std::string> directions = {"send", "receive"};
  double bulk_seconds = 10;
  auto* bulk = app.add_subcommand("tcp-bulk", "TCP bulk goodput: Flotilla vs kernel to kernel, offloads off and on");
  bulk->add_option("--seconds", bulk_seconds, "Length of each transfer")->check(CLI::Range(0.5, 600.0))->capture_default_str();
  bulk->add_option("--runs", runs, "Runs of every case and path")->check(CLI::Range(1, 100))->capture_default_str();
  bulk->add_option("--streams", stream_counts, "Parallel connections, one case each")
      ->delimiter(',')
      ->check(CLI::Range(1, 64))->capture_default_str();
  bulk->add_option("--directions", directions, "send: Flotilla sends to the kernel; receive: the kernel sends to Flotilla")
      ->delimiter(',')
      ->check(CLI::IsMember({"send", "receive"}))->capture_default_str();
  std::vector<std::string> paths = {"flotilla", "kernel-off", "kernel-on"};
  bulk->add_option("--paths", paths, "Which paths to measure")
      ->delimiter(',')
      ->check(CLI::IsMember({"flotilla", "kernel-off", "kernel-on"}))->capture_default_str();
  Placement placement;
  bulk->add_option("--app-seats", placement.app_seats,
                   "Idle application seats the stack declares ([limits] app_seats): what they cost the TCP replicas")
      ->check(CLI::Range(0, static_cast<int>(kMaxAppSeats)));
  bulk->add_option("--wait", placement.waits,
                   "NAME=POLICY: how the stack's component or group NAME (or default) waits: shared, dedicated, poll")
      ->check([](const std::string& setting) {
        const std::size_t equals = setting.find('=');
        if (equals == 0 || equals == std::string::npos || !WaitPolicy::named(setting.substr(equals + 1))) {
          return std::string("expected NAME=POLICY, POLICY one of shared, dedicated, poll");
        }
        return std::string();
      });
  bulk->add_option("--core", placement.cores, "NAME=CPU: pin the stack's component or group NAME to CPU")
      ->check([](const std::string& setting) {
        const std::size_t equals = setting.find('=');
        const std::string cpu = equals == std::string::npos ? "" : setting.substr(equals + 1);
        if (equals == 0 || cpu.empty() || cpu.find_first_not_of("0123456789") != std::string::npos ||
            std::stoul(cpu) >= std::thread::hardware_concurrency()) {
          return std::string("expected NAME=CPU, CPU one of this machine's");
        }
        return std::string();
      });
  std::string config_id;
  auto* apps_config = app.add_subcommand("apps-config", "Print the stack configuration of perf/apps_bench.py");
  apps_config->add_option("--id", config_id, "Network names flo<ID>p (peer namespace), flo<ID>s, flo<ID>q")
      ->required()
      ->check([](const std::string& id) { return id.size() <= 10 ? std::string() : "at most 10 characters"; });
  CLI11_PARSE(app, argc, argv);
  if (apps_config->parsed()) {
    const StackNames names{"flo" + config_id + "p", "flo" + config_id + "s", "flo" + config_id + "q"};
    std::fputs(stack_config(names, "pass all", recovery::app_seats_config()).c_str(), stdout);
    return 0;
  }
  if (::geteuid() != 0) {
    std::fprintf(stderr, "flotilla-stack-bench: needs root (network namespaces, veth, XDP)\n");
    return 2;
  }
  watch_stop_signals();
  if (echo->parsed()) return run_udp_echo(seconds, runs, window, size);
  if (bulk->parsed()) return run_tcp_bulk(bulk_seconds, runs, stream_counts, directions, paths, placement);
  return run_driver_rx(seconds, runs);
}
