// The supervisor's side of the name fleet: which name server serves, telling the fleet about
// members that die and rejoin, registering every component incarnation, and reading the table.
#include <algorithm>

#include "dataplane/clock.hpp"
#include "recovery/supervisor_slots.hpp"

namespace flotilla::recovery {

using namespace supervisor_detail;

bool Supervisor::has_name_fleet() const {
  return std::any_of(slots_.begin(), slots_.end(), [](const auto& slot) { return slot->name_server; });
}

Supervisor::Slot* Supervisor::serving_name_server(std::string_view name) {
  for (auto& slot : slots_) {
    if (!slot->name_server || slot->status != ComponentStatus::running) continue;
    if (!slot->fleet_ready && !slot->fleet_alone) continue;  // a founder-again queues until it serves
    if (name.empty() || slot->config.name == name) return slot.get();
  }
  return nullptr;
}

void Supervisor::fleet_member_down(const Slot& dead) {
  const Message notice = Message::make(kMemberDownKind, FleetNotice{dead.id, kNoComponent, dead.incarnation});
  for (auto& slot : slots_) {
    if (slot.get() == &dead || !slot->name_server || slot->status != ComponentStatus::running) continue;
    // A full control ring means a server that does not read it; the supervisor cannot help that.
    if (auto sent = slot->to_component.send_burst(std::span(&notice, 1)); !sent || sent.value() != 1) {
      ++fleet_stats_.bad_messages;
    }
  }
  // A joiner that was copying from the dead member needs another donor.
  for (auto& slot : slots_) {
    if (slot->name_server && slot->status == ComponentStatus::running && !slot->fleet_ready &&
        !slot->fleet_alone && slot->fleet_donor == dead.id) {
      fleet_member_up(*slot);
    }
  }
}

void Supervisor::fleet_member_up(Slot& joiner) {
  Slot* donor = nullptr;
  for (auto& slot : slots_) {
    if (slot.get() != &joiner && slot->name_server && slot->status == ComponentStatus::running &&
        (slot->fleet_ready || slot->fleet_alone)) {
      donor = slot.get();
      break;
    }
  }
  if (donor == nullptr) {
    // Nobody holds the table: the joiner founds the fleet again, empty, and every running
    // component is registered anew. (Its own control ring gets the notice, naming itself.)
    joiner.fleet_alone = true;
    joiner.fleet_donor = joiner.id;
    const Message alone = Message::make(kMemberUpKind, FleetNotice{joiner.id, joiner.id, joiner.incarnation});
    if (auto sent = joiner.to_component.send_burst(std::span(&alone, 1)); !sent || sent.value() != 1) {
      ++fleet_stats_.bad_messages;
    }
    for (auto& slot : slots_) {
      if (slot->status != ComponentStatus::running) continue;
      queue_registrations(static_cast<std::size_t>(slot->id - 1));
    }
    return;
  }
  joiner.fleet_donor = donor->id;
  const Message notice = Message::make(kMemberUpKind, FleetNotice{joiner.id, donor->id, joiner.incarnation});
  for (auto& slot : slots_) {
    if (slot.get() == &joiner || !slot->name_server || slot->status != ComponentStatus::running) continue;
    if (auto sent = slot->to_component.send_burst(std::span(&notice, 1)); !sent || sent.value() != 1) {
      ++fleet_stats_.bad_messages;
    }
  }
}

void Supervisor::on_fleet_message(Slot& server, const name::NameMessage& message) {
  if (message.client != kSupervisorId || message.from != server.id) {
    ++fleet_stats_.bad_messages;
    return;
  }
  if (name::is_snapshot_kind(message.kind)) {
    if (dump_server_ != &server || !dump_) return;  // a late dump we stopped waiting for
    dump_->feed(message);
    return;
  }
  if (message.kind != name::NameMsgKind::reply) {
    ++fleet_stats_.bad_messages;
    return;
  }
  for (auto it = registrations_.begin(); it != registrations_.end(); ++it) {
    if (it->server != &server || it->cookie != message.cookie) continue;
    if (message.status != name::NameErrc::ok) {
      ++fleet_stats_.registration_failures;
      it->server = nullptr;  // try again
      return;
    }
    const Slot& owner = *slots_[it->slot];
    ++fleet_stats_.registrations;
    log_.add(Event{now_ns(), EventKind::registered, owner.config.name, it->incarnation,
                   it->change.name + " via " + server.config.name, message.version});
    registrations_.erase(it);
    return;
  }
  // A reply to a registration resent or superseded since: nothing to do.
}

void Supervisor::queue_registrations(std::size_t index) {
  const Slot& owner = *slots_[index];
  std::erase_if(registrations_, [index](const Registration& r) { return r.slot == index; });
  name::Change direct;
  direct.op = name::ChangeOp::register_direct;
  direct.name = "/proc/" + owner.config.name;
  direct.owner = owner.id;
  direct.endpoint = name::Endpoint{owner.id, 0, owner.incarnation};
  registrations_.push_back(Registration{index, owner.incarnation, direct});
  if (owner.config.group.empty()) return;
  const std::string group = "/net/" + owner.config.group;
  direct.name = group + "/" + std::to_string(owner.config.replica_index);
  registrations_.push_back(Registration{index, owner.incarnation, direct});
  // The group belongs to the supervisor, which adds every replica to it.
  name::Change member;
  member.op = name::ChangeOp::add_member;
  member.name = group;
  member.owner = kSupervisorId;
  member.member = direct.name;
  registrations_.push_back(Registration{index, owner.incarnation, member});
}

void Supervisor::pump_fleet() {
  for (auto& slot : slots_) {
    if (!slot->name_server) continue;
    slot->fleet_received.clear();
    auto got = slot->fleet_link.receive(slot->fleet_received, 256);
    if (!got) {
      ++fleet_stats_.bad_messages;
      continue;
    }
    for (const auto& message : slot->fleet_received) on_fleet_message(*slot, message);
  }
  const std::uint64_t now = now_ns();
  for (Registration& registration : registrations_) {
    if (registration.server != nullptr) {
      if (now - registration.sent_ns < kRegistrationTimeoutNs) continue;
      ++fleet_stats_.registration_failures;  // no answer: ask again, maybe elsewhere
      registration.server = nullptr;
    }
    Slot* server = serving_name_server();
    if (server == nullptr) return;  // queued until a name server serves
    name::NameMessage request;
    request.kind = name::NameMsgKind::request;
    request.from = name::kClientSource;
    request.client = kSupervisorId;
    request.cookie = next_cookie_++;
    name::put_change(request, registration.change);
    auto sent = server->fleet_link.send(request);
    if (!sent) {
      ++fleet_stats_.bad_messages;
      continue;
    }
    if (*sent != name::SendOutcome::sent) return;  // ring full: next round
    registration.server = server;
    registration.cookie = request.cookie;
    registration.sent_ns = now;
  }
}

Result<std::vector<NameRow>> Supervisor::names(std::string_view server_name,
                                               std::chrono::milliseconds timeout) {
  if (!has_name_fleet()) return Error{Errc::invalid_argument, 0, "no name fleet in this configuration"};
  Slot* server = serving_name_server(server_name);
  if (server == nullptr) {
    return Error{Errc::invalid_argument, 0,
                 server_name.empty() ? "no name server is serving" : "that name server is not serving"};
  }
  name::NameMessage request;
  request.kind = name::NameMsgKind::dump;
  request.from = name::kClientSource;
  request.client = kSupervisorId;
  const auto deadline = MonoClock::now() + timeout;
  dump_server_ = server;
  dump_ = std::make_unique<name::SnapshotDecoder>();
  bool asked = false;
  while (MonoClock::now() < deadline && dump_server_ == server &&
         dump_->state() == name::SnapshotDecoder::State::receiving) {
    if (!asked) {
      auto sent = server->fleet_link.send(request);
      if (!sent) break;
      asked = *sent == name::SendOutcome::sent;
    }
    poll(std::chrono::milliseconds(5));
  }
  const bool complete = dump_server_ == server && dump_->state() == name::SnapshotDecoder::State::complete;
  dump_server_ = nullptr;
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
