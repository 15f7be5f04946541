// TcpComponent: a replica on channels; see tcp_component.hpp.
#include "components/tcp/tcp_component.hpp"

#include "dataplane/clock.hpp"

namespace flotilla::tcp {

Result<std::unique_ptr<TcpComponent>> TcpComponent::create(ChannelOutputs& channels, std::size_t ip,
                                                           std::span<std::byte> state,
                                                           std::span<const std::span<std::byte>> app_regions,
                                                           const ReplicaSettings& settings,
                                                           NamedCounterTable& counters, std::uint64_t incarnation,
                                                           std::uint64_t now_ns) {
  if (ip >= channels.count()) return Error{Errc::invalid_argument, 0, "tcp: no channel to IP"};
  std::unique_ptr<TcpComponent> component(new TcpComponent(channels, ip, counters));
  std::vector<std::span<std::byte>> regions;
  for (const std::size_t channel : component->app_channels_) {
    regions.push_back(channel < app_regions.size() ? app_regions[channel] : std::span<std::byte>{});
  }
  auto server = ReplicaServer::create(channels.pool(), channels.self(), state, regions, settings, *component,
                                      counters, incarnation, now_ns);
  if (!server) return server.error();
  component->server_ = std::move(server.value());
  return component;
}

TcpComponent::TcpComponent(ChannelOutputs& channels, std::size_t ip, NamedCounterTable& counters)
    : channels_(channels),
      ip_(ip),
      ip_peer_(channels.peer(ip)),
      malformed_(counters.counter("malformed_messages")),
      app_of_channel_(channels.count(), SIZE_MAX) {
  for (std::size_t channel = 0; channel < channels.count(); ++channel) {
    if (channel == ip) continue;
    app_of_channel_[channel] = app_channels_.size();
    app_channels_.push_back(channel);
  }
}

void TcpComponent::on_message(std::size_t channel, const Message& message, std::uint64_t now_ns) {
  if (channel == ip_) {
    if (message.kind != stack::kTransportPacketKind) {
      malformed_.add();
      return;
    }
    server_->on_segment(message.read<stack::TransportPacketBody>(), now_ns);
  } else {
    server_->on_app_message(app_of_channel_[channel], message, now_ns);
  }
  channels_.served();
}

void TcpComponent::on_peer_restarted(ComponentId peer) {
  if (peer == ip_peer_) {
    // A restarted IP kept its flow table; it only needs to know who we are.
    server_->announce(stack::TcpReplicaMode::ip_restarted);
    return;
  }
  const std::uint64_t now = monotonic_ns();
  for (std::size_t app = 0; app < app_channels_.size(); ++app) {
    if (channels_.peer(app_channels_[app]) == peer) server_->on_app_restarted(app, now);
  }
}

bool TcpComponent::segment_to_ip(const stack::TransportPacketBody& packet) {
  return channels_.send_with_buffer(ip_, packet.segment, Message::make(stack::kTransportPacketKind, packet));
}

}  // namespace flotilla::tcp
