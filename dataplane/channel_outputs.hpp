// A component's channels, as it sees them: each by its index in the host's grant order, its name
// and the peer at its far end, and the one way to send on them. The table from peer to channel is
// built once at start, so sending to a peer costs a binary search, never a string compare or a scan
// of every channel.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dataplane/buffer_pool.hpp"
#include "dataplane/channel.hpp"
#include "dataplane/message.hpp"
#include "dataplane/result.hpp"

namespace flotilla {

class ComponentHost;

// What sends go through, and who hears that the component served. A supervised component uses
// its host (HostLink below: an injected `corrupt` fault garbles a send there, and the first
// serve of a restarted incarnation is reported); a test uses DirectLink.
class OutputLink {
 public:
  virtual ~OutputLink() = default;
  virtual Result<std::size_t> send(ChannelEnd& channel, std::span<const Message> messages) = 0;
  virtual void served() = 0;
};

class HostLink final : public OutputLink {
 public:
  explicit HostLink(ComponentHost& host) : host_(host) {}
  Result<std::size_t> send(ChannelEnd& channel, std::span<const Message> messages) override;
  void served() override;

 private:
  ComponentHost& host_;
};

// Sends straight into the ring and counts serves: a component run without a supervisor.
class DirectLink final : public OutputLink {
 public:
  Result<std::size_t> send(ChannelEnd& channel, std::span<const Message> messages) override {
    return channel.out.send_burst(messages);
  }
  void served() override { ++served_; }
  std::uint64_t served_count() const { return served_; }

 private:
  std::uint64_t served_ = 0;
};

class ChannelOutputs {
 public:
  static constexpr std::size_t kNoChannel = SIZE_MAX;

  struct Channel {
    std::string name;
    ComponentId peer = kNoComponent;
    ChannelEnd* end = nullptr;
  };

  ChannelOutputs(std::vector<Channel> channels, BufferPool& pool, ComponentId self, OutputLink& link);
  // Every channel the host was given, in grant order.
  static ChannelOutputs of_host(ComponentHost& host, OutputLink& link);

  std::size_t count() const { return channels_.size(); }
  std::string_view name(std::size_t channel) const { return channels_[channel].name; }
  ComponentId peer(std::size_t channel) const { return channels_[channel].peer; }
  ChannelEnd& end(std::size_t channel) { return *channels_[channel].end; }
  // By name, for start-up; kNoChannel when there is none.
  std::size_t find(std::string_view name) const;
  // The first channel (in grant order) leading to `peer`; kNoChannel when there is none.
  std::size_t channel_of(ComponentId peer) const;

  BufferPool& pool() { return pool_; }
  ComponentId self() const { return self_; }
  void served() { link_.served(); }

  // True when the message was sent; false when the ring is full or bad, or there is no such channel.
  bool send(std::size_t channel, const Message& message);
  // How many of `messages` were sent, in order.
  std::size_t send_burst(std::size_t channel, std::span<const Message> messages);
  // Hands `handle` to the channel's peer, then sends the message naming it. False: nothing was
  // sent and the caller still owns the buffer.
  bool send_with_buffer(std::size_t channel, const BufferHandle& handle, const Message& message);
  bool send_to(ComponentId peer, const Message& message) { return send(channel_of(peer), message); }
  bool send_to_with_buffer(ComponentId peer, const BufferHandle& handle, const Message& message) {
    return send_with_buffer(channel_of(peer), handle, message);
  }

 private:
  std::vector<Channel> channels_;
  std::vector<std::pair<ComponentId, std::size_t>> by_peer_;  // sorted by peer, then channel
  BufferPool& pool_;
  ComponentId self_;
  OutputLink& link_;
};

}  // namespace flotilla
