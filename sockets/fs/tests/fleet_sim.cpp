#include "sockets/fs/tests/fleet_sim.hpp"

#include <gtest/gtest.h>

#include <algorithm>

namespace flotilla::fs::testing {

class FleetSim::SimTransport final : public Transport {
 public:
  SimTransport(FleetSim& sim, std::size_t index) : sim_(&sim), index_(index) {}
  ClientId client() const override { return sim_->client_id(index_); }
  std::uint16_t servers() const override { return sim_->options_.servers; }

  Result<FsMessage> call(ServerIndex server, const FsMessage& request) override {
    FsMessage message = request;
    auto done = call_each(std::span(&server, 1), std::span(&message, 1));
    if (!done) return done.error();
    return message;
  }

  Status call_each(std::span<const ServerIndex> servers, std::span<FsMessage> messages) override {
    ClientSlot& slot = *sim_->clients_[index_];
    if (sim_->aborting_) return Error{Errc::closed, 0, "simulation aborted"};
    slot.inbox.clear();  // replies nobody waits for any more (duplicates after a restart)
    slot.waiting.clear();
    for (std::size_t i = 0; i < messages.size(); ++i) {
      if (servers[i] >= sim_->options_.servers) return Error{Errc::invalid_argument, 0, "server"};
      slot.waiting.push_back(Waiting{servers[i], messages[i].request, messages[i]});
      sim_->send(index_, servers[i], messages[i]);
    }
    sim_->yield(index_);
    if (sim_->aborting_) return Error{Errc::closed, 0, "simulation aborted"};
    for (std::size_t i = 0; i < messages.size(); ++i) {
      auto reply = std::find_if(slot.inbox.begin(), slot.inbox.end(), [&](const FsMessage& m) {
        return m.request == slot.waiting[i].request;
      });
      messages[i] = *reply;
    }
    slot.waiting.clear();
    slot.inbox.clear();
    return {};
  }

  void drain(std::vector<FsMessage>& notices) override {
    ClientSlot& slot = *sim_->clients_[index_];
    notices.insert(notices.end(), slot.notices.begin(), slot.notices.end());
    slot.notices.clear();
  }

 private:
  FleetSim* sim_;
  std::size_t index_;
};

// Routes a server's output to the clients' inboxes, or keeps it (a crash may swallow it).
class FleetSim::Deliver final : public ServerOutputs {
 public:
  Deliver(FleetSim& sim, bool hold) : sim_(&sim), hold_(hold) {}
  void send(ClientId to, const FsMessage& message) override {
    if (hold_) {
      held_.emplace_back(to, message);
      return;
    }
    route(to, message);
  }
  void release() {
    for (const auto& [to, message] : held_) route(to, message);
    held_.clear();
  }

 private:
  void route(ClientId to, const FsMessage& message) {
    if (to == 0 || to > sim_->clients_.size()) return;
    ClientSlot& slot = *sim_->clients_[to - 1];
    // Through the real chunk encoding, as a ring would carry it.
    std::array<Message, kMaxFsChunks> chunks;
    const std::size_t count = encode_chunks(message, ++slot.sequence, chunks);
    FsAssembler assembler;
    std::optional<FsMessage> decoded;
    for (std::size_t i = 0; i < count; ++i) {
      auto pushed = assembler.push(chunks[i]);
      if (!pushed) {
        ADD_FAILURE() << "a server sent a message that does not decode";
        return;
      }
      if (pushed->has_value()) decoded = **pushed;
    }
    if (!decoded) return;
    if (decoded->op == FsOp::invalidate) {
      slot.notices.push_back(*decoded);
    } else {
      slot.inbox.push_back(*decoded);
    }
  }

