// The name fleet benchmark: real processes talking over channels.
//
//   - lookup: one name server process and one client process, each on its own core, busy-polling.
//     The client asks the server for every lookup (no cache): round trip p50 and mean, and lookups
//     per million TSC cycles;
//   - register + unregister with fleets of 1, 2 and 3 servers, fully connected by channels, the
//     client talking to server 1. When the processes outnumber the usable cores they share cores,
//     and every process yields its core (sched_yield) whenever it finds no input instead of
//     spinning; the output says which wait each run used;
//   - the monolithic baseline: one NameTable looked up and changed directly in this process,
//     no messages at all;
//   - the published fos anchors (about 150 lookups and 70 registrations per million cycles),
//     printed as such next to our figures.
//
// Cycles are elapsed TSC cycles on the client, converted from the TSC; the TSC rate is measured
// against CLOCK_MONOTONIC over 50 ms at start-up.

#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <x86intrin.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "components/name/arbitrated_commit.hpp"
#include "components/name/channel_transport.hpp"
#include "components/name/name_client.hpp"
#include "components/name/name_table.hpp"
#include "dataplane/channel.hpp"
#include "dataplane/clock.hpp"
#include "dataplane/cpu.hpp"
#include "dataplane/shared_region.hpp"

namespace flotilla::name::bench {
namespace {

// ---------------------------------------------------------------------------------------------
// Parameters

constexpr std::uint32_t kRingCapacity = 256;
constexpr ComponentId kClient = 1000;
constexpr std::size_t kNames = 64;               // names registered before the lookups
constexpr std::uint64_t kDefaultIterations = 1'000'000;
constexpr std::uint64_t kMaxIterations = 10'000'000;
constexpr std::uint64_t kReplyTimeoutNs = 5'000'000'000;  // a reply slower than this: failure
constexpr std::uint64_t kPhaseBudgetNs = 8'000'000'000;   // a fleet phase stops early after this
constexpr double kFosLookupsPerMcycle = 150;        // published fos anchor
constexpr double kFosRegistrationsPerMcycle = 70;   // published fos anchor

struct BenchFailure {
  std::string why;
};

[[noreturn]] void fail(std::string why) { throw BenchFailure{std::move(why)}; }

template <class T>
T take(Result<T> result, const char* what) {
  if (!result) fail(std::string(what) + ": " + result.error().message());
  return std::move(result).value();
}

void check(const Status& status, const char* what) {
  if (!status) fail(std::string(what) + ": " + status.error().message());
}

// ---------------------------------------------------------------------------------------------
// Time

double g_ghz = 0;  // TSC cycles per nanosecond

double measure_tsc_ghz() {
  const std::uint64_t ns0 = monotonic_ns();
  const std::uint64_t c0 = __rdtsc();
  while (monotonic_ns() - ns0 < 50'000'000) cpu_relax();
  const std::uint64_t ns1 = monotonic_ns();
  const std::uint64_t c1 = __rdtsc();
  return static_cast<double>(c1 - c0) / static_cast<double>(ns1 - ns0);
}

double cycles_to_us(double cycles) { return cycles / g_ghz / 1000.0; }

struct Summary {
  double p50_cycles = 0;
  double mean_cycles = 0;
  std::size_t count = 0;
};

Summary summarize(std::vector<std::uint64_t> samples) {
  Summary summary;
  summary.count = samples.size();
  if (samples.empty()) return summary;
  std::sort(samples.begin(), samples.end());
  summary.p50_cycles = static_cast<double>(samples[samples.size() / 2]);
  double total = 0;
  for (std::uint64_t sample : samples) total += static_cast<double>(sample);
  summary.mean_cycles = total / static_cast<double>(samples.size());
  return summary;
}

// ---------------------------------------------------------------------------------------------
// Placement

std::vector<int> allowed_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cores;
  if (::sched_getaffinity(0, sizeof(set), &set) != 0) return cores;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &set)) cores.push_back(cpu);
  }
  return cores;
}

std::vector<int> g_cores;  // the first two usable cores (or the one)

// Process `index` (0 = client, s = server s) runs on this core; -1: not pinned.
int core_for(int index) {
  if (g_cores.empty()) return -1;
  return g_cores[static_cast<std::size_t>(index) % g_cores.size()];
}

