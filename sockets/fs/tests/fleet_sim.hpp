// A deterministic in-process file fleet for tests: N FileServers over their own state regions and
// one shared block region, several Clients, FIFO channels carrying the real 64-byte chunk
// encoding, and a seeded scheduler.
//
// Each client program runs on its own thread, but only one thread runs at a time: the scheduler
// hands a baton to one client, which runs until it waits for a reply, then hands it back. So a
// run is a function of the seed alone. At each step the scheduler picks at random among:
// delivering the next request of some (client, server) channel, resuming a client whose replies
// arrived, and (when crashes are on) crashing a server, either between requests or after it ran
// one but before its replies left. A crashed server loses its in-flight input and everything it
// held back; it restarts over its surviving state region a few steps later, every client gets a
// restart notice, and clients waiting on it send their requests again.
//
// Replies and invalidations reach a client's inbox as soon as the server sends them, as with a
// ring: what a server sent before answering is there when the answer is.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <random>
#include <semaphore>
#include <thread>
#include <vector>

#include "components/fs/file_server.hpp"
#include "sockets/fs/fs_client.hpp"

namespace flotilla::fs::testing {

struct SimOptions {
  std::uint16_t servers = 3;
  std::uint16_t clients = 2;
  std::uint64_t seed = 1;
  std::size_t state_bytes = 1 << 20;
  std::size_t blocks = 2048;
  double crash_chance = 0.0;  // per scheduler step, while no server is down
  bool root_distributed = true;
};

class FleetSim {
 public:
  explicit FleetSim(const SimOptions& options);
  ~FleetSim();
  FleetSim(const FleetSim&) = delete;
  FleetSim& operator=(const FleetSim&) = delete;

  using Program = std::function<void(Client&)>;
  // Runs program i on client i (an empty function leaves that client idle) until all finish.
  // False (and a test failure) if the run deadlocked.
  bool run(const std::vector<Program>& programs);
  // Runs one program on client `index` alone.
  bool run_one(std::size_t index, const Program& program);

  Client& client(std::size_t index) { return *clients_.at(index)->client; }
  ClientId client_id(std::size_t index) const { return static_cast<ClientId>(index + 1); }
  FileServer& server(ServerIndex index) { return *servers_.at(index).server; }
  std::uint16_t servers() const { return options_.servers; }
  const BlockCache& cache() const { return cache_; }

  void crash(ServerIndex index);
  void restart(ServerIndex index);
  std::uint64_t crashes() const { return crashes_; }
  // Log records replayed by restarted servers, and crashes that swallowed a request's replies.
  std::uint64_t replayed() const { return replayed_; }
  std::uint64_t swallowed() const { return swallowed_; }
  std::uint64_t steps() const { return steps_; }
  std::uint64_t malformed() const;  // summed over the live servers

  // Hands server `index` raw chunks as if client `from` sent them.
  void inject(ServerIndex index, ClientId from, const Message& chunk);

 private:
  class SimTransport;
  struct Waiting {
    ServerIndex server;
    std::uint64_t request;
    FsMessage message;  // kept to send again after a restart
  };
  struct ClientSlot {
    std::unique_ptr<SimTransport> transport;
    std::unique_ptr<Client> client;
    std::binary_semaphore go{0};
    std::thread thread;
    bool active = false;  // has a program in this run
    bool done = true;
    bool started = false;  // its program's thread took the baton once
    std::vector<Waiting> waiting;
    std::deque<FsMessage> inbox;  // replies
    std::vector<FsMessage> notices;
    std::uint16_t sequence = 0;
  };
  struct ServerSlot {
    std::unique_ptr<FileServer> server;
    std::vector<std::uint64_t> state;  // survives crashes
    std::uint64_t down_since = 0;
  };
  class Deliver;

  void send(std::size_t client, ServerIndex server, const FsMessage& message);
  bool ready(const ClientSlot& slot) const;
  void resume(std::size_t client);
  void yield(std::size_t client);  // called on the client's thread
  void deliver_one(std::size_t client, ServerIndex server, bool crash_after);
  std::span<std::byte> state_of(ServerIndex index);

  SimOptions options_;
  std::mt19937_64 random_;
  std::vector<std::byte> blocks_;
  BlockCache cache_;
  std::vector<ServerSlot> servers_;
  std::vector<std::unique_ptr<ClientSlot>> clients_;
  // channels_[client][server]: chunks in flight.
  std::vector<std::vector<std::deque<Message>>> channels_;
  std::binary_semaphore baton_{0};
  bool aborting_ = false;
  std::uint64_t now_ns_ = 1'000'000'000;
  std::uint64_t steps_ = 0;
  std::uint64_t crashes_ = 0;
  std::uint64_t replayed_ = 0;
  std::uint64_t swallowed_ = 0;
};

}  // namespace flotilla::fs::testing
