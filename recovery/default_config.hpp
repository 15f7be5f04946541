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
        "--replicas", "${replica.count}", "--ring-bytes", "${limits.tcp_ring_bytes}"]
# The connection table (16,384 connections of 256 B) and the slot table (a 40 B entry per socket
# of every seat: [limits] app_seats x tcp_sockets_per_seat). Sparse: what is never written costs
# nothing.
state_bytes = 100663296

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

// A [limits] table declaring `seats` application seats (the rest of [limits] at its defaults): what
// a configuration built on kStackComponentsConfig appends for programs run with `flotilla run`.
inline std::string app_seats_config(int seats = 4) {
  return "\n[limits]\napp_seats = " + std::to_string(seats) + "\n";
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

// The file fleet (components/fs/): `servers` file servers (flotilla-fs, `replicas = servers`) and
// the shared buffer cache they map, "fs-blocks". The seats of [limits] app_seats get a channel from
// every server and map the cache by themselves (recovery/config.cpp); `seats` declares them for
// seats made by bare_app_seats_config instead (a fleet without the network stack). The cache's
// writers are named one by one: naming the group "fs" would make one region per server, and it is
// one region they share.
inline constexpr int kFileServers = 2;
inline constexpr std::uint64_t kFileCacheBytes = 64ull << 20;
inline constexpr std::uint64_t kFileServerStateBytes = 8ull << 20;

inline std::string file_fleet_config(int servers = kFileServers, int seats = 0,
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
inline std::string bare_app_seats_config(int seats = 4) {
  std::string text;
  for (int i = 0; i < seats; ++i) text += "\n[[component]]\nname = \"app" + std::to_string(i) + "\"\nexternal = true\n";
  return text;
}

// Every key of the single-value tables is given, with what it means: `flotilla config` prints this.
inline const std::string kDefaultConfig = std::string(R"(# flotilla default configuration: the stack on the embedded network.
# `flotilla config` prints it; `flotilla up --config FILE` takes an edited copy, and
# `flotilla up --set TABLE.KEY=VALUE` changes one key of it (e.g. --set limits.app_seats=6).

[supervisor]
# A component that misses its heartbeat this long is hung, and restarted. 200 ms, not 50: here the
# stack shares 2 cores with the programs it serves and their kernel peers, and a loop starved that
# long is not hung. Crashes are seen at once anyway (through pidfds), whatever the limit.
heartbeat_timeout_ms = 200
# How long a starting component may take before its first heartbeat is due.
startup_grace_ms = 2000
# This many crashes of one component within crash_window_ms mark it failed (no more restarts).
crash_limit = 5
crash_window_ms = 10000
# The restart delay doubles with each recent crash, up to this.
max_backoff_ms = 500
# false: the components run without their seccomp allow-lists and keep every capability (to debug
# them with strace or gdb).
sandbox = true
# Packet buffers in the shared pool, and the size of each (a power of two, 256-4096).
pool_buffers = 4096
buffer_size = 2048

[limits]
# Application seats (0-128): each process that uses the stack under `flotilla run` leases one (a
# fork child too, and each nginx worker). Past it, that process's sockets fail with ENFILE. An idle
# seat costs a few pages of memory, and the servers look at its channel only now and then.
app_seats = 64
# TCP sockets (listeners and connections) a program can have on each TCP replica. Past it, a new
# socket fails with EMFILE. A seat's region on a replica is sized for all of them (about
# 2 x tcp_ring_bytes each, at most 64 GiB) but is sparse: memory is taken by the sockets in use
# (a 4 KiB control page each, and ring pages as bytes go through; a closed socket's rings are given
# back), so the limit costs address space, not memory. Each socket also has a 40 B entry in each
# replica's state store: app_seats x tcp_sockets_per_seat x 40 B must fit the "tcp" state_bytes.
tcp_sockets_per_seat = 16384
# The send ring and the receive ring of each TCP socket, in bytes (a power of two, at least 4096).
tcp_ring_bytes = 1048576
# Messages in flight on each channel between a program and the stack (a power of two).
seat_channel_capacity = 1024

[wait]
# How each component waits once its inputs are empty: "shared" (spin up to 2 us, give the core away
# with sched_yield while traffic is warm, then sleep on its doorbell), "dedicated" (spin up to
# 50 us, then sleep) or "poll" (never sleep: a core of its own). `default` is every component's;
# a component's name (ip) or a replica group's (tcp) sets its own, e.g. --set wait.ip=poll.
# "shared" by measurement (docs/performance.md, the placement table): on 2 vCPUs polling holds a
# core the programs and the kernel peer need (ping-pong 100x slower with driver and ip polling), and
# "dedicated" measured no better beyond the noise while it holds each core 50 us longer per gap.
# With a core per component: default = "poll" and a core for each.
default = "shared"

[files]
# Where programs under `flotilla run` find the file fleet: paths under it (and descriptors opened
# there) go to the file servers, every other path to the kernel.
prefix = "/flotilla"
# The buffer cache the file servers share (bytes, a multiple of 4096, at least 1 MiB), split evenly
# among them. Past it, writes fail with ENOSPC (and one "flotilla:" line on the program's stderr).
cache_bytes = 67108864

[network]
# The driver: af_xdp (the veth below), dpdk or memwire (a shared-memory wire between two stacks).
driver = "af_xdp"
# The namespace holding the kernel's stack as the peer.
namespace = "flo-peer"
# The veth end Flotilla drives (in the root namespace), and the peer's end in its namespace.
stack_interface = "flo-stack"
peer_interface = "flo-peer0"
# Flotilla's address and the peer's, each with its prefix length.
stack_address = "10.77.0.2/24"
peer_address = "10.77.0.1/24"
# The default route's next hop ("": no default route).
gateway = ""
# The memwire driver's shared-memory file, and which side of the wire this stack is ("a" or "b").
memwire_path = "/dev/shm/flotilla-memwire"
memwire_side = "a"
# The DPDK device ("": net_af_packet on stack_interface).
dpdk_device = ""
# Link emulation in the driver, e.g. "loss=1%,delay=25ms" ("": none; drivers/impaired_port.hpp).
impair = ""
# false: use interfaces that already exist instead of making the namespace and the veth pair.
create_peer = true

[filter]
# The packet filter's rules (components/pf).
rules = """
pass all
"""

# The stack's processes. A [[component]] has a name, a binary (beside flotilla-supervisor, or a
# path), args (${network.KEY}, ${limits.KEY}, ${filter.rules} and, for replicas,
# ${replica.index} and ${replica.count} are replaced), and optionally core (a CPU), state_bytes
# (the state kept across its restarts), pool ("read-only"), replicas (that many copies, named
# NAME0..), role ("name-server") or external (a seat: no binary). A [[channel]] joins components a
# and b with room for capacity messages; a [[region]] is shared memory of bytes, mapped by its
# writers and readers. The application seats' are declared from [limits].
)") + kStackComponentsConfig + kNameFleetConfig + file_fleet_config();

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
