// VerdictCache: see verdict_cache.hpp.
#include "components/ip/verdict_cache.hpp"

#include "components/wire/ipv4.hpp"
#include "components/wire/tcp.hpp"

namespace flotilla::ip {

std::optional<VerdictCache::Lookup> VerdictCache::flow_of(std::span<std::byte> bytes, bool inbound) {
  if (bytes.size() < wire::kIpv4HeaderBytes) return std::nullopt;
  const auto packet = wire::Ipv4Packet::unchecked(bytes);
  const bool tcp = packet.protocol() == wire::kProtocolTcp;
  if (!tcp && packet.protocol() != wire::kProtocolUdp) return std::nullopt;
  const std::size_t header_bytes = packet.header_length();
  if (header_bytes < wire::kIpv4HeaderBytes || bytes.size() < header_bytes + (tcp ? 14u : 4u)) return std::nullopt;
  // The first bytes of TCP's header and UDP's are the two ports alike.
  const auto transport = wire::TcpSegment::unchecked(bytes.subspan(header_bytes));
  Lookup lookup;
  lookup.key = FlowKey{.source = packet.source(),
                       .destination = packet.destination(),
                       .source_port = transport.source_port(),
                       .destination_port = transport.destination_port(),
                       .protocol = packet.protocol(),
                       .inbound = inbound};
  lookup.must_ask = tcp && (transport.flags() & (wire::kTcpSyn | wire::kTcpFin | wire::kTcpRst)) != 0;
  return lookup;
}

std::size_t VerdictCache::slot_of(const FlowKey& key) {
  std::uint64_t mixed = (std::uint64_t{key.source} << 32 | key.destination) ^
                        (std::uint64_t{key.source_port} << 24 | std::uint64_t{key.destination_port} << 8 |
                         std::uint64_t{key.protocol} << 1 | (key.inbound ? 1u : 0u));
  mixed ^= mixed >> 33;
  mixed *= 0xff51afd7ed558ccdull;
  mixed ^= mixed >> 33;
  return static_cast<std::size_t>(mixed) & (kEntries - 1);
}

bool VerdictCache::passes(const Lookup& lookup, std::uint64_t now_ms) const {
  if (lookup.must_ask) return false;
  const Entry& entry = entries_[slot_of(lookup.key)];
  return entry.key == lookup.key && entry.pending == 0 && now_ms < entry.valid_until_ms;
}

void VerdictCache::asked(const FlowKey& key) {
  Entry& entry = entries_[slot_of(key)];
  if (entry.key == key) {
    ++entry.pending;
    return;
  }
  // Another flow's entry with verdicts pending keeps its place (its packets stay in order); this
  // flow then goes uncached, every packet asking pf.
  if (entry.pending != 0) return;
  entry = Entry{key, 1, 0};
}

void VerdictCache::answered(const FlowKey& key, bool cacheable, std::uint64_t now_ms) {
  Entry& entry = entries_[slot_of(key)];
  if (!(entry.key == key) || entry.pending == 0) return;  // not asked through this entry
  --entry.pending;
  entry.valid_until_ms = cacheable ? now_ms + kLifetimeMs : 0;
}

}  // namespace flotilla::ip
