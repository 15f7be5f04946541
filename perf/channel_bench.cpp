// Channel micro-benchmarks: how close a Flotilla channel between two processes comes to the
// hardware floor, and how far ahead it is of the kernel IPC a multiserver design would otherwise
// use. Flotilla's components talk over channels all the time, so this is the cost every request
// pays at every hop.
//
// Every benchmark runs between this process and a forked peer pinned to another core, because
// that is how components are deployed: the cost that matters is cache lines crossing between
// cores. Side by side, in one run:
//   - latency: ping-pong of one 64-byte message, reported one way (round trip / 2), over a bare
//     pair of cache lines (the physical floor), a busy-polled channel, a pipe, a shared ring
//     notified through an eventfd, and an AF_UNIX datagram socket;
//   - throughput: the peer sends bursts of 1, 8 or 32 messages (one publish, or one system call,
//     per burst) as fast as it can, and this process drains up to 32 per call, checking a sequence
//     number in every message so that a lost message fails the run instead of inflating the figure;
//   - the doorbell: the channel saturated with adaptive waiting on, counting futex system calls
//     per message. The design promises none while there is work.
// At the end a table sets the medians against the channel's design targets.

#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <new>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "dataplane/channel.hpp"
#include "dataplane/clock.hpp"
#include "dataplane/counters.hpp"
#include "dataplane/cpu.hpp"
#include "dataplane/doorbell.hpp"
#include "dataplane/idle_waiter.hpp"
#include "dataplane/message.hpp"
#include "dataplane/result.hpp"
#include "dataplane/shared_region.hpp"
#include "dataplane/unique_fd.hpp"
#include "perf/cpu_ticks.hpp"

namespace flotilla::bench {
namespace {

// ---------------------------------------------------------------------------------------------
// Parameters

// 1024 slots = 64 KiB per direction, the same as a default pipe buffer, and small enough for L2.
constexpr std::uint32_t kRingCapacity = 1024;
constexpr std::size_t kMaxBurst = 32;
constexpr std::array<std::size_t, 3> kBursts{1, 8, 32};
constexpr int kRepetitions = 3;
constexpr auto kPeerTimeout = std::chrono::seconds(5);
constexpr auto kMaxSleep = std::chrono::milliseconds(10);
constexpr double kBusyMachine = 0.05;  // share of CPU time used by others that calls for a warning

// Minimum length of one repetition. Google Benchmark sizes the iteration count in the first
// repetition and reuses it for the others; the links differ in speed by a factor of 100, so a
// time keeps every run long enough to ride out a steal stall and the whole program at about 40 s.
constexpr double kSecondsPerRepetition = 0.3;

// A pipe write of up to PIPE_BUF bytes is atomic, so a burst never arrives torn.
static_assert(kMaxBurst * sizeof(Message) <= PIPE_BUF);

enum class Transport { cache_line, channel, pipe, pipe_per_message, eventfd, unix_dgram };

std::string transport_name(Transport transport) {
  switch (transport) {
    case Transport::cache_line: return "cache_line";
    case Transport::channel: return "channel";
    case Transport::pipe: return "pipe";
    case Transport::pipe_per_message: return "pipe_per_msg";
    case Transport::eventfd: return "eventfd";
    case Transport::unix_dgram: return "unix_dgram";
  }
  return "unknown";
}

// Benchmark names; the ratio table finds its figures by these.
std::string latency_name(Transport transport) { return "latency/" + transport_name(transport); }
std::string throughput_name(Transport transport, std::size_t burst) {
  return "throughput/" + transport_name(transport) + "/burst:" + std::to_string(burst);
}
std::string saturated_name(std::size_t burst) {
  return "saturated/channel_doorbell/burst:" + std::to_string(burst);
}

// ---------------------------------------------------------------------------------------------
// Process placement, failures, and the peer process

struct Placement {
  bool pinned = false;
  int main_core = -1;
  int peer_core = -1;
};
Placement g_placement;

using Failure = std::optional<std::string>;

// A run whose figures cannot be trusted: setup failed, a message went missing, the peer died.
// Thrown anywhere in a benchmark and caught at its edge once unwinding has killed and reaped the
// peer; the program then stops with a non-zero status. (Not SkipWithError: Google Benchmark 1.7.1
// crashes computing the statistics of repetitions when one of them was skipped.)
struct RunFailure {
  std::string why;
};

[[noreturn]] void fail(std::string why) { throw RunFailure{std::move(why)}; }

void check(const Failure& failure) {
  if (failure) fail(*failure);
}

void check(const Status& status, const char* what) {
  if (!status) fail(std::string(what) + ": " + status.error().message());
}

template <class T>
T& check(Result<T>& result, const char* what) {
  if (!result) fail(std::string(what) + ": " + result.error().message());
  return result.value();
}

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

// Set by SIGCHLD. The handler is installed without SA_RESTART, so a blocking call in this process
// returns EINTR when the peer dies, and spin loops poll the flag: a peer that dies mid-run fails
// the run instead of hanging it. Should it die between a check and a blocking call, the Watchdog
// below interrupts that call soon after.
std::atomic<bool> g_peer_exited{false};
static_assert(std::atomic<bool>::is_always_lock_free, "written by a signal handler");

void note_peer_exit(int) { g_peer_exited.store(true, std::memory_order_relaxed); }
bool peer_gone() { return g_peer_exited.load(std::memory_order_relaxed); }

void interrupt_blocking_call(int) {}

// While armed, interrupts this process every 100 ms (SIGALRM, no SA_RESTART) so that a blocking
// call returns EINTR and its loop looks at g_peer_exited again. Armed only around the timed loops
// of links that block in system calls; the rest poll the flag anyway.
class Watchdog {
 public:
  explicit Watchdog(bool arm) {
    if (arm) set(std::chrono::milliseconds(100));
    armed_ = arm;
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  ~Watchdog() { disarm(); }

  void disarm() {
    if (armed_) set(std::chrono::milliseconds(0));
    armed_ = false;
  }

 private:
  static void set(std::chrono::milliseconds period) {
    const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(period).count();
    const timeval interval{static_cast<time_t>(micros / 1'000'000),
                           static_cast<suseconds_t>(micros % 1'000'000)};
    const itimerval timer{interval, interval};
    ::setitimer(ITIMER_REAL, &timer, nullptr);
  }

  bool armed_ = false;
};

// The first cache lines of the shared region: how the two processes coordinate outside the timed
// loop. `peer_state` is written only by the peer, `go` and `stop` only by this process.
struct alignas(kCacheLine) PeerControl {
  enum State : std::uint32_t { starting = 0, ready = 1, failed = 2 };
  std::atomic<std::uint32_t> peer_state{starting};
  alignas(kCacheLine) std::atomic<std::uint32_t> go{0};
  std::atomic<std::uint32_t> stop{0};

