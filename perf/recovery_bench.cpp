// flotilla-recovery-bench: how long an echo component takes to serve again after it fails, under
// the supervisor, side by side with a conventional restart (a parent that kills, reaps, forks and
// execs a fresh process and waits for its first reply).
//
// Flotilla: the echo chain client -> middle -> server runs under the Supervisor; `middle` is
// crashed N times (and hung M times), each at a random moment 1-10 ms after the last recovery, and
// every time the run waits for the supervisor's `recovered` event: the new incarnation has served
// its first message. From the event log: fault_injected -> recovered (kill to first request served
// again) and detection (exit / hang_detected) -> recovered.
//
// Baseline: this binary re-executed as `--child FD`, a process that answers requests on an
// inherited Unix socket. The parent SIGKILLs it, reaps it, starts a fresh one and times the first
// reply; for hangs it is a watchdog pinging every 1 ms that gives up after 50 ms of silence: the
// limit the supervisor runs with, checked as often as this run polls the supervisor. It shares nothing with the process it replaces: the floor
// of "restart the process".
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "apps/echo/echo_protocol.hpp"
#include "dataplane/clock.hpp"
#include "recovery/config.hpp"  // SupervisorConfig
#include "recovery/supervisor.hpp"

#ifndef FLOTILLA_ECHO_PATH
#define FLOTILLA_ECHO_PATH ""
#endif

namespace {

using namespace std::chrono_literals;
using flotilla::monotonic_ns;
namespace rec = flotilla::recovery;

constexpr std::uint64_t kHeartbeatMs = 50;     // the supervisor's hang limit, and the watchdog's
constexpr std::uint64_t kWatchTickMs = 1;      // the supervisor, polled every 1 ms here, looks as often
constexpr auto kRecoveryDeadline = 5s;         // longer than this is an error, not a slow result
constexpr char kProgram[] = "flotilla-recovery-bench";

[[noreturn]] void fail(const std::string& message) {
  std::fprintf(stderr, "%s: error: %s\n", kProgram, message.c_str());
  std::exit(1);
}

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

void usage(std::FILE* out) {
  std::fprintf(out,
               "usage: %s [--crashes N] [--hangs N]\n"
               "\n"
               "Recovery time of the echo chain's middle component under the Flotilla supervisor,\n"
               "from the fault to the first request served again, against a plain kill + waitpid +\n"
               "fork/exec restart of a fresh process. Prints p50 and p99 of each and their ratio.\n"
               "\n"
               "  --crashes N   crash faults to inject (1..100000, default 200)\n"
               "  --hangs N     hang faults to inject (0..100000, default 50)\n"
               "  --help        this text\n"
               "\n"
               "The echo component binary is FLOTILLA_ECHO if set, else the one built with this\n"
               "benchmark (%s).\n",
               kProgram, FLOTILLA_ECHO_PATH[0] != '\0' ? FLOTILLA_ECHO_PATH : "none built in");
}

// Parses a whole decimal number in [low, high]; anything else is a usage error.
long parse_count(const char* flag, const char* text, long low, long high) {
  errno = 0;
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || value < low || value > high) {
    std::fprintf(stderr, "%s: %s wants a whole number from %ld to %ld, not '%s'\n", kProgram, flag,
                 low, high, text);
    std::exit(2);
  }
  return value;
}

double ms(std::uint64_t ns) { return static_cast<double>(ns) / 1e6; }

// Nearest-rank percentile.
std::uint64_t percentile(std::vector<std::uint64_t> samples, double p) {
  if (samples.empty()) return 0;
  std::sort(samples.begin(), samples.end());
  auto rank = static_cast<std::size_t>(p / 100.0 * static_cast<double>(samples.size()) + 0.999999);
  rank = std::clamp<std::size_t>(rank, 1, samples.size());
  return samples[rank - 1];
}

struct Series {
  std::vector<std::uint64_t> detect_to_served;  // ns
  std::vector<std::uint64_t> fault_to_served;   // ns
};

// ---------------------------------------------------------------------------------------------
// Flotilla: the echo chain under the supervisor.

