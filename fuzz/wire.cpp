// The wire parsers (components/wire) on arbitrary bytes: Ethernet, ARP, IPv4 (and the ICMP error
// about any packet), ICMP, UDP and TCP with its options, and the address parsers on text. The
// first byte chooses which checksums are made valid, so the checks past them run too. A parse
// that succeeds never yields a span outside the buffer; the buffer is an exact-size heap copy, so
// ASan reports any overread.
#include <array>
#include <string_view>

#include "components/wire/address.hpp"
#include "components/wire/arp.hpp"
#include "components/wire/checksum.hpp"
#include "components/wire/ethernet.hpp"
#include "components/wire/icmp.hpp"
#include "components/wire/ipv4.hpp"
#include "components/wire/tcp.hpp"
#include "components/wire/udp.hpp"
#include "fuzz/fuzz_input.hpp"

namespace {

using namespace flotilla;
using namespace flotilla::wire;
using fuzz::require;

constexpr std::uint32_t kSource = 0x0a4d0001;
constexpr std::uint32_t kDestination = 0x0a4d0002;

bool within(std::span<const std::byte> inner, std::span<const std::byte> outer) {
  return inner.data() >= outer.data() && inner.data() + inner.size() <= outer.data() + outer.size();
}

void ipv4(std::span<std::byte> bytes, bool fix_checksum) {
  if (fix_checksum && bytes.size() >= 20) {
    const std::size_t ihl = (std::to_integer<std::size_t>(bytes[0]) & 0x0f) * 4;
    if (ihl >= 20 && ihl <= bytes.size()) {
      store_be16(bytes, 10, 0);
      store_be16(bytes, 10, internet_checksum(bytes.first(ihl)));
    }
  }
  std::array<std::byte, 128> icmp_out{};
  const std::size_t error_length = emit_destination_unreachable(icmp_out, 3, bytes);
  require(error_length <= icmp_out.size());
  if (error_length > 0) require(IcmpPacket::parse(std::span(icmp_out).first(error_length)).ok());
  const auto packet = Ipv4Packet::parse(bytes);
  if (!packet) return;
  require(within(packet->bytes(), bytes) && within(packet->header(), packet->bytes()) &&
          within(packet->options(), packet->bytes()) && within(packet->payload(), packet->bytes()));
  require(packet->header().size() + packet->payload().size() == packet->bytes().size());
  (void)packet->fragment_offset_bytes(), (void)packet->is_fragment(), (void)icmp_error_allowed(*packet);
  require(error_length > 0);
}

void icmp(std::span<std::byte> bytes, bool fix_checksum) {
  if (fix_checksum && bytes.size() >= 8) IcmpPacket::unchecked(bytes).fill_checksum();
  const auto packet = IcmpPacket::parse(bytes);
  if (packet) require(within(packet->payload(), bytes));
}

void udp(std::span<std::byte> bytes, bool fix_checksum) {
  if (fix_checksum && bytes.size() >= 8) {
    store_be16(bytes, 4, static_cast<std::uint16_t>(bytes.size()));
    store_be16(bytes, 6, 0);  // no checksum, as IPv4 allows
  }
  const auto datagram = UdpDatagram::parse(bytes, kSource, kDestination);
  if (datagram) require(within(datagram->bytes(), bytes) && within(datagram->payload(), datagram->bytes()));
}

void tcp(std::span<std::byte> bytes, bool fix_checksum) {
  (void)parse_tcp_options(bytes.first(std::min<std::size_t>(bytes.size(), 40)));
  if (fix_checksum && bytes.size() >= 20) TcpSegment::unchecked(bytes).fill_checksum(kSource, kDestination);
  const auto segment = TcpSegment::parse(bytes, kSource, kDestination);
  if (!segment) return;
  require(within(segment->options(), bytes) && within(segment->payload(), bytes));
  (void)segment->sequence_length();
  (void)parse_tcp_options(segment->options());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t fixes = data[0];
  const std::vector<std::byte> original(reinterpret_cast<const std::byte*>(data + 1),
                                        reinterpret_cast<const std::byte*>(data + size));
  // Each parser on its own copy: the checksum fixes write into the buffer.
  auto each = [&](auto&& parse) {
    std::vector<std::byte> copy(original);
    parse(std::span<std::byte>(copy));
  };
  each([&](std::span<std::byte> bytes) {
    const auto frame = EthernetFrame::parse(bytes);
    if (!frame) return;
    require(within(frame->payload(), bytes));
    const auto arp = ArpPacket::parse(frame->payload());
    if (arp) require(within(arp->bytes(), bytes));
    if (frame->ethertype() == kEtherTypeIpv4) ipv4(frame->payload(), (fixes & 1) != 0);
  });
  each([&](std::span<std::byte> bytes) { ipv4(bytes, (fixes & 2) != 0); });
  each([&](std::span<std::byte> bytes) { icmp(bytes, (fixes & 4) != 0); });
  each([&](std::span<std::byte> bytes) { udp(bytes, (fixes & 8) != 0); });
  each([&](std::span<std::byte> bytes) { tcp(bytes, (fixes & 16) != 0); });
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  (void)parse_mac(text), (void)parse_ipv4(text), (void)parse_endpoint(text), (void)parse_cidr(text);
  return 0;
}
