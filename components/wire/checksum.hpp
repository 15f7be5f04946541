// The Internet checksum (RFC 1071): one's-complement sum of 16-bit big-endian words.
// Accumulate with checksum_add (only the LAST chunk may have an odd length), then checksum_finish.
// Results are the 16-bit value as store_be16 writes it. Verifying: the sum over a message that
// includes its checksum field finishes to 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace flotilla::wire {

// Adds bytes to a partial sum. The result is folded to at most 0xffff, so it never overflows.
std::uint32_t checksum_add(std::uint32_t partial, std::span<const std::byte> bytes);

// Folds the carries and complements.
std::uint16_t checksum_finish(std::uint32_t partial);

std::uint16_t internet_checksum(std::span<const std::byte> bytes);

// The IPv4 pseudo header of UDP and TCP (addresses in host order; length of header + data).
std::uint32_t pseudo_header_sum(std::uint32_t source, std::uint32_t destination,
                                std::uint8_t protocol, std::uint16_t length);

}  // namespace flotilla::wire
