// Application seats against a real supervisor: an echo server with two external components (the
// seats) wired to it. Leasing and releasing are driven directly, as the control socket does.
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "recovery/application_seats.hpp"
#include "recovery/supervisor.hpp"
#include "recovery/tests/supervised.hpp"

namespace flotilla::recovery {
namespace {

SupervisorConfig seats_config() {
  SupervisorConfig config;
  config.heartbeat_timeout = std::chrono::milliseconds(500);  // a busy machine must not fake a hang
  config.components.push_back(ComponentConfig{.name = "server", .binary = echo_binary(), .args = {"--role", "server"}});
  for (const char* name : {"app0", "app1"}) {
    ComponentConfig seat;
    seat.name = name;
    seat.external = true;
    config.components.push_back(seat);
  }
  config.channels.push_back(ChannelConfig{.name = "middle-server", .a = "app0", .b = "server", .capacity = 256});
  config.channels.push_back(ChannelConfig{.name = "app1-server", .a = "app1", .b = "server", .capacity = 256});
  return config;
}

// What descriptor `fd` of process `pid` (0: this one) is, as /proc shows it.
std::string fd_target(pid_t pid, int fd) {
  const std::string path = (pid == 0 ? std::string("/proc/self") : "/proc/" + std::to_string(pid)) + "/fd/" +
                           std::to_string(fd);
  std::error_code error;
  return std::filesystem::read_symlink(path, error).string();
}

class Seats : public ::testing::Test {
 protected:
  void SetUp() override {
    if (echo_binary().empty()) GTEST_SKIP() << "ECHO_COMPONENT is not set (run through meson test)";
    ASSERT_NO_FATAL_FAILURE(start_supervisor(seats_config(), "/", supervisor, nullptr, &seats));
  }

  ComponentView view(const std::string& name) const { return *supervisor->component(name); }

  // The detail of the last event of `kind` about `component`; "" when there is none.
  std::string last_detail(EventKind kind, const std::string& component) const {
    std::string detail;
    for (const Event& event : supervisor->log().events()) {
      if (event.kind == kind && event.component == component) detail = event.detail;
    }
    return detail;
  }

  std::unique_ptr<Supervisor> supervisor;
  std::unique_ptr<ApplicationSeats> seats;
};

TEST_F(Seats, SeatsStartIdleAndAreNotSpawned) {
  for (const char* name : {"app0", "app1"}) {
    EXPECT_EQ(view(name).status, ComponentStatus::idle) << name;
    EXPECT_EQ(view(name).pid, -1) << name;
    EXPECT_EQ(view(name).incarnation, 0u) << name;
  }
  EXPECT_EQ(view("server").status, ComponentStatus::running);
  EXPECT_FALSE(supervisor->inject("app0", Fault::crash)) << "a seat is no process of the supervisor's";
}

TEST_F(Seats, EachIdleSeatIsLeasedOnceThenTheProgramIsToldNoneIsFree) {
  auto first = seats->lease(1001);
  ASSERT_TRUE(first) << first.error().message();
  EXPECT_EQ(first->name, "app0");
  EXPECT_FALSE(first->fds.empty());
  EXPECT_EQ(view("app0").status, ComponentStatus::leased);
  EXPECT_EQ(view("app0").pid, 1001);
  EXPECT_EQ(view("app0").incarnation, 1u);
  EXPECT_EQ(last_detail(EventKind::leased, "app0"), "pid 1001");

  auto second = seats->lease(1002);
  ASSERT_TRUE(second) << second.error().message();
  EXPECT_EQ(second->name, "app1");

  auto third = seats->lease(1003);
  ASSERT_FALSE(third);
  EXPECT_EQ(third.error().code, Errc::exhausted);
  // ComponentHost::lease tells exhaustion by this prefix of the refusal it is sent.
  EXPECT_TRUE(std::string_view(third.error().context).starts_with("no free")) << third.error().context;
  EXPECT_EQ(supervisor->log().count(EventKind::leased), 2u);
}

TEST_F(Seats, ReleaseEndsTheLeaseWithANewIncarnation) {
  ASSERT_TRUE(seats->lease(1001));
  seats->release("app0");
  EXPECT_EQ(view("app0").status, ComponentStatus::idle);
  EXPECT_EQ(view("app0").pid, -1);
  EXPECT_EQ(view("app0").incarnation, 2u);
  EXPECT_EQ(last_detail(EventKind::released, "app0"), "pid 1001");

  // A seat that is not leased, or no seat at all: nothing happens.
  seats->release("app0");
  seats->release("app1");
  seats->release("server");
  seats->release("nobody");
  EXPECT_EQ(supervisor->log().count(EventKind::released), 1u);
  EXPECT_EQ(view("app0").incarnation, 2u);
  EXPECT_EQ(view("server").status, ComponentStatus::running);

  auto again = seats->lease(1004);
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(again->name, "app0");
  EXPECT_EQ(view("app0").incarnation, 3u);
  EXPECT_EQ(view("app0").pid, 1004);
}

TEST_F(Seats, TheHolderAndThePeersGetTheSeatsWakeEventfd) {
  auto lease = seats->lease(::getpid());
  ASSERT_TRUE(lease) << lease.error().message();
  // The holder's wake descriptor comes last (control_block.hpp).
  EXPECT_EQ(fd_target(0, lease->fds.back()), "anon_inode:[eventfd]");
  // The server: stdio, control, doorbells, state, pool (3-6), its two channels (7, 8), then the
  // wake eventfd of each seat at their other end (9, 10).
  const pid_t server = view("server").pid;
  ASSERT_GT(server, 0);
  ASSERT_TRUE(run_until(*supervisor, [&] { return runs(server, echo_binary()); }));
  // Right after exec the dynamic loader may still hold a library open at 11: wait for it to close.
  EXPECT_TRUE(run_until(*supervisor, [&] { return fd_target(server, 11).empty(); }))
      << "descriptor 11 stays open: " << fd_target(server, 11);
  EXPECT_EQ(fd_target(server, 9), "anon_inode:[eventfd]");
  EXPECT_EQ(fd_target(server, 10), "anon_inode:[eventfd]");
}

TEST_F(Seats, StoppingTheStackEndsEveryLease) {
  ASSERT_TRUE(seats->lease(1001));
  supervisor->stop();
  EXPECT_EQ(last_detail(EventKind::released, "app0"), "the stack stops");
  EXPECT_EQ(supervisor->log().count(EventKind::released), 1u) << "app1 was never leased";
  EXPECT_EQ(view("app0").status, ComponentStatus::stopped);
  EXPECT_EQ(view("app0").pid, -1);
  auto late = seats->lease(1002);
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().code, Errc::exhausted);
}

}  // namespace
}  // namespace flotilla::recovery
