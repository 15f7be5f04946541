// flotilla-pf: the packet filter process. IP asks it, for every packet, whether the packet may
// pass; it answers by ticket. It maps the buffer pool read-only (it reads packets IP keeps, and can
// neither change nor free them), and keeps its connection states in the state store, so a restart
// forgets nothing and IP simply asks again about what was pending.
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <variant>

#include <CLI/CLI.hpp>

#include "components/pf/filter.hpp"
#include "components/pf/rules.hpp"
#include "components/pf/state_table.hpp"
#include "components/wire/bytes.hpp"
#include "components/wire/ipv4.hpp"
#include "dataplane/component_host.hpp"

namespace {

using namespace flotilla;

// What the rules look at, from an IPv4 packet. Fragments after the first carry no ports.
std::optional<pf::PacketSummary> summarize(std::span<std::byte> bytes, stack::Direction direction) {
  auto packet = wire::Ipv4Packet::parse(bytes);
  if (!packet) return std::nullopt;
  pf::PacketSummary summary{};
  summary.direction = direction;
  summary.protocol = packet->protocol();
  summary.source = packet->source();
  summary.destination = packet->destination();
  const auto payload = packet->payload();
  const bool ported = packet->protocol() == wire::kProtocolTcp || packet->protocol() == wire::kProtocolUdp;
  if (ported && packet->fragment_offset_bytes() == 0 && payload.size() >= 4) {
    summary.has_ports = true;
    summary.source_port = wire::load_be16(payload, 0);
    summary.destination_port = wire::load_be16(payload, 2);
    if (packet->protocol() == wire::kProtocolTcp && payload.size() >= 14) {
      summary.tcp_flags = std::to_integer<std::uint8_t>(payload[13]);
    }
  }
  return summary;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"flotilla-pf: the packet filter of the Flotilla stack (started by the supervisor)"};
  std::string rules_text;
  std::string rules_file;
  std::string channel_name = "ip-pf";
  app.add_option("--rules", rules_text, "Rule text (one rule per line)");
  app.add_option("--rules-file", rules_file, "Read the rules from this file")->check(CLI::ExistingFile);
  app.add_option("--channel", channel_name, "Channel to IP")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  std::string source = "rules";
  if (!rules_file.empty()) {
    std::ifstream file(rules_file);
    std::ostringstream contents;
    contents << file.rdbuf();
    rules_text = contents.str();
    source = rules_file;
  }
  auto parsed = pf::parse_rules(rules_text, source);
  if (auto* error = std::get_if<pf::RuleError>(&parsed)) {
    std::fprintf(stderr, "flotilla-pf: %s\n", error->message.c_str());
    return 2;
  }

  auto attached = ComponentHost::attach(WaitPolicy::shared_core());
  if (!attached) {
    std::fprintf(stderr, "flotilla-pf: %s\n", attached.error().message().c_str());
    return 1;
  }
  ComponentHost& host = *attached.value();
  ChannelEnd* ip = host.channel(channel_name);
  if (ip == nullptr) {
    std::fprintf(stderr, "flotilla-pf: no channel '%s' to IP\n", channel_name.c_str());
    return 2;
  }
  const ComponentId ip_id = host.peer_of(channel_name);
  auto states = pf::StateTable::attach(host.state());
  if (!states) {
    std::fprintf(stderr, "flotilla-pf: state store: %s\n", states.error().message().c_str());
    return 1;
  }
  const std::size_t restored_states = states->size();
  pf::Filter filter(std::move(std::get<pf::RuleSet>(parsed)), std::move(states.value()));

  NamedCounterTable& named = host.named_counters();
  NamedCounter& passed = named.counter("passed");
  NamedCounter& blocked = named.counter("blocked");
  NamedCounter& state_hits = named.counter("state_hits");
  NamedCounter& unreadable = named.counter("unreadable_packets");
  NamedCounter& malformed = named.counter("malformed_messages");
  NamedCounter& answers_lost = named.counter("answers_lost");

  std::array<Message, ComponentLoop::kBurst> answers{};
  (void)host.loop().add_input(ip->in, [&](std::span<const Message> messages) {
    const std::uint64_t now = host.loop().now_ms();
    std::size_t count = 0;
    for (const Message& message : messages) {
      if (message.kind != stack::kVerdictRequestKind) {
        malformed.add();
        continue;
      }
      const auto request = message.read<stack::VerdictRequestBody>();
      stack::VerdictBody verdict{request.ticket, stack::Action::block, 0, 0, request.packet.generation};
      // IP keeps the buffer, parked while it waits for this verdict; a handle that is not IP's,
      // or bytes that do not parse, are blocked.
      auto bytes = host.pool().bytes(parked_owner(ip_id), request.packet);
      const auto summary = bytes ? summarize(bytes.value(), request.direction) : std::nullopt;
      if (!summary) {
        unreadable.add();
      } else {
        const pf::Decision decision = filter.decide(*summary, now);
        verdict.action = decision.action;
        verdict.rule = decision.rule;
        (decision.action == stack::Action::pass ? passed : blocked).add();
        if (decision.from_state) state_hits.add();
      }
      answers[count++] = Message::make(stack::kVerdictKind, verdict);
    }
    auto sent = host.send(*ip, std::span(answers.data(), count));
    const std::size_t delivered = sent ? sent.value() : 0;
    answers_lost.add(count - delivered);  // IP asks again on its next tick
    host.served();
  });
  Timer expire([&](Timer& self) {
    (void)filter.expire(host.loop().now_ms());
    host.loop().timers().arm(self, host.loop().now_ms() + 1000);
  });
  host.loop().timers().arm(expire, host.loop().now_ms() + 1000);
  std::fprintf(stderr, "flotilla-pf: %zu rules, %zu states kept from before\n", filter.rules().size(),
               restored_states);
  host.run();
  return 0;
}
