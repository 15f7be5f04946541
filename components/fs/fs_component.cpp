// FsComponent: FileServer on channels; see fs_component.hpp.
#include "components/fs/fs_component.hpp"

#include <array>
#include <chrono>

namespace flotilla::fs {
namespace {

// Files carry wall-clock times (stat, tar's mtimes), not the loop's monotonic clock; the server
// logs the time it was given, so a replay gives the same times. Read through the vDSO.
std::uint64_t wall_clock_ns() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

}  // namespace

Result<std::unique_ptr<FsComponent>> FsComponent::create(ChannelOutputs& channels, const ServerConfig& config,
                                                         std::span<std::byte> state, std::span<std::byte> cache,
                                                         NamedCounterTable& counters) {
  auto blocks = BlockCache::attach(cache, config.servers);
  if (!blocks) return blocks.error();
  std::unique_ptr<FsComponent> component(new FsComponent(channels, counters));
  auto server = FileServer::start(config, state, *blocks);
  if (!server) return server.error();
  component->server_ = std::move(server.value());
  component->publish_stats();
  return component;
}

FsComponent::FsComponent(ChannelOutputs& channels, NamedCounterTable& counters)
    : channels_(channels), sequences_(channels.count(), 0) {
  counters_.register_in(counters);
  outboxes_.reserve(channels.count());
  for (std::size_t i = 0; i < channels.count(); ++i) outboxes_.emplace_back(kOutboxCells);
}

void FsComponent::on_message(std::size_t channel, const Message& message, std::uint64_t) {
  server_->receive(static_cast<ClientId>(channels_.peer(channel)), message, wall_clock_ns(), *this);
}

void FsComponent::on_burst_end(std::size_t) {
  publish_stats();
  channels_.served();
}

void FsComponent::on_peer_restarted(ComponentId peer) {
  const std::size_t channel = channels_.channel_of(peer);
  if (channel == ChannelOutputs::kNoChannel) {
    counters_.fs_unknown_client->add();
    return;
  }
  outboxes_[channel].clear();  // answers to the old holder mean nothing to the new one
  counters_.fs_clients_gone->add();
  server_->client_gone(static_cast<ClientId>(peer), wall_clock_ns(), *this);
  publish_stats();
}

bool FsComponent::poll(std::uint64_t) {
  bool sent = false;
  for (std::size_t channel = 0; channel < outboxes_.size(); ++channel) {
    if (!outboxes_[channel].empty()) sent = flush(channel) || sent;
  }
  return sent;
}

void FsComponent::send(ClientId to, const FsMessage& message) {
  const std::size_t channel = channels_.channel_of(static_cast<ComponentId>(to));
  if (channel == ChannelOutputs::kNoChannel) {
    counters_.fs_unknown_client->add();
    return;
  }
  std::array<Message, kMaxFsChunks> chunks;
  const std::size_t count = encode_chunks(message, ++sequences_[channel], chunks);
  MessageOutbox& outbox = outboxes_[channel];
  // All or nothing: a message is queued whole or dropped whole, never torn.
  if (outbox.capacity() - outbox.size() < count) {
    counters_.fs_outbox_dropped->add();
    return;
  }
  std::size_t sent = 0;
  if (outbox.empty()) sent = channels_.send_burst(channel, std::span<const Message>(chunks.data(), count));
  if (sent == count) return;
  counters_.fs_outbox_waits->add();
  for (std::size_t i = sent; i < count; ++i) (void)outbox.push(chunks[i]);
}

bool FsComponent::flush(std::size_t channel) {
  return outboxes_[channel].drain([&](std::span<const Message> waiting) {
    return channels_.send_burst(channel, waiting);
  }) > 0;
}

void FsComponent::publish_stats() {
  const ServerStats& now = server_->stats();
  counters_.fs_requests->add(now.requests - published_.requests);
  counters_.fs_malformed->add(now.malformed - published_.malformed);
  counters_.fs_retried->add(now.retried - published_.retried);
  counters_.fs_stale_retries->add(now.stale_retries - published_.stale_retries);
  counters_.fs_delayed->add(now.delayed - published_.delayed);
  counters_.fs_invalidations->add(now.invalidations - published_.invalidations);
  counters_.fs_checkpoints->add(now.checkpoints - published_.checkpoints);
  published_ = now;
}

}  // namespace flotilla::fs
