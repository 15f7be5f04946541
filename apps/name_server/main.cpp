// flotilla-name-server: one member of the name fleet as a supervised process. Its channels whose
// names start with "fleet-" lead to the other name servers; every other channel leads to a
// client (the supervisor's channel, "supervisor", among them). The first incarnation founds the
// fleet with the peers of its fleet channels; a restarted one joins: it waits for a snapshot from
// the member the supervisor names in member_up, installs it, and then tells the supervisor it
// serves (fleet_joined). member_down from the supervisor forces a dead member out. A member_up
// naming this server itself means no live member holds the table: it founds the fleet again.
#include <cstdio>
#include <deque>
#include <string_view>
#include <vector>

#include "components/name/arbitrated_commit.hpp"
#include "components/name/channel_transport.hpp"
#include "dataplane/component_main.hpp"

namespace {

using namespace flotilla;

constexpr std::string_view kFleetPrefix = "fleet-";

// The member as a component. Its pump reads every channel itself (fleet traffic and clients'
// requests are one protocol), so the loop feeds it nothing: poll() runs the pump. The supervisor's
// fleet notices arrive as control messages.
class NameServerComponent final : public Component {
 public:
  NameServerComponent(ComponentHost& host, ChannelOutputs& channels, std::uint64_t ttl_ms)
      : host_(host), channels_(channels), config_(config_for(host, ttl_ms)),
        founder_(host.incarnation() <= 1), joined_reported_(founder_),
        server_(founder_ ? name::NameServer(config_, fleet_members(channels)) : name::NameServer(config_)),
        pump_(server_) {
    for (std::size_t i = 0; i < channels.count(); ++i) {
      name_channels_.push_back(name::NameChannel::wrap(channels.end(i)));
      if (channels.name(i).starts_with(kFleetPrefix)) {
        pump_.add_member(static_cast<name::MemberId>(channels.peer(i)), name_channels_.back());
      } else {
        pump_.add_client(channels.peer(i), name_channels_.back());
      }
    }
  }

  void on_message(std::size_t, const Message&, std::uint64_t) override {}
  bool reads(std::size_t) const override { return false; }

  bool poll(std::uint64_t) override {
    if (broken_) return false;
    auto handled = pump_.poll(host_.loop().now_ms());
    if (!handled) {
      broken_ = true;  // a peer corrupted a ring: stop talking, keep the heartbeat
      host_.counters().add(Counter::corrupt);
      return false;
    }
    if (!joined_reported_ && server_.installed()) {
      joined_reported_ = host_.send_control(Message::make(
          kFleetJoinedKind, FleetNotice{host_.id(), kNoComponent, host_.incarnation()}));
    }
    if (*handled > 0) channels_.served();
    return *handled > 0;
  }

  // member_up and member_down from the supervisor.
  void on_fleet_notice(const Message& message) {
    const bool down = message.kind == kMemberDownKind;
    const bool up = message.kind == kMemberUpKind;
    const auto notice = message.read<FleetNotice>();
    const bool valid_member = notice.member != kNoComponent && notice.member < kSupervisorId;
    if ((!down && !up) || !valid_member || (up && notice.donor >= kSupervisorId)) {
      host_.counters().add(Counter::corrupt);
      return;
    }
    const auto member = static_cast<name::MemberId>(notice.member);
    if (member == config_.self) {
      // No live member holds the table: found the fleet again, alone and empty.
      if (up && notice.donor == host_.id() && !server_.installed()) {
        server_.install(name::Snapshot{name::NameTable(config_.table), {}, {}, {config_.self}, 1}, out_);
        submit();
      }
      return;
    }
    if (up) {
      // What the member's channel still holds was written by its dead incarnation: taken as the
      // new one's, a prepare there would never be resolved.
      if (auto dropped = pump_.discard_input(member); !dropped) broken_ = true;
    }
    if (down) {
      server_.force_out(member, out_);
    } else if (server_.installed()) {
      server_.add_member(member, out_);
      if (notice.donor == host_.id()) server_.send_snapshot(member, out_);
    }
    submit();
  }

 private:
  static name::ServerConfig config_for(ComponentHost& host, std::uint64_t ttl_ms) {
    name::ServerConfig config;
    config.self = static_cast<name::MemberId>(host.id());
    config.table.ttl_ms = ttl_ms;
    config.seed = host.id() * 1'000'003ull + host.incarnation();
    return config;
  }
  std::vector<name::MemberId> fleet_members(const ChannelOutputs& channels) const {
    std::vector<name::MemberId> members{config_.self};
    for (std::size_t i = 0; i < channels.count(); ++i) {
      if (channels.name(i).starts_with(kFleetPrefix)) members.push_back(static_cast<name::MemberId>(channels.peer(i)));
    }
    return members;
  }
  void submit() {
    if (auto status = pump_.submit(out_); !status) broken_ = true;
    out_.clear();
  }

  ComponentHost& host_;
  ChannelOutputs& channels_;
  name::ServerConfig config_;
  bool founder_;
  bool joined_reported_;
  bool broken_ = false;
  name::NameServer server_;
  name::ServerPump pump_;
  std::deque<name::NameChannel> name_channels_;  // stable addresses for the pump
  std::vector<name::Envelope> out_;
};

struct NameServerProgram {
  static constexpr const char* kName = "flotilla-name-server";
  static constexpr const char* kDescription =
      "flotilla-name-server: one member of the name fleet. Started by the supervisor, which hands it its "
      "fleet and client channels.";
  struct Options {
    std::uint64_t ttl_ms = 1000;
  };
  static void declare_options(CLI::App& app, Options& options) {
    app.name(kName);
    app.add_option("--ttl-ms", options.ttl_ms, "How long clients may cache a lookup");
  }
  // Nothing beyond the runtime's calls: every packet and message moves through shared memory.
  static SandboxPolicy sandbox() { return {}; }

  static Result<std::unique_ptr<Component>> create(ComponentHost& host, ChannelOutputs& channels, Options& options) {
    auto server = std::make_unique<NameServerComponent>(host, channels, options.ttl_ms);
    host.on_control_message([member = server.get()](const Message& message) { member->on_fleet_notice(message); });
    return std::unique_ptr<Component>(std::move(server));
  }
};

}  // namespace

int main(int argc, char** argv) { return component_main<NameServerProgram>(argc, argv); }
