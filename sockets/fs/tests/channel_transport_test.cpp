// The client library over real dataplane channels (rings in memory), with the servers run by the
// client's wait hook: long messages through small rings, invalidations, a server restart in the
// middle of a call, and malformed chunks.
#include "sockets/fs/channel_transport.hpp"

#include <fcntl.h>

#include <gtest/gtest.h>

#include <deque>
#include <memory>

#include "components/fs/file_server.hpp"
#include "sockets/fs/tests/fs_api.hpp"

namespace flotilla::fs {
namespace {

struct alignas(64) Line {
  std::byte bytes[64];
};

class ChannelFleet {
 public:
  ChannelFleet(std::uint16_t servers, std::size_t clients, std::uint32_t capacity)
      : blocks_(256 * kBlockBytes), states_(servers), servers_(servers), links_(clients) {
    cache_ = *BlockCache::attach(blocks_, servers);
    for (ServerIndex s = 0; s < servers; ++s) {
      states_[s].assign(256 * 1024 / sizeof(std::uint64_t), 0);
      restart(s, false);
    }
    for (std::size_t c = 0; c < clients; ++c) {
      for (ServerIndex s = 0; s < servers; ++s) {
        auto link = std::make_unique<Link>();
        link->memory.resize(channel_bytes(capacity) / sizeof(Line) + 1);
        const std::span<std::byte> memory(reinterpret_cast<std::byte*>(link->memory.data()),
                                          channel_bytes(capacity));
        EXPECT_TRUE(format_channel(memory, capacity).ok());
        link->client_end = FsChannel(*attach_channel(memory, capacity, ChannelSide::a, 1, nullptr, nullptr));
        link->server_end = FsChannel(*attach_channel(memory, capacity, ChannelSide::b, 1, nullptr, nullptr));
        links_[c].push_back(std::move(link));
      }
      std::vector<FsChannel*> ends;
      for (auto& link : links_[c]) ends.push_back(&link->client_end);
      transports_.push_back(std::make_unique<ChannelTransport>(
          static_cast<ClientId>(c + 1), ends, [this] {
            wait();
            return true;
          }));
      clients_.push_back(std::make_unique<Client>(*transports_.back(), cache_));
    }
  }

  Client& client(std::size_t c) { return *clients_[c]; }
  ChannelTransport& transport(std::size_t c) { return *transports_[c]; }
  FsChannel& server_end(std::size_t c, ServerIndex s) { return links_[c][s]->server_end; }
  FsChannel& client_end(std::size_t c, ServerIndex s) { return links_[c][s]->client_end; }
  FileServer& server(ServerIndex s) { return *servers_[s]; }
  // At the n-th wait from now, server `s` crashes with its input unread, and restarts.
  void crash_at_wait(std::size_t n, ServerIndex s) {
    crash_wait_ = waits_ + n;
    crash_server_ = s;
    run_before_crash_ = false;
  }
  // The same, but the server first runs everything it was sent; its replies are lost.
  void crash_after_running_at_wait(std::size_t n, ServerIndex s) {
    crash_at_wait(n, s);
    run_before_crash_ = true;
  }
  std::size_t waits() const { return waits_; }
  // Restarts are told to the transports (ChannelTransport::server_restarted), as a process's host
  // tells them from its control ring, instead of by a notice in the channel.
  void tell_restarts_through_host() { restarts_through_host_ = true; }
  std::uint64_t malformed() const {
    std::uint64_t total = 0;
    for (const auto& per_client : links_) {
      for (const auto& link : per_client) total += link->server_end.stats().chunks_rejected;
    }
    return total;
  }

  // One pass of every server over its input, then what they sent goes out.
  void pump() {
    for (ServerIndex s = 0; s < servers_.size(); ++s) run(s);
    flush();
  }

 private:
  struct Link {
    std::vector<Line> memory;
    FsChannel client_end;
    FsChannel server_end;
    std::deque<FsMessage> backlog;  // server -> client, waiting for room
  };
  class Route;

