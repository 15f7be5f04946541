// UdpComponent: UdpServer on channels; see udp_component.hpp.
#include "components/udp/udp_component.hpp"

namespace flotilla::udp {

Result<std::unique_ptr<UdpComponent>> UdpComponent::create(ChannelOutputs& channels, std::size_t ip,
                                                           std::uint32_t address, std::span<std::byte> state,
                                                           std::span<const std::span<std::byte>> exposed_regions,
                                                           NamedCounterTable& counters) {
  if (ip >= channels.count()) return Error{Errc::invalid_argument, 0, "udp: no channel to IP"};
  std::unique_ptr<UdpComponent> component(new UdpComponent(channels, ip, counters));
  auto server = UdpServer::create(channels.pool(), channels.self(), address, state, *component, counters);
  if (!server) return server.error();
  component->server_ = std::move(server.value());
  for (std::size_t i = 0; i < exposed_regions.size() && i < channels.count(); ++i) {
    if (i == ip || exposed_regions[i].empty()) continue;
    component->exposed_[i] = formats::ExposedSocketTable::format(exposed_regions[i]);
  }
  component->server_->expose_all();
  component->server_->claim_all();
  return component;
}

UdpComponent::UdpComponent(ChannelOutputs& channels, std::size_t ip, NamedCounterTable& counters)
    : channels_(channels),
      ip_(ip),
      ip_peer_(channels.peer(ip)),
      malformed_(counters.counter("malformed_messages")),
      exposed_(channels.count()) {}

void UdpComponent::on_message(std::size_t channel, const Message& message, std::uint64_t) {
  if (channel == ip_) {
    if (message.kind != stack::kTransportPacketKind) {
      malformed_.add();
      return;
    }
    server_->on_ip_packet(message.read<stack::TransportPacketBody>());
    channels_.served();
    return;
  }
  const ComponentId app = channels_.peer(channel);
  if (message.kind == stack::kSocketDatagramKind) {
    server_->on_app_datagram(app, message.read<stack::SocketDatagramBody>());
  } else if (message.kind == stack::kSocketOpenKind) {
    server_->on_open(app, message.read<stack::SocketOpenBody>());
  } else if (message.kind == stack::kSocketCloseKind) {
    server_->on_close(app, message.read<stack::SocketCloseBody>());
  } else if (message.kind == stack::kSocketConnectKind) {
    server_->on_connect(app, message.read<stack::SocketConnectBody>());
  } else {
    malformed_.add();
  }
}

void UdpComponent::on_peer_restarted(ComponentId peer) {
  if (peer == ip_peer_) {
    server_->claim_all();
  } else {
    server_->on_app_restarted(peer);
  }
}

std::size_t UdpComponent::app_channel(ComponentId app) const {
  const std::size_t channel = channels_.channel_of(app);
  return channel == ip_ ? ChannelOutputs::kNoChannel : channel;
}

bool UdpComponent::to_ip(const stack::TransportPacketBody& packet) {
  return channels_.send_with_buffer(ip_, packet.segment, Message::make(stack::kTransportPacketKind, packet));
}

bool UdpComponent::bind_port(const stack::PortBindingBody& binding) {
  return channels_.send(ip_, Message::make(stack::kPortBindingKind, binding));
}

bool UdpComponent::to_app(ComponentId app, const stack::SocketDatagramBody& datagram) {
  return channels_.send_with_buffer(app_channel(app), datagram.payload,
                                    Message::make(stack::kSocketDatagramKind, datagram));
}

bool UdpComponent::status_to_app(ComponentId app, const stack::SocketStatusBody& status) {
  return channels_.send(app_channel(app), Message::make(stack::kSocketStatusKind, status));
}

formats::ExposedSocketTable UdpComponent::exposed(ComponentId app) {
  const std::size_t channel = app_channel(app);
  return channel < exposed_.size() ? exposed_[channel] : formats::ExposedSocketTable{};
}

}  // namespace flotilla::udp
