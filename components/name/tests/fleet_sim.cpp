#include "components/name/tests/fleet_sim.hpp"

#include "components/name/name_client.hpp"

namespace flotilla::name::testing {

constexpr ComponentId kSimClient = 1000;

FleetSim::FleetSim(const SimOptions& options) : options_(options), random_(options.seed) {
  std::vector<MemberId> members;
  for (std::size_t i = 1; i <= options.servers; ++i) members.push_back(static_cast<MemberId>(i));
  for (MemberId id : members) {
    servers_.emplace(id, std::make_unique<NameServer>(config_for(id), members));
  }
}

ServerConfig FleetSim::config_for(MemberId id) const {
  ServerConfig config = options_.base;
  config.self = id;
  config.seed = options_.seed + id;
  return config;
}

std::vector<MemberId> FleetSim::live() const {
  std::vector<MemberId> ids;
  for (const auto& [id, server] : servers_) {
    if (alive(id)) ids.push_back(id);
  }
  return ids;
}

std::uint64_t FleetSim::submit(MemberId via, const Change& change) {
  const std::uint64_t cookie = next_cookie_++;
  enqueue(kClientSource, via, NameClient::change_request(kSimClient, cookie, change));
  return cookie;
}

std::uint64_t FleetSim::lookup(MemberId via, std::string_view name) {
  const std::uint64_t cookie = next_cookie_++;
  enqueue(kClientSource, via, NameClient::lookup_request(kSimClient, cookie, name));
  return cookie;
}

const NameMessage* FleetSim::reply(std::uint64_t cookie) const {
  auto it = replies_.find(cookie);
  return it == replies_.end() ? nullptr : &it->second;
}

void FleetSim::inject(MemberId to, const NameMessage& message) {
  std::vector<Envelope> out;
  servers_.at(to)->handle(message, out);
  route(to, out);
}

void FleetSim::enqueue(MemberId from, MemberId to, const NameMessage& message) {
  std::deque<InFlight>& queue = channels_[{from, to}];
  std::uint64_t at = now_;
  if (options_.max_delay_ms > 0) at += random_() % (options_.max_delay_ms + 1);
  if (!queue.empty()) at = std::max(at, queue.back().deliver_at);  // FIFO, like a ring
  queue.push_back(InFlight{message, at});
}

void FleetSim::route(MemberId from, std::vector<Envelope>& out) {
  for (const Envelope& envelope : out) {
    if (envelope.to_client) {
      replies_[envelope.message.cookie] = envelope.message;
    } else {
      enqueue(from, static_cast<MemberId>(envelope.to), envelope.message);
    }
  }
  out.clear();
}

void FleetSim::deliver(const Channel& channel, const NameMessage& message) {
  // Through the real wire encoding: chunks in, one message out.
  std::array<Message, kMaxChunks> chunks;
  const std::size_t count = encode_chunks(message, ++sequence_, chunks);
  ChunkAssembler& assembler = assemblers_[channel];
  std::optional<NameMessage> decoded;
  for (std::size_t i = 0; i < count; ++i) decoded = assembler.push(chunks[i]);
  if (!decoded) return;
  std::vector<Envelope> out;
  servers_.at(channel.second)->handle(*decoded, out);
  route(channel.second, out);
}

bool FleetSim::idle() const {
  for (const auto& [channel, queue] : channels_) {
    if (!queue.empty()) return false;
  }
  for (const auto& [id, server] : servers_) {
    if (!alive(id)) continue;
    if (server->pending_changes() || server->prepared_count() || server->locks_held()) return false;
  }
  return true;
}

bool FleetSim::step() {
  std::vector<Channel> ready;
  for (auto& [channel, queue] : channels_) {
    if (queue.empty()) continue;
    if (!alive(channel.second) || (channel.first != kClientSource && !alive(channel.first))) {
      queue.clear();  // a dead end: nothing goes in or out any more
      continue;
    }
    if (queue.front().deliver_at <= now_) ready.push_back(channel);
  }
  // Mostly deliver; now and then let time pass even with messages ready, so timers interleave.
  if (!ready.empty() && random_() % 64 != 0) {
    const Channel channel = ready[random_() % ready.size()];
    const NameMessage message = channels_[channel].front().message;
    channels_[channel].pop_front();
    deliver(channel, message);
    return true;
  }
  if (ready.empty() && idle()) return false;
  ++now_;
  std::vector<Envelope> out;
  for (MemberId id : live()) {
    servers_.at(id)->tick(now_, out);
    route(id, out);
  }
  return true;
}

std::uint64_t FleetSim::run_until_idle(std::uint64_t max_steps) {
  std::uint64_t steps = 0;
  while (steps < max_steps && step()) ++steps;
  return steps;
}

void FleetSim::kill(MemberId id) { dead_[id] = true; }

void FleetSim::force_out_everywhere(MemberId dead) {
  std::vector<Envelope> out;
  for (MemberId id : live()) {
    servers_.at(id)->force_out(dead, out);
    route(id, out);
  }
}

MemberId FleetSim::join(MemberId donor) {
  const MemberId id = static_cast<MemberId>(servers_.rbegin()->first + 1);
  const std::vector<MemberId> before = live();
  servers_.emplace(id, std::make_unique<NameServer>(config_for(id)));
  std::vector<Envelope> out;
  for (MemberId member : before) {
    servers_.at(member)->add_member(id, out);
    route(member, out);
  }
  servers_.at(id)->install(servers_.at(donor)->snapshot(), out);
  route(id, out);
  return id;
}

bool FleetSim::replicas_identical() const {
  const NameServer* first = nullptr;
  for (const auto& [id, server] : servers_) {
    if (!alive(id)) continue;
    if (!first) {
      first = server.get();
    } else if (!first->table().same_entries(server->table()) ||
               first->table().digest() != server->table().digest()) {
      return false;
    }
  }
  return true;
}

}  // namespace flotilla::name::testing
