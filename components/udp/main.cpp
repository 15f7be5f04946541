// flotilla-udp: the UDP server process. One channel leads to IP; every other channel leads to an
// application using the native socket API (sockets/udp_sockets.hpp). The protocol work is in
// UdpServer (udp_server.hpp); this file wires it to the channels.
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

#include "dataplane/buffer_send.hpp"
#include "components/udp/udp_server.hpp"
#include "components/wire/address.hpp"
#include "dataplane/component_host.hpp"

namespace {

using namespace flotilla;

class ChannelOutputs final : public udp::UdpOutputs {
 public:
  ChannelOutputs(ComponentHost& host, ChannelEnd& ip, ComponentId ip_id)
      : host_(host), ip_(ip), ip_id_(ip_id) {}

  bool to_ip(const stack::TransportPacketBody& packet) override {
    return send_with_buffer(host_, ip_, ip_id_, packet.segment,
                                   Message::make(stack::kTransportPacketKind, packet));
  }
  bool bind_port(const stack::PortBindingBody& binding) override {
    const Message message = Message::make(stack::kPortBindingKind, binding);
    auto sent = host_.send(ip_, std::span(&message, 1));
    return sent && sent.value() == 1;
  }
  bool to_app(ComponentId app, const stack::SocketDatagramBody& datagram) override {
    ChannelEnd* channel = channel_to(app);
    return channel != nullptr &&
           send_with_buffer(host_, *channel, app, datagram.payload,
                                   Message::make(stack::kSocketDatagramKind, datagram));
  }
  formats::ExposedSocketTable exposed(ComponentId app) override {
    for (const auto& [peer, table] : exposed_) {
      if (peer == app) return table;
    }
    return {};
  }
  // Formats the exposed-socket region of every application that was given one.
  void format_exposed() {
    for (std::size_t i = 0; i < host_.channel_count(); ++i) {
      if (&host_.channel_at(i) == &ip_) continue;
      auto region = host_.region(formats::exposed_region_name(host_.channel_name(i)));
      if (region.empty()) continue;
      exposed_.emplace_back(host_.channel_peer(i), formats::ExposedSocketTable::format(region));
    }
  }
  bool status_to_app(ComponentId app, const stack::SocketStatusBody& status) override {
    ChannelEnd* channel = channel_to(app);
    if (channel == nullptr) return false;
    const Message message = Message::make(stack::kSocketStatusKind, status);
    auto sent = host_.send(*channel, std::span(&message, 1));
    return sent && sent.value() == 1;
  }

 private:
  ChannelEnd* channel_to(ComponentId app) {
    for (std::size_t i = 0; i < host_.channel_count(); ++i) {
      if (host_.channel_peer(i) == app && &host_.channel_at(i) != &ip_) return &host_.channel_at(i);
    }
    return nullptr;
  }

  ComponentHost& host_;
  ChannelEnd& ip_;
  ComponentId ip_id_;
  std::vector<std::pair<ComponentId, formats::ExposedSocketTable>> exposed_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"flotilla-udp: the UDP server of the Flotilla stack (started by the supervisor)"};
  std::string address_text;
  std::string ip_channel = "ip-udp";
  app.add_option("--address", address_text, "This host's address (a /prefix is ignored)")->required();
  app.add_option("--ip-channel", ip_channel, "Channel to IP")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  const auto cidr = wire::parse_cidr(address_text);
  if (!cidr) {
    std::fprintf(stderr, "flotilla-udp: --address '%s' is not an IPv4 address\n", address_text.c_str());
    return 2;
  }

  auto attached = ComponentHost::attach(WaitPolicy::shared_core());
  if (!attached) {
    std::fprintf(stderr, "flotilla-udp: %s\n", attached.error().message().c_str());
    return 1;
  }
  ComponentHost& host = *attached.value();
  ChannelEnd* ip = host.channel(ip_channel);
  if (ip == nullptr) {
    std::fprintf(stderr, "flotilla-udp: no channel '%s' to IP\n", ip_channel.c_str());
    return 2;
  }
  const ComponentId ip_id = host.peer_of(ip_channel);
  ChannelOutputs outputs(host, *ip, ip_id);
  auto created = udp::UdpServer::create(host.pool(), host.id(), cidr->address, host.state(), outputs,
                                        host.named_counters());
  if (!created) {
    std::fprintf(stderr, "flotilla-udp: %s\n", created.error().message().c_str());
    return 1;
  }
  udp::UdpServer& server = *created.value();
  NamedCounter& malformed = host.named_counters().counter("malformed_messages");

  (void)host.loop().add_input(ip->in, [&](std::span<const Message> messages) {
    for (const Message& message : messages) {
      if (message.kind != stack::kTransportPacketKind) {
        malformed.add();
        continue;
      }
      server.on_ip_packet(message.read<stack::TransportPacketBody>());
      host.served();
    }
  });
  for (std::size_t i = 0; i < host.channel_count(); ++i) {
    ChannelEnd& channel = host.channel_at(i);
    if (&channel == ip) continue;
    const ComponentId app_id = host.channel_peer(i);
    (void)host.loop().add_input(channel.in, [&, app_id](std::span<const Message> messages) {
      for (const Message& message : messages) {
        if (message.kind == stack::kSocketDatagramKind) {
          server.on_app_datagram(app_id, message.read<stack::SocketDatagramBody>());
        } else if (message.kind == stack::kSocketOpenKind) {
          server.on_open(app_id, message.read<stack::SocketOpenBody>());
        } else if (message.kind == stack::kSocketCloseKind) {
          server.on_close(app_id, message.read<stack::SocketCloseBody>());
        } else {
          malformed.add();
        }
      }
    });
  }
  host.on_peer_restarted([&](ComponentId peer, std::uint64_t) {
    if (peer == ip_id) {
      server.claim_all();
    } else {
      server.on_app_restarted(peer);
    }
  });
  outputs.format_exposed();
  server.expose_all();
  server.claim_all();
  std::fprintf(stderr, "flotilla-udp: %s, %zu sockets\n", server.restored() ? "restored" : "serving",
               server.open_sockets());
  host.run();
  return 0;
}
