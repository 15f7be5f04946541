// TcpSockets against the real TCP replicas (components/tcp/replica_server.hpp), in one process and
// plain memory: each replica shares a socket region with the application and exchanges messages
// with it through in-memory queues, as flotilla-tcp's main wires it to channels. In place of IP, a
// loopback hands every segment a replica sends to the stack's own address back to the replica that
// claimed its flow (or, for a flow nobody claimed, to one picked by its ports, as IP spreads SYNs),
// so a connection from the application to its own listener runs the whole protocol on both ends.
// Time is simulated: it moves only when a test waits. With `apps` above 1, several applications
// (processes, each a TcpSockets with a region of its own on every replica) share the replicas.
#pragma once

#include <array>
#include <map>
#include <memory>
#include <tuple>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "components/tcp/replica_server.hpp"
#include "dataplane/buffer_pool.hpp"
#include "dataplane/tests/test_memory.hpp"
#include "sockets/tcp_sockets.hpp"

namespace flotilla::sockets::testing {

constexpr std::uint32_t kStackAddress = 0x0a000001;  // 10.0.0.1, the replicas' own address

struct LoopbackSettings {
  std::size_t replicas = 2;
  std::size_t pages = 8;             // sockets in each replica's region
  std::size_t ring_bytes = 1u << 16;  // each way, per socket
  std::size_t apps = 1;              // applications (seats), each with its own TcpSockets
};

class ReplicaLoopback {
 public:
  explicit ReplicaLoopback(LoopbackSettings settings = {}) : settings_(settings) {
    auto pool = BufferPool::create(1, 2048, 4096);
    if (!pool) {
      ADD_FAILURE() << "buffer pool: " << pool.error().message();
      return;
    }
    pool_ = std::make_unique<BufferPool>(std::move(pool).value());
    for (std::size_t index = 0; index < settings_.replicas; ++index) {
      replicas_.push_back(std::make_unique<Replica>(*this, index));
    }
    for (std::size_t index = 0; index < settings_.replicas; ++index) start(index);
    for (std::size_t app = 0; app < settings_.apps; ++app) {
      sockets_.push_back(std::make_unique<TcpSockets>(std::make_unique<Links>(*this, app)));
    }
  }

  TcpSockets& sockets(std::size_t app = 0) { return *sockets_[app]; }
  // Application `app`'s lease ends (its process exited) and a new process takes the seat: every
  // replica lets go of what it had there, and the new process starts with a TcpSockets of its own.
  void restart_app(std::size_t app) {
    for (auto& replica : replicas_) {
      replica->to_replica[app].clear();
      replica->to_app[app].clear();
      replica->server->on_app_restarted(app, now_ns_);
    }
    sockets_[app] = std::make_unique<TcpSockets>(std::make_unique<Links>(*this, app));
  }
  tcp::ReplicaServer& server(std::size_t replica) { return *replicas_[replica]->server; }
  // The socket region `replica` shares with application `app`, as the application sees it.
  formats::TcpRegion region(std::size_t replica, std::size_t app) {
    return formats::TcpRegion::attach(replicas_[replica]->regions[app]->bytes());
  }
  std::uint64_t counter(std::size_t replica, std::string_view name) {
    return replicas_[replica]->counters.counter(name).read();
  }
  std::uint64_t now_ns() const { return now_ns_; }
  // A listener on `port` of every replica, once each has it; -1 (and a test failure) otherwise.
  int listen_on_every_replica(std::uint16_t port, std::size_t app = 0, const SocketOptions& options = {}) {
    TcpSockets& sockets = *sockets_[app];
    auto listener = sockets.listen(0, port, 16, options);
    EXPECT_TRUE(listener.ok());
    if (!listener) return -1;
    EXPECT_TRUE(run_until([&] { return sockets.listening(listener.value()) || sockets.error(listener.value()) != 0; }));
    return listener.value();
  }

