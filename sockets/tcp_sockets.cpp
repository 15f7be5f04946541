#include "sockets/tcp_sockets.hpp"

#include <algorithm>
#include <cerrno>

#include "components/name/channel_transport.hpp"
#include "components/name/name_client.hpp"
#include "sockets/program_nonce.hpp"

namespace flotilla::sockets {
namespace {

using stack::TcpOption;

// The replica's errno values are untrusted too: anything outside errno's range reads as EPROTO.
int checked_errno(std::int32_t value) { return value > 0 && value < 4096 ? value : EPROTO; }

// Keeps the latest value of each option (so the list stays as short as the options are few).
void remember_option(std::vector<std::pair<TcpOption, std::uint32_t>>& options, TcpOption option,
                     std::uint32_t value) {
  for (auto& [kept, kept_value] : options) {
    if (kept == option) {
      kept_value = value;
      return;
    }
  }
  options.emplace_back(option, value);
}

bool known_option(TcpOption option) {
  const auto value = static_cast<std::uint16_t>(option);
  return value >= static_cast<std::uint16_t>(TcpOption::nodelay) &&
         value <= static_cast<std::uint16_t>(TcpOption::cork);
}

// The options a connection starts with, as the open message carries them.
std::uint8_t open_options(const SocketOptions& options) {
  return static_cast<std::uint8_t>((options.no_delay ? stack::kTcpOpenNoDelay : 0) |
                                   (options.newreno ? stack::kTcpOpenNewReno : 0) |
                                   (options.keepalive ? stack::kTcpOpenKeepalive : 0) |
                                   (options.reuse_port ? stack::kTcpOpenReusePort : 0));
}

TcpSocketStatus status_of(const TcpSocketPageHeader& header) {
  return header.control.status.load(std::memory_order_acquire);
}

// The channels and regions of a component's host.
class HostLinks final : public TcpReplicaLinks {
 public:
  HostLinks(ComponentHost& host, std::vector<ChannelEnd*> channels, std::vector<std::string> regions)
      : host_(host), channels_(std::move(channels)), regions_(std::move(regions)) {}
  std::size_t replica_count() const override { return channels_.size(); }
  Result<std::size_t> send(std::size_t replica, std::span<const Message> messages) override {
    return host_.send(*channels_[replica], messages);
  }
  std::span<std::byte> region(std::size_t replica) override { return host_.region(regions_[replica]); }
  std::uint64_t incarnation(std::size_t replica) const override { return channels_[replica]->in.producer_incarnation(); }

 private:
  ComponentHost& host_;
  std::vector<ChannelEnd*> channels_;
  std::vector<std::string> regions_;
};

// A channel of the host to a name server, and a loop timer for the lookups' deadlines.
class HostNameLink final : public TcpNameLink {
 public:
  HostNameLink(ComponentHost& host, ChannelEnd& channel)
      : host_(host), channel_(name::NameChannel::wrap(channel)), timer_([this](Timer&) {
          if (sockets_ != nullptr) sockets_->expire_lookups();
        }) {}
  void bind(TcpSockets* sockets) { sockets_ = sockets; }
  Result<bool> send(const name::NameMessage& message) override {
    auto sent = channel_.send(message);
    if (!sent) return sent.error();
    return sent.value() == name::SendOutcome::sent;
  }
  std::uint64_t now_ms() override { return host_.loop().now_ms(); }
  void wake_at(std::uint64_t when_ms) override {
    if (!timer_.armed() || timer_.expires_ms() > when_ms) host_.loop().timers().arm(timer_, when_ms);
  }
  // One chunk from the server; a message it completes (and that is well formed) goes on.
  std::optional<name::NameMessage> feed(const Message& chunk) { return channel_.feed(chunk); }

