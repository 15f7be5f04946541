// The stack run by an unprivileged user (issue 18): the embedded network is refused with a message
// saying it needs root, and the two stacks joined in shared memory (configs/memwire-*.toml) run as
// `nobody`, every network component sandboxed (no new privileges, a seccomp filter, no
// capabilities), and exchange their datagrams. Run as root, which switches to nobody with setpriv;
// skipped without root or setpriv.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "tests/support/stack_harness.hpp"

namespace flotilla::testing {
namespace {

constexpr const char* kNobody = "setpriv --reuid=65534 --regid=65534 --clear-groups ";

// The value of `field` in /proc/PID/status ("" when the process or the field is not there).
std::string status_field(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(field + ":", 0) == 0) {
      const auto value = line.find_first_not_of(" \t", field.size() + 1);
      return value == std::string::npos ? "" : line.substr(value);
    }
  }
  return "";
}

class Unprivileged : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root, to run the stacks as nobody";
    if (run_shell("command -v setpriv > /dev/null").exit_code != 0) GTEST_SKIP() << "setpriv is not installed";
    const char* source = std::getenv("FLOTILLA_SOURCE_ROOT");
    ASSERT_TRUE(source != nullptr && *source != '\0') << "FLOTILLA_SOURCE_ROOT is not set (run through meson test)";
    char pattern[] = "/tmp/flotilla-unprivileged-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    folder_ = pattern;
    std::filesystem::permissions(folder_, std::filesystem::perms::all);  // nobody writes its sockets here
    wire_ = "/dev/shm/flotilla-unprivileged-" + std::to_string(::getpid());
    report_ = (folder_ / "client.report").string();
    for (const std::string side : {"a", "b"}) {
      std::ifstream shipped(std::string(source) + "/configs/memwire-" + side + ".toml");
      std::stringstream text;
      text << shipped.rdbuf();
      std::string config = text.str();
      ASSERT_FALSE(config.empty()) << "configs/memwire-" << side << ".toml";
      for (const auto& [from, to] : {std::pair<std::string, std::string>{"/dev/shm/flotilla-memwire", wire_},
                                     {"/tmp/flotilla-memwire.report", report_}}) {
        for (std::size_t at = 0; (at = config.find(from, at)) != std::string::npos; at += to.size()) {
          config.replace(at, from.size(), to);
        }
      }
      std::ofstream(folder_ / (side + ".toml")) << config;
    }
  }

  void TearDown() override {
    if (folder_.empty()) return;
    for (const char* side : {"a", "b"}) (void)as_nobody(std::string("down"), side);
    std::filesystem::remove_all(folder_);
    std::filesystem::remove(wire_);
  }

  // `flotilla --socket FOLDER/SIDE.sock ARGUMENTS` as nobody.
  CommandOutcome as_nobody(const std::string& arguments, const std::string& side) const {
    return run_shell(std::string(kNobody) + build_root() + "/apps/flotilla --socket " +
                     (folder_ / (side + ".sock")).string() + " " + arguments + " 2>&1");
  }

  std::filesystem::path folder_;
  std::string wire_;
  std::string report_;
};

TEST_F(Unprivileged, TheEmbeddedNetworkIsRefusedWithAClearMessage) {
  const CommandOutcome up = as_nobody("up", "embedded");
  EXPECT_EQ(up.exit_code, 1) << up.output;
  EXPECT_NE(up.output.find("needs root"), std::string::npos) << up.output;
  EXPECT_FALSE(std::filesystem::exists(folder_ / "embedded.sock"));
}

TEST_F(Unprivileged, MemwireStacksRunSandboxedAsNobody) {
  for (const char* side : {"a", "b"}) {
    const CommandOutcome up = as_nobody(std::string("up --config ") + (folder_ / (std::string(side) + ".toml")).string(), side);
    ASSERT_EQ(up.exit_code, 0) << up.output;
  }
  ASSERT_TRUE(wait_for([&] { return std::filesystem::exists(report_); }, std::chrono::seconds(60)))
      << as_nobody("events", "a").output << as_nobody("events", "b").output;
  std::string line;
  std::getline(std::ifstream(report_), line);
  EXPECT_NE(line.find("sent=1000 verified=1000 mismatched=0"), std::string::npos) << line;
  for (const char* side : {"a", "b"}) {
    SCOPED_TRACE(side);
    const std::string events = as_nobody("events", side).output;
    EXPECT_EQ(events.find("exit "), std::string::npos) << events;
    const auto status = nlohmann::json::parse(as_nobody("status --json", side).output, nullptr, false);
    ASSERT_TRUE(status.is_object() && status.contains("components")) << status.dump();
    for (const auto& component : status["components"]) {
      const std::string name = component.value("name", "");
      const pid_t pid = component.value("pid", -1);
      ASSERT_GT(pid, 0) << name;
      EXPECT_EQ(status_field(pid, "Uid").substr(0, 5), "65534") << name;
      // The echo server and the client are applications on the socket API; the stack is sandboxed.
      if (name == "echo" || name == "client") continue;
      EXPECT_TRUE(wait_for([&] { return status_field(pid, "Seccomp") == "2"; }, std::chrono::seconds(5))) << name;
      EXPECT_EQ(status_field(pid, "NoNewPrivs"), "1") << name;
      EXPECT_EQ(status_field(pid, "CapEff"), "0000000000000000") << name;
    }
  }
}

}  // namespace
}  // namespace flotilla::testing
