// Least privilege (issue 18): every stack component runs its loop with no new privileges, no
// capabilities and a seccomp allow-list; the driver keeps a few capabilities only while it opens its
// device. A forbidden call kills the component with SIGSYS, and the supervisor restarts it like any
// crash (root).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>

#include "recovery/default_config.hpp"
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
    // The name fleet and one file server beside the network stack: every kind of component.
    ASSERT_EQ(stack_.start(names_, stack_config(names_, "pass all",
                                                std::string(recovery::kNameFleetConfig) + recovery::file_fleet_config(1))),
              "");
  }
  void TearDown() override { stack_.stop(); }


  // The component `name`, given a forbidden call to make, is killed with SIGSYS, restarted and
  // sandboxed again, and the stack still passes traffic.
  void expect_forbidden_call_restarts(const std::string& name) {
    const pid_t before = stack_.pids()[name];
    ASSERT_GT(before, 0) << name;
    ASSERT_TRUE(wait_for([&] { return process_status(before)["Seccomp"] == "2"; }, std::chrono::seconds(5))) << name;
    const CommandOutcome injected = run_cli("--socket " + stack_.socket_path() + " inject " + name + " forbidden-call");
    ASSERT_EQ(injected.exit_code, 0) << injected.output;
    ASSERT_TRUE(wait_for([&] {
      const pid_t now = stack_.pids()[name];
      return now > 0 && now != before;
    }, std::chrono::seconds(10))) << name << "\n" << stack_.events();
    const std::string events = stack_.events();
    EXPECT_NE(events.find(name + " "), std::string::npos) << events;
    EXPECT_NE(events.find("SIGSYS"), std::string::npos) << events;
    const pid_t after = stack_.pids()[name];
    EXPECT_TRUE(wait_for([&] { return process_status(after)["Seccomp"] == "2"; }, std::chrono::seconds(5))) << name;
    EXPECT_EQ(process_status(after)["CapEff"], "0000000000000000") << name;
    EXPECT_TRUE(wait_for([&] {
      return in_namespace(names_.peer_namespace, [&] {
        return run_shell("ping -c 1 -W 1 " + names_.stack_address + " > /dev/null 2>&1").exit_code == 0;
      });
    }, std::chrono::seconds(10))) << "no traffic after " << name << " was restarted";
  }

  StackNames names_;
  RunningStack stack_;
};

// Two stacks on one machine: the second driver's UMEM is locked memory of the same user, beyond
// RLIMIT_MEMLOCK with the first's, so the driver keeps CAP_IPC_LOCK while it sets up (without it
// the second driver died at every start with ENOBUFS from xsk_umem__create). Both pass traffic.
TEST_F(Sandbox, ASecondStackBesideTheFirstServesToo) {
  StackNames other = unique_names();
  for (std::string* name : {&other.peer_namespace, &other.stack_interface, &other.peer_interface}) *name += "2";
  other.stack_address = "10.80.0.2";
  other.peer_address = "10.80.0.1";
  RunningStack second;
  ASSERT_EQ(second.start(other, stack_config(other, "pass all")), "");
  for (const StackNames* stack : {&names_, &other}) {
    EXPECT_TRUE(wait_for([&] {
      return in_namespace(stack->peer_namespace, [&] {
        return run_shell("ping -c 1 -W 1 " + stack->stack_address + " > /dev/null 2>&1").exit_code == 0;
      });
    }, std::chrono::seconds(10))) << stack->stack_address;
  }
  second.stop();
}

TEST_F(Sandbox, ComponentsRunWithoutCapabilitiesUnderAFilter) {
  const auto pids = stack_.pids();
  for (const char* name : {"driver", "pf", "ip", "udp", "tcp0", "tcp1", "name0", "name1", "fs0"}) {
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

// The driver's device waker thread starts in the loop, after the sandbox: it has no capabilities
// either (they are per thread) and the same filter.
TEST_F(Sandbox, TheDriversThreadsAreSandboxedToo) {
  const pid_t driver = stack_.pids()["driver"];
  ASSERT_GT(driver, 0);
  ASSERT_TRUE(wait_for([&] {
    return std::distance(std::filesystem::directory_iterator("/proc/" + std::to_string(driver) + "/task"),
                         std::filesystem::directory_iterator{}) >= 2;
  }, std::chrono::seconds(5))) << "the driver has no waker thread";
  for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(driver) + "/task")) {
    const pid_t thread = static_cast<pid_t>(std::stol(task.path().filename().string()));
    auto status = process_status(thread);
    EXPECT_EQ(status["Seccomp"], "2") << thread;
    EXPECT_EQ(status["CapEff"], "0000000000000000") << thread;
    EXPECT_EQ(status["CapPrm"], "0000000000000000") << thread;
  }
}

TEST_F(Sandbox, AForbiddenCallIsKilledWithSigsysAndRestarted) {
  for (const char* name : {"pf", "driver", "fs0"}) {
    SCOPED_TRACE(name);
    expect_forbidden_call_restarts(name);
    if (HasFatalFailure()) return;
  }
}

}  // namespace
}  // namespace flotilla::testing
