// The control socket itself: malformed requests and strangers get clear errors.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include <gtest/gtest.h>

#include "recovery/control_socket.hpp"

namespace flotilla::recovery {
namespace {

class ControlSocket : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* echo = std::getenv("ECHO_COMPONENT");
    if (echo == nullptr) GTEST_SKIP() << "ECHO_COMPONENT is not set (run through meson test)";
    char pattern[] = "/tmp/flotilla-control-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    folder_ = pattern;
    path_ = (folder_ / "control.sock").string();
    SupervisorConfig config;
    config.components.push_back(ComponentConfig{.name = "server", .binary = "flotilla-echo", .args = {"--role", "server"}});
    auto supervisor = Supervisor::create(config, std::filesystem::path(echo).parent_path());
    ASSERT_TRUE(supervisor) << supervisor.error().message();
    supervisor_ = std::move(supervisor.value());
    auto server = ControlServer::listen(path_);
    ASSERT_TRUE(server) << server.error().message();
    server_.emplace(std::move(server.value()));
    serving_ = std::thread([this] {
      while (!stop_.load()) {
        std::vector<pollfd> fds = server_->pollfds();
        supervisor_->poll(std::chrono::milliseconds(5), fds);
        server_->serve(*supervisor_, fds);
      }
    });
  }
  void TearDown() override {
    stop_.store(true);
    if (serving_.joinable()) serving_.join();
    server_.reset();
    supervisor_.reset();
    if (!folder_.empty()) std::filesystem::remove_all(folder_);
  }

  std::string refusal_of(const std::string& request) {
    std::string refusal;
    auto reply = control_request(path_, request, &refusal);
    EXPECT_FALSE(reply) << request << " was accepted";
    return refusal;
  }

  std::filesystem::path folder_;
  std::string path_;
  std::unique_ptr<Supervisor> supervisor_;
  std::optional<ControlServer> server_;
  std::thread serving_;
  std::atomic<bool> stop_{false};
};

TEST_F(ControlSocket, MalformedRequestsGetClearErrors) {
  EXPECT_EQ(refusal_of("launch the rockets"), "unknown request 'launch the rockets'");
  EXPECT_EQ(refusal_of("   "), "empty request");
  EXPECT_EQ(refusal_of("events minus-one"), "events takes a start index");
  EXPECT_EQ(refusal_of("inject server melt"), "unknown fault 'melt' (crash, abort, hang or corrupt)");
  EXPECT_EQ(refusal_of("inject nobody crash"), "no component named 'nobody'");
  EXPECT_EQ(refusal_of("inject server crash soon"), "the delay must be whole milliseconds");
  EXPECT_EQ(refusal_of("status extra"), "unknown request 'status extra'");
  std::string refusal;
  auto status = control_request(path_, "status", &refusal);
  ASSERT_TRUE(status) << refusal;  // and the supervisor still answers
  EXPECT_NE(status->find("server"), std::string::npos);
}

// Runs a request as user `nobody`: 0 when it was refused (or could not connect), 2 when the
// supervisor answered, 4 when the refusal was not the credentials check's.
int request_as_stranger(const std::string& path, bool expect_credentials_refusal) {
  const pid_t stranger = ::fork();
  if (stranger == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(3);
    std::string refusal;
    auto reply = control_request(path, "status", &refusal);
    if (reply) ::_exit(2);
    if (expect_credentials_refusal && refusal.find("permission denied") == std::string::npos) ::_exit(4);
    ::_exit(0);
  }
  int status = 0;
  if (::waitpid(stranger, &status, 0) != stranger || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

TEST_F(ControlSocket, OnlyItsOwnerMayConnect) {
  struct stat info {};
  ASSERT_EQ(::stat(path_.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  if (::getuid() != 0) GTEST_SKIP() << "needs root to try the socket as another user";
  // Let strangers reach the socket file, so that only its own protections stand in the way.
  ASSERT_EQ(::chmod(folder_.c_str(), 0755), 0);
  EXPECT_EQ(request_as_stranger(path_, false), 0) << "mode 0600 let a stranger in";
  // Even with the file opened up by mistake, the peer-credentials check refuses the stranger.
  ASSERT_EQ(::chmod(path_.c_str(), 0666), 0);
  EXPECT_EQ(request_as_stranger(path_, true), 0) << "the credentials check let a stranger in";
}

}  // namespace
}  // namespace flotilla::recovery
