// The control socket itself: malformed requests and strangers get clear errors.
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "apps/echo/echo_protocol.hpp"
#include "components/formats/tcp_socket_page.hpp"
#include "dataplane/fd_passing.hpp"
#include "dataplane/component_host.hpp"
#include "recovery/control_socket.hpp"
#include "recovery/tests/supervised.hpp"

namespace flotilla::recovery {
namespace {

class ControlSocket : public ::testing::Test {
 protected:
  void SetUp() override {
    if (echo_binary().empty()) GTEST_SKIP() << "ECHO_COMPONENT is not set (run through meson test)";
    char pattern[] = "/tmp/flotilla-control-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    folder_ = pattern;
    path_ = (folder_ / "control.sock").string();
    SupervisorConfig config;
    config.components.push_back(ComponentConfig{.name = "server", .binary = "flotilla-echo", .args = {"--role", "server"}});
    // An application seat for a program to lease, wired to the echo server as its middle.
    ComponentConfig seat;
    seat.name = "app0";
    seat.external = true;
    config.components.push_back(seat);
    if (two_seats_) {
      seat.name = "app1";
      config.components.push_back(seat);
      config.channels.push_back(ChannelConfig{.name = "app1-server", .a = "app1", .b = "server", .capacity = 256});
    }
    config.channels.push_back(ChannelConfig{.name = "middle-server", .a = "app0", .b = "server", .capacity = 256});
    // A socket region makes the server a TCP replica of the seat, to hear of its forks' ends.
    config.regions.push_back(RegionConfig{.name = formats::tcp_region_name("middle-server"), .bytes = 4096,
                                          .writers = {"app0", "server"}, .readers = {}});
    ASSERT_NO_FATAL_FAILURE(start_supervisor(config, component_folder(), supervisor_, &registrar_, &seats_));
    auto server = ControlServer::listen(path_);
    ASSERT_TRUE(server) << server.error().message();
    server_.emplace(std::move(server.value()));
    serving_ = std::thread([this] {
      while (!stop_.load()) {
        std::vector<pollfd> fds = server_->pollfds();
        supervisor_->poll(std::chrono::milliseconds(5), fds);
        server_->serve(*supervisor_, *registrar_, *seats_, fds);
      }
    });
  }
  void TearDown() override {
    stop_.store(true);
    if (serving_.joinable()) serving_.join();
    server_.reset();
    seats_.reset();
    registrar_.reset();
    supervisor_.reset();
    if (!folder_.empty()) std::filesystem::remove_all(folder_);
  }

  std::string refusal_of(const std::string& request) {
    std::string refusal;
    auto reply = control_request(path_, request, &refusal);
    EXPECT_FALSE(reply) << request << " was accepted";
    return refusal;
  }

  bool two_seats_ = false;
  std::filesystem::path folder_;
  std::string path_;
  std::unique_ptr<Supervisor> supervisor_;
  std::unique_ptr<Registrar> registrar_;
  std::unique_ptr<ApplicationSeats> seats_;
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

TEST_F(ControlSocket, StatusJsonListsEveryComponentWithItsProcess) {
  std::string refusal;
  auto reply = control_request(path_, "status-json", &refusal);
  ASSERT_TRUE(reply) << refusal;
  const auto status = nlohmann::json::parse(reply.value(), nullptr, false);
  ASSERT_FALSE(status.is_discarded()) << reply.value();
  ASSERT_TRUE(status["components"].is_array()) << reply.value();
  ASSERT_EQ(status["components"].size(), 2u) << reply.value();
  const auto& server = status["components"][0];
  EXPECT_EQ(server["name"], "server");
  EXPECT_EQ(server["status"], "running");
  EXPECT_EQ(server["incarnation"], 1);
  EXPECT_GT(server["pid"].get<int>(), 0);
  EXPECT_EQ(server["restarts"], 0);
  EXPECT_EQ(status["components"][1]["name"], "app0");
  EXPECT_EQ(status["components"][1]["id"], server["id"].get<int>() + 1);
  EXPECT_GE(status["events"].get<int>(), 1);  // at least the server's start
  // The pool: free buffers and each component's share are within its count.
  std::size_t counted = status["pool"]["free"].get<std::size_t>();
  EXPECT_GT(counted, 0u) << reply.value();
  for (const auto& component : status["components"]) counted += component["buffers"].get<std::size_t>();
  EXPECT_LE(counted, status["pool"]["buffers"].get<std::size_t>()) << reply.value();
  // Keys keep the order scripts have always seen.
  EXPECT_EQ(reply.value().rfind("{\"components\":[{\"name\":\"server\",\"id\":", 0), 0u) << reply.value();
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

std::string status_of(const std::string& path, const std::string& component) {
  std::string refusal;
  auto status = control_request(path, "status", &refusal);
  if (!status) return "no answer: " + refusal;
  std::istringstream lines(status.value());
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::string name, id, state;
    words >> name >> id >> state;
    if (name == component) return state;
  }
  return "absent";
}

TEST_F(ControlSocket, LeasedSeatTalksToItsPeerAndSleepsOnItsEventfd) {
  auto host = ComponentHost::lease(path_);
  ASSERT_TRUE(host) << host.error().message();
  ComponentHost& app = **host;
  EXPECT_EQ(app.name(), "app0");
  EXPECT_GE(app.lease_fd(), 0);
  EXPECT_GE(app.wake_fd(), 0);
  ChannelEnd* link = app.channel("middle-server");
  ASSERT_NE(link, nullptr);
  EXPECT_EQ(status_of(path_, "app0"), "leased");

  // The only seat is taken: a second program is told so.
  auto second = ComponentHost::lease(path_);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, Errc::exhausted) << second.error().message();