// Built as a struct rather than parsed from TOML: this binary is also the baseline's child, and
// without the parser it loads no library flotilla-echo does not, so the two execs cost alike.
rec::SupervisorConfig chain_config(const std::string& echo) {
  rec::SupervisorConfig config;
  config.heartbeat_timeout = std::chrono::milliseconds(kHeartbeatMs);
  config.restart.crash_limit = 1'000'000;
  config.restart.window = 1000ms;
  // The restart backoff is off: it is a crash-loop policy (a deliberate delay), not part of the
  // recovery path, and crashes a few ms apart would otherwise run into it.
  config.restart.max_backoff = 0ms;
  for (const char* role : {"client", "middle", "server"}) {
    config.components.push_back(rec::ComponentConfig{.name = role, .binary = echo, .args = {"--role", role}});
  }
  config.channels.push_back(rec::ChannelConfig{"client-middle", "client", "middle", 256});
  config.channels.push_back(rec::ChannelConfig{"middle-server", "middle", "server", 256});
  return config;
}

template <class Done>
bool supervise_until(rec::Supervisor& supervisor, Done&& done, std::chrono::milliseconds deadline) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    supervisor.poll(1ms);  // the shortest tick the supervisor offers
  }
  return true;
}

std::string recent_events(const rec::Supervisor& supervisor, std::size_t from) {
  std::string text;
  const auto& events = supervisor.log().events();
  for (std::size_t i = from; i < events.size(); ++i) text += "\n  " + rec::format_event(events[i]);
  return text.empty() ? "\n  (no events)" : text;
}

// Injects `fault` into the middle and waits for its next incarnation's `recovered` event.
void fail_middle_once(rec::Supervisor& supervisor, flotilla::Fault fault, Series& out) {
  const auto view = supervisor.component("middle");
  if (!view || view->status != rec::ComponentStatus::running) {
    fail("middle is not running before the fault (status " +
         std::string(view ? rec::status_name(view->status) : "missing") + ")");
  }
  const std::uint64_t incarnation = view->incarnation;
  const std::size_t first = supervisor.log().events().size();
  if (auto status = supervisor.inject("middle", fault); !status) {
    fail("inject into middle: " + status.error().message());
  }
  const auto find_after = [&](rec::EventKind kind) -> const rec::Event* {
    const auto& events = supervisor.log().events();
    for (std::size_t i = first; i < events.size(); ++i) {
      if (events[i].kind == kind && events[i].component == "middle") return &events[i];
    }
    return nullptr;
  };
  if (!supervise_until(supervisor, [&] { return find_after(rec::EventKind::recovered) != nullptr; },
                       kRecoveryDeadline)) {
    fail("middle did not recover from incarnation " + std::to_string(incarnation) + " within " +
         std::to_string(std::chrono::milliseconds(kRecoveryDeadline).count()) +
         " ms; events since the fault:" + recent_events(supervisor, first));
  }
  const rec::Event* injected = find_after(rec::EventKind::fault_injected);
  const rec::Event* recovered = find_after(rec::EventKind::recovered);
  const rec::Event* detected =
      find_after(fault == flotilla::Fault::hang ? rec::EventKind::hang_detected : rec::EventKind::exit);
  if (injected == nullptr || detected == nullptr || recovered->incarnation != incarnation + 1 ||
      recovered->at_ns < injected->at_ns) {
    fail("unexpected event sequence for incarnation " + std::to_string(incarnation) + ":" +
         recent_events(supervisor, first));
  }
  out.detect_to_served.push_back(recovered->value);
  out.fault_to_served.push_back(recovered->at_ns - injected->at_ns);
}

void progress(const char* who, const char* what, std::size_t done, std::size_t total,
              const std::vector<std::uint64_t>& fault_to_served) {
  std::printf("  %-9s %5zu/%zu %s recovered   fault->served so far: p50 %.3f ms  p99 %.3f ms\n",
              who, done, total, what, ms(percentile(fault_to_served, 50)),
              ms(percentile(fault_to_served, 99)));
  std::fflush(stdout);
}

std::size_t progress_step(std::size_t total) { return total >= 200 ? 50 : std::max<std::size_t>(total / 4, 1); }

