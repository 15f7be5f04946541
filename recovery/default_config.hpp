// The configuration `flotilla up` uses when given none: the network stack on the embedded network
// (a namespace `flo-peer` with the kernel's stack at 10.77.0.1, joined by a veth pair to Flotilla
// at 10.77.0.2), two TCP replicas, a UDP echo server on port 7, a name fleet of two servers in which the
// supervisor registers every component as /proc/<name>, and a file fleet of two servers. Needs root
// (namespaces, XDP).
//
// Also the echo chain configuration (a client streaming requests through a middle component to a
// server, and the name fleet), which needs no privileges; the supervisor's own tests run it.
#pragma once

#include <cstdint>
#include <string>

namespace flotilla::recovery {

// The stack's processes (driver, ip, pf, udp, a UDP echo server on port 7 and the TCP replicas),
// their channels, the echo server's exposed-socket region and the region in which pf hands the
// driver its XDP block rules. Everything network-specific comes in through
// `${network.*}` and `${filter.rules}`, so configurations with their own [network] and [filter]
// (the default one below, the tests' and benchmarks' stacks) share this part.
inline constexpr const char* kStackComponentsConfig = R"(
[[component]]
name = "driver"
binary = "flotilla-driver"
args = ["--type", "${network.driver}", "--interface", "${network.stack_interface}",
        "--dpdk-device", "${network.dpdk_device}", "--memwire-path", "${network.memwire_path}",
        "--memwire-side", "${network.memwire_side}", "--impair", "${network.impair}"]

[[component]]
name = "ip"
binary = "flotilla-ip"
args = ["--address", "${network.stack_address}", "--gateway", "${network.gateway}"]
state_bytes = 2097152

[[component]]
name = "pf"
binary = "flotilla-pf"
args = ["--rules", "${filter.rules}"]
pool = "read-only"
state_bytes = 1048576

[[component]]
name = "udp"
binary = "flotilla-udp"
args = ["--address", "${network.stack_address}"]
state_bytes = 65536

[[component]]
name = "echo"
binary = "flotilla-udp-echo"
args = ["--role", "server", "--port", "7"]

# The TCP replicas (components/tcp/): each owns its own connections; IP spreads new flows over
# them by a hash of the 4-tuple.
[[component]]
name = "tcp"
binary = "flotilla-tcp"
replicas = 2
args = ["--address", "${network.stack_address}", "--index", "${replica.index}",
        "--replicas", "${replica.count}"]
state_bytes = 8388608

[[channel]]
name = "ip-tcp${replica}"
a = "ip"
b = "tcp"
capacity = 1024

[[channel]]
name = "driver-ip"
a = "driver"
b = "ip"
capacity = 1024

[[channel]]
name = "ip-pf"
a = "ip"
b = "pf"
capacity = 1024

[[channel]]
name = "ip-udp"
a = "ip"
b = "udp"
capacity = 1024

[[channel]]
name = "udp-echo"
a = "udp"
b = "echo"
capacity = 1024

# The echo server's socket state, exposed to it by the UDP server (components/formats/exposed_sockets.hpp).
[[region]]
name = "udp-echo-sockets"
bytes = 16384
writers = ["udp"]
readers = ["echo"]

# The block rules pf compiled from its rules for the driver's XDP program
# (components/formats/xdp_block_list.hpp).
[[region]]
name = "xdp-block-rules"
bytes = 4096
writers = ["pf"]
readers = ["driver"]
)";

// Application seats: external components that programs started with `flotilla run` lease (the
// preload library, through ComponentHost::lease). Each has a channel and a socket region to every
// TCP replica, and a channel to the UDP server with its exposed-socket region.
inline constexpr int kAppSeats = 4;
inline constexpr std::uint64_t kAppSocketsPerReplica = 64;
// formats::TcpRegion::bytes_for(kAppSocketsPerReplica, 1 MiB rings): a header page, then per slot
// a control page and two rings.
inline constexpr std::uint64_t kAppTcpRegionBytes = 4096 + kAppSocketsPerReplica * (4096 + 2 * (1u << 20));

inline std::string app_seats_config(int seats = kAppSeats) {
  std::string text;
  for (int i = 0; i < seats; ++i) {
    const std::string name = "app" + std::to_string(i);
    text += "\n[[component]]\nname = \"" + name + "\"\nexternal = true\n"
            "\n[[channel]]\nname = \"tcp${replica}-" + name + "\"\na = \"tcp\"\nb = \"" + name +
            "\"\ncapacity = 1024\n"
            "\n[[region]]\nname = \"tcp${replica}-" + name + "-tcp\"\nbytes = " +
            std::to_string(kAppTcpRegionBytes) + "\nwriters = [\"tcp\", \"" + name + "\"]\n"
            "\n[[channel]]\nname = \"udp-" + name + "\"\na = \"udp\"\nb = \"" + name +
            "\"\ncapacity = 1024\n"
            "\n[[region]]\nname = \"udp-" + name + "-sockets\"\nbytes = 16384\nwriters = [\"udp\"]\nreaders = [\"" +
            name + "\"]\n";
  }
  return text;
}

