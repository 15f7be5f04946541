// flotilla-ip: the IP server process (IpComponent, ip_component.hpp), run by the generic component
// main. It owns no device and no socket; its settings, routes and flow table live in the state
// store, so a restart picks up where the dead incarnation stopped, with no NIC reset.
#include <cstdio>
#include <string>

#include "components/ip/ip_component.hpp"
#include "components/wire/address.hpp"
#include "dataplane/component_main.hpp"

namespace {

using namespace flotilla;

struct IpProgram {
  static constexpr const char* kName = "flotilla-ip";
  static constexpr const char* kDescription =
      "flotilla-ip: the IPv4 server of the Flotilla stack (started by the supervisor)";

  struct Options {
    std::string address_text;
    std::string gateway_text;
    std::string driver_channel = "driver-ip";
    std::string filter_channel = "ip-pf";
    ip::IpSettings settings;  // from the texts, by check_options
  };

  static void declare_options(CLI::App& app, Options& options) {
    app.add_option("--address", options.address_text, "This host's address and prefix, e.g. 10.77.0.2/24")
        ->required();
    app.add_option("--gateway", options.gateway_text, "Default gateway (none when empty)");
    app.add_option("--driver-channel", options.driver_channel, "Channel to the driver")->capture_default_str();
    app.add_option("--filter-channel", options.filter_channel,
                   "Channel to the packet filter (absent: no filtering)")->capture_default_str();
  }

  static Status check_options(Options& options) {
    const auto cidr = wire::parse_cidr(options.address_text);
    if (!cidr) {
      std::fprintf(stderr, "%s: --address '%s' is not an IPv4 address/prefix\n", kName, options.address_text.c_str());
      return Error{Errc::invalid_argument, 0, "--address"};
    }
    options.settings = ip::IpSettings{cidr->address, cidr->prefix_length, 0};
    if (!options.gateway_text.empty()) {
      const auto gateway = wire::parse_ipv4(options.gateway_text);
      if (!gateway) {
        std::fprintf(stderr, "%s: --gateway '%s' is not an IPv4 address\n", kName, options.gateway_text.c_str());
        return Error{Errc::invalid_argument, 0, "--gateway"};
      }
      options.settings.gateway = *gateway;
    }
    return {};
  }

  // Nothing beyond the runtime's calls: every packet and message moves through shared memory.
  static SandboxPolicy sandbox() { return {}; }

  static Result<std::unique_ptr<Component>> create(ComponentHost& host, ChannelOutputs& channels, Options& options) {
    const auto driver = required_channel(kName, channels, options.driver_channel, "the driver");
    if (!driver) return driver.error();
    const std::size_t filter = channels.find(options.filter_channel);
    auto created = ip::IpComponent::create(channels, *driver, filter, host.state(), options.settings,
                                           host.named_counters());
    if (!created) return created.error();
    const ip::IpServer& server = created.value()->server();
    std::fprintf(stderr, "%s: %s %s/%u, %s\n", kName, server.restored() ? "restored" : "serving",
                 wire::format_ipv4(server.settings().address).c_str(), server.settings().prefix_length,
                 filter != ChannelOutputs::kNoChannel ? "filtered" : "unfiltered");
    return std::unique_ptr<Component>(std::move(created.value()));
  }
};

}  // namespace

int main(int argc, char** argv) { return component_main<IpProgram>(argc, argv); }
