// Initial sequence numbers, RFC 6528: ISN = M + F(4-tuple, secret), M a clock ticking every 4 µs
// (RFC 9293 3.4.1), F a keyed PRF (SipHash-2-4 here, 32 bits of it). Off-path attackers cannot
// guess it, and a new incarnation of a connection starts above the old one's numbers.
#pragma once

#include <cstdint>

#include "components/tcp/algorithms/four_tuple.hpp"

namespace flotilla::tcp {

// The clock M: one tick per 4 µs, 250 000 per second.
inline constexpr std::uint64_t kIsnTickNs = 4'000;

// `secret` is 128 random bits chosen once per host boot (RFC 6528 3), shared by every replica so
// that any of them computes the same ISN for a tuple.
std::uint32_t initial_sequence(const FourTuple& tuple, const std::uint64_t secret[2],
                               std::uint64_t now_ns);

}  // namespace flotilla::tcp