// A name fleet of two servers.
inline constexpr const char* kNameFleetConfig = R"(
[[component]]
name = "name0"
binary = "flotilla-name-server"
role = "name-server"

[[component]]
name = "name1"
binary = "flotilla-name-server"
role = "name-server"

[[channel]]
name = "fleet-name0-name1"
a = "name0"
b = "name1"
capacity = 256
)";

// The file fleet (components/fs/): `servers` file servers (flotilla-fs, `replicas = servers`), the
// shared buffer cache they and the application seats app0..app<seats-1> map, and a channel from
// every server to every seat. The seats are declared elsewhere (app_seats_config, or
// bare_app_seats_config for a fleet without the network stack). The cache's writers are named one
// by one: naming the group "fs" would make one region per server, and it is one region they share.
inline constexpr int kFileServers = 2;
inline constexpr std::uint64_t kFileCacheBytes = 64ull << 20;
inline constexpr std::uint64_t kFileServerStateBytes = 8ull << 20;

inline std::string file_fleet_config(int servers = kFileServers, int seats = kAppSeats,
                                     std::uint64_t cache_bytes = kFileCacheBytes) {
  std::string writers;
  for (int i = 0; i < servers; ++i) writers += "\"fs" + std::to_string(i) + "\", ";
  for (int i = 0; i < seats; ++i) writers += "\"app" + std::to_string(i) + "\", ";
  writers.resize(writers.size() - 2);
  std::string text = "\n[[component]]\nname = \"fs\"\nbinary = \"flotilla-fs\"\nreplicas = " +
                     std::to_string(servers) +
                     "\nargs = [\"--index\", \"${replica.index}\", \"--servers\", \"${replica.count}\"]\n"
                     "state_bytes = " + std::to_string(kFileServerStateBytes) + "\n"
                     "\n[[region]]\nname = \"fs-blocks\"\nbytes = " + std::to_string(cache_bytes) +
                     "\nwriters = [" + writers + "]\n";
  for (int i = 0; i < seats; ++i) {
    const std::string seat = "app" + std::to_string(i);
    text += "\n[[channel]]\nname = \"fs${replica}-" + seat + "\"\na = \"fs\"\nb = \"" + seat +
            "\"\ncapacity = 256\n";
  }
  return text;
}

// Application seats app0..app<seats-1> with no channel yet: for a configuration without the
// network stack (the file fleet alone).
inline std::string bare_app_seats_config(int seats = kAppSeats) {
  std::string text;
  for (int i = 0; i < seats; ++i) text += "\n[[component]]\nname = \"app" + std::to_string(i) + "\"\nexternal = true\n";
  return text;
}

inline const std::string kDefaultConfig = std::string(R"(# flotilla default configuration: the stack on the embedded network
# The heartbeat limit is 200 ms, not 50: here the stack shares 2 cores with the programs it serves
# and their kernel peers, and a loop starved that long is not hung. Crashes are seen at once anyway
# (through pidfds), whatever the limit.
[supervisor]
heartbeat_timeout_ms = 200
crash_limit = 5
crash_window_ms = 10000

[network]
driver = "af_xdp"
namespace = "flo-peer"
stack_interface = "flo-stack"
peer_interface = "flo-peer0"
stack_address = "10.77.0.2/24"
peer_address = "10.77.0.1/24"

[filter]
rules = """
pass all
"""
)") + kStackComponentsConfig + app_seats_config() + kNameFleetConfig + file_fleet_config();

inline const std::string kEchoChainConfig = std::string(R"(# the echo chain and a name fleet: what the supervisor tests run
[supervisor]
heartbeat_timeout_ms = 50
crash_limit = 5
crash_window_ms = 10000

[[component]]
name = "client"
binary = "flotilla-echo"
args = ["--role", "client", "--rate", "20000"]

[[component]]
name = "middle"
binary = "flotilla-echo"
args = ["--role", "middle"]

[[component]]
name = "server"
binary = "flotilla-echo"
args = ["--role", "server"]

[[channel]]
name = "client-middle"
a = "client"
b = "middle"
capacity = 256

[[channel]]
name = "middle-server"
a = "middle"
b = "server"
capacity = 256
)") + kNameFleetConfig;

}  // namespace flotilla::recovery
