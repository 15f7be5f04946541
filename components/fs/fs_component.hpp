// A file server as a component: FileServer (file_server.hpp) fed the chunks of its channels, its
// replies and invalidations sent back on them. Every channel leads to one client, whose
// ComponentId is the ClientId its requests must carry. A reply that finds its ring full waits in
// that channel's outbox, in order, and goes out from poll(). A client's restart (its application
// seat's lease ended, or a new holder took it) is the client-death notice: its descriptors and
// locks are released, and what was still queued for the old holder is dropped.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "components/fs/file_server.hpp"
#include "dataplane/channel_outputs.hpp"
#include "dataplane/component.hpp"
#include "dataplane/counters.hpp"
#include "dataplane/message_outbox.hpp"

namespace flotilla::fs {

#define FLOTILLA_FS_COMPONENT_COUNTERS(X) \
  X(fs_requests)                          \
  X(fs_malformed)                         \
  X(fs_retried)                           \
  X(fs_stale_retries)                     \
  X(fs_delayed)                           \
  X(fs_invalidations)                     \
  X(fs_checkpoints)                       \
  X(fs_clients_gone)                      \
  X(fs_unknown_client)                    \
  X(fs_outbox_waits)                      \
  X(fs_outbox_dropped)

struct FsComponentCounters {
  FLOTILLA_NAMED_COUNTERS(FLOTILLA_FS_COMPONENT_COUNTERS)
};

class FsComponent final : public Component, private ServerOutputs {
 public:
  // Cells of messages a channel may have waiting for room: far more than the replies a client
  // can have outstanding, so only a flood of invalidations to a client that stopped reading fills it.
  static constexpr std::size_t kOutboxCells = 1024;

  // `state`: this server's state-store region (its tables come back from it); `cache`: the shared
  // buffer cache region.
  static Result<std::unique_ptr<FsComponent>> create(ChannelOutputs& channels, const ServerConfig& config,
                                                     std::span<std::byte> state, std::span<std::byte> cache,
                                                     NamedCounterTable& counters);

  FileServer& server() { return *server_; }

  void on_message(std::size_t channel, const Message& message, std::uint64_t now_ns) override;
  void on_burst_end(std::size_t channel) override;
  void on_peer_restarted(ComponentId peer) override;
  bool poll(std::uint64_t now_ns) override;

 private:
  FsComponent(ChannelOutputs& channels, NamedCounterTable& counters);

  // ServerOutputs
  void send(ClientId to, const FsMessage& message) override;

  // Sends what waits in channel's outbox; true when something went.
  bool flush(std::size_t channel);
  void publish_stats();

  ChannelOutputs& channels_;
  FsComponentCounters counters_;
  ServerStats published_;  // the server's stats as last added to the counters
  std::unique_ptr<FileServer> server_;
  std::vector<MessageOutbox> outboxes_;  // by channel
  std::vector<std::uint16_t> sequences_;  // by channel: the chunk sequence of the next message
};

}  // namespace flotilla::fs
