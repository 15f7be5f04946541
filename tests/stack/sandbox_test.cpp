// Least privilege (issue 18): every stack component but the driver runs its loop with no new
// privileges, no capabilities and a seccomp allow-list. A forbidden call kills the component with
// SIGSYS, and the supervisor restarts it like any crash (root).
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <string>

#include "tests/support/stack_harness.hpp"

namespace flotilla::testing {
namespace {

// The lines of /proc/PID/status this test reads, by field name ("CapEff", "Seccomp", ...).
std::map<std::string, std::string> process_status(pid_t pid) {
  std::map<std::string, std::string> fields;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    const auto value = line.find_first_not_of(" \t", colon + 1);
    fields[line.substr(0, colon)] = value == std::string::npos ? "" : line.substr(value);
  }
  return fields;
}

class Sandbox : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces, AF_XDP)";
    names_ = unique_names();
    ASSERT_EQ(stack_.start(names_, stack_config(names_, "pass all")), "");
  }
  void TearDown() override { stack_.stop(); }

  StackNames names_;
  RunningStack stack_;
};

TEST_F(Sandbox, ComponentsRunWithoutCapabilitiesUnderAFilter) {
  const auto pids = stack_.pids();
  for (const char* name : {"pf", "ip", "udp", "tcp0", "tcp1"}) {
    const auto found = pids.find(name);
    ASSERT_TRUE(found != pids.end() && found->second > 0) << name;
    auto status = process_status(found->second);
    // The loop may not have reached its sandbox yet right after `up`: wait for it.
    wait_for([&] { return (status = process_status(found->second))["Seccomp"] == "2"; }, std::chrono::seconds(5));
    EXPECT_EQ(status["Seccomp"], "2") << name << ": no seccomp filter";
    EXPECT_EQ(status["NoNewPrivs"], "1") << name;
    EXPECT_EQ(status["CapEff"], "0000000000000000") << name;
    EXPECT_EQ(status["CapPrm"], "0000000000000000") << name;
    EXPECT_EQ(status["CapBnd"], "0000000000000000") << name;
  }
}

TEST_F(Sandbox, AForbiddenCallIsKilledWithSigsysAndRestarted) {
  const pid_t before = stack_.pids()["pf"];
  ASSERT_GT(before, 0);
  const CommandOutcome injected = run_cli("--socket " + stack_.socket_path() + " inject pf forbidden-call");
  ASSERT_EQ(injected.exit_code, 0) << injected.output;
  ASSERT_TRUE(wait_for([&] {
    const pid_t now = stack_.pids()["pf"];
    return now > 0 && now != before;
  }, std::chrono::seconds(10))) << stack_.events();
  const std::string events = stack_.events();
  EXPECT_NE(events.find("SIGSYS"), std::string::npos) << events;
  // The new pf is sandboxed as the old one was, and the stack still passes traffic through it.
  const pid_t after = stack_.pids()["pf"];
  EXPECT_TRUE(wait_for([&] { return process_status(after)["Seccomp"] == "2"; }, std::chrono::seconds(5)));
  EXPECT_TRUE(in_namespace(names_.peer_namespace, [&] {
    return run_shell("ping -c 1 -W 2 " + names_.stack_address + " > /dev/null 2>&1").exit_code == 0;
  }));
}

}  // namespace
}  // namespace flotilla::testing