enum class Wait { busy_poll, yield };

const char* wait_name(Wait wait) { return wait == Wait::busy_poll ? "busy-poll" : "sched_yield"; }

inline void idle(Wait wait) {
  if (wait == Wait::busy_poll) {
    cpu_relax();
  } else {
    ::sched_yield();
  }
}

// ---------------------------------------------------------------------------------------------
// Child processes

std::atomic<bool> g_child_exited{false};
void note_child_exit(int) { g_child_exited.store(true, std::memory_order_relaxed); }

struct alignas(kCacheLine) Control {
  std::atomic<std::uint32_t> stop{0};
  alignas(kCacheLine) std::atomic<std::uint32_t> ready{0};
};

// Kills and reaps every child it still holds when it goes out of scope, on every path.
class Children {
 public:
  Children() = default;
  Children(const Children&) = delete;
  Children& operator=(const Children&) = delete;
  ~Children() { kill_all(); }

  template <class Body>
  void spawn(const char* what, int core, Body&& body) {
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) fail(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the benchmark
      if (::getppid() != parent) ::_exit(3);
      int code = 1;
      try {
        if (core >= 0) check(pin_to_core(core), "pin_to_core");
        code = body();
      } catch (const BenchFailure& failure) {
        std::fprintf(stderr, "name-bench: %s: %s\n", what, failure.why.c_str());
      } catch (...) {
        std::fprintf(stderr, "name-bench: %s: unexpected exception\n", what);
      }
      ::_exit(code);
    }
    children_.push_back({pid, what});
  }

  // Fails the run when a child has exited (they only exit when told to stop).
  void check_alive() {
    if (!g_child_exited.load(std::memory_order_relaxed)) return;
    for (Child& child : children_) {
      if (child.pid <= 0) continue;
      int status = 0;
      const pid_t got = ::waitpid(child.pid, &status, WNOHANG);
      if (got == child.pid) {
        child.pid = -1;
        fail(std::string(child.what) + " died: " + describe(status));
      }
    }
  }

  // After stop was set: every child must exit 0 within two seconds.
  void finish() {
    const std::uint64_t deadline = monotonic_ns() + 2'000'000'000;
    for (Child& child : children_) {
      while (child.pid > 0) {
        int status = 0;
        const pid_t got = ::waitpid(child.pid, &status, WNOHANG);
        if (got == child.pid) {
          child.pid = -1;
          if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fail(std::string(child.what) + " ended badly: " + describe(status));
          }
        } else if (monotonic_ns() > deadline) {
          fail(std::string(child.what) + " did not stop in time");  // the destructor kills it
        } else {
          ::usleep(200);
        }
      }
    }
    children_.clear();
  }

 private:
  struct Child {
    pid_t pid;
    const char* what;
  };

  static std::string describe(int status) {
    if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return std::string("signal ") + strsignal(WTERMSIG(status));
    return "unknown status";
  }

  void kill_all() {
    for (Child& child : children_) {
      if (child.pid <= 0) continue;
      ::kill(child.pid, SIGKILL);
      int status = 0;
      while (::waitpid(child.pid, &status, 0) < 0 && errno == EINTR) {
      }
      child.pid = -1;
    }
    children_.clear();
  }

  std::vector<Child> children_;
};

// ---------------------------------------------------------------------------------------------
// A fleet: N server processes fully connected by channels, plus this process as the client,
// connected to server 1. Node 0 is the client, node s is server s.

const char* kServerNames[] = {"client", "name server 1", "name server 2", "name server 3"};

class Fleet {
 public:
  Fleet(int servers, Wait wait) : servers_(servers), wait_(wait) {
    links_.push_back({0, 1});
    for (int i = 1; i <= servers; ++i) {
      for (int j = i + 1; j <= servers; ++j) links_.push_back({i, j});
    }
    region_ = take(SharedRegion::create("flotilla-name-bench",
                                        sizeof(Control) + links_.size() * channel_bytes(kRingCapacity)),
                   "shared region");
    control_ = new (region_.data()) Control{};
    for (std::size_t k = 0; k < links_.size(); ++k) {
      check(format_channel(link_memory(k), kRingCapacity), "format_channel");
    }
    g_child_exited.store(false, std::memory_order_relaxed);
    for (int s = 1; s <= servers; ++s) {
      children_.spawn(kServerNames[s], core_for(s), [this, s] { return run_server(s); });
    }
    client_ = take(NameChannel::attach(link_memory(0), kRingCapacity, ChannelSide::a, 1, nullptr,
                                       nullptr),
                   "attach the client's channel");
    const std::uint64_t deadline = monotonic_ns() + kReplyTimeoutNs;
    while (control_->ready.load(std::memory_order_acquire) != static_cast<std::uint32_t>(servers)) {
      children_.check_alive();
      if (monotonic_ns() > deadline) fail("the name servers did not start in time");
      ::usleep(100);
    }
  }

