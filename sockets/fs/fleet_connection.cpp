#include "sockets/fs/fleet_connection.hpp"

#include <poll.h>
#include <sched.h>

#include <chrono>
#include <charconv>
#include <optional>
#include <utility>

namespace flotilla::fs {
namespace {

// The server index of a channel named fs<k>-<seat>; nullopt for any other name.
std::optional<unsigned> server_of(std::string_view channel, std::string_view seat) {
  if (!channel.starts_with("fs")) return std::nullopt;
  const std::size_t dash = channel.find('-');
  if (dash == std::string_view::npos || channel.substr(dash + 1) != seat) return std::nullopt;
  unsigned index = 0;
  const char* first = channel.data() + 2;
  const char* last = channel.data() + dash;
  const auto parsed = std::from_chars(first, last, index);
  if (first == last || parsed.ec != std::errc{} || parsed.ptr != last) return std::nullopt;
  return index;
}

// How long a wait sleeps at most: the lease's end is noticed within this much.
constexpr int kWaitSliceMs = 100;

// How long a wait gives its core away with sched_yield before it sleeps, as a component's "shared"
// wait does while traffic is warm (WaitPolicy::shared_core): a server answers most requests within
// this, and a process asleep in poll costs the server a wake-up write and itself a halted vCPU's
// wake-up (~55 us here) on every call.
constexpr std::chrono::microseconds kYieldBudget{200};

}  // namespace

Result<std::unique_ptr<FleetConnection>> FleetConnection::lease(const std::string& socket_path,
                                                                ClientOptions options) {
  auto leased = ComponentHost::lease(socket_path);
  if (!leased) return leased.error();
  std::unique_ptr<FleetConnection> connection(new FleetConnection());
  connection->host_ = std::move(leased.value());
  ComponentHost& host = *connection->host_;

  std::vector<std::optional<std::size_t>> by_server;
  for (std::size_t i = 0; i < host.channel_count(); ++i) {
    const auto server = server_of(host.channel_name(i), host.name());
    if (!server || *server >= kMaxServers) continue;
    if (by_server.size() <= *server) by_server.resize(*server + 1);
    by_server[*server] = i;
  }
  if (by_server.empty()) {
    return Error{Errc::invalid_argument, 0, "the configuration gives the seat no channel to a file server"};
  }
  for (const auto& channel : by_server) {
    if (!channel) return Error{Errc::invalid_argument, 0, "the seat's file server channels have a gap"};
    connection->channels_.emplace_back(host.channel_at(*channel));
    connection->server_ids_.push_back(host.channel_peer(*channel));
  }
  auto cache = BlockCache::attach(host.region(kFileCacheRegion), connection->servers());
  if (!cache) return Error{Errc::invalid_argument, 0, "the seat has no usable buffer cache region (fs-blocks)"};
  connection->cache_ = *cache;

  std::vector<FsChannel*> ends;
  for (FsChannel& channel : connection->channels_) ends.push_back(&channel);
  FleetConnection* self = connection.get();
  connection->transport_ = std::make_unique<ChannelTransport>(static_cast<ClientId>(host.id()), std::move(ends),
                                                              [self] { return self->wait(); });
  host.on_peer_restarted([self](ComponentId peer, std::uint64_t) {
    for (std::size_t server = 0; server < self->server_ids_.size(); ++server) {
      if (self->server_ids_[server] == peer) self->transport_->server_restarted(static_cast<ServerIndex>(server));
    }
  });
  options.first_request = (host.incarnation() << 32) | 1;
  connection->client_ = std::make_unique<Client>(*connection->transport_, connection->cache_, options);
  return connection;
}

bool FleetConnection::wait() {
  if (gone_) return false;
  if (waiting_work_ != nullptr) {
    void (*work)(void*) = std::exchange(waiting_work_, nullptr);
    work(waiting_context_);
  }
  const auto yield_until = std::chrono::steady_clock::now() + kYieldBudget;
  do {
    for (const FsChannel& channel : channels_) {
      if (channel.has_input()) return true;
    }
    ::sched_yield();
  } while (std::chrono::steady_clock::now() < yield_until);
  host_->arm_wake();
  bool ready = host_->loop().poll_once();
  for (const FsChannel& channel : channels_) ready = ready || channel.has_input();
  if (!ready) {
    pollfd fds[2] = {{host_->wake_fd(), POLLIN, 0}, {host_->lease_fd(), POLLIN, 0}};
    if (::poll(fds, 2, kWaitSliceMs) > 0 && (fds[1].revents & (POLLHUP | POLLERR | POLLIN)) != 0) gone_ = true;
  }
  host_->disarm_wake();
  return !gone_;
}

}  // namespace flotilla::fs
