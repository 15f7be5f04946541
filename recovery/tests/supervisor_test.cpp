// The supervisor against real component processes: a three-process echo chain whose middle is
// crashed, aborted and hung again and again while requests stream through it; the crash-loop
// limit; descriptors across restarts.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <filesystem>
#include <random>
#include <set>
#include <string>

#include <gtest/gtest.h>

#include "dataplane/idle_waiter.hpp"
#include "recovery/default_config.hpp"
#include "recovery/supervisor.hpp"
#include "recovery/tests/supervised.hpp"
#include "apps/echo/echo_protocol.hpp"

namespace flotilla::recovery {
namespace {

using namespace std::chrono_literals;

// The default configuration (the echo chain), made harder: the client unpaced, and no crash-loop
// limit in the way of hundreds of injected faults.
SupervisorConfig chain_config() {
  auto outcome = parse_config(kEchoChainConfig, "<echo chain config>");
  if (auto* error = std::get_if<ConfigError>(&outcome)) ADD_FAILURE() << error->message;
  SupervisorConfig config = std::get<SupervisorConfig>(outcome);
  config.restart.crash_limit = 100'000;
  config.restart.window = std::chrono::milliseconds(1000);
  // 200 ms, as the stack's default: at 50 ms a busy 2-core machine starves a component that long
  // now and then, and the test then counts a hang nobody injected.
  config.heartbeat_timeout = std::chrono::milliseconds(200);
  for (auto& component : config.components) {
    if (component.name == "client") component.args = {"--role", "client"};
  }
  return config;
}

std::set<int> open_fds(pid_t pid) {
  std::set<int> fds;
  const std::string path = pid == 0 ? "/proc/self/fd" : "/proc/" + std::to_string(pid) + "/fd";
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) return fds;
  while (dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] != '.') fds.insert(std::atoi(entry->d_name));
  }
  if (pid == 0) fds.erase(::dirfd(dir));  // the listing's own descriptor
  ::closedir(dir);
  return fds;
}

class SupervisorChain : public ::testing::Test {
 protected:
  void SetUp() override {
    if (echo_binary().empty()) GTEST_SKIP() << "ECHO_COMPONENT is not set (run through meson test)";
    auto created = Supervisor::create(chain_config(), component_folder());
    ASSERT_TRUE(created) << created.error().message();
    supervisor = std::move(created.value());
    ASSERT_TRUE(supervisor->start());
    client = reinterpret_cast<echo::ClientState*>(supervisor->state_of("client").data());
    server = reinterpret_cast<echo::ServerState*>(supervisor->state_of("server").data());
    ASSERT_TRUE(run_until(*supervisor, [&] { return client->answered.load() > 1000; }, 10s))
        << "the chain never got going";
  }

  // Injects `fault` into the middle and waits until its next incarnation has served a message.
  void fail_middle_and_wait(Fault fault) {
    const auto before = supervisor->log().count(EventKind::recovered, "middle");
    const auto incarnation = supervisor->component("middle")->incarnation;
    ASSERT_TRUE(supervisor->inject("middle", fault));
    ASSERT_TRUE(run_until(
        *supervisor,
        [&] { return supervisor->log().count(EventKind::recovered, "middle") > before; }, 5s))
        << "middle did not recover from incarnation " << incarnation;
    EXPECT_EQ(supervisor->component("middle")->incarnation, incarnation + 1);
  }

  // Stops the stream and waits until every request sent has been answered.
  void finish_stream() {
    client->stop_after.store(client->sent_next.load() + 500);
    ASSERT_TRUE(run_until(*supervisor, [&] { return client->done.load() == 1; }, 30s))
        << "answered " << client->answered.load() << " of " << client->stop_after.load();
    const std::uint64_t total = client->stop_after.load();
    EXPECT_EQ(client->answered.load(), total);
    EXPECT_EQ(server->applied_next.load(), total);
    std::uint64_t sum = 0;
    for (std::uint64_t s = 0; s < total; ++s) sum += echo::value_of(s);
    EXPECT_EQ(server->sum.load(), sum) << "a request was applied twice or not at all";
  }

