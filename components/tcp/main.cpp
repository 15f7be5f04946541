// flotilla-tcp: one TCP replica process. One channel leads to IP; every other channel leads to an
// application using the native TCP socket API, with which it shares a socket region
// (components/formats/tcp_socket_page.hpp). The connection table lives in the state store. The work is in
// ReplicaServer (replica_server.hpp) and the engine under it; this file wires them to channels.
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "dataplane/buffer_send.hpp"
#include "components/tcp/replica_server.hpp"
#include "components/wire/address.hpp"
#include "dataplane/clock.hpp"
#include "dataplane/component_host.hpp"

namespace {

using namespace flotilla;

class ChannelOutputs final : public tcp::ReplicaOutputs {
 public:
  ChannelOutputs(ComponentHost& host, ChannelEnd& ip, ComponentId ip_id, std::vector<ChannelEnd*> apps)
      : host_(host), ip_(ip), ip_id_(ip_id), apps_(std::move(apps)) {}

  bool segment_to_ip(const stack::TransportPacketBody& packet) override {
    return send_with_buffer(host_, ip_, ip_id_, packet.segment,
                                   Message::make(stack::kTransportPacketKind, packet));
  }
  bool control_to_ip(const Message& message) override { return send(ip_, message); }
  bool to_app(std::size_t app, const Message& message) override {
    return app < apps_.size() && send(*apps_[app], message);
  }

 private:
  bool send(ChannelEnd& channel, const Message& message) {
    auto sent = host_.send(channel, std::span(&message, 1));
    return sent && sent.value() == 1;
  }

  ComponentHost& host_;
  ChannelEnd& ip_;
  ComponentId ip_id_;
  std::vector<ChannelEnd*> apps_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"flotilla-tcp: a TCP replica of the Flotilla stack (started by the supervisor)"};
  std::string address_text;
  std::string ip_channel;
  unsigned index = 0;
  unsigned replicas = 1;
  unsigned mss = 1460;
  std::size_t ring_bytes = 1u << 20;
  std::size_t max_connections = 4096;
  std::uint64_t time_wait_ms = 60'000;
  app.add_option("--address", address_text, "The stack's address (and prefix), e.g. 10.77.0.2/24")->required();
  app.add_option("--index", index, "This replica's number, 0 .. replicas-1")->capture_default_str();
  app.add_option("--replicas", replicas, "How many TCP replicas the stack runs")
      ->check(CLI::Range(1, 16))->capture_default_str();
  app.add_option("--ip-channel", ip_channel, "Channel to IP (default: ip-<component name>)");
  app.add_option("--mss", mss, "The MSS announced in SYNs (the link's MTU - 40)")
      ->check(CLI::Range(536, 8960))->capture_default_str();
  app.add_option("--ring-bytes", ring_bytes, "Size of each socket ring (a power of two, at least 4096)")
      ->capture_default_str();
  app.add_option("--max-connections", max_connections, "Connections this replica can hold")
      ->check(CLI::Range(16, 1 << 20))->capture_default_str();
  app.add_option("--time-wait-ms", time_wait_ms, "How long a closed connection stays in TIME_WAIT")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  const auto cidr = wire::parse_cidr(address_text);
  const auto plain = cidr ? std::nullopt : wire::parse_ipv4(address_text);
  if (!cidr && !plain) {
    std::fprintf(stderr, "flotilla-tcp: --address '%s' is not an IPv4 address\n", address_text.c_str());
    return 2;
  }
  if (index >= replicas) {
    std::fprintf(stderr, "flotilla-tcp: --index %u must be below --replicas %u\n", index, replicas);
    return 2;
  }
  if (ring_bytes < 4096 || (ring_bytes & (ring_bytes - 1)) != 0) {
    std::fprintf(stderr, "flotilla-tcp: --ring-bytes %zu is not a power of two of at least 4096\n", ring_bytes);
    return 2;
  }