  bool stopping() const { return stop.load(std::memory_order_relaxed) != 0; }
};

// Two counters on separate cache lines: the raw ping-pong that gives the floor.
struct alignas(kCacheLine) CacheLinePair {
  std::atomic<std::uint64_t> ping{0};
  alignas(kCacheLine) std::atomic<std::uint64_t> pong{0};
};

// Everything one run keeps in shared memory; the channel's rings follow it.
struct SharedState {
  PeerControl control;
  CounterBlock main_counters;
  CounterBlock peer_counters;
  Doorbell main_bell;
  Doorbell peer_bell;
  CacheLinePair lines;
};
static_assert(sizeof(SharedState) % kCacheLine == 0, "the rings after it must stay aligned");

class SharedSetup {
 public:
  static Result<SharedSetup> create() {
    auto region = SharedRegion::create("flotilla-channel-bench",
                                       sizeof(SharedState) + channel_bytes(kRingCapacity));
    if (!region) return region.error();
    auto* state = new (region->data()) SharedState{};
    SharedSetup setup(std::move(region).value(), state);
    if (auto status = format_channel(setup.channel_memory(), kRingCapacity); !status) {
      return status.error();
    }
    return setup;
  }

  SharedState& state() const { return *state_; }
  std::span<std::byte> channel_memory() const {
    return region_.bytes().subspan(sizeof(SharedState), channel_bytes(kRingCapacity));
  }

 private:
  SharedSetup(SharedRegion region, SharedState* state)
      : region_(std::move(region)), state_(state) {}

  SharedRegion region_;
  SharedState* state_;
};

// The other process of one run. Forked before the timed loop; the destructor kills and reaps it
// if it has not exited, so no early return leaves a peer spinning on a core.
class Peer {
 public:
  Peer() = default;
  Peer(const Peer&) = delete;
  Peer& operator=(const Peer&) = delete;
  ~Peer() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
    }
  }

  // Forks. The child pins itself to the peer core, runs `body` and exits with its result.
  template <class Body>
  Failure start(Body&& body) {
    g_peer_exited.store(false, std::memory_order_relaxed);
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) return errno_text("fork");
    if (pid == 0) run_child(parent, body);
    pid_ = pid;
    return std::nullopt;
  }

  pid_t pid() const { return pid_; }