  // Stops the servers and checks they exit cleanly.
  void stop() {
    control_->stop.store(1, std::memory_order_release);
    children_.finish();
  }

  // Sends `request` and waits for its reply.
  NameMessage ask(const NameMessage& request) {
    for (;;) {
      auto sent = client_.send(request);
      if (!sent) fail("client send: " + sent.error().message());
      if (*sent == SendOutcome::sent) break;
      children_.check_alive();
      idle(wait_);
    }
    const std::uint64_t start = monotonic_ns();
    for (std::uint64_t spins = 0;; ++spins) {
      replies_.clear();
      auto got = client_.receive(replies_);
      if (!got) fail("client receive: " + got.error().message());
      for (const NameMessage& reply : replies_) {
        if (reply.kind != NameMsgKind::reply || reply.cookie != request.cookie) {
          fail("unexpected message for the client (kind " +
               std::to_string(static_cast<int>(reply.kind)) + ", cookie " +
               std::to_string(reply.cookie) + ")");
        }
        return reply;
      }
      if (spins % 1024 == 1023) {
        children_.check_alive();
        if (monotonic_ns() - start > kReplyTimeoutNs) fail("no reply from the fleet within 5 s");
      }
      idle(wait_);
    }
  }

  const TransportStats& client_stats() const { return client_.stats(); }

 private:
  struct Link {
    int low;
    int high;
  };

  std::span<std::byte> link_memory(std::size_t k) const {
    return region_.bytes().subspan(sizeof(Control) + k * channel_bytes(kRingCapacity),
                                   channel_bytes(kRingCapacity));
  }

  // The body of server `self`.
  int run_server(int self) {
    std::vector<MemberId> members;
    for (int s = 1; s <= servers_; ++s) members.push_back(static_cast<MemberId>(s));
    ServerConfig config;
    config.self = static_cast<MemberId>(self);
    config.seed = static_cast<std::uint64_t>(self);
    NameServer server(config, members);
    ServerPump pump(server);
    std::vector<NameChannel> channels;
    channels.reserve(links_.size());
    for (std::size_t k = 0; k < links_.size(); ++k) {
      const Link& link = links_[k];
      if (link.low != self && link.high != self) continue;
      const ChannelSide side = link.low == self ? ChannelSide::a : ChannelSide::b;
      channels.push_back(take(NameChannel::attach(link_memory(k), kRingCapacity, side, 1, nullptr,
                                                  nullptr),
                              "attach a server channel"));
      const int peer = link.low == self ? link.high : link.low;
      if (peer == 0) {
        pump.add_client(kClient, channels.back());
      } else {
        pump.add_member(static_cast<MemberId>(peer), channels.back());
      }
    }
    control_->ready.fetch_add(1, std::memory_order_acq_rel);
    std::uint64_t passes = 0;
    std::uint64_t now_ms = monotonic_ms();
    while (control_->stop.load(std::memory_order_relaxed) == 0) {
      if ((++passes & 255) == 0) now_ms = monotonic_ms();
      auto handled = pump.poll(now_ms);
      if (!handled) fail("server poll: " + handled.error().message());
      if (*handled == 0 && pump.backlog() == 0) idle(wait_);
    }
    std::uint64_t rejected = 0;
    for (const NameChannel& channel : channels) {
      rejected += channel.stats().chunks_rejected + channel.stats().messages_malformed;
    }
    if (rejected != 0 || pump.spoofed() != 0 || pump.unroutable() != 0 ||
        server.counters().malformed != 0) {
      fail("bad traffic seen: " + std::to_string(rejected) + " rejected, " +
           std::to_string(pump.spoofed()) + " spoofed, " + std::to_string(pump.unroutable()) +
           " unroutable");
    }
    return 0;
  }

