#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "components/formats/tcp_socket_page.hpp"
#include "recovery/config.hpp"
#include "recovery/default_config.hpp"

namespace flotilla::recovery {
namespace {

std::string error_of(std::string_view text) {
  auto outcome = parse_config(text, "test.toml");
  if (auto* error = std::get_if<ConfigError>(&outcome)) return error->message;
  return "";
}

TEST(Config, ReadsComponentsChannelsAndPolicy) {
  auto outcome = parse_config(R"(
[supervisor]
heartbeat_timeout_ms = 80
crash_limit = 3
crash_window_ms = 5000
pool_buffers = 1024
buffer_size = 4096

[[component]]
name = "ip"
binary = "flotilla-ip"
args = ["--verbose"]
core = 1
state_bytes = 65536

[[component]]
name = "driver"
binary = "/opt/flotilla/driver"

[[channel]]
name = "driver-ip"
a = "driver"
b = "ip"
capacity = 512
)", "test.toml");
  ASSERT_TRUE(std::holds_alternative<SupervisorConfig>(outcome)) << std::get<ConfigError>(outcome).message;
  const auto& config = std::get<SupervisorConfig>(outcome);
  EXPECT_EQ(config.heartbeat_timeout.count(), 80);
  EXPECT_EQ(config.restart.crash_limit, 3u);
  EXPECT_EQ(config.restart.window.count(), 5000);
  EXPECT_EQ(config.pool_buffers, 1024u);
  EXPECT_EQ(config.buffer_size, 4096u);
  ASSERT_EQ(config.components.size(), 2u);
  EXPECT_EQ(config.components[0].name, "ip");
  EXPECT_EQ(config.components[0].args, std::vector<std::string>{"--verbose"});
  EXPECT_EQ(config.components[0].core, 1);
  EXPECT_EQ(config.components[0].state_bytes, 65536u);
  EXPECT_EQ(config.components[1].core, -1);
  ASSERT_EQ(config.channels.size(), 1u);
  EXPECT_EQ(config.channels[0].a, "driver");
  EXPECT_EQ(config.channels[0].capacity, 512u);
}

TEST(Config, ErrorsNameTheirLine) {
  EXPECT_EQ(error_of("[[component]]\nname = \"a\"\nbinary = \"x\"\nbogus = 1\n"),
            "test.toml:4: unknown key 'bogus' in [[component]]");
  EXPECT_EQ(error_of("[supervisor]\nheartbeat_timeout_ms = \"fast\"\n"),
            "test.toml:2: 'heartbeat_timeout_ms' must be an integer");
  EXPECT_EQ(error_of("[supervisor]\nheartbeat_timeout_ms = 1\n"),
            "test.toml:2: 'heartbeat_timeout_ms' must be between 5 and 60000");
  EXPECT_EQ(error_of("[[component]]\nname = \"a\"\nbinary = \"x\"\n[[component]]\nname = \"a\"\n"
                     "binary = \"y\"\n"),
            "test.toml:5: component 'a' is declared twice");
  EXPECT_EQ(error_of("[[component]]\nname = \"a b\"\nbinary = \"x\"\n"),
            "test.toml:2: component name must be 1-31 characters of [A-Za-z0-9_.-]");
  EXPECT_EQ(error_of("[[component]]\nname = \"a\"\nbinary = \"x\"\n[[channel]]\nname = \"c\"\n"
                     "a = \"a\"\nb = \"nobody\"\n"),
            "test.toml:7: no component named 'nobody'");
  EXPECT_EQ(error_of("[[component]]\nname = \"a\"\nbinary = \"x\"\n[[component]]\nname = \"b\"\n"
                     "binary = \"x\"\n[[channel]]\nname = \"c\"\na = \"a\"\nb = \"b\"\ncapacity = 100\n"),
            "test.toml:11: 'capacity' must be a power of two");
  EXPECT_EQ(error_of("[[component]]\nname = \"a\"\n"), "test.toml:1: missing 'binary'");
}

TEST(Config, NetworkFilterAndPlaceholders) {
  auto outcome = parse_config(R"([network]
driver = "memwire"
stack_address = "10.1.2.3/16"
memwire_side = "b"

[filter]
rules = """
pass all
"""

[[component]]
name = "ip"
binary = "flotilla-ip"
args = ["--address", "${network.stack_address}", "--rules=${filter.rules}", "${network.memwire_side}!"]
pool = "read-only"
)", "test.toml");
  ASSERT_TRUE(std::holds_alternative<SupervisorConfig>(outcome)) << std::get<ConfigError>(outcome).message;
  const SupervisorConfig& config = std::get<SupervisorConfig>(outcome);
  EXPECT_TRUE(config.has_network);
  EXPECT_EQ(config.network.driver, "memwire");
  EXPECT_EQ(config.network.peer_namespace, "flo-peer");  // the default
  EXPECT_EQ(config.filter_rules, "pass all\n");
  EXPECT_EQ(config.filter_rules_line, 8u);  // the rules start on the line after the quotes
  ASSERT_EQ(config.components[0].args.size(), 4u);
  EXPECT_EQ(config.components[0].args[1], "10.1.2.3/16");
  EXPECT_EQ(config.components[0].args[2], "--rules=pass all\n");
  EXPECT_EQ(config.components[0].args[3], "b!");
  EXPECT_FALSE(config.components[0].pool_writable);

  EXPECT_EQ(error_of("[network]\ndriver = \"tap\"\n"),
            "test.toml:2: 'driver' must be \"af_xdp\", \"dpdk\" or \"memwire\"");
  EXPECT_EQ(error_of("[network]\nstack_interface = \"a-very-long-interface\"\n"),
            "test.toml:2: 'stack_interface' must be an interface name of 1-15 characters");
  EXPECT_EQ(error_of("[[component]]\nname = \"a\"\nbinary = \"x\"\nargs = [\"${network.nope}\"]\n"),
            "test.toml:4: unknown placeholder '${network.nope}' in args");
  EXPECT_EQ(error_of("[[component]]\nname = \"a\"\nbinary = \"x\"\nargs = [\"${network.driver\"]\n"),
            "test.toml:4: unterminated '${' in args");
  EXPECT_EQ(error_of("[[component]]\nname = \"a\"\nbinary = \"x\"\npool = \"some\"\n"),
            "test.toml:4: 'pool' must be \"read-write\" or \"read-only\"");
  EXPECT_EQ(error_of("[filter]\nrules = 3\n"), "test.toml:2: 'rules' must be a string");
}

TEST(Config, SyntaxErrorsNameTheirLine) {
  const std::string error = error_of("[supervisor]\nheartbeat_timeout_ms = = 3\n");
  EXPECT_EQ(error.rfind("test.toml:2: ", 0), 0u) << error;
}

TEST(Config, ReadsRegionsAndRefusesBadOnes) {
  const std::string components =
      "[[component]]\nname = \"ip\"\nbinary = \"x\"\n[[component]]\nname = \"pf\"\nbinary = \"x\"\n";
  auto outcome = parse_config(components +
                                  "[[region]]\nname = \"routes\"\nbytes = 65536\nwriters = [\"ip\"]\n"
                                  "readers = [\"pf\"]\n",
                              "test.toml");
  ASSERT_TRUE(std::holds_alternative<SupervisorConfig>(outcome)) << std::get<ConfigError>(outcome).message;
  const auto& regions = std::get<SupervisorConfig>(outcome).regions;
  ASSERT_EQ(regions.size(), 1u);
  EXPECT_EQ(regions[0].name, "routes");
  EXPECT_EQ(regions[0].bytes, 65536u);
  EXPECT_EQ(regions[0].writers, std::vector<std::string>{"ip"});
  EXPECT_EQ(regions[0].readers, std::vector<std::string>{"pf"});

  EXPECT_EQ(error_of(components + "[[region]]\nname = \"r\"\nbytes = 64\nreaders = [\"tcp\"]\n"),
            "test.toml:10: no component named 'tcp'");
  EXPECT_EQ(error_of(components + "[[region]]\nname = \"r\"\nwriters = [\"ip\"]\n"),
            "test.toml:7: missing 'bytes'");
  EXPECT_EQ(error_of(components + "[[region]]\nname = \"r\"\nbytes = 64\nwriters = [\"ip\"]\n"
                                  "readers = [\"ip\"]\n"),
            "test.toml:7: component 'ip' is listed twice");
  EXPECT_EQ(error_of(components + "[[region]]\nname = \"r\"\nbytes = 64\n"),
            "test.toml:7: region 'r' has no writers or readers");
}

TEST(Config, ExternalComponentsAreApplicationSeatsWithoutABinary) {
  auto outcome = parse_config("[[component]]\nname = \"server\"\nbinary = \"x\"\n"
                              "[[component]]\nname = \"app0\"\nexternal = true\n"
                              "[[channel]]\nname = \"server-app0\"\na = \"server\"\nb = \"app0\"\n",
                              "test.toml");
  ASSERT_TRUE(std::holds_alternative<SupervisorConfig>(outcome)) << std::get<ConfigError>(outcome).message;
  const auto& components = std::get<SupervisorConfig>(outcome).components;
  ASSERT_EQ(components.size(), 2u);
  EXPECT_FALSE(components[0].external);
  EXPECT_TRUE(components[1].external);
  EXPECT_TRUE(components[1].binary.empty());

  EXPECT_EQ(error_of("[[component]]\nname = \"app0\"\nexternal = true\nbinary = \"x\"\n"),
            "test.toml:4: an external component is started with 'flotilla run', so 'binary' means nothing for it");
  EXPECT_EQ(error_of("[[component]]\nname = \"app0\"\nexternal = \"yes\"\n"),
            "test.toml:3: 'external' must be true or false");
  EXPECT_EQ(error_of("[[component]]\nname = \"app0\"\nexternal = false\n"), "test.toml:1: missing 'binary'");
}

TEST(Config, DefaultConfigurationHasApplicationSeats) {
  auto outcome = parse_config(kDefaultConfig, "default");
  ASSERT_TRUE(std::holds_alternative<SupervisorConfig>(outcome)) << std::get<ConfigError>(outcome).message;
  const auto& config = std::get<SupervisorConfig>(outcome);
  int seats = 0;
  for (const auto& component : config.components) seats += component.external ? 1 : 0;
  EXPECT_EQ(seats, 64);
  EXPECT_EQ(config.limits.app_seats, 64u);
  std::set<std::string> channels;
  for (const auto& channel : config.channels) channels.insert(channel.name);
  EXPECT_TRUE(channels.contains("tcp0-app0") && channels.contains("tcp1-app63") && channels.contains("udp-app2"));
  EXPECT_FALSE(channels.contains("tcp0-app64"));
}

// The stack's components without the seats: what [limits] app_seats needs.
const std::string kReplicasAndUdp =
    "[[component]]\nname = \"udp\"\nbinary = \"x\"\n"
    "[[component]]\nname = \"tcp\"\nbinary = \"x\"\nreplicas = 2\nargs = [\"--ring-bytes\", \"${limits.tcp_ring_bytes}\"]\n";

TEST(Config, LimitsDeclareTheSeatsAndSizeTheirRegions) {
  auto outcome = parse_config("[limits]\napp_seats = 2\ntcp_sockets_per_seat = 8\ntcp_ring_bytes = 8192\n"
                              "seat_channel_capacity = 64\n" + kReplicasAndUdp,
                              "test.toml");
  ASSERT_TRUE(std::holds_alternative<SupervisorConfig>(outcome)) << std::get<ConfigError>(outcome).message;
  const auto& config = std::get<SupervisorConfig>(outcome);
  std::set<std::string> seats;
  for (const auto& component : config.components) {
    if (component.external) seats.insert(component.name);
  }
  EXPECT_EQ(seats, (std::set<std::string>{"app0", "app1"}));
  EXPECT_EQ(config.components[1].args, (std::vector<std::string>{"--ring-bytes", "8192"}));
  bool sized = false;
  for (const auto& region : config.regions) {
    if (region.name != "tcp1-app1-tcp") continue;
    sized = true;
    EXPECT_EQ(region.bytes, formats::TcpRegion::bytes_for(8, 8192));
    EXPECT_EQ(region.writers, (std::vector<std::string>{"tcp1", "app1"}));
  }
  EXPECT_TRUE(sized);
  for (const auto& channel : config.channels) {
    EXPECT_EQ(channel.capacity, 64u) << channel.name;
  }
  EXPECT_EQ(config.channels.size(), 6u);  // per seat: one to each replica, one to udp

  // Without [limits], no seats; the ring placeholder has its default.
  outcome = parse_config(kReplicasAndUdp, "test.toml");
  ASSERT_TRUE(std::holds_alternative<SupervisorConfig>(outcome)) << std::get<ConfigError>(outcome).message;
  EXPECT_EQ(std::get<SupervisorConfig>(outcome).components.size(), 3u);
  EXPECT_EQ(std::get<SupervisorConfig>(outcome).components[1].args,
            (std::vector<std::string>{"--ring-bytes", "1048576"}));
}

TEST(Config, BadLimitsAreRefusedNamingKeyAndLine) {
  EXPECT_EQ(error_of("[limits]\n\napp_seats = 129\n" + kReplicasAndUdp),
            "test.toml:3: 'app_seats' must be between 0 and 128");
  EXPECT_EQ(error_of("[limits]\ntcp_ring_bytes = 5000\n" + kReplicasAndUdp),
            "test.toml:2: 'tcp_ring_bytes' must be a power of two");
  EXPECT_EQ(error_of("[limits]\ntcp_ring_bytes = 1024\n" + kReplicasAndUdp),
            "test.toml:2: 'tcp_ring_bytes' must be between 4096 and 1073741824");
  EXPECT_EQ(error_of("[limits]\ntcp_sockets_per_seat = 0\n" + kReplicasAndUdp),
            "test.toml:2: 'tcp_sockets_per_seat' must be between 1 and 65536");
  EXPECT_EQ(error_of("[limits]\ntcp_sockets_per_seat = 32768\ntcp_ring_bytes = 1048576\n" + kReplicasAndUdp),
            "test.toml:2: 'tcp_sockets_per_seat' sockets of two 'tcp_ring_bytes' rings each need a region over 64 GiB");
  EXPECT_EQ(error_of("[limits]\napp_seats = 128\n[[component]]\nname = \"udp\"\nbinary = \"x\"\n"
                     "[[component]]\nname = \"tcp\"\nbinary = \"x\"\nreplicas = 2\nstate_bytes = 8388608\n"),
            "test.toml:10: 'state_bytes' of \"tcp\" must hold a 40 B slot for each of 'app_seats' x "
            "'tcp_sockets_per_seat' sockets: at least 83886080 and the connection table");
  EXPECT_EQ(error_of("[limits]\nseat_channel_capacity = 100\n" + kReplicasAndUdp),
            "test.toml:2: 'seat_channel_capacity' must be a power of two");
  EXPECT_EQ(error_of("[limits]\nseats = 2\n" + kReplicasAndUdp), "test.toml:2: unknown key 'seats' in [limits]");
  EXPECT_EQ(error_of("[limits]\napp_seats = \"two\"\n" + kReplicasAndUdp), "test.toml:2: 'app_seats' must be an integer");
  EXPECT_EQ(error_of("limits = 3\n" + kReplicasAndUdp), "test.toml:1: [limits] must be a table");
  EXPECT_EQ(error_of("[limits]\napp_seats = 1\n[[component]]\nname = \"udp\"\nbinary = \"x\"\n"),
            "test.toml:2: 'app_seats' needs the TCP replicas (a [[component]] \"tcp\" with 'replicas') and the "
            "UDP server (\"udp\")");
}

std::string override_error(std::vector<std::string> overrides) {
  auto outcome = parse_config(kDefaultConfig, "<default config>", overrides);
  if (auto* error = std::get_if<ConfigError>(&outcome)) return error->message;
  return "";
}

TEST(Config, OverridesChangeOneKeyEach) {
  const std::vector<std::string> overrides{"limits.app_seats=2", "network.driver=memwire",
                                           "supervisor.heartbeat_timeout_ms=300", "network.gateway=\"10.77.0.1\""};
  auto outcome = parse_config(kDefaultConfig, "<default config>", overrides);
  ASSERT_TRUE(std::holds_alternative<SupervisorConfig>(outcome)) << std::get<ConfigError>(outcome).message;
  const auto& config = std::get<SupervisorConfig>(outcome);
  int seats = 0;
  for (const auto& component : config.components) seats += component.external ? 1 : 0;
  EXPECT_EQ(seats, 2);
  EXPECT_EQ(config.network.driver, "memwire");  // a bare word is a string
  EXPECT_EQ(config.network.gateway, "10.77.0.1");
  EXPECT_EQ(config.heartbeat_timeout, std::chrono::milliseconds(300));
  EXPECT_EQ(config.network.stack_address, "10.77.0.2/24");  // the rest as the text has it

  // A key the text lacks is added to its table (the echo chain has no [limits]).
  outcome = parse_config(kEchoChainConfig, "echo", std::vector<std::string>{"supervisor.pool_buffers=512"});
  ASSERT_TRUE(std::holds_alternative<SupervisorConfig>(outcome)) << std::get<ConfigError>(outcome).message;
  EXPECT_EQ(std::get<SupervisorConfig>(outcome).pool_buffers, 512u);
}

TEST(Config, TheSandboxCanBeTurnedOffForDebugging) {
  auto outcome = parse_config(kDefaultConfig, "<default config>");
  ASSERT_TRUE(std::holds_alternative<SupervisorConfig>(outcome));
  EXPECT_TRUE(std::get<SupervisorConfig>(outcome).sandbox);
  outcome = parse_config(kDefaultConfig, "<default config>", std::vector<std::string>{"supervisor.sandbox=false"});
  ASSERT_TRUE(std::holds_alternative<SupervisorConfig>(outcome)) << std::get<ConfigError>(outcome).message;
  EXPECT_FALSE(std::get<SupervisorConfig>(outcome).sandbox);
  EXPECT_EQ(error_of("[supervisor]\nsandbox = 0\n"), "test.toml:2: 'sandbox' must be true or false");
}

TEST(Config, TheFileFleetsPrefixIsAKey) {
  auto outcome = parse_config(kDefaultConfig, "<default config>");
  ASSERT_TRUE(std::holds_alternative<SupervisorConfig>(outcome)) << std::get<ConfigError>(outcome).message;
  EXPECT_EQ(std::get<SupervisorConfig>(outcome).files_prefix, "/flotilla");
  outcome = parse_config(kDefaultConfig, "<default config>", std::vector<std::string>{"files.prefix=/mnt/fleet/"});
  ASSERT_TRUE(std::holds_alternative<SupervisorConfig>(outcome)) << std::get<ConfigError>(outcome).message;
  EXPECT_EQ(std::get<SupervisorConfig>(outcome).files_prefix, "/mnt/fleet");  // the trailing slash goes
  const std::string refused = "'prefix' must be an absolute path other than / (at most 255 bytes, no whitespace)";
  EXPECT_EQ(error_of("[files]\nprefix = \"/\"\n"), "test.toml:2: " + refused);
  EXPECT_EQ(error_of("[files]\nprefix = \"fleet\"\n"), "test.toml:2: " + refused);
  EXPECT_EQ(error_of("[files]\nprefix = \"/" + std::string(255, 'a') + "\"\n"), "test.toml:2: " + refused);
  EXPECT_EQ(error_of("[files]\nprefix = 3\n"), "test.toml:2: 'prefix' must be a string");
  EXPECT_EQ(error_of("[files]\nroot = \"/x\"\n"), "test.toml:2: unknown key 'root' in [files]");
}

TEST(Config, BadOverridesAreRefusedNamingTheOverride) {
  EXPECT_EQ(override_error({"limits.app_seats=abc"}), "--set limits.app_seats=abc: 'app_seats' must be an integer");
  EXPECT_EQ(override_error({"limits.app_seats=129"}),
            "--set limits.app_seats=129: 'app_seats' must be between 0 and 128");
  EXPECT_EQ(override_error({"limits.seats=2"}), "--set limits.seats=2: unknown key 'seats' in [limits]");
  EXPECT_EQ(override_error({"network.driver=tap"}),
            "--set network.driver=tap: 'driver' must be \"af_xdp\", \"dpdk\" or \"memwire\"");
  EXPECT_EQ(override_error({"app_seats=2"}), "--set app_seats=2: expected TABLE.KEY=VALUE (e.g. limits.app_seats=6)");
  EXPECT_EQ(override_error({"limits.app_seats"}),
            "--set limits.app_seats: expected TABLE.KEY=VALUE (e.g. limits.app_seats=6)");
  EXPECT_EQ(override_error({"component.name=x"}),
            "--set component.name=x: no table 'component' to set (supervisor, network, filter, limits, wait, files)");
  EXPECT_EQ(override_error({"limits.app_seats=2", "limits.tcp_ring_bytes=3"}),
            "--set limits.tcp_ring_bytes=3: 'tcp_ring_bytes' must be between 4096 and 1073741824");
}

const ComponentConfig& component_named(const SupervisorConfig& config, const std::string& name) {
  for (const ComponentConfig& component : config.components) {
    if (component.name == name) return component;
  }
  ADD_FAILURE() << "no component " << name;
  return config.components.front();
}

TEST(Config, WaitPoliciesComeFromTheDefaultAComponentOrItsGroup) {
  auto outcome = parse_config(kDefaultConfig, "<default config>",
                              std::vector<std::string>{"wait.ip=poll", "wait.tcp=dedicated", "wait.tcp1=poll"});
  ASSERT_TRUE(std::holds_alternative<SupervisorConfig>(outcome)) << std::get<ConfigError>(outcome).message;
  const auto& config = std::get<SupervisorConfig>(outcome);
  EXPECT_EQ(component_named(config, "ip").wait, "poll");
  EXPECT_EQ(component_named(config, "tcp0").wait, "dedicated");
  EXPECT_EQ(component_named(config, "tcp1").wait, "poll");  // its own name wins over its group's
  EXPECT_EQ(component_named(config, "pf").wait, "shared");  // the default configuration's default
  EXPECT_EQ(component_named(config, "app0").wait, "");      // a seat's program waits as it chooses
  // Without [wait], every component waits as its binary chooses.
  outcome = parse_config("[[component]]\nname = \"a\"\nbinary = \"x\"\n", "test.toml");
  ASSERT_TRUE(std::holds_alternative<SupervisorConfig>(outcome));
  EXPECT_EQ(std::get<SupervisorConfig>(outcome).components[0].wait, "");
}

TEST(Config, BadWaitPoliciesAreRefusedNamingKeyAndLine) {
  const std::string component = "[[component]]\nname = \"a\"\nbinary = \"x\"\n";
  EXPECT_EQ(error_of(component + "[wait]\ndefault = \"spin\"\n"),
            "test.toml:5: [wait] default must be one of \"shared\", \"dedicated\", \"poll\", not \"spin\"");
  EXPECT_EQ(error_of(component + "[wait]\na = 1\n"),
            "test.toml:5: [wait] a must be one of \"shared\", \"dedicated\", \"poll\"");
  EXPECT_EQ(error_of(component + "[wait]\nb = \"poll\"\n"), "test.toml:5: [wait] names no component or replica group 'b'");
  EXPECT_EQ(override_error({"wait.ip=fast"}),
            "--set wait.ip=fast: [wait] ip must be one of \"shared\", \"dedicated\", \"poll\", not \"fast\"");
  EXPECT_EQ(override_error({"wait.app0=poll"}), "--set wait.app0=poll: [wait] app0: a seat's program waits as it chooses");
}

TEST(Config, TheFileFleetReachesEverySeatThroughOneSharedCache) {
  auto outcome = parse_config(bare_app_seats_config(2) + file_fleet_config(3, 2, 1 << 20), "fleet");
  ASSERT_TRUE(std::holds_alternative<SupervisorConfig>(outcome)) << std::get<ConfigError>(outcome).message;
  const auto& config = std::get<SupervisorConfig>(outcome);
  std::vector<std::string> servers;
  for (const auto& component : config.components) {
    if (component.group != "fs") continue;
    servers.push_back(component.name);
    EXPECT_EQ(component.args, (std::vector<std::string>{"--index", std::to_string(component.replica_index),
                                                         "--servers", "3"}));
  }
  EXPECT_EQ(servers, (std::vector<std::string>{"fs0", "fs1", "fs2"}));
  std::set<std::string> channels;
  for (const auto& channel : config.channels) channels.insert(channel.name);
  EXPECT_EQ(channels, (std::set<std::string>{"fs0-app0", "fs1-app0", "fs2-app0", "fs0-app1", "fs1-app1", "fs2-app1"}));
  ASSERT_EQ(config.regions.size(), 1u);
  EXPECT_EQ(config.regions[0].name, "fs-blocks");
  EXPECT_EQ(config.regions[0].writers, (std::vector<std::string>{"fs0", "fs1", "fs2", "app0", "app1"}));

  auto with_stack = parse_config(kDefaultConfig, "default");
  ASSERT_TRUE(std::holds_alternative<SupervisorConfig>(with_stack));
  std::set<std::string> default_channels;
  for (const auto& channel : std::get<SupervisorConfig>(with_stack).channels) default_channels.insert(channel.name);
  EXPECT_TRUE(default_channels.contains("fs0-app0") && default_channels.contains("fs1-app63"));
  // The seats of [limits] map the cache as writers beside the servers.
  for (const auto& region : std::get<SupervisorConfig>(with_stack).regions) {
    if (region.name != "fs-blocks") continue;
    ASSERT_EQ(region.writers.size(), 2u + 64u);
    EXPECT_EQ(region.writers[1], "fs1");
    EXPECT_EQ(region.writers[2], "app0");
    EXPECT_EQ(region.writers.back(), "app63");
  }
  // More seats by --set: every one reaches the fleet.
  auto more = parse_config(kDefaultConfig, "default", std::vector<std::string>{"limits.app_seats=128"});
  ASSERT_TRUE(std::holds_alternative<SupervisorConfig>(more)) << std::get<ConfigError>(more).message;
  std::set<std::string> more_channels;
  for (const auto& channel : std::get<SupervisorConfig>(more).channels) more_channels.insert(channel.name);
  EXPECT_TRUE(more_channels.contains("fs1-app127") && more_channels.contains("tcp1-app127"));
}

TEST(Config, ReplicatedComponentsExpandWithTheirChannelsAndRegions) {
  const std::string components =
      "[[component]]\nname = \"ip\"\nbinary = \"x\"\n"
      "[[component]]\nname = \"app\"\nbinary = \"x\"\n"
      "[[component]]\nname = \"tcp\"\nbinary = \"flotilla-tcp\"\nreplicas = 3\n"
      "args = [\"--index\", \"${replica.index}\", \"--replicas=${replica.count}\"]\n";
  auto outcome = parse_config(components +
                                  "[[channel]]\nname = \"ip-tcp${replica}\"\na = \"ip\"\nb = \"tcp\"\n"
                                  "[[region]]\nname = \"tcp${replica}-app\"\nbytes = 4096\n"
                                  "writers = [\"tcp\", \"app\"]\n",
                              "test.toml");
  ASSERT_TRUE(std::holds_alternative<SupervisorConfig>(outcome)) << std::get<ConfigError>(outcome).message;
  const auto& config = std::get<SupervisorConfig>(outcome);
  ASSERT_EQ(config.components.size(), 5u);
  for (int i = 0; i < 3; ++i) {
    const ComponentConfig& replica = config.components[2 + static_cast<std::size_t>(i)];
    EXPECT_EQ(replica.name, "tcp" + std::to_string(i));
    EXPECT_EQ(replica.group, "tcp");
    EXPECT_EQ(replica.replica_index, i);
    EXPECT_EQ(replica.replica_count, 3);
    EXPECT_EQ(replica.args, (std::vector<std::string>{"--index", std::to_string(i), "--replicas=3"}));
    EXPECT_EQ(config.channels[static_cast<std::size_t>(i)].name, "ip-tcp" + std::to_string(i));
    EXPECT_EQ(config.channels[static_cast<std::size_t>(i)].b, "tcp" + std::to_string(i));
    EXPECT_EQ(config.regions[static_cast<std::size_t>(i)].name, "tcp" + std::to_string(i) + "-app");
    EXPECT_EQ(config.regions[static_cast<std::size_t>(i)].writers,
              (std::vector<std::string>{"tcp" + std::to_string(i), "app"}));
  }
  EXPECT_TRUE(config.components[0].group.empty());

  EXPECT_EQ(error_of(components + "[[channel]]\nname = \"ip-tcp\"\na = \"ip\"\nb = \"tcp\"\n"),
            "test.toml:12: 'ip-tcp' joins the replicated group 'tcp', so its name must contain ${replica}");
  EXPECT_EQ(error_of(components + "[[channel]]\nname = \"x${replica}\"\na = \"tcp\"\nb = \"tcp\"\n"),
            "test.toml:12: a channel joins two different components");
  EXPECT_EQ(error_of("[[component]]\nname = \"tcp\"\nbinary = \"x\"\nreplicas = 0\n"),
            "test.toml:4: 'replicas' must be between 1 and 16");
  EXPECT_EQ(error_of("[[component]]\nname = \"x\"\nbinary = \"x\"\nargs = [\"${replica.index}\"]\n"),
            "test.toml:4: unknown placeholder '${replica.index}' in args");
}

// A name server is what its role says, whatever its binary is called.
TEST(Config, RoleMakesANameServer) {
  auto outcome = parse_config("[[component]]\nname = \"names\"\nbinary = \"my-names\"\nrole = \"name-server\"\n"
                              "[[component]]\nname = \"plain\"\nbinary = \"flotilla-name-server\"\n",
                              "test.toml");
  ASSERT_TRUE(std::holds_alternative<SupervisorConfig>(outcome)) << std::get<ConfigError>(outcome).message;
  const auto& components = std::get<SupervisorConfig>(outcome).components;
  EXPECT_EQ(components[0].role, ComponentRole::name_server);
  EXPECT_EQ(components[1].role, ComponentRole::none);

  EXPECT_EQ(error_of("[[component]]\nname = \"n\"\nbinary = \"x\"\n\nrole = \"name-sever\"\n"),
            "test.toml:5: unknown role 'name-sever' (the one role is \"name-server\")");
  EXPECT_EQ(error_of("[[component]]\nname = \"n\"\nbinary = \"x\"\nrole = 1\n"), "test.toml:4: 'role' must be a string");
  EXPECT_EQ(error_of("[[component]]\nname = \"app0\"\nexternal = true\nrole = \"name-server\"\n"),
            "test.toml:4: an external component is started with 'flotilla run', so 'role' means nothing for it");
}

TEST(Config, DefaultConfigurationsNameTheirNameServersByRole) {
  for (const std::string& text : {kDefaultConfig, kEchoChainConfig}) {
    auto outcome = parse_config(text, "default");
    ASSERT_TRUE(std::holds_alternative<SupervisorConfig>(outcome)) << std::get<ConfigError>(outcome).message;
    std::set<std::string> servers;
    for (const auto& component : std::get<SupervisorConfig>(outcome).components) {
      if (component.role == ComponentRole::name_server) servers.insert(component.name);
    }
    EXPECT_EQ(servers, (std::set<std::string>{"name0", "name1"}));
  }
}

TEST(Config, NeedsAtLeastOneComponent) {
  EXPECT_EQ(error_of(""), "test.toml: no [[component]] declared");
}

}  // namespace
}  // namespace flotilla::recovery