  // Server `s` handles everything its channels hold; its replies wait in the backlogs.
  void run(ServerIndex s) {
    {
      for (std::size_t c = 0; c < links_.size(); ++c) {
        while (true) {
          auto received = links_[c][s]->server_end.receive();
          ASSERT_TRUE(received.ok());
          if (!*received) break;
          if ((*received)->kind != FsReceived::Kind::message) continue;
          Route out(*this, s);
          servers_[s]->handle(static_cast<ClientId>(c + 1), (*received)->message, ++now_, out);
        }
      }
    }
  }

  class Route final : public ServerOutputs {
   public:
    Route(ChannelFleet& fleet, ServerIndex from) : fleet_(&fleet), from_(from) {}
    void send(ClientId to, const FsMessage& message) override {
      if (to == 0 || to > fleet_->links_.size()) return;
      fleet_->links_[to - 1][from_]->backlog.push_back(message);
    }

   private:
    ChannelFleet* fleet_;
    ServerIndex from_;
  };

  void flush() {
    for (auto& per_client : links_) {
      for (auto& link : per_client) {
        while (!link->backlog.empty()) {
          auto sent = link->server_end.send(link->backlog.front());
          ASSERT_TRUE(sent.ok());
          if (!*sent) break;
          link->backlog.pop_front();
        }
      }
    }
  }

  void wait() {
    if (++waits_ == crash_wait_) {
      if (run_before_crash_) run(crash_server_);
      // The server dies with its input unread and its unsent replies lost, and comes back.
      for (auto& per_client : links_) {
        auto& link = per_client[crash_server_];
        while (true) {
          auto received = link->server_end.receive();
          if (!received.ok() || !*received) break;
        }
        link->backlog.clear();
      }
      restart(crash_server_, true);
    }
    pump();
  }

  void restart(ServerIndex s, bool notify) {
    ServerConfig config;
    config.self = s;
    config.servers = static_cast<std::uint16_t>(servers_.size());
    servers_[s].reset();
    auto server = FileServer::start(config, std::as_writable_bytes(std::span(states_[s])), cache_);
    ASSERT_TRUE(server.ok());
    servers_[s] = std::move(*server);
    if (!notify) return;
    if (restarts_through_host_) {
      for (auto& transport : transports_) transport->server_restarted(s);
      return;
    }
    Message notice;
    notice.kind = MessageKind::peer_restarted;
    for (auto& per_client : links_) {
      ASSERT_EQ(*per_client[s]->server_end.end().out.send_burst(std::span(&notice, 1)), 1u);
    }
  }