  // Application `app` joins the listener `listener` of application `home`, as a process that
  // inherited it over fork does; -1 (and a test failure) unless every replica takes it. With
  // `active`, it accepts on it (activate).
  int join_listener(std::size_t app, std::size_t home, int listener, bool active = true) {
    const auto share = sockets_[home]->share(listener);
    EXPECT_TRUE(share.has_value());
    if (!share) return -1;
    TcpSockets& sockets = *sockets_[app];
    auto joined = sockets.join(*share);
    EXPECT_TRUE(joined.ok());
    if (!joined) return -1;
    if (active) sockets.activate(joined.value());
    EXPECT_TRUE(run_until([&] { return sockets.listening(joined.value()) || sockets.error(joined.value()) != 0; }));
    EXPECT_EQ(sockets.error(joined.value()), 0);
    return joined.value();
  }

  // Opens `count` connections from application `client_app` to `port`, one after the other, each
  // once established. With `takers`, the listeners (by application) that accept as connections
  // come; the rest leave theirs waiting. Returns how many each application accepted or has
  // waiting, by application, and the clients.
  struct Spread {
    std::vector<int> per_app;
    std::vector<int> clients;
  };
  Spread connect_many(std::size_t client_app, std::uint16_t port, int count,
                      const std::vector<std::pair<std::size_t, int>>& takers) {
    Spread spread{std::vector<int>(sockets_.size(), 0), {}};
    TcpSockets& client_side = *sockets_[client_app];
    const auto take = [&] {
      for (const auto& [app, listener] : takers) {
        while (auto accepted = sockets_[app]->accept(listener)) ++spread.per_app[app];
      }
    };
    for (int i = 0; i < count; ++i) {
      auto client = client_side.connect(kStackAddress, port);
      EXPECT_TRUE(client.ok());
      if (!client) return spread;
      spread.clients.push_back(client.value());
      EXPECT_TRUE(run_until([&] {
        take();
        return client_side.connected(client.value()) || client_side.error(client.value()) != 0;
      }));
    }
    // The announces of the last ones.
    (void)run_until([&] {
      take();
      return false;
    }, 10'000'000);
    return spread;
  }

  // A connection from application `client_app` to `listener` of application `server_app` on
  // `port` (by default the first application to its own): {client, server}, or {-1, -1}.
  std::pair<int, int> connect_to(int listener, std::uint16_t port, std::size_t server_app = 0,
                                 std::size_t client_app = 0) {
    TcpSockets& from = *sockets_[client_app];
    TcpSockets& to = *sockets_[server_app];
    auto client = from.connect(kStackAddress, port);
    EXPECT_TRUE(client.ok());
    if (!client) return {-1, -1};
    int server = -1;
    const bool done = run_until([&] {
      if (server < 0) {
        if (auto accepted = to.accept(listener); accepted) server = accepted.value();
      }
      return server >= 0 && from.connected(client.value());
    });
    EXPECT_TRUE(done) << "client error " << from.error(client.value());
    return {client.value(), server};
  }

  // `replica` dies and its next incarnation starts over the same state store and region, as the
  // supervisor restarts a crashed flotilla-tcp: messages and segments already sent stay on their
  // way, what waited in its private outboxes is lost.
  void crash(std::size_t replica) {
    replicas_[replica]->server.reset();
    ++replicas_[replica]->incarnation;
    start(replica);
  }
  // The supervisor's word that every process holding fork `fork` is gone, to every replica.
  void fork_ended(std::uint64_t fork) {
    for (auto& replica : replicas_) {
      replica->server->on_control(Message::make(stack::kTcpForkEndedKind, stack::TcpForkEndedBody{fork}), now_ns_);
    }
  }
  // Whether application `app`'s channels take messages (false: as full rings, its library keeps
  // them in its outbox).
  void set_room(std::size_t app, bool room) { full_[app] = !room; }
  // A message to `replica` as if the application had sent it, whatever it says.
  void send_raw(std::size_t replica, const Message& message, std::size_t app = 0) {
    replicas_[replica]->to_replica[app].push_back(message);
  }

