// ICMPv4 message view (RFC 792) and builders for echo replies and error messages.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "components/wire/bytes.hpp"
#include "components/wire/errors.hpp"

namespace flotilla::wire {

class Ipv4Packet;

inline constexpr std::size_t kIcmpHeaderBytes = 8;
inline constexpr std::uint8_t kIcmpEchoReply = 0;
inline constexpr std::uint8_t kIcmpDestinationUnreachable = 3;
inline constexpr std::uint8_t kIcmpEchoRequest = 8;
inline constexpr std::uint8_t kIcmpTimeExceeded = 11;
inline constexpr std::uint8_t kIcmpParameterProblem = 12;
// Destination-unreachable codes.
inline constexpr std::uint8_t kIcmpNetUnreachable = 0;
inline constexpr std::uint8_t kIcmpHostUnreachable = 1;
inline constexpr std::uint8_t kIcmpProtocolUnreachable = 2;
inline constexpr std::uint8_t kIcmpPortUnreachable = 3;
inline constexpr std::uint8_t kIcmpFragmentationNeeded = 4;
// Time-exceeded codes.
inline constexpr std::uint8_t kIcmpTtlExceeded = 0;
inline constexpr std::uint8_t kIcmpReassemblyTimeExceeded = 1;

class IcmpPacket {
 public:
  // too_short below 8 bytes; bad_checksum unless the checksum over all of bytes verifies.
  // Pass the IPv4 payload (already trimmed to the IP total length).
  static Checked<IcmpPacket> parse(std::span<std::byte> bytes);
  static IcmpPacket unchecked(std::span<std::byte> bytes) { return IcmpPacket(bytes); }

  std::uint8_t type() const { return load_u8(bytes_, 0); }
  std::uint8_t code() const { return load_u8(bytes_, 1); }
  std::uint16_t checksum() const { return load_be16(bytes_, 2); }
  std::uint16_t identifier() const { return load_be16(bytes_, 4); }  // echo only
  std::uint16_t sequence() const { return load_be16(bytes_, 6); }    // echo only
  std::uint32_t rest_of_header() const { return load_be32(bytes_, 4); }
  std::span<std::byte> payload() const { return bytes_.subspan(kIcmpHeaderBytes); }
  std::span<std::byte> bytes() const { return bytes_; }
  // Error messages (unreachable, time exceeded, parameter problem) quote the offending packet.
  bool is_error() const;

  void set_type(std::uint8_t type) const { store_u8(bytes_, 0, type); }
  void set_code(std::uint8_t code) const { store_u8(bytes_, 1, code); }
  void fill_checksum() const;

 private:
  explicit IcmpPacket(std::span<std::byte> bytes) : bytes_(bytes) {}

  std::span<std::byte> bytes_;
};

// Writes the echo reply to request (same identifier, sequence and data). out may be the request's
// own bytes (reply in place) or overlap them. Returns the message length, or 0 if out is too small.
std::size_t emit_echo_reply(std::span<std::byte> out, const IcmpPacket& request);

// Error messages quote the offending IP header plus the first 8 bytes of its payload (RFC 792,
// RFC 1812 4.3.2.3). They return the ICMP message length, or 0 if out is too small or the offending
// packet does not start with a well-formed IPv4 header (never report errors about garbage).
// out may overlap the offending packet.
std::size_t emit_destination_unreachable(std::span<std::byte> out, std::uint8_t code,
                                         std::span<const std::byte> offending_ip_packet);
std::size_t emit_time_exceeded(std::span<std::byte> out, std::uint8_t code,
                               std::span<const std::byte> offending_ip_packet);
// Fragmentation needed (code 4) carrying the next-hop MTU (RFC 1191).
std::size_t emit_fragmentation_needed(std::span<std::byte> out, std::uint16_t next_hop_mtu,
                                      std::span<const std::byte> offending_ip_packet);

// RFC 1122 3.2.2 / RFC 1812 4.3.2.7: no ICMP error about an ICMP error, a non-first fragment, or a
// packet sent to or from a broadcast/multicast/zero address. Link-level broadcast is the
// caller's to check (the frame's destination MAC).
bool icmp_error_allowed(const Ipv4Packet& offending);

}  // namespace flotilla::wire
