// The supervisor's configuration: which components to start (binary, arguments, core), the
// channels between them, the buffer pool, the heartbeat limit and the restart policy. Read from
// TOML; every error names the line it is on.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace flotilla::recovery {

// What the supervisor does for a component beyond its lifecycle: a name server gets a channel to
// the supervisor, which registers every component through it (recovery/registrar.hpp).
enum class ComponentRole { none, name_server };

struct ComponentConfig {
  std::string name;
  std::string binary;  // a path, or a bare name looked up beside the supervisor's own binary
  std::vector<std::string> args;
  int core = -1;  // -1: let the kernel place it
  std::uint32_t state_bytes = 4096;  // the state-store region kept across restarts
  bool pool_writable = true;  // false: the pool is mapped read-only ("pool = 'read-only'")
  // A replicated component (`replicas = N`) becomes N components named <group>0 .. <group>N-1.
  // Their args may use ${replica.index} and ${replica.count}; a channel or region that names the
  // group is made once per replica, with ${replica} in its name replaced by the index.
  std::string group = {};  // empty unless replicated
  // Not started by the supervisor: an application seat a program leases with `flotilla run`
  // (ComponentHost::lease). No binary; its channels and regions are made like any other's.
  bool external = false;
  ComponentRole role = ComponentRole::none;  // `role = "name-server"`
  int replica_index = -1;
  int replica_count = 0;
  // How it waits for work ([wait]: WaitPolicy::kNames); empty: as its binary chooses.
  std::string wait = {};
};

struct ChannelConfig {
  std::string name;
  std::string a;  // component at side a
  std::string b;  // component at side b
  std::uint32_t capacity = 1024;
};

struct RegionConfig {
  std::string name;
  std::uint64_t bytes = 0;
  std::vector<std::string> writers;  // map it read-write
  std::vector<std::string> readers;  // map it read-only
};

struct RestartPolicy {
  std::uint32_t crash_limit = 5;                      // this many crashes ...
  std::chrono::milliseconds window{10'000};           // ... within this window: marked failed
  std::chrono::milliseconds max_backoff{500};         // restart delay doubles per recent crash
};

// The embedded network `flotilla up` builds (a namespace with the kernel's stack as the peer, joined
// to Flotilla by a veth pair) and the packet filter's rules. Components see these values through
// `${network.KEY}` and `${filter.rules}` placeholders in their args.
struct NetworkConfig {
  std::string driver = "af_xdp";          // af_xdp | dpdk | memwire
  std::string peer_namespace = "flo-peer";
  std::string stack_interface = "flo-stack";  // the veth end Flotilla drives (root namespace)
  std::string peer_interface = "flo-peer0";   // the veth end inside the peer namespace
  std::string stack_address = "10.77.0.2/24";
  std::string peer_address = "10.77.0.1/24";
  std::string gateway;                     // empty: no default route
  std::string memwire_path = "/dev/shm/flotilla-memwire";
  std::string memwire_side = "a";
  std::string dpdk_device;                 // empty: net_af_packet on stack_interface
  std::string impair;                      // link emulation in the driver (drivers/impaired_port.hpp)
  bool create_peer = true;                 // false: use an interface that already exists
};

// How much the stack gives the programs run with `flotilla run` ([limits]). Past a limit, a call in
// the preload library fails with the errno Linux gives at its own limit and says so once on stderr.
struct Limits {
  // Application seats: how many programs at once. 0 without a [limits] table; when more, the
  // configuration needs the TCP replicas (a group "tcp") and the UDP server ("udp"), and the seats'
  // components, channels and regions are declared from these values.
  std::uint32_t app_seats = 0;
  std::uint32_t tcp_sockets_per_seat = 16384;  // per TCP replica: listeners and connections
  std::uint32_t tcp_ring_bytes = 1u << 20;     // each TCP socket's send and receive ring
  std::uint32_t seat_channel_capacity = 1024;  // messages in flight on each of a seat's channels
};

struct SupervisorConfig {
  std::chrono::milliseconds heartbeat_timeout{50};
  std::chrono::milliseconds startup_grace{2'000};     // before the first heartbeat is due
  bool sandbox = true;  // false: components run without seccomp and keep their capabilities
  RestartPolicy restart;
  std::uint32_t pool_buffers = 4096;
  std::uint32_t buffer_size = 2048;
  std::vector<ComponentConfig> components;
  std::vector<ChannelConfig> channels;
  std::vector<RegionConfig> regions;
  NetworkConfig network;
  std::string filter_rules;  // [filter] rules: the packet filter's rule text
  std::uint32_t filter_rules_line = 0;  // the source line the rule text's first line is on
  bool has_network = false;  // a [network] table was given: `flotilla up` builds it
  Limits limits;
  // [files] prefix: where programs under `flotilla run` find the file fleet (absolute, not "/").
  std::string files_prefix = "/flotilla";
  // [files] cache_bytes: the size of the file fleet's buffer cache (the "fs-blocks" region); 0: as
  // its [[region]] declares it.
  std::uint64_t files_cache_bytes = 0;
};

struct ConfigError {
  std::string message;  // "<source>:<line>: what is wrong"
};

using ConfigOutcome = std::variant<SupervisorConfig, ConfigError>;

// `overrides`: "TABLE.KEY=VALUE" each (`flotilla up --set`), applied over the text's values. VALUE
// is read as a TOML value, or else taken as a string; an error in one names the override.
ConfigOutcome parse_config(std::string_view text, std::string_view source_name,
                           std::span<const std::string> overrides = {});
ConfigOutcome load_config_file(const std::string& path, std::span<const std::string> overrides = {});

}  // namespace flotilla::recovery