  // Moves messages and segments between the application and the replicas until nothing moves.
  void pump() {
    for (int round = 0; round < kMaxRounds; ++round) {
      bool moved = false;
      for (auto& sockets : sockets_) moved |= sockets->flush();
      for (auto& replica : replicas_) {
        for (std::size_t app = 0; app < sockets_.size(); ++app) {
          for (const Message& message : std::exchange(replica->to_replica[app], {})) {
            replica->server->on_app_message(app, message, now_ns_);
            moved = true;
          }
        }
      }
      for (const auto& [from, packet] : std::exchange(wire_, {})) {
        deliver(from, packet);
        moved = true;
      }
      for (std::size_t index = 0; index < replicas_.size(); ++index) {
        for (std::size_t app = 0; app < sockets_.size(); ++app) {
          auto messages = std::exchange(replicas_[index]->to_app[app], {});
          if (messages.empty()) continue;
          sockets_[app]->handle_messages(index, messages);
          moved = true;
        }
      }
      for (auto& replica : replicas_) moved |= replica->server->poll(now_ns_);
      if (!moved) return;
    }
    ADD_FAILURE() << "the replicas were still busy after " << kMaxRounds << " rounds";
  }

  // Pumps, moving the clock on by a millisecond at a time, until `done` holds or `limit` of
  // simulated time has passed. `done` may do the application's work (send, recv) as well.
  template <class Done>
  bool run_until(Done&& done, std::uint64_t limit_ns = 30'000'000'000) {
    const std::uint64_t until = now_ns_ + limit_ns;
    for (;;) {
      pump();
      if (done()) return true;
      if (now_ns_ >= until) return false;
      now_ns_ += 1'000'000;
    }
  }

 private:
  static constexpr int kMaxRounds = 100'000;
  static constexpr ComponentId kFirstReplicaId = 11;

  struct Replica;

  // The replica's outputs: segments to the loopback, flow claims to its table, answers to the
  // application's queue.
  class Outputs final : public tcp::ReplicaOutputs {
   public:
    Outputs(ReplicaLoopback& net, std::size_t index) : net_(net), index_(index) {}
    bool segment_to_ip(const stack::TransportPacketBody& packet) override {
      net_.wire_.emplace_back(index_, packet);
      return true;
    }
    bool control_to_ip(const Message& message) override {
      if (message.kind == stack::kFlowBindingKind) net_.bind(index_, message.read<stack::FlowBindingBody>());
      return true;
    }
    bool to_app(std::size_t app, const Message& message) override {
      if (app >= net_.settings_.apps) return false;
      net_.replicas_[index_]->to_app[app].push_back(message);
      return true;
    }

   private:
    ReplicaLoopback& net_;
    std::size_t index_;
  };

  struct Replica {
    Replica(ReplicaLoopback& net, std::size_t index)
        : id(static_cast<ComponentId>(kFirstReplicaId + index)),
          state(state_bytes(net.settings_)),
          outputs(net, index),
          to_replica(net.settings_.apps),
          to_app(net.settings_.apps) {
      for (std::size_t app = 0; app < net.settings_.apps; ++app) {
        regions.push_back(std::make_unique<flotilla::testing::PageMemory>(
            formats::TcpRegion::bytes_for(net.settings_.pages, net.settings_.ring_bytes)));
      }
    }
    static std::size_t state_bytes(const LoopbackSettings& settings) {
      tcp::ReplicaSettings replica;
      replica.engine.max_connections = kMaxConnections;
      const std::vector<std::uint32_t> pages(settings.apps, static_cast<std::uint32_t>(settings.pages));
      return tcp::ReplicaServer::state_bytes(replica, pages);
    }
    ComponentId id;
    std::uint64_t incarnation = 1;
    flotilla::testing::PageMemory state;   // the engine's connection and slot tables (the state store)
    // The socket region shared with each application.
    std::vector<std::unique_ptr<flotilla::testing::PageMemory>> regions;
    NamedCounterTable counters;
    Outputs outputs;
    std::unique_ptr<tcp::ReplicaServer> server;
    std::vector<std::vector<Message>> to_replica;  // by application: its messages, not yet taken
    std::vector<std::vector<Message>> to_app;      // by application: the replica's messages, not yet delivered
  };