 private:
  ComponentHost& host_;
  name::NameChannel channel_;
  Timer timer_;
  TcpSockets* sockets_ = nullptr;
};

}  // namespace

Result<std::unique_ptr<TcpSockets>> TcpSockets::attach(ComponentHost& host,
                                                       std::span<const std::string> channel_names,
                                                       std::string_view name_channel) {
  if (channel_names.empty()) return Error{Errc::invalid_argument, 0, "tcp sockets: no channel to a replica"};
  std::vector<ChannelEnd*> channels;
  std::vector<std::string> regions;
  std::vector<ComponentId> peers;
  for (const std::string& name : channel_names) {
    ChannelEnd* channel = host.channel(name);
    if (channel == nullptr) return Error{Errc::invalid_argument, 0, "tcp sockets: no such channel"};
    if (host.region(tcp_region_name(name)).empty()) {
      return Error{Errc::invalid_argument, 0, "tcp sockets: the channel has no socket region (<channel>-tcp)"};
    }
    channels.push_back(channel);
    regions.push_back(tcp_region_name(name));
    peers.push_back(host.peer_of(name));
  }
  ChannelEnd* name_end = nullptr;
  if (!name_channel.empty()) {
    name_end = host.channel(name_channel);
    if (name_end == nullptr) return Error{Errc::invalid_argument, 0, "tcp sockets: no such name channel"};
  }
  std::vector<ChannelEnd*> inputs = channels;
  auto sockets = std::make_unique<TcpSockets>(std::make_unique<HostLinks>(host, std::move(channels), std::move(regions)));
  TcpSockets* self = sockets.get();
  if (name_end != nullptr) {
    auto link = std::make_unique<HostNameLink>(host, *name_end);
    HostNameLink* name_link = link.get();
    name_link->bind(self);
    if (auto used = self->use_name_fleet(std::move(link), TcpNamePeers{host.id(), host.peer_of(name_channel), peers});
        !used) {
      return used.error();
    }
    // The link lives as long as the sockets, which own it.
    auto added = host.loop().add_input(name_end->in, [self, name_link, &host](std::span<const Message> chunks) {
      for (const Message& chunk : chunks) {
        if (auto reply = name_link->feed(chunk)) self->handle_name_reply(*reply);
      }
      host.served();
    });
    if (!added) return added.error();
  }
  for (std::size_t replica = 0; replica < inputs.size(); ++replica) {
    auto added = host.loop().add_input(inputs[replica]->in, [self, replica, &host](std::span<const Message> m) {
      self->handle_messages(replica, m);
      host.served();
    });
    if (!added) return added.error();
  }
  if (auto added = host.loop().add_poller([self] { return self->flush(); }); !added) return added.error();
  host.on_peer_restarted([self, peers](ComponentId peer, std::uint64_t incarnation) {
    for (std::size_t replica = 0; replica < peers.size(); ++replica) {
      if (peers[replica] == peer) self->replica_restarted(replica, incarnation);
    }
  });
  return sockets;
}

TcpSockets::TcpSockets(std::unique_ptr<TcpReplicaLinks> links)
    : links_(std::move(links)), replicas_(links_->replica_count()), nonce_(program_nonce()) {
  for (std::size_t replica = 0; replica < replicas_.size(); ++replica) {
    replicas_[replica].incarnation = links_->incarnation(replica);
    (void)ensure_region(replica);
  }
}

TcpSockets::~TcpSockets() = default;

// ---- bookkeeping ------------------------------------------------------------------------------

TcpSockets::Socket* TcpSockets::find(int socket, Kind kind) {
  if (socket < 0 || static_cast<std::size_t>(socket) >= sockets_.size()) return nullptr;
  Socket& entry = sockets_[static_cast<std::size_t>(socket)];
  // A connection still waiting in a listener's queue is not the application's yet.
  if (entry.kind != kind || entry.listener >= 0) return nullptr;
  return &entry;
}

const TcpSockets::Socket* TcpSockets::find(int socket, Kind kind) const {
  return const_cast<TcpSockets*>(this)->find(socket, kind);
}

int TcpSockets::allocate() {
  int id;
  if (!free_ids_.empty()) {
    id = free_ids_.back();
    free_ids_.pop_back();
  } else {
    if (sockets_.size() >= kMaxSockets) return -1;
    id = static_cast<int>(sockets_.size());
    sockets_.emplace_back();
  }
  ++open_count_;
  return id;
}

void TcpSockets::release(int socket) {
  Socket& entry = sockets_[static_cast<std::size_t>(socket)];
  // The serial outlives the socket, so an answer to an open of an earlier user of this id is
  // recognised as stale.
  const std::uint16_t serial = entry.serial;
  entry = Socket{};
  entry.serial = serial;
  free_ids_.push_back(socket);
  --open_count_;
}

std::uint32_t TcpSockets::next_ticket(int socket) {
  Socket& entry = sockets_[static_cast<std::size_t>(socket)];
  ++entry.serial;
  if (entry.serial == 0) entry.serial = 1;  // a ticket is never 0: 0 means "answered"
  return static_cast<std::uint32_t>(entry.serial) << 16 | static_cast<std::uint32_t>(socket);
}

Status TcpSockets::pin_replica(std::size_t replica) {
  if (replica >= replicas_.size()) return Error{Errc::invalid_argument, 0, "tcp: no such replica to pin to"};
  pinned_replica_ = replica;
  return {};
}

std::size_t TcpSockets::pick_replica() {
  if (replicas_.empty()) return 0;
  if (pinned_replica_) return *pinned_replica_;
  const std::size_t replica = next_replica_ % replicas_.size();
  next_replica_ = replica + 1;
  return replica;
}

std::optional<std::size_t> TcpSockets::replica_of(int socket) const {
  const Socket* entry = find(socket, Kind::connection);
  if (entry == nullptr || entry->placing) return std::nullopt;
  return entry->replica;
}

std::size_t TcpSockets::deferred_messages() const {
  std::size_t count = 0;
  for (const Replica& replica : replicas_) count += replica.outbox.size();
  return count;
}

// ---- sending ----------------------------------------------------------------------------------

bool TcpSockets::send_or_defer(std::size_t replica, const Message& message) {
  Replica& link = replicas_[replica];
  if (link.outbox.empty()) {
    auto sent = links_->send(replica, std::span(&message, 1));
    if (sent && sent.value() == 1) return true;
  }
  if (link.outbox.push(message)) return true;
  ++outbox_overflows_;
  return false;
}

bool TcpSockets::flush() {
  bool sent_any = false;
  for (std::size_t replica = 0; replica < replicas_.size(); ++replica) {
    Replica& link = replicas_[replica];
    const std::size_t sent = link.outbox.drain([&](std::span<const Message> run) -> std::size_t {
      auto count = links_->send(replica, run);
      return count ? count.value() : 0;
    });
    sent_any |= sent > 0;
    // Options first: a write's kick owed after them then finds them applied.
    if (link.options_owed && !link.outbox.full()) sent_any |= send_owed_options(replica);
    if (link.kicks_owed && !link.outbox.full()) sent_any |= kick_owed_pages(replica);
  }
  return sent_any;
}

bool TcpSockets::send_owed_options(std::size_t replica) {
  Replica& link = replicas_[replica];
  link.options_owed = false;
  bool sent = false;
  for (Socket& entry : sockets_) {
    if (!entry.options_owed || entry.kind != Kind::connection || entry.replica != replica) continue;
    if (entry.header == nullptr || entry.local_error != 0) {
      entry.options_owed = false;  // the page is gone: nobody to tell
      continue;
    }
    // All of them again if only some found room: each is the latest value, so a repeat is harmless.
    if (!send_options(replica, entry.page, entry.generation, entry.options)) {
      link.options_owed = true;
      break;
    }
    entry.options_owed = false;
    sent = true;
  }
  return sent;
}

void TcpSockets::send_or_owe_options(int socket) {
  Socket& entry = sockets_[static_cast<std::size_t>(socket)];
  if (!send_options(entry.replica, entry.page, entry.generation, entry.options)) owe_options(entry);
}

void TcpSockets::owe_options(Socket& entry) {
  entry.options_owed = true;
  replicas_[entry.replica].options_owed = true;
}

bool TcpSockets::kick_owed_pages(std::size_t replica) {
  Replica& link = replicas_[replica];
  link.kicks_owed = false;
  bool kicked = false;
  // Only pages we hold can have requests; looking at the others would fault their memory in.
  for (std::uint32_t page = 0; page < link.page_owner.size(); ++page) {
    TcpSocketControl& control = link.region.page(page)->control;
    if (control.requests.load(std::memory_order_acquire) == 0) continue;
    if (control.kick_pending.exchange(1, std::memory_order_acq_rel) != 0) continue;
    const std::uint32_t generation = control.generation.load(std::memory_order_acquire);
    if (!send_or_defer(replica, Message::make(stack::kTcpKickKind, stack::TcpPageBody{page, generation}))) {
      control.kick_pending.store(0, std::memory_order_release);
      link.kicks_owed = true;
      break;
    }
    kicked = true;
  }
  return kicked;
}

void TcpSockets::request(std::size_t replica, std::uint32_t page, std::uint32_t generation, std::uint32_t bits) {
  TcpSocketPageHeader* header = replicas_[replica].region.page(page);
  if (header == nullptr) return;
  header->control.requests.fetch_or(bits, std::memory_order_release);
  // The replica clears kick_pending before it reads `requests`, so bits set after a kick it has not
  // taken yet ride along with that kick: one message per batch, not per call.
  if (header->control.kick_pending.exchange(1, std::memory_order_acq_rel) == 0 &&
      !send_or_defer(replica, Message::make(stack::kTcpKickKind, stack::TcpPageBody{page, generation}))) {
    // No kick is on its way, so the replica still takes none: flush() sends it once there is room.
    header->control.kick_pending.store(0, std::memory_order_release);
    replicas_[replica].kicks_owed = true;
  }
}

bool TcpSockets::send_options(std::size_t replica, std::uint32_t page, std::uint32_t generation,
                              std::span<const std::pair<TcpOption, std::uint32_t>> options) {
  for (const auto& [option, value] : options) {
    if (!send_or_defer(replica, Message::make(stack::kTcpOptionKind,
                                              stack::TcpOptionBody{page, generation, option, 0, value}))) {
      return false;
    }
  }
  return true;
}

bool TcpSockets::send_listen(int listener, std::size_t replica) {
  Socket& entry = sockets_[static_cast<std::size_t>(listener)];
  const std::uint32_t ticket = next_ticket(listener);
  ListenerPart& part = entry.parts[replica];
  part = ListenerPart{};
  part.ticket = ticket;
  if (!entry.home.empty()) {
    stack::TcpJoinBody join{};
    join.socket = ticket;
    join.options = entry.open_options;
    join.backlog = entry.backlog;
    join.local_address = entry.endpoints.local_address;
    join.local_port = entry.endpoints.local_port;
    join.home_page = entry.home[replica].first;
    join.home_generation = entry.home[replica].second;
    join.nonce = nonce_;
    if (send_or_defer(replica, Message::make(stack::kTcpJoinKind, join))) return true;
    part.ticket = 0;
    return false;
  }
  stack::TcpOpenBody body{};
  body.socket = ticket;
  body.operation = stack::TcpOpenOperation::listen;
  body.backlog = entry.backlog;
  body.local_address = entry.endpoints.local_address;
  body.local_port = entry.endpoints.local_port;
  body.options = entry.open_options;
  body.nonce = nonce_;
  if (send_or_defer(replica, Message::make(stack::kTcpOpenKind, body))) return true;
  part.ticket = 0;
  return false;
}

bool TcpSockets::send_activate(std::size_t replica, const ListenerPart& part) {
  return send_or_defer(replica, Message::make(stack::kTcpActivateKind, stack::TcpPageBody{part.page, part.generation}));
}

// ---- the calls --------------------------------------------------------------------------------

Result<int> TcpSockets::connect(std::uint32_t address, std::uint16_t port, const SocketOptions& options) {
  if (address == 0 || port == 0) return Error{Errc::invalid_argument, 0, "tcp connect: no address or port"};
  if (replicas_.empty()) return Error{Errc::invalid_argument, 0, "tcp connect: no replica"};
  const int id = allocate();
  if (id < 0) return Error{Errc::exhausted, 0, "tcp connect: too many sockets"};
  Socket& entry = sockets_[static_cast<std::size_t>(id)];
  entry.kind = Kind::connection;
  entry.endpoints = TcpEndpoints{0, address, options.local_port, port};
  entry.open_options = open_options(options);
  Lookup lookup;
  lookup.socket = id;
  if (name_link_ == nullptr) {
    if (place(lookup, pick_replica())) return id;
    release(id);
    return Error{Errc::exhausted, ENOBUFS, "tcp connect: the channel to the replica is backed up"};
  }
  // Each connection asks on its own, uncached, so the fleet's weighted pick spreads them.
  lookup.cookie = next_cookie_++;
  auto sent = name_link_->send(name::NameClient::lookup_request(name_peers_.self, lookup.cookie, kReplicaGroup));
  if (!sent || !sent.value()) {
    ++placement_.unsent;
    ++placement_.by_fallback;
    if (place(lookup, pick_replica())) return id;
    release(id);
    return Error{Errc::exhausted, ENOBUFS, "tcp connect: the channel to the replica is backed up"};
  }
  entry.placing = true;
  lookup.deadline_ms = name_link_->now_ms() + kLookupTimeoutMs;
  lookups_.push_back(lookup);
  if (lookups_.size() == 1) name_link_->wake_at(lookup.deadline_ms);
  return id;
}

bool TcpSockets::holds_connections() const {
  return std::any_of(sockets_.begin(), sockets_.end(),
                     [](const Socket& entry) { return entry.kind == Kind::connection && entry.header != nullptr; });
}

bool TcpSockets::hold_for_fork(std::uint64_t fork) {
  std::vector<bool> holding(replicas_.size(), false);
  for (const Socket& entry : sockets_) {
    if (entry.kind == Kind::connection && entry.header != nullptr) holding[entry.replica] = true;
  }
  std::vector<bool> held(replicas_.size(), false);
  for (std::size_t replica = 0; replica < replicas_.size(); ++replica) {
    if (holding[replica]) {
      held[replica] = send_or_defer(replica, Message::make(stack::kTcpForkHoldKind, stack::TcpForkHoldBody{fork}));
    }
  }
  for (Socket& entry : sockets_) {
    if (entry.kind == Kind::connection && entry.header != nullptr && held[entry.replica]) entry.forked = true;
  }
  return std::find(held.begin(), held.end(), true) != held.end();
}

std::optional<ConnectionShare> TcpSockets::share_connection(int socket) const {
  const Socket* entry = find(socket, Kind::connection);
  if (entry == nullptr || entry->header == nullptr) return std::nullopt;
  return ConnectionShare{entry->replica, entry->page,         entry->generation, entry->endpoints,
                         entry->open_options, entry->options, entry->write_shut};
}

Result<int> TcpSockets::claim(const ConnectionShare& share, std::uint64_t fork) {
  if (share.replica >= replicas_.size()) {
    return Error{Errc::invalid_argument, 0, "tcp claim: the connection's replica is not ours"};
  }
  const int id = allocate();
  if (id < 0) return Error{Errc::exhausted, 0, "tcp claim: too many sockets"};
  Socket& entry = sockets_[static_cast<std::size_t>(id)];
  entry.kind = Kind::connection;
  entry.replica = share.replica;
  entry.endpoints = share.endpoints;
  entry.open_options = share.open_options;
  entry.options = share.options;
  entry.write_shut = share.write_shut;
  entry.claimed_page = share.page;
  entry.claimed_generation = share.generation;
  entry.claim_fork = fork;
  if (send_claim(id)) return id;
  release(id);
  return Error{Errc::exhausted, ENOBUFS, "tcp claim: the channel to the replica is backed up"};
}

bool TcpSockets::send_claim(int socket) {
  Socket& entry = sockets_[static_cast<std::size_t>(socket)];
  entry.ticket = next_ticket(socket);
  const stack::TcpClaimBody body{entry.ticket, entry.claimed_page, entry.claimed_generation, nonce_, entry.claim_fork};
  if (send_or_defer(entry.replica, Message::make(stack::kTcpClaimKind, body))) return true;
  entry.ticket = 0;
  return false;
}

bool TcpSockets::place(Lookup& lookup, std::size_t replica) {
  sockets_[static_cast<std::size_t>(lookup.socket)].placing = false;
  return send_connect(lookup.socket, with_room(replica, lookup.socket));
}

std::size_t TcpSockets::with_room(std::size_t replica, int placing) const {
  const auto capacity = [&](std::size_t at) {
    return replicas_[at].region.valid() ? replicas_[at].region.page_count() : SIZE_MAX;
  };
  // Pinned (a test's choice), or fewer sockets than its pages: it has room whatever they are.
  if (pinned_replica_ || open_count_ <= capacity(replica)) return replica;
  std::vector<std::size_t> used(replicas_.size(), 0);
  for (std::size_t id = 0; id < sockets_.size(); ++id) {
    const Socket& entry = sockets_[id];
    if (entry.kind == Kind::listener) {
      for (std::size_t& count : used) ++count;  // a listener has a page on every replica
    } else if (entry.kind == Kind::connection && !entry.placing && static_cast<int>(id) != placing &&
               entry.replica < used.size()) {
      ++used[entry.replica];
    }
  }
  if (used[replica] < capacity(replica)) return replica;
  std::size_t best = replica;
  for (std::size_t at = 0; at < replicas_.size(); ++at) {
    if (used[at] < capacity(at) && (best == replica || used[at] < used[best])) best = at;
  }
  return best;
}

bool TcpSockets::send_connect(int socket, std::size_t replica) {
  Socket& entry = sockets_[static_cast<std::size_t>(socket)];
  entry.ticket = next_ticket(socket);
  entry.replica = static_cast<std::uint32_t>(replica);
  stack::TcpOpenBody body{};
  body.socket = entry.ticket;
  body.operation = stack::TcpOpenOperation::connect;
  body.options = entry.open_options;
  body.remote_address = entry.endpoints.remote_address;
  body.remote_port = entry.endpoints.remote_port;
  body.local_port = entry.endpoints.local_port;  // what connect() asked for, until the answer
  body.nonce = nonce_;
  if (send_or_defer(replica, Message::make(stack::kTcpOpenKind, body))) return true;
  entry.ticket = 0;
  return false;
}

void TcpSockets::place_later(Lookup& lookup, std::size_t replica) {
  if (place(lookup, replica)) return;
  fail(sockets_[static_cast<std::size_t>(lookup.socket)], ENOBUFS);
  if (ready_handler_) ready_handler_();
}

void TcpSockets::forget_lookup(int socket) {
  const auto found = std::find_if(lookups_.begin(), lookups_.end(), [socket](const Lookup& l) { return l.socket == socket; });
  if (found != lookups_.end()) lookups_.erase(found);
}

Status TcpSockets::use_name_fleet(std::unique_ptr<TcpNameLink> link, TcpNamePeers peers) {
  if (link == nullptr || peers.replicas.size() != replicas_.size()) {
    return Error{Errc::invalid_argument, 0, "tcp sockets: the name fleet needs a link and one component per replica"};
  }
  name_link_ = std::move(link);
  name_peers_ = std::move(peers);
  return {};
}

void TcpSockets::handle_name_reply(const name::NameMessage& reply) {
  if (name_link_ == nullptr || reply.kind != name::NameMsgKind::reply || reply.client != name_peers_.self ||
      reply.from != static_cast<name::MemberId>(name_peers_.server) || reply.cookie == 0) {
    ++placement_.bad_replies;
    return;
  }
  const auto found = std::find_if(lookups_.begin(), lookups_.end(),
                                  [&](const Lookup& lookup) { return lookup.cookie == reply.cookie; });
  if (found == lookups_.end()) {
    // A cookie we never used is forged; one we did belongs to a lookup given up already.
    ++(reply.cookie < next_cookie_ ? placement_.late_replies : placement_.bad_replies);
    return;
  }
  Lookup lookup = *found;
  lookups_.erase(found);
  if (reply.status != name::NameErrc::ok) {
    ++placement_.error_replies;
  } else {
    const auto& components = name_peers_.replicas;
    const auto named = std::find(components.begin(), components.end(), reply.endpoint.component);
    if (reply.endpoint.component != kNoComponent && named != components.end()) {
      ++placement_.by_name;
      place_later(lookup, static_cast<std::size_t>(named - components.begin()));
      return;
    }
    ++placement_.unknown_replicas;
  }
  ++placement_.by_fallback;
  place_later(lookup, pick_replica());
}

void TcpSockets::expire_lookups() {
  if (name_link_ == nullptr) return;
  const std::uint64_t now = name_link_->now_ms();
  while (!lookups_.empty() && lookups_.front().deadline_ms <= now) {
    Lookup lookup = lookups_.front();
    lookups_.pop_front();
    ++placement_.timeouts;
    ++placement_.by_fallback;
    place_later(lookup, pick_replica());
  }
  if (!lookups_.empty()) name_link_->wake_at(lookups_.front().deadline_ms);
}

Result<int> TcpSockets::listen(std::uint32_t address, std::uint16_t port, std::uint16_t backlog,
                               const SocketOptions& options) {
  if (port == 0) return Error{Errc::invalid_argument, 0, "tcp listen: port 0 (each replica would pick its own)"};
  if (replicas_.empty()) return Error{Errc::invalid_argument, 0, "tcp listen: no replica"};
  return open_listener(ListenerShare{address, port, backlog, open_options(options), {}});
}

Result<int> TcpSockets::open_listener(const ListenerShare& listener) {
  if (std::any_of(replicas_.begin(), replicas_.end(), [](const Replica& r) { return r.outbox.full(); })) {
    return Error{Errc::exhausted, ENOBUFS, "tcp listen: the channel to a replica is backed up"};
  }
  const int id = allocate();
  if (id < 0) return Error{Errc::exhausted, 0, "tcp listen: too many sockets"};
  Socket& entry = sockets_[static_cast<std::size_t>(id)];
  entry.kind = Kind::listener;
  entry.backlog = std::max<std::uint16_t>(listener.backlog, 1);
  entry.open_options = listener.open_options;
  entry.endpoints = TcpEndpoints{listener.address, 0, listener.port, 0};
  entry.home = listener.members;
  entry.parts.resize(replicas_.size());
  // Each outbox had room for the one message it may have to keep.
  for (std::size_t replica = 0; replica < replicas_.size(); ++replica) (void)send_listen(id, replica);
  return id;
}

std::optional<ListenerShare> TcpSockets::share(int listener) const {
  const Socket* entry = find(listener, Kind::listener);
  if (entry == nullptr || entry->local_error != 0) return std::nullopt;
  ListenerShare share{entry->endpoints.local_address, entry->endpoints.local_port, entry->backlog,
                      entry->open_options, {}};
  for (const ListenerPart& part : entry->parts) {
    if (!part.open) return std::nullopt;
    share.members.emplace_back(part.page, part.generation);
  }
  return share;
}

Result<int> TcpSockets::join(const ListenerShare& share) {
  if (share.members.size() != replicas_.size()) {
    return Error{Errc::invalid_argument, 0, "tcp join: the listener's replicas are not ours"};
  }
  return open_listener(share);
}

void TcpSockets::activate(int listener) {
  Socket* entry = find(listener, Kind::listener);
  if (entry == nullptr || entry->active) return;
  entry->active = true;
  for (std::size_t replica = 0; replica < entry->parts.size(); ++replica) {
    // A part still opening is activated by its answer.
    if (entry->parts[replica].open) (void)send_activate(replica, entry->parts[replica]);
  }
}

bool TcpSockets::active(int listener) const {
  const Socket* entry = find(listener, Kind::listener);
  return entry != nullptr && entry->active;
}

Result<int> TcpSockets::accept(int listener) {
  Socket* entry = find(listener, Kind::listener);
  if (entry == nullptr) return Error{Errc::invalid_argument, 0, "tcp accept: not a listener"};
  if (entry->local_error != 0) return failure(*entry);
  // A call to accept shows this process accepts: the replicas hold the connections they place
  // with a listener until then.
  activate(listener);
  if (entry->accept_queue.empty()) {
    // The group holds connections for whichever process accepts first: ask for one (once until
    // the replicas answer).
    if (!taking(listener)) (void)take(listener);
    return Error{Errc::would_block, 0, "tcp accept: no connection waiting"};
  }
  const int connection = entry->accept_queue.front();
  entry->accept_queue.pop_front();
  Socket& accepted = sockets_[static_cast<std::size_t>(connection)];
  accepted.listener = -1;
  ListenerPart& part = entry->parts[accepted.replica];
  if (part.open) {
    // The replica counts its accept queue down by how far this running count moved.
    ++part.accepted;
    TcpSocketPageHeader* header = replicas_[accepted.replica].region.page(part.page);
    if (header != nullptr) header->control.accepted.store(part.accepted, std::memory_order_release);
    request(accepted.replica, part.page, part.generation, kTcpRequestAccepted);
  }
  return connection;
}

TcpSocketPageHeader* TcpSockets::part_page(const Socket& listener, std::size_t replica) const {
  const ListenerPart& part = listener.parts[replica];
  return part.open ? replicas_[replica].region.page(part.page) : nullptr;
}

bool TcpSockets::holds_connections(int listener) const {
  const Socket* entry = find(listener, Kind::listener);
  if (entry == nullptr) return false;
  for (std::size_t replica = 0; replica < entry->parts.size(); ++replica) {
    const TcpSocketPageHeader* header = part_page(*entry, replica);
    if (header != nullptr && header->control.holds_connections.load(std::memory_order_acquire) != 0) return true;
  }
  return false;
}

bool TcpSockets::take(int listener) {
  Socket* entry = find(listener, Kind::listener);
  if (entry == nullptr) return false;
  // One replica only: an accept returns one connection, and a second taken would wait here behind
  // the client this process serves next while another process waits for one.
  for (std::size_t replica = 0; replica < entry->parts.size(); ++replica) {
    TcpSocketPageHeader* header = part_page(*entry, replica);
    if (header == nullptr || header->control.holds_connections.load(std::memory_order_acquire) == 0) continue;
    auto& control = header->control;
    control.takes_asked.store(control.takes_asked.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    const ListenerPart& part = entry->parts[replica];
    request(replica, part.page, part.generation, kTcpRequestTake);
    return true;
  }
  return false;
}

bool TcpSockets::taking(int listener) const {
  const Socket* entry = find(listener, Kind::listener);
  if (entry == nullptr) return false;
  for (std::size_t replica = 0; replica < entry->parts.size(); ++replica) {
    const TcpSocketPageHeader* header = part_page(*entry, replica);
    if (header != nullptr && header->control.takes_asked.load(std::memory_order_acquire) !=
                                 header->control.takes_served.load(std::memory_order_acquire)) {
      return true;
    }
  }
  return false;
}

bool TcpSockets::queued(int listener) const {
  const Socket* entry = find(listener, Kind::listener);
  return entry != nullptr && !entry->accept_queue.empty();
}

void TcpSockets::waiting_to_accept(int listener, bool waiting) {
  Socket* entry = find(listener, Kind::listener);
  if (entry == nullptr || (!waiting && entry->accept_waiters == 0)) return;
  const std::uint32_t before = entry->accept_waiters;
  entry->accept_waiters = waiting ? before + 1 : before - 1;
  if ((before == 0) == (entry->accept_waiters == 0)) return;
  for (std::size_t replica = 0; replica < entry->parts.size(); ++replica) {
    if (TcpSocketPageHeader* header = part_page(*entry, replica); header != nullptr) {
      header->control.accept_waiting.store(waiting ? 1 : 0, std::memory_order_release);
    }
  }
}

Error TcpSockets::failure(const Socket& socket) const {
  int code = socket.local_error;
  if (code == 0 && socket.header != nullptr) {
    const std::int32_t word = socket.header->control.error.load(std::memory_order_acquire);
    code = word == 0 ? 0 : checked_errno(word);
  }
  return Error{Errc::closed, code, "tcp: the connection is over (error() says why)"};
}

void TcpSockets::fail(Socket& socket, int error) {
  if (socket.local_error == 0) socket.local_error = error;
}

bool TcpSockets::held_elsewhere(const Socket& socket) {
  return socket.header != nullptr && shared(socket) &&
         socket.header->control.generation.load(std::memory_order_acquire) == 0;
}

bool TcpSockets::holder_offers(const Socket& socket, std::uint32_t readiness) {
  return held_elsewhere(socket) &&
         (socket.header->control.holder_ready.load(std::memory_order_acquire) & readiness) != 0;
}

bool TcpSockets::carrying(Socket& socket) {
  if (socket.header == nullptr || !shared(socket)) return true;
  TcpSocketPageHeader& header = *socket.header;
  if (header.control.generation.load(std::memory_order_acquire) == 0) return false;
  // Revoked: the replica is moving it to another holder once this process is outside its rings.
  if (header.control.revoked.load(std::memory_order_seq_cst) != 0) return false;
  // Back from another carrier: its streams moved on, and the replica set the positions (this
  // process alone writes the send tail and the receive head while it carries).
  if (header.send.tail.load(std::memory_order_relaxed) != socket.send_ring.tail() ||
      header.receive.head.load(std::memory_order_relaxed) != socket.receive_ring.head()) {
    const TcpRegion& region = replicas_[socket.replica].region;
    socket.send_ring = ByteRingProducer(&header.send, region.send_bytes(socket.page),
                                        header.send.tail.load(std::memory_order_acquire));
    socket.receive_ring = ByteRingConsumer(&header.receive, region.receive_bytes(socket.page),
                                           header.receive.head.load(std::memory_order_acquire));
  }
  socket.carry_asked = false;
  if (socket.pending_requests != 0) {
    request(socket.replica, socket.page, socket.generation, socket.pending_requests);
    socket.pending_requests = 0;
  }
  return true;
}

void TcpSockets::ask_carry(Socket& socket) {
  if (socket.carry_asked) return;
  socket.carry_asked = send_or_defer(socket.replica, Message::make(stack::kTcpCarryKind,
                                                                   stack::TcpPageBody{socket.page, socket.generation}));
}

namespace {

// Marks the process inside the rings of a connection other processes hold, from before it checks
// that it carries the connection to after its last ring index store: the replica moves such a
// connection only while the mark is down (ReplicaServer::outside_rings). A connection nobody else
// holds needs no mark.
class RingUse {
 public:
  RingUse(TcpSocketPageHeader* header, bool shared) : mark_(header != nullptr && shared ? &header->control.in_use : nullptr) {
    if (mark_ != nullptr) mark_->store(1, std::memory_order_seq_cst);
  }
  ~RingUse() {
    if (mark_ != nullptr) mark_->store(0, std::memory_order_release);
  }
  RingUse(const RingUse&) = delete;
  RingUse& operator=(const RingUse&) = delete;

 private:
  std::atomic<std::uint32_t>* mark_;
};

}  // namespace

Result<std::size_t> TcpSockets::send(int socket, std::span<const std::byte> bytes) {
  Socket* entry = find(socket, Kind::connection);
  if (entry == nullptr) return Error{Errc::invalid_argument, 0, "tcp send: not a connection"};
  const RingUse use(entry->header, shared(*entry));
  if (entry->local_error != 0) return failure(*entry);
  if (entry->write_shut) return Error{Errc::closed, EPIPE, "tcp send: writing was shut down"};
  if (entry->header == nullptr) return Error{Errc::would_block, 0, "tcp send: still connecting"};
  if (!carrying(*entry)) {
    ask_carry(*entry);
    return Error{Errc::would_block, 0, "tcp send: another process holding the connection carries it"};
  }
  const TcpSocketStatus status = status_of(*entry->header);
  if (status == TcpSocketStatus::closed) {
    Error error = failure(*entry);
    if (error.sys_errno == 0) error.sys_errno = EPIPE;  // closed in order: nothing more to send
    return error;
  }
  if (status != TcpSocketStatus::connected) return Error{Errc::would_block, 0, "tcp send: still connecting"};
  if ((entry->header->control.flags.load(std::memory_order_acquire) & kTcpWriteClosed) != 0) {
    return Error{Errc::closed, EPIPE, "tcp send: writing was shut down"};
  }
  if (bytes.empty()) return std::size_t{0};
  const std::size_t written = entry->send_ring.write(bytes);
  if (written == 0) {
    if (entry->send_ring.corrupt()) {
      fail(*entry, EPROTO);
      return failure(*entry);
    }
    return Error{Errc::would_block, 0, "tcp send: the send ring is full"};
  }
  request(entry->replica, entry->page, entry->generation, kTcpRequestSend);
  return written;
}

Result<std::size_t> TcpSockets::recv(int socket, std::span<std::byte> out) { return receive(socket, out, 0, true); }

Result<std::size_t> TcpSockets::peek(int socket, std::span<std::byte> out, std::size_t offset) {
  return receive(socket, out, offset, false);
}

Result<std::size_t> TcpSockets::receive(int socket, std::span<std::byte> out, std::size_t offset, bool consume) {
  Socket* entry = find(socket, Kind::connection);
  if (entry == nullptr) return Error{Errc::invalid_argument, 0, "tcp recv: not a connection"};
  const RingUse use(entry->header, shared(*entry));
  if (entry->local_error != 0) return failure(*entry);
  if (entry->header == nullptr) return Error{Errc::would_block, 0, "tcp recv: still connecting"};
  if (!carrying(*entry)) {
    ask_carry(*entry);
    return Error{Errc::would_block, 0, "tcp recv: another process holding the connection carries it"};
  }
  // Flags before the ring: the replica publishes the last bytes before it raises kTcpPeerClosed,
  // so an empty ring after a raised flag really is the end.
  const std::uint32_t flags = entry->header->control.flags.load(std::memory_order_acquire);
  const TcpSocketStatus status = status_of(*entry->header);
  if (out.empty()) return std::size_t{0};
  std::size_t count = 0;
  if (consume) {
    count = entry->receive_ring.read(out);
  } else if (const std::size_t readable = entry->receive_ring.readable(); readable > offset) {
    count = std::min(out.size(), readable - offset);
    (void)entry->receive_ring.peek(offset, out.first(count));
  }
  if (count > 0) {
    if (consume) request(entry->replica, entry->page, entry->generation, kTcpRequestWindow);
    return count;
  }
  if (entry->receive_ring.corrupt()) {
    fail(*entry, EPROTO);
    return failure(*entry);
  }
  if ((flags & kTcpPeerClosed) != 0) return std::size_t{0};
  if (status == TcpSocketStatus::closed) {
    const Error error = failure(*entry);
    if (error.sys_errno == 0) return std::size_t{0};  // an orderly close: EOF
    return error;
  }
  return Error{Errc::would_block, 0, "tcp recv: nothing received yet"};
}

Status TcpSockets::shutdown_write(int socket) {
  Socket* entry = find(socket, Kind::connection);
  if (entry == nullptr) return Error{Errc::invalid_argument, 0, "tcp shutdown: not a connection"};
  if (entry->write_shut) return {};
  entry->write_shut = true;
  if (entry->local_error != 0) return {};
  if (entry->header == nullptr) {
    entry->pending_requests |= kTcpRequestShutdownWrite;
  } else if (!carrying(*entry)) {
    // Asked of the connection once it is here (carrying()).
    entry->pending_requests |= kTcpRequestShutdownWrite;
    ask_carry(*entry);
  } else {
    request(entry->replica, entry->page, entry->generation, kTcpRequestShutdownWrite);
  }
  return {};
}

void TcpSockets::close_connection(int socket, std::uint32_t bits) {
  Socket& entry = sockets_[static_cast<std::size_t>(socket)];
  // A restarted replica no longer has the page (header is null then): nothing to tell it. A
  // connection still opening has no page yet; the answer to its open brings one, given back then.
  // One still waiting for its placement has asked no replica yet.
  if (entry.placing) {
    forget_lookup(socket);
  } else if (entry.header != nullptr) {
    // After a fork the close must come after the fork's hold: a message, not request bits (which
    // a kick already on its way would carry before the hold).
    // A shared one's page may be a holder's, whose generation word a kick could not name.
    const bool released = shared(entry) &&
                          send_or_defer(entry.replica, Message::make(stack::kTcpReleaseKind,
                                                                     stack::TcpReleaseBody{entry.page, entry.generation, bits, 0}));
    if (!released) request(entry.replica, entry.page, entry.generation, bits);
    disown(replicas_[entry.replica], entry.page);
  } else if (entry.ticket != 0) {
    abandon(entry.replica, entry.ticket);
  }
  release(socket);
}

Status TcpSockets::end(int socket, std::uint32_t bits) {
  if (find(socket, Kind::connection) != nullptr) {
    close_connection(socket, bits);
    return {};
  }
  Socket* entry = find(socket, Kind::listener);
  if (entry == nullptr) return Error{Errc::invalid_argument, 0, "tcp close: not a socket"};
  for (std::size_t replica = 0; replica < entry->parts.size(); ++replica) {
    close_listener_part(replica, entry->parts[replica], bits);
  }
  const std::deque<int> waiting = std::move(entry->accept_queue);
  for (const int connection : waiting) close_connection(connection, bits);
  release(socket);
  return {};
}

Status TcpSockets::close(int socket) { return end(socket, kTcpRequestClose); }

// The replica may act on either bit; both say the application is done with the page.
Status TcpSockets::abort(int socket) { return end(socket, kTcpRequestAbort | kTcpRequestClose); }

Status TcpSockets::set_option(int socket, TcpOption option, std::uint32_t value) {
  if (!known_option(option)) return Error{Errc::invalid_argument, 0, "tcp set_option: unknown option"};
  if (Socket* entry = find(socket, Kind::connection)) {
    if (entry->local_error != 0) return failure(*entry);
    remember_option(entry->options, option, value);
    const std::pair<TcpOption, std::uint32_t> one{option, value};
    // Without room it goes once there is: Linux never refuses a connection's option for want of
    // buffers (nginx closes a keep-alive connection whose TCP_NODELAY fails).
    if (entry->header != nullptr && !send_options(entry->replica, entry->page, entry->generation, std::span(&one, 1))) {
      owe_options(*entry);
    }
    return {};
  }
  Socket* entry = find(socket, Kind::listener);
  if (entry == nullptr) return Error{Errc::invalid_argument, 0, "tcp set_option: not a socket"};
  if (entry->local_error != 0) return failure(*entry);
  for (std::size_t replica = 0; replica < entry->parts.size(); ++replica) {
    if (entry->parts[replica].open && replicas_[replica].outbox.full()) {
      return Error{Errc::exhausted, ENOBUFS, "tcp set_option: the channel to a replica is backed up"};
    }
  }
  // Kept, so that a part that opens later (or again, after a replica restart) gets them too.
  remember_option(entry->options, option, value);
  const std::pair<TcpOption, std::uint32_t> one{option, value};
  for (std::size_t replica = 0; replica < entry->parts.size(); ++replica) {
    const ListenerPart& part = entry->parts[replica];
    // Room was checked above.
    if (part.open) (void)send_options(replica, part.page, part.generation, std::span(&one, 1));
  }
  return {};
}

// ---- readiness: loads only --------------------------------------------------------------------

bool TcpSockets::readable(int socket) {
  if (find(socket, Kind::listener) != nullptr) return acceptable(socket);
  Socket* entry = find(socket, Kind::connection);
  if (entry == nullptr) return false;
  if (entry->local_error != 0) return true;
  if (entry->header == nullptr) return false;
  // A holder sees what the carrier's page offers; its read then asks for the connection.
  if (!carrying(*entry)) return holder_offers(*entry, kTcpHolderReadable);
  const std::uint32_t flags = entry->header->control.flags.load(std::memory_order_acquire);
  const TcpSocketStatus status = status_of(*entry->header);
  return entry->receive_ring.readable() > 0 || entry->receive_ring.corrupt() || (flags & kTcpPeerClosed) != 0 ||
         status == TcpSocketStatus::closed;
}

bool TcpSockets::writable(int socket) {
  Socket* entry = find(socket, Kind::connection);
  if (entry == nullptr) return false;
  if (entry->local_error != 0 || entry->write_shut) return true;  // send() reports why
  if (entry->header == nullptr) return false;
  if (!carrying(*entry)) return holder_offers(*entry, kTcpHolderWritable);
  switch (status_of(*entry->header)) {
    case TcpSocketStatus::connected:
      return entry->send_ring.free_space() > 0 || entry->send_ring.corrupt() ||
             (entry->header->control.flags.load(std::memory_order_acquire) & kTcpWriteClosed) != 0;
    case TcpSocketStatus::closed:
      return true;
    default:
      return false;
  }
}

bool TcpSockets::acceptable(int socket) const {
  const Socket* entry = find(socket, Kind::listener);
  return entry != nullptr && (!entry->accept_queue.empty() || entry->local_error != 0 || holds_connections(socket));
}

bool TcpSockets::connected(int socket) const {
  const Socket* entry = find(socket, Kind::connection);
  return entry != nullptr && entry->local_error == 0 && entry->header != nullptr &&
         status_of(*entry->header) == TcpSocketStatus::connected;
}

bool TcpSockets::listening(int socket) const {
  const Socket* entry = find(socket, Kind::listener);
  if (entry == nullptr || entry->local_error != 0) return false;
  return std::all_of(entry->parts.begin(), entry->parts.end(), [](const ListenerPart& part) { return part.open; });
}

bool TcpSockets::eof(int socket) {
  Socket* entry = find(socket, Kind::connection);
  if (entry == nullptr || entry->header == nullptr || entry->local_error != 0 || !carrying(*entry)) return false;
  const std::uint32_t flags = entry->header->control.flags.load(std::memory_order_acquire);
  return (flags & kTcpPeerClosed) != 0 && entry->receive_ring.readable() == 0 && !entry->receive_ring.corrupt();
}

int TcpSockets::error(int socket) const {
  const Socket* entry = find(socket, Kind::connection);
  if (entry == nullptr) entry = find(socket, Kind::listener);
  if (entry == nullptr) return 0;
  if (entry->local_error != 0) return entry->local_error;
  if (entry->header == nullptr || held_elsewhere(*entry) || status_of(*entry->header) != TcpSocketStatus::closed) return 0;
  const std::int32_t code = entry->header->control.error.load(std::memory_order_acquire);
  return code == 0 ? 0 : checked_errno(code);
}

std::size_t TcpSockets::unacknowledged(int socket) {
  Socket* entry = find(socket, Kind::connection);
  if (entry == nullptr || entry->header == nullptr || !carrying(*entry)) return 0;
  const std::size_t space = entry->send_ring.free_space();
  return entry->send_ring.corrupt() ? 0 : entry->send_ring.capacity() - space;
}

std::size_t TcpSockets::received_bytes(int socket) {
  Socket* entry = find(socket, Kind::connection);
  if (entry == nullptr || entry->header == nullptr || !carrying(*entry) || entry->receive_ring.corrupt()) return 0;
  return entry->receive_ring.readable();
}

TcpInfo TcpSockets::info(int socket) const {
  const Socket* entry = find(socket, Kind::connection);
  if (entry == nullptr || entry->header == nullptr) return {};
  const TcpSocketControl& control = entry->header->control;
  constexpr auto relaxed = std::memory_order_relaxed;
  return TcpInfo{control.tcp_state.load(relaxed),   control.rtt_us.load(relaxed),
                 control.rto_ms.load(relaxed),      control.mss.load(relaxed),
                 control.cwnd_bytes.load(relaxed),  control.retransmits.load(relaxed),
                 control.bytes_sent.load(relaxed),  control.bytes_received.load(relaxed),
                 control.segments_in.load(relaxed)};
}

TcpEndpoints TcpSockets::endpoints(int socket) const {
  const Socket* entry = find(socket, Kind::connection);
  if (entry == nullptr) entry = find(socket, Kind::listener);
  return entry != nullptr ? entry->endpoints : TcpEndpoints{};
}

// ---- the replicas' messages -------------------------------------------------------------------

bool TcpSockets::ensure_region(std::size_t replica) {
  Replica& link = replicas_[replica];
  if (link.region.valid()) return true;
  link.region = TcpRegion::attach(links_->region(replica));
  if (!link.region.valid()) return false;
  link.page_owner.clear();
  return true;
}

int TcpSockets::owner_of(const Replica& link, std::uint32_t page) {
  return page < link.page_owner.size() ? link.page_owner[page] - 1 : -1;
}

void TcpSockets::disown(Replica& link, std::uint32_t page) {
  if (page < link.page_owner.size()) link.page_owner[page] = 0;
}

TcpSocketPageHeader* TcpSockets::claimable_page(std::size_t replica, std::uint32_t page, std::uint32_t generation,
                                                bool holder_ok) {
  Replica& link = replicas_[replica];
  TcpSocketPageHeader* header = link.region.page(page);
  if (header == nullptr || owner_of(link, page) >= 0) return nullptr;
  const std::uint32_t word = header->control.generation.load(std::memory_order_acquire);
  if (word != generation && !(holder_ok && word == 0)) return nullptr;
  if (status_of(*header) == TcpSocketStatus::free) return nullptr;  // not handed out at all
  return header;
}

void TcpSockets::claim_page(std::size_t replica, std::uint32_t page, int socket) {
  Replica& link = replicas_[replica];
  TcpSocketControl& control = link.region.page(page)->control;
  // Our words start clean (no kick of ours is in flight for a page just handed out), and an event
  // the replica sent before we knew the page is taken as seen: readiness is read from the words.
  control.requests.store(0, std::memory_order_relaxed);
  control.accepted.store(0, std::memory_order_relaxed);
  control.kick_pending.store(0, std::memory_order_release);
  control.event_pending.exchange(0, std::memory_order_acq_rel);
  if (page >= link.page_owner.size()) link.page_owner.resize(page + 1, 0);
  link.page_owner[page] = socket + 1;
}

void TcpSockets::adopt_connection(int socket, std::size_t replica, std::uint32_t page, std::uint32_t generation) {
  Replica& link = replicas_[replica];
  Socket& entry = sockets_[static_cast<std::size_t>(socket)];
  TcpSocketPageHeader* header = link.region.page(page);
  entry.ticket = 0;
  entry.replica = static_cast<std::uint32_t>(replica);
  entry.page = page;
  entry.generation = generation;
  entry.header = header;
  // Our rings' positions as the replica set them: 0 in a page just handed out, where the stream
  // stands in one a connection was moved to (claim).
  entry.send_ring = ByteRingProducer(&header->send, link.region.send_bytes(page),
                                     header->send.tail.load(std::memory_order_acquire));
  entry.receive_ring = ByteRingConsumer(&header->receive, link.region.receive_bytes(page),
                                        header->receive.head.load(std::memory_order_acquire));
  claim_page(replica, page, socket);
  send_or_owe_options(socket);
  if (entry.pending_requests != 0) {
    request(replica, page, generation, entry.pending_requests);
    entry.pending_requests = 0;
  }
}

void TcpSockets::abandon(std::size_t replica, std::uint32_t ticket) {
  std::vector<std::uint32_t>& tickets = replicas_[replica].abandoned_tickets;
  if (tickets.size() >= kRememberedClosures) tickets.erase(tickets.begin());
  tickets.push_back(ticket);
}

void TcpSockets::close_listener_part(std::size_t replica, ListenerPart& part, std::uint32_t bits) {
  Replica& link = replicas_[replica];
  if (part.open) {
    request(replica, part.page, part.generation, bits);
    disown(link, part.page);
    if (link.closed_listeners.size() >= kRememberedClosures) link.closed_listeners.erase(link.closed_listeners.begin());
    link.closed_listeners.emplace_back(part.page, part.generation);
  } else if (part.ticket != 0) {
    abandon(replica, part.ticket);
  }
  part = ListenerPart{};
}

void TcpSockets::close_orphan(std::size_t replica, std::uint32_t page, std::uint32_t generation) {
  // A page the replica gave us for a request we no longer want: hand it back, unless the message
  // names a page that is not the replica's to give (ours already, or out of range).
  if (claimable_page(replica, page, generation) == nullptr) return;
  request(replica, page, generation, kTcpRequestClose);
}

void TcpSockets::fail_listener(int listener, int error) {
  Socket& entry = sockets_[static_cast<std::size_t>(listener)];
  fail(entry, error);
  // A listener lives on every replica or fails as a whole: hand back the parts that did open.
  for (std::size_t replica = 0; replica < entry.parts.size(); ++replica) {
    close_listener_part(replica, entry.parts[replica], kTcpRequestClose);
  }
}

bool TcpSockets::on_opened(std::size_t replica, const stack::TcpOpenedBody& body) {
  if (body.nonce != nonce_) {
    // Meant for the program that held this seat before (its ticket may be one of ours).
    ++stale_messages_;
    return false;
  }
  const int id = static_cast<int>(body.socket & 0xffff);
  Socket* entry = static_cast<std::size_t>(id) < sockets_.size() ? &sockets_[static_cast<std::size_t>(id)] : nullptr;
  const bool connection = entry != nullptr && entry->kind == Kind::connection && entry->ticket != 0 &&
                          entry->ticket == body.socket && entry->replica == replica;
  const bool listener = entry != nullptr && entry->kind == Kind::listener && entry->local_error == 0 &&
                        entry->parts[replica].ticket != 0 && entry->parts[replica].ticket == body.socket;
  if (!connection && !listener) {
    // Only an answer to an open we gave up is handed back: any other stale answer may come from a
    // replica's earlier incarnation and name a page of the old layout.
    ++stale_messages_;
    std::vector<std::uint32_t>& abandoned = replicas_[replica].abandoned_tickets;
    const auto found = std::find(abandoned.begin(), abandoned.end(), body.socket);
    if (found != abandoned.end()) {
      abandoned.erase(found);
      if (body.error == 0 && ensure_region(replica)) close_orphan(replica, body.page, body.generation);
    }
    return false;
  }
  if (body.error != 0) {
    if (connection) {
      entry->ticket = 0;
      fail(*entry, checked_errno(body.error));
    } else {
      fail_listener(id, checked_errno(body.error));
    }
    return true;
  }
  // A claimed connection's page may be a holder's already (its parent asked for it back).
  const bool holder_ok = connection && entry->claim_fork != 0;
  if (!ensure_region(replica) || claimable_page(replica, body.page, body.generation, holder_ok) == nullptr) {
    ++bad_messages_;
    if (connection) {
      entry->ticket = 0;
      fail(*entry, EPROTO);
    } else {
      entry->parts[replica].ticket = 0;
      fail_listener(id, EPROTO);
    }
    return true;
  }
  if (connection) {
    entry->endpoints.local_port = body.local_port;
    adopt_connection(id, replica, body.page, body.generation);
    // The replica wrote the page's addresses before it answered; the answer has no room for ours.
    entry->endpoints.local_address = entry->header->control.local_address;
    return true;
  }
  ListenerPart& part = entry->parts[replica];
  part = ListenerPart{0, body.page, body.generation, 0, true};
  claim_page(replica, body.page, id);
  if (!send_options(replica, body.page, body.generation, entry->options) ||
      (entry->active && !send_activate(replica, part))) {
    fail_listener(id, ENOBUFS);
  }
  return true;
}

bool TcpSockets::on_accepted(std::size_t replica, const stack::TcpAcceptedBody& body) {
  if (!ensure_region(replica)) return refuse();
  Replica& link = replicas_[replica];
  const TcpSocketPageHeader* listener_header = link.region.page(body.listener_page);
  const int listener = listener_header != nullptr ? owner_of(link, body.listener_page) : -1;
  Socket* entry = listener >= 0 ? &sockets_[static_cast<std::size_t>(listener)] : nullptr;
  if (entry == nullptr || entry->kind != Kind::listener || !entry->parts[replica].open ||
      entry->parts[replica].page != body.listener_page ||
      entry->parts[replica].generation != body.listener_generation) {
    // Not one of our listeners (any more): a connection for a listener we closed is given back.
    ++stale_messages_;
    const auto& closed = link.closed_listeners;
    if (std::find(closed.begin(), closed.end(), std::pair(body.listener_page, body.listener_generation)) !=
        closed.end()) {
      close_orphan(replica, body.page, body.generation);
    }
    return false;
  }
  if (claimable_page(replica, body.page, body.generation) == nullptr) {
    // A recovering replica announces again each connection still in its accept queue: one we
    // have already is no trouble.
    const TcpSocketPageHeader* header = link.region.page(body.page);
    const int owner = header != nullptr ? owner_of(link, body.page) : -1;
    if (owner >= 0 && sockets_[static_cast<std::size_t>(owner)].kind == Kind::connection &&
        sockets_[static_cast<std::size_t>(owner)].generation == body.generation) {
      ++stale_messages_;
      return false;
    }
    return refuse();
  }
  const int id = allocate();
  if (id < 0) {
    close_orphan(replica, body.page, body.generation);
    return false;
  }
  Socket& connection = sockets_[static_cast<std::size_t>(id)];  // `entry` may have moved
  connection.kind = Kind::connection;
  connection.endpoints = TcpEndpoints{body.local_address, body.remote_address, body.local_port, body.remote_port};
  connection.options = sockets_[static_cast<std::size_t>(listener)].options;
  adopt_connection(id, replica, body.page, body.generation);
  connection.listener = listener;
  sockets_[static_cast<std::size_t>(listener)].accept_queue.push_back(id);
  return true;
}

bool TcpSockets::on_event(std::size_t replica, const stack::TcpPageBody& body) {
  if (!ensure_region(replica)) return refuse();
  Replica& link = replicas_[replica];
  TcpSocketPageHeader* header = link.region.page(body.page);
  if (header == nullptr) return refuse();
  const int owner = owner_of(link, body.page);
  const Socket* entry = owner >= 0 ? &sockets_[static_cast<std::size_t>(owner)] : nullptr;
  const bool ours = entry != nullptr &&
                    ((entry->kind == Kind::connection && entry->generation == body.generation) ||
                     (entry->kind == Kind::listener && entry->parts[replica].generation == body.generation));
  if (!ours) {
    ++stale_messages_;
    return false;
  }
  // Cleared before the state words are read, so a change after this point sends a new event.
  header->control.event_pending.exchange(0, std::memory_order_acq_rel);
  // A holder's page: whatever the replica did with its ask (moved the connection here, or let a
  // stale revoke go), its next use looks again and asks again if need be.
  if (entry->kind == Kind::connection) sockets_[static_cast<std::size_t>(owner)].carry_asked = false;
  return true;
}

void TcpSockets::handle_messages(std::size_t replica, std::span<const Message> messages) {
  if (replica >= replicas_.size()) return;
  bool changed = false;
  for (const Message& message : messages) {
    if (message.kind == stack::kTcpEventKind) {
      changed |= on_event(replica, message.read<stack::TcpPageBody>());
    } else if (message.kind == stack::kTcpOpenedKind) {
      changed |= on_opened(replica, message.read<stack::TcpOpenedBody>());
    } else if (message.kind == stack::kTcpAcceptedKind) {
      changed |= on_accepted(replica, message.read<stack::TcpAcceptedBody>());
    } else if (message.kind == stack::kTcpAnnounceKind) {
      changed |= on_announce(replica, message.read<stack::TcpAnnounceBody>());
    } else {
      ++bad_messages_;
    }
  }
  if (changed && ready_handler_) ready_handler_();
}

bool TcpSockets::on_announce(std::size_t replica, const stack::TcpAnnounceBody& body) {
  const auto mode = body.mode;
  if (mode != stack::TcpReplicaMode::fresh && mode != stack::TcpReplicaMode::recovering &&
      mode != stack::TcpReplicaMode::recovered && mode != stack::TcpReplicaMode::ip_restarted) {
    return refuse();
  }
  Replica& link = replicas_[replica];
  link.announces = true;
  // An incarnation we know already: its restart was handled (or came before we attached), or it
  // only says again who it is.
  if (body.incarnation <= link.incarnation || mode == stack::TcpReplicaMode::ip_restarted) {
    link.incarnation = std::max(link.incarnation, body.incarnation);
    ++stale_messages_;
    return false;
  }
  link.incarnation = body.incarnation;
  restart(replica, mode);
  return true;
}

void TcpSockets::replica_restarted(std::size_t replica, std::uint64_t incarnation) {
  if (replica >= replicas_.size()) return;
  Replica& link = replicas_[replica];
  if (incarnation != 0 && incarnation <= link.incarnation) return;  // its announce came first
  // A replica that announces itself says in its announce whether it kept our sockets; the notice
  // may come before the replica has restored or formatted anything, so it decides nothing.
  if (link.announces) return;
  link.incarnation = std::max(link.incarnation, incarnation);
  restart(replica, stack::TcpReplicaMode::fresh);
  if (ready_handler_) ready_handler_();
}

void TcpSockets::restart(std::size_t replica, stack::TcpReplicaMode mode) {
  const bool kept = mode == stack::TcpReplicaMode::recovering || mode == stack::TcpReplicaMode::recovered;
  if (kept && ensure_region(replica)) {
    resume_sockets(replica);
  } else {
    lose_sockets(replica);
  }
}

bool TcpSockets::page_survived(std::size_t replica, std::uint32_t page, std::uint32_t generation) {
  const TcpSocketPageHeader* header = replicas_[replica].region.page(page);
  return header != nullptr && header->control.generation.load(std::memory_order_acquire) == generation &&
         status_of(*header) != TcpSocketStatus::free;
}

void TcpSockets::lose_connection(int socket) {
  Socket& entry = sockets_[static_cast<std::size_t>(socket)];
  if (entry.listener >= 0) {
    std::deque<int>& queue = sockets_[static_cast<std::size_t>(entry.listener)].accept_queue;
    queue.erase(std::remove(queue.begin(), queue.end(), socket), queue.end());
    release(socket);
    return;
  }
  entry.header = nullptr;
  entry.send_ring = ByteRingProducer{};
  entry.receive_ring = ByteRingConsumer{};
  entry.local_error = ECONNRESET;  // overrides any earlier cause: the page is gone
}

void TcpSockets::lose_sockets(std::size_t replica) {
  Replica& link = replicas_[replica];
  // The new incarnation formats the region afresh and knows nothing of what we had asked for.
  link.region = TcpRegion{};
  link.page_owner.clear();
  link.outbox.clear();
  link.kicks_owed = false;
  link.options_owed = false;
  link.closed_listeners.clear();
  (void)ensure_region(replica);
  for (std::size_t id = 0; id < sockets_.size(); ++id) {
    Socket& entry = sockets_[id];
    if (entry.kind == Kind::connection && !entry.placing && entry.replica == replica) {
      if (entry.ticket != 0) abandon(replica, entry.ticket);
      entry.ticket = 0;
      lose_connection(static_cast<int>(id));
    } else if (entry.kind == Kind::listener && entry.local_error == 0) {
      if (entry.parts[replica].ticket != 0) abandon(replica, entry.parts[replica].ticket);
      // Its group went with the old incarnation: every process that shared it listens again, and
      // the first to come makes it anew.
      entry.home.clear();
      entry.open_options |= stack::kTcpOpenRejoin;
      if (!send_listen(static_cast<int>(id), replica)) fail_listener(static_cast<int>(id), ENOBUFS);
    }
  }
}

void TcpSockets::resume_sockets(std::size_t replica) {
  Replica& link = replicas_[replica];
  std::vector<int> reopen, relisten, kept;
  for (std::size_t index = 0; index < sockets_.size(); ++index) {
    const int id = static_cast<int>(index);
    Socket& entry = sockets_[index];
    if (entry.kind == Kind::connection && !entry.placing && entry.replica == replica) {
      if (entry.header != nullptr) {
        // A holder's page survives with its word at 0.
        const bool holding = held_elsewhere(entry) && status_of(*entry.header) != TcpSocketStatus::free;
        if (holding || page_survived(replica, entry.page, entry.generation)) {
          entry.carry_asked = false;  // an ask the old incarnation had not served is lost with it
          kept.push_back(id);
          continue;
        }
        disown(link, entry.page);
        lose_connection(id);
      } else if (entry.ticket != 0 && entry.claim_fork != 0) {
        // A claim is not asked again: the new incarnation may be the one that serves it (it still
        // has the pin from the slot table), and a second claim would find the pin moved.
        continue;
      } else if (entry.ticket != 0) {
        // The open may have died with the old incarnation: asked again, and a late answer to the
        // first ticket is given back.
        abandon(replica, entry.ticket);
        entry.ticket = 0;
        reopen.push_back(id);
      }
    } else if (entry.kind == Kind::listener && entry.local_error == 0) {
      ListenerPart& part = entry.parts[replica];
      if (part.open && page_survived(replica, part.page, part.generation)) {
        kept.push_back(id);
        continue;
      }
      if (part.open) {
        disown(link, part.page);
      } else if (part.ticket != 0) {
        abandon(replica, part.ticket);
      }
      part = ListenerPart{};
      relisten.push_back(id);
    }
  }
  // What still waits for room: opens and joins go again below with their new tickets, and messages
  // about pages that are gone go nowhere. The rest keeps its order.
  std::vector<Message> waiting;
  link.outbox.drain([&](std::span<const Message> run) {
    waiting.insert(waiting.end(), run.begin(), run.end());
    return run.size();
  });
  for (const Message& message : waiting) {
    // Opens and joins are asked again below (reopen, relisten), with new tickets.
    if (message.kind == stack::kTcpOpenKind || message.kind == stack::kTcpJoinKind) continue;
    if (message.kind == stack::kTcpForkHoldKind || message.kind == stack::kTcpClaimKind ||
        message.kind == stack::kTcpCarryKind) {
      (void)link.outbox.push(message);  // about the whole region, or a page of another's
      continue;
    }
    const auto body = message.read<stack::TcpPageBody>();  // a kick's, activate's, release's or option's first words
    const TcpSocketPageHeader* header = link.region.page(body.page);
    if (message.kind == stack::kTcpReleaseKind) {
      // A close after a fork: no longer this library's page (it let go of it at the close), but the
      // new incarnation, which kept the page, must hear of it, or it holds the connection forever.
      const std::uint32_t word = header != nullptr ? header->control.generation.load(std::memory_order_acquire) : 0;
      if (header != nullptr && status_of(*header) != TcpSocketStatus::free && (word == body.generation || word == 0)) {
        (void)link.outbox.push(message);
      }
      continue;
    }
    if (header == nullptr || owner_of(link, body.page) < 0 || !page_survived(replica, body.page, body.generation)) {
      continue;
    }
    // The new incarnation cleared kick_pending; this kick is still on its way.
    if (message.kind == stack::kTcpKickKind) link.region.page(body.page)->control.kick_pending.store(1, std::memory_order_release);
    (void)link.outbox.push(message);  // it held them all a moment ago
  }
  for (const int id : reopen) {
    if (!send_connect(id, replica)) fail(sockets_[static_cast<std::size_t>(id)], ENOBUFS);
  }
  for (const int id : relisten) {
    // The first listen may still wait in the ring, and the new incarnation then makes the group
    // before this one arrives (its answer, to the abandoned ticket, is given back): join it.
    sockets_[static_cast<std::size_t>(id)].open_options |= stack::kTcpOpenRejoin;
    if (!send_listen(id, replica)) fail_listener(id, ENOBUFS);
  }
  for (const int id : kept) {
    const Socket& entry = sockets_[static_cast<std::size_t>(id)];
    if (entry.kind != Kind::listener) {
      send_or_owe_options(id);
      continue;
    }
    const ListenerPart& part = entry.parts[replica];
    if (!send_options(replica, part.page, part.generation, entry.options)) fail_listener(id, ENOBUFS);
  }
  (void)kick_owed_pages(replica);
}

}  // namespace flotilla::sockets
