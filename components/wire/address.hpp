// MAC and IPv4 addresses: parsing and formatting for configuration and logs.
// IPv4 addresses are std::uint32_t in HOST order everywhere in the wire API.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace flotilla::wire {

using MacAddress = std::array<std::uint8_t, 6>;

inline constexpr MacAddress kBroadcastMac{0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

// Group bit set: broadcast or multicast.
inline constexpr bool is_multicast_mac(const MacAddress& mac) { return (mac[0] & 0x01) != 0; }

// "02:00:0a:4d:00:01" (or '-' separated, one separator throughout); exactly two hex digits a group.
std::optional<MacAddress> parse_mac(std::string_view text);
// Lower-case, ':' separated.
std::string format_mac(const MacAddress& mac);

// Strict dotted quad: four decimal groups 0..255, no leading zeros ("01" is rejected: it would
// be octal to inet_aton), nothing before or after.
std::optional<std::uint32_t> parse_ipv4(std::string_view text);
std::string format_ipv4(std::uint32_t address);

// "10.77.0.2:5001": a strict dotted quad, ':', and a port 1..65535 without leading zeros.
struct Ipv4Endpoint {
  std::uint32_t address;
  std::uint16_t port;
};
std::optional<Ipv4Endpoint> parse_endpoint(std::string_view text);

inline constexpr std::uint32_t kIpv4Broadcast = 0xffffffff;
inline constexpr bool is_multicast_ipv4(std::uint32_t address) { return (address >> 28) == 0xe; }

struct Ipv4Cidr {
  std::uint32_t address;       // as written; network() masks it
  std::uint8_t prefix_length;  // 0..32

  std::uint32_t mask() const {
    return prefix_length == 0 ? 0 : ~std::uint32_t{0} << (32 - prefix_length);
  }
  std::uint32_t network() const { return address & mask(); }
  bool contains(std::uint32_t other) const { return (other & mask()) == network(); }
  // The directed broadcast of the subnet.
  std::uint32_t broadcast() const { return network() | ~mask(); }
};

// "10.77.0.0/24"; a bare address means /32; a prefix over 32 is rejected.
std::optional<Ipv4Cidr> parse_cidr(std::string_view text);
std::string format_cidr(const Ipv4Cidr& cidr);

}  // namespace flotilla::wire