  auto attached = ComponentHost::attach(WaitPolicy::shared_core());
  if (!attached) {
    std::fprintf(stderr, "flotilla-tcp: %s\n", attached.error().message().c_str());
    return 1;
  }
  ComponentHost& host = *attached.value();
  if (ip_channel.empty()) ip_channel = "ip-" + std::string(host.name());
  ChannelEnd* ip = host.channel(ip_channel);
  if (ip == nullptr) {
    std::fprintf(stderr, "flotilla-tcp: no channel '%s' to IP\n", ip_channel.c_str());
    return 2;
  }
  const ComponentId ip_id = host.peer_of(ip_channel);

  // Every other channel is an application, with the socket region named after the channel.
  std::vector<ChannelEnd*> app_channels;
  std::vector<ComponentId> app_ids;
  std::vector<std::span<std::byte>> app_regions;
  for (std::size_t i = 0; i < host.channel_count(); ++i) {
    if (&host.channel_at(i) == ip) continue;
    app_channels.push_back(&host.channel_at(i));
    app_ids.push_back(host.channel_peer(i));
    const auto region = host.region(formats::tcp_region_name(host.channel_name(i)));
    if (region.empty()) {
      std::fprintf(stderr, "flotilla-tcp: channel '%s' has no region '%s': that application gets no sockets\n",
                   std::string(host.channel_name(i)).c_str(),
                   formats::tcp_region_name(host.channel_name(i)).c_str());
    }
    app_regions.push_back(region);
  }

  tcp::ReplicaSettings settings;
  settings.index = static_cast<std::uint16_t>(index);
  settings.count = static_cast<std::uint16_t>(replicas);
  settings.address = cidr ? cidr->address : *plain;
  settings.ring_bytes = ring_bytes;
  settings.engine.mss = static_cast<std::uint16_t>(mss);
  settings.engine.max_connections = max_connections;
  settings.engine.time_wait_ns = time_wait_ms * 1'000'000;

  ChannelOutputs outputs(host, *ip, ip_id, app_channels);
  auto created = tcp::ReplicaServer::create(host.pool(), host.id(), host.state(), app_regions, settings, outputs,
                                            host.named_counters(), host.incarnation(), monotonic_ns());
  if (!created) {
    std::fprintf(stderr, "flotilla-tcp: %s\n", created.error().message().c_str());
    return 1;
  }
  tcp::ReplicaServer& server = *created.value();
  NamedCounter& malformed = host.named_counters().counter("malformed_messages");

  (void)host.loop().add_input(ip->in, [&](std::span<const Message> messages) {
    const std::uint64_t now = monotonic_ns();
    for (const Message& message : messages) {
      if (message.kind == stack::kTransportPacketKind) {
        server.on_segment(message.read<stack::TransportPacketBody>(), now);
        host.served();
      } else {
        malformed.add();
      }
    }
  });
  for (std::size_t i = 0; i < app_channels.size(); ++i) {
    (void)host.loop().add_input(app_channels[i]->in, [&, i](std::span<const Message> messages) {
      const std::uint64_t now = monotonic_ns();
      for (const Message& message : messages) server.on_app_message(i, message, now);
      host.served();
    });
  }
  host.on_peer_restarted([&](ComponentId peer, std::uint64_t) {
    if (peer == ip_id) {
      server.announce(false);  // a restarted IP kept its flow table; it only needs to know who we are
      return;
    }
    for (std::size_t i = 0; i < app_ids.size(); ++i) {
      if (app_ids[i] == peer) server.on_app_restarted(i, monotonic_ns());
    }
  });

  // The engine's timers are no ring's messages: a loop timer wakes the loop for the next one.
  Timer wake([](Timer&) {});
  (void)host.loop().add_poller([&] {
    const bool worked = server.poll(monotonic_ns());
    host.loop().wake_at(wake, server.next_deadline_ns());
    return worked;
  });
  std::fprintf(stderr, "flotilla-tcp: replica %u of %u at %s, %zu application(s)\n", index, replicas,
               wire::format_ipv4(settings.address).c_str(), app_channels.size());
  // Announced to IP (in create): from here on the replica takes new connections, so a restarted one
  // has recovered now, even if no segment comes its way for a while.
  host.served();
  host.run();
  return 0;
}
