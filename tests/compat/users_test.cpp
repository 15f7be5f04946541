// Servers that run as a user of their own, started by root as an administrator starts them:
// postgres refuses to run as root, so `flotilla run -- runuser -u postgres -- postgres` must work,
// and a program that drops root keeps the stack (through the grant `flotilla run` hands it) but,
// as on Linux, not the ports below 1024. Against kernel clients in the peer namespace; the fixture,
// and FLOTILLA_APPS_TEST_SIDE=kernel (the same cases on kernel sockets): tests/apps/apps_fixture.hpp.
#include <gtest/gtest.h>

#include <glob.h>
#include <pwd.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/apps/apps_fixture.hpp"

namespace flotilla::testing {
namespace {

constexpr std::uint16_t kPostgresPort = 5432;

// The folder of Debian's postgres programs (/usr/lib/postgresql/VERSION/bin), "" when none.
std::string postgres_programs() {
  glob_t found{};
  std::string folder;
  if (::glob("/usr/lib/postgresql/*/bin/postgres", 0, nullptr, &found) == 0 && found.gl_pathc > 0) {
    folder = std::filesystem::path(found.gl_pathv[found.gl_pathc - 1]).parent_path().string();
  }
  ::globfree(&found);
  return folder;
}

class Users : public AppsTest {
 protected:
  // The test's folder, open to the users the programs become (mkdtemp made it root's alone).
  void open_folder() const { std::filesystem::permissions(folder_, std::filesystem::perms(0755)); }
};

TEST_F(Users, PostgresUnderRunuserServesPgbench) {
  const std::string programs = postgres_programs();
  ASSERT_FALSE(programs.empty()) << "postgres is not installed (./dev installs postgresql)";
  ASSERT_NE(::getpwnam("postgres"), nullptr) << "no postgres user (Debian's postgresql package makes it)";
  ASSERT_TRUE(start_apps({"runuser"}, 32));  // the postmaster, its helpers and a backend per connection
  open_folder();
  const std::string data = file("data").string();
  const CommandOutcome made = run_shell("mkdir " + data + " && chown postgres " + data + " && runuser -u postgres -- " +
                                        programs + "/initdb -D " + data + " -A trust -U postgres --no-sync 2>&1");
  ASSERT_EQ(made.exit_code, 0) << made.output;
  std::ofstream(data + "/pg_hba.conf", std::ios::app) << "host all all 0.0.0.0/0 trust\n";
  Program server(app_command({"runuser", "-u", "postgres", "--", programs + "/postgres", "-D", data, "-k", data, "-c",
                              "listen_addresses=" + app_address(), "-p", std::to_string(kPostgresPort), "-c",
                              "fsync=off"}),
                 file("postgres.log"));
  ASSERT_TRUE(wait_for_port(server, app_address(), kPostgresPort)) << tail(server.output());
  const auto pgbench = [&](const std::vector<std::string>& arguments) {
    std::vector<std::string> argv{programs + "/pgbench", "-h", app_address(), "-p", std::to_string(kPostgresPort), "-U",
                                  "postgres"};
    argv.insert(argv.end(), arguments.begin(), arguments.end());
    argv.push_back("postgres");
    return run_shell("timeout 120 " + shell_words(peer_command(argv)) + " 2>&1");
  };
  const CommandOutcome loaded = pgbench({"-i", "-s", "1"});
  ASSERT_EQ(loaded.exit_code, 0) << loaded.output;
  // Four clients, each on one connection, then one connection per transaction: the postmaster
  // forks a backend for each, which serves it as the user postgres.
  const CommandOutcome steady = pgbench({"-c", "4", "-j", "2", "-t", "100"});
  EXPECT_EQ(steady.exit_code, 0) << steady.output;
  EXPECT_NE(steady.output.find("number of transactions actually processed: 400/400"), std::string::npos) << steady.output;
  EXPECT_NE(steady.output.find("number of failed transactions: 0 "), std::string::npos) << steady.output;
  const CommandOutcome reconnecting = pgbench({"-C", "-S", "-c", "2", "-j", "2", "-t", "40"});
  EXPECT_EQ(reconnecting.exit_code, 0) << reconnecting.output;
  EXPECT_NE(reconnecting.output.find("number of transactions actually processed: 80/80"), std::string::npos)
      << reconnecting.output;
  std::printf("pgbench: %s\n", steady.output.substr(steady.output.find("tps")).c_str());
  EXPECT_TRUE(server.running()) << tail(server.output());
  EXPECT_EQ(server.output().find("flotilla:"), std::string::npos) << tail(server.output());
  EXPECT_EQ(server.output().find("FATAL"), std::string::npos) << tail(server.output());
}

TEST_F(Users, AProgramThatDroppedRootKeepsTheStackButNotTheLowPorts) {
  // Debian's python: root's own (pyenv) is out of nobody's reach.
  ASSERT_EQ(::access("/usr/bin/python3", X_OK), 0) << "/usr/bin/python3 is not installed (./dev installs python3)";
  ASSERT_TRUE(start_apps({"setpriv"}, 4));
  constexpr std::uint16_t kPort = 8099;
  // As nobody: port 80 is refused as Linux refuses it, a high port serves one echo. First it puts a
  // descriptor of its own at the grant's number, as a program may at any number it likes: the
  // library moves the grant out of its way.
  const std::string server_script =
      "import os, socket, sys\n"
      "grant = os.environ.get('FLOTILLA_GRANT_FD')\n"
      "if grant:\n"
      "    os.dup2(os.open('/dev/null', os.O_RDONLY), int(grant))\n"
      "s = socket.socket()\n"
      "try:\n"
      "    s.bind((sys.argv[1], 80))\n"
      "    print('port 80 bound', flush=True)\n"
      "    sys.exit(1)\n"
      "except PermissionError:\n"
      "    print('port 80 refused', flush=True)\n"
      "s.bind((sys.argv[1], int(sys.argv[2])))\n"
      "s.listen(4)\n"
      "c, _ = s.accept()\n"
      "data = b''\n"
      "while not data.endswith(b'\\n'):\n"
      "    more = c.recv(100)\n"
      "    if not more: break\n"
      "    data += more\n"
      "c.sendall(data.upper())\n"
      "c.close()\n";
  Program server(app_command({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c",
                              server_script, app_address(), std::to_string(kPort)}),
                 file("server.log"));
  const std::string client_script =
      "import socket, sys\n"
      "c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)\n"
      "c.sendall(b'hello from the peer\\n')\n"
      "print(c.recv(100).decode(), end='')\n";
  CommandOutcome echoed;
  for (int attempt = 0; attempt < 100; ++attempt) {  // until it listens (it must not be probed first)
    echoed = run_shell("timeout 40 " +
                       shell_words(peer_command({"python3", "-c", client_script, app_address(), std::to_string(kPort)})) +
                       " 2>&1");
    if (echoed.output.find("Connection refused") == std::string::npos || !server.running()) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(echoed.output, "HELLO FROM THE PEER\n");
  EXPECT_EQ(server.wait(30s), 0) << tail(server.output());
  EXPECT_NE(server.output().find("port 80 refused"), std::string::npos) << tail(server.output());
  EXPECT_EQ(server.output().find("flotilla:"), std::string::npos) << tail(server.output());
}

}  // namespace
}  // namespace flotilla::testing
