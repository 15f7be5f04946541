// flotilla-name-server: one member of the name fleet as a supervised process. Its channels whose
// names start with "fleet-" lead to the other name servers; every other channel leads to a
// client (the supervisor's channel, "supervisor", among them). The first incarnation founds the
// fleet with the peers of its fleet channels; a restarted one joins: it waits for a snapshot from
// the member the supervisor names in member_up, installs it, and then tells the supervisor it
// serves (fleet_joined). member_down from the supervisor forces a dead member out. A member_up
// naming this server itself means no live member holds the table: it founds the fleet again.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <deque>
#include <string_view>
#include <vector>

#include "components/name/arbitrated_commit.hpp"
#include "components/name/channel_transport.hpp"
#include "dataplane/component_host.hpp"

namespace flotilla::recovery {
namespace {

constexpr std::string_view kFleetPrefix = "fleet-";

int run(ComponentHost& host, std::uint64_t ttl_ms) {
  name::ServerConfig config;
  config.self = static_cast<name::MemberId>(host.id());
  config.table.ttl_ms = ttl_ms;
  config.seed = host.id() * 1'000'003ull + host.incarnation();

  std::deque<name::NameChannel> channels;  // stable addresses for the pump
  std::vector<name::MemberId> members{config.self};
  std::vector<std::pair<bool, ComponentId>> links;  // (member?, peer) per channel
  for (std::size_t i = 0; i < host.channel_count(); ++i) {
    channels.push_back(name::NameChannel::wrap(host.channel_at(i)));
    const bool member = host.channel_name(i).starts_with(kFleetPrefix);
    links.emplace_back(member, host.channel_peer(i));
    if (member) members.push_back(static_cast<name::MemberId>(host.channel_peer(i)));
  }
  const bool founder = host.incarnation() <= 1;
  name::NameServer server = founder ? name::NameServer(config, members) : name::NameServer(config);
  name::ServerPump pump(server);
  for (std::size_t i = 0; i < channels.size(); ++i) {
    if (links[i].first) {
      pump.add_member(static_cast<name::MemberId>(links[i].second), channels[i]);
    } else {
      pump.add_client(links[i].second, channels[i]);
    }
  }

  bool joined_reported = founder;
  bool broken = false;
  std::vector<name::Envelope> out;
  const auto submit = [&] {
    if (auto status = pump.submit(out); !status) broken = true;
    out.clear();
  };
  host.on_control_message([&](const Message& message) {
    const bool down = message.kind == kMemberDownKind;
    const bool up = message.kind == kMemberUpKind;
    const auto notice = message.read<FleetNotice>();
    const bool valid_member = notice.member != kNoComponent && notice.member < kSupervisorId;
    if ((!down && !up) || !valid_member || (up && notice.donor >= kSupervisorId)) {
      host.counters().add(Counter::corrupt);
      return;
    }
    const auto member = static_cast<name::MemberId>(notice.member);
    if (member == config.self) {
      // No live member holds the table: found the fleet again, alone and empty.
      if (up && notice.donor == host.id() && !server.installed()) {
        server.install(name::Snapshot{name::NameTable(config.table), {}, {}, {config.self}, 1}, out);
        submit();
      }
      return;
    }
    if (up) {
      // What the member's channel still holds was written by its dead incarnation: taken as the
      // new one's, a prepare there would never be resolved.
      if (auto dropped = pump.discard_input(member); !dropped) broken = true;
    }
    if (down) {
      server.force_out(member, out);
    } else if (server.installed()) {
      server.add_member(member, out);
      if (notice.donor == host.id()) server.send_snapshot(member, out);
    }
    submit();
  });

  (void)host.loop().add_poller([&] {
    if (broken) return false;
    auto handled = pump.poll(host.loop().now_ms());
    if (!handled) {
      broken = true;  // a peer corrupted a ring: stop talking, keep the heartbeat
      host.counters().add(Counter::corrupt);
      return false;
    }
    if (!joined_reported && server.installed()) {
      joined_reported = host.send_control(Message::make(
          kFleetJoinedKind, FleetNotice{host.id(), kNoComponent, host.incarnation()}));
    }
    if (*handled > 0) host.served();
    return *handled > 0;
  });
  host.run();
  return 0;
}

}  // namespace
}  // namespace flotilla::recovery

int main(int argc, char** argv) {
  using namespace flotilla::recovery;
  CLI::App app{"flotilla-name-server: one member of the name fleet. Started by the supervisor, "
               "which hands it its fleet and client channels."};
  app.name("flotilla-name-server");
  std::uint64_t ttl_ms = 1000;
  app.add_option("--ttl-ms", ttl_ms, "How long clients may cache a lookup");
  CLI11_PARSE(app, argc, argv);
  auto host = flotilla::ComponentHost::attach(flotilla::WaitPolicy::shared_core());
  if (!host) {
    std::fprintf(stderr, "name server: %s\n", host.error().message().c_str());
    return 3;
  }
  return run(**host, ttl_ms);
}
