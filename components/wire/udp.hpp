// UDP datagram view (RFC 768) and builder. Addresses (for the pseudo header) are host order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "components/wire/bytes.hpp"
#include "components/wire/errors.hpp"

namespace flotilla::wire {

inline constexpr std::size_t kUdpHeaderBytes = 8;

class UdpDatagram {
 public:
  // too_short below 8 bytes; bad_length if the length field is below 8 or past the buffer;
  // bad_checksum if a non-zero checksum does not verify (zero means "none" over IPv4).
  // The view is trimmed to the length field.
  static Checked<UdpDatagram> parse(std::span<std::byte> bytes, std::uint32_t source,
                                    std::uint32_t destination);
  static UdpDatagram unchecked(std::span<std::byte> bytes) { return UdpDatagram(bytes); }

  std::uint16_t source_port() const { return load_be16(bytes_, 0); }
  std::uint16_t destination_port() const { return load_be16(bytes_, 2); }
  std::uint16_t length() const { return load_be16(bytes_, 4); }
  std::uint16_t checksum() const { return load_be16(bytes_, 6); }
  std::span<std::byte> payload() const {
    return bytes_.subspan(kUdpHeaderBytes, length() - kUdpHeaderBytes);
  }
  std::span<std::byte> bytes() const { return bytes_; }

 private:
  explicit UdpDatagram(std::span<std::byte> bytes) : bytes_(bytes) {}

  std::span<std::byte> bytes_;
};

// Writes the 8-byte header in front of the payload already in out[8 .. 8 + payload_length) and
// fills the checksum (a computed 0 goes out as 0xffff). Returns 8 + payload_length, or 0 if out
// is too small or the datagram would exceed 65535 bytes.
std::size_t emit_udp(std::span<std::byte> out, std::uint16_t source_port,
                     std::uint16_t destination_port, std::uint32_t source,
                     std::uint32_t destination, std::size_t payload_length);

}  // namespace flotilla::wire
