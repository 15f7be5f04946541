// The `flotilla` command line against a real supervisor: every command once, bad arguments, a bad
// configuration file, and the stack not running.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "recovery/default_config.hpp"

namespace {

using namespace std::chrono_literals;

struct Outcome {
  int exit_code;
  std::string output;  // stdout and stderr together
};

std::string cli_path() {
  const char* path = std::getenv("FLOTILLA_CLI");
  return path != nullptr ? path : "";
}

Outcome run(const std::string& arguments) {
  const std::string command = cli_path() + " " + arguments + " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return {-1, "popen failed"};
  std::string output;
  char chunk[4096];
  while (std::size_t got = std::fread(chunk, 1, sizeof(chunk), pipe)) output.append(chunk, got);
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Polls `flotilla events` until its output contains `part`.
bool events_show(const std::string& part, std::chrono::seconds deadline = 10s) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < until) {
    if (contains(run("events").output, part)) return true;
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cli_path().empty()) GTEST_SKIP() << "FLOTILLA_CLI is not set (run through meson test)";
    char pattern[] = "/tmp/flotilla-cli-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    folder_ = pattern;
    ::setenv("FLOTILLA_SOCKET", (folder_ / "control.sock").c_str(), 1);
    // The echo chain needs no network, so these tests run without root and beside other tests.
    std::ofstream(folder_ / "echo.toml") << flotilla::recovery::kEchoChainConfig;
    up_ = "up --config " + (folder_ / "echo.toml").string();
  }
  void TearDown() override {
    if (folder_.empty()) return;
    if (run("status").exit_code == 0) run("down");  // never leave a supervisor behind
    std::filesystem::remove_all(folder_);
  }
  std::filesystem::path folder_;
  std::string up_;
};

TEST_F(Cli, NotRunningIsAClearErrorForEveryCommand) {
  for (const char* command : {"status", "status --json", "events", "top -n 1", "names", "counters", "down",
                              "inject middle crash"}) {
    const Outcome outcome = run(command);
    EXPECT_EQ(outcome.exit_code, 1) << command;
    EXPECT_TRUE(contains(outcome.output, "the stack is not running")) << command << ": " << outcome.output;
  }
}

TEST_F(Cli, EveryCommandHasHelp) {
  for (const char* command : {"", "up", "down", "status", "events", "top", "names", "counters", "inject"}) {
    const Outcome outcome = run(std::string(command) + " --help");
    EXPECT_EQ(outcome.exit_code, 0) << command;
    EXPECT_TRUE(contains(outcome.output, "Usage")) << command << ": " << outcome.output;
  }
  EXPECT_NE(run("").exit_code, 0);  // a command is required
  EXPECT_NE(run("launch").exit_code, 0);
}

TEST_F(Cli, BadConfigFileIsRefusedNamingItsLine) {
  const auto config = folder_ / "bad.toml";
  std::ofstream(config) << "[supervisor]\nheartbeat_timeout_ms = 50\nbeats = 3\n";
  const Outcome outcome = run("up --config " + config.string());
  EXPECT_EQ(outcome.exit_code, 2);
  EXPECT_TRUE(contains(outcome.output, "bad.toml:3: unknown key 'beats' in [supervisor]")) << outcome.output;
  EXPECT_NE(run("up --config " + (folder_ / "missing.toml").string()).exit_code, 0);
  EXPECT_EQ(run("status").exit_code, 1);  // nothing was started
}

