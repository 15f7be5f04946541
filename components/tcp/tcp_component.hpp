// A TCP replica as a component: ReplicaServer (replica_server.hpp) fed from its channels, and its
// outputs sent on them. One channel leads to IP; every other one to an application, which the
// replica knows by its number among those channels (in grant order). The engine's timers are no
// ring's messages: poll() runs them, and next_wake_ns() wakes the loop for the next one.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <vector>

#include "components/tcp/replica_server.hpp"
#include "dataplane/channel_outputs.hpp"
#include "dataplane/component.hpp"

namespace flotilla::tcp {

class TcpComponent final : public Component, private ReplicaOutputs {
 public:
  // `ip`: the index of the channel to IP in `channels`. `app_regions`: for each channel, by index,
  // the socket region shared with its application (empty: that application gets no sockets).
  static Result<std::unique_ptr<TcpComponent>> create(ChannelOutputs& channels, std::size_t ip,
                                                      std::span<std::byte> state,
                                                      std::span<const std::span<std::byte>> app_regions,
                                                      const ReplicaSettings& settings, NamedCounterTable& counters,
                                                      std::uint64_t incarnation, std::uint64_t now_ns);

  ReplicaServer& server() { return *server_; }
  std::size_t app_count() const { return app_channels_.size(); }

  void on_message(std::size_t channel, const Message& message, std::uint64_t now_ns) override;
  void on_peer_restarted(ComponentId peer) override;
  bool poll(std::uint64_t now_ns) override { return server_->poll(now_ns); }
  std::uint64_t next_wake_ns() const override { return server_->next_deadline_ns(); }

 private:
  TcpComponent(ChannelOutputs& channels, std::size_t ip, NamedCounterTable& counters);

  // ReplicaOutputs
  bool segment_to_ip(const stack::TransportPacketBody& packet) override;
  bool control_to_ip(const Message& message) override { return channels_.send(ip_, message); }
  bool to_app(std::size_t app, const Message& message) override {
    return app < app_channels_.size() && channels_.send(app_channels_[app], message);
  }

  ChannelOutputs& channels_;
  std::size_t ip_;
  ComponentId ip_peer_;
  NamedCounter& malformed_;
  std::vector<std::size_t> app_channels_;  // application number -> channel index
  std::vector<std::size_t> app_of_channel_;  // channel index -> application number (the IP channel: none)
  std::unique_ptr<ReplicaServer> server_;
};

}  // namespace flotilla::tcp