void run_flotilla(const std::string& echo, std::size_t crashes, std::size_t hangs,
                  std::mt19937& random, Series& crash, Series& hang) {
  auto created = rec::Supervisor::create(chain_config(echo), "/");
  if (!created) fail("supervisor: " + created.error().message() + " (echo binary " + echo + ")");
  rec::Supervisor& supervisor = **created;
  if (auto status = supervisor.start(); !status) fail("start the chain: " + status.error().message());
  const auto state = supervisor.state_of("client");
  if (state.size() < sizeof(rec::echo::ClientState)) fail("client state store too small");
  const auto* client = reinterpret_cast<const rec::echo::ClientState*>(state.data());
  if (!supervise_until(supervisor, [&] { return client->answered.load() > 1000; }, 10s)) {
    fail("the echo chain never got going (answered " + std::to_string(client->answered.load()) +
         "):" + recent_events(supervisor, 0));
  }

  std::uniform_int_distribution<int> pause_ms(1, 10);
  for (std::size_t i = 1; i <= crashes; ++i) {
    supervisor.run_for(std::chrono::milliseconds(pause_ms(random)));  // a random moment
    fail_middle_once(supervisor, flotilla::Fault::crash, crash);
    if (i % progress_step(crashes) == 0 || i == crashes) {
      progress("flotilla", "crashes", i, crashes, crash.fault_to_served);
    }
  }
  for (std::size_t i = 1; i <= hangs; ++i) {
    supervisor.run_for(std::chrono::milliseconds(pause_ms(random)));
    fail_middle_once(supervisor, flotilla::Fault::hang, hang);
    if (i % progress_step(hangs) == 0 || i == hangs) {
      progress("flotilla", "hangs", i, hangs, hang.fault_to_served);
    }
  }
  // The stream still flows after all of it.
  const std::uint64_t answered = client->answered.load();
  if (!supervise_until(supervisor, [&] { return client->answered.load() > answered + 100; }, 5s)) {
    fail("the echo chain stopped answering after the faults");
  }
  supervisor.stop();
}

// ---------------------------------------------------------------------------------------------
// Baseline: a plain parent restarting a plain child.

constexpr char kRequest = 'r';
constexpr char kReply = 'R';
constexpr char kPing = 'p';
constexpr char kPong = 'P';
constexpr char kHang = 'h';

// `--child FD`: answer each request on FD until it closes; `h` makes it stop answering.
int child_main(int fd) {
  for (;;) {
    char byte = 0;
    const ssize_t got = ::read(fd, &byte, 1);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return 0;
    if (byte == kHang) {
      for (;;) ::pause();
    }
    const char answer = byte == kPing ? kPong : kReply;
    if (::write(fd, &answer, 1) != 1) return 1;
  }
}

