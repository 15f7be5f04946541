// VerdictCache: see verdict_cache.hpp.
#include "components/ip/verdict_cache.hpp"

#include "components/wire/bytes.hpp"
#include "components/wire/ipv4.hpp"
#include "components/wire/tcp.hpp"

namespace flotilla::ip {

std::optional<VerdictCache::Lookup> VerdictCache::flow_of(std::span<const std::byte> packet, bool inbound) {
  if (packet.size() < wire::kIpv4HeaderBytes) return std::nullopt;
  const std::size_t header_bytes = std::size_t{wire::load_u8(packet, 0) & 0x0fu} * 4;
  const std::uint8_t protocol = wire::load_u8(packet, 9);
  const bool tcp = protocol == wire::kProtocolTcp;
  if (!tcp && protocol != wire::kProtocolUdp) return std::nullopt;
  if (header_bytes < wire::kIpv4HeaderBytes || packet.size() < header_bytes + (tcp ? 14u : 4u)) return std::nullopt;
  Lookup lookup;
  lookup.key = FlowKey{.source = wire::load_be32(packet, 12),
                       .destination = wire::load_be32(packet, 16),
                       .source_port = wire::load_be16(packet, header_bytes),
                       .destination_port = wire::load_be16(packet, header_bytes + 2),
                       .protocol = protocol,
                       .inbound = inbound};
  if (tcp) {
    const std::uint8_t flags = wire::load_u8(packet, header_bytes + 13);
    lookup.must_ask = (flags & (wire::kTcpSyn | wire::kTcpFin | wire::kTcpRst)) != 0;
  }
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
