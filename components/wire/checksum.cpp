// The Internet checksum; see checksum.hpp.
#include "components/wire/checksum.hpp"

#include "components/wire/bytes.hpp"

namespace flotilla::wire {

namespace {

std::uint32_t fold(std::uint64_t sum) {
  // Folding a non-zero sum never gives 0: "all zero" (0) and "negative zero" (0xffff) stay apart.
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint32_t>(sum);
}

}  // namespace

std::uint32_t checksum_add(std::uint32_t partial, std::span<const std::byte> bytes) {
  // 64-bit accumulator: no carry is lost before the final fold, whatever the length.
  std::uint64_t sum = partial;
  std::size_t index = 0;
  for (; index + 1 < bytes.size(); index += 2) sum += load_be16(bytes, index);
  if (index < bytes.size()) sum += std::uint64_t{load_u8(bytes, index)} << 8;  // pad the odd byte
  return fold(sum);
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
