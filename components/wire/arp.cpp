// ARP parsing and building; see arp.hpp.
#include "components/wire/arp.hpp"

namespace flotilla::wire {

namespace {
constexpr std::uint16_t kHardwareEthernet = 1;
constexpr std::uint16_t kProtocolIpv4 = 0x0800;
}  // namespace

Checked<ArpPacket> ArpPacket::parse(std::span<std::byte> bytes) {
  if (bytes.size() < kArpPacketBytes) return WireError::too_short;
  const ArpPacket packet(bytes.first(kArpPacketBytes));
  if (packet.hardware_type() != kHardwareEthernet || packet.protocol_type() != kProtocolIpv4 ||
      load_u8(bytes, 4) != 6 || load_u8(bytes, 5) != 4) {
    return WireError::unsupported;
  }
  if (packet.operation() != kArpRequest && packet.operation() != kArpReply) {
    return WireError::unsupported;
  }
  return packet;
}

std::size_t emit_arp(std::span<std::byte> out, std::uint16_t operation,
                     const MacAddress& sender_mac, std::uint32_t sender_address,
                     const MacAddress& target_mac, std::uint32_t target_address) {
  if (out.size() < kArpPacketBytes) return 0;
  store_be16(out, 0, kHardwareEthernet);
  store_be16(out, 2, kProtocolIpv4);
  store_u8(out, 4, 6);
  store_u8(out, 5, 4);
  store_be16(out, 6, operation);
  for (std::size_t i = 0; i < 6; ++i) store_u8(out, 8 + i, sender_mac[i]);
  store_be32(out, 14, sender_address);
  for (std::size_t i = 0; i < 6; ++i) store_u8(out, 18 + i, target_mac[i]);
  store_be32(out, 24, target_address);
  return kArpPacketBytes;
}

}  // namespace flotilla::wire
