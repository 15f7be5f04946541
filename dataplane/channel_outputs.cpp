#include "dataplane/channel_outputs.hpp"

#include <algorithm>

#include "dataplane/buffer_send.hpp"
#include "dataplane/component_host.hpp"

namespace flotilla {

Result<std::size_t> HostLink::send(ChannelEnd& channel, std::span<const Message> messages) {
  return host_.send(channel, messages);
}

void HostLink::served() { host_.served(); }

ChannelOutputs::ChannelOutputs(std::vector<Channel> channels, BufferPool& pool, ComponentId self,
                               OutputLink& link)
    : channels_(std::move(channels)), pool_(pool), self_(self), link_(link) {
  for (std::size_t i = 0; i < channels_.size(); ++i) by_peer_.emplace_back(channels_[i].peer, i);
  std::sort(by_peer_.begin(), by_peer_.end());
}

ChannelOutputs ChannelOutputs::of_host(ComponentHost& host, OutputLink& link) {
  std::vector<Channel> channels;
  for (std::size_t i = 0; i < host.channel_count(); ++i) {
    channels.push_back(Channel{std::string(host.channel_name(i)), host.channel_peer(i), &host.channel_at(i)});
  }
  return ChannelOutputs(std::move(channels), host.pool(), host.id(), link);
}

std::size_t ChannelOutputs::find(std::string_view name) const {
  for (std::size_t i = 0; i < channels_.size(); ++i) {
    if (channels_[i].name == name) return i;
  }
  return kNoChannel;
}

std::size_t ChannelOutputs::channel_of(ComponentId peer) const {
  const auto found = std::lower_bound(by_peer_.begin(), by_peer_.end(), std::pair(peer, std::size_t{0}));
  return found != by_peer_.end() && found->first == peer ? found->second : kNoChannel;
}

std::size_t ChannelOutputs::send_burst(std::size_t channel, std::span<const Message> messages) {
  if (channel >= channels_.size() || messages.empty()) return 0;
  auto sent = link_.send(*channels_[channel].end, messages);
  return sent ? sent.value() : 0;
}

bool ChannelOutputs::send(std::size_t channel, const Message& message) {
  return send_burst(channel, std::span(&message, 1)) == 1;
}

bool ChannelOutputs::send_with_buffer(std::size_t channel, const BufferHandle& handle,
                                      const Message& message) {
  if (channel >= channels_.size()) return false;
  return flotilla::send_with_buffer(pool_, self_, *channels_[channel].end, channels_[channel].peer, handle,
                                   message, [&](const Message& one) { return send(channel, one); });
}

}  // namespace flotilla
