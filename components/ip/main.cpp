// flotilla-ip: the IP server process. It owns no device and no socket: frames arrive from the
// driver over a channel, verdicts from the packet filter, datagrams from the transports. Its
// settings, routes and flow table live in the state store, so a restart picks up where the dead
// incarnation stopped, with no NIC reset. All protocol work is in IpServer (ip_server.hpp).
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "components/ip/ip_server.hpp"
#include "dataplane/buffer_send.hpp"
#include "components/wire/address.hpp"
#include "dataplane/component_host.hpp"

namespace {

using namespace flotilla;

// IpServer's outputs, as channels of this process.
class ChannelOutputs final : public ip::IpOutputs {
 public:
  ChannelOutputs(ComponentHost& host, ChannelEnd& driver, ChannelEnd* filter)
      : host_(host), driver_(driver), filter_(filter) {}

  bool send_frame(const BufferHandle& frame) override {
    const ComponentId peer = host_.peer_of(driver_name_);
    return send_with_buffer(host_, driver_, peer, frame,
                                   Message::make(stack::kFrameKind, stack::FrameBody{frame}));
  }
  bool has_filter() const override { return filter_ != nullptr; }
  bool request_verdict(const stack::VerdictRequestBody& request) override {
    const Message message = Message::make(stack::kVerdictRequestKind, request);
    auto sent = host_.send(*filter_, std::span(&message, 1));
    return sent && sent.value() == 1;
  }
  bool deliver(ComponentId owner, const stack::TransportPacketBody& packet) override {
    for (std::size_t i = 0; i < host_.channel_count(); ++i) {
      if (host_.channel_peer(i) != owner) continue;
      return send_with_buffer(host_, host_.channel_at(i), owner, packet.segment,
                                     Message::make(stack::kTransportPacketKind, packet));
    }
    return false;
  }
  void set_driver_name(std::string name) { driver_name_ = std::move(name); }

 private:
  ComponentHost& host_;
  ChannelEnd& driver_;
  ChannelEnd* filter_;
  std::string driver_name_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"flotilla-ip: the IPv4 server of the Flotilla stack (started by the supervisor)"};
  std::string address_text;
  std::string gateway_text;
  std::string driver_channel = "driver-ip";
  std::string filter_channel = "ip-pf";
  app.add_option("--address", address_text, "This host's address and prefix, e.g. 10.77.0.2/24")
      ->required();
  app.add_option("--gateway", gateway_text, "Default gateway (none when empty)");
  app.add_option("--driver-channel", driver_channel, "Channel to the driver")->capture_default_str();
  app.add_option("--filter-channel", filter_channel,
                 "Channel to the packet filter (absent: no filtering)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  const auto cidr = wire::parse_cidr(address_text);
  if (!cidr) {
    std::fprintf(stderr, "flotilla-ip: --address '%s' is not an IPv4 address/prefix\n", address_text.c_str());
    return 2;
  }
  ip::IpSettings settings{cidr->address, cidr->prefix_length, 0};
  if (!gateway_text.empty()) {
    const auto gateway = wire::parse_ipv4(gateway_text);
    if (!gateway) {
      std::fprintf(stderr, "flotilla-ip: --gateway '%s' is not an IPv4 address\n", gateway_text.c_str());
      return 2;
    }
    settings.gateway = *gateway;
  }

  auto attached = ComponentHost::attach(WaitPolicy::shared_core());
  if (!attached) {
    std::fprintf(stderr, "flotilla-ip: %s\n", attached.error().message().c_str());
    return 1;
  }
  ComponentHost& host = *attached.value();
  ChannelEnd* driver = host.channel(driver_channel);
  if (driver == nullptr) {
    std::fprintf(stderr, "flotilla-ip: no channel '%s' to the driver\n", driver_channel.c_str());
    return 2;
  }
  ChannelEnd* filter = host.channel(filter_channel);
  const ComponentId driver_id = host.peer_of(driver_channel);
  const ComponentId filter_id = filter != nullptr ? host.peer_of(filter_channel) : kNoComponent;

  ChannelOutputs outputs(host, *driver, filter);
  outputs.set_driver_name(driver_channel);
  auto created = ip::IpServer::create(host.pool(), host.id(), host.state(), settings, outputs,
                                      host.named_counters());
  if (!created) {
    std::fprintf(stderr, "flotilla-ip: %s\n", created.error().message().c_str());
    return 1;
  }
  ip::IpServer& server = *created.value();
  NamedCounter& malformed = host.named_counters().counter("malformed_messages");

  (void)host.loop().add_input(driver->in, [&](std::span<const Message> messages) {
    const std::uint64_t now = host.loop().now_ms();
    for (const Message& message : messages) {
      if (message.kind == stack::kFrameKind) {
        server.on_frame(message.read<stack::FrameBody>().frame, now);
        host.served();
      } else if (message.kind == stack::kLinkInfoKind) {
        server.on_link_info(message.read<stack::LinkInfoBody>());
      } else {
        malformed.add();
      }
    }
  });
  if (filter != nullptr) {
    (void)host.loop().add_input(filter->in, [&](std::span<const Message> messages) {
      const std::uint64_t now = host.loop().now_ms();
      for (const Message& message : messages) {
        if (message.kind != stack::kVerdictKind) {
          malformed.add();
          continue;
        }
        server.on_verdict(message.read<stack::VerdictBody>(), now);
      }
    });
  }
  for (std::size_t i = 0; i < host.channel_count(); ++i) {
    ChannelEnd& channel = host.channel_at(i);
    if (&channel == driver || &channel == filter) continue;
    const ComponentId peer = host.channel_peer(i);
    (void)host.loop().add_input(channel.in, [&, peer](std::span<const Message> messages) {
      const std::uint64_t now = host.loop().now_ms();
      for (const Message& message : messages) {
        if (message.kind == stack::kTransportPacketKind) {
          server.on_transport_packet(peer, message.read<stack::TransportPacketBody>(), now);
        } else if (message.kind == stack::kPortBindingKind) {
          server.on_port_binding(peer, message.read<stack::PortBindingBody>());
        } else if (message.kind == stack::kFlowBindingKind) {
          server.on_flow_binding(peer, message.read<stack::FlowBindingBody>());
        } else if (message.kind == stack::kTcpReplicaKind) {
          server.on_tcp_replica(peer, message.read<stack::TcpReplicaBody>());
        } else {
          malformed.add();
        }
      }
    });
  }
  host.on_peer_restarted([&](ComponentId peer, std::uint64_t) {
    if (peer == filter_id) server.on_filter_restarted();
    (void)driver_id;
  });

  Timer tick([&](Timer& self) {
    server.on_tick(host.loop().now_ms());
    host.loop().timers().arm(self, host.loop().now_ms() + 100);
  });
  server.on_tick(host.loop().now_ms());
  host.loop().timers().arm(tick, host.loop().now_ms() + 100);
  std::fprintf(stderr, "flotilla-ip: %s %s/%u, %s\n", server.restored() ? "restored" : "serving",
               wire::format_ipv4(server.settings().address).c_str(), server.settings().prefix_length,
               filter != nullptr ? "filtered" : "unfiltered");
  host.run();
  return 0;
}