  // The application's side: its channel to each replica and the region it shares with it.
  class Links final : public TcpReplicaLinks {
   public:
    Links(ReplicaLoopback& net, std::size_t app) : net_(net), app_(app) {}
    std::size_t replica_count() const override { return net_.replicas_.size(); }
    Result<std::size_t> send(std::size_t replica, std::span<const Message> messages) override {
      if (net_.full_[app_]) return std::size_t{0};
      auto& queue = net_.replicas_[replica]->to_replica[app_];
      queue.insert(queue.end(), messages.begin(), messages.end());
      return messages.size();
    }
    std::span<std::byte> region(std::size_t replica) override {
      return net_.replicas_[replica]->regions[app_]->bytes();
    }
    std::uint64_t incarnation(std::size_t replica) const override { return net_.replicas_[replica]->incarnation; }

   private:
    ReplicaLoopback& net_;
    std::size_t app_;
  };

  static constexpr std::size_t kMaxConnections = 64;

  void start(std::size_t index) {
    Replica& replica = *replicas_[index];
    tcp::ReplicaSettings settings;
    settings.index = static_cast<std::uint16_t>(index);
    settings.count = static_cast<std::uint16_t>(replicas_.size());
    settings.address = kStackAddress;
    settings.ring_bytes = settings_.ring_bytes;
    settings.engine.max_connections = kMaxConnections;
    std::vector<std::span<std::byte>> apps;
    for (const auto& region : replica.regions) apps.push_back(region->bytes());
    auto created = tcp::ReplicaServer::create(*pool_, replica.id, replica.state.bytes(), apps, settings,
                                              replica.outputs, replica.counters, replica.incarnation, now_ns_);
    if (!created) {
      ADD_FAILURE() << "replica " << index << ": " << created.error().message();
      return;
    }
    replica.server = std::move(created).value();
  }

  using FlowKey = std::tuple<std::uint32_t, std::uint16_t, std::uint32_t, std::uint16_t>;

  void bind(std::size_t replica, const stack::FlowBindingBody& binding) {
    const FlowKey key{binding.local_address, binding.local_port, binding.remote_address, binding.remote_port};
    if (binding.change == stack::BindingChange::claim) {
      flows_[key] = replica;
    } else if (auto found = flows_.find(key); found != flows_.end() && found->second == replica) {
      flows_.erase(found);
    }
  }

  // IP's delivery to its own address: the segment, seen from the receiving end.
  void deliver(std::size_t from, const stack::TransportPacketBody& sent) {
    const ComponentId sender = replicas_[from]->id;
    if (sent.remote_address != kStackAddress) {
      (void)pool_->free(sender, sent.segment);  // nowhere to go: the loopback has no other host
      return;
    }
    stack::TransportPacketBody arriving = sent;
    arriving.local_address = sent.remote_address;
    arriving.local_port = sent.remote_port;
    arriving.remote_address = sent.local_address;
    arriving.remote_port = sent.local_port;
    const FlowKey key{arriving.local_address, arriving.local_port, arriving.remote_address, arriving.remote_port};
    const auto claimed = flows_.find(key);
    const std::size_t to = claimed != flows_.end()
                               ? claimed->second
                               : (std::size_t{arriving.local_port} + arriving.remote_port) % replicas_.size();
    if (!pool_->hand_off(sent.segment, sender, replicas_[to]->id)) {
      ADD_FAILURE() << "a segment's buffer could not be handed from replica " << from << " to " << to;
      return;
    }
    replicas_[to]->server->on_segment(arriving, now_ns_);
  }

  LoopbackSettings settings_;
  std::unique_ptr<BufferPool> pool_;
  std::vector<std::unique_ptr<Replica>> replicas_;
  std::vector<std::unique_ptr<TcpSockets>> sockets_;  // by application
  std::map<std::size_t, bool> full_;                  // by application: set_room(app, false)
  std::vector<std::pair<std::size_t, stack::TransportPacketBody>> wire_;  // segments IP has yet to deliver
  std::map<FlowKey, std::size_t> flows_;                                   // flow -> the replica that claimed it
  std::uint64_t now_ns_ = 1'000'000'000;
};

}  // namespace flotilla::sockets::testing
