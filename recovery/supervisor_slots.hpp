// Inside the supervisor: what it keeps per component, channel and declared region. Shared by
// supervisor.cpp (spawning, watching, restarting) and supervisor_fleet.cpp (its side of the name
// fleet); nothing outside recovery/ includes it.
#pragma once

#include <algorithm>
#include <cstring>
#include <deque>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "components/name/channel_transport.hpp"
#include "recovery/supervisor.hpp"

namespace flotilla::recovery {

struct Supervisor::Channel {
  ChannelConfig config;
  SharedRegion region;
  std::size_t a;  // slot indices
  std::size_t b;
};

struct Supervisor::DeclaredRegion {
  RegionConfig config;
  SharedRegion region;
  UniqueFd read_only;  // what readers get: it cannot be mapped writable
};

struct Supervisor::Slot {
  ComponentConfig config;
  std::string binary;
  ComponentId id;
  SharedRegion control;
  SharedRegion state;
  ControlBlock* block = nullptr;
  RingProducer to_component;
  RingConsumer from_component;
  std::vector<std::size_t> channels;  // indices into channels_
  std::vector<std::pair<std::size_t, bool>> regions;  // indices into regions_, writable
  UniqueFd wake;  // external components: the eventfd they sleep on, written by their peers

  // Name servers only: the channel the supervisor opened to it, as a client of the fleet.
  bool name_server = false;
  bool fleet_ready = false;  // serving: a founder, or a joiner that reported fleet_joined
  bool fleet_alone = false;  // told to found the fleet again alone (no live member to copy)
  ComponentId fleet_donor = kNoComponent;  // the member a joiner copies the table from
  SharedRegion fleet_region;
  name::NameChannel fleet_link;
  std::vector<name::NameMessage> fleet_received;

  ComponentStatus status = ComponentStatus::not_started;
  std::uint64_t incarnation = 0;
  pid_t pid = -1;
  UniqueFd pidfd;
  std::size_t restarts = 0;

  std::uint64_t last_heartbeat = 0;
  std::uint64_t heartbeat_changed_ns = 0;
  bool heartbeat_seen = false;
  bool killed_for_hang = false;

  std::deque<std::uint64_t> recent_crashes_ns;
  std::uint64_t restart_due_ns = 0;
  std::uint64_t detected_ns = 0;  // when the last failure was noticed
  bool awaiting_recovery = false;
};

namespace supervisor_detail {

inline constexpr std::string_view kNameServerBinary = "flotilla-name-server";
inline constexpr std::uint32_t kFleetLinkCapacity = 256;
inline constexpr std::uint64_t kRegistrationTimeoutNs = 2'000'000'000;

inline bool is_name_server_binary(std::string_view path) {
  const auto slash = path.rfind('/');
  return (slash == std::string_view::npos ? path : path.substr(slash + 1)) == kNameServerBinary;
}

inline std::string_view entry_kind_name(name::EntryKind kind) {
  switch (kind) {
    case name::EntryKind::direct: return "direct";
    case name::EntryKind::indirect: return "indirect";
    case name::EntryKind::reservation: return "reservation";
  }
  return "unknown";
}

inline void copy_name(char (&out)[kNameBytes], const std::string& name) {
  std::memset(out, 0, kNameBytes);
  std::memcpy(out, name.data(), std::min<std::size_t>(name.size(), kNameBytes - 1));
}

}  // namespace supervisor_detail

}  // namespace flotilla::recovery