  std::unique_ptr<Supervisor> supervisor;
  echo::ClientState* client = nullptr;
  echo::ServerState* server = nullptr;
};

TEST_F(SupervisorChain, EveryRequestAnsweredOnceThroughCrashesAbortsAndHangs) {
  constexpr int kEach = 100;
  const Fault kinds[] = {Fault::crash, Fault::abort, Fault::hang};
  std::mt19937 random(5);
  for (int round = 0; round < kEach; ++round) {
    for (Fault fault : kinds) {
      supervisor->run_for(std::chrono::milliseconds(1 + random() % 10));  // a random moment
      fail_middle_and_wait(fault);
      if (HasFatalFailure()) return;
    }
  }
  finish_stream();

  const EventLog& log = supervisor->log();
  EXPECT_EQ(log.count(EventKind::fault_injected, "middle"), 3u * kEach);
  EXPECT_EQ(log.count(EventKind::exit, "middle"), 3u * kEach);
  EXPECT_EQ(log.count(EventKind::hang_detected, "middle"), 1u * kEach);
  EXPECT_EQ(log.count(EventKind::restart, "middle"), 3u * kEach);
  EXPECT_EQ(log.count(EventKind::recovered, "middle"), 3u * kEach);
  std::size_t segv = 0, abrt = 0, killed = 0;
  for (const Event& event : log.events()) {
    if (event.kind != EventKind::exit) continue;
    segv += event.value == SIGSEGV;
    abrt += event.value == SIGABRT;
    killed += event.value == SIGKILL;
  }
  EXPECT_EQ(segv, 1u * kEach);
  EXPECT_EQ(abrt, 1u * kEach);
  EXPECT_EQ(killed, 1u * kEach);
  // Every recovery follows its detection and carries how long it took.
  std::uint64_t detected_at = 0;
  for (const Event& event : log.events()) {
    if (event.component != "middle") continue;
    if (event.kind == EventKind::exit || event.kind == EventKind::hang_detected) {
      if (detected_at == 0) detected_at = event.at_ns;
    } else if (event.kind == EventKind::recovered) {
      ASSERT_NE(detected_at, 0u) << "recovered without a detection";
      EXPECT_GT(event.value, 0u);
      EXPECT_EQ(event.value, event.at_ns - detected_at);
      detected_at = 0;
    }
  }
  EXPECT_EQ(client->rejected.load() + server->rejected.load(), 0u);  // only `corrupt` garbles
  EXPECT_EQ(supervisor->component("client")->incarnation, 1u);
  EXPECT_EQ(supervisor->component("server")->incarnation, 1u);
}

TEST_F(SupervisorChain, GarbledMessageIsRejectedCountedAndRecovered) {
  for (int i = 0; i < 5; ++i) {
    const auto rejected = client->rejected.load() + server->rejected.load();
    ASSERT_TRUE(supervisor->inject("middle", Fault::corrupt));
    ASSERT_TRUE(run_until(*supervisor, [&] {
      return client->rejected.load() + server->rejected.load() > rejected;
    }, 5s));
  }
  finish_stream();
  EXPECT_EQ(client->rejected.load() + server->rejected.load(), 5u);
  EXPECT_EQ(supervisor->component("middle")->incarnation, 1u);  // garbling is not a crash
}

TEST_F(SupervisorChain, RestartsLeakNoDescriptors) {
  const std::set<int> supervisor_fds = open_fds(0);
  for (int i = 0; i < 20; ++i) fail_middle_and_wait(Fault::crash);
  EXPECT_EQ(open_fds(0), supervisor_fds) << "the supervisor keeps descriptors of dead incarnations";
  const pid_t middle = supervisor->component("middle")->pid;
  // stdio, control, doorbells, state, pool, and its two channels: nothing else.
  EXPECT_EQ(open_fds(middle), (std::set<int>{0, 1, 2, 3, 4, 5, 6, 7, 8}));
  finish_stream();
}

