// flotilla-tcp: one TCP replica process (TcpComponent, tcp_component.hpp), run by the generic
// component main. One channel leads to IP; every other channel to an application, with which it
// shares a socket region (components/formats/tcp_socket_page.hpp). The connection table and the
// slot table live in the state store, so a restarted replica carries every connection on.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "components/formats/tcp_socket_page.hpp"
#include "components/tcp/tcp_component.hpp"
#include "components/wire/address.hpp"
#include "dataplane/clock.hpp"
#include "dataplane/component_main.hpp"

namespace {

using namespace flotilla;

struct TcpProgram {
  static constexpr const char* kName = "flotilla-tcp";
  static constexpr const char* kDescription =
      "flotilla-tcp: a TCP replica of the Flotilla stack (started by the supervisor)";

  struct Options {
    std::string address_text;
    std::string ip_channel;
    unsigned index = 0;
    unsigned replicas = 1;
    unsigned mss = 1460;
    std::size_t ring_bytes = 1u << 20;
    std::size_t max_connections = 16384;
    std::uint64_t time_wait_ms = 60'000;
    unsigned test_crash_port = 0;
    std::uint32_t address = 0;  // from the text, by check_options
  };

  static void declare_options(CLI::App& app, Options& options) {
    app.add_option("--address", options.address_text, "The stack's address (and prefix), e.g. 10.77.0.2/24")
        ->required();
    app.add_option("--index", options.index, "This replica's number, 0 .. replicas-1")->capture_default_str();
    app.add_option("--replicas", options.replicas, "How many TCP replicas the stack runs")
        ->check(CLI::Range(1, 16))->capture_default_str();
    app.add_option("--ip-channel", options.ip_channel, "Channel to IP (default: ip-<component name>)");
    app.add_option("--mss", options.mss, "The MSS announced in SYNs (the link's MTU - 40)")
        ->check(CLI::Range(536, 8960))->capture_default_str();
    app.add_option("--ring-bytes", options.ring_bytes, "Size of each socket ring (a power of two, at least 4096)")
        ->capture_default_str();
    app.add_option("--max-connections", options.max_connections, "Connections this replica can hold")
        ->check(CLI::Range(16, 1 << 20))->capture_default_str();
    app.add_option("--time-wait-ms", options.time_wait_ms, "How long a closed connection stays in TIME_WAIT")
        ->capture_default_str();

  }

  static Status check_options(Options& options) {
    const auto cidr = wire::parse_cidr(options.address_text);
    const auto plain = cidr ? std::nullopt : wire::parse_ipv4(options.address_text);
    if (!cidr && !plain) {
      std::fprintf(stderr, "%s: --address '%s' is not an IPv4 address\n", kName, options.address_text.c_str());
      return Error{Errc::invalid_argument, 0, "--address"};
    }
    options.address = cidr ? cidr->address : *plain;
    if (options.index >= options.replicas) {
      std::fprintf(stderr, "%s: --index %u must be below --replicas %u\n", kName, options.index, options.replicas);
      return Error{Errc::invalid_argument, 0, "--index"};
    }
    // Tests only (the poison rule, tests/stack/tcp_test.cpp): the replica crashes whenever data
    // arrives on a connection with this port, local or remote. The supervisor's environment
    // reaches every replica.
    if (const char* port = std::getenv("FLOTILLA_TEST_CRASH_PORT"); port != nullptr && *port != '\0') {
      const unsigned long value = std::strtoul(port, nullptr, 10);
      if (value == 0 || value > 65535) {
        std::fprintf(stderr, "%s: FLOTILLA_TEST_CRASH_PORT '%s' is not a port\n", kName, port);
        return Error{Errc::invalid_argument, 0, "FLOTILLA_TEST_CRASH_PORT"};
      }
      options.test_crash_port = static_cast<unsigned>(value);
    }
    if (options.ring_bytes < 4096 || (options.ring_bytes & (options.ring_bytes - 1)) != 0) {
      std::fprintf(stderr, "%s: --ring-bytes %zu is not a power of two of at least 4096\n", kName,
                   options.ring_bytes);
      return Error{Errc::invalid_argument, 0, "--ring-bytes"};
    }
    return {};
  }

  // Nothing beyond the runtime's calls: every packet and message moves through shared memory.
  static SandboxPolicy sandbox() { return {}; }

  static Result<std::unique_ptr<Component>> create(ComponentHost& host, ChannelOutputs& channels, Options& options) {
    if (options.ip_channel.empty()) options.ip_channel = "ip-" + std::string(host.name());
    const auto ip = required_channel(kName, channels, options.ip_channel, "IP");
    if (!ip) return ip.error();
    // Every other channel is an application, with the socket region named after the channel.
    std::vector<std::span<std::byte>> regions;
    for (std::size_t i = 0; i < channels.count(); ++i) {
      const std::string name = formats::tcp_region_name(channels.name(i));
      regions.push_back(i == *ip ? std::span<std::byte>{} : host.region(name));
      if (i != *ip && regions.back().empty()) {
        std::fprintf(stderr, "%s: channel '%s' has no region '%s': that application gets no sockets\n", kName,
                     std::string(channels.name(i)).c_str(), name.c_str());
      }
    }
    tcp::ReplicaSettings settings;
    settings.index = static_cast<std::uint16_t>(options.index);
    settings.count = static_cast<std::uint16_t>(options.replicas);
    settings.address = options.address;
    settings.ring_bytes = options.ring_bytes;
    settings.engine.mss = static_cast<std::uint16_t>(options.mss);
    settings.engine.max_connections = options.max_connections;
    settings.engine.time_wait_ns = options.time_wait_ms * 1'000'000;
    settings.test_crash_port = static_cast<std::uint16_t>(options.test_crash_port);
    auto created = tcp::TcpComponent::create(channels, *ip, host.state(), regions, settings, host.named_counters(),
                                             host.incarnation(), monotonic_ns());
    if (!created) return created.error();
    std::fprintf(stderr, "%s: replica %u of %u at %s, %zu application(s)\n", kName, options.index, options.replicas,
                 wire::format_ipv4(settings.address).c_str(), created.value()->app_count());
    const tcp::RestoreReport& restored = created.value()->server().restore_report();
    if (restored.restored != 0 || restored.listeners != 0 || restored.failed != 0) {
      std::fprintf(stderr, "%s: carried on %u connection(s) and %u listener(s), reset %u\n", kName, restored.restored,
                   restored.listeners, restored.failed);
    }
    if (restored.poisoned_dropped) {
      // The poison rule (engine.hpp): the connection in flight at this crash and the one before.
      const std::string line = "dropped " + wire::format_ipv4(restored.poisoned.remote_address) + ":" +
                               std::to_string(restored.poisoned.remote_port) + " port " +
                               std::to_string(restored.poisoned.local_port) + " (crashed twice)";
      std::fprintf(stderr, "%s: %s\n", kName, line.c_str());
      (void)host.report(line);
    }
    // The supervisor's word that a fork's pins may go (kTcpForkEndedKind).
    host.on_control_message(
        [server = &created.value()->server()](const Message& message) { server->on_control(message, monotonic_ns()); });
    // Announced to IP (in create): from here on the replica takes new connections, so a restarted
    // one has recovered now, even if no segment comes its way for a while.
    channels.served();
    return std::unique_ptr<Component>(std::move(created.value()));
  }
};

}  // namespace

int main(int argc, char** argv) { return component_main<TcpProgram>(argc, argv); }