  int servers_;
  Wait wait_;
  std::vector<Link> links_;
  SharedRegion region_;
  Control* control_ = nullptr;
  Children children_;
  NameChannel client_;
  std::vector<NameMessage> replies_;
};

// ---------------------------------------------------------------------------------------------
// The workloads

std::string service_name(std::size_t i) { return "/svc" + std::to_string(i % 16) + "/n" + std::to_string(i); }

Endpoint endpoint_of(std::size_t i) {
  return Endpoint{kClient, static_cast<std::uint32_t>(i), 1000 + i};
}

Change register_of(std::size_t i, std::string name) {
  Change change;
  change.op = ChangeOp::register_direct;
  change.name = std::move(name);
  change.owner = kClient;
  change.endpoint = endpoint_of(i);
  return change;
}

Change unregister_of(std::string name) {
  Change change;
  change.op = ChangeOp::unregister;
  change.name = std::move(name);
  change.owner = kClient;
  return change;
}

struct LookupFigures {
  Summary round_trip;
  double per_mcycle = 0;
  bool capped = false;
};

struct RegisterFigures {
  int servers = 0;
  Wait wait = Wait::busy_poll;
  Summary pair;
  Summary registration;
  double registrations_per_mcycle = 0;
  bool capped = false;
};

void expect_status(const NameMessage& reply, NameErrc want, const char* what) {
  if (reply.status != want) {
    fail(std::string(what) + " answered " + to_string(reply.status) + ", expected " +
         to_string(want));
  }
}

