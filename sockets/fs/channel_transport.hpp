// The client library's Transport over dataplane channels, one FsChannel per file server.
//
// A call sends its requests (a request that finds its ring full waits there and is sent as soon as
// there is room), then takes what arrives: replies to the outstanding requests, invalidations (kept
// for drain()), and a server's peer_restarted notice, which turns into "forget what that server
// told you" and sends that server's outstanding requests again (same numbers: the restarted
// server's reply cache answers one its predecessor ran). Replies to requests no longer outstanding
// are dropped and counted. A posted request (post) is one nobody waits for: its reply is taken
// by a later poll. Calls do not wait for what was posted before them: a server runs one client's
// requests in its channel's order, its reply cache answers a retry of the last change it ran, and
// it drops a retry of an older one (a posted request it ran before that change), so a reply to a
// later request answers for every posted request before it. At most kMaxPosted are unanswered
// per server. A process learns of a server's restart from its host's control ring
// rather than from the channel; it passes that on with server_restarted(). While it waits with
// nothing to do, it calls the owner's `wait`: sleep on the doorbell in a process, run the servers
// in a test. `wait` returning false gives up: the call fails with Errc::closed (the stack is gone).
#pragma once

#include <functional>
#include <vector>

#include "components/formats/fs_channel.hpp"
#include "sockets/fs/fs_client.hpp"

namespace flotilla::fs {

class ChannelTransport final : public Transport {
 public:
  // channels[i] reaches server i; they must outlive the transport.
  ChannelTransport(ClientId self, std::vector<FsChannel*> channels, std::function<bool()> wait)
      : self_(self), channels_(std::move(channels)), restarted_(channels_.size(), false), wait_(std::move(wait)) {}

  ClientId client() const override { return self_; }
  std::uint16_t servers() const override { return static_cast<std::uint16_t>(channels_.size()); }
  Result<FsMessage> call(ServerIndex server, const FsMessage& request) override;
  Status call_each(std::span<const ServerIndex> servers, std::span<FsMessage> messages) override;
  Status post(ServerIndex server, const FsMessage& request) override;
  void drain(std::vector<FsMessage>& notices) override;
  // Server `server` is a new incarnation: what it left half-sent is dropped, what it was asked is
  // asked again, and what was learned from it is forgotten (at the next poll).
  void server_restarted(ServerIndex server);

  std::uint64_t stray_replies() const { return stray_replies_; }

 private:
  struct Outstanding {
    ServerIndex server;
    FsMessage request;
    bool sent = false;
    bool answered = false;
  };
  Status poll(std::vector<Outstanding>& outstanding);
  void restart_of(ServerIndex server, std::vector<Outstanding>& outstanding);
  // Waits until at most `most` requests posted to `server` are unanswered.
  Status settle(ServerIndex server, std::size_t most);

  static constexpr std::size_t kMaxPosted = 16;

  ClientId self_;
  std::vector<FsChannel*> channels_;
  std::vector<bool> restarted_;  // by server: a restart told by server_restarted(), not yet acted on
  std::function<bool()> wait_;
  std::vector<FsMessage> notices_;
  std::vector<Outstanding> posted_;  // unanswered posted requests, one per server at most
  std::uint64_t stray_replies_ = 0;
};

}  // namespace flotilla::fs
