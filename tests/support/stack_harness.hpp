// Running a whole Flotilla stack for tests and benchmarks: `flotilla up` on a configuration of the
// caller's own (a namespace and veth pair with names unique to this process), torn down by
// `flotilla down` whatever happens. Helpers run code inside the peer namespace (the kernel's side),
// read the components' counters, and wait for events.
#pragma once

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "recovery/control_socket.hpp"
#include "recovery/default_config.hpp"
#include "recovery/embedded_network.hpp"
#include "components/formats/tcp_socket_page.hpp"

namespace flotilla::testing {

using namespace std::chrono_literals;

// The build folder: $FLOTILLA_BUILD_ROOT, or the one this program was built in (tests/ and perf/
// sit one level below it).
inline std::string build_root() {
  if (const char* path = std::getenv("FLOTILLA_BUILD_ROOT"); path != nullptr && *path != '\0') return path;
  std::error_code error;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", error);
  return error ? "" : self.parent_path().parent_path().string();
}

struct CommandOutcome {
  int exit_code;
  std::string output;
};

// `argv` as words of a shell command line, each quoted whatever it holds.
inline std::string shell_words(const std::vector<std::string>& argv) {
  std::string line;
  for (const std::string& word : argv) {
    line += line.empty() ? "'" : " '";
    for (const char c : word) line += c == '\'' ? std::string("'\\''") : std::string(1, c);
    line += '\'';
  }
  return line;
}

// Runs a shell command line; its output is stdout (add 2>&1 for stderr too).
inline CommandOutcome run_shell(const std::string& command) {
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return {-1, "popen failed"};
  std::string output;
  char chunk[4096];
  while (std::size_t got = std::fread(chunk, 1, sizeof(chunk), pipe)) output.append(chunk, got);
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

inline CommandOutcome run_cli(const std::string& arguments) {
  return run_shell(build_root() + "/apps/flotilla " + arguments + " 2>&1");
}

// Polls `condition` every 20 ms until it holds or `deadline` passes.
template <class Condition>
bool wait_for(Condition&& condition, std::chrono::milliseconds deadline) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

// A command running in the background, with its output collected when it ends.
class BackgroundCommand {
 public:
  explicit BackgroundCommand(std::vector<std::string> argv) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(fds[1], 1);
      ::dup2(fds[1], 2);
      std::vector<char*> words;
      for (auto& word : argv) words.push_back(word.data());
      words.push_back(nullptr);
      ::execvp(words[0], words.data());
      ::_exit(127);
    }
    ::close(fds[1]);
    out_ = fds[0];
  }
  ~BackgroundCommand() { (void)finish(true); }
  // Waits for the command to end by itself (interrupt = false) or interrupts it; returns its output.
  std::string finish(bool interrupt = false) {
    if (pid_ <= 0) return output_;
    if (interrupt) ::kill(pid_, SIGINT);
    char chunk[4096];
    for (ssize_t got; (got = ::read(out_, chunk, sizeof(chunk))) > 0;) output_.append(chunk, static_cast<std::size_t>(got));
    ::close(out_);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
    return output_;
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  std::string output_;
};

// Runs `body` on a thread that has entered the network namespace `name`; returns its result.
template <class Body>
auto in_namespace(const std::string& name, Body&& body) -> decltype(body()) {
  using Out = decltype(body());
  Out out{};
  std::thread worker([&] {
    const int fd = ::open(("/run/netns/" + name).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ::setns(fd, CLONE_NEWNET) != 0) {
      std::fprintf(stderr, "cannot enter namespace %s\n", name.c_str());
      if (fd >= 0) ::close(fd);
      return;
    }
    ::close(fd);
    out = body();
  });
  worker.join();
  return out;
}

struct StackNames {
  std::string peer_namespace;
  std::string stack_interface;
  std::string peer_interface;
  std::string stack_address = "10.79.0.2";
  std::string peer_address = "10.79.0.1";
};

inline StackNames unique_names() {
  const std::string id = std::to_string(::getpid() % 10'000'000);
  return StackNames{"flo" + id + "p", "flo" + id + "s", "flo" + id + "q"};
}

// The stack's components as the default configuration has them (driver, ip, pf, udp and a UDP
// echo server on port 7) on a network of this process's own. `extra` is appended (more components
// and channels).
// `impair` is the driver's link emulation ([network] impair, drivers/impaired_port.hpp).
inline std::string stack_config(const StackNames& names, const std::string& rules,
                                const std::string& extra = "", const std::string& driver = "af_xdp",
                                const std::string& impair = "") {
  return "[supervisor]\nheartbeat_timeout_ms = 200\ncrash_limit = 1000\ncrash_window_ms = 1000\n"
         "max_backoff_ms = 0\n"
         "\n[network]\ndriver = \"" + driver + "\"\nnamespace = \"" + names.peer_namespace +
         "\"\nstack_interface = \"" + names.stack_interface + "\"\npeer_interface = \"" +
         names.peer_interface + "\"\nstack_address = \"" + names.stack_address +
         "/24\"\npeer_address = \"" + names.peer_address + "/24\"\nimpair = \"" + impair + "\"\n"
         "\n[filter]\nrules = \"\"\"\n" + rules + "\n\"\"\"\n"
         + recovery::kStackComponentsConfig + extra;
}

// An application of the native TCP API (sockets/tcp_sockets.hpp) as a component: a channel to each
// TCP replica and the socket region it shares with each, holding `slots` sockets of the replicas'
// default ring size (1 MiB each way). Append it to stack_config()'s `extra`. With
// `name_placement`, it also gets a channel "<name>-name0" to the name server name0 and
// `--name-channel` naming it, so that its connections are placed by the name fleet; the
// configuration must then have the fleet too (recovery::kNameFleetConfig).
inline std::string tcp_app_config(const std::string& name, const std::string& binary,
                                  std::vector<std::string> args, std::size_t slots = 16,
                                  bool name_placement = false) {
  if (name_placement) args.insert(args.end(), {"--name-channel", name + "-name0"});
  std::string text = "\n[[component]]\nname = \"" + name + "\"\nbinary = \"" + binary + "\"\nargs = [";
  for (std::size_t i = 0; i < args.size(); ++i) text += (i ? ", \"" : "\"") + args[i] + "\"";
  const std::size_t region_bytes = formats::TcpRegion::bytes_for(slots, std::size_t{1} << 20);
  text += "]\n\n[[channel]]\nname = \"tcp${replica}-" + name + "\"\na = \"tcp\"\nb = \"" + name +
          "\"\ncapacity = 1024\n\n[[region]]\nname = \"tcp${replica}-" + name + "-tcp\"\nbytes = " +
          std::to_string(region_bytes) + "\nwriters = [\"tcp\", \"" + name + "\"]\n";
  if (name_placement) {
    text += "\n[[channel]]\nname = \"" + name + "-name0\"\na = \"" + name + "\"\nb = \"name0\"\ncapacity = 256\n";
  }
  return text;
}

// A stack started with `flotilla up` on a configuration written to `folder`, with its own control
// socket there; stop() (or the destructor) brings it down and removes its network.
class RunningStack {
 public:
  RunningStack() = default;
  RunningStack(const RunningStack&) = delete;
  RunningStack& operator=(const RunningStack&) = delete;
  ~RunningStack() { stop(); }

