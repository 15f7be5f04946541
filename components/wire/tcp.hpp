// TCP segment view (RFC 9293), option parsing and writing (MSS, window scale, SACK, timestamps:
// RFC 7323, RFC 2018) and the segment builder. Addresses (for the pseudo header) are host order.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <utility>

#include "components/wire/bytes.hpp"
#include "components/wire/errors.hpp"

namespace flotilla::wire {

inline constexpr std::size_t kTcpHeaderBytes = 20;
inline constexpr std::size_t kTcpMaxHeaderBytes = 60;
inline constexpr std::size_t kTcpMaxOptionBytes = kTcpMaxHeaderBytes - kTcpHeaderBytes;

inline constexpr std::uint8_t kTcpFin = 1;
inline constexpr std::uint8_t kTcpSyn = 2;
inline constexpr std::uint8_t kTcpRst = 4;
inline constexpr std::uint8_t kTcpPsh = 8;
inline constexpr std::uint8_t kTcpAck = 16;
inline constexpr std::uint8_t kTcpUrg = 32;
inline constexpr std::uint8_t kTcpEce = 64;
inline constexpr std::uint8_t kTcpCwr = 128;

// Option kinds.
inline constexpr std::uint8_t kTcpOptionEnd = 0;
inline constexpr std::uint8_t kTcpOptionNop = 1;
inline constexpr std::uint8_t kTcpOptionMss = 2;
inline constexpr std::uint8_t kTcpOptionWindowScale = 3;
inline constexpr std::uint8_t kTcpOptionSackPermitted = 4;
inline constexpr std::uint8_t kTcpOptionSack = 5;
inline constexpr std::uint8_t kTcpOptionTimestamps = 8;

class TcpSegment {
 public:
  // Checks, in order: too_short (< 20 bytes), bad_length (more than 65535 bytes: no IPv4 packet
  // carries that), bad_header_length (data offset < 5 or the header past the buffer),
  // bad_checksum (pseudo header over all of bytes), bad_option (an option with length < 2 or
  // running past the header; EOL and NOP are fine). Pass exactly the IPv4 payload.
  // Known options with wrong lengths are left to parse_tcp_options.
  static Checked<TcpSegment> parse(std::span<std::byte> bytes, std::uint32_t source,
                                   std::uint32_t destination);
  static TcpSegment unchecked(std::span<std::byte> bytes) { return TcpSegment(bytes); }

  std::uint16_t source_port() const { return load_be16(bytes_, 0); }
  std::uint16_t destination_port() const { return load_be16(bytes_, 2); }
  std::uint32_t sequence() const { return load_be32(bytes_, 4); }
  std::uint32_t acknowledgment() const { return load_be32(bytes_, 8); }
  std::size_t header_length() const {
    return static_cast<std::size_t>(load_u8(bytes_, 12) >> 4) * 4;
  }
  std::uint8_t flags() const { return load_u8(bytes_, 13); }
  bool has_flags(std::uint8_t mask) const { return (flags() & mask) == mask; }
  std::uint16_t window() const { return load_be16(bytes_, 14); }
  std::uint16_t checksum() const { return load_be16(bytes_, 16); }
  std::uint16_t urgent_pointer() const { return load_be16(bytes_, 18); }
  std::span<std::byte> options() const {
    return bytes_.subspan(kTcpHeaderBytes, header_length() - kTcpHeaderBytes);
  }
  std::span<std::byte> payload() const { return bytes_.subspan(header_length()); }
  std::span<std::byte> bytes() const { return bytes_; }
  // Sequence space the segment occupies: data plus one each for SYN and FIN.
  std::size_t sequence_length() const {
    return payload().size() + ((flags() & kTcpSyn) ? 1 : 0) + ((flags() & kTcpFin) ? 1 : 0);
  }

  void set_source_port(std::uint16_t port) const { store_be16(bytes_, 0, port); }
  void set_destination_port(std::uint16_t port) const { store_be16(bytes_, 2, port); }
  void set_sequence(std::uint32_t value) const { store_be32(bytes_, 4, value); }
  void set_acknowledgment(std::uint32_t value) const { store_be32(bytes_, 8, value); }
  void set_flags(std::uint8_t flags) const { store_u8(bytes_, 13, flags); }
  void set_window(std::uint16_t window) const { store_be16(bytes_, 14, window); }
  // After any change: the checksum covers all of bytes() and the pseudo header.
  void fill_checksum(std::uint32_t source, std::uint32_t destination) const;

 private:
  explicit TcpSegment(std::span<std::byte> bytes) : bytes_(bytes) {}

  std::span<std::byte> bytes_;
};

struct TcpOptions {
  std::optional<std::uint16_t> mss;
  std::optional<std::uint8_t> window_scale;  // as sent; RFC 7323 says treat > 14 as 14
  bool sack_permitted = false;
  std::optional<std::pair<std::uint32_t, std::uint32_t>> timestamps;  // (value, echo reply)
  std::array<std::pair<std::uint32_t, std::uint32_t>, 4> sack_blocks{};  // (left, right) edges
  std::uint8_t sack_block_count = 0;
};

// Walks the options area: bad_option for a length < 2 or past the end, and for known kinds with
// the wrong length (MSS 4, window scale 3, SACK permitted 2, SACK 2 + 8n with n in 1..4,
// timestamps 10). Unknown kinds are skipped; EOL ends the walk; a repeated option: the last wins.
Checked<TcpOptions> parse_tcp_options(std::span<const std::byte> options);

// Writes options (NOP-aligned, padded with EOL to a multiple of 4, at most 40 bytes) into out.
// SACK blocks that do not fit after the other options are left out. Returns the bytes written
// (a multiple of 4), or 0 if out is smaller than needed.
std::size_t emit_tcp_options(std::span<std::byte> out, const TcpOptions& options);

struct TcpHeader {
  std::uint16_t source_port = 0;
  std::uint16_t destination_port = 0;
  std::uint32_t sequence = 0;
  std::uint32_t acknowledgment = 0;
  std::uint8_t flags = 0;
  std::uint16_t window = 0;
  std::uint16_t urgent_pointer = 0;
  std::span<const std::byte> options{};  // raw option bytes; padded with EOL to 4-byte words
};

// The header length emit_tcp writes for options of this size (0 if more than 40 bytes).
inline constexpr std::size_t tcp_header_length(std::size_t options_length) {
  return options_length > kTcpMaxOptionBytes ? 0 : kTcpHeaderBytes + (options_length + 3) / 4 * 4;
}

// Writes the header (tcp_header_length(header.options.size()) bytes) in front of the payload
// already in out[header_length .. header_length + payload_length) and fills the checksum.
// Returns header_length + payload_length, or 0 if the options are over 40 bytes, out is too
// small, or the segment would exceed 65535 bytes. header.options must not overlap out.
std::size_t emit_tcp(std::span<std::byte> out, const TcpHeader& header, std::uint32_t source,
                     std::uint32_t destination, std::size_t payload_length);

}  // namespace flotilla::wire
