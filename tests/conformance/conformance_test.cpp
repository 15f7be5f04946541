// The differential conformance suite (issue 14), after MINIX 3's test91: conformance-probe crosses
// every socket state with every call, once on the kernel's sockets and once on Flotilla's (under
// `flotilla run`), against one kernel peer. Every pair whose results differ must be listed, with
// both results and the reason, in the table "Differences from Linux" of sockets/preload/README.md,
// and every row of that table must still differ as written: the table is the truth, kept by this test.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/kernel_namespace.hpp"
#include "tests/support/stack_harness.hpp"

namespace flotilla::testing {
namespace {

constexpr int kBasePort = 7300;

std::string probe_path() { return build_root() + "/tests/conformance-probe"; }

// The peer of every probe, in the peer namespace: four listeners on the ports the probe expects
// (holds, sends "hello" and holds, sends a FIN and holds, resets at once). A held connection is
// closed 3 s after its other end closed, long after the probe's call on it: a state such as
// "write-shut" must not turn into "closed" under the probe depending on which side is faster.
class ConformancePeer {
 public:
  explicit ConformancePeer(const std::string& space) {
    thread_ = std::thread([this, space] {
      const int ns = ::open(("/run/netns/" + space).c_str(), O_RDONLY | O_CLOEXEC);
      if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) return;
      ::close(ns);
      std::vector<pollfd> watched;
      std::vector<std::pair<int, std::chrono::steady_clock::time_point>> closing;
      for (int offset = 0; offset < 4; ++offset) {
        const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        const int one = 1;
        ::setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        sockaddr_in any{};
        any.sin_family = AF_INET;
        any.sin_port = htons(static_cast<std::uint16_t>(kBasePort + offset));
        if (::bind(listener, reinterpret_cast<sockaddr*>(&any), sizeof(any)) != 0 || ::listen(listener, 64) != 0) return;
        watched.push_back({listener, POLLIN, 0});
      }
      listening_ = true;
      while (!stop_) {
        if (::poll(watched.data(), watched.size(), 50) <= 0 && closing.empty()) continue;
        for (std::size_t i = 0; i < watched.size(); ++i) {
          if (watched[i].revents == 0) continue;
          if (i < 4) {
            accept_on(watched, static_cast<int>(i));
            continue;
          }
          char buffer[512];
          if (::read(watched[i].fd, buffer, sizeof(buffer)) <= 0) {
            closing.emplace_back(watched[i].fd, std::chrono::steady_clock::now() + std::chrono::seconds(3));
            watched[i].fd = -1;  // swept below
          }
        }
        std::erase_if(watched, [](const pollfd& entry) { return entry.fd < 0; });
        std::erase_if(closing, [](const auto& entry) {
          if (std::chrono::steady_clock::now() < entry.second) return false;
          ::close(entry.first);
          return true;
        });
      }
      for (const pollfd& entry : watched) ::close(entry.fd);
      for (const auto& entry : closing) ::close(entry.first);
    });
  }
  ~ConformancePeer() {
    stop_ = true;
    thread_.join();
  }
  bool listening() const { return listening_; }

 private:
  static void accept_on(std::vector<pollfd>& watched, int offset) {
    const int connection = ::accept4(watched[static_cast<std::size_t>(offset)].fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (connection < 0) return;
    if (offset == 1) (void)::write(connection, "hello", 5);
    if (offset == 2) ::shutdown(connection, SHUT_WR);
    if (offset == 3) {
      const linger abortive{1, 0};
      ::setsockopt(connection, SOL_SOCKET, SO_LINGER, &abortive, sizeof(abortive));
      ::close(connection);
      return;
    }
    watched.push_back({connection, POLLIN, 0});
  }

  std::atomic<bool> stop_{false};
  std::atomic<bool> listening_{false};
  std::thread thread_;
};

// "STATE CALL RESULT" lines into a table keyed by "STATE CALL".
std::map<std::string, std::string> parse_table(const std::string& output) {
  std::map<std::string, std::string> table;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    const auto first = line.find(' ');
    const auto second = first == std::string::npos ? std::string::npos : line.find(' ', first + 1);
    if (second == std::string::npos) continue;
    table[line.substr(0, second)] = line.substr(second + 1);
  }
  return table;
}

struct ListedDifference {
  std::string linux_result;
  std::string flotilla_result;
};

std::string trimmed(std::string text) {
  const auto not_space = [](unsigned char c) { return c != ' ' && c != '`'; };
  while (!text.empty() && !not_space(static_cast<unsigned char>(text.back()))) text.pop_back();
  std::size_t start = 0;
  while (start < text.size() && !not_space(static_cast<unsigned char>(text[start]))) ++start;
  return text.substr(start);
}

// The rows of the README's table: | state | call | Linux | Flotilla | why |
std::map<std::string, ListedDifference> listed_differences(const std::string& readme) {
  std::map<std::string, ListedDifference> listed;
  std::ifstream in(readme);
  bool inside = false;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("## ", 0) == 0) inside = line.find("Differences from Linux") != std::string::npos;
    if (!inside || line.rfind("| ", 0) != 0) continue;
    std::vector<std::string> cells;
    std::istringstream row(line.substr(1));
    for (std::string cell; std::getline(row, cell, '|');) cells.push_back(trimmed(cell));
    if (cells.size() < 5 || cells[0] == "state" || cells[0].rfind("---", 0) == 0) continue;
    listed[cells[0] + " " + cells[1]] = {cells[2], cells[3]};
  }
  return listed;
}

