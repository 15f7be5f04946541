// A program's connection to the file fleet through a leased application seat: the seat's
// channels named fs<k>-<seat> lead to file server k, its region fs-blocks is the shared buffer
// cache, and a Client (fs_client.hpp) runs over them. The program sleeps on the seat's eventfd
// while it waits for a server; a server's restart, told on the seat's control ring, has the
// outstanding requests sent again. When the lease ends (the supervisor is gone), calls fail with
// -EIO and stack_gone() turns true.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "components/formats/fs_channel.hpp"
#include "dataplane/component_host.hpp"
#include "sockets/fs/channel_transport.hpp"
#include "sockets/fs/fs_client.hpp"

namespace flotilla::fs {

class FleetConnection {
 public:
  // Errc::closed: no supervisor at `socket_path`; Errc::exhausted: every seat is leased;
  // Errc::invalid_argument: the seat has no file fleet (no fs channels or no buffer cache).
  static Result<std::unique_ptr<FleetConnection>> lease(const std::string& socket_path,
                                                        ClientOptions options = {});
  FleetConnection(const FleetConnection&) = delete;
  FleetConnection& operator=(const FleetConnection&) = delete;

  Client& client() { return *client_; }
  std::uint16_t servers() const { return static_cast<std::uint16_t>(channels_.size()); }
  std::string_view seat() const { return host_->name(); }
  bool stack_gone() const { return gone_; }
  const BlockCache& cache() const { return cache_; }
  // Work the next wait for a server does once, before it gives its core away, so that it runs
  // while the server answers (the preload makes a new descriptor's kernel side there); null: none.
  void while_waiting(void (*work)(void*), void* context) {
    waiting_work_ = work;
    waiting_context_ = context;
  }

 private:
  FleetConnection() = default;
  // The transport's wait: one pass of the control ring, then a sleep until a server writes, the
  // lease ends, or a bounded time passes. False once the lease has ended.
  bool wait();

  std::unique_ptr<ComponentHost> host_;
  std::vector<FsChannel> channels_;          // by server index
  std::vector<ComponentId> server_ids_;      // by server index
  BlockCache cache_;
  std::unique_ptr<ChannelTransport> transport_;
  std::unique_ptr<Client> client_;
  bool gone_ = false;
  void (*waiting_work_)(void*) = nullptr;
  void* waiting_context_ = nullptr;
};

}  // namespace flotilla::fs
