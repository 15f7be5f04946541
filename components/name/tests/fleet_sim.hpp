// A deterministic, seeded simulator of a name fleet in one process. Each (sender, receiver) pair
// is a FIFO channel, like a Flotilla ring; the simulator picks which channel delivers next at
// random, optionally delays messages, and carries every message through the real 64-byte chunk
// encoding. A killed server neither receives nor sends anything again.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <vector>

#include "components/name/arbitrated_commit.hpp"

namespace flotilla::name::testing {

struct SimOptions {
  std::size_t servers = 3;
  std::uint64_t seed = 1;
  std::uint64_t max_delay_ms = 0;  // each message waits 0..max_delay_ms of simulated time
  ServerConfig base;               // self and seed are set per server
};

class FleetSim {
 public:
  explicit FleetSim(const SimOptions& options);

  NameServer& server(MemberId id) { return *servers_.at(id); }
  std::vector<MemberId> live() const;
  std::uint64_t now() const { return now_; }

  // Client traffic; the returned cookie finds the reply.
  std::uint64_t submit(MemberId via, const Change& change);
  std::uint64_t lookup(MemberId via, std::string_view name);
  const NameMessage* reply(std::uint64_t cookie) const;
  // Hands `to` a message directly, whoever `message.from` claims to be.
  void inject(MemberId to, const NameMessage& message);

  // Delivers one message, or advances the clock one millisecond and ticks every live server.
  // False when nothing is in flight and no live server has work left.
  bool step();
  // Steps until idle or `max_steps`; returns the steps taken.
  std::uint64_t run_until_idle(std::uint64_t max_steps);

  void kill(MemberId id);
  void force_out_everywhere(MemberId dead);
  // A new member joins: live members add it, `donor` hands it a snapshot. Returns its id.
  MemberId join(MemberId donor);

  // All live replicas hold the same entries with the same versions.
  bool replicas_identical() const;

 private:
  using Channel = std::pair<MemberId, MemberId>;  // (from, to)
  struct InFlight {
    NameMessage message;
    std::uint64_t deliver_at;
  };

  void route(MemberId from, std::vector<Envelope>& out);
  void enqueue(MemberId from, MemberId to, const NameMessage& message);
  void deliver(const Channel& channel, const NameMessage& message);
  bool idle() const;
  bool alive(MemberId id) const { return servers_.contains(id) && !dead_.contains(id); }
  ServerConfig config_for(MemberId id) const;

  SimOptions options_;
  std::mt19937_64 random_;
  std::uint64_t now_ = 0;
  std::uint64_t next_cookie_ = 1;
  std::uint16_t sequence_ = 0;
  std::map<MemberId, std::unique_ptr<NameServer>> servers_;
  std::map<MemberId, bool> dead_;
  std::map<Channel, std::deque<InFlight>> channels_;
  std::map<Channel, ChunkAssembler> assemblers_;
  std::map<std::uint64_t, NameMessage> replies_;
};

}  // namespace flotilla::name::testing
