// Ethernet II frame view. VLAN tags are not interpreted: a tagged frame parses with
// ethertype() == kEtherTypeVlan and the caller drops it.
// Views are handles, like std::span: setters are const and write through to the buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "components/wire/address.hpp"
#include "components/wire/bytes.hpp"
#include "components/wire/errors.hpp"

namespace flotilla::wire {

inline constexpr std::size_t kEthernetHeaderBytes = 14;
inline constexpr std::uint16_t kEtherTypeIpv4 = 0x0800;
inline constexpr std::uint16_t kEtherTypeArp = 0x0806;
inline constexpr std::uint16_t kEtherTypeVlan = 0x8100;

class EthernetFrame {
 public:
  static Checked<EthernetFrame> parse(std::span<std::byte> bytes) {
    if (bytes.size() < kEthernetHeaderBytes) return WireError::too_short;
    return EthernetFrame(bytes);
  }
  // For building into a buffer of at least kEthernetHeaderBytes that the caller sized.
  static EthernetFrame unchecked(std::span<std::byte> bytes) { return EthernetFrame(bytes); }

  MacAddress destination() const { return mac_at(0); }
  MacAddress source() const { return mac_at(6); }
  std::uint16_t ethertype() const { return load_be16(bytes_, 12); }
  std::span<std::byte> payload() const { return bytes_.subspan(kEthernetHeaderBytes); }
  std::span<std::byte> bytes() const { return bytes_; }

  void set_destination(const MacAddress& mac) const { store_mac(0, mac); }
  void set_source(const MacAddress& mac) const { store_mac(6, mac); }
  void set_ethertype(std::uint16_t ethertype) const { store_be16(bytes_, 12, ethertype); }

 private:
  explicit EthernetFrame(std::span<std::byte> bytes) : bytes_(bytes) {}

  MacAddress mac_at(std::size_t offset) const {
    MacAddress mac;
    for (std::size_t i = 0; i < mac.size(); ++i) mac[i] = load_u8(bytes_, offset + i);
    return mac;
  }
  void store_mac(std::size_t offset, const MacAddress& mac) const {
    for (std::size_t i = 0; i < mac.size(); ++i) store_u8(bytes_, offset + i, mac[i]);
  }

  std::span<std::byte> bytes_;
};

// Writes the 14-byte header in front of a payload the caller places at out[14..]. Returns 14,
// or 0 if out is too small.
inline std::size_t emit_ethernet_header(std::span<std::byte> out, const MacAddress& destination,
                                        const MacAddress& source, std::uint16_t ethertype) {
  if (out.size() < kEthernetHeaderBytes) return 0;
  const auto frame = EthernetFrame::unchecked(out);
  frame.set_destination(destination);
  frame.set_source(source);
  frame.set_ethertype(ethertype);
  return kEthernetHeaderBytes;
}

}  // namespace flotilla::wire
