// A rename over an existing name, with a reader's whole open-read-close placed at every point
// between the rename's messages, and a rename placed between the two steps of a reader's open (the
// name's server, then the inode's home): the reader sees the old file or the new one, never
// ENOENT. Every placement of the names and inodes on two servers; no scheduler, no seeds: each
// interleaving is spelled out.
#include <fcntl.h>
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "components/fs/file_server.hpp"
#include "sockets/fs/fs_client.hpp"
#include "sockets/fs/tests/fs_api.hpp"

namespace flotilla::fs::testing {
namespace {

constexpr std::uint16_t kServers = 2;

// Servers in this process. A request is handled the moment it is sent; before it goes out, the
// sender's hook may run other clients' calls, so a test puts them exactly between two messages.
class DirectFleet {
 public:
  using Hook = std::function<void(ServerIndex, const FsMessage&)>;

  class Port final : public Transport {
   public:
    Port(DirectFleet& fleet, ClientId id) : fleet_(&fleet), id_(id) {}
    ClientId client() const override { return id_; }
    std::uint16_t servers() const override { return kServers; }
    Result<FsMessage> call(ServerIndex server, const FsMessage& request) override {
      if (hook && !in_hook_) {
        in_hook_ = true;
        hook(server, request);
        in_hook_ = false;
      }
      return fleet_->deliver(server, request);
    }
    void drain(std::vector<FsMessage>& out) override {
      out.insert(out.end(), notices.begin(), notices.end());
      notices.clear();
    }

    Hook hook;
    std::vector<FsMessage> notices;

   private:
    DirectFleet* fleet_;
    ClientId id_;
    bool in_hook_ = false;
  };

  DirectFleet() : blocks_(256 * kBlockBytes), states_(kServers) {
    cache_ = *BlockCache::attach(blocks_, kServers);
    for (ServerIndex i = 0; i < kServers; ++i) {
      states_[i].assign((1 << 20) / sizeof(std::uint64_t), 0);
      ServerConfig config;
      config.self = i;
      config.servers = kServers;
      auto server = FileServer::start(config, std::as_writable_bytes(std::span(states_[i])), cache_);
      EXPECT_TRUE(server.ok());
      if (server) servers_.push_back(std::move(*server));
    }
  }

  // A client of its own (a process): its transport and the client on it.
  Client& add_client() {
    const auto id = static_cast<ClientId>(ports_.size() + 1);
    ports_.push_back(std::make_unique<Port>(*this, id));
    clients_.push_back(std::make_unique<Client>(*ports_.back(), cache_));
    return *clients_.back();
  }
  Port& port(std::size_t index) { return *ports_.at(index); }

 private:
  class Collect final : public ServerOutputs {
   public:
    explicit Collect(DirectFleet& fleet) : fleet_(&fleet) {}
    void send(ClientId to, const FsMessage& message) override {
      if (message.op == FsOp::invalidate) {
        if (to >= 1 && to <= fleet_->ports_.size()) fleet_->ports_[to - 1]->notices.push_back(message);
        return;
      }
      replies.push_back(message);
    }
    std::vector<FsMessage> replies;

   private:
    DirectFleet* fleet_;
  };

  Result<FsMessage> deliver(ServerIndex server, const FsMessage& request) {
    Collect out(*this);
    servers_.at(server)->handle(request.client, request, ++now_ns_, out);
    for (const FsMessage& reply : out.replies) {
      if (reply.request == request.request) return reply;
    }
    return Error{Errc::closed, 0, "the request was held back: nothing answers it here"};
  }