LookupFigures bench_lookup(std::uint64_t iterations, Wait wait) {
  std::printf("[lookup] 1 server + client, %s, %llu round trips ...\n", wait_name(wait),
              static_cast<unsigned long long>(iterations));
  std::fflush(stdout);
  Fleet fleet(1, wait);
  std::uint64_t cookie = 0;
  std::vector<std::string> names;
  for (std::size_t i = 0; i < kNames; ++i) {
    names.push_back(service_name(i));
    const NameMessage reply =
        fleet.ask(NameClient::change_request(kClient, ++cookie, register_of(i, names.back())));
    expect_status(reply, NameErrc::ok, "a registration before the lookups");
  }
  std::vector<NameMessage> requests;
  for (std::size_t i = 0; i < kNames; ++i) {
    requests.push_back(NameClient::lookup_request(kClient, 0, names[i]));
  }
  const auto lookup_once = [&](std::size_t i) {
    NameMessage request = requests[i % kNames];
    request.cookie = ++cookie;
    const NameMessage reply = fleet.ask(request);
    if (reply.status != NameErrc::ok || !(reply.endpoint == endpoint_of(i % kNames)) ||
        reply.version != 1) {
      fail("wrong lookup answer for " + names[i % kNames] + ": " + to_string(reply.status) +
           ", endpoint " + std::to_string(reply.endpoint.endpoint));
    }
  };
  for (std::size_t i = 0; i < std::min<std::uint64_t>(iterations / 10 + 1, 10'000); ++i) lookup_once(i);

  LookupFigures figures;
  std::vector<std::uint64_t> samples;
  samples.reserve(iterations);
  const std::uint64_t begin_ns = monotonic_ns();
  std::uint64_t next_progress = begin_ns + 2'000'000'000;
  const std::uint64_t begin = __rdtsc();
  for (std::uint64_t i = 0; i < iterations; ++i) {
    const std::uint64_t start = __rdtsc();
    lookup_once(i);
    samples.push_back(__rdtsc() - start);
    if ((i & 1023) == 1023) {
      const std::uint64_t now = monotonic_ns();
      if (now - begin_ns > kPhaseBudgetNs) {
        figures.capped = true;
        break;
      }
      if (now > next_progress) {
        std::printf("[lookup]   %llu/%llu round trips\n", static_cast<unsigned long long>(i + 1),
                    static_cast<unsigned long long>(iterations));
        std::fflush(stdout);
        next_progress = now + 2'000'000'000;
      }
    }
  }
  const std::uint64_t total = __rdtsc() - begin;
  fleet.stop();
  const std::size_t done = samples.size();
  figures.round_trip = summarize(std::move(samples));
  figures.per_mcycle = static_cast<double>(done) / (static_cast<double>(total) / 1e6);
  return figures;
}

RegisterFigures bench_register(int servers, std::uint64_t pairs, Wait wait) {
  std::printf("[register] %d server%s + client, %s, %llu register+unregister pairs ...\n", servers,
              servers == 1 ? "" : "s", wait_name(wait), static_cast<unsigned long long>(pairs));
  std::fflush(stdout);
  Fleet fleet(servers, wait);
  std::uint64_t cookie = 0;
  std::vector<NameMessage> registers;
  std::vector<NameMessage> unregisters;
  for (std::size_t i = 0; i < kNames; ++i) {
    const std::string name = "/reg" + std::to_string(i % 16) + "/s" + std::to_string(i);
    registers.push_back(NameClient::change_request(kClient, 0, register_of(i, name)));
    unregisters.push_back(NameClient::change_request(kClient, 0, unregister_of(name)));
  }
  const auto pair_once = [&](std::size_t i, std::uint64_t* register_cycles) {
    NameMessage request = registers[i % kNames];
    request.cookie = ++cookie;
    const std::uint64_t start = __rdtsc();
    expect_status(fleet.ask(request), NameErrc::ok, "a registration");
    if (register_cycles != nullptr) *register_cycles = __rdtsc() - start;
    request = unregisters[i % kNames];
    request.cookie = ++cookie;
    expect_status(fleet.ask(request), NameErrc::ok, "an unregistration");
  };
  for (std::size_t i = 0; i < std::min<std::uint64_t>(pairs / 10 + 1, 500); ++i) pair_once(i, nullptr);

  RegisterFigures figures;
  figures.servers = servers;
  figures.wait = wait;
  std::vector<std::uint64_t> pair_samples;
  std::vector<std::uint64_t> register_samples;
  const std::uint64_t begin_ns = monotonic_ns();
  std::uint64_t next_progress = begin_ns + 2'000'000'000;
  for (std::uint64_t i = 0; i < pairs; ++i) {
    std::uint64_t register_cycles = 0;
    const std::uint64_t start = __rdtsc();
    pair_once(i, &register_cycles);
    pair_samples.push_back(__rdtsc() - start);
    register_samples.push_back(register_cycles);
    if ((i & 63) == 63) {
      const std::uint64_t now = monotonic_ns();
      if (now - begin_ns > kPhaseBudgetNs) {
        figures.capped = true;
        break;
      }
      if (now > next_progress) {
        std::printf("[register]   %llu/%llu pairs\n", static_cast<unsigned long long>(i + 1),
                    static_cast<unsigned long long>(pairs));
        std::fflush(stdout);
        next_progress = now + 2'000'000'000;
      }
    }
  }
  fleet.stop();
  figures.pair = summarize(pair_samples);
  figures.registration = summarize(register_samples);
  double total = 0;
  for (std::uint64_t sample : pair_samples) total += static_cast<double>(sample);
  // One registration per pair; the pair's cycles include the unregistration that undoes it.
  figures.registrations_per_mcycle = static_cast<double>(pair_samples.size()) / (total / 1e6);
  return figures;
}

struct Monolithic {
  double lookups_per_mcycle = 0;
  double registrations_per_mcycle = 0;  // register + unregister pairs per million cycles
  double registers_only_per_mcycle = 0;
};

Monolithic bench_monolithic(std::uint64_t iterations) {
  std::printf("[monolithic] one NameTable in this process, %llu lookups, %llu pairs ...\n",
              static_cast<unsigned long long>(iterations * 10),
              static_cast<unsigned long long>(iterations));
  std::fflush(stdout);
  NameTable table;
  std::vector<std::string> names;
  for (std::size_t i = 0; i < kNames; ++i) {
    names.push_back(service_name(i));
    if (table.apply(register_of(i, names.back())) != NameErrc::ok) fail("monolithic register");
  }
  Monolithic result;
  const std::uint64_t lookups = iterations * 10;
  std::uint64_t sink = 0;
  std::uint64_t begin = __rdtsc();
  for (std::uint64_t i = 0; i < lookups; ++i) {
    const LookupResult found = table.lookup(names[i % kNames], 0, i);
    if (found.status != NameErrc::ok) fail("monolithic lookup failed");
    sink += found.endpoint.endpoint;
  }
  std::uint64_t total = __rdtsc() - begin;
  result.lookups_per_mcycle = static_cast<double>(lookups) / (static_cast<double>(total) / 1e6);
  std::uint64_t expected = 0;
  for (std::uint64_t i = 0; i < lookups; ++i) expected += i % kNames;
  if (sink != expected) fail("monolithic lookups answered wrong endpoints");

  std::vector<Change> registers;
  std::vector<Change> unregisters;
  for (std::size_t i = 0; i < kNames; ++i) {
    const std::string name = "/reg" + std::to_string(i % 16) + "/s" + std::to_string(i);
    registers.push_back(register_of(i, name));
    unregisters.push_back(unregister_of(name));
  }
  std::uint64_t register_cycles = 0;
  begin = __rdtsc();
  for (std::uint64_t i = 0; i < iterations; ++i) {
    const std::uint64_t start = __rdtsc();
    if (table.apply(registers[i % kNames]) != NameErrc::ok) fail("monolithic register failed");
    register_cycles += __rdtsc() - start;
    if (table.apply(unregisters[i % kNames]) != NameErrc::ok) fail("monolithic unregister failed");
  }
  total = __rdtsc() - begin;
  result.registrations_per_mcycle =
      static_cast<double>(iterations) / (static_cast<double>(total) / 1e6);
  result.registers_only_per_mcycle =
      static_cast<double>(iterations) / (static_cast<double>(register_cycles) / 1e6);
  return result;
}

// ---------------------------------------------------------------------------------------------
// Command line

void usage(FILE* out) {
  std::fprintf(out,
               "usage: flotilla-name-bench [--iterations N] [--help]\n"
               "\n"
               "Benchmarks the name fleet with real processes over Flotilla channels.\n"
               "  --iterations N  lookup round trips to time (default %llu, 1..%llu); each\n"
               "                  fleet size times N/20 register+unregister pairs (at least 50);\n"
               "                  a fleet phase stops early after 8 s and says so. The monolithic\n"
               "                  baseline times 10*N lookups and N register+unregister pairs.\n"
               "  --help          this text.\n",
               static_cast<unsigned long long>(kDefaultIterations),
               static_cast<unsigned long long>(kMaxIterations));
}

std::optional<std::uint64_t> parse_count(std::string_view text) {
  std::uint64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  if (value < 1 || value > kMaxIterations) return std::nullopt;
  return value;
}

int run(int argc, char** argv) {
  std::uint64_t iterations = kDefaultIterations;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      usage(stdout);
      return 0;
    }
    std::string_view value;
    if (arg == "--iterations") {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "name-bench: --iterations needs a value\n");
        usage(stderr);
        return 2;
      }
      value = argv[++i];
    } else if (arg.starts_with("--iterations=")) {
      value = arg.substr(std::strlen("--iterations="));
    } else {
      std::fprintf(stderr, "name-bench: unknown argument '%s'\n", argv[i]);
      usage(stderr);
      return 2;
    }
    const auto parsed = parse_count(value);
    if (!parsed) {
      std::fprintf(stderr, "name-bench: --iterations must be a whole number from 1 to %llu, not '%.*s'\n",
                   static_cast<unsigned long long>(kMaxIterations), static_cast<int>(value.size()),
                   value.data());
      return 2;
    }
    iterations = *parsed;
  }

  struct sigaction action {};
  action.sa_handler = note_child_exit;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_NOCLDSTOP;
  ::sigaction(SIGCHLD, &action, nullptr);

  g_ghz = measure_tsc_ghz();
  const std::vector<int> cores = allowed_cores();
  const bool two_cores = cores.size() >= 2;
  if (two_cores) {
    g_cores = {cores[0], cores[1]};
  } else if (cores.size() == 1) {
    g_cores = {cores[0]};
  }
  std::printf("Flotilla name fleet benchmark\n");
  std::printf("  TSC %.3f GHz, measured against CLOCK_MONOTONIC over 50 ms; \"cycles\" below are\n"
              "  elapsed TSC cycles on the client, summed over the timed operations\n",
              g_ghz);
  if (two_cores) {
    std::printf("  %zu usable cores; client on core %d, server s on core %d (s odd) / %d (s even)\n",
                cores.size(), core_for(0), core_for(1), core_for(2));
  } else {
    std::printf("  only %zu usable core: every process shares it and yields when idle\n",
                cores.size());
  }
  std::fflush(stdout);

  const std::size_t usable = g_cores.size();
  const auto wait_for = [&](int servers) {
    return static_cast<std::size_t>(servers) + 1 <= usable ? Wait::busy_poll : Wait::yield;
  };
  const LookupFigures lookup = bench_lookup(iterations, wait_for(1));
  const std::uint64_t pairs = std::max<std::uint64_t>(iterations / 20, 50);
  std::vector<RegisterFigures> registers;
  for (int servers = 1; servers <= 3; ++servers) {
    registers.push_back(bench_register(servers, pairs, wait_for(servers)));
  }
  const Monolithic mono = bench_monolithic(iterations);

  std::printf("\n== Name lookup (1 server, cache bypassed, %s) ==\n", wait_name(wait_for(1)));
  std::printf("  round trip p50 %.2f us, mean %.2f us over %zu lookups%s\n",
              cycles_to_us(lookup.round_trip.p50_cycles), cycles_to_us(lookup.round_trip.mean_cycles),
              lookup.round_trip.count, lookup.capped ? " (stopped at the 8 s budget)" : "");

  std::printf("\n== Register + unregister ==\n");
  std::printf("  %-8s %-12s %8s %12s %12s %12s %14s\n", "servers", "wait", "pairs", "pair p50 us",
              "pair mean us", "reg mean us", "regs/Mcycle");
  for (const RegisterFigures& r : registers) {
    std::printf("  %-8d %-12s %8zu %12.2f %12.2f %12.2f %14.2f%s\n", r.servers, wait_name(r.wait),
                r.pair.count, cycles_to_us(r.pair.p50_cycles), cycles_to_us(r.pair.mean_cycles),
                cycles_to_us(r.registration.mean_cycles), r.registrations_per_mcycle,
                r.capped ? "  (stopped at the 8 s budget)" : "");
  }
  std::printf("  regs/Mcycle = register+unregister pairs per million cycles (each pair is one\n"
              "  registration and the unregistration that undoes it); \"reg mean\" times the\n"
              "  register request alone.\n");
  if (wait_for(3) == Wait::yield) {
    std::printf("  Fleets whose processes outnumber the usable cores share cores: every process\n"
                "  calls sched_yield when it finds no input, instead of busy-polling.\n");
  }

  std::printf("\n== Per million cycles: fleet vs monolithic vs fos (published anchor) ==\n");
  std::printf("  %-30s %12s %12s %12s %16s\n", "", "fleet", "monolithic", "fleet/mono",
              "fos (published)");
  std::printf("  %-30s %12.2f %12.1f %12.5f %16.0f\n", "lookups (1 server)", lookup.per_mcycle,
              mono.lookups_per_mcycle, lookup.per_mcycle / mono.lookups_per_mcycle,
              kFosLookupsPerMcycle);
  for (const RegisterFigures& r : registers) {
    const std::string label = "registrations (" + std::to_string(r.servers) + " server" +
                              (r.servers == 1 ? ")" : "s)");
    std::printf("  %-30s %12.2f %12.1f %12.5f %16.0f\n", label.c_str(), r.registrations_per_mcycle,
                mono.registrations_per_mcycle,
                r.registrations_per_mcycle / mono.registrations_per_mcycle,
                kFosRegistrationsPerMcycle);
  }
  std::printf("  monolithic = one NameTable looked up / changed directly in one process, no\n"
              "  messages; its registrations count register+unregister pairs like the fleet's\n"
              "  (register alone: %.1f per Mcycle). fos figures are the published anchors,\n"
              "  not measured here.\n",
              mono.registers_only_per_mcycle);
  return 0;
}

}  // namespace
}  // namespace flotilla::name::bench

int main(int argc, char** argv) {
  try {
    return flotilla::name::bench::run(argc, argv);
  } catch (const flotilla::name::bench::BenchFailure& failure) {
    std::fprintf(stderr, "name-bench: error: %s\n", failure.why.c_str());
    return 1;
  }
}
