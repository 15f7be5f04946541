// IPv4 parsing and building; see ipv4.hpp.
#include "components/wire/ipv4.hpp"

#include "components/wire/checksum.hpp"

namespace flotilla::wire {

Checked<Ipv4Packet> Ipv4Packet::parse(std::span<std::byte> bytes) {
  if (bytes.size() < kIpv4HeaderBytes) return WireError::too_short;
  const Ipv4Packet whole(bytes);
  if (whole.version() != 4) return WireError::bad_version;
  const std::size_t header_length = whole.header_length();
  if (header_length < kIpv4HeaderBytes || header_length > bytes.size()) {
    return WireError::bad_header_length;
  }
  const std::size_t total_length = whole.total_length();
  if (total_length < header_length || total_length > bytes.size()) {
    return WireError::bad_total_length;
  }
  if (internet_checksum(bytes.first(header_length)) != 0) return WireError::bad_checksum;
  return Ipv4Packet(bytes.first(total_length));
}

void Ipv4Packet::fill_checksum() const {
  store_be16(bytes_, 10, 0);
  store_be16(bytes_, 10, internet_checksum(header()));
}

std::size_t emit_ipv4_header(std::span<std::byte> out, const Ipv4Header& header) {
  const std::size_t total_length = kIpv4HeaderBytes + header.payload_length;
  if (out.size() < kIpv4HeaderBytes || total_length > 0xffff) return 0;
  store_u8(out, 0, 0x45);  // version 4, five 32-bit words: no options
  store_u8(out, 1, header.tos);
  store_be16(out, 2, static_cast<std::uint16_t>(total_length));
  store_be16(out, 4, header.identification);
  store_be16(out, 6, header.dont_fragment ? 0x4000 : 0);
  store_u8(out, 8, header.ttl);
  store_u8(out, 9, header.protocol);
  store_be16(out, 10, 0);
  store_be32(out, 12, header.source);
  store_be32(out, 16, header.destination);
  store_be16(out, 10, internet_checksum(out.first(kIpv4HeaderBytes)));
  return kIpv4HeaderBytes;
}

}  // namespace flotilla::wire
