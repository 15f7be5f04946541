#include "recovery/registrar.hpp"

#include <algorithm>

#include "dataplane/clock.hpp"

namespace flotilla::recovery {
namespace {

constexpr std::uint32_t kFleetLinkCapacity = 256;
constexpr std::uint64_t kRegistrationTimeoutNs = 2'000'000'000;

std::string_view entry_kind_name(name::EntryKind kind) {
  switch (kind) {
    case name::EntryKind::direct: return "direct";
    case name::EntryKind::indirect: return "indirect";
    case name::EntryKind::reservation: return "reservation";
  }
  return "unknown";
}

}  // namespace

Result<std::unique_ptr<Registrar>> Registrar::attach(Supervisor& supervisor) {
  std::unique_ptr<Registrar> registrar(new Registrar(supervisor));
  const auto& components = supervisor.config().components;
  for (std::size_t i = 0; i < components.size(); ++i) {
    if (components[i].role != ComponentRole::name_server) continue;
    const auto id = static_cast<ComponentId>(i + 1);
    auto end = supervisor.open_supervisor_channel(id, kFleetLinkCapacity);
    if (!end) return end.error();
    NameServer server{.id = id, .name = components[i].name, .link = name::NameChannel::wrap(end.value())};
    registrar->servers_.push_back(std::move(server));
  }
  supervisor.add_observer(*registrar);
  return registrar;
}

Registrar::~Registrar() { supervisor_.remove_observer(*this); }

Registrar::NameServer* Registrar::server_of(ComponentId id) {
  for (NameServer& server : servers_) {
    if (server.id == id) return &server;
  }
  return nullptr;
}

Registrar::NameServer* Registrar::serving(std::string_view name) {
  for (NameServer& server : servers_) {
    if (!server.running) continue;
    if (!server.ready && !server.alone) continue;  // a founder-again queues until it serves
    if (name.empty() || server.name == name) return &server;
  }
  return nullptr;
}

void Registrar::started(const ComponentView& component) {
  if (NameServer* server = server_of(component.id)) {
    server->running = true;
    server->incarnation = component.incarnation;
    // A founder serves from the start; a restarted name server once it reports fleet_joined.
    server->ready = component.incarnation == 1;
    server->alone = false;
    server->donor = kNoComponent;
    if (component.incarnation > 1) member_up(*server);
  }
  if (has_name_fleet()) queue_registrations(component.id, component.incarnation);
}

void Registrar::exited(const ComponentView& component) {
  NameServer* server = server_of(component.id);
  if (server == nullptr) return;
  server->running = false;
  server->ready = false;
  if (!supervisor_.stopping()) member_down(*server);
  for (Registration& registration : registrations_) {
    if (registration.server == server->id) registration.server = kNoComponent;  // resend elsewhere
  }
  if (dump_server_ == server->id) dump_server_ = kNoComponent;
}

void Registrar::stopped(const ComponentView& component) {
  if (NameServer* server = server_of(component.id)) {
    server->running = false;
    server->ready = false;
  }
}

void Registrar::control_message(const ComponentView& component, const Message& message) {
  if (message.kind != kFleetJoinedKind) return;
  const auto notice = message.read<FleetNotice>();
  NameServer* server = server_of(component.id);
  if (server == nullptr || notice.member != component.id || notice.incarnation != component.incarnation) {
    ++stats_.bad_messages;
    return;
  }
  if (server->ready) return;
  server->ready = true;
  server->alone = false;
  supervisor_.record(EventKind::joined, component.id, component.incarnation, "serving");
}

void Registrar::tell_servers(const Message& notice, ComponentId except) {
  for (const NameServer& server : servers_) {
    if (server.id == except || !server.running) continue;
    // A full control ring means a server that does not read it; the supervisor cannot help that.
    if (!supervisor_.send_control(server.id, notice)) ++stats_.bad_messages;
  }
}

void Registrar::member_down(const NameServer& dead) {
  tell_servers(Message::make(kMemberDownKind, FleetNotice{dead.id, kNoComponent, dead.incarnation}), dead.id);
  // A joiner that was copying from the dead member needs another donor.
  for (NameServer& server : servers_) {
    if (server.running && !server.ready && !server.alone && server.donor == dead.id) member_up(server);
  }
}

void Registrar::member_up(NameServer& joiner) {
  const auto donor = std::find_if(servers_.begin(), servers_.end(), [&](const NameServer& server) {
    return server.id != joiner.id && server.running && (server.ready || server.alone);
  });
  if (donor == servers_.end()) {
    // Nobody holds the table: the joiner founds the fleet again, empty, and every running
    // component is registered anew. (Its own control ring gets the notice, naming itself.)
    joiner.alone = true;
    joiner.donor = joiner.id;
    const Message alone = Message::make(kMemberUpKind, FleetNotice{joiner.id, joiner.id, joiner.incarnation});
    if (!supervisor_.send_control(joiner.id, alone)) ++stats_.bad_messages;
    for (const ComponentView& component : supervisor_.components()) {
      if (component.status == ComponentStatus::running) queue_registrations(component.id, component.incarnation);
    }
    return;
  }
  joiner.donor = donor->id;
  tell_servers(Message::make(kMemberUpKind, FleetNotice{joiner.id, donor->id, joiner.incarnation}), joiner.id);
}

void Registrar::on_fleet_message(NameServer& server, const name::NameMessage& message) {
  if (message.client != kSupervisorId || message.from != server.id) {
    ++stats_.bad_messages;
    return;
  }
  if (name::is_snapshot_kind(message.kind)) {
    if (dump_server_ != server.id || !dump_) return;  // a late dump we stopped waiting for
    dump_->feed(message);
    return;
  }
  if (message.kind != name::NameMsgKind::reply) {
    ++stats_.bad_messages;
    return;
  }
  for (auto it = registrations_.begin(); it != registrations_.end(); ++it) {
    if (it->server != server.id || it->cookie != message.cookie) continue;
    if (message.status != name::NameErrc::ok) {
      ++stats_.registration_failures;
      it->server = kNoComponent;  // try again
      return;
    }
    ++stats_.registrations;
    supervisor_.record(EventKind::registered, it->component, it->incarnation,
                       it->change.name + " via " + server.name, message.version);
    registrations_.erase(it);
    return;
  }
  // A reply to a registration resent or superseded since: nothing to do.
}

void Registrar::queue_registrations(ComponentId component, std::uint64_t incarnation) {
  const ComponentConfig& config = supervisor_.config().components[component - 1];
  std::erase_if(registrations_, [component](const Registration& r) { return r.component == component; });
  name::Change direct;
  direct.op = name::ChangeOp::register_direct;
  direct.name = "/proc/" + config.name;
  direct.owner = component;
  direct.endpoint = name::Endpoint{component, 0, incarnation};
  registrations_.push_back(Registration{component, incarnation, direct});
  if (config.group.empty()) return;
  const std::string group = "/net/" + config.group;
  direct.name = group + "/" + std::to_string(config.replica_index);
  registrations_.push_back(Registration{component, incarnation, direct});
  // The group belongs to the supervisor, which adds every replica to it.
  name::Change member;
  member.op = name::ChangeOp::add_member;
  member.name = group;
  member.owner = kSupervisorId;
  member.member = direct.name;
  registrations_.push_back(Registration{component, incarnation, member});
}

void Registrar::polled() {
  for (NameServer& server : servers_) {
    server.received.clear();
    auto got = server.link.receive(server.received, 256);
    if (!got) {
      ++stats_.bad_messages;
      continue;
    }
    for (const auto& message : server.received) on_fleet_message(server, message);
  }
  const std::uint64_t now = monotonic_ns();
  for (Registration& registration : registrations_) {
    if (registration.server != kNoComponent) {
      if (now - registration.sent_ns < kRegistrationTimeoutNs) continue;
      ++stats_.registration_failures;  // no answer: ask again, maybe elsewhere
      registration.server = kNoComponent;
    }
    NameServer* server = serving();
    if (server == nullptr) return;  // queued until a name server serves
    name::NameMessage request;
    request.kind = name::NameMsgKind::request;
    request.from = name::kClientSource;
    request.client = kSupervisorId;
    request.cookie = next_cookie_++;
    name::put_change(request, registration.change);
    auto sent = server->link.send(request);
    if (!sent) {
      ++stats_.bad_messages;
      continue;
    }
    if (*sent != name::SendOutcome::sent) return;  // ring full: next round
    registration.server = server->id;
    registration.cookie = request.cookie;
    registration.sent_ns = now;
  }
}

Result<std::vector<NameRow>> Registrar::names(std::string_view server_name, std::chrono::milliseconds timeout) {
  if (!has_name_fleet()) return Error{Errc::invalid_argument, 0, "no name fleet in this configuration"};
  NameServer* server = serving(server_name);
  if (server == nullptr) {
    return Error{Errc::invalid_argument, 0,
                 server_name.empty() ? "no name server is serving" : "that name server is not serving"};
  }
  const ComponentId asked_of = server->id;
  name::NameMessage request;
  request.kind = name::NameMsgKind::dump;
  request.from = name::kClientSource;
  request.client = kSupervisorId;
  const auto deadline = MonoClock::now() + timeout;
  dump_server_ = asked_of;
  dump_ = std::make_unique<name::SnapshotDecoder>();
  bool asked = false;
  while (MonoClock::now() < deadline && dump_server_ == asked_of &&
         dump_->state() == name::SnapshotDecoder::State::receiving) {
    if (!asked) {
      auto sent = server->link.send(request);
      if (!sent) break;
      asked = *sent == name::SendOutcome::sent;
    }
    supervisor_.poll(std::chrono::milliseconds(5));
  }
  const bool complete = dump_server_ == asked_of && dump_->state() == name::SnapshotDecoder::State::complete;
  dump_server_ = kNoComponent;
  if (!complete) {
    dump_.reset();
    return Error{Errc::invalid_argument, 0, "no complete table from the name server"};
  }
  std::vector<NameRow> rows;
  for (const auto& [name, entry] : dump_->snapshot().table.entries()) {
    NameRow row{name, std::string(entry_kind_name(entry.kind)), entry.owner,
                entry.endpoint.incarnation, entry.endpoint.endpoint, entry.version, {}};
    for (const auto& member : entry.members) {
      if (!row.members.empty()) row.members += ' ';
      row.members += member.name + ":" + std::to_string(member.weight);
    }
    rows.push_back(std::move(row));
  }
  dump_.reset();
  return rows;
}

}  // namespace flotilla::recovery
