// flotilla-supervisor: the supervisor as a process of its own. Starts every component of the
// configuration, restarts them when they fail, and answers the `flotilla` CLI on its control
// socket until `flotilla down`, SIGTERM or SIGINT. Normally started by `flotilla up`.
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <climits>
#include <cstdio>
#include <filesystem>
#include <string>

#include "dataplane/sandbox.hpp"
#include "drivers/dpdk/runtime_dirs.hpp"
#include "recovery/application_seats.hpp"
#include "recovery/config.hpp"
#include "recovery/embedded_network.hpp"
#include "recovery/control_socket.hpp"
#include "recovery/default_config.hpp"
#include "recovery/registrar.hpp"
#include "recovery/supervisor.hpp"

using namespace flotilla;
using namespace flotilla::recovery;

int main(int argc, char** argv) {
  CLI::App app{"Flotilla supervisor: starts the components of a configuration, restarts any that "
               "crash or hang, and serves the flotilla CLI on its control socket. Usually started "
               "by 'flotilla up'."};
  app.name("flotilla-supervisor");
  std::string config_path;
  std::string socket_path = default_socket_path();
  app.add_option("--config", config_path, "TOML configuration (default: the embedded one)");
  app.add_option("--socket", socket_path, "Control socket path")->capture_default_str();
  std::vector<std::string> overrides;
  app.add_option("--set", overrides, "TABLE.KEY=VALUE: change one key of the configuration (repeatable)")
      ->allow_extra_args(false);
  CLI11_PARSE(app, argc, argv);

  ConfigOutcome outcome = config_path.empty() ? parse_config(kDefaultConfig, "<default config>", overrides)
                                              : load_config_file(config_path, overrides);
  if (auto* error = std::get_if<ConfigError>(&outcome)) {
    std::fprintf(stderr, "flotilla-supervisor: %s\n", error->message.c_str());
    return 2;
  }
  std::string unused;
  if (auto alive = control_request(socket_path, "status", &unused); alive) {
    std::fprintf(stderr, "flotilla-supervisor: a supervisor already answers at %s\n", socket_path.c_str());
    return 1;
  }
  auto server = ControlServer::listen(socket_path);
  if (!server) {
    std::fprintf(stderr, "flotilla-supervisor: %s: %s\n", socket_path.c_str(),
                 server.error().message().c_str());
    return 1;
  }
  const std::string own_dir = std::filesystem::read_symlink("/proc/self/exe").parent_path();
  const SupervisorConfig& config = std::get<SupervisorConfig>(outcome);
  // The components inherit it (dataplane/component_main.hpp).
  if (!config.sandbox) ::setenv(kNoSandboxVariable, "1", 1);
  // The embedded network is made before any component starts and removed after the last stops.
  const bool builds_network = config.has_network && config.network.create_peer &&
                              config.network.driver != "memwire";
  const NetworkConfig network = config.network;
  const std::string config_driver = config.has_network ? config.network.driver : "";
  if (builds_network) {
    if (std::string problem = network_precondition(network); !problem.empty()) {
      std::fprintf(stderr, "flotilla-supervisor: %s\n", problem.c_str());
      return 1;
    }
    std::string detail;
    if (!create_embedded_network(network, &detail)) {
      std::fprintf(stderr, "flotilla-supervisor: creating the network: %s\n", detail.c_str());
      return 1;
    }
    std::printf("flotilla-supervisor: network %s: %s (peer, in namespace %s) <-> %s (Flotilla)\n",
                network.peer_namespace.c_str(), network.peer_interface.c_str(),
                network.peer_namespace.c_str(), network.stack_interface.c_str());
  }
  struct NetworkCleanup {
    bool active;
    const NetworkConfig& network;
    ~NetworkCleanup() {
      if (active) remove_embedded_network(network);
    }
  } cleanup{builds_network, network};
  auto supervisor = Supervisor::create(std::get<SupervisorConfig>(std::move(outcome)), own_dir);
  if (!supervisor) {
    std::fprintf(stderr, "flotilla-supervisor: %s\n", supervisor.error().message().c_str());
    return 1;
  }
  auto registrar = Registrar::attach(**supervisor);
  if (!registrar) {
    std::fprintf(stderr, "flotilla-supervisor: name fleet: %s\n", registrar.error().message().c_str());
    return 1;
  }
  auto seats = ApplicationSeats::attach(**supervisor);
  if (!seats) {
    std::fprintf(stderr, "flotilla-supervisor: application seats: %s\n", seats.error().message().c_str());
    return 1;
  }

  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGHUP);
  ::sigprocmask(SIG_BLOCK, &stop_signals, nullptr);
  UniqueFd signals(::signalfd(-1, &stop_signals, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signals.valid()) {
    std::perror("flotilla-supervisor: signalfd");
    return 1;
  }

  if (auto status = (*supervisor)->start(); !status) {
    std::fprintf(stderr, "flotilla-supervisor: start: %s\n", status.error().message().c_str());
    return 1;
  }
  std::printf("flotilla-supervisor: pid %d, %zu components, control socket %s\n", ::getpid(),
              (*supervisor)->components().size(), socket_path.c_str());
  std::fflush(stdout);

  std::size_t printed = 0;
  bool stop = false;
  while (!stop && !server->down_requested()) {
    std::vector<pollfd> fds = server->pollfds();
    fds.push_back(pollfd{signals.get(), POLLIN, 0});
    (*supervisor)->poll(std::chrono::milliseconds(50), fds);
    stop = (fds.back().revents & POLLIN) != 0;
    fds.pop_back();
    server->serve(**supervisor, **registrar, **seats, fds);
    server->run_schedule(**supervisor);
    const auto& events = (*supervisor)->log().events();
    for (; printed < events.size(); ++printed) std::printf("%s\n", format_event(events[printed]).c_str());
    std::fflush(stdout);
  }
  (*supervisor)->stop();
  // Drivers are killed, so a DPDK driver cannot remove its runtime directory itself.
  if (config_driver == "dpdk") drivers::remove_stale_dpdk_runtime_dirs();
  std::printf("flotilla-supervisor: stopped\n");
  std::fflush(stdout);
  return 0;
}
