// IP as a component: IpServer (ip_server.hpp) fed from its channels, and its outputs sent on them.
// The channel to the driver carries frames and link information, the one to the packet filter
// verdicts; every other channel leads to a transport (UDP, a TCP replica), identified by its peer.
#pragma once

#include <cstddef>
#include <memory>

#include "components/ip/ip_server.hpp"
#include "dataplane/channel_outputs.hpp"
#include "dataplane/component.hpp"

namespace flotilla::ip {

class IpComponent final : public Component, private IpOutputs {
 public:
  static constexpr std::uint64_t kTickPeriodMs = 100;

  // `driver` and `filter` are indexes in `channels`; `filter` may be ChannelOutputs::kNoChannel
  // (no filtering).
  static Result<std::unique_ptr<IpComponent>> create(ChannelOutputs& channels, std::size_t driver,
                                                     std::size_t filter, std::span<std::byte> state,
                                                     const IpSettings& settings, NamedCounterTable& counters);

  IpServer& server() { return *server_; }

  void on_message(std::size_t channel, const Message& message, std::uint64_t now_ns) override;
  std::uint64_t tick_period_ms() const override { return kTickPeriodMs; }
  void on_tick(std::uint64_t now_ns) override { server_->on_tick(now_ns / 1'000'000); }
  void on_peer_restarted(ComponentId peer) override;

 private:
  IpComponent(ChannelOutputs& channels, std::size_t driver, std::size_t filter, NamedCounterTable& counters);

  // IpOutputs
  bool send_frame(const BufferHandle& frame) override;
  bool has_filter() const override { return filter_ != ChannelOutputs::kNoChannel; }
  bool request_verdict(const stack::VerdictRequestBody& request) override;
  bool deliver(ComponentId owner, const stack::TransportPacketBody& packet) override;

  void on_transport_message(ComponentId peer, const Message& message, std::uint64_t now_ms);

  ChannelOutputs& channels_;
  std::size_t driver_;
  std::size_t filter_;
  ComponentId filter_peer_;
  NamedCounter& malformed_;
  std::unique_ptr<IpServer> server_;
};

}  // namespace flotilla::ip
