// A fake name server for tests of placement by the name fleet: it records the lookups TcpSockets
// sends, refuses them while its channel has "no room", and keeps the clock the test moves; the
// test builds the answers (reply_to) and hands them to TcpSockets::handle_name_reply.
#pragma once

#include <optional>
#include <vector>

#include "components/name/name_message.hpp"
#include "sockets/tcp_sockets.hpp"

namespace flotilla::sockets::testing {

constexpr ComponentId kAppComponent = 20;
constexpr ComponentId kNameServer = 30;
constexpr ComponentId kReplicaComponents[] = {11, 12};  // by replica index

// The name server's side: what it was sent, whether its channel has room, and the time.
struct NameServerSide {
  std::vector<name::NameMessage> received;
  bool room = true;
  std::uint64_t now_ms = 5000;
  std::optional<std::uint64_t> wake_at;  // the latest expire_lookups time asked for
};

class FakeNameLink final : public TcpNameLink {
 public:
  explicit FakeNameLink(NameServerSide& side) : side_(side) {}
  Result<bool> send(const name::NameMessage& message) override {
    if (!side_.room) return false;
    side_.received.push_back(message);
    return true;
  }
  std::uint64_t now_ms() override { return side_.now_ms; }
  void wake_at(std::uint64_t when_ms) override { side_.wake_at = when_ms; }

 private:
  NameServerSide& side_;
};

// Who is who, as use_name_fleet takes it, for two replicas.
inline TcpNamePeers fake_name_peers() {
  return TcpNamePeers{kAppComponent, kNameServer, {kReplicaComponents[0], kReplicaComponents[1]}};
}

// The server's answer to `lookup`: `component` with `status`.
inline name::NameMessage reply_to(const name::NameMessage& lookup, ComponentId component,
                                  name::NameErrc status = name::NameErrc::ok) {
  name::NameMessage reply;
  reply.kind = name::NameMsgKind::reply;
  reply.from = static_cast<name::MemberId>(kNameServer);
  reply.client = lookup.client;
  reply.cookie = lookup.cookie;
  reply.status = status;
  reply.endpoint = name::Endpoint{component, 0, 1};
  return reply;
}

}  // namespace flotilla::sockets::testing
