// SYN cookies, in the style of Linux (net/ipv4/syncookies.c): when the SYN queue is full a
// listener answers a SYN statelessly, coding what it must remember into its ISN, and rebuilds the
// connection from the handshake's final ACK (RFC 4987 3.6).
//
// Cookie = H1(tuple, peer ISN) + (t << 27 | mss_index << 24 | H2(tuple, peer ISN, t, mss_index)),
// 32-bit arithmetic, with
//   t          a counter of 64-second periods (5 bits in the cookie, the full value in H2),
//   mss_index  3 bits: the largest entry of kSynCookieMssTable not above the peer's MSS,
//   H1, H2     keyed SipHash-2-4 (H1 hides the time and MSS bits; H2 is the 24-bit MAC).
// A cookie is accepted while its period is the current or the previous one (64 to 128 s), from
// the same 4-tuple and peer ISN, made with the same secret. No options beyond the MSS survive
// (no window scale, SACK or timestamps), as in Linux without timestamp cookies.
#pragma once

#include <array>
#include <cstdint>
#include <optional>

#include "components/tcp/algorithms/four_tuple.hpp"

namespace flotilla::tcp {

// Common MSS values (IPv4 minimum, tunnels/VPNs, PPPoE, Ethernet); index 0 also stands for
// anything smaller than 536 (RFC 9293 3.7.1's default), as in Linux.
inline constexpr std::array<std::uint16_t, 8> kSynCookieMssTable = {536,  1200, 1300, 1360,
                                                                    1400, 1440, 1452, 1460};
inline constexpr std::uint64_t kSynCookiePeriodNs = 64'000'000'000ull;
// Periods a cookie stays valid: made in period p, accepted in p and p + 1.
inline constexpr std::uint32_t kSynCookieMaxAgePeriods = 1;

// The ISN to put in the SYN-ACK. `peer_isn` is the SYN's sequence number; `mss` the peer's MSS
// option (536 when it had none).
std::uint32_t make_syn_cookie(const FourTuple& tuple, std::uint32_t peer_isn, std::uint16_t mss,
                              const std::uint64_t secret[2], std::uint64_t now_ns);

// Checks the cookie of an ACK that matches no connection: peer_isn = the ACK's seq - 1, cookie =
// its ack - 1. Returns the MSS coded in it (a table entry), or nothing when the cookie is not one
// of ours for this tuple, or too old.
std::optional<std::uint16_t> check_syn_cookie(const FourTuple& tuple, std::uint32_t peer_isn,
                                              std::uint32_t cookie, const std::uint64_t secret[2],
                                              std::uint64_t now_ns);

}  // namespace flotilla::tcp