class Conformance : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces, AF_XDP)";
    const char* source = std::getenv("FLOTILLA_SOURCE_ROOT");
    ASSERT_NE(source, nullptr) << "FLOTILLA_SOURCE_ROOT is not set (run through meson test)";
    readme_ = std::string(source) + "/sockets/preload/README.md";
    names_ = unique_names();
    ASSERT_EQ(stack_.start(names_, stack_config(names_, "pass all", recovery::app_seats_config())), "");
    ASSERT_EQ(kernel_.create(names_.peer_namespace), "");
  }
  void TearDown() override {
    stack_.stop();
    kernel_.remove();
  }

  std::string readme_;
  StackNames names_;
  RunningStack stack_;
  KernelNamespace kernel_;
};

TEST_F(Conformance, EveryStateAndCallMatchesLinuxOrIsListed) {
  ConformancePeer peer(names_.peer_namespace);
  ASSERT_TRUE(wait_for([&] { return peer.listening(); }, std::chrono::seconds(5)));
  const std::string port = std::to_string(kBasePort);
  // The same probe on both sides: the kernel's run from its own namespace, Flotilla's run on the
  // stack; each side's unreachable address is one nobody holds on its link.
  const auto kernel_run = run_shell("ip netns exec " + kernel_.ns + " " + probe_path() + " " + kernel_.server_address +
                                    " " + kernel_.client_address + " 10.80.0.99 " + port + " 2>&1");
  const auto flotilla_run = run_shell(build_root() + "/apps/flotilla --socket " + stack_.socket_path() + " run -- " +
                                      probe_path() + " " + names_.stack_address + " " + names_.peer_address +
                                      " 10.79.0.99 " + port + " 2>&1");
  ASSERT_EQ(kernel_run.exit_code, 0) << kernel_run.output;
  ASSERT_EQ(flotilla_run.exit_code, 0) << flotilla_run.output;
  ASSERT_NE(kernel_run.output.find("\ndone\n"), std::string::npos) << kernel_run.output;
  ASSERT_NE(flotilla_run.output.find("\ndone\n"), std::string::npos) << flotilla_run.output;

  const auto on_linux = parse_table(kernel_run.output);
  const auto on_flotilla = parse_table(flotilla_run.output);
  const auto listed = listed_differences(readme_);
  ASSERT_GT(on_linux.size(), 300u) << kernel_run.output;
  EXPECT_EQ(on_linux.size(), on_flotilla.size());

  std::string unlisted;  // rows to add to the README's table, in its own form
  std::size_t differences = 0;
  for (const auto& [key, linux_result] : on_linux) {
    const auto found = on_flotilla.find(key);
    const std::string flotilla_result = found == on_flotilla.end() ? "(missing)" : found->second;
    if (linux_result == flotilla_result) continue;
    ++differences;
    const auto row = listed.find(key);
    if (row == listed.end() || row->second.linux_result != linux_result || row->second.flotilla_result != flotilla_result) {
      const auto space = key.find(' ');
      unlisted += "| " + key.substr(0, space) + " | " + key.substr(space + 1) + " | `" + linux_result + "` | `" +
                  flotilla_result + "` | ? |\n";
    }
  }
  std::string stale;
  for (const auto& [key, row] : listed) {
    const auto linux_result = on_linux.find(key);
    const auto flotilla_result = on_flotilla.find(key);
    if (linux_result == on_linux.end() || flotilla_result == on_flotilla.end() ||
        linux_result->second != row.linux_result || flotilla_result->second != row.flotilla_result) {
      stale += key + "\n";
    }
  }
  EXPECT_EQ(unlisted, "") << "differences from Linux not listed in " << readme_ << " (" << differences
                          << " differ in all):\n" << unlisted;
  EXPECT_EQ(stale, "") << "rows of the table in " << readme_ << " that no longer differ as written:\n" << stale;
}

}  // namespace
}  // namespace flotilla::testing
