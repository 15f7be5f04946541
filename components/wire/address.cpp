// Address parsing and formatting; see address.hpp. Not on the data path (allocation is fine here).
#include "components/wire/address.hpp"

#include <cstdio>

namespace flotilla::wire {

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decimal 0..max with 1..digits digits and no leading zero; consumes it from the front of text.
std::optional<std::uint32_t> take_decimal(std::string_view& text, std::size_t max_digits,
                                          std::uint32_t max) {
  std::size_t length = 0;
  std::uint32_t value = 0;
  while (length < text.size() && text[length] >= '0' && text[length] <= '9') {
    if (length == max_digits) return std::nullopt;
    value = value * 10 + static_cast<std::uint32_t>(text[length] - '0');
    ++length;
  }
  if (length == 0 || value > max) return std::nullopt;
  if (length > 1 && text[0] == '0') return std::nullopt;
  text.remove_prefix(length);
  return value;
}

}  // namespace

std::optional<MacAddress> parse_mac(std::string_view text) {
  if (text.size() != 17) return std::nullopt;
  const char separator = text[2];
  if (separator != ':' && separator != '-') return std::nullopt;
  MacAddress mac{};
  for (std::size_t group = 0; group < mac.size(); ++group) {
    const std::size_t at = group * 3;
    const int high = hex_value(text[at]);
    const int low = hex_value(text[at + 1]);
    if (high < 0 || low < 0) return std::nullopt;
    if (group + 1 < mac.size() && text[at + 2] != separator) return std::nullopt;
    mac[group] = static_cast<std::uint8_t>(high * 16 + low);
  }
  return mac;
}

std::string format_mac(const MacAddress& mac) {
  char text[18];
  std::snprintf(text, sizeof text, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2],
                mac[3], mac[4], mac[5]);
  return text;
}

std::optional<std::uint32_t> parse_ipv4(std::string_view text) {
  std::uint32_t address = 0;
  for (int group = 0; group < 4; ++group) {
    if (group > 0) {
      if (text.empty() || text[0] != '.') return std::nullopt;
      text.remove_prefix(1);
    }
    const auto value = take_decimal(text, 3, 255);
    if (!value) return std::nullopt;
    address = (address << 8) | *value;
  }
  if (!text.empty()) return std::nullopt;
  return address;
}

std::optional<Ipv4Endpoint> parse_endpoint(std::string_view text) {
  const std::size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  const auto address = parse_ipv4(text.substr(0, colon));
  std::string_view port_text = text.substr(colon + 1);
  const auto port = take_decimal(port_text, 5, 65535);
  if (!address || !port || *port == 0 || !port_text.empty()) return std::nullopt;
  return Ipv4Endpoint{*address, static_cast<std::uint16_t>(*port)};
}

std::string format_ipv4(std::uint32_t address) {
  char text[16];
  std::snprintf(text, sizeof text, "%u.%u.%u.%u", address >> 24, (address >> 16) & 0xff,
                (address >> 8) & 0xff, address & 0xff);
  return text;
}

std::optional<Ipv4Cidr> parse_cidr(std::string_view text) {
  const std::size_t slash = text.find('/');
  const auto address = parse_ipv4(text.substr(0, slash));
  if (!address) return std::nullopt;
  if (slash == std::string_view::npos) return Ipv4Cidr{*address, 32};
  std::string_view prefix = text.substr(slash + 1);
  const auto length = take_decimal(prefix, 2, 32);
  if (!length || !prefix.empty()) return std::nullopt;
  return Ipv4Cidr{*address, static_cast<std::uint8_t>(*length)};
}

std::string format_cidr(const Ipv4Cidr& cidr) {
  return format_ipv4(cidr.address) + "/" + std::to_string(cidr.prefix_length);
}

}  // namespace flotilla::wire