  // Returns "" when the stack is up, otherwise what went wrong.
  std::string start(const StackNames& names, const std::string& config_text) {
    names_ = names;
    char pattern[] = "/tmp/flotilla-stack-XXXXXX";
    if (::mkdtemp(pattern) == nullptr) return "mkdtemp failed";
    folder_ = pattern;
    socket_ = (folder_ / "control.sock").string();
    std::ofstream(folder_ / "stack.toml") << config_text;
    const CommandOutcome up = cli("up --config " + (folder_ / "stack.toml").string());
    started_ = up.exit_code == 0;
    if (!started_) return up.output;
    // Up means the supervisor answers; wait until the driver and IP have registered their counters.
    if (!wait_for([&] { return counter("driver", "rx_frames") >= 0 && counter("ip", "frames_in") >= 0; },
                  std::chrono::seconds(10))) {
      return "the stack did not start serving:\n" + events();
    }
    return "";
  }

  // Returns the output of `flotilla down` ("" when nothing was running).
  std::string stop() {
    std::string output;
    if (started_) {
      output = cli("down").output;
      started_ = false;
    }
    if (!names_.peer_namespace.empty()) {
      // Whatever happened, nothing of ours stays behind.
      recovery::NetworkConfig network;
      network.peer_namespace = names_.peer_namespace;
      network.stack_interface = names_.stack_interface;
      recovery::remove_embedded_network(network);
      names_ = StackNames{};
    }
    if (!folder_.empty()) {
      std::filesystem::remove_all(folder_);
      folder_.clear();
    }
    return output;
  }

  CommandOutcome cli(const std::string& arguments) const { return run_cli("--socket " + socket_ + " " + arguments); }
  // The supervisor's control socket (what `flotilla --socket`, FLOTILLA_SOCKET and
  // ComponentHost::lease take).
  const std::string& socket_path() const { return socket_; }

  // Every counter of every component, as `flotilla top` reads them.
  recovery::CounterTable all_counters() const {
    std::string refusal;
    auto reply = recovery::control_request(socket_, "counters", &refusal);
    return reply ? recovery::parse_counters(reply.value()) : recovery::CounterTable{};
  }

  // One counter; -1 when the component or counter does not exist (yet).
  std::int64_t counter(const std::string& component, const std::string& name) const {
    auto table = all_counters();
    auto c = table.find(component);
    if (c == table.end()) return -1;
    auto value = c->second.find(name);
    return value == c->second.end() ? -1 : static_cast<std::int64_t>(value->second);
  }

  // The whole event log (the supervisor hands it out in pages).
  std::string events() const { return recovery::whole_event_log(socket_); }

  // Each component's process id, from `status-json` (-1 for one not running now).
  std::map<std::string, pid_t> pids() const {
    std::map<std::string, pid_t> out;
    std::string refusal;
    auto reply = recovery::control_request(socket_, "status-json", &refusal);
    if (!reply) return out;
    const auto status = nlohmann::json::parse(reply.value(), nullptr, false);
    if (!status.is_object() || !status.contains("components") || !status["components"].is_array()) return out;
    for (const auto& component : status["components"]) {
      if (!component.is_object() || !component.contains("name") || !component["name"].is_string()) continue;
      const bool has_pid = component.contains("pid") && component["pid"].is_number_integer();
      out[component["name"].get<std::string>()] = has_pid ? component["pid"].get<pid_t>() : -1;
    }
    return out;
  }

  // Where the supervisor and the components write their output (stdout, stderr).
  std::filesystem::path log_path() const { return folder_ / "supervisor.log"; }

  const StackNames& names() const { return names_; }

 private:
  StackNames names_;
  std::filesystem::path folder_;
  std::string socket_;
  bool started_ = false;
};

}  // namespace flotilla::testing
