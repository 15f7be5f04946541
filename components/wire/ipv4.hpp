// IPv4 packet view (RFC 791) and header builder. Addresses are host order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "components/wire/bytes.hpp"
#include "components/wire/errors.hpp"

namespace flotilla::wire {

inline constexpr std::size_t kIpv4HeaderBytes = 20;
inline constexpr std::size_t kIpv4MaxHeaderBytes = 60;
inline constexpr std::uint8_t kProtocolIcmp = 1;
inline constexpr std::uint8_t kProtocolTcp = 6;
inline constexpr std::uint8_t kProtocolUdp = 17;

class Ipv4Packet {
 public:
  // Checks, in order: too_short (< 20 bytes), bad_version, bad_header_length (IHL < 5 or the
  // header is longer than the buffer), bad_total_length (below the header or past the buffer),
  // bad_checksum. The view is trimmed to total_length, so Ethernet padding is not part of it.
  static Checked<Ipv4Packet> parse(std::span<std::byte> bytes);
  // For building: the caller sized bytes to the whole packet (header first).
  static Ipv4Packet unchecked(std::span<std::byte> bytes) { return Ipv4Packet(bytes); }

  std::uint8_t version() const { return load_u8(bytes_, 0) >> 4; }
  std::size_t header_length() const { return std::size_t{load_u8(bytes_, 0) & 0x0fu} * 4; }
  std::uint8_t tos() const { return load_u8(bytes_, 1); }
  std::uint16_t total_length() const { return load_be16(bytes_, 2); }
  std::uint16_t identification() const { return load_be16(bytes_, 4); }
  bool dont_fragment() const { return (load_u8(bytes_, 6) & 0x40) != 0; }
  bool more_fragments() const { return (load_u8(bytes_, 6) & 0x20) != 0; }
  std::size_t fragment_offset_bytes() const {
    return std::size_t{load_be16(bytes_, 6) & 0x1fffu} * 8;
  }
  bool is_fragment() const { return more_fragments() || fragment_offset_bytes() != 0; }
  std::uint8_t ttl() const { return load_u8(bytes_, 8); }
  std::uint8_t protocol() const { return load_u8(bytes_, 9); }
  std::uint16_t header_checksum() const { return load_be16(bytes_, 10); }
  std::uint32_t source() const { return load_be32(bytes_, 12); }
  std::uint32_t destination() const { return load_be32(bytes_, 16); }

  std::span<std::byte> header() const { return bytes_.first(header_length()); }
  std::span<std::byte> options() const {
    return bytes_.subspan(kIpv4HeaderBytes, header_length() - kIpv4HeaderBytes);
  }
  std::span<std::byte> payload() const {
    return bytes_.subspan(header_length(), total_length() - header_length());
  }
  // The whole packet as parsed (trimmed to total_length).
  std::span<std::byte> bytes() const { return bytes_; }

  // Setters write through to the buffer; call fill_checksum() after the last one.
  void set_ttl(std::uint8_t ttl) const { store_u8(bytes_, 8, ttl); }
  void set_source(std::uint32_t address) const { store_be32(bytes_, 12, address); }
  void set_destination(std::uint32_t address) const { store_be32(bytes_, 16, address); }
  void set_total_length(std::uint16_t length) const { store_be16(bytes_, 2, length); }
  void set_identification(std::uint16_t id) const { store_be16(bytes_, 4, id); }
  void fill_checksum() const;

 private:
  explicit Ipv4Packet(std::span<std::byte> bytes) : bytes_(bytes) {}

  std::span<std::byte> bytes_;
};

struct Ipv4Header {
  std::uint32_t source, destination;
  std::uint8_t protocol;
  std::uint8_t ttl = 64;
  std::uint8_t tos = 0;
  std::uint16_t identification = 0;
  bool dont_fragment = true;
  std::uint16_t payload_length;
};

// Writes a 20-byte header (no options, checksum filled) in front of a payload the caller places at
// out[20..]. Returns 20, or 0 if out is smaller than 20 or the total length would exceed 65535.
std::size_t emit_ipv4_header(std::span<std::byte> out, const Ipv4Header& header);

}  // namespace flotilla::wire
