// The registrar: the supervisor's side of the name fleet, beside its lifecycle code, which it
// observes. The name servers are the components with `role = "name-server"`; each gets a channel
// to the supervisor, on which the registrar is a client (id kSupervisorId). After every start or
// restart of any component it registers /proc/<name> at the new incarnation (and, for a replica of
// a group, /net/<group>/<index> as a member of the indirect /net/<group>) through a serving name
// server, retrying until one acknowledges. When a name server exits, the others are told to force
// it out (member_down); when it restarts, to let it join again (member_up) with a table copied from
// a serving member, or, with none left, to found the fleet again alone.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "components/name/channel_transport.hpp"
#include "components/name/snapshot_stream.hpp"
#include "dataplane/result.hpp"
#include "recovery/lifecycle_observer.hpp"
#include "recovery/supervisor.hpp"

namespace flotilla::recovery {

// One entry of the name table, as a name server reported it.
struct NameRow {
  std::string name;
  std::string kind;  // direct, indirect, reservation
  ComponentId owner;
  std::uint64_t incarnation;  // of the endpoint (direct entries)
  std::uint32_t endpoint;
  std::uint64_t version;
  std::string members;  // indirect: "name:weight ..."
};

struct FleetStats {
  std::uint64_t registrations = 0;          // acknowledged by the fleet
  std::uint64_t registration_failures = 0;  // refused, timed out, or the server died: retried
  std::uint64_t bad_messages = 0;           // from name servers: malformed, unexpected, or a bad ring
};

class Registrar final : public LifecycleObserver {
 public:
  // Opens the supervisor's channel to every name server of its configuration, and observes it.
  // Before Supervisor::start(), so the first incarnations are granted their channel.
  static Result<std::unique_ptr<Registrar>> attach(Supervisor& supervisor);
  ~Registrar() override;
  Registrar(const Registrar&) = delete;
  Registrar& operator=(const Registrar&) = delete;

  bool has_name_fleet() const { return !servers_.empty(); }
  // A server's table. `server` empty: the lowest-id serving one. Keeps the supervisor watching
  // (Supervisor::poll) while it waits, up to `timeout`.
  Result<std::vector<NameRow>> names(std::string_view server = {},
                                     std::chrono::milliseconds timeout = std::chrono::milliseconds(2000));
  const FleetStats& stats() const { return stats_; }
  // Registrations not yet acknowledged.
  std::size_t pending_registrations() const { return registrations_.size(); }

  void started(const ComponentView& component) override;
  void exited(const ComponentView& component) override;
  void stopped(const ComponentView& component) override;
  void control_message(const ComponentView& component, const Message& message) override;
  void polled() override;

 private:
  struct NameServer {
    ComponentId id;
    std::string name;
    name::NameChannel link;  // the supervisor's end of its channel
    bool running = false;
    std::uint64_t incarnation = 0;
    bool ready = false;  // serving: a founder, or a joiner that reported fleet_joined
    bool alone = false;  // told to found the fleet again alone (no live member to copy)
    ComponentId donor = kNoComponent;  // the member a joiner copies the table from
    std::vector<name::NameMessage> received = {};
  };
  // One name registered for a component at one incarnation.
  struct Registration {
    ComponentId component;
    std::uint64_t incarnation;
    name::Change change;
    ComponentId server = kNoComponent;  // in flight to this name server
    std::uint64_t cookie = 0;
    std::uint64_t sent_ns = 0;
  };

  explicit Registrar(Supervisor& supervisor) : supervisor_(supervisor) {}
  NameServer* server_of(ComponentId id);
  // The lowest-id serving name server, or the one named `name` if it serves.
  NameServer* serving(std::string_view name = {});
  // Queues (again) every name of `component`, at `incarnation`.
  void queue_registrations(ComponentId component, std::uint64_t incarnation);
  void member_down(const NameServer& dead);
  void member_up(NameServer& joiner);
  // Sends a fleet notice to the control ring of every running name server but `except`.
  void tell_servers(const Message& notice, ComponentId except);
  void on_fleet_message(NameServer& server, const name::NameMessage& message);

  Supervisor& supervisor_;
  std::vector<NameServer> servers_;  // in id order
  std::deque<Registration> registrations_;
  std::uint64_t next_cookie_ = 1;
  FleetStats stats_;
  ComponentId dump_server_ = kNoComponent;  // a names() dump in progress
  std::unique_ptr<name::SnapshotDecoder> dump_;
};

}  // namespace flotilla::recovery
