// flotilla: the command line of a running stack. `up` starts the supervisor, the rest talk to it
// through its control socket.
#include <fcntl.h>
#include <net/if.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <thread>

#include "apps/cli/demo.hpp"
#include "apps/cli/program_image.hpp"
#include "dataplane/control_address.hpp"
#include "recovery/config.hpp"
#include "recovery/default_config.hpp"
#include "recovery/embedded_network.hpp"
#include "recovery/control_socket.hpp"
#include "sockets/preload/interfaces.hpp"
#include "sockets/preload/sanitizer_runtime.hpp"

using namespace flotilla;
using namespace flotilla::recovery;

namespace {

std::string g_socket;

[[noreturn]] void die(const std::string& message, int code = 1) {
  std::fprintf(stderr, "flotilla: %s\n", message.c_str());
  std::exit(code);
}

// One request to the running supervisor; exits with a clear message when it cannot be had.
std::string ask(const std::string& request) {
  std::string refusal;
  auto reply = control_request(g_socket, request, &refusal);
  if (reply) return reply.value();
  if (reply.error().code == Errc::closed) {
    die("the stack is not running (no supervisor at " + g_socket + "); start it with 'flotilla up'");
  }
  if (!refusal.empty()) die(refusal, 2);
  die(reply.error().message());
}

bool running() {
  std::string refusal;
  return control_request(g_socket, "status", &refusal).ok();
}

CounterTable read_counters();

// Whether every component's loop has started: only then does the stack answer (a driver's loop
// starts once its device is open, so a peer's first ARP request is not lost).
bool all_loops_running() {
  const CounterTable table = read_counters();
  if (table.empty()) return false;
  for (const auto& [component, values] : table) {
    const auto beat = values.find("heartbeat");
    if (beat == values.end() || beat->second == 0) return false;
  }
  return true;
}

// The packet filter is the authority on its rule language: `flotilla-pf --check` parses the rules
// before anything starts, so an error reaches the user with the configuration file's line.
void check_filter_rules(const std::filesystem::path& own_dir, const SupervisorConfig& config,
                        const std::string& config_path) {
  // Padded so the parser's line numbers are the file's.
  const std::string padded(config.filter_rules_line > 0 ? config.filter_rules_line - 1 : 0, '\n');
  std::string output;
  const int status = run_command({(own_dir / "flotilla-pf").string(), "--check", "--rules",
                                  padded + config.filter_rules, "--rules-source",
                                  config_path.empty() ? "<default config>" : config_path},
                                 &output);
  if (status == 0) return;
  if (status != 2) die("could not check the filter rules with " + (own_dir / "flotilla-pf").string());
  // pf's first line names the rule's place; drop its program prefix.
  std::string first = output.substr(0, output.find('\n'));
  const std::string prefix = "flotilla-pf: ";
  if (first.starts_with(prefix)) first.erase(0, prefix.size());
  die(first, 2);
}

int cmd_up(const std::string& config_path, const std::vector<std::string>& overrides) {
  if (running()) die("already running (supervisor at " + g_socket + ")");
  // Checked here, so a bad file, a bad override or a missing privilege is reported to the user directly.
  auto outcome = config_path.empty() ? parse_config(kDefaultConfig, "<default config>", overrides)
                                     : load_config_file(config_path, overrides);
  if (auto* error = std::get_if<ConfigError>(&outcome)) die(error->message, 2);
  const SupervisorConfig& config = std::get<SupervisorConfig>(outcome);
  if (config.has_network && config.network.create_peer && config.network.driver != "memwire") {
    if (std::string problem = network_precondition(config.network); !problem.empty()) die(problem);
  }
  const std::filesystem::path own_dir = std::filesystem::read_symlink("/proc/self/exe").parent_path();
  if (!config.filter_rules.empty()) check_filter_rules(own_dir, config, config_path);
  const std::string supervisor = own_dir / "flotilla-supervisor";
  const std::string log_path = std::filesystem::path(g_socket).parent_path() / "supervisor.log";
  std::filesystem::create_directories(std::filesystem::path(g_socket).parent_path());
  const std::string absolute_config =
      config_path.empty() ? "" : std::filesystem::absolute(config_path).string();

  const pid_t first = ::fork();
  if (first < 0) die("fork failed");
  if (first == 0) {
    // Detach from the terminal and from this process: the supervisor outlives `flotilla up`.
    ::setsid();
    if (::fork() != 0) ::_exit(0);
    const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    const int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (null < 0 || log < 0) ::_exit(126);
    ::dup2(null, 0);
    ::dup2(log, 1);
    ::dup2(log, 2);
    std::vector<std::string> words{supervisor, "--socket", g_socket};
    if (!absolute_config.empty()) words.insert(words.end(), {"--config", absolute_config});
    for (const std::string& setting : overrides) words.insert(words.end(), {"--set", setting});
    std::vector<char*> argv;
    for (auto& word : words) argv.push_back(word.data());
    argv.push_back(nullptr);
    ::execv(supervisor.c_str(), argv.data());
    ::_exit(127);
  }
  ::waitpid(first, nullptr, 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!running()) {
    if (std::chrono::steady_clock::now() > deadline) {
      die("the supervisor did not come up; see " + log_path);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const auto serving_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!all_loops_running()) {
    if (std::chrono::steady_clock::now() > serving_deadline) {
      std::printf("flotilla: not every component is running yet; see 'flotilla status' and %s\n", log_path.c_str());
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::printf("flotilla is up (control socket %s, log %s)\n%s", g_socket.c_str(), log_path.c_str(),
              ask("status").c_str());
  return 0;
}

int cmd_down() {
  if (!running()) {
    // A supervisor that was killed leaves its network behind; the default one is recognised (only
    // for the default control socket: a stack on another socket may own that network).
    auto outcome = parse_config(kDefaultConfig, "<default config>");
    const NetworkConfig& network = std::get<SupervisorConfig>(outcome).network;
    const bool default_stack = std::getenv("FLOTILLA_SOCKET") == nullptr;
    if (default_stack && ::geteuid() == 0 && embedded_network_exists(network)) {
      remove_embedded_network(network);
      std::printf("flotilla was not running; removed the network it left behind (%s, %s)\n",
                  network.peer_namespace.c_str(), network.stack_interface.c_str());
      return 0;
    }
    die("the stack is not running (no supervisor at " + g_socket + "); nothing to stop");
  }
  ask("down");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (running()) {
    if (std::chrono::steady_clock::now() > deadline) die("the supervisor did not stop in 10 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::printf("flotilla is down\n");
  return 0;
}

// Prints events from `from` on; returns the index after the last one.
std::uint64_t print_events(std::uint64_t from) {
  for (;;) {
    const std::string reply = ask("events " + std::to_string(from));
    const std::size_t marker = reply.rfind("next ");
    if (marker == std::string::npos) die("malformed reply from the supervisor");
    std::fputs(reply.substr(0, marker).c_str(), stdout);
    const std::uint64_t next = std::stoull(reply.substr(marker + 5));
    if (next == from) return next;
    from = next;
  }
}

int cmd_events(bool follow) {
  std::uint64_t next = print_events(0);
  while (follow) {
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    std::string refusal;
    if (!control_request(g_socket, "status", &refusal)) {
      std::printf("(the supervisor has stopped)\n");
      return 0;
    }
    next = print_events(next);
  }
  return 0;
}

CounterTable read_counters() { return parse_counters(ask("counters")); }

int cmd_counters(const std::string& only, bool all) {
  const CounterTable table = read_counters();
  if (!only.empty() && table.count(only) == 0) die("no component named '" + only + "'", 2);
  for (const auto& [component, values] : table) {
    if (!only.empty() && component != only) continue;
    std::printf("%s\n", component.c_str());
    for (const auto& [name, value] : values) {
      if (all || value != 0) std::printf("  %-24s %llu\n", name.c_str(), static_cast<unsigned long long>(value));
    }
  }
  return 0;
}

// Programs on the preload library (application seats): how many readiness checks and reads/writes
// per second, and the share of them served without a system call.
void print_preload_rates(CounterTable& previous, const CounterTable& current) {
  bool header = false;
  for (const auto& [component, values] : current) {
    if (values.count("readiness_checks") == 0) continue;
    const auto rate = [&](const char* name) {
      const auto before = previous[component][name];
      const auto now = values.count(name) != 0 ? values.at(name) : 0;
      return static_cast<unsigned long long>(now >= before ? now - before : 0);
    };
    const auto share = [](unsigned long long part, unsigned long long whole) {
      return whole == 0 ? 0.0 : 100.0 * static_cast<double>(part) / static_cast<double>(whole);
    };
    if (!header) {
      std::printf("\n%-16s %12s %12s %12s %12s %12s\n", "preloaded", "checks/s", "no-syscall%", "io/s",
                  "no-syscall%", "kwaits/s");
      header = true;
    }
    const auto checks = rate("readiness_checks");
    const auto io = rate("io_calls");
    std::printf("%-16s %12llu %11.1f%% %12llu %11.1f%% %12llu\n", component.c_str(), checks,
                share(rate("readiness_no_syscall"), checks), io, share(rate("io_no_syscall"), io),
                rate("waits_in_kernel"));
  }
}

int cmd_top(int count) {
  const bool terminal = ::isatty(STDOUT_FILENO) != 0;
  CounterTable previous = read_counters();
  for (int round = 0; count == 0 || round < count; ++round) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    const CounterTable current = read_counters();
    if (terminal) std::printf("\033[H\033[2J");
    std::printf("%-16s %12s %12s %10s %10s %10s %8s %8s\n", "component", "msgs in/s", "msgs out/s",
                "sleeps/s", "wakes/s", "drops/s", "corrupt", "beats/s");
    for (const auto& [component, values] : current) {
      const auto rate = [&](const char* name) {
        const auto before = previous[component][name];
        const auto now = values.count(name) != 0 ? values.at(name) : 0;
        return static_cast<unsigned long long>(now >= before ? now - before : 0);
      };
      std::printf("%-16s %12llu %12llu %10llu %10llu %10llu %8llu %8llu\n", component.c_str(),
                  rate("messages_in"), rate("messages_out"), rate("sleeps"), rate("futex_wakes"),
                  rate("drops"), static_cast<unsigned long long>(values.at("corrupt")), rate("heartbeat"));
    }
    print_preload_rates(previous, current);
    std::fflush(stdout);
    previous = current;
  }
  return 0;
}

// The preload library: $FLOTILLA_PRELOAD, else beside this binary (an install), else where the
// build tree puts it.
std::string preload_library() {
  if (const char* given = std::getenv("FLOTILLA_PRELOAD"); given != nullptr && *given != '\0') return given;
  const std::filesystem::path own_dir = std::filesystem::read_symlink("/proc/self/exe").parent_path();
  for (const auto& candidate : {own_dir / "libflotilla-preload.so", own_dir / ".." / "sockets" / "libflotilla-preload.so"}) {
    if (std::filesystem::exists(candidate)) return std::filesystem::canonical(candidate).string();
  }
  die("libflotilla-preload.so not found beside " + own_dir.string() + " (set FLOTILLA_PRELOAD)");
}

int cmd_run(const std::vector<std::string>& command) {
  if (command.empty()) die("run: no command given; usage: flotilla run -- COMMAND [ARGS...]", 2);
  if (const auto image = cli::find_command(command[0])) {
    const std::string bypass = cli::library_bypass(*image);
    if (!bypass.empty()) {
      std::fprintf(stderr, "flotilla: run: %s %s; its sockets stay the kernel's\n", command[0].c_str(), bypass.c_str());
    }
  }
  if (!running()) die("the stack is not running (no supervisor at " + g_socket + "); start it with 'flotilla up'");
  const std::string library = preload::preload_list(preload_library());
  const char* before = std::getenv("LD_PRELOAD");
  const std::string preload = before != nullptr && *before != '\0' ? library + ":" + before : library;
  ::setenv("LD_PRELOAD", preload.c_str(), 1);
  if (!preload::sanitizer_runtime().empty()) {
    // A sanitized build: the runtime now runs inside programs built without it (redis, python),
    // whose own allocations left at exit are theirs, not leaks of ours.
    const char* options = std::getenv("ASAN_OPTIONS");
    const std::string checks = options != nullptr && *options != '\0' ? std::string(options) + ":detect_leaks=0" : "detect_leaks=0";
    ::setenv("ASAN_OPTIONS", checks.c_str(), 1);
  }
  ::setenv("FLOTILLA_SOCKET", std::filesystem::absolute(g_socket).c_str(), 1);
  // The grant, above the numbers programs name themselves.
  if (auto grant = connect_control(g_socket)) {
    int fd = ::fcntl(grant->get(), F_DUPFD, kLibraryDescriptorsFrom);
    if (fd < 0) fd = grant->release();  // a low descriptor limit: where it is
    if (fd >= 0 && ::fcntl(fd, F_SETFD, 0) == 0) ::setenv(kGrantVariable, std::to_string(fd).c_str(), 1);
  }
  // The fleet's prefix as the running stack's configuration says ([files] prefix).
  std::string refusal;
  if (auto prefix = control_request(g_socket, "files-prefix", &refusal); prefix && !prefix->empty()) {
    ::setenv("FLOTILLA_FILES_PREFIX", prefix->substr(0, prefix->find('\n')).c_str(), 1);
  }
  // The kernel's index of the interface the stack drives (what IP_PKTINFO reports as a datagram's)
  // and the stack's address there (what the program's list of its interfaces shows on it).
  if (auto reply = control_request(g_socket, "stack-interface", &refusal); reply && !reply->empty()) {
    const std::size_t end = reply->find('\n');
    const unsigned index = ::if_nametoindex(reply->substr(0, end).c_str());
    if (index != 0) ::setenv(preload::kInterfaceIndexVariable, std::to_string(index).c_str(), 1);
    const std::string address = end == std::string::npos ? std::string() : reply->substr(end + 1, reply->find('\n', end + 1) - end - 1);
    if (index != 0 && !address.empty()) ::setenv(preload::kInterfaceAddressVariable, address.c_str(), 1);
  }
  std::vector<char*> argv;
  for (const auto& word : command) argv.push_back(const_cast<char*>(word.c_str()));
  argv.push_back(nullptr);
  ::execvp(argv[0], argv.data());
  die("run: cannot start '" + command[0] + "': " + std::strerror(errno), 127);
}

// `flotilla mount DIR`: flotilla-mount, beside this binary, serves the file fleet there over FUSE
// until SIGINT or SIGTERM. The plain mistakes are caught here, before it leases a seat.
int cmd_mount(const std::string& directory) {
  std::error_code error;
  const auto status = std::filesystem::status(directory, error);
  if (!std::filesystem::exists(status)) die("mount: '" + directory + "' does not exist", 2);
  if (!std::filesystem::is_directory(status)) die("mount: '" + directory + "' is not a directory", 2);
  if (::access("/dev/fuse", R_OK | W_OK) != 0) {
    die(std::string("mount: FUSE is unavailable: /dev/fuse: ") + std::strerror(errno));
  }
  if (!running()) die("the stack is not running (no supervisor at " + g_socket + "); start it with 'flotilla up'");
  const std::string mounter =
      (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "flotilla-mount").string();
  std::vector<char*> argv{const_cast<char*>(mounter.c_str()), const_cast<char*>("--socket"),
                          g_socket.data(), const_cast<char*>(directory.c_str()), nullptr};
  ::execv(argv[0], argv.data());
  die("mount: cannot start " + mounter + ": " + std::strerror(errno), 127);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"flotilla: run and watch the Flotilla network stack"};
  app.name("flotilla");
  app.require_subcommand(1);
  g_socket = default_socket_path();
  app.add_option("--socket", g_socket, "Supervisor control socket (or $FLOTILLA_SOCKET)")
      ->capture_default_str();

  std::string config_path;
  auto* up = app.add_subcommand("up", "Start the supervisor and every component");
  up->add_option("--config", config_path, "TOML configuration (default: the embedded one)")
      ->check(CLI::ExistingFile);
  std::vector<std::string> overrides;
  up->add_option("--set", overrides,
                 "TABLE.KEY=VALUE: change one key of the configuration (repeatable), e.g. --set limits.app_seats=6; "
                 "'flotilla config' lists the keys")
      ->type_name("KEY=VALUE")
      ->allow_extra_args(false);
  auto* config = app.add_subcommand(
      "config", "Print the default configuration as TOML, with a comment per key (edit a copy for 'up --config')");
  auto* down = app.add_subcommand("down", "Stop every component and the supervisor");
  bool json = false;
  auto* status = app.add_subcommand("status", "Show each component's state");
  status->add_flag("--json", json, "Machine-readable output");
  bool follow = false;
  auto* events = app.add_subcommand("events", "Show the event log: starts, exits, restarts, recoveries");
  events->add_flag("--follow,-f", follow, "Keep printing new events");
  int count = 0;
  auto* top = app.add_subcommand("top", "Live counters of every component, refreshed every second");
  top->add_option("--count,-n", count, "Stop after this many refreshes (default: until Ctrl-C)")
      ->check(CLI::NonNegativeNumber);
  auto* names = app.add_subcommand("names", "Show the name fleet's table");
  std::string counters_of;
  bool all_counters = false;
  auto* counters = app.add_subcommand(
      "counters", "Every counter of each component, its own named ones too (e.g. ip's bad_checksum)");
  counters->add_option("COMPONENT", counters_of, "Only this component");
  counters->add_flag("--all,-a", all_counters, "Show counters that are still 0");
  std::string component;
  std::string fault;
  double at_seconds = 0;
  auto* inject = app.add_subcommand("inject", "Inject a fault into a component");
  inject->add_option("COMPONENT", component, "Component name (see 'flotilla status')")->required();
  inject->add_option("FAULT", fault, "crash (SIGSEGV in its loop), abort, hang (loop and heartbeat stop), "
                                     "corrupt (one outgoing message garbled), or forbidden-call (it opens a "
                                     "socket, which its sandbox answers with SIGSYS)")
      ->required()
      ->check(CLI::IsMember({"crash", "abort", "hang", "corrupt", "forbidden-call"}));
  inject->add_option("--at", at_seconds, "Seconds from now (default: at once)")
      ->check(CLI::Range(0.0, 86400.0));
  std::vector<std::string> command;
  auto* run = app.add_subcommand(
      "run", "Run an unmodified program on Flotilla's sockets: flotilla run -- COMMAND [ARGS...] "
             "(its AF_INET sockets go to the stack, and its paths under the configuration's [files] prefix to "
             "the file fleet, through libflotilla-preload.so)");
  run->footer("A program that becomes another user keeps the stack: flotilla run -- runuser -u postgres -- "
              "postgres -D DIR (the connection flotilla run hands it, FLOTILLA_GRANT_FD, leases its seats). Ports "
              "below 1024 then need CAP_NET_BIND_SERVICE, as on Linux. A static, Go or 32-bit program cannot load the "
              "library: it runs on the kernel's sockets, and flotilla run says so first.");
  run->add_option("COMMAND", command, "The program and its arguments, after --")->required();
  std::string mount_directory;
  auto* mount = app.add_subcommand(
      "mount", "Mount the file fleet on DIR with FUSE, in the foreground; Ctrl-C or SIGTERM unmounts it");
  mount->add_option("DIR", mount_directory, "An existing directory (empty: what it holds is hidden while mounted)")
      ->required();
  cli::DemoOptions demo_options;
  std::string fault_schedule(cli::kDefaultFaultSchedule);
  auto* demo = app.add_subcommand(
      "demo", "The recovery experiment: iperf3 on Flotilla to a kernel peer while pf, ip, the driver, an idle "
              "TCP replica and a name server crash; prints a table per fault and writes a timeline (needs root)");
  demo->add_option("--duration", demo_options.duration_seconds, "Seconds of streaming")
      ->capture_default_str()
      ->check(CLI::Range(2.0, 3600.0));
  auto* faults_option = demo->add_option("--faults", fault_schedule,
                   "SECONDS:COMPONENT,... crashes to inject; 'tcp-idle' is the replica without the stream, "
                   "'tcp-carrier' the one with it")
      ->capture_default_str();
  demo->add_option("--out", demo_options.out_dir, "Where timeline.svg and report.json go")->capture_default_str();
  demo->add_option("--config", demo_options.config_path,
                   "TOML configuration for 'flotilla up' (default: the embedded one); it needs application "
                   "seats ([limits] app_seats) and its [network] names the peer")
      ->check(CLI::ExistingFile);
  demo->add_option("--interval-ms", demo_options.interval_ms, "Throughput sample period")
      ->capture_default_str()
      ->check(CLI::Range(20, 5000));
  demo->add_option("--file-server", demo_options.file_server,
                   "After the stream, the file server crashed while tar extracts a tree into the file fleet "
                   "under flotilla run (the tree is then checked against its source): fs0, fs1, ..., 'fs-busy' "
                   "(the one serving the extraction most) or '' for none")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  if (*run) return cmd_run(command);
  if (*mount) return cmd_mount(mount_directory);
  if (*demo) {
    std::string problem;
    // The default schedule shrinks with a shorter stream; one given by hand must fit it.
    const double schedule_end = faults_option->count() == 0 ? 1e9 : demo_options.duration_seconds;
    auto faults = cli::parse_fault_schedule(fault_schedule, schedule_end, &problem);
    if (faults && faults_option->count() == 0) {
      std::erase_if(faults.value(), [&](const cli::DemoFault& fault) { return fault.at_seconds >= demo_options.duration_seconds; });
    }
    if (!faults) die("--faults: " + problem, 2);
    demo_options.faults = std::move(faults.value());
    auto outcome = demo_options.config_path.empty() ? parse_config(kDefaultConfig, "<default config>")
                                                    : load_config_file(demo_options.config_path);
    if (auto* error = std::get_if<ConfigError>(&outcome)) die(error->message, 2);
    const SupervisorConfig& chosen = std::get<SupervisorConfig>(outcome);
    const NetworkConfig& network = chosen.network;
    demo_options.files_prefix = chosen.files_prefix;
    // A configuration without file servers has no file fleet to crash.
    if (std::none_of(chosen.components.begin(), chosen.components.end(),
                     [](const ComponentConfig& component) { return component.binary == "flotilla-fs"; })) {
      demo_options.file_server.clear();
    }
    demo_options.peer_namespace = network.peer_namespace;
    demo_options.peer_address = network.peer_address.substr(0, network.peer_address.find('/'));
    demo_options.socket = g_socket;
    demo_options.flotilla = std::filesystem::read_symlink("/proc/self/exe").string();
    return cli::run_demo(demo_options);
  }
  if (*up) return cmd_up(config_path, overrides);
  if (*config) {
    std::fputs(kDefaultConfig.c_str(), stdout);
    return 0;
  }
  if (*down) return cmd_down();
  if (*status) {
    std::fputs(ask(json ? "status-json" : "status").c_str(), stdout);
    return 0;
  }
  if (*events) return cmd_events(follow);
  if (*top) return cmd_top(count);
  if (*names) {
    std::fputs(ask("names").c_str(), stdout);
    return 0;
  }
  if (*counters) return cmd_counters(counters_of, all_counters);
  if (*inject) {
    const auto at_ms = static_cast<long long>(at_seconds * 1000.0 + 0.5);
    std::fputs(ask("inject " + component + " " + fault + (at_ms > 0 ? " " + std::to_string(at_ms) : "")).c_str(),
               stdout);
    return 0;
  }
  return 0;
}