  std::size_t replies = 0;
  ASSERT_TRUE(app.loop().add_input(link->in, [&](std::span<const Message> messages) {
    for (const Message& message : messages) replies += echo::intact(message, echo::kReply) ? 1 : 0;
  }));
  // Asleep on the eventfd: the server's reply must write it.
  app.arm_wake();
  EXPECT_FALSE(app.loop().poll_once());
  const Message request = echo::make(echo::kRequest, 0);
  auto sent = app.send(*link, std::span(&request, 1));
  ASSERT_TRUE(sent && sent.value() == 1);
  pollfd wake{app.wake_fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&wake, 1, 10'000), 1) << "the server's reply did not write the wake eventfd";
  app.disarm_wake();
  EXPECT_EQ(::poll(&wake, 1, 0), 0) << "disarm_wake left the eventfd readable";
  EXPECT_TRUE(app.loop().poll_once());
  EXPECT_EQ(replies, 1u);

  // A peer's restart is news too: the supervisor's notice must write the eventfd of a sleeper.
  std::size_t restarts = 0;
  app.on_peer_restarted([&](ComponentId, std::uint64_t) { ++restarts; });
  app.arm_wake();
  EXPECT_FALSE(app.loop().poll_once());
  ASSERT_TRUE(supervisor_->inject("server", Fault::crash));
  ASSERT_EQ(::poll(&wake, 1, 10'000), 1) << "the peer-restart notice did not write the wake eventfd";
  app.disarm_wake();
  EXPECT_TRUE(app.loop().poll_once());
  EXPECT_EQ(restarts, 1u);

  // Closing the connection ends the lease; the seat is leased again as a new incarnation.
  const std::uint64_t first_incarnation = app.incarnation();
  host->reset();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (status_of(path_, "app0") != "idle" && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(status_of(path_, "app0"), "idle");
  auto again = ComponentHost::lease(path_);
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_GT((*again)->incarnation(), first_incarnation + 1);
}

// The echo server has no handler for the supervisor's messages: each fork-end notice it reads
// counts as corrupt, which is how this test sees what reached it.
std::uint64_t notices_read(const std::string& path) {
  std::string error;
  const auto answer = control_request(path, "counters", &error);
  return answer ? parse_counters(*answer)["server"]["corrupt"] : 0;
}

bool reaches(const std::string& path, std::uint64_t notices) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (notices_read(path) < notices && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return notices_read(path) == notices;
}

TEST_F(ControlSocket, AReplicaRestartedAfterAForkEndedHearsOfTheEndAgain) {
  auto host = ComponentHost::lease(path_);
  ASSERT_TRUE(host) << host.error().message();
  int token[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, token), 0);
  static constexpr char kHold[] = "fork-hold 7";
  const int passed[1] = {token[0]};
  ASSERT_TRUE(send_fds((*host)->lease_fd(), std::as_bytes(std::span(kHold, sizeof(kHold) - 1)), passed).ok());
  ::close(token[0]);
  ::close(token[1]);  // the fork's last process is gone
  EXPECT_TRUE(reaches(path_, 1)) << notices_read(path_) << " notices; the running replica was not told once";

  // Its pins came back from the slot table with the new incarnation: it must hear of the end again,
  // once.
  const std::uint64_t incarnation = supervisor_->component("server")->incarnation;
  ASSERT_TRUE(supervisor_->inject("server", Fault::crash));
  EXPECT_TRUE(reaches(path_, 2)) << notices_read(path_) << " notices; the restarted replica was not told";
  EXPECT_GT(supervisor_->component("server")->incarnation, incarnation);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(notices_read(path_), 2u) << "the end was told again without a restart";
}

class ControlSocketTwoSeats : public ControlSocket {
 protected:
  ControlSocketTwoSeats() { two_seats_ = true; }
};

// A fork child that became another user cannot reach the socket; it asks through the lease it
// inherited, gets a seat of its own, and that lease lives and ends apart from the first.
TEST_F(ControlSocketTwoSeats, ALeaseHolderGetsAnotherSeatThroughItsLease) {
  auto first = ComponentHost::lease(path_);
  ASSERT_TRUE(first) << first.error().message();
  auto second = ComponentHost::lease_through((*first)->lease_fd());
  ASSERT_TRUE(second) << second.error().message();
  EXPECT_NE((*second)->name(), (*first)->name());
  EXPECT_NE((*second)->lease_fd(), (*first)->lease_fd());
  // No seat is left: the refusal comes back the same way.
  auto third = ComponentHost::lease_through((*first)->lease_fd());
  ASSERT_FALSE(third);
  EXPECT_EQ(third.error().code, Errc::exhausted) << third.error().message();
  // The first lease ends; the one taken through it does not.
  const std::string first_name((*first)->name());
  const std::string second_name((*second)->name());
  first->reset();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (status_of(path_, first_name) != "idle" && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(status_of(path_, first_name), "idle");
  EXPECT_EQ(status_of(path_, second_name), "leased");
}

// A permitted connection that holds no lease (the grant `flotilla run` hands its program) leases
// through itself, answered on the connection it passed; a request passing anything other than a
// seqpacket socket gets nothing.
TEST_F(ControlSocketTwoSeats, ALeaseThroughRequestNeedsAConnectionToAnswerOn) {
  auto grant = connect_control(path_);
  ASSERT_TRUE(grant) << grant.error().message();
  static constexpr char kRequest[] = "lease-through";
  UniqueFd not_a_socket(::eventfd(0, EFD_CLOEXEC));
  const int wrong[1] = {not_a_socket.get()};
  ASSERT_TRUE(send_fds(grant->get(), std::as_bytes(std::span(kRequest, sizeof(kRequest) - 1)), wrong));
  EXPECT_EQ(status_of(path_, "app0"), "idle");
  auto through = ComponentHost::lease_through(grant->get());
  ASSERT_TRUE(through) << through.error().message();
  EXPECT_EQ(status_of(path_, std::string((*through)->name())), "leased");
  // The grant stays a grant: a second program of the tree gets a seat of its own through it.
  auto second = ComponentHost::lease_through(grant->get());
  ASSERT_TRUE(second) << second.error().message();
  EXPECT_NE((*second)->name(), (*through)->name());
  // A holder passing something other than a seqpacket socket gets nothing either.
  ASSERT_TRUE(send_fds((*second)->lease_fd(), std::as_bytes(std::span(kRequest, sizeof(kRequest) - 1)), wrong));
  EXPECT_EQ(status_of(path_, "app0"), "leased");
  EXPECT_EQ(status_of(path_, "app1"), "leased");
}

// The file fleet's descriptor table beside the socket belongs to this stack: it goes with it.
TEST_F(ControlSocket, TheDescriptorTableGoesWithTheSocket) {
  const std::string table = descriptor_table_path(path_);
  std::ofstream(table) << "slots";
  ASSERT_TRUE(std::filesystem::exists(table));
  stop_.store(true);
  serving_.join();
  server_.reset();
  EXPECT_FALSE(std::filesystem::exists(path_));
  EXPECT_FALSE(std::filesystem::exists(table));
}

TEST_F(ControlSocket, LeaseWithoutASupervisorSaysSo) {
  auto host = ComponentHost::lease((folder_ / "nobody.sock").string());
  ASSERT_FALSE(host);
  EXPECT_EQ(host.error().code, Errc::closed);
}

}  // namespace
}  // namespace flotilla::recovery
