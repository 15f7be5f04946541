#include "sockets/fs/channel_transport.hpp"

#include <algorithm>
#include <bitset>

namespace flotilla::fs {

Result<FsMessage> ChannelTransport::call(ServerIndex server, const FsMessage& request) {
  FsMessage message = request;
  auto done = call_each(std::span(&server, 1), std::span(&message, 1));
  if (!done) return done.error();
  return message;
}

Status ChannelTransport::call_each(std::span<const ServerIndex> servers,
                                   std::span<FsMessage> messages) {
  std::vector<Outstanding> outstanding;
  outstanding.reserve(messages.size());
  for (std::size_t i = 0; i < messages.size(); ++i) {
    if (servers[i] >= channels_.size()) {
      return Error{Errc::invalid_argument, 0, "fs call to a server with no channel"};
    }
    outstanding.push_back(Outstanding{servers[i], messages[i]});
  }
  while (true) {
    auto progress = poll(outstanding);
    if (!progress) return progress;
    bool done = true;
    for (const Outstanding& o : outstanding) done = done && o.answered;
    if (done) break;
    if (!wait_()) return Error{Errc::closed, 0, "fs call abandoned: the file servers are out of reach"};
  }
  for (std::size_t i = 0; i < messages.size(); ++i) messages[i] = outstanding[i].request;
  return {};
}

Status ChannelTransport::post(ServerIndex server, const FsMessage& request) {
  if (server >= channels_.size()) return Error{Errc::invalid_argument, 0, "fs call to a server with no channel"};
  if (auto settled = settle(server, kMaxPosted - 1); !settled) return settled;
  posted_.push_back(Outstanding{server, request});
  std::vector<Outstanding> none;
  return poll(none);
}

Status ChannelTransport::settle(ServerIndex server, std::size_t most) {
  auto waiting = [&] {
    return static_cast<std::size_t>(std::count_if(posted_.begin(), posted_.end(),
                                                   [&](const Outstanding& o) { return o.server == server; })) > most;
  };
  std::vector<Outstanding> none;
  while (true) {
    auto progress = poll(none);
    if (!progress) return progress;
    if (!waiting()) return {};
    if (!wait_()) return Error{Errc::closed, 0, "fs call abandoned: the file servers are out of reach"};
  }
}

void ChannelTransport::server_restarted(ServerIndex server) {
  if (server < restarted_.size()) restarted_[server] = true;
}

void ChannelTransport::restart_of(ServerIndex server, std::vector<Outstanding>& outstanding) {
  FsMessage notice;
  notice.op = FsOp::invalidate;
  notice.flags = kAll;
  notice.arg0 = server;
  notices_.push_back(notice);
  for (Outstanding& o : outstanding) {
    if (o.server == server && !o.answered) o.sent = false;  // sent again next pass
  }
  for (Outstanding& o : posted_) {
    if (o.server == server) o.sent = false;
  }
}

Status ChannelTransport::poll(std::vector<Outstanding>& outstanding) {
  for (ServerIndex server = 0; server < restarted_.size(); ++server) {
    if (!restarted_[server]) continue;
    restarted_[server] = false;
    channels_[server]->peer_restarted();
    restart_of(server, outstanding);
  }
  // Each server gets its requests in the order they were made (posted ones are older than a
  // call's): once one finds its ring full, nothing later goes to that server in this pass.
  std::bitset<kMaxServers> full;
  for (auto* pending : {&posted_, &outstanding}) {
    for (Outstanding& o : *pending) {
      if (o.sent || full[o.server]) continue;
      auto sent = channels_[o.server]->send(o.request);
      if (!sent) return sent.error();
      o.sent = *sent;
      if (!o.sent) full[o.server] = true;
    }
  }
  for (ServerIndex server = 0; server < channels_.size(); ++server) {
    while (true) {
      auto received = channels_[server]->receive();
      if (!received) return received.error();
      if (!*received) break;
      if ((*received)->kind == FsReceived::Kind::peer_restarted) {
        restart_of(server, outstanding);
        continue;
      }
      const FsMessage& message = (*received)->message;
      if (message.op == FsOp::invalidate) {
        notices_.push_back(message);
        continue;
      }
      bool matched = false;
      for (Outstanding& o : outstanding) {
        if (o.server == server && !o.answered && message.op == FsOp::reply &&
            message.request == o.request.request) {
          o.request = message;
          o.answered = true;
          matched = true;
          break;
        }
      }
      // The server runs a client's requests in order, so a reply also answers for everything
      // posted to it before (a restarted server drops those it had run already).
      const std::size_t posted_before = posted_.size();
      if (message.op == FsOp::reply) {
        std::erase_if(posted_, [&](const Outstanding& o) {
          return o.server == server && o.sent && o.request.request <= message.request;
        });
      }
      if (posted_.size() == posted_before && !matched) ++stray_replies_;
    }
  }
  return {};
}

void ChannelTransport::drain(std::vector<FsMessage>& notices) {
  // Invalidations already in a ring count as delivered: take them before a cached lookup. A ring
  // that fails its checks gives nothing more; the next call reports it.
  std::vector<Outstanding> none;
  (void)poll(none);
  notices.insert(notices.end(), notices_.begin(), notices_.end());
  notices_.clear();
}

}  // namespace flotilla::fs