class Baseline {
 public:
  explicit Baseline(std::string self) : self_(std::move(self)) {}
  ~Baseline() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (fd_ >= 0) ::close(fd_);
  }

  // Starts a fresh child and waits for its answer to one request.
  void spawn_and_serve() {
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
      fail(errno_text("socketpair"));
    }
    char fd_text[] = "3";
    char child_flag[] = "--child";
    char* argv[] = {self_.data(), child_flag, fd_text, nullptr};
    const pid_t pid = ::fork();
    if (pid < 0) fail(errno_text("fork"));
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (pair[1] == 3) {
        if (::fcntl(3, F_SETFD, 0) != 0) ::_exit(126);
      } else if (::dup2(pair[1], 3) != 3) {
        ::_exit(126);
      }
      ::execv(self_.c_str(), argv);
      ::_exit(127);
    }
    ::close(pair[1]);
    pid_ = pid;
    fd_ = pair[0];
    if (!send(kRequest)) fail(errno_text("baseline: send the first request"));
    const auto until = monotonic_ns() + deadline_ns();
    for (;;) {
      const char answer = receive(until);
      if (answer == kReply) break;
      if (answer == 0) fail("baseline: the restarted child never answered");
    }
    alive_ns_ = monotonic_ns();
    next_ping_ns_ = alive_ns_ + kWatchTickMs * 1'000'000;
  }

  // SIGKILL, reap. Returns when the old child is gone (the moment a parent learns of it).
  void kill_and_reap() {
    if (::kill(pid_, SIGKILL) != 0) fail(errno_text("baseline: kill"));
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0) {
      if (errno != EINTR) fail(errno_text("baseline: waitpid"));
    }
    pid_ = -1;
    ::close(fd_);
    fd_ = -1;
  }

  // The watchdog: pings every tick, drains answers. Runs until `until_ns`, or, when `stop_on_hang`,
  // until the child has been silent longer than the heartbeat limit (returns true then).
  bool watch(std::uint64_t until_ns, bool stop_on_hang) {
    for (;;) {
      const std::uint64_t now = monotonic_ns();
      if (stop_on_hang && now - alive_ns_ > kHeartbeatMs * 1'000'000) return true;
      if (!stop_on_hang && now >= until_ns) return false;
      if (now >= next_ping_ns_) {
        (void)send(kPing);  // a full or broken socket shows as silence
        next_ping_ns_ = now + kWatchTickMs * 1'000'000;
        continue;
      }
      std::uint64_t wake = next_ping_ns_;
      if (!stop_on_hang) wake = std::min(wake, until_ns);
      pollfd watched{fd_, POLLIN, 0};
      const int timeout_ms = static_cast<int>((wake - now + 999'999) / 1'000'000);
      const int ready = ::poll(&watched, 1, timeout_ms);
      if (ready < 0 && errno != EINTR) fail(errno_text("baseline: poll"));
      if (ready > 0 && (watched.revents & POLLIN) != 0) {
        char answer = 0;
        if (::recv(fd_, &answer, 1, MSG_DONTWAIT) == 1 && answer == kPong) alive_ns_ = monotonic_ns();
      }
    }
  }

  bool send(char byte) { return ::send(fd_, &byte, 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1; }

 private:
  static std::uint64_t deadline_ns() {
    return static_cast<std::uint64_t>(std::chrono::nanoseconds(kRecoveryDeadline).count());
  }

  // The next byte from the child, or 0 at the deadline or on a closed socket.
  char receive(std::uint64_t until_ns) {
    for (;;) {
      const std::uint64_t now = monotonic_ns();
      if (now >= until_ns) return 0;
      pollfd watched{fd_, POLLIN, 0};
      const int ready = ::poll(&watched, 1, static_cast<int>((until_ns - now) / 1'000'000 + 1));
      if (ready < 0 && errno != EINTR) fail(errno_text("baseline: poll"));
      if (ready <= 0) continue;
      char byte = 0;
      const ssize_t got = ::recv(fd_, &byte, 1, 0);
      if (got == 1) return byte;
      if (got == 0 || (got < 0 && errno != EINTR)) return 0;
    }
  }

  std::string self_;
  pid_t pid_ = -1;
  int fd_ = -1;
  std::uint64_t alive_ns_ = 0;
  std::uint64_t next_ping_ns_ = 0;
};

void run_baseline(const std::string& self, std::size_t crashes, std::size_t hangs,
                  std::mt19937& random, Series& crash, Series& hang) {
  Baseline baseline(self);
  baseline.spawn_and_serve();
  std::uniform_int_distribution<int> pause_ms(1, 10);
  const auto wait_random = [&] {
    baseline.watch(monotonic_ns() + static_cast<std::uint64_t>(pause_ms(random)) * 1'000'000, false);
  };
  for (std::size_t i = 1; i <= crashes; ++i) {
    wait_random();
    const std::uint64_t killed = monotonic_ns();
    baseline.kill_and_reap();
    const std::uint64_t reaped = monotonic_ns();
    baseline.spawn_and_serve();
    const std::uint64_t served = monotonic_ns();
    crash.detect_to_served.push_back(served - reaped);
    crash.fault_to_served.push_back(served - killed);
    if (i % progress_step(crashes) == 0 || i == crashes) {
      progress("baseline", "crashes", i, crashes, crash.fault_to_served);
    }
  }
  for (std::size_t i = 1; i <= hangs; ++i) {
    wait_random();
    const std::uint64_t injected = monotonic_ns();
    if (!baseline.send(kHang)) fail(errno_text("baseline: send the hang request"));
    baseline.watch(0, true);
    const std::uint64_t detected = monotonic_ns();
    baseline.kill_and_reap();
    baseline.spawn_and_serve();
    const std::uint64_t served = monotonic_ns();
    hang.detect_to_served.push_back(served - detected);
    hang.fault_to_served.push_back(served - injected);
    if (i % progress_step(hangs) == 0 || i == hangs) {
      progress("baseline", "hangs", i, hangs, hang.fault_to_served);
    }
  }
}

// ---------------------------------------------------------------------------------------------

void print_row(const char* metric, const std::vector<std::uint64_t>& flotilla,
               const std::vector<std::uint64_t>& baseline, bool has_target) {
  if (flotilla.empty()) return;
  const std::uint64_t f50 = percentile(flotilla, 50), f99 = percentile(flotilla, 99);
  const std::uint64_t b50 = percentile(baseline, 50), b99 = percentile(baseline, 99);
  const double ratio = b50 == 0 ? 0.0 : static_cast<double>(f50) / static_cast<double>(b50);
  const char* target = !has_target ? "-" : f50 < 10'000'000 ? "met" : "MISSED";
  std::printf("%-34s %10.3f %10.3f %10.3f %10.3f %8.2fx  %s\n", metric, ms(f50), ms(f99), ms(b50),
              ms(b99), ratio, target);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "--child") == 0) {
    return child_main(static_cast<int>(parse_count("--child", argv[2], 0, INT_MAX)));
  }
  std::size_t crashes = 200;
  std::size_t hangs = 50;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      usage(stdout);
      return 0;
    }
    const auto value_of = [&](std::string_view flag) -> const char* {
      if (arg.size() > flag.size() && arg.substr(0, flag.size()) == flag && arg[flag.size()] == '=') {
        return argv[i] + flag.size() + 1;
      }
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s: %s needs a number\n", kProgram, argv[i]);
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--crashes" || arg.starts_with("--crashes=")) {
      crashes = static_cast<std::size_t>(parse_count("--crashes", value_of("--crashes"), 1, 100'000));
    } else if (arg == "--hangs" || arg.starts_with("--hangs=")) {
      hangs = static_cast<std::size_t>(parse_count("--hangs", value_of("--hangs"), 0, 100'000));
    } else {
      std::fprintf(stderr, "%s: unknown argument '%s'\n", kProgram, argv[i]);
      usage(stderr);
      return 2;
    }
  }

  const char* from_env = std::getenv("FLOTILLA_ECHO");
  const std::string echo = from_env != nullptr && from_env[0] != '\0' ? from_env : FLOTILLA_ECHO_PATH;
  if (echo.empty()) fail("no echo component binary: set FLOTILLA_ECHO to flotilla-echo's path");
  if (echo.front() != '/') fail("FLOTILLA_ECHO must be an absolute path, not " + echo);
  if (::access(echo.c_str(), X_OK) != 0) fail(errno_text(("echo component " + echo).c_str()));
  char self[PATH_MAX];
  const ssize_t self_length = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (self_length <= 0) fail(errno_text("readlink /proc/self/exe"));
  self[self_length] = '\0';

  // 200 crashing processes should not leave 200 core files, nor wait for them to be written.
  rlimit no_core{0, 0};
  if (::setrlimit(RLIMIT_CORE, &no_core) != 0) fail(errno_text("setrlimit RLIMIT_CORE"));

  std::printf("%s: %zu crashes and %zu hangs of the echo middle; heartbeat limit %llu ms, "
              "restart backoff off\n  echo component: %s\n",
              kProgram, crashes, hangs, static_cast<unsigned long long>(kHeartbeatMs), echo.c_str());
  std::fflush(stdout);

  std::mt19937 random(std::random_device{}());
  Series flotilla_crash, flotilla_hang, baseline_crash, baseline_hang;
  const std::uint64_t began = monotonic_ns();
  run_flotilla(echo, crashes, hangs, random, flotilla_crash, flotilla_hang);
  run_baseline(self, crashes, hangs, random, baseline_crash, baseline_hang);

  std::printf("\nrecovery of the echo middle, ms (baseline: SIGKILL + waitpid + fork/exec of a fresh "
              "process, first reply over a Unix socket)\n");
  std::printf("%-34s %10s %10s %10s %10s %9s  %s\n", "metric", "flotilla", "flotilla", "baseline",
              "baseline", "ratio", "target");
  std::printf("%-34s %10s %10s %10s %10s %9s  %s\n", "", "p50", "p99", "p50", "p99", "p50 F/B",
              "p50 < 10 ms");
  print_row("crash: kill -> first served", flotilla_crash.fault_to_served,
            baseline_crash.fault_to_served, true);
  print_row("crash: detection -> first served", flotilla_crash.detect_to_served,
            baseline_crash.detect_to_served, true);
  print_row("hang: fault -> first served", flotilla_hang.fault_to_served,
            baseline_hang.fault_to_served, false);
  print_row("hang: detection -> first served", flotilla_hang.detect_to_served,
            baseline_hang.detect_to_served, false);
  std::printf("\nsamples: %zu crashes, %zu hangs each; kill = the supervisor's fault_injected event "
              "(baseline: kill()); detection = exit / hang_detected event (baseline: waitpid "
              "return / watchdog timeout); served = the recovered event's timestamp (the supervisor "
              "is polled every 1 ms while it waits). Hangs wait "
              "out the %llu ms heartbeat limit on both sides. Total run %.1f s.\n",
              crashes, hangs, static_cast<unsigned long long>(kHeartbeatMs),
              static_cast<double>(monotonic_ns() - began) / 1e9);
  return 0;
}
