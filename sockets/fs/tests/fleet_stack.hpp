// A stack of the file fleet alone for end-to-end tests (the mount's and the preload library's): a
// folder of the test's own on tmpfs, which holds the configuration and the control socket and is
// the reference side, with `servers` file servers and `seats` application seats, brought up by
// `flotilla up` and down again (folder removed) when the FleetStack ends. Needs root; run only
// under the integration lock (the supervisor's shared-memory names are fixed).
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

#include "recovery/control_socket.hpp"
#include "recovery/default_config.hpp"
#include "sockets/fs/tests/file_trees.hpp"
#include "tests/support/stack_harness.hpp"

namespace flotilla::fs::testing {

class FleetStack {
 public:
  FleetStack() = default;
  FleetStack(const FleetStack&) = delete;
  FleetStack& operator=(const FleetStack&) = delete;
  ~FleetStack() {
    if (up_) (void)cli("down");
    if (!folder_.empty()) {
      std::error_code error;
      std::filesystem::remove_all(folder_, error);
    }
  }

  // Makes the folder (named after `name`) and brings the stack up; "" when it is up, else why not.
  // `extra_config` is appended to the configuration (a [files] table, say).
  std::string start(const std::string& name, int servers, int seats, const std::string& extra_config = "") {
    std::string pattern = "/dev/shm/" + name + "-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) return "cannot make a folder in /dev/shm";
    folder_ = pattern;
    socket_ = (folder_ / "control.sock").string();
    std::ofstream(folder_ / "fleet.toml")
        << "[supervisor]\nheartbeat_timeout_ms = 500\ncrash_limit = 100\ncrash_window_ms = 1000\n"
        << recovery::bare_app_seats_config(seats) << recovery::file_fleet_config(servers, seats) << "\n"
        << extra_config;
    const flotilla::testing::CommandOutcome up = cli("up --config '" + (folder_ / "fleet.toml").string() + "'");
    if (up.exit_code != 0) return up.output;
    up_ = true;
    return "";
  }

  const std::filesystem::path& folder() const { return folder_; }
  const std::string& socket() const { return socket_; }
  // `flotilla ARGUMENTS` against this stack, stderr with stdout.
  flotilla::testing::CommandOutcome cli(const std::string& arguments) const {
    return flotilla::testing::run_shell(flotilla::testing::build_root() + "/apps/flotilla --socket '" + socket_ +
                                        "' " + arguments + " 2>&1");
  }
  std::string events() const { return recovery::whole_event_log(socket_); }
  std::int64_t counter(const std::string& component, const std::string& name) const {
    return testing::counter(socket_, component, name);
  }

 private:
  std::filesystem::path folder_;
  std::string socket_;
  bool up_ = false;
};

}  // namespace flotilla::fs::testing
