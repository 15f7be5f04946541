// Big-endian loads and stores at a byte offset. The caller guarantees offset + width fits:
// the views call these only after their checked constructor has validated the lengths.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace flotilla::wire {

inline std::uint8_t load_u8(std::span<const std::byte> bytes, std::size_t offset) {
  return std::to_integer<std::uint8_t>(bytes[offset]);
}

inline std::uint16_t load_be16(std::span<const std::byte> bytes, std::size_t offset) {
  return static_cast<std::uint16_t>((load_u8(bytes, offset) << 8) | load_u8(bytes, offset + 1));
}

inline std::uint32_t load_be32(std::span<const std::byte> bytes, std::size_t offset) {
  return (std::uint32_t{load_be16(bytes, offset)} << 16) | load_be16(bytes, offset + 2);
}

inline void store_u8(std::span<std::byte> bytes, std::size_t offset, std::uint8_t value) {
  bytes[offset] = std::byte{value};
}

inline void store_be16(std::span<std::byte> bytes, std::size_t offset, std::uint16_t value) {
  bytes[offset] = std::byte{static_cast<std::uint8_t>(value >> 8)};
  bytes[offset + 1] = std::byte{static_cast<std::uint8_t>(value)};
}

inline void store_be32(std::span<std::byte> bytes, std::size_t offset, std::uint32_t value) {
  store_be16(bytes, offset, static_cast<std::uint16_t>(value >> 16));
  store_be16(bytes, offset + 2, static_cast<std::uint16_t>(value));
}

}  // namespace flotilla::wire
