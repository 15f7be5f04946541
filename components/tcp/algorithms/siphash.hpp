// SipHash-2-4 (Aumasson & Bernstein, "SipHash: a fast short-input PRF", 2012): the keyed hash
// behind ISNs (RFC 6528) and SYN cookies. The key is two 64-bit words: k0 = key bytes 0..7 and
// k1 = key bytes 8..15, each read little-endian, as in the paper.
#pragma once

#include <cstdint>
#include <span>

#include "components/tcp/algorithms/four_tuple.hpp"

namespace flotilla::tcp {

std::uint64_t siphash24(const std::uint64_t key[2], std::span<const std::uint8_t> message);

// What a keyed hash of a connection is for; part of the hashed message, so that one secret can
// serve ISNs and SYN cookies without one value ever standing in for another.
enum class TupleHashPurpose : std::uint8_t { isn = 1, cookie_offset = 2, cookie_check = 3 };

// SipHash-2-4 of (tuple, purpose, extra0, extra1), laid out in a fixed 21-byte little-endian
// message, so every host computes the same value.
std::uint64_t siphash24_tuple(const std::uint64_t key[2], const FourTuple& tuple,
                              TupleHashPurpose purpose, std::uint32_t extra0 = 0,
                              std::uint32_t extra1 = 0);

}  // namespace flotilla::tcp
