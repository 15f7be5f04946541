// PfServer: verdicts for IP; see pf_server.hpp.
#include "components/pf/pf_server.hpp"

#include <optional>

#include "components/formats/xdp_block_list.hpp"
#include "components/pf/xdp_offload.hpp"
#include "components/wire/bytes.hpp"
#include "components/wire/ipv4.hpp"
#include "components/wire/tcp.hpp"

namespace flotilla::pf {
namespace {

// What the rules look at, from an IPv4 packet. Fragments after the first carry no ports.
std::optional<PacketSummary> summarize(std::span<std::byte> bytes, stack::Direction direction) {
  auto packet = wire::Ipv4Packet::parse(bytes);
  if (!packet) return std::nullopt;
  PacketSummary summary{};
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

Result<std::unique_ptr<PfServer>> PfServer::create(ChannelOutputs& channels, std::size_t ip_channel,
                                                   RuleSet rules, std::span<std::byte> state,
                                                   std::span<std::byte> xdp_region,
                                                   NamedCounterTable& counters) {
  if (ip_channel >= channels.count()) return Error{Errc::invalid_argument, 0, "pf: no channel to IP"};
  auto states = StateTable::attach(state);
  if (!states) return states.error();
  const std::size_t restored = states->size();
  std::size_t offloaded = 0;
  if (!xdp_region.empty()) {
    auto published = publish_offload(rules, xdp_region);
    if (!published) return published.error();
    offloaded = published.value();
  }
  std::unique_ptr<PfServer> server(
      new PfServer(channels, ip_channel, Filter(std::move(rules), std::move(states.value()), counters), counters));
  server->restored_states_ = restored;
  server->offloaded_rules_ = offloaded;
  return server;
}

PfServer::PfServer(ChannelOutputs& channels, std::size_t ip_channel, Filter filter, NamedCounterTable& counters)
    : channels_(channels),
      ip_channel_(ip_channel),
      ip_(channels.peer(ip_channel)),
      filter_(std::move(filter)),
      unreadable_(counters.counter("unreadable_packets")),
      malformed_(counters.counter("malformed_messages")),
      answers_lost_(counters.counter("answers_lost")) {}

stack::VerdictBody PfServer::verdict_for(const stack::VerdictRequestBody& request, std::uint64_t now_ms) {
  stack::VerdictBody verdict{request.ticket, stack::Action::block, 0, 0, request.packet.generation};
  // IP keeps the buffer, parked while it waits for this verdict; a handle that is not IP's, or
  // bytes that do not parse, are blocked.
  auto bytes = channels_.pool().bytes(parked_owner(ip_), request.packet);
  const auto summary = bytes ? summarize(bytes.value(), request.direction) : std::nullopt;
  if (!summary) {
    unreadable_.add();
    return verdict;
  }
  const Decision decision = filter_.decide(*summary, now_ms);
  verdict.action = decision.action;
  verdict.rule = decision.rule;
  // The rules look at direction, protocol, addresses and ports only, and states change on SYN, FIN
  // and RST only: a pass of any other TCP or UDP packet holds for its whole flow.
  const bool moves_states = summary->protocol == wire::kProtocolTcp &&
                            (summary->tcp_flags & (wire::kTcpSyn | wire::kTcpFin | wire::kTcpRst)) != 0;
  if (decision.action == stack::Action::pass && summary->has_ports && !moves_states) {
    verdict.flags |= stack::kVerdictCacheable;
  }
  return verdict;
}

void PfServer::on_message(std::size_t channel, const Message& message, std::uint64_t now_ns) {
  if (channel != ip_channel_ || message.kind != stack::kVerdictRequestKind) {
    malformed_.add();
    return;
  }
  if (answer_count_ == answers_.size()) send_answers();
  const stack::VerdictBody verdict = verdict_for(message.read<stack::VerdictRequestBody>(), now_ns / 1'000'000);
  answers_[answer_count_++] = Message::make(stack::kVerdictKind, verdict);
}

void PfServer::on_burst_end(std::size_t) {
  send_answers();
  channels_.served();
}

void PfServer::send_answers() {
  const std::size_t sent = channels_.send_burst(ip_channel_, std::span(answers_.data(), answer_count_));
  answers_lost_.add(answer_count_ - sent);  // IP asks again on its next tick
  answer_count_ = 0;
}

void PfServer::on_tick(std::uint64_t now_ns) { (void)filter_.expire(now_ns / 1'000'000); }

}  // namespace flotilla::pf
