// A second network namespace holding the Linux kernel's own servers, for comparisons with Flotilla
// on the same topology: it is joined to a stack's peer namespace by a veth pair of the same kind as
// Flotilla's link, so a client in the peer namespace reaches either the stack (its address on
// Flotilla's link) or the kernel's server (server_address) over one veth hop. Names are unique to
// this process ("flo<pid>k", "flo<pid>a", "flo<pid>b").
#pragma once

#include <unistd.h>

#include <string>
#include <utility>
#include <vector>

#include "recovery/embedded_network.hpp"

namespace flotilla::testing {

class KernelNamespace {
 public:
  KernelNamespace() {
    const std::string id = std::to_string(::getpid() % 10'000'000);
    ns = "flo" + id + "k";
    client_interface = "flo" + id + "a";
    server_interface = "flo" + id + "b";
  }
  KernelNamespace(const KernelNamespace&) = delete;
  KernelNamespace& operator=(const KernelNamespace&) = delete;
  ~KernelNamespace() { remove(); }

  std::string ns;
  std::string client_interface;  // in the peer namespace
  std::string server_interface;  // in this namespace
  std::string client_address = "10.80.0.1";
  std::string server_address = "10.80.0.2";

  // Makes the namespace and the pair; returns "" or the step that failed.
  std::string create(const std::string& peer_namespace) {
    created_ = true;
    const std::vector<std::vector<std::string>> steps = {
        {"ip", "netns", "add", ns},
        {"ip", "link", "add", client_interface, "netns", peer_namespace, "type", "veth", "peer", "name",
         server_interface, "netns", ns},
        {"ip", "-n", peer_namespace, "addr", "add", client_address + "/24", "dev", client_interface},
        {"ip", "-n", ns, "addr", "add", server_address + "/24", "dev", server_interface},
        {"ip", "-n", peer_namespace, "link", "set", client_interface, "up"},
        {"ip", "-n", ns, "link", "set", server_interface, "up"},
        {"ip", "-n", ns, "link", "set", "lo", "up"},
        // The same offload settings as the peer's end of Flotilla's link.
        {"ip", "netns", "exec", peer_namespace, "ethtool", "-K", client_interface, "tx", "off", "tso", "off", "gso", "off"},
    };
    for (const auto& step : steps) {
      if (recovery::run_command(step) != 0) {
        std::string text;
        for (const auto& word : step) text += (text.empty() ? "" : " ") + word;
        return "'" + text + "' failed";
      }
    }
    return "";
  }

  // Both ends of this pair: checksum offload, TSO and GSO on (the kernel's defaults) or off (frames
  // no larger than the MTU, each checksummed in software: the per-packet work Flotilla does). GRO
  // stays off on both ends in either case, as veth has it by default: without it a veth end takes
  // frames one by one (netif_rx), as the peer's end of Flotilla's link does. With TSO on the
  // segments cross as 64 KB packets anyway, so there is nothing for GRO to merge.
  // Returns "" or the interface whose settings failed.
  std::string set_offloads(const std::string& peer_namespace, bool on) const {
    const std::string state = on ? "on" : "off";
    for (const auto& [where, interface] : {std::pair{peer_namespace, client_interface}, std::pair{ns, server_interface}}) {
      if (recovery::run_command({"ip", "netns", "exec", where, "ethtool", "-K", interface, "tx", state, "tso", state,
                                 "gso", state, "gro", "off"}) != 0) {
        return interface;
      }
    }
    return "";
  }

  // Deleting the namespace deletes the pair with it; what is already gone is not an error.
  void remove() {
    if (!created_) return;
    (void)recovery::run_command({"ip", "netns", "del", ns});
    created_ = false;
  }

 private:
  bool created_ = false;
};

}  // namespace flotilla::testing
