// Test helper: bytes from "45 00 00 2c ..." text, so known packets read like a capture dump.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string_view>
#include <vector>

namespace flotilla::wire::test {

inline std::vector<std::byte> hex_bytes(std::string_view text) {
  const auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::vector<std::byte> bytes;
  int high = -1;
  for (const char c : text) {
    if (c == ' ' || c == '\n') continue;
    const int value = nibble(c);
    if (value < 0) throw std::invalid_argument("hex_bytes: not a hex digit");
    if (high < 0) {
      high = value;
    } else {
      bytes.push_back(static_cast<std::byte>(high * 16 + value));
      high = -1;
    }
  }
  if (high >= 0) throw std::invalid_argument("hex_bytes: odd number of digits");
  return bytes;
}

// Known-good packets between 10.77.0.1 and 10.77.0.2. Checksums were computed with an independent
// one's-complement sum in Python (not with checksum.cpp); the ICMP one is also worked by hand in
// icmp_test.cpp.
inline constexpr std::string_view kIcmpEchoRequest =
    "08 00 2d 0a 12 34 00 01 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f";
inline constexpr std::string_view kIpv4HeaderForIcmp =
    "45 00 00 2c 1c 46 40 00 40 01 09 ef 0a 4d 00 01 0a 4d 00 02";
inline constexpr std::string_view kUdpDatagram =  // 40000 -> 53, "hello flotilla"
    "9c 40 00 35 00 16 5f 0f 68 65 6c 6c 6f 20 66 6c 6f 74 69 6c 6c 61";
inline constexpr std::string_view kTcpSyn =  // 51000 -> 80, Linux-style SYN options
    "c7 38 00 50 11 22 33 44 00 00 00 00 a0 02 fa f0 28 7e 00 00"
    "02 04 05 b4 04 02 08 0a 01 02 03 04 00 00 00 00 01 03 03 07";
inline constexpr std::uint32_t kHostA = 0x0a4d0001;  // 10.77.0.1
inline constexpr std::uint32_t kHostB = 0x0a4d0002;  // 10.77.0.2

}  // namespace flotilla::wire::test