// The access mode a process holds descriptor `fd` with (O_RDONLY, O_RDWR, ...), from fdinfo.
int access_mode(pid_t pid, int fd) {
  std::ifstream info("/proc/" + std::to_string(pid) + "/fdinfo/" + std::to_string(fd));
  for (std::string key; info >> key;) {
    if (key == "flags:") {
      std::string octal;
      info >> octal;
      return static_cast<int>(std::stoul(octal, nullptr, 8)) & O_ACCMODE;
    }
  }
  return -1;
}

TEST(Supervisor, DeclaredRegionGoesOnlyToItsComponentsWithTheirAccess) {
  if (echo_binary().empty()) GTEST_SKIP() << "ECHO_COMPONENT is not set (run through meson test)";
  SupervisorConfig config = chain_config();
  config.regions.push_back(RegionConfig{"routes", 10'000, {"client"}, {"middle"}});
  auto supervisor = Supervisor::create(std::move(config), component_folder());
  ASSERT_TRUE(supervisor) << supervisor.error().message();
  ASSERT_TRUE((*supervisor)->start());
  (*supervisor)->run_for(300ms);
  const pid_t client = (*supervisor)->component("client")->pid;
  const pid_t middle = (*supervisor)->component("middle")->pid;
  const pid_t server = (*supervisor)->component("server")->pid;
  ASSERT_GT(client, 0);
  // client: stdio, 3-6, one channel (7), then the region (8).
  EXPECT_EQ(open_fds(client), (std::set<int>{0, 1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(access_mode(client, 8), O_RDWR);
  // middle: two channels (7, 8), then the region (9), which it may only read.
  EXPECT_EQ(open_fds(middle), (std::set<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  EXPECT_EQ(access_mode(middle, 9), O_RDONLY);
  // server was not given it.
  EXPECT_EQ(open_fds(server), (std::set<int>{0, 1, 2, 3, 4, 5, 6, 7}));
}

// A component's environment as `NAME=VALUE` entries.
std::set<std::string> environment_of(pid_t pid) {
  std::ifstream file("/proc/" + std::to_string(pid) + "/environ");
  std::set<std::string> entries;
  for (std::string entry; std::getline(file, entry, '\0');) entries.insert(entry);
  return entries;
}

TEST(Supervisor, EachComponentWaitsAsItsConfigurationSays) {
  if (echo_binary().empty()) GTEST_SKIP() << "ECHO_COMPONENT is not set (run through meson test)";
  // The supervisor's own setting must not leak to a component whose configuration names none.
  ::setenv(kWaitPolicyVariable, "dedicated", 1);
  SupervisorConfig config = chain_config();
  for (ComponentConfig& component : config.components) {
    if (component.name == "server") component.wait = "poll";
  }
  auto supervisor = Supervisor::create(std::move(config), component_folder());
  ASSERT_TRUE(supervisor) << supervisor.error().message();
  const Status started = (*supervisor)->start();
  ::unsetenv(kWaitPolicyVariable);
  ASSERT_TRUE(started);
  (*supervisor)->run_for(500ms);
  const pid_t middle = (*supervisor)->component("middle")->pid;
  const pid_t server = (*supervisor)->component("server")->pid;
  ASSERT_GT(server, 0);
  const std::string setting = std::string(kWaitPolicyVariable) + "=";
  EXPECT_EQ(environment_of(server).count(setting + "poll"), 1u);
  for (const std::string& entry : environment_of(middle)) EXPECT_NE(entry.rfind(setting, 0), 0u) << entry;
  // A polling server never gives its core away; the middle one, with the binary's own shared-core
  // policy, yields or sleeps between the client's requests.
  const auto gave_way = [&](std::string_view name) {
    const CounterBlock* counters = (*supervisor)->counters_of(name);
    return counters->read(Counter::sleeps) + counters->read(Counter::yields);
  };
  EXPECT_EQ(gave_way("server"), 0u);
  EXPECT_GT(gave_way("middle"), 0u);
}

TEST(Supervisor, CrashLoopIsStoppedAndReported) {
  if (echo_binary().empty()) GTEST_SKIP() << "ECHO_COMPONENT is not set (run through meson test)";
  auto outcome = parse_config(R"(
[supervisor]
crash_limit = 5
crash_window_ms = 10000
max_backoff_ms = 20
[[component]]
name = "doomed"
binary = ")" + echo_binary() + R"("
args = ["--role", "crash-at-start"]
)", "loop.toml");
  ASSERT_TRUE(std::holds_alternative<SupervisorConfig>(outcome));
  auto supervisor = Supervisor::create(std::get<SupervisorConfig>(outcome), "/");
  ASSERT_TRUE(supervisor);
  ASSERT_TRUE((*supervisor)->start());
  ASSERT_TRUE(run_until(**supervisor, [&] {
    return (*supervisor)->component("doomed")->status == ComponentStatus::failed;
  }, 10s));
  (*supervisor)->run_for(200ms);  // and it stays down
  const EventLog& log = (*supervisor)->log();
  EXPECT_EQ(log.count(EventKind::exit), 5u);
  EXPECT_EQ(log.count(EventKind::restart), 4u);
  EXPECT_EQ(log.count(EventKind::failed), 1u);
  EXPECT_EQ((*supervisor)->component("doomed")->status, ComponentStatus::failed);
  EXPECT_EQ((*supervisor)->component("doomed")->pid, -1);
}

// A component's reports (ComponentHost::report) become `reported` events of its incarnation: the
// text cut to 55 bytes, anything unprintable shown as '?', and at most kMaxReportsPerIncarnation
// of them, then one line that says the rest are dropped.
TEST(Supervisor, ReportsGoToTheEventLogCutCleanedAndBounded) {
  if (echo_binary().empty()) GTEST_SKIP() << "ECHO_COMPONENT is not set (run through meson test)";
  const std::string text = "offload failed:\tthe device said no, and then it said no again, twice";
  SupervisorConfig config = chain_config();
  for (auto& component : config.components) {
    if (component.name != "server") continue;
    component.args.insert(component.args.end(), {"--report", text, "--report-times", "40"});
  }
  auto supervisor = Supervisor::create(config, component_folder());
  ASSERT_TRUE(supervisor) << supervisor.error().message();
  ASSERT_TRUE((*supervisor)->start());
  const EventLog& log = (*supervisor)->log();
  ASSERT_TRUE(run_until(**supervisor, [&] {
    return log.count(EventKind::reported, "server") == kMaxReportsPerIncarnation + 1;
  }, 10s)) << log.count(EventKind::reported, "server") << " reports";
  (*supervisor)->run_for(200ms);  // nothing more comes in
  (*supervisor)->stop();
  std::string expected = text.substr(0, Message::kBodyBytes - 1);
  expected[expected.find('\t')] = '?';
  std::vector<std::string> details;
  for (const Event& event : log.events()) {
    if (event.kind == EventKind::reported) details.push_back(event.detail);
  }
  ASSERT_EQ(details.size(), kMaxReportsPerIncarnation + 1);
  for (std::size_t i = 0; i < kMaxReportsPerIncarnation; ++i) EXPECT_EQ(details[i], expected);
  EXPECT_EQ(details.back(), "further reports of this incarnation are dropped");
  EXPECT_EQ(log.count(EventKind::reported), kMaxReportsPerIncarnation + 1) << "only the server reported";
}

TEST(Supervisor, RefusesMissingBinaryAndUnknownComponent) {
  SupervisorConfig config;
  ComponentConfig ghost;
  ghost.name = "ghost";
  ghost.binary = "/nonexistent/flotilla-ghost";
  config.components.push_back(ghost);
  auto supervisor = Supervisor::create(config, "/");
  ASSERT_FALSE(supervisor);
  EXPECT_EQ(supervisor.error().code, Errc::system);
}

}  // namespace
}  // namespace flotilla::recovery