  std::vector<std::byte> blocks_;
  BlockCache cache_;
  std::vector<std::vector<std::uint64_t>> states_;
  std::vector<std::unique_ptr<FileServer>> servers_;
  std::vector<std::unique_ptr<Port>> ports_;
  std::vector<std::unique_ptr<Client>> clients_;
  std::uint64_t now_ns_ = 1'000'000'000;
};

// A name in the root whose entry lives on `server`.
std::string name_on(ServerIndex server, const std::string& stem) {
  for (int i = 0;; ++i) {
    std::string name = stem + std::to_string(i);
    if (entry_server(kRootInode, true, name, kServers) == server) return name;
  }
}

// Where the names and inodes of one rename live.
struct Placement {
  ServerIndex target_entry;  // the replaced name's server
  ServerIndex old_home;      // the replaced file's inode
  ServerIndex source_entry;  // the new file's name and inode
};

std::vector<Placement> every_placement() {
  std::vector<Placement> out;
  for (ServerIndex t = 0; t < kServers; ++t) {
    for (ServerIndex o = 0; o < kServers; ++o) {
      for (ServerIndex s = 0; s < kServers; ++s) out.push_back({t, o, s});
    }
  }
  return out;
}

std::string describe(const Placement& p) {
  return "target entry on " + std::to_string(p.target_entry) + ", old inode on " + std::to_string(p.old_home) +
         ", source on " + std::to_string(p.source_entry);
}

// The fleet holds `target` ("old", its inode at p.old_home) and `source` ("new").
struct Scene {
  explicit Scene(const Placement& p)
      : writer(fleet.add_client()),
        reader(fleet.add_client()),
        target(name_on(p.target_entry, "target")),
        source(name_on(p.source_entry, "source")) {
    FleetApi api(writer);
    const std::string first = name_on(p.old_home, "first");
    EXPECT_EQ(api.spit(first, "old"), 0);
    if (first != target) {
      EXPECT_EQ(api.rename(first, target), 0);
    }
    EXPECT_EQ(api.spit(source, "new"), 0);
  }
  DirectFleet fleet;
  Client& writer;
  Client& reader;
  std::string target;
  std::string source;
};

// The messages one rename of `p` sends (the reader is not involved).
int messages_of_a_rename(const Placement& p) {
  Scene scene(p);
  int sent = 0;
  scene.fleet.port(0).hook = [&](ServerIndex, const FsMessage&) { ++sent; };
  EXPECT_EQ(FleetApi(scene.writer).rename(scene.source, scene.target), 0);
  return sent;
}

TEST(RenameInterleaving, AReaderBetweenAnyTwoMessagesOfARenameSeesTheOldOrTheNewFile) {
  for (const Placement& p : every_placement()) {
    const int messages = messages_of_a_rename(p);
    // Both names at one server: ADD_MAP takes the old name too (and drops the replaced file's
    // link when it is that file's home); otherwise ADD_MAP, RM_MAP, and DESTROY at that home.
    const bool one_server = p.target_entry == p.source_entry;
    EXPECT_EQ(messages, (one_server ? 1 : 2) + (p.old_home != p.target_entry ? 1 : 0)) << describe(p);
    for (int before = 0; before < messages; ++before) {
      Scene scene(p);
      int sent = 0;
      std::string seen;
      int read = 1;
      scene.fleet.port(0).hook = [&](ServerIndex, const FsMessage&) {
        if (sent++ == before) read = FleetApi(scene.reader).slurp(scene.target, seen);
      };
      ASSERT_EQ(FleetApi(scene.writer).rename(scene.source, scene.target), 0) << describe(p);
      EXPECT_EQ(read, 0) << describe(p) << ", read before message " << before;
      EXPECT_TRUE(seen == "old" || seen == "new") << describe(p) << ", read before message " << before << ": " << seen;
      std::string after;
      EXPECT_EQ(FleetApi(scene.reader).slurp(scene.target, after), 0) << describe(p);
      EXPECT_EQ(after, "new") << describe(p);
      EXPECT_EQ(FleetApi(scene.reader).stat_size(scene.source), -ENOENT) << describe(p);
    }
  }
}

TEST(RenameInterleaving, ARenameBetweenTheTwoStepsOfAnOpenIsSeenAsTheNewFile) {
  // The reader's open finds the name at its server and is sent on to the inode's home; a rename
  // over the name removes that inode before the second step. The open looks again.
  for (const Placement& p : every_placement()) {
    if (p.old_home == p.target_entry) continue;  // one step: the name's server opens it itself
    Scene scene(p);
    bool renamed = false;
    scene.fleet.port(1).hook = [&](ServerIndex, const FsMessage& message) {
      const bool second_step = message.op == FsOp::open && (message.flags & kByInode) != 0;
      if (second_step && !renamed) {
        renamed = true;
        EXPECT_EQ(FleetApi(scene.writer).rename(scene.source, scene.target), 0) << describe(p);
      }
    };
    std::string seen;
    EXPECT_EQ(FleetApi(scene.reader).slurp(scene.target, seen), 0) << describe(p);
    EXPECT_TRUE(renamed) << describe(p);
    EXPECT_EQ(seen, "new") << describe(p);
  }
}

}  // namespace
}  // namespace flotilla::fs::testing
