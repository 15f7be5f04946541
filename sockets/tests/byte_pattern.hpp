// Bytes a test sends and checks on arrival: `count` of them, different for each `seed`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace flotilla::sockets::testing {

inline std::vector<std::byte> pattern(std::size_t count, std::uint8_t seed) {
  std::vector<std::byte> bytes(count);
  for (std::size_t i = 0; i < count; ++i) bytes[i] = static_cast<std::byte>(seed + i * 7);
  return bytes;
}

}  // namespace flotilla::sockets::testing
