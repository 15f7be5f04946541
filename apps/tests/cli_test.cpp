// The `flotilla` command line against a real supervisor: every command once, bad arguments, a bad
// configuration file, and the stack not running.
#include <elf.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "recovery/config.hpp"
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
  for (const char* command : {"", "up", "down", "status", "events", "top", "names", "counters", "inject", "config"}) {
    const Outcome outcome = run(std::string(command) + " --help");
    EXPECT_EQ(outcome.exit_code, 0) << command;
    EXPECT_TRUE(contains(outcome.output, "Usage")) << command << ": " << outcome.output;
  }
  EXPECT_NE(run("").exit_code, 0);  // a command is required
  EXPECT_NE(run("launch").exit_code, 0);
}

// The smallest ELF image of `elf_class` whose program headers are `segments` (type, then the
// note's owner for a PT_NOTE, "" for none), written to `path` as an executable.
void write_image(const std::filesystem::path& path, unsigned char elf_class,
                 const std::vector<std::pair<std::uint32_t, std::string>>& segments) {
  std::string bytes(sizeof(Elf64_Ehdr) + segments.size() * sizeof(Elf64_Phdr), '\0');
  Elf64_Ehdr header{};
  std::memcpy(header.e_ident, ELFMAG, SELFMAG);
  header.e_ident[EI_CLASS] = elf_class;
  header.e_ident[EI_DATA] = ELFDATA2LSB;
  header.e_ident[EI_VERSION] = EV_CURRENT;
  header.e_type = ET_EXEC;
  header.e_machine = EM_X86_64;
  header.e_phoff = sizeof(Elf64_Ehdr);
  header.e_phentsize = sizeof(Elf64_Phdr);
  header.e_phnum = static_cast<std::uint16_t>(segments.size());
  std::memcpy(bytes.data(), &header, sizeof(header));
  for (std::size_t i = 0; i < segments.size(); ++i) {
    Elf64_Phdr segment{};
    segment.p_type = segments[i].first;
    if (segment.p_type == PT_NOTE) {
      // Owner, NUL, padded to 4; then a 4-byte descriptor.
      std::string owner = segments[i].second + '\0';
      owner.resize((owner.size() + 3) & ~std::size_t{3}, '\0');
      Elf64_Nhdr note{static_cast<Elf64_Word>(segments[i].second.size() + 1), 4, 4};
      segment.p_offset = bytes.size();
      bytes.append(reinterpret_cast<const char*>(&note), sizeof(note));
      bytes += owner;
      bytes.append("abcd");
      segment.p_filesz = bytes.size() - segment.p_offset;
    }
    std::memcpy(bytes.data() + sizeof(Elf64_Ehdr) + i * sizeof(Elf64_Phdr), &segment, sizeof(segment));
  }
  std::ofstream(path, std::ios::binary) << bytes;
  std::filesystem::permissions(path, std::filesystem::perms::owner_all);
}

