// IpComponent: IpServer on channels; see ip_component.hpp.
#include "components/ip/ip_component.hpp"

namespace flotilla::ip {

Result<std::unique_ptr<IpComponent>> IpComponent::create(ChannelOutputs& channels, std::size_t driver,
                                                         std::size_t filter, std::span<std::byte> state,
                                                         const IpSettings& settings, NamedCounterTable& counters) {
  if (driver >= channels.count()) return Error{Errc::invalid_argument, 0, "ip: no channel to the driver"};
  if (filter != ChannelOutputs::kNoChannel && filter >= channels.count()) {
    return Error{Errc::invalid_argument, 0, "ip: no channel to the filter"};
  }
  std::unique_ptr<IpComponent> component(new IpComponent(channels, driver, filter, counters));
  auto server = IpServer::create(channels.pool(), channels.self(), state, settings, *component, counters);
  if (!server) return server.error();
  component->server_ = std::move(server.value());
  return component;
}

IpComponent::IpComponent(ChannelOutputs& channels, std::size_t driver, std::size_t filter,
                         NamedCounterTable& counters)
    : channels_(channels),
      driver_(driver),
      filter_(filter),
      filter_peer_(filter != ChannelOutputs::kNoChannel ? channels.peer(filter) : kNoComponent),
      malformed_(counters.counter("malformed_messages")) {}

void IpComponent::on_message(std::size_t channel, const Message& message, std::uint64_t now_ns) {
  const std::uint64_t now_ms = now_ns / 1'000'000;
  if (channel == driver_) {
    if (message.kind == stack::kFrameKind) {
      server_->on_frame(message.read<stack::FrameBody>().frame, now_ms);
      channels_.served();
    } else if (message.kind == stack::kLinkInfoKind) {
      server_->on_link_info(message.read<stack::LinkInfoBody>());
    } else {
      malformed_.add();
    }
  } else if (channel == filter_) {
    if (message.kind == stack::kVerdictKind) {
      server_->on_verdict(message.read<stack::VerdictBody>(), now_ms);
    } else {
      malformed_.add();
    }
  } else {
    on_transport_message(channels_.peer(channel), message, now_ms);
  }
}

void IpComponent::on_transport_message(ComponentId peer, const Message& message, std::uint64_t now_ms) {
  if (message.kind == stack::kTransportPacketKind) {
    server_->on_transport_packet(peer, message.read<stack::TransportPacketBody>(), now_ms);
  } else if (message.kind == stack::kPortBindingKind) {
    server_->on_port_binding(peer, message.read<stack::PortBindingBody>());
  } else if (message.kind == stack::kFlowBindingKind) {
    server_->on_flow_binding(peer, message.read<stack::FlowBindingBody>());
  } else if (message.kind == stack::kTcpReplicaKind) {
    server_->on_tcp_replica(peer, message.read<stack::TcpReplicaBody>());
  } else {
    malformed_.add();
  }
}

void IpComponent::on_peer_restarted(ComponentId peer) {
  if (peer == filter_peer_ && filter_peer_ != kNoComponent) server_->on_filter_restarted();
}

bool IpComponent::send_frame(const BufferHandle& frame) {
  return channels_.send_with_buffer(driver_, frame, Message::make(stack::kFrameKind, stack::FrameBody{frame}));
}

bool IpComponent::request_verdict(const stack::VerdictRequestBody& request) {
  return channels_.send(filter_, Message::make(stack::kVerdictRequestKind, request));
}

bool IpComponent::deliver(ComponentId owner, const stack::TransportPacketBody& packet) {
  return channels_.send_to_with_buffer(owner, packet.segment, Message::make(stack::kTransportPacketKind, packet));
}

}  // namespace flotilla::ip
