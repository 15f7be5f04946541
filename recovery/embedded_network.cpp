#include "recovery/embedded_network.hpp"

#include <fcntl.h>
#include <net/if.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <vector>

namespace flotilla::recovery {

int run_command(const std::vector<std::string>& argv, std::string* output) {
  int pipe_fds[2] = {-1, -1};
  if (output != nullptr && ::pipe2(pipe_fds, O_CLOEXEC) != 0) return -1;
  std::vector<std::string> words = argv;
  std::vector<char*> pointers;
  for (auto& word : words) pointers.push_back(word.data());
  pointers.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    ::dup2(null, 0);
    ::dup2(output != nullptr ? pipe_fds[1] : null, 1);
    ::dup2(output != nullptr ? pipe_fds[1] : null, 2);
    ::execvp(pointers[0], pointers.data());
    ::_exit(127);
  }
  if (output != nullptr) {
    ::close(pipe_fds[1]);
    char buffer[4096];
    for (ssize_t n; (n = ::read(pipe_fds[0], buffer, sizeof(buffer))) > 0;) output->append(buffer, static_cast<std::size_t>(n));
    ::close(pipe_fds[0]);
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string network_precondition(const NetworkConfig& network) {
  if (::geteuid() != 0) {
    return "the embedded network (namespace " + network.peer_namespace + ", veth " +
           network.stack_interface + ") needs root; run as root, or use a memwire configuration "
           "(two Flotilla stacks joined in shared memory: see README, 'Without root')";
  }
  if (embedded_network_exists(network)) {
    return "namespace " + network.peer_namespace + " or interface " + network.stack_interface +
           " exists already (a stack still up, or left over): run 'flotilla down'";
  }
  return "";
}

bool embedded_network_exists(const NetworkConfig& network) {
  return std::filesystem::exists("/run/netns/" + network.peer_namespace) ||
         ::if_nametoindex(network.stack_interface.c_str()) != 0;
}

Status create_embedded_network(const NetworkConfig& network, std::string* detail) {
  const std::string& ns = network.peer_namespace;
  const std::vector<std::vector<std::string>> steps = {
      {"ip", "netns", "add", ns},
      {"ip", "link", "add", network.stack_interface, "type", "veth", "peer", "name",
       network.peer_interface, "netns", ns},
      {"ip", "-n", ns, "addr", "add", network.peer_address, "dev", network.peer_interface},
      {"ip", "-n", ns, "link", "set", "lo", "up"},
      {"ip", "-n", ns, "link", "set", network.peer_interface, "up"},
      {"ip", "netns", "exec", ns, "ethtool", "-K", network.peer_interface, "tx", "off", "tso", "off",
       "gso", "off"},
      {"ip", "link", "set", network.stack_interface, "up"},
  };
  for (std::size_t i = 0; i < steps.size(); ++i) {
    std::string output;
    if (run_command(steps[i], &output) != 0) {
      std::string command;
      for (const auto& word : steps[i]) command += (command.empty() ? "" : " ") + word;
      if (detail != nullptr) *detail = "'" + command + "' failed: " + output;
      remove_embedded_network(network);
      return Error{Errc::system, 0, "creating the embedded network"};
    }
    if (i == 1) {
      // The stack's end carries no kernel addresses, no IPv6 either: the kernel sends nothing on it.
      std::ofstream disable("/proc/sys/net/ipv6/conf/" + network.stack_interface + "/disable_ipv6");
      disable << "1\n";
    }
  }
  return {};
}

void remove_embedded_network(const NetworkConfig& network) {
  // Deleting one end of a veth pair deletes both; the namespace goes last.
  (void)run_command({"ip", "link", "del", network.stack_interface});
  (void)run_command({"ip", "netns", "del", network.peer_namespace});
}

}  // namespace flotilla::recovery
