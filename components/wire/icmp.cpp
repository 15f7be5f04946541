// ICMP parsing and building; see icmp.hpp.
#include "components/wire/icmp.hpp"

#include <cstring>

#include "components/wire/address.hpp"
#include "components/wire/checksum.hpp"
#include "components/wire/ipv4.hpp"

namespace flotilla::wire {

namespace {

constexpr std::size_t kQuotedPayloadBytes = 8;

bool is_error_type(std::uint8_t type) {
  return type == kIcmpDestinationUnreachable || type == 4 /* source quench */ ||
         type == 5 /* redirect */ || type == kIcmpTimeExceeded || type == kIcmpParameterProblem;
}

// How much of the offending packet to quote: its header plus 8 payload bytes, no more than it
// has. 0 if it does not start with a sane IPv4 header.
std::size_t quoted_length(std::span<const std::byte> offending) {
  if (offending.size() < kIpv4HeaderBytes) return 0;
  if ((load_u8(offending, 0) >> 4) != 4) return 0;
  const std::size_t header_length = std::size_t{load_u8(offending, 0) & 0x0fu} * 4;
  if (header_length < kIpv4HeaderBytes || header_length > offending.size()) return 0;
  std::size_t available = offending.size();
  const std::size_t total_length = load_be16(offending, 2);
  if (total_length >= header_length && total_length < available) available = total_length;
  const std::size_t wanted = header_length + kQuotedPayloadBytes;
  return wanted < available ? wanted : available;
}

std::size_t emit_error(std::span<std::byte> out, std::uint8_t type, std::uint8_t code,
                       std::uint32_t rest_of_header, std::span<const std::byte> offending) {
  const std::size_t quoted = quoted_length(offending);
  if (quoted == 0) return 0;
  const std::size_t length = kIcmpHeaderBytes + quoted;
  if (out.size() < length) return 0;
  // Move the quote first: out may overlap the offending packet.
  std::memmove(out.data() + kIcmpHeaderBytes, offending.data(), quoted);
  store_u8(out, 0, type);
  store_u8(out, 1, code);
  store_be32(out, 4, rest_of_header);
  IcmpPacket::unchecked(out.first(length)).fill_checksum();
  return length;
}

}  // namespace

Checked<IcmpPacket> IcmpPacket::parse(std::span<std::byte> bytes) {
  if (bytes.size() < kIcmpHeaderBytes) return WireError::too_short;
  if (internet_checksum(bytes) != 0) return WireError::bad_checksum;
  return IcmpPacket(bytes);
}

bool IcmpPacket::is_error() const { return is_error_type(type()); }

void IcmpPacket::fill_checksum() const {
  store_be16(bytes_, 2, 0);
  store_be16(bytes_, 2, internet_checksum(bytes_));
}

std::size_t emit_echo_reply(std::span<std::byte> out, const IcmpPacket& request) {
  const std::span<const std::byte> message = request.bytes();
  if (out.size() < message.size()) return 0;
  // memmove keeps identifier, sequence and data and tolerates any overlap, including in place.
  if (out.data() != message.data()) std::memmove(out.data(), message.data(), message.size());
  const auto reply = IcmpPacket::unchecked(out.first(message.size()));
  reply.set_type(kIcmpEchoReply);
  reply.set_code(0);
  reply.fill_checksum();
  return message.size();
}

std::size_t emit_destination_unreachable(std::span<std::byte> out, std::uint8_t code,
                                         std::span<const std::byte> offending_ip_packet) {
  return emit_error(out, kIcmpDestinationUnreachable, code, 0, offending_ip_packet);
}

std::size_t emit_time_exceeded(std::span<std::byte> out, std::uint8_t code,
                               std::span<const std::byte> offending_ip_packet) {
  return emit_error(out, kIcmpTimeExceeded, code, 0, offending_ip_packet);
}

std::size_t emit_fragmentation_needed(std::span<std::byte> out, std::uint16_t next_hop_mtu,
                                      std::span<const std::byte> offending_ip_packet) {
  return emit_error(out, kIcmpDestinationUnreachable, kIcmpFragmentationNeeded, next_hop_mtu,
                    offending_ip_packet);
}

bool icmp_error_allowed(const Ipv4Packet& offending) {
  if (offending.fragment_offset_bytes() != 0) return false;
  const auto special = [](std::uint32_t address) {
    return address == 0 || address == kIpv4Broadcast || is_multicast_ipv4(address);
  };
  if (special(offending.source()) || special(offending.destination())) return false;
  if (offending.protocol() == kProtocolIcmp) {
    const auto payload = offending.payload();
    // A message too short to have a type is garbage: do not answer it either.
    if (payload.empty() || is_error_type(load_u8(payload, 0))) return false;
  }
  return true;
}

}  // namespace flotilla::wire
