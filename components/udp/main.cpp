// flotilla-udp: the UDP server process (UdpComponent, udp_component.hpp), run by the generic
// component main. One channel leads to IP; every other channel to an application using the native
// socket API (sockets/udp_sockets.hpp).
#include <cstdio>
#include <string>
#include <vector>

#include "components/formats/exposed_sockets.hpp"
#include "components/udp/udp_component.hpp"
#include "components/wire/address.hpp"
#include "dataplane/component_main.hpp"

namespace {

using namespace flotilla;

struct UdpProgram {
  static constexpr const char* kName = "flotilla-udp";
  static constexpr const char* kDescription =
      "flotilla-udp: the UDP server of the Flotilla stack (started by the supervisor)";

  struct Options {
    std::string address_text;
    std::string ip_channel = "ip-udp";
    std::uint32_t address = 0;  // from the text, by check_options
  };

  static void declare_options(CLI::App& app, Options& options) {
    app.add_option("--address", options.address_text, "This host's address (a /prefix is ignored)")->required();
    app.add_option("--ip-channel", options.ip_channel, "Channel to IP")->capture_default_str();
  }

  static Status check_options(Options& options) {
    const auto cidr = wire::parse_cidr(options.address_text);
    if (!cidr) {
      std::fprintf(stderr, "%s: --address '%s' is not an IPv4 address\n", kName, options.address_text.c_str());
      return Error{Errc::invalid_argument, 0, "--address"};
    }
    options.address = cidr->address;
    return {};
  }

  // Nothing beyond the runtime's calls: every packet and message moves through shared memory.
  static SandboxPolicy sandbox() { return {}; }

  static Result<std::unique_ptr<Component>> create(ComponentHost& host, ChannelOutputs& channels, Options& options) {
    const auto ip = required_channel(kName, channels, options.ip_channel, "IP");
    if (!ip) return ip.error();
    std::vector<std::span<std::byte>> exposed;
    for (std::size_t i = 0; i < channels.count(); ++i) {
      exposed.push_back(host.region(formats::exposed_region_name(channels.name(i))));
    }
    auto created = udp::UdpComponent::create(channels, *ip, options.address, host.state(), exposed,
                                             host.named_counters());
    if (!created) return created.error();
    udp::UdpServer& server = created.value()->server();
    std::fprintf(stderr, "%s: %s, %zu sockets\n", kName, server.restored() ? "restored" : "serving",
                 server.open_sockets());
    return std::unique_ptr<Component>(std::move(created.value()));
  }
};

}  // namespace

int main(int argc, char** argv) { return component_main<UdpProgram>(argc, argv); }
