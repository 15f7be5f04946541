// The Internet checksum; see checksum.hpp.
#include "components/wire/checksum.hpp"

#include <bit>
#include <cstring>

namespace flotilla::wire {

namespace {

std::uint32_t fold(std::uint64_t sum) {
  // Folding a non-zero sum never gives 0: "all zero" (0) and "negative zero" (0xffff) stay apart.
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint32_t>(sum);
}

}  // namespace

std::uint32_t checksum_add(std::uint32_t partial, std::span<const std::byte> bytes) {
  // RFC 1071's byte-order independence: sum the bytes as native 32-bit words into a 64-bit
  // accumulator (no carry lost below 2^32 words), fold, and swap the bytes of the folded sum on a
  // little-endian host. Eight bytes a step instead of two: the payload's sum was the largest
  // single cost of a TCP replica sending a bulk stream.
  std::uint64_t sum = 0;
  const std::byte* at = bytes.data();
  std::size_t left = bytes.size();
  for (; left >= 32; left -= 32, at += 32) {
    std::uint64_t words[4];
    std::memcpy(words, at, sizeof words);
    for (const std::uint64_t word : words) sum += (word & 0xffffffffu) + (word >> 32);
  }
  for (; left >= 4; left -= 4, at += 4) {
    std::uint32_t word;
    std::memcpy(&word, at, sizeof word);
    sum += word;
  }
  if (left >= 2) {
    std::uint16_t word;
    std::memcpy(&word, at, sizeof word);
    sum += word;
    left -= 2;
    at += 2;
  }
  // The odd last byte is the first of its 16-bit word: its high half in network order.
  if (left == 1) sum += std::uint16_t{std::to_integer<std::uint8_t>(*at)} << (std::endian::native == std::endian::little ? 0 : 8);
  auto folded = static_cast<std::uint16_t>(fold(sum));
  if constexpr (std::endian::native == std::endian::little) folded = __builtin_bswap16(folded);
  return fold(std::uint64_t{partial} + folded);
}

std::uint16_t checksum_finish(std::uint32_t partial) {
  return static_cast<std::uint16_t>(~fold(partial) & 0xffff);
}

std::uint16_t internet_checksum(std::span<const std::byte> bytes) {
  return checksum_finish(checksum_add(0, bytes));
}

std::uint32_t pseudo_header_sum(std::uint32_t source, std::uint32_t destination,
                                std::uint8_t protocol, std::uint16_t length) {
  std::uint64_t sum = 0;
  sum += source >> 16;
  sum += source & 0xffff;
  sum += destination >> 16;
  sum += destination & 0xffff;
  sum += protocol;
  sum += length;
  return fold(sum);
}

}  // namespace flotilla::wire
