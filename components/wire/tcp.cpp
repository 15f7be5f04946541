// TCP parsing and building; see tcp.hpp.
#include "components/wire/tcp.hpp"

#include <cstring>

#include "components/wire/checksum.hpp"
#include "components/wire/ipv4.hpp"

namespace flotilla::wire {

namespace {

constexpr std::size_t kMaxSegmentBytes = 0xffff;
constexpr std::size_t kSackBlockBytes = 8;
constexpr std::size_t kMaxSackBlocks = 4;

// Calls visit(kind, option bytes including kind and length) for every option but EOL and NOP.
// Returns false on a structural error: a length byte missing, below 2, or running past the end.
template <class Visit>
bool walk_options(std::span<const std::byte> options, Visit&& visit) {
  std::size_t at = 0;
  while (at < options.size()) {
    const std::uint8_t kind = load_u8(options, at);
    if (kind == kTcpOptionEnd) return true;
    if (kind == kTcpOptionNop) {
      ++at;
      continue;
    }
    if (at + 1 >= options.size()) return false;
    const std::size_t length = load_u8(options, at + 1);
    if (length < 2 || length > options.size() - at) return false;
    if (!visit(kind, options.subspan(at, length))) return false;
    at += length;
  }
  return true;
}

std::uint16_t segment_checksum(std::span<const std::byte> segment, std::uint32_t source,
                               std::uint32_t destination) {
  const std::uint32_t sum = pseudo_header_sum(source, destination, kProtocolTcp,
                                              static_cast<std::uint16_t>(segment.size()));
  return checksum_finish(checksum_add(sum, segment));
}

}  // namespace

Checked<TcpSegment> TcpSegment::parse(std::span<std::byte> bytes, std::uint32_t source,
                                      std::uint32_t destination) {
  if (bytes.size() < kTcpHeaderBytes) return WireError::too_short;
  if (bytes.size() > kMaxSegmentBytes) return WireError::bad_length;
  const TcpSegment segment(bytes);
  const std::size_t header_length = segment.header_length();
  if (header_length < kTcpHeaderBytes || header_length > bytes.size()) {
    return WireError::bad_header_length;
  }
  if (segment_checksum(bytes, source, destination) != 0) return WireError::bad_checksum;
  const auto any_option = [](std::uint8_t, std::span<const std::byte>) { return true; };
  const bool options_ok = walk_options(segment.options(), any_option);
  if (!options_ok) return WireError::bad_option;
  return segment;
}

void TcpSegment::fill_checksum(std::uint32_t source, std::uint32_t destination) const {
  store_be16(bytes_, 16, 0);
  store_be16(bytes_, 16, segment_checksum(bytes_, source, destination));
}

Checked<TcpOptions> parse_tcp_options(std::span<const std::byte> options) {
  TcpOptions parsed;
  const bool ok = walk_options(options, [&](std::uint8_t kind, std::span<const std::byte> option) {
    const std::size_t length = option.size();
    switch (kind) {
      case kTcpOptionMss:
        if (length != 4) return false;
        parsed.mss = load_be16(option, 2);
        return true;
      case kTcpOptionWindowScale:
        if (length != 3) return false;
        parsed.window_scale = load_u8(option, 2);
        return true;
      case kTcpOptionSackPermitted:
        if (length != 2) return false;
        parsed.sack_permitted = true;
        return true;
      case kTcpOptionSack: {
        const std::size_t blocks = (length - 2) / kSackBlockBytes;
        if ((length - 2) % kSackBlockBytes != 0 || blocks == 0 || blocks > kMaxSackBlocks) {
          return false;
        }
        for (std::size_t i = 0; i < blocks; ++i) {
          parsed.sack_blocks[i] = {load_be32(option, 2 + i * kSackBlockBytes),
                                   load_be32(option, 6 + i * kSackBlockBytes)};
        }
        parsed.sack_block_count = static_cast<std::uint8_t>(blocks);
        return true;
      }
      case kTcpOptionTimestamps:
        if (length != 10) return false;
        parsed.timestamps = std::pair{load_be32(option, 2), load_be32(option, 6)};
        return true;
      default:
        return true;  // unknown kinds are skipped (RFC 9293 3.1)
    }
  });
  if (!ok) return WireError::bad_option;
  return parsed;
}

std::size_t emit_tcp_options(std::span<std::byte> out, const TcpOptions& options) {
  // Build in a local 40-byte area first, so out only needs the final length.
  std::array<std::byte, kTcpMaxOptionBytes> area{};
  const std::span<std::byte> buffer(area);
  std::size_t at = 0;
  const auto put = [&](std::uint8_t value) { store_u8(buffer, at++, value); };
  const auto put16 = [&](std::uint16_t value) { store_be16(buffer, at, value); at += 2; };
  const auto put32 = [&](std::uint32_t value) { store_be32(buffer, at, value); at += 4; };

  if (options.mss) {
    put(kTcpOptionMss);
    put(4);
    put16(*options.mss);
  }
  if (options.timestamps) {
    // SACK permitted rides in the two bytes NOPs would otherwise fill (the layout Linux uses).
    if (options.sack_permitted) {
      put(kTcpOptionSackPermitted);
      put(2);
    } else {
      put(kTcpOptionNop);
      put(kTcpOptionNop);
    }
    put(kTcpOptionTimestamps);
    put(10);
    put32(options.timestamps->first);
    put32(options.timestamps->second);
  } else if (options.sack_permitted) {
    put(kTcpOptionNop);
    put(kTcpOptionNop);
    put(kTcpOptionSackPermitted);
    put(2);
  }
  if (options.window_scale) {
    put(kTcpOptionNop);
    put(kTcpOptionWindowScale);
    put(3);
    put(*options.window_scale);
  }
  const std::size_t count = options.sack_block_count < kMaxSackBlocks ? options.sack_block_count
                                                                      : kMaxSackBlocks;
  const std::size_t room = at + 4 + kSackBlockBytes <= buffer.size()
                               ? (buffer.size() - at - 4) / kSackBlockBytes
                               : 0;
  const std::size_t blocks = count < room ? count : room;
  if (blocks > 0) {
    put(kTcpOptionNop);
    put(kTcpOptionNop);
    put(kTcpOptionSack);
    put(static_cast<std::uint8_t>(2 + blocks * kSackBlockBytes));
    for (std::size_t i = 0; i < blocks; ++i) {
      put32(options.sack_blocks[i].first);
      put32(options.sack_blocks[i].second);
    }
  }
  // Every group above is a whole number of 4-byte words already.
  if (out.size() < at) return 0;
  std::memcpy(out.data(), area.data(), at);
  return at;
}

std::size_t emit_tcp(std::span<std::byte> out, const TcpHeader& header, std::uint32_t source,
                     std::uint32_t destination, std::size_t payload_length) {
  const std::size_t header_length = tcp_header_length(header.options.size());
  if (header_length == 0) return 0;
  const std::size_t length = header_length + payload_length;
  if (payload_length > kMaxSegmentBytes - header_length || out.size() < length) return 0;
  store_be16(out, 0, header.source_port);
  store_be16(out, 2, header.destination_port);
  store_be32(out, 4, header.sequence);
  store_be32(out, 8, header.acknowledgment);
  store_u8(out, 12, static_cast<std::uint8_t>((header_length / 4) << 4));
  store_u8(out, 13, header.flags);
  store_be16(out, 14, header.window);
  store_be16(out, 16, 0);
  store_be16(out, 18, header.urgent_pointer);
  if (!header.options.empty()) {
    std::memcpy(out.data() + kTcpHeaderBytes, header.options.data(), header.options.size());
  }
  for (std::size_t at = kTcpHeaderBytes + header.options.size(); at < header_length; ++at) {
    store_u8(out, at, kTcpOptionEnd);
  }
  TcpSegment::unchecked(out.first(length)).fill_checksum(source, destination);
  return length;
}

}  // namespace flotilla::wire
