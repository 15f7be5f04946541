// UDP as a component: UdpServer (udp_server.hpp) fed from its channels, and its outputs sent on
// them. One channel leads to IP; every other one to an application using the native socket API,
// with, where the configuration gave one, a region in which the application's sockets are exposed.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <vector>

#include "components/udp/udp_server.hpp"
#include "dataplane/channel_outputs.hpp"
#include "dataplane/component.hpp"

namespace flotilla::udp {

class UdpComponent final : public Component, private UdpOutputs {
 public:
  // `ip`: the index of the channel to IP in `channels`. `exposed_regions`: for each channel, by
  // index, the region its application's sockets are exposed in (empty: none; shorter: none for
  // the rest).
  static Result<std::unique_ptr<UdpComponent>> create(ChannelOutputs& channels, std::size_t ip,
                                                      std::uint32_t address, std::span<std::byte> state,
                                                      std::span<const std::span<std::byte>> exposed_regions,
                                                      NamedCounterTable& counters);

  UdpServer& server() { return *server_; }

  void on_message(std::size_t channel, const Message& message, std::uint64_t now_ns) override;
  void on_peer_restarted(ComponentId peer) override;

 private:
  UdpComponent(ChannelOutputs& channels, std::size_t ip, NamedCounterTable& counters);

  // UdpOutputs
  bool to_ip(const stack::TransportPacketBody& packet) override;
  bool bind_port(const stack::PortBindingBody& binding) override;
  bool to_app(ComponentId app, const stack::SocketDatagramBody& datagram) override;
  bool status_to_app(ComponentId app, const stack::SocketStatusBody& status) override;
  formats::ExposedSocketTable exposed(ComponentId app) override;

  // The channel to application `app`, or ChannelOutputs::kNoChannel.
  std::size_t app_channel(ComponentId app) const;

  ChannelOutputs& channels_;
  std::size_t ip_;
  ComponentId ip_peer_;
  NamedCounter& malformed_;
  std::vector<formats::ExposedSocketTable> exposed_;  // by channel index
  std::unique_ptr<UdpServer> server_;
};

}  // namespace flotilla::udp
