// The registrar against a real supervisor and real name servers: which components are name
// servers (their role, not their binary's name), registering every component through them, again
// after a restart, and what it counts of notices that do not add up.
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "recovery/registrar.hpp"
#include "recovery/supervisor.hpp"
#include "recovery/tests/supervised.hpp"

namespace flotilla::recovery {
namespace {

using namespace std::chrono_literals;

std::string name_server_binary() { return component_folder() + "/flotilla-name-server"; }

// An echo server (with a seat-less external component as its other end) and two name servers:
// `names` runs the name server under another file name, `plain` runs it without a role.
class RegistrarTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (echo_binary().empty()) GTEST_SKIP() << "ECHO_COMPONENT is not set (run through meson test)";
    char pattern[] = "/tmp/flotilla-registrar-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    folder_ = pattern;
    renamed_ = folder_ / "my-names";
    std::filesystem::create_symlink(name_server_binary(), renamed_);
  }
  void TearDown() override {
    registrar.reset();
    supervisor.reset();
    if (!folder_.empty()) std::filesystem::remove_all(folder_);
  }

  void start(bool with_roles) {
    SupervisorConfig config;
    config.heartbeat_timeout = 500ms;  // a busy machine must not fake a hang
    config.components.push_back(ComponentConfig{.name = "server", .binary = echo_binary(), .args = {"--role", "server"}});
    ComponentConfig app;
    app.name = "app0";
    app.external = true;
    config.components.push_back(app);
    ComponentConfig names{.name = "names", .binary = renamed_.string(), .args = {}};
    ComponentConfig other{.name = "other", .binary = name_server_binary(), .args = {}};
    if (with_roles) names.role = other.role = ComponentRole::name_server;
    config.components.push_back(names);
    config.components.push_back(other);
    config.channels.push_back(ChannelConfig{.name = "middle-server", .a = "app0", .b = "server", .capacity = 256});
    config.channels.push_back(ChannelConfig{.name = "fleet-names-other", .a = "names", .b = "other", .capacity = 256});
    ASSERT_NO_FATAL_FAILURE(start_supervisor(std::move(config), "/", supervisor, &registrar));
  }

  std::size_t registered(const std::string& component) const {
    return supervisor->log().count(EventKind::registered, component);
  }

  std::filesystem::path folder_;
  std::filesystem::path renamed_;
  std::unique_ptr<Supervisor> supervisor;
  std::unique_ptr<Registrar> registrar;
};

TEST_F(RegistrarTest, TheRoleMakesANameServerWhateverItsBinaryIsCalled) {
  ASSERT_NO_FATAL_FAILURE(start(true));
  ASSERT_TRUE(registrar->has_name_fleet());
  ASSERT_TRUE(run_until(*supervisor, [&] { return registrar->pending_registrations() == 0; }));
  // Every component the supervisor started, through the lowest-id serving server; not the seat.
  for (const char* name : {"server", "names", "other"}) {
    EXPECT_EQ(registered(name), 1u) << name;
  }
  EXPECT_EQ(registered("app0"), 0u);
  for (const Event& event : supervisor->log().events()) {
    if (event.kind == EventKind::registered) {
      EXPECT_EQ(event.detail, "/proc/" + event.component + " via names");
    }
  }
  auto rows = registrar->names("other");
  ASSERT_TRUE(rows) << rows.error().message();
  const NameRow* server = row_of(*rows, "/proc/server");
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(server->kind, "direct");
  EXPECT_EQ(server->owner, supervisor->component("server")->id);
  EXPECT_EQ(server->incarnation, 1u);
  EXPECT_EQ(registrar->stats().registrations, 3u);
  EXPECT_EQ(registrar->stats().bad_messages, 0u);
}

TEST_F(RegistrarTest, WithoutARoleANameServerBinaryIsAPlainComponent) {
  ASSERT_NO_FATAL_FAILURE(start(false));
  supervisor->run_for(300ms);
  EXPECT_FALSE(registrar->has_name_fleet());
  EXPECT_EQ(supervisor->log().count(EventKind::registered), 0u);
  EXPECT_EQ(registrar->pending_registrations(), 0u);
  auto rows = registrar->names();
  ASSERT_FALSE(rows);
  EXPECT_STREQ(rows.error().context, "no name fleet in this configuration");
  // No channel to the supervisor was granted: stdio, 3-6, and its one fleet channel.
  const pid_t other = supervisor->component("other")->pid;
  ASSERT_GT(other, 0);
  ASSERT_TRUE(run_until(*supervisor, [&] { return runs(other, name_server_binary()); }));
  std::error_code error;
  EXPECT_TRUE(std::filesystem::exists("/proc/" + std::to_string(other) + "/fd/7", error));
  EXPECT_FALSE(std::filesystem::exists("/proc/" + std::to_string(other) + "/fd/8", error));
}

TEST_F(RegistrarTest, ARestartedComponentIsRegisteredAtItsNewIncarnation) {
  ASSERT_NO_FATAL_FAILURE(start(true));
  ASSERT_TRUE(run_until(*supervisor, [&] { return registrar->pending_registrations() == 0; }));
  ASSERT_TRUE(supervisor->inject("server", Fault::crash));
  ASSERT_TRUE(run_until(*supervisor, [&] { return registered("server") == 2; }));
  for (const char* server : {"names", "other"}) {
    auto rows = registrar->names(server, 5s);
    ASSERT_TRUE(rows) << server << ": " << rows.error().message();
    const NameRow* row = row_of(*rows, "/proc/server");
    ASSERT_NE(row, nullptr) << server;
    EXPECT_EQ(row->incarnation, 2u) << server;
  }
}

TEST_F(RegistrarTest, AFleetJoinedNoticeThatDoesNotAddUpIsCounted) {
  ASSERT_NO_FATAL_FAILURE(start(true));
  const auto notice = [](ComponentId member, std::uint64_t incarnation) {
    return Message::make(kFleetJoinedKind, FleetNotice{member, kNoComponent, incarnation});
  };
  const ComponentView server = *supervisor->component("server");
  const ComponentView names = *supervisor->component("names");
  registrar->control_message(server, notice(server.id, server.incarnation));  // not a name server
  registrar->control_message(names, notice(server.id, names.incarnation));    // names another member
  registrar->control_message(names, notice(names.id, names.incarnation + 1));  // another incarnation
  EXPECT_EQ(registrar->stats().bad_messages, 3u);
  // Other kinds are not the registrar's business.
  registrar->control_message(server, Message::make(kMemberUpKind, FleetNotice{server.id, server.id, 1}));
  EXPECT_EQ(registrar->stats().bad_messages, 3u);
  // A founder serves already: its own notice is no news, and no joined event.
  registrar->control_message(names, notice(names.id, names.incarnation));
  EXPECT_EQ(registrar->stats().bad_messages, 3u);
  EXPECT_EQ(supervisor->log().count(EventKind::joined), 0u);
}

}  // namespace
}  // namespace flotilla::recovery
