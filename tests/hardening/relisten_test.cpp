// Found by the soak (perf/soak.py): an unmodified server that closes its listener and listens again
// on the same port while a TCP replica hangs, as `iperf3 -s` does after every test, must get its
// port back once the replica is restarted (root: skipped without; needs python3).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "recovery/default_config.hpp"
#include "tests/stack/stack_fixture.hpp"

namespace flotilla::testing {
namespace {

using namespace std::chrono_literals;

// Listens on port 5300, waits for the file GO, closes the listener and listens again; prints
// "listening", then "relistened" or "error ERRNO", then keeps the new listener until killed.
constexpr const char* kServer = R"(
import os, socket, sys, time
go = sys.argv[1]
def listen():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 5300))
    s.listen(8)
    return s
first = listen()
print("listening", flush=True)
while not os.path.exists(go):
    time.sleep(0.002)
first.close()
try:
    second = listen()
    print("relistened", flush=True)
except OSError as error:
    print("error", error.errno, flush=True)
time.sleep(60)
)";

class Relisten : public StackTest {};

TEST_F(Relisten, AListenerClosedWhileItsReplicaHangsFreesThePort) {
  if (::system("command -v python3 > /dev/null") != 0) GTEST_SKIP() << "python3 is not installed";
  ASSERT_TRUE(start("pass all", recovery::app_seats_config()));
  char pattern[] = "/tmp/flotilla-relisten-XXXXXX";
  ASSERT_NE(::mkdtemp(pattern), nullptr);
  const std::filesystem::path folder = pattern;
  const std::string go = (folder / "go").string();
  BackgroundCommand server({build_root() + "/apps/flotilla", "--socket", stack_.socket_path(), "run", "--",
                            "python3", "-u", "-c", kServer, go});
  // The first listener is up when the port answers from the peer.
  ASSERT_TRUE(wait_for([&] {
    return in_namespace(names_.peer_namespace, [&] {
      return run_shell("python3 -c \"import socket; socket.create_connection(('" + names_.stack_address +
                       "', 5300), timeout=0.3).close()\" 2>/dev/null").exit_code == 0;
    });
  }, 15s)) << events();
  // tcp1 stops; the server closes its listener and listens again before the supervisor kills tcp1.
  ASSERT_EQ(cli("inject tcp1 hang").exit_code, 0);
  std::ofstream(go) << "go";
  ASSERT_TRUE(wait_for([&] { return events().find("restart   tcp1#2") != std::string::npos; }, 10s)) << events();
  std::this_thread::sleep_for(2s);
  const std::string output = server.finish(true);
  std::filesystem::remove_all(folder);
  EXPECT_NE(output.find("relistened"), std::string::npos) << output << "\n" << events();
}

}  // namespace
}  // namespace flotilla::testing