TEST_F(Cli, RunSaysWhenTheLibraryCannotReachAProgramsSockets) {
  const char* static_program = std::getenv("FLOTILLA_STATIC_PROGRAM");
  ASSERT_NE(static_program, nullptr);
  write_image(folder_ / "go-program", ELFCLASS64, {{PT_INTERP, ""}, {PT_NOTE, "GNU"}, {PT_NOTE, "Go"}});
  write_image(folder_ / "old-program", ELFCLASS32, {});
  write_image(folder_ / "dynamic-program", ELFCLASS64, {{PT_INTERP, ""}, {PT_NOTE, "GNU"}});
  std::ofstream(folder_ / "script") << "#!/bin/sh\nexit 0\n";
  std::filesystem::permissions(folder_ / "script", std::filesystem::perms::owner_all);
  const std::string bypass = "its sockets stay the kernel's";
  for (const auto& [program, why] : std::vector<std::pair<std::string, std::string>>{
           {static_program, "is statically linked"},
           {(folder_ / "go-program").string(), "is a Go program"},
           {(folder_ / "old-program").string(), "is a 32-bit program"},
           {(folder_ / "dynamic-program").string(), ""},
           {(folder_ / "script").string(), ""},
           {"true", ""}}) {
    // The stack is not running, so nothing starts: what it says of the program comes first.
    const Outcome outcome = run("run -- " + program);
    EXPECT_EQ(outcome.exit_code, 1) << program << ": " << outcome.output;
    EXPECT_TRUE(contains(outcome.output, "the stack is not running")) << program << ": " << outcome.output;
    EXPECT_EQ(contains(outcome.output, bypass), !why.empty()) << program << ": " << outcome.output;
    if (!why.empty()) {
      EXPECT_TRUE(contains(outcome.output, why)) << program << ": " << outcome.output;
    }
  }
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

// `flotilla config` prints what `up` runs by default: it parses back, and every key of the tables
// of single values has a comment above it.
TEST_F(Cli, ConfigPrintsTheDefaultWithACommentPerKey) {
  const Outcome outcome = run("config");
  ASSERT_EQ(outcome.exit_code, 0) << outcome.output;
  auto parsed = flotilla::recovery::parse_config(outcome.output, "flotilla config");
  ASSERT_TRUE(std::holds_alternative<flotilla::recovery::SupervisorConfig>(parsed))
      << std::get<flotilla::recovery::ConfigError>(parsed).message;
  const auto& config = std::get<flotilla::recovery::SupervisorConfig>(parsed);
  EXPECT_EQ(config.limits.app_seats, 64u);
  EXPECT_EQ(config.heartbeat_timeout, 200ms);

  std::istringstream lines(outcome.output);
  std::string line;
  std::string previous;
  std::string table;
  int keys = 0;
  while (std::getline(lines, line)) {
    if (line.starts_with("[")) table = line;
    const bool single_values = table == "[supervisor]" || table == "[limits]" || table == "[network]";
    const bool key = !line.empty() && line[0] != '#' && line[0] != '[' && line.find(" = ") != std::string::npos;
    if (single_values && key) {
      ++keys;
      // A key right under another shares its comment (a pair such as crash_limit and crash_window_ms).
      const bool commented = previous.starts_with("#") || previous.find(" = ") != std::string::npos;
      EXPECT_TRUE(commented) << table << " " << line;
    }
    previous = line;
  }
  EXPECT_GE(keys, 20);
}

TEST_F(Cli, UpSetOverridesOneKey) {
  Outcome outcome = run(up_ + " --set limits.nope=1");
  EXPECT_EQ(outcome.exit_code, 2);
  EXPECT_TRUE(contains(outcome.output, "flotilla: --set limits.nope=1: unknown key 'nope' in [limits]")) << outcome.output;
  outcome = run(up_ + " --set supervisor.crash_limit=many");
  EXPECT_EQ(outcome.exit_code, 2);
  EXPECT_TRUE(contains(outcome.output, "--set supervisor.crash_limit=many: 'crash_limit' must be an integer"))
      << outcome.output;
  outcome = run(up_ + " --set crash_limit=1");
  EXPECT_EQ(outcome.exit_code, 2);
  EXPECT_TRUE(contains(outcome.output, "expected TABLE.KEY=VALUE")) << outcome.output;
  EXPECT_EQ(run("status").exit_code, 1);  // nothing was started

  // The supervisor runs with the override: one crash is over the limit, so the component fails.
  outcome = run(up_ + " --set supervisor.crash_limit=1 --set supervisor.crash_window_ms=60000");
  ASSERT_EQ(outcome.exit_code, 0) << outcome.output;
  ASSERT_EQ(run("inject middle crash").exit_code, 0);
  EXPECT_TRUE(events_show("failed    middle#1"));
  EXPECT_EQ(run("down").exit_code, 0);
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