  // Waits until the peer has finished its own setup.
  Failure wait_ready(const PeerControl& control) {
    const auto deadline = MonoClock::now() + kPeerTimeout;
    for (;;) {
      const auto state = control.peer_state.load(std::memory_order_acquire);
      if (state == PeerControl::ready) return std::nullopt;
      if (state == PeerControl::failed) return "peer failed to set up (its message is above)";
      if (auto status = try_reap()) {
        return "peer exited before it was ready: " + describe_exit(*status).value_or("status 0");
      }
      if (MonoClock::now() > deadline) return "peer not ready in time";
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }

  // After the peer was told to stop: waits for it; anything but a clean exit is a failure.
  Failure finish() {
    const auto deadline = MonoClock::now() + kPeerTimeout;
    while (pid_ > 0) {
      if (auto status = try_reap()) return describe_exit(*status);
      if (MonoClock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        return "peer did not stop in time and was killed";  // the destructor reaps it
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return std::nullopt;
  }

 private:
  template <class Body>
  [[noreturn]] static void run_child(pid_t parent, Body& body) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // a peer must never outlive the benchmark
    if (::getppid() != parent) ::_exit(3);
    int code = 1;
    try {
      if (g_placement.pinned) {
        if (auto pinned = pin_to_core(g_placement.peer_core); !pinned) {
          std::fprintf(stderr, "channel-bench peer: %s\n", pinned.error().message().c_str());
          ::_exit(1);
        }
      }
      code = body();
    } catch (const std::exception& error) {
      std::fprintf(stderr, "channel-bench peer: %s\n", error.what());
    } catch (...) {
      std::fprintf(stderr, "channel-bench peer: unknown exception\n");
    }
    ::_exit(code);  // never back into the benchmark library's code in the child
  }

  std::optional<int> try_reap() {
    int status = 0;
    const pid_t reaped = ::waitpid(pid_, &status, WNOHANG);
    if (reaped == pid_) {
      pid_ = -1;
      return status;
    }
    if (reaped < 0 && errno == ECHILD) {  // someone else reaped it: report it as a failure
      pid_ = -1;
      return W_EXITCODE(255, 0);
    }
    return std::nullopt;
  }

  static Failure describe_exit(int status) {
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return std::nullopt;
    if (WIFEXITED(status)) {
      return "peer exited with status " + std::to_string(WEXITSTATUS(status)) +
             " (its message is above)";
    }
    if (WIFSIGNALED(status)) return std::string("peer killed by ") + ::strsignal(WTERMSIG(status));
    return "peer ended with wait status " + std::to_string(status);
  }

  pid_t pid_ = -1;
};

int peer_error(const char* what, const Error& error) {
  std::fprintf(stderr, "channel-bench peer: %s: %s\n", what, error.message().c_str());
  return 1;
}

// CPU time the hypervisor gave to other guests, in ms since boot (0 if the kernel does not say).
double stolen_ms() {
  return static_cast<double>(CpuTicks::read().ticks[CpuTicks::steal]) * 1000.0 /
         static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// Times the scheduler took the CPU away from a process that still wanted it.
std::uint64_t involuntary_switches(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  constexpr std::string_view kKey = "nonvoluntary_ctxt_switches:";
  for (std::string line; std::getline(status, line);) {
    if (line.starts_with(kKey)) return std::stoull(line.substr(kKey.size()));
  }
  return 0;
}

// Interrupts of every kind (timer ticks, IPIs, devices) a core has taken since boot; 0 when
// /proc/interrupts does not list it.
std::uint64_t interrupts_on(int core) {
  std::ifstream file("/proc/interrupts");
  std::string header;
  std::getline(file, header);
  std::istringstream names(header);
  std::vector<std::string> cpus;
  for (std::string name; names >> name;) cpus.push_back(name);
  const auto match = std::find(cpus.begin(), cpus.end(), "CPU" + std::to_string(core));
  if (match == cpus.end()) return 0;
  const auto column = static_cast<std::size_t>(match - cpus.begin());
  std::uint64_t total = 0;
  for (std::string line; std::getline(file, line);) {
    std::istringstream fields(line);
    std::string label;
    fields >> label;
    std::uint64_t count = 0;
    std::size_t read = 0;
    while (read <= column && fields >> count) ++read;
    if (read == column + 1) total += count;  // lines such as "ERR: 0" have no per-core columns
  }
  return total;
}

// How much the machine got in the way of a timed loop: steal time, preemptions of either process,
// and interrupts on the peer's core (each one stalls the peer for a few microseconds in a VM). On a
// shared host these explain outliers, so every run reports them.
class Interference {
 public:
  explicit Interference(pid_t peer)
      : peer_(peer),
        steal_start_ms_(stolen_ms()),
        preemptions_start_(preemptions()),
        peer_irqs_start_(peer_irqs()) {}

  // Call right after the loop, while the peer still runs.
  void stop() {
    steal_ms_ = stolen_ms() - steal_start_ms_;
    preemptions_ = preemptions() - preemptions_start_;
    peer_irqs_ = peer_irqs() - peer_irqs_start_;
  }

  void report(benchmark::State& state) const {
    state.counters["steal_ms"] = steal_ms_;
    state.counters["preemptions"] = static_cast<double>(preemptions_);
    if (g_placement.pinned) state.counters["peer_core_irqs"] = static_cast<double>(peer_irqs_);
  }

 private:
  std::uint64_t preemptions() const {
    return involuntary_switches(::getpid()) + involuntary_switches(peer_);
  }
  static std::uint64_t peer_irqs() {
    return g_placement.pinned ? interrupts_on(g_placement.peer_core) : 0;
  }

  pid_t peer_;
  double steal_start_ms_;
  std::uint64_t preemptions_start_;
  std::uint64_t peer_irqs_start_;
  double steal_ms_ = 0;
  std::uint64_t preemptions_ = 0;
  std::uint64_t peer_irqs_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Messages

struct NumberedBody {
  std::uint64_t sequence;
};

Message numbered(std::uint64_t sequence) {
  return Message::make(MessageKind::data, NumberedBody{sequence});
}

// Describes the first message that does not carry the next number, if any.
Failure check_sequence(std::span<const Message> messages, std::uint64_t expected) {
  for (const Message& message : messages) {
    const std::uint64_t got = message.read<NumberedBody>().sequence;
    if (message.kind != MessageKind::data || got != expected) {
      return "LOST, DUPLICATED OR REORDERED MESSAGE: expected #" + std::to_string(expected) +
             ", received #" + std::to_string(got);
    }
    ++expected;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Links: one way of moving messages between the two processes.
//
// Each is built before the fork (so both processes inherit its memory and descriptors); after the
// fork each process calls keep(side). Then:
//   send_some(messages)          sends a prefix, returns how many (0: no room yet);
//   receive_some(out, give_up)   waits for at least one message, giving up (returning 0) when
//                                give_up() says so; this process polls for a dead peer with it,
//                                the peer for the stop flag;
//   release_peer()               after `stop` is set, wakes a peer blocked in a system call.

enum class Side { main, peer };

// The Flotilla channel. Busy-polled, or with the runtime's adaptive waiting: this process then
// sleeps through an IdleWaiter on its doorbell, which the peer rings after each send.
enum class Waiting { busy_poll, doorbell };

template <Waiting kWaiting>
class ChannelLink {
 public:
  static constexpr bool kAdaptiveWaiting = kWaiting == Waiting::doorbell;
  static constexpr bool kBlocks = false;  // spins, or sleeps for at most kMaxSleep

  static Result<ChannelLink> open(SharedSetup& shared) { return ChannelLink(shared); }

  Status keep(Side side) {
    SharedState& state = shared_->state();
    CounterBlock& counters = side == Side::main ? state.main_counters : state.peer_counters;
    Doorbell* other_bell = nullptr;
    if (kAdaptiveWaiting) other_bell = side == Side::main ? &state.peer_bell : &state.main_bell;
    auto end = attach_channel(shared_->channel_memory(), kRingCapacity,
                              side == Side::main ? ChannelSide::a : ChannelSide::b, 1, other_bell,
                              &counters);
    if (!end) return end.error();
    end_ = std::move(end).value();
    if (kAdaptiveWaiting && side == Side::main) {
      waiter_.emplace(state.main_bell, counters, WaitPolicy::dedicated_core());
    }
    return {};
  }

  Result<std::size_t> send_some(std::span<const Message> messages) {
    return end_.out.send_burst(messages);
  }

  template <class GiveUp>
  Result<std::size_t> receive_some(std::span<Message> out, GiveUp&& give_up) {
    for (;;) {
      auto received = end_.in.recv_burst(out);
      if (!received) return received;
      if (!waiter_) {
        if (received.value() > 0 || give_up()) return received;
        cpu_relax();
        continue;
      }
      const std::uint64_t now = monotonic_ns();
      if (received.value() > 0) {
        waiter_->on_work(now);
        return received;
      }
      if (give_up()) return received;
      waiter_->on_idle(now, [this] { return end_.in.has_input(); }, kMaxSleep);
    }
  }

  void release_peer() {}

 private:
  explicit ChannelLink(SharedSetup& shared) : shared_(&shared) {}

  SharedSetup* shared_;
  ChannelEnd end_;
  std::optional<IdleWaiter> waiter_;
};

using BusyChannelLink = ChannelLink<Waiting::busy_poll>;
using DoorbellChannelLink = ChannelLink<Waiting::doorbell>;

// The classic microkernel notify: messages go through the same shared rings, but the sender always
// write()s the receiver's eventfd after a send, and a receiver that finds its ring empty blocks in
// read() on its eventfd. One system call per burst on each side.
class EventfdLink {
 public:
  static constexpr bool kAdaptiveWaiting = false;
  static constexpr bool kBlocks = true;

  static Result<EventfdLink> open(SharedSetup& shared) {
    UniqueFd main_fd(::eventfd(0, EFD_CLOEXEC));
    UniqueFd peer_fd(::eventfd(0, EFD_CLOEXEC));
    if (!main_fd.valid() || !peer_fd.valid()) return Error::from_errno("eventfd");
    return EventfdLink(shared, std::move(main_fd), std::move(peer_fd));
  }

  Status keep(Side side) {
    SharedState& state = shared_->state();
    auto end = attach_channel(shared_->channel_memory(), kRingCapacity,
                              side == Side::main ? ChannelSide::a : ChannelSide::b, 1, nullptr,
                              side == Side::main ? &state.main_counters : &state.peer_counters);
    if (!end) return end.error();
    end_ = std::move(end).value();
    own_fd_ = side == Side::main ? main_fd_.get() : peer_fd_.get();
    other_fd_ = side == Side::main ? peer_fd_.get() : main_fd_.get();
    return {};
  }

  Result<std::size_t> send_some(std::span<const Message> messages) {
    auto sent = end_.out.send_burst(messages);
    if (!sent || sent.value() == 0) return sent;
    if (auto notified = notify(other_fd_); !notified) return notified.error();
    return sent;
  }

  template <class GiveUp>
  Result<std::size_t> receive_some(std::span<Message> out, GiveUp&& give_up) {
    for (;;) {
      auto received = end_.in.recv_burst(out);
      if (!received || received.value() > 0 || give_up()) return received;
      std::uint64_t notifications = 0;
      if (::read(own_fd_, &notifications, sizeof notifications) < 0 && errno != EINTR) {
        return Error::from_errno("eventfd read");
      }
    }
  }

  void release_peer() { (void)notify(peer_fd_.get()); }

 private:
  EventfdLink(SharedSetup& shared, UniqueFd main_fd, UniqueFd peer_fd)
      : shared_(&shared), main_fd_(std::move(main_fd)), peer_fd_(std::move(peer_fd)) {}

  static Status notify(int fd) {
    const std::uint64_t one = 1;
    if (::write(fd, &one, sizeof one) != static_cast<ssize_t>(sizeof one)) {
      return Error::from_errno("eventfd write");
    }
    return {};
  }

  SharedSetup* shared_;
  UniqueFd main_fd_;  // this process sleeps on it
  UniqueFd peer_fd_;  // the peer sleeps on it
  int own_fd_ = -1;
  int other_fd_ = -1;
  ChannelEnd end_;
};

// Two pipes, 64-byte messages. Batched, a burst is one write() of N * 64 bytes; one message per
// call, every message is its own write() and read(), as each send is its own call in microkernel
// IPC (the design this runtime replaces).
template <bool kOneMessagePerCall>
class PipeLinkOf {
 public:
  static constexpr bool kAdaptiveWaiting = false;
  static constexpr bool kBlocks = true;

  static Result<PipeLinkOf> open(SharedSetup&) {
    int to_peer[2];
    int to_main[2];
    if (::pipe2(to_peer, O_CLOEXEC) != 0) return Error::from_errno("pipe2");
    if (::pipe2(to_main, O_CLOEXEC) != 0) {
      const Error error = Error::from_errno("pipe2");
      ::close(to_peer[0]);
      ::close(to_peer[1]);
      return error;
    }
    PipeLinkOf link;
    link.to_peer_read_.reset(to_peer[0]);
    link.to_peer_write_.reset(to_peer[1]);
    link.to_main_read_.reset(to_main[0]);
    link.to_main_write_.reset(to_main[1]);
    return link;
  }

  // Closing the other side's ends is what lets a reader see end-of-file when the writer goes.
  Status keep(Side side) {
    if (side == Side::main) {
      to_peer_read_.reset();
      to_main_write_.reset();
      send_fd_ = to_peer_write_.get();
      receive_fd_ = to_main_read_.get();
    } else {
      to_peer_write_.reset();
      to_main_read_.reset();
      send_fd_ = to_main_write_.get();
      receive_fd_ = to_peer_read_.get();
    }
    return {};
  }

  Result<std::size_t> send_some(std::span<const Message> messages) {
    if constexpr (kOneMessagePerCall) messages = messages.first(std::min<std::size_t>(1, messages.size()));
    const std::size_t bytes = messages.size_bytes();
    const ssize_t written = ::write(send_fd_, messages.data(), bytes);
    if (written == static_cast<ssize_t>(bytes)) return messages.size();
    if (written < 0 && errno == EINTR) return std::size_t{0};
    if (written < 0) return Error::from_errno("pipe write");
    return Error{Errc::truncated, 0, "pipe write was not atomic"};
  }

  template <class GiveUp>
  Result<std::size_t> receive_some(std::span<Message> out, GiveUp&& give_up) {
    if constexpr (kOneMessagePerCall) out = out.first(std::min<std::size_t>(1, out.size()));
    auto* bytes = reinterpret_cast<std::byte*>(out.data());
    std::size_t filled = 0;
    for (;;) {
      const ssize_t got = ::read(receive_fd_, bytes + filled, out.size_bytes() - filled);
      if (got > 0) {
        filled += static_cast<std::size_t>(got);
        // Reads ask for whole messages but may return less; never return half of one.
        if (filled % sizeof(Message) == 0) return filled / sizeof(Message);
        continue;
      }
      if (got == 0) return Error{Errc::closed, 0, "pipe read"};
      if (errno != EINTR) return Error::from_errno("pipe read");
      if (filled == 0 && give_up()) return std::size_t{0};
    }
  }

  void release_peer() {
    to_peer_write_.reset();  // a peer blocked in read() sees end-of-file
    to_main_read_.reset();   // a peer blocked in write() gets EPIPE
  }

 private:
  UniqueFd to_peer_read_;
  UniqueFd to_peer_write_;
  UniqueFd to_main_read_;
  UniqueFd to_main_write_;
  int send_fd_ = -1;
  int receive_fd_ = -1;
};

using PipeLink = PipeLinkOf<false>;
using PipePerMessageLink = PipeLinkOf<true>;

// An AF_UNIX datagram socket pair, one 64-byte datagram per message; a burst is one sendmmsg(),
// received with recvmmsg().
class UnixDgramLink {
 public:
  static constexpr bool kAdaptiveWaiting = false;
  static constexpr bool kBlocks = true;

  static Result<UnixDgramLink> open(SharedSetup&) {
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, pair) != 0) {
      return Error::from_errno("socketpair");
    }
    UnixDgramLink link;
    link.main_socket_.reset(pair[0]);
    link.peer_socket_.reset(pair[1]);
    return link;
  }

  Status keep(Side side) {
    (side == Side::main ? peer_socket_ : main_socket_).reset();
    socket_ = (side == Side::main ? main_socket_ : peer_socket_).get();
    return {};
  }

  Result<std::size_t> send_some(std::span<const Message> messages) {
    const std::size_t count = std::min(messages.size(), kMaxBurst);
    for (std::size_t i = 0; i < count; ++i) {
      point_at(i, const_cast<Message*>(&messages[i]));
    }
    const int sent = ::sendmmsg(socket_, headers_.data(), static_cast<unsigned>(count), 0);
    if (sent >= 0) return static_cast<std::size_t>(sent);
    if (errno == EINTR) return std::size_t{0};
    return Error::from_errno("sendmmsg");
  }

  template <class GiveUp>
  Result<std::size_t> receive_some(std::span<Message> out, GiveUp&& give_up) {
    const std::size_t count = std::min(out.size(), kMaxBurst);
    for (std::size_t i = 0; i < count; ++i) point_at(i, &out[i]);
    for (;;) {
      if (give_up()) return std::size_t{0};
      const int got =
          ::recvmmsg(socket_, headers_.data(), static_cast<unsigned>(count), MSG_WAITFORONE, nullptr);
      if (got > 0) {
        for (int i = 0; i < got; ++i) {
          if (headers_[static_cast<std::size_t>(i)].msg_len != sizeof(Message)) {
            return Error{Errc::truncated, 0, "datagram is not one message"};
          }
        }
        return static_cast<std::size_t>(got);
      }
      if (got < 0 && errno != EINTR) return Error::from_errno("recvmmsg");
    }
  }

  // A blocked receiver needs a datagram; a sender blocked on a full queue wakes when we close.
  void release_peer() {
    const Message wake = numbered(0);
    (void)::send(main_socket_.get(), &wake, sizeof wake, MSG_DONTWAIT);
    main_socket_.reset();
  }

 private:
  void point_at(std::size_t i, Message* message) {
    vectors_[i] = iovec{message, sizeof(Message)};
    headers_[i] = mmsghdr{};
    headers_[i].msg_hdr.msg_iov = &vectors_[i];
    headers_[i].msg_hdr.msg_iovlen = 1;
  }

  UniqueFd main_socket_;
  UniqueFd peer_socket_;
  int socket_ = -1;
  std::array<iovec, kMaxBurst> vectors_{};
  std::array<mmsghdr, kMaxBurst> headers_{};
};

// Sends every message, retrying while the link is full.
template <class Link, class GiveUp>
Status send_all(Link& link, std::span<const Message> messages, GiveUp&& give_up) {
  while (!messages.empty()) {
    auto sent = link.send_some(messages);
    if (!sent) return sent.error();
    messages = messages.subspan(sent.value());
    if (!messages.empty() && give_up()) return Error{Errc::closed, 0, "send"};
  }
  return {};
}

// Fills `out` completely.
template <class Link, class GiveUp>
Status receive_exactly(Link& link, std::span<Message> out, GiveUp&& give_up) {
  while (!out.empty()) {
    auto received = link.receive_some(out, give_up);
    if (!received) return received.error();
    if (received.value() == 0) return Error{Errc::closed, 0, "receive"};
    out = out.subspan(received.value());
  }
  return {};
}

// What went wrong on this side of a link: a dead peer explains most errors, so say so first.
std::string main_side_failure(const Error& error) {
  if (peer_gone()) return "peer exited unexpectedly (" + error.message() + ")";
  return error.message();
}

// ---------------------------------------------------------------------------------------------
// Peer programs

// Finishes the link's setup in the peer, reports readiness, then runs `work`.
template <class Link, class Work>
int run_peer(Link& link, PeerControl& control, Work&& work) {
  if (auto kept = link.keep(Side::peer); !kept) {
    control.peer_state.store(PeerControl::failed, std::memory_order_release);
    return peer_error("attach", kept.error());
  }
  control.peer_state.store(PeerControl::ready, std::memory_order_release);
  return work();
}

// Ping-pong partner: sends every message straight back until told to stop.
template <class Link>
int echo_until_stopped(Link& link, const PeerControl& control) {
  const auto stopping = [&control] { return control.stopping(); };
  std::array<Message, 1> box;
  for (;;) {
    auto received = link.receive_some(box, stopping);
    if (stopping()) return 0;
    if (!received) return peer_error("receive", received.error());
    const std::span<const Message> reply(box.data(), received.value());
    if (auto sent = send_all(link, reply, stopping); !sent) {
      if (stopping()) return 0;
      return peer_error("send", sent.error());
    }
  }
}

// Throughput source: numbered messages in bursts of `burst`, as fast as the link takes them.
template <class Link>
int produce_until_stopped(Link& link, const PeerControl& control, std::size_t burst) {
  std::array<Message, kMaxBurst> batch;
  while (control.go.load(std::memory_order_acquire) == 0) {
    if (control.stopping()) return 0;
    cpu_relax();
  }
  std::uint64_t next = 0;
  while (!control.stopping()) {
    for (std::size_t i = 0; i < burst; ++i) batch[i] = numbered(next + i);
    auto sent = link.send_some(std::span<const Message>(batch.data(), burst));
    if (!sent) {
      if (control.stopping()) return 0;
      return peer_error("send", sent.error());
    }
    next += sent.value();  // unsent messages go again, with the same numbers
    if (sent.value() == 0) cpu_relax();
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Benchmarks

// Tells the peer to stop and waits for it to exit.
Failure stop_peer(Peer& peer, PeerControl& control) {
  control.stop.store(1, std::memory_order_release);
  return peer.finish();
}

// The same, first waking a peer that is blocked in a system call on the link.
template <class Link>
Failure stop_peer(Peer& peer, PeerControl& control, Link& link) {
  control.stop.store(1, std::memory_order_release);
  link.release_peer();
  return peer.finish();
}

// A failure in the loop, plus what the peer's exit says about it.
Failure combine(Failure failure, Failure peer_exit) {
  if (!failure) return peer_exit;
  if (peer_exit) return *failure + "; " + *peer_exit;
  return failure;
}

// The floor: one cache line written here and read there, another written there and read here.
void measure_cache_line_floor(benchmark::State& state) {
  auto shared = SharedSetup::create();
  SharedState& shm = check(shared, "shared memory").state();
  Peer peer;
  const auto bounce = [&shm] {
    shm.control.peer_state.store(PeerControl::ready, std::memory_order_release);
    std::uint64_t seen = 0;
    for (;;) {
      const std::uint64_t ping = shm.lines.ping.load(std::memory_order_acquire);
      if (ping != seen) {
        seen = ping;
        shm.lines.pong.store(ping, std::memory_order_release);
      } else if (shm.control.stopping()) {
        return 0;
      } else {
        cpu_relax();
      }
    }
  };
  check(peer.start(bounce));
  check(peer.wait_ready(shm.control));

  std::uint64_t round = 0;
  Failure failure;
  Interference interference(peer.pid());
  const std::uint64_t start_ns = monotonic_ns();
  for (auto _ : state) {
    ++round;
    shm.lines.ping.store(round, std::memory_order_release);
    while (shm.lines.pong.load(std::memory_order_acquire) != round) {
      if (peer_gone()) break;
      cpu_relax();
    }
    if (peer_gone()) {
      failure = "peer exited unexpectedly";
      break;
    }
  }
  const std::uint64_t elapsed_ns = monotonic_ns() - start_ns;
  interference.stop();
  check(combine(failure, stop_peer(peer, shm.control)));
  state.counters["one_way_ns"] = static_cast<double>(elapsed_ns) / (2.0 * static_cast<double>(round));
  interference.report(state);
}

template <class Link>
void measure_latency(benchmark::State& state) {
  auto shared = SharedSetup::create();
  SharedState& shm = check(shared, "shared memory").state();
  auto opened = Link::open(*shared);
  Link& link = check(opened, "open link");
  Peer peer;
  const auto echo = [&] {
    return run_peer(link, shm.control, [&] { return echo_until_stopped(link, shm.control); });
  };
  check(peer.start(echo));
  check(link.keep(Side::main), "attach");
  check(peer.wait_ready(shm.control));

  std::array<Message, 1> ping;
  std::array<Message, 1> pong;
  std::uint64_t round = 0;
  Failure failure;
  Interference interference(peer.pid());
  Watchdog watchdog(Link::kBlocks);
  const std::uint64_t start_ns = monotonic_ns();
  for (auto _ : state) {
    ping[0] = numbered(round);
    if (auto sent = send_all(link, ping, peer_gone); !sent) {
      failure = main_side_failure(sent.error());
      break;
    }
    if (auto received = receive_exactly(link, pong, peer_gone); !received) {
      failure = main_side_failure(received.error());
      break;
    }
    if ((failure = check_sequence(pong, round))) break;
    ++round;
  }
  const std::uint64_t elapsed_ns = monotonic_ns() - start_ns;
  watchdog.disarm();
  interference.stop();
  check(combine(failure, stop_peer(peer, shm.control, link)));
  state.counters["one_way_ns"] = static_cast<double>(elapsed_ns) / (2.0 * static_cast<double>(round));
  interference.report(state);
}

// System calls the doorbell made: wake-ups by the producer, waits by the consumer.
struct DoorbellCalls {
  std::uint64_t wakes = 0;
  std::uint64_t waits = 0;
  std::uint64_t sleeps = 0;

  static DoorbellCalls read(const SharedState& shm) {
    return {shm.peer_counters.read(Counter::futex_wakes),
            shm.main_counters.read(Counter::futex_waits), shm.main_counters.read(Counter::sleeps)};
  }
};

template <class Link>
void measure_throughput(benchmark::State& state, std::size_t burst) {
  auto shared = SharedSetup::create();
  SharedState& shm = check(shared, "shared memory").state();
  auto opened = Link::open(*shared);
  Link& link = check(opened, "open link");
  Peer peer;
  const auto produce = [&] {
    return run_peer(link, shm.control,
                    [&] { return produce_until_stopped(link, shm.control, burst); });
  };
  check(peer.start(produce));
  check(link.keep(Side::main), "attach");
  check(peer.wait_ready(shm.control));

  // Like a component loop, this side drains up to kMaxBurst messages per call whatever the burst
  // size; an iteration is `burst` messages delivered, and only messages received here, in order,
  // count.
  std::array<Message, kMaxBurst> inbox;
  std::uint64_t delivered = 0;
  std::uint64_t uncounted = 0;  // delivered but not yet consumed by an iteration
  Failure failure;
  const DoorbellCalls before = DoorbellCalls::read(shm);
  Interference interference(peer.pid());
  Watchdog watchdog(Link::kBlocks);
  shm.control.go.store(1, std::memory_order_release);
  for (auto _ : state) {
    while (uncounted < burst && !failure) {
      auto received = link.receive_some(inbox, peer_gone);
      if (!received || received.value() == 0) {
        failure = main_side_failure(received ? Error{Errc::closed, 0, "receive"} : received.error());
        break;
      }
      const std::span<const Message> arrived(inbox.data(), received.value());
      failure = check_sequence(arrived, delivered);
      delivered += arrived.size();
      uncounted += arrived.size();
    }
    if (failure) break;
    uncounted -= burst;
  }
  const DoorbellCalls after = DoorbellCalls::read(shm);
  watchdog.disarm();
  interference.stop();
  check(combine(failure, stop_peer(peer, shm.control, link)));
  state.SetItemsProcessed(static_cast<std::int64_t>(delivered));
  if constexpr (Link::kAdaptiveWaiting) {
    const auto messages = static_cast<double>(std::max<std::uint64_t>(delivered, 1));
    const auto wakes = static_cast<double>(after.wakes - before.wakes);
    const auto waits = static_cast<double>(after.waits - before.waits);
    state.counters["futex_wakes"] = wakes;
    state.counters["futex_waits"] = waits;
    state.counters["sleeps"] = static_cast<double>(after.sleeps - before.sleeps);
    state.counters["futex_wakes_per_msg"] = wakes / messages;
    state.counters["futex_waits_per_msg"] = waits / messages;
    state.counters["futex_calls_per_msg"] = (wakes + waits) / messages;
  }
  interference.report(state);
}

// Stops the program after a failed run: its figures, and any table built on them, would be wrong.
[[noreturn]] void abandon(const std::string& benchmark, const std::string& why) {
  std::cout.flush();
  std::fflush(stdout);
  std::fprintf(stderr,
               "\nchannel-bench: FAILED in %s: %s\n"
               "channel-bench: stopping; the results of this run cannot be trusted.\n",
               benchmark.c_str(), why.c_str());
  std::fflush(stderr);
  std::_Exit(1);  // not exit(): we are inside the benchmark library, which must not unwind
}

void register_benchmarks() {
  const auto add = [](const std::string& name, std::function<void(benchmark::State&)> run) {
    const auto guarded = [name, run](benchmark::State& state) {
      try {
        run(state);
      } catch (const RunFailure& failure) {
        abandon(name, failure.why);
      } catch (const std::exception& error) {
        abandon(name, error.what());
      }
    };
    benchmark::RegisterBenchmark(name.c_str(), guarded)
        ->MinTime(kSecondsPerRepetition)
        ->Repetitions(kRepetitions)
        ->UseRealTime()
        ->DisplayAggregatesOnly();
  };

  add(latency_name(Transport::cache_line), measure_cache_line_floor);
  add(latency_name(Transport::channel), measure_latency<BusyChannelLink>);
  add(latency_name(Transport::pipe), measure_latency<PipeLink>);
  add(latency_name(Transport::eventfd), measure_latency<EventfdLink>);
  add(latency_name(Transport::unix_dgram), measure_latency<UnixDgramLink>);

  for (const std::size_t burst : kBursts) {
    const auto with_burst = [burst](auto measure) {
      return [burst, measure](benchmark::State& state) { measure(state, burst); };
    };
    add(throughput_name(Transport::channel, burst), with_burst(measure_throughput<BusyChannelLink>));
    add(throughput_name(Transport::pipe, burst), with_burst(measure_throughput<PipeLink>));
    add(throughput_name(Transport::pipe_per_message, burst),
        with_burst(measure_throughput<PipePerMessageLink>));
    add(throughput_name(Transport::eventfd, burst), with_burst(measure_throughput<EventfdLink>));
    add(throughput_name(Transport::unix_dgram, burst),
        with_burst(measure_throughput<UnixDgramLink>));
    add(saturated_name(burst), with_burst(measure_throughput<DoorbellChannelLink>));
  }
}

// ---------------------------------------------------------------------------------------------
// Reporting

// Passes everything on to the usual display reporter and keeps each benchmark's median counters
// (or its only run's, with a single repetition) for the ratio table.
class MedianCollector : public benchmark::BenchmarkReporter {
 public:
  explicit MedianCollector(benchmark::BenchmarkReporter& display) : display_(display) {}

  bool ReportContext(const Context& context) override { return display_.ReportContext(context); }

  void ReportRuns(const std::vector<Run>& runs) override {
    display_.ReportRuns(runs);
    for (const Run& run : runs) record(run);
  }

  void Finalize() override { display_.Finalize(); }

  std::optional<double> median(const std::string& benchmark, const std::string& counter) const {
    const auto result = results_.find(benchmark);
    if (result == results_.end()) return std::nullopt;
    const auto value = result->second.find(counter);
    if (value == result->second.end()) return std::nullopt;
    return value->second.value;
  }

  bool empty() const { return results_.empty(); }
  std::vector<std::string> names() const {
    std::vector<std::string> names;
    for (const auto& [name, counters] : results_) names.push_back(name);
    return names;
  }
  std::int64_t repetitions() const { return repetitions_; }
  bool saw_errors() const { return saw_errors_; }

 private:
  void record(const Run& run) {
    if (run.error_occurred) {
      saw_errors_ = true;
      return;
    }
    const bool median = run.run_type == Run::RT_Aggregate && run.aggregate_name == "median";
    const bool only_run = run.run_type == Run::RT_Iteration && run.repetitions <= 1;
    if (!median && !only_run) return;
    results_[run.run_name.function_name] = run.counters;
    repetitions_ = std::max(repetitions_, run.repetitions);
  }

  benchmark::BenchmarkReporter& display_;
  std::map<std::string, benchmark::UserCounters> results_;
  std::int64_t repetitions_ = 0;
  bool saw_errors_ = false;
};

std::string printf_string(const char* format, double value) {
  char text[64];
  std::snprintf(text, sizeof text, format, value);
  return text;
}

std::string format_latency(double ns) {
  if (ns < 1e3) return printf_string("%.0f ns", ns);
  if (ns < 1e6) return printf_string("%.1f us", ns / 1e3);
  return printf_string("%.2f ms", ns / 1e6);
}

std::string format_rate(double per_second) {
  if (per_second >= 1e7) return printf_string("%.0f M msg/s", per_second / 1e6);
  if (per_second >= 1e6) return printf_string("%.1f M msg/s", per_second / 1e6);
  if (per_second >= 1e3) return printf_string("%.0f k msg/s", per_second / 1e3);
  return printf_string("%.0f msg/s", per_second);
}

std::string format_ratio(double ratio) {
  if (ratio >= 10) return printf_string("%.0fx", ratio);
  return printf_string(ratio >= 1 ? "%.1fx" : "%.2fx", ratio);
}

std::string format_per_message(double value) {
  return value == 0 ? "0" : printf_string("%.2e", value);
}

struct Row {
  std::string metric;
  std::string ours;
  std::string other;
  std::string ratio;
  std::string target;
  std::string verdict;
};

struct Target {
  std::string text;
  std::function<bool(double)> met;
};

// A row comparing the channel with an alternative. `ratio_of(ours, other)` says how the two
// combine; without a target the row is for information.
Row compare(std::string metric, std::optional<double> ours, std::optional<double> other,
            const std::function<std::string(double)>& format,
            const std::function<double(double, double)>& ratio_of,
            const std::optional<Target>& target) {
  Row row{std::move(metric), "-", "-", "-", target ? target->text : "-", ""};
  if (ours) row.ours = format(*ours);
  if (other) row.other = format(*other);
  if (!ours || !other) {
    row.verdict = "not run";
    return row;
  }
  const double ratio = ratio_of(*ours, *other);
  row.ratio = format_ratio(ratio);
  if (target) row.verdict = target->met(ratio) ? "met" : "missed";
  return row;
}

std::vector<Row> build_rows(const MedianCollector& results) {
  const auto latency = [&](Transport transport) {
    return results.median(latency_name(transport), "one_way_ns");
  };
  const auto rate = [&](Transport transport, std::size_t burst) {
    return results.median(throughput_name(transport, burst), "items_per_second");
  };
  const auto overhead = [](double ours, double floor) { return ours / floor; };
  const auto times_lower = [](double ours, double other) { return other / ours; };
  const auto times_higher = [](double ours, double other) { return ours / other; };
  const std::array alternatives{Transport::pipe, Transport::eventfd, Transport::unix_dgram};

  std::vector<Row> rows;
  rows.push_back(compare("one-way latency vs cache-line floor", latency(Transport::channel),
                         latency(Transport::cache_line), format_latency, overhead,
                         Target{"<= 2x", [](double ratio) { return ratio <= 2.0; }}));
  for (const Transport alternative : alternatives) {
    rows.push_back(compare("one-way latency vs " + transport_name(alternative),
                           latency(Transport::channel), latency(alternative), format_latency,
                           times_lower, std::nullopt));
  }
  // The 20x target is against IPC that pays a system call per message; the batched pipe is shown
  // beside it, since an application could batch its pipe writes the same way.
  const std::array throughput_alternatives{Transport::pipe_per_message, Transport::pipe,
                                           Transport::eventfd, Transport::unix_dgram};
  for (const std::size_t burst : kBursts) {
    for (const Transport alternative : throughput_alternatives) {
      std::optional<Target> target;
      if (alternative == Transport::pipe_per_message && burst >= 8) {
        target = Target{">= 20x", [](double ratio) { return ratio >= 20.0; }};
      }
      rows.push_back(compare("throughput burst " + std::to_string(burst) + " vs " +
                                 transport_name(alternative),
                             rate(Transport::channel, burst), rate(alternative, burst), format_rate,
                             times_higher, target));
    }
  }
  for (const std::size_t burst : kBursts) {
    Row row{"futex calls/msg, saturated, burst " + std::to_string(burst), "-", "", "", "== 0", ""};
    if (const auto calls = results.median(saturated_name(burst), "futex_calls_per_msg")) {
      row.ours = format_per_message(*calls);
      row.verdict = *calls == 0 ? "met" : "missed";
    } else {
      row.verdict = "not run";
    }
    rows.push_back(row);
  }
  return rows;
}

void print_ratio_table(std::FILE* out, const MedianCollector& results, double others_share) {
  const std::vector<Row> rows = build_rows(results);
  Row header{"metric", "flotilla", "alternative", "ratio", "target", ""};
  std::array<std::size_t, 5> widths{};
  for (const Row& row : rows) {
    const std::array cells{&row.metric, &row.ours, &row.other, &row.ratio, &row.target};
    for (std::size_t i = 0; i < widths.size(); ++i) widths[i] = std::max(widths[i], cells[i]->size());
  }
  const auto print_row = [&](const Row& row) {
    std::fprintf(out, "%-*s  %-*s  %-*s  %-*s  %-*s  %s\n", static_cast<int>(widths[0]),
                 row.metric.c_str(), static_cast<int>(widths[1]), row.ours.c_str(),
                 static_cast<int>(widths[2]), row.other.c_str(), static_cast<int>(widths[3]),
                 row.ratio.c_str(), static_cast<int>(widths[4]), row.target.c_str(),
                 row.verdict.c_str());
  };
  widths = {std::max(widths[0], header.metric.size()), std::max(widths[1], header.ours.size()),
            std::max(widths[2], header.other.size()), std::max(widths[3], header.ratio.size()),
            std::max(widths[4], header.target.size())};

  std::string placement = g_placement.pinned
                              ? "pinned to cores " + std::to_string(g_placement.main_core) +
                                    " and " + std::to_string(g_placement.peer_core)
                              : "NOT pinned: fewer than 2 usable cores";
  std::fprintf(out, "\nFlotilla channel vs alternatives (2 processes %s, medians of %lld)\n",
               placement.c_str(), static_cast<long long>(results.repetitions()));
  print_row(header);
  for (const Row& row : rows) print_row(row);
  std::fprintf(out,
               "ratio: how many times better the channel is (lower latency, higher throughput);\n"
               "       against the cache-line floor it is channel / floor, the cost over the "
               "hardware minimum.\n");

  // The raw doorbell counts behind the futex rows, and how much CPU the host took meanwhile.
  for (const std::size_t burst : kBursts) {
    const std::string name = saturated_name(burst);
    const auto wakes = results.median(name, "futex_wakes");
    const auto waits = results.median(name, "futex_waits");
    const auto sleeps = results.median(name, "sleeps");
    const auto rate = results.median(name, "items_per_second");
    const auto steal = results.median(name, "steal_ms");
    const auto preemptions = results.median(name, "preemptions");
    const auto producer_irqs = results.median(name, "peer_core_irqs");
    if (!wakes || !waits || !sleeps || !rate || !steal || !preemptions) continue;
    std::string irqs;
    if (producer_irqs) irqs = ", " + printf_string("%.0f", *producer_irqs) + " producer-core interrupts";
    std::fprintf(out,
                 "saturated burst %zu: %s with the doorbell on; medians per run: %.0f futex wakes, "
                 "%.0f futex waits, %.0f sleeps, %.0f preemptions%s, %.0f ms stolen\n",
                 burst, format_rate(*rate).c_str(), *wakes, *waits, *sleeps, *preemptions,
                 irqs.c_str(), *steal);
  }
  std::fprintf(out, "other processes kept the CPUs %.0f%% busy just before the run%s\n",
               100 * others_share, others_share > kBusyMachine ? ": figures are noisy" : "");
  double preemptions = 0;
  for (const std::string& name : results.names()) {
    preemptions += results.median(name, "preemptions").value_or(0);
  }
  std::fprintf(out,
               "the two processes were preempted %.0f times in the median runs of all benchmarks "
               "(per benchmark: the preemptions counter above)\n",
               preemptions);
}

// ---------------------------------------------------------------------------------------------
// Command line and setup

void print_help() {
  std::printf(
      "flotilla-channel-bench: Flotilla channel micro-benchmarks.\n"
      "\n"
      "Measures, between this process and a forked peer pinned to two different cores:\n"
      "  - one-way latency (ping-pong round trip / 2) of a bare cache-line ping-pong (the floor),\n"
      "    the busy-polled channel, a pipe, a shared ring notified by eventfd, and an AF_UNIX\n"
      "    datagram socket;\n"
      "  - throughput in messages/second at bursts of 1, 8 and 32 over the same links, with\n"
      "    every message's sequence number checked;\n"
      "  - futex system calls per message with the channel saturated and the doorbell on.\n"
      "Then prints a table of the medians against the channel's targets. Missing a target\n"
      "does not fail the run; an error (fork failure, lost message) exits non-zero.\n"
      "\n"
      "Options:\n"
      "  --json FILE    also write every result as JSON to FILE\n"
      "                 (same as --benchmark_out=FILE --benchmark_out_format=json)\n"
      "  -h, --help     this text\n"
      "Google Benchmark flags are accepted too, e.g. --benchmark_filter=latency, "
      "--benchmark_out=FILE:\n\n");
  benchmark::PrintDefaultHelp();
}

// Picks the first two cores this process may use: one for it, one for the peer.
void choose_placement() {
  if (usable_cores() < 2) {
    std::fprintf(stderr,
                 "channel-bench: only %d usable core(s); running UNPINNED, so both processes share "
                 "a core and latencies include scheduler switches.\n",
                 usable_cores());
    return;
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) != 0) return;
  std::vector<int> cores;
  for (int core = 0; core < CPU_SETSIZE && cores.size() < 2; ++core) {
    if (CPU_ISSET(core, &set)) cores.push_back(core);
  }
  if (cores.size() < 2) return;
  if (auto pinned = pin_to_core(cores[0]); !pinned) {
    std::fprintf(stderr, "channel-bench: %s; running unpinned\n", pinned.error().message().c_str());
    return;
  }
  g_placement = Placement{true, cores[0], cores[1]};
}

Status install_signal_handlers() {
  struct sigaction on_child {};
  on_child.sa_handler = note_peer_exit;
  sigemptyset(&on_child.sa_mask);
  on_child.sa_flags = SA_NOCLDSTOP;  // no SA_RESTART: see g_peer_exited
  if (::sigaction(SIGCHLD, &on_child, nullptr) != 0) return Error::from_errno("sigaction");
  struct sigaction on_alarm {};
  on_alarm.sa_handler = interrupt_blocking_call;
  sigemptyset(&on_alarm.sa_mask);
  if (::sigaction(SIGALRM, &on_alarm, nullptr) != 0) return Error::from_errno("sigaction");
  // Writing to a pipe whose reader has gone must be an error code, not death.
  if (::signal(SIGPIPE, SIG_IGN) == SIG_ERR) return Error::from_errno("signal");
  return {};
}

int run(int argc, char** argv) {
  std::vector<std::string> args{argv[0]};
  bool console_format = true;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      print_help();
      return 0;
    }
    if (arg == "--json" || arg.starts_with("--json=")) {
      std::string file;
      if (arg == "--json") {
        if (i + 1 >= argc) {
          std::fprintf(stderr, "channel-bench: --json needs a file name\n");
          return 2;
        }
        file = argv[++i];
      } else {
        file = std::string(arg.substr(7));
      }
      args.push_back("--benchmark_out=" + file);
      args.push_back("--benchmark_out_format=json");
      continue;
    }
    if (arg.starts_with("--benchmark_format=") && arg != "--benchmark_format=console") {
      console_format = false;
    }
    args.emplace_back(arg);
  }
  std::vector<char*> arg_pointers;
  for (std::string& arg : args) arg_pointers.push_back(arg.data());
  arg_pointers.push_back(nullptr);
  int arg_count = static_cast<int>(args.size());
  benchmark::Initialize(&arg_count, arg_pointers.data(), print_help);
  if (benchmark::ReportUnrecognizedArguments(arg_count, arg_pointers.data())) return 2;

  if (auto installed = install_signal_handlers(); !installed) {
    std::fprintf(stderr, "channel-bench: %s\n", installed.error().message().c_str());
    return 1;
  }
  choose_placement();
  register_benchmarks();

  // Nothing of ours runs yet, so any CPU use now is someone else's.
  const double others_share = others_cpu_share(std::chrono::milliseconds(300));
  if (others_share > kBusyMachine) {
    std::fprintf(stderr,
                 "channel-bench: WARNING: other processes keep the CPUs %.0f%% busy; they will "
                 "preempt the benchmark (see the preemptions counters) and make figures noisy.\n",
                 100 * others_share);
  }

  MedianCollector collector(*benchmark::CreateDefaultDisplayReporter());
  benchmark::RunSpecifiedBenchmarks(&collector);
  benchmark::Shutdown();

  // Keep machine-readable output on stdout clean.
  if (!collector.empty()) {
    print_ratio_table(console_format ? stdout : stderr, collector, others_share);
  }

  if (!collector.saw_errors()) return 0;
  std::fprintf(stderr, "\nchannel-bench: FAILED: a benchmark reported an error (see above)\n");
  return 1;
}

}  // namespace
}  // namespace flotilla::bench

int main(int argc, char** argv) { return flotilla::bench::run(argc, argv); }