  FleetSim* sim_;
  bool hold_;
  std::vector<std::pair<ClientId, FsMessage>> held_;
};

FleetSim::FleetSim(const SimOptions& options)
    : options_(options), random_(options.seed), blocks_(options.blocks * kBlockBytes) {
  cache_ = *BlockCache::attach(blocks_, options.servers);
  servers_.resize(options.servers);
  for (ServerIndex s = 0; s < options.servers; ++s) {
    servers_[s].state.assign(options.state_bytes / sizeof(std::uint64_t), 0);
    restart(s);
  }
  channels_.assign(options.clients, std::vector<std::deque<Message>>(options.servers));
  ClientOptions client_options;
  client_options.root_distributed = options.root_distributed;
  for (std::size_t c = 0; c < options.clients; ++c) {
    auto slot = std::make_unique<ClientSlot>();
    slot->transport = std::make_unique<SimTransport>(*this, c);
    slot->client = std::make_unique<Client>(*slot->transport, cache_, client_options);
    clients_.push_back(std::move(slot));
  }
}

FleetSim::~FleetSim() {
  for (auto& slot : clients_) {
    if (slot->thread.joinable()) slot->thread.join();
  }
}

std::span<std::byte> FleetSim::state_of(ServerIndex index) {
  return std::as_writable_bytes(std::span(servers_[index].state));
}

void FleetSim::crash(ServerIndex index) {
  if (servers_[index].server == nullptr) return;
  servers_[index].server.reset();
  servers_[index].down_since = steps_;
  for (auto& per_client : channels_) per_client[index].clear();
  ++crashes_;
}

void FleetSim::restart(ServerIndex index) {
  ServerConfig config;
  config.self = index;
  config.servers = options_.servers;
  config.root_distributed = options_.root_distributed;
  servers_[index].server.reset();
  auto server = FileServer::start(config, state_of(index), cache_);
  if (!server) {
    ADD_FAILURE() << "server " << index << " did not come back: " << server.error().message();
    aborting_ = true;
    return;
  }
  servers_[index].server = std::move(*server);
  replayed_ += servers_[index].server->stats().replayed;
  FsMessage notice;
  notice.op = FsOp::invalidate;
  notice.flags = kAll;
  notice.arg0 = index;
  for (std::size_t c = 0; c < clients_.size(); ++c) {
    ClientSlot& slot = *clients_[c];
    slot.notices.push_back(notice);
    channels_[c][index].clear();
    for (const Waiting& waiting : slot.waiting) {
      const bool answered = std::any_of(slot.inbox.begin(), slot.inbox.end(), [&](const FsMessage& m) {
        return m.request == waiting.request;
      });
      if (waiting.server == index && !answered) send(c, index, waiting.message);
    }
  }
}

std::uint64_t FleetSim::malformed() const {
  std::uint64_t total = 0;
  for (const ServerSlot& slot : servers_) {
    if (slot.server != nullptr) total += slot.server->stats().malformed;
  }
  return total;
}

void FleetSim::send(std::size_t client, ServerIndex server, const FsMessage& message) {
  std::array<Message, kMaxFsChunks> chunks;
  const std::size_t count = encode_chunks(message, ++clients_[client]->sequence, chunks);
  for (std::size_t i = 0; i < count; ++i) channels_[client][server].push_back(chunks[i]);
}

void FleetSim::inject(ServerIndex index, ClientId from, const Message& chunk) {
  Deliver out(*this, false);
  if (servers_[index].server != nullptr) servers_[index].server->receive(from, chunk, now_ns_, out);
}

bool FleetSim::ready(const ClientSlot& slot) const {
  // A client's calls may also come from another client's thread (a test driving two clients in
  // sequence), so a waiting slot counts whether or not it has a program of its own.
  if (slot.waiting.empty()) return slot.active && !slot.done && !slot.started;
  return std::all_of(slot.waiting.begin(), slot.waiting.end(), [&](const Waiting& waiting) {
    return std::any_of(slot.inbox.begin(), slot.inbox.end(),
                       [&](const FsMessage& m) { return m.request == waiting.request; });
  });
}

void FleetSim::resume(std::size_t client) {
  clients_[client]->go.release();
  baton_.acquire();
}

void FleetSim::yield(std::size_t client) {
  baton_.release();
  clients_[client]->go.acquire();
}

void FleetSim::deliver_one(std::size_t client, ServerIndex server, bool crash_after) {
  auto& channel = channels_[client][server];
  Deliver out(*this, crash_after);
  while (!channel.empty()) {
    const Message chunk = channel.front();
    channel.pop_front();
    servers_[server].server->receive(client_id(client), chunk, now_ns_, out);
    const FsChunk header = chunk.read<FsChunk>();
    if (header.index + 1 >= header.count) break;  // the message's last chunk
  }
  if (crash_after) {
    ++swallowed_;
    crash(server);  // it ran the request (and logged it) but its replies never left
  } else {
    out.release();
  }
}

bool FleetSim::run_one(std::size_t index, const Program& program) {
  std::vector<Program> programs(clients_.size());
  programs.at(index) = program;
  return run(programs);
}

bool FleetSim::run(const std::vector<Program>& programs) {
  for (std::size_t c = 0; c < clients_.size(); ++c) {
    ClientSlot& slot = *clients_[c];
    slot.active = c < programs.size() && programs[c] != nullptr;
    slot.done = !slot.active;
    slot.started = false;
    slot.waiting.clear();
    if (!slot.active) continue;
    slot.thread = std::thread([this, &slot, program = programs[c]] {
      slot.go.acquire();
      slot.started = true;
      if (!aborting_) program(*slot.client);
      slot.done = true;
      baton_.release();
    });
  }
  bool deadlocked = false;
  struct Event {
    int kind;  // 0 deliver, 1 resume, 2 restart
    std::size_t client;
    ServerIndex server;
  };
  std::vector<Event> events;
  while (true) {
    ++steps_;
    now_ns_ += 1000;
    events.clear();
    bool any_down = false;
    for (ServerIndex s = 0; s < options_.servers; ++s) {
      if (servers_[s].server == nullptr) {
        any_down = true;
        if (steps_ - servers_[s].down_since > 3 + random_() % 20) events.push_back({2, 0, s});
        continue;
      }
      for (std::size_t c = 0; c < clients_.size(); ++c) {
        if (!channels_[c][s].empty()) events.push_back({0, c, s});
      }
    }
    for (std::size_t c = 0; c < clients_.size(); ++c) {
      if (ready(*clients_[c])) events.push_back({1, c, 0});
    }
    if (!any_down && options_.crash_chance > 0 &&
        std::uniform_real_distribution<double>(0, 1)(random_) < options_.crash_chance) {
      crash(static_cast<ServerIndex>(random_() % options_.servers));
      continue;
    }
    if (events.empty()) {
      if (any_down) {
        for (ServerIndex s = 0; s < options_.servers; ++s) {
          if (servers_[s].server == nullptr) restart(s);
        }
        if (aborting_) break;
        continue;
      }
      const bool all_done = std::all_of(clients_.begin(), clients_.end(),
                                        [](const auto& slot) { return slot->done; });
      if (all_done) break;
      ADD_FAILURE() << "the fleet simulation deadlocked at step " << steps_;
      deadlocked = true;
      aborting_ = true;
      break;
    }
    const Event event = events[random_() % events.size()];
    if (event.kind == 0) {
      const bool crash_after = options_.crash_chance > 0 && !any_down &&
          std::uniform_real_distribution<double>(0, 1)(random_) < options_.crash_chance;
      deliver_one(event.client, event.server, crash_after);
    } else if (event.kind == 1) {
      resume(event.client);
    } else {
      restart(event.server);
      if (aborting_) break;
    }
  }
  // After an abort every waiting client gets an error and runs to its end.
  for (std::size_t c = 0; c < clients_.size(); ++c) {
    ClientSlot& slot = *clients_[c];
    while (slot.active && !slot.done) resume(c);
    if (slot.thread.joinable()) slot.thread.join();
    slot.active = false;
  }
  aborting_ = false;
  return !deadlocked;
}

}  // namespace flotilla::fs::testing