  std::vector<std::byte> blocks_;
  BlockCache cache_;
  std::vector<std::vector<std::uint64_t>> states_;
  std::vector<std::unique_ptr<FileServer>> servers_;
  std::vector<std::vector<std::unique_ptr<Link>>> links_;
  std::vector<std::unique_ptr<ChannelTransport>> transports_;
  std::vector<std::unique_ptr<Client>> clients_;
  std::uint64_t now_ = 1;
  std::size_t waits_ = 0;
  std::size_t crash_wait_ = 0;
  ServerIndex crash_server_ = 0;
  bool run_before_crash_ = false;
  bool restarts_through_host_ = false;
};

TEST(ChannelTransport, FileOperationsOverRealChannels) {
  ChannelFleet fleet(3, 1, 64);
  testing::FleetApi api(fleet.client(0));
  ASSERT_EQ(api.mkdir("d", true), 0);
  for (int i = 0; i < 30; ++i) ASSERT_EQ(api.spit("d/f" + std::to_string(i), "data" + std::to_string(i)), 0);
  std::vector<std::string> names;
  ASSERT_EQ(api.readdir("d", names), 0);
  EXPECT_EQ(names.size(), 30u);
  ASSERT_EQ(api.rename("d/f3", "d/renamed"), 0);
  std::string out;
  ASSERT_EQ(api.slurp("d/renamed", out), 0);
  EXPECT_EQ(out, "data3");
  EXPECT_EQ(api.slurp("d/f3", out), -ENOENT);
}

TEST(ChannelTransport, LongMessagesThroughTheSmallestRings) {
  ChannelFleet fleet(2, 1, 16);  // a full dirent reply takes 11 of the 16 slots
  testing::FleetApi api(fleet.client(0));
  const std::string name(255, 'n');
  ASSERT_EQ(api.spit(name, "long"), 0);
  for (int i = 0; i < 20; ++i) ASSERT_EQ(api.spit(std::string(200, 'a' + i % 26) + std::to_string(i), "x"), 0);
  std::vector<std::string> names;
  ASSERT_EQ(api.readdir("", names), 0);
  EXPECT_EQ(names.size(), 21u);
  std::string out;
  ASSERT_EQ(api.slurp(name, out), 0);
  EXPECT_EQ(out, "long");
}

TEST(ChannelTransport, InvalidationsTravelTheChannel) {
  ChannelFleet fleet(2, 2, 64);
  testing::FleetApi a(fleet.client(0));
  ASSERT_EQ(a.spit("x", "content"), 0);
  FileStat st;
  ASSERT_EQ(fleet.client(1).stat("/x", st), 0);
  ASSERT_EQ(fleet.client(1).stat("/x", st), 0);
  EXPECT_GT(fleet.client(1).cached_lookups(), 0u);
  ASSERT_EQ(a.rename("x", "y"), 0);
  EXPECT_EQ(fleet.client(1).stat("/x", st), -ENOENT);
  EXPECT_EQ(fleet.client(1).stat("/y", st), 0);
}

// A server restarted while a client waits for its answer (after the `at`-th wait): the call is
// retried and nothing written before or during it is lost. `through_host`: the client learns of
// the restart from its host's control ring rather than from the channel.
void expect_restart_during_a_call_is_retried(std::size_t servers, std::size_t server, bool through_host) {
  for (std::size_t at = 1; at <= 3; ++at) {
    ChannelFleet fleet(servers, 1, 64);
    if (through_host) fleet.tell_restarts_through_host();
    testing::FleetApi api(fleet.client(0));
    ASSERT_EQ(api.spit("before", "kept"), 0);
    fleet.crash_at_wait(at, server);
    ASSERT_EQ(api.spit("during", "also kept"), 0);
    std::string out;
    ASSERT_EQ(api.slurp("before", out), 0);
    EXPECT_EQ(out, "kept");
    ASSERT_EQ(api.slurp("during", out), 0);
    EXPECT_EQ(out, "also kept");
    EXPECT_EQ(fleet.client_end(0, server).stats().peer_restarts, 1u);
  }
}

TEST(ChannelTransport, AServerRestartInTheMiddleOfACallIsRetried) { expect_restart_during_a_call_is_retried(1, 0, false); }

TEST(ChannelTransport, ARestartToldByTheHostIsRetriedToo) { expect_restart_during_a_call_is_retried(2, 1, true); }

// A close is posted, not waited for: the server runs it before the client's next request to it,
// and a restart that lost it unread has it sent again, so the server holds no descriptor after.
TEST(ChannelTransport, APostedCloseRunsBeforeTheNextCallAndSurvivesARestart) {
  for (bool crash : {false, true}) {
    ChannelFleet fleet(1, 1, 64);
    Client& client = fleet.client(0);
    const int fd = client.open("/f", O_CREAT | O_WRONLY, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(fleet.server(0).descriptor_count(), 1u);
    ASSERT_EQ(client.close(fd), 0);
    EXPECT_EQ(fleet.server(0).descriptor_count(), 1u) << "the close was waited for";
    if (crash) fleet.crash_at_wait(1, 0);
    FileStat st;
    ASSERT_EQ(client.stat("/f", st), 0);
    EXPECT_EQ(fleet.server(0).descriptor_count(), 0u);
    EXPECT_EQ(fleet.transport(0).stray_replies(), 0u);
  }
}

// A call does not wait for the reply to what was posted before it: the close and the next open
// reach the server together, and one wait answers both.
TEST(ChannelTransport, ACallAfterAPostedCloseTakesOneWait) {
  ChannelFleet fleet(1, 1, 64);
  Client& client = fleet.client(0);
  const int first = client.open("/a", O_CREAT | O_WRONLY, 0644);
  ASSERT_GE(first, 0);
  ASSERT_EQ(client.close(first), 0);
  const std::size_t before = fleet.waits();
  const int second = client.open("/b", O_CREAT | O_WRONLY, 0644);
  ASSERT_GE(second, 0);
  EXPECT_EQ(fleet.waits() - before, 1u);
  EXPECT_EQ(fleet.server(0).descriptor_count(), 1u);
  EXPECT_EQ(fleet.transport(0).stray_replies(), 0u);
}

// The server ran a posted close and the open after it, then restarted before either reply left:
// both are sent again, the close (older than the open, the last change it logged for this client)
// is dropped rather than run twice, and the open is answered from the reply cache.
TEST(ChannelTransport, APostedCloseResentAfterALaterChangeIsDropped) {
  ChannelFleet fleet(1, 1, 64);
  Client& client = fleet.client(0);
  const int first = client.open("/a", O_CREAT | O_WRONLY, 0644);
  ASSERT_GE(first, 0);
  ASSERT_EQ(client.close(first), 0);
  fleet.crash_after_running_at_wait(1, 0);
  const int second = client.open("/b", O_CREAT | O_WRONLY, 0644);
  ASSERT_GE(second, 0);
  EXPECT_EQ(fleet.server(0).stats().stale_retries, 1u);
  EXPECT_EQ(fleet.server(0).stats().retried, 1u);
  EXPECT_EQ(fleet.server(0).descriptor_count(), 1u);
  ASSERT_EQ(client.close(second), 0);
  FileStat st;
  ASSERT_EQ(client.stat("/b", st), 0);
  EXPECT_EQ(fleet.server(0).descriptor_count(), 0u);
  EXPECT_EQ(fleet.transport(0).stray_replies(), 0u);
}

// More posted requests than a server may owe at once: the oldest are waited for, none is lost.
TEST(ChannelTransport, PostedClosesBeyondTheBoundAreWaitedFor) {
  ChannelFleet fleet(1, 1, 64);
  Client& client = fleet.client(0);
  std::vector<int> fds;
  for (int i = 0; i < 40; ++i) {
    fds.push_back(client.open("/f" + std::to_string(i), O_CREAT | O_WRONLY, 0644));
    ASSERT_GE(fds.back(), 0);
  }
  for (int fd : fds) ASSERT_EQ(client.close(fd), 0);
  FileStat st;
  ASSERT_EQ(client.stat("/f0", st), 0);
  EXPECT_EQ(fleet.server(0).descriptor_count(), 0u);
  EXPECT_EQ(fleet.transport(0).stray_replies(), 0u);
}

TEST(ChannelTransport, AWaitThatGivesUpFailsTheCall) {
  std::vector<Line> memory(channel_bytes(16) / sizeof(Line) + 1);
  const std::span<std::byte> bytes(reinterpret_cast<std::byte*>(memory.data()), channel_bytes(16));
  ASSERT_TRUE(format_channel(bytes, 16).ok());
  FsChannel channel(*attach_channel(bytes, 16, ChannelSide::a, 1, nullptr, nullptr));
  int waits = 0;
  ChannelTransport transport(1, {&channel}, [&] { return ++waits < 3; });
  FsMessage message;
  message.op = FsOp::fstat;
  message.client = 1;
  message.inode = kRootInode;
  auto reply = transport.call(0, message);  // no server answers
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.error().code, Errc::closed);
  EXPECT_EQ(waits, 3);
}

TEST(ChannelTransport, ASymlinkItselfTakesTimesAndOwnerWithoutFollowing) {
  ChannelFleet fleet(2, 1, 64);
  Client& client = fleet.client(0);
  ASSERT_EQ(client.symlink("not-yet", "/link"), 0);  // tar makes links before their targets
  constexpr std::uint64_t kWhen = 1'700'000'000'000'000'000ull;
  EXPECT_EQ(client.utimens("/link", kWhen, kWhen), -ENOENT);
  ASSERT_EQ(client.utimens("/link", kWhen, kWhen, false), 0);
  ASSERT_EQ(client.chown("/link", 12, 34, false), 0);
  FileStat st;
  ASSERT_EQ(client.lstat("/link", st), 0);
  EXPECT_EQ(st.type, FileType::symlink);
  EXPECT_EQ(st.mtime_ns, kWhen);
  EXPECT_EQ(st.uid, 12u);
  EXPECT_EQ(st.gid, 34u);
}

TEST(ChannelTransport, AClientsStatSeesItsOwnWritesAndItsTimesStay) {
  // What the FUSE mount relies on: the kernel asks for a path's attributes while the writer's
  // descriptor is open, and tar sets the times before it closes.
  ChannelFleet fleet(2, 1, 64);
  Client& client = fleet.client(0);
  const int fd = client.open("/written", O_CREAT | O_WRONLY, 0644);
  ASSERT_GE(fd, 0);
  const std::string data(10000, 'w');
  ASSERT_EQ(client.pwrite(fd, std::as_bytes(std::span(data)), 0), static_cast<ssize_t>(data.size()));
  FileStat st;
  ASSERT_EQ(client.stat("/written", st), 0);
  EXPECT_EQ(st.size, data.size());
  constexpr std::uint64_t kWhen = 1'600'000'000'000'000'000ull;
  ASSERT_EQ(client.pwrite(fd, std::as_bytes(std::span(data)), data.size()), static_cast<ssize_t>(data.size()));
  ASSERT_EQ(client.utimens("/written", kWhen, kWhen), 0);
  ASSERT_EQ(client.close(fd), 0);
  ASSERT_EQ(client.stat("/written", st), 0);
  EXPECT_EQ(st.size, 2 * data.size());
  EXPECT_EQ(st.mtime_ns, kWhen);
}

TEST(ChannelTransport, ARingTooSmallForAMessageIsAnError) {
  std::vector<Line> memory(channel_bytes(8) / sizeof(Line) + 1);
  const std::span<std::byte> bytes(reinterpret_cast<std::byte*>(memory.data()), channel_bytes(8));
  ASSERT_TRUE(format_channel(bytes, 8).ok());
  FsChannel channel(*attach_channel(bytes, 8, ChannelSide::a, 1, nullptr, nullptr));
  FsMessage message;
  message.op = FsOp::resolve;
  message.client = 1;
  message.set_name(std::string(255, 'n'));  // 6 chunks: fits
  EXPECT_TRUE(channel.send(message).ok());
  FsMessage reply = reply_to(message, 0);
  while (put_dirent(reply, "entry", kRootInode, type_word(FileType::regular, false))) {
  }
  auto sent = channel.send(reply);  // 11 chunks: never fits
  ASSERT_FALSE(sent.ok());
  EXPECT_EQ(sent.error().code, Errc::truncated);
}

TEST(ChannelTransport, MalformedChunksAreCountedAndDropped) {
  ChannelFleet fleet(1, 1, 64);
  std::array<Message, 8> garbage;
  for (std::size_t i = 0; i < garbage.size(); ++i) {
    garbage[i].kind = kFsChunkKind;
    garbage[i].body.fill(static_cast<std::byte>(0x5a + i));
  }
  ASSERT_EQ(*fleet.client_end(0, 0).end().out.send_burst(garbage), garbage.size());
  fleet.pump();
  EXPECT_GT(fleet.malformed(), 0u);
  testing::FleetApi api(fleet.client(0));
  ASSERT_EQ(api.spit("fine", "still"), 0);
  std::string out;
  ASSERT_EQ(api.slurp("fine", out), 0);
  EXPECT_EQ(out, "still");
}

}  // namespace
}  // namespace flotilla::fs
