// 32-bit TCP sequence-number arithmetic (RFC 9293 3.4): numbers wrap, so order is the sign of the
// int32 difference. Valid while the two numbers are less than 2^31 apart.
#pragma once

#include <cstdint>

namespace flotilla::tcp {

// a - b as a signed distance (positive: a is after b).
constexpr std::int32_t seq_diff(std::uint32_t a, std::uint32_t b) {
  return static_cast<std::int32_t>(a - b);
}
constexpr bool seq_lt(std::uint32_t a, std::uint32_t b) { return seq_diff(a, b) < 0; }
constexpr bool seq_le(std::uint32_t a, std::uint32_t b) { return seq_diff(a, b) <= 0; }
constexpr bool seq_gt(std::uint32_t a, std::uint32_t b) { return seq_diff(a, b) > 0; }
constexpr bool seq_ge(std::uint32_t a, std::uint32_t b) { return seq_diff(a, b) >= 0; }
constexpr std::uint32_t seq_max(std::uint32_t a, std::uint32_t b) { return seq_ge(a, b) ? a : b; }
constexpr std::uint32_t seq_min(std::uint32_t a, std::uint32_t b) { return seq_le(a, b) ? a : b; }

}  // namespace flotilla::tcp