TEST_F(Cli, UpInjectWatchAndDown) {
  Outcome outcome = run(up_);
  ASSERT_EQ(outcome.exit_code, 0) << outcome.output;
  EXPECT_TRUE(contains(outcome.output, "flotilla is up"));
  EXPECT_TRUE(contains(outcome.output, "middle"));
  EXPECT_EQ(run(up_).exit_code, 1);  // already running

  outcome = run("status");
  EXPECT_EQ(outcome.exit_code, 0);
  for (const char* name : {"client", "middle", "server"}) EXPECT_TRUE(contains(outcome.output, name));
  EXPECT_TRUE(contains(outcome.output, "'flotilla events' for all")) << outcome.output;  // recent events
  EXPECT_TRUE(events_show("start     server#1"));
  EXPECT_TRUE(contains(run("status --json").output, "{\"name\":\"middle\",\"id\":2,\"status\":\"running\""));

  outcome = run("inject middle crash");
  EXPECT_EQ(outcome.exit_code, 0) << outcome.output;
  EXPECT_TRUE(events_show("exit      middle#1  SIGSEGV"));
  EXPECT_TRUE(events_show("recovered middle#2"));

  outcome = run("inject middle hang --at 0.1");
  EXPECT_EQ(outcome.exit_code, 0) << outcome.output;
  EXPECT_TRUE(contains(outcome.output, "scheduled hang of middle in 100 ms"));
  EXPECT_TRUE(events_show("hang      middle#2  no heartbeat"));
  EXPECT_TRUE(events_show("recovered middle#3"));

  outcome = run("inject nobody crash");
  EXPECT_EQ(outcome.exit_code, 2);
  EXPECT_TRUE(contains(outcome.output, "no component named 'nobody'"));
  EXPECT_NE(run("inject middle explode").exit_code, 0);
  EXPECT_NE(run("inject middle crash --at -1").exit_code, 0);
  EXPECT_NE(run("inject middle").exit_code, 0);

  outcome = run("top -n 1");
  EXPECT_EQ(outcome.exit_code, 0);
  EXPECT_TRUE(contains(outcome.output, "msgs in/s"));
  EXPECT_TRUE(contains(outcome.output, "server"));

  outcome = run("counters middle");
  EXPECT_EQ(outcome.exit_code, 0);
  EXPECT_TRUE(contains(outcome.output, "middle\n  ")) << outcome.output;
  EXPECT_TRUE(contains(outcome.output, "messages_in")) << outcome.output;
  EXPECT_FALSE(contains(outcome.output, "server")) << outcome.output;
  EXPECT_EQ(run("counters nobody").exit_code, 2);

  // The default configuration runs a name fleet in which every component is registered.
  outcome = run("names");
  EXPECT_EQ(outcome.exit_code, 0) << outcome.output;
  for (const char* name : {"/proc/client", "/proc/middle", "/proc/server", "/proc/name0", "/proc/name1"}) {
    EXPECT_TRUE(contains(outcome.output, name)) << name << "\n" << outcome.output;
  }

  // events --follow keeps printing until stopped.
  const std::string follow = cli_path() + " events --follow > " + (folder_ / "follow.txt").string() + " 2>&1";
  const pid_t follower = ::fork();
  if (follower == 0) {
    ::execl("/bin/sh", "sh", "-c", ("exec " + follow).c_str(), nullptr);
    ::_exit(127);
  }
  const auto followed = [&] {
    std::ifstream file(folder_ / "follow.txt");
    return std::string((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  };
  const auto wait_for = [&](const std::string& part) {
    const auto until = std::chrono::steady_clock::now() + 10s;
    while (!contains(followed(), part) && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(20ms);
    }
    return contains(followed(), part);
  };
  EXPECT_TRUE(wait_for("start     client#1"));
  ASSERT_EQ(run("inject middle abort").exit_code, 0);
  EXPECT_TRUE(wait_for("SIGABRT")) << followed();  // printed by the follower, as it happened
  ::kill(follower, SIGTERM);
  ::waitpid(follower, nullptr, 0);

  outcome = run("down");
  EXPECT_EQ(outcome.exit_code, 0) << outcome.output;
  EXPECT_TRUE(contains(outcome.output, "flotilla is down"));
  EXPECT_EQ(run("status").exit_code, 1);
}

}  // namespace
