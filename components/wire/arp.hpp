// ARP for IPv4 over Ethernet (RFC 826), the only kind the stack speaks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "components/wire/address.hpp"
#include "components/wire/bytes.hpp"
#include "components/wire/errors.hpp"

namespace flotilla::wire {

inline constexpr std::size_t kArpPacketBytes = 28;
inline constexpr std::uint16_t kArpRequest = 1;
inline constexpr std::uint16_t kArpReply = 2;

class ArpPacket {
 public:
  // too_short below 28 bytes; unsupported for anything but Ethernet/IPv4 requests and replies.
  // The view is trimmed to 28 bytes (Ethernet padding excluded).
  static Checked<ArpPacket> parse(std::span<std::byte> bytes);
  static ArpPacket unchecked(std::span<std::byte> bytes) { return ArpPacket(bytes); }

  std::uint16_t hardware_type() const { return load_be16(bytes_, 0); }
  std::uint16_t protocol_type() const { return load_be16(bytes_, 2); }
  std::uint16_t operation() const { return load_be16(bytes_, 6); }
  MacAddress sender_mac() const { return mac_at(8); }
  std::uint32_t sender_address() const { return load_be32(bytes_, 14); }
  MacAddress target_mac() const { return mac_at(18); }
  std::uint32_t target_address() const { return load_be32(bytes_, 24); }
  std::span<std::byte> bytes() const { return bytes_; }

 private:
  explicit ArpPacket(std::span<std::byte> bytes) : bytes_(bytes) {}
  MacAddress mac_at(std::size_t offset) const {
    MacAddress mac;
    for (std::size_t i = 0; i < mac.size(); ++i) mac[i] = load_u8(bytes_, offset + i);
    return mac;
  }

  std::span<std::byte> bytes_;
};

// Writes a 28-byte Ethernet/IPv4 ARP packet. Returns 28, or 0 if out is too small.
std::size_t emit_arp(std::span<std::byte> out, std::uint16_t operation,
                     const MacAddress& sender_mac, std::uint32_t sender_address,
                     const MacAddress& target_mac, std::uint32_t target_address);

}  // namespace flotilla::wire
