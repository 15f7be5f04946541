// IPv4 view and header builder: known headers, the order of checks, hostile lengths, bit flips.
#include "components/wire/ipv4.hpp"

#include <gtest/gtest.h>

#include <vector>

#include "components/wire/checksum.hpp"
#include "components/wire/tests/hex.hpp"

namespace flotilla::wire {
namespace {

using test::hex_bytes;

// The header from Wikipedia's "IPv4 header checksum" example: UDP, 192.168.0.1 -> 192.168.0.199,
// total length 0x73, checksum b861.
constexpr std::string_view kWikipediaHeader =
    "45 00 00 73 00 00 40 00 40 11 b8 61 c0 a8 00 01 c0 a8 00 c7";

std::vector<std::byte> wikipedia_packet() {
  auto bytes = hex_bytes(kWikipediaHeader);
  bytes.resize(0x73, std::byte{0xab});
  return bytes;
}

// The ICMP echo request packet from hex.hpp, padded to the 46-byte Ethernet minimum.
std::vector<std::byte> padded_icmp_packet() {
  auto bytes = hex_bytes(test::kIpv4HeaderForIcmp);
  const auto icmp = hex_bytes(test::kIcmpEchoRequest);
  bytes.insert(bytes.end(), icmp.begin(), icmp.end());
  bytes.resize(46, std::byte{0});
  return bytes;
}

TEST(Ipv4, ParsesEveryFieldOfKnownHeader) {
  auto bytes = wikipedia_packet();
  const auto packet = Ipv4Packet::parse(bytes);
  ASSERT_TRUE(packet.ok()) << wire_error_name(packet.error());
  EXPECT_EQ(packet->version(), 4);
  EXPECT_EQ(packet->header_length(), 20u);
  EXPECT_EQ(packet->tos(), 0);
  EXPECT_EQ(packet->total_length(), 0x73);
  EXPECT_EQ(packet->identification(), 0);
  EXPECT_TRUE(packet->dont_fragment());
  EXPECT_FALSE(packet->more_fragments());
  EXPECT_EQ(packet->fragment_offset_bytes(), 0u);
  EXPECT_FALSE(packet->is_fragment());
  EXPECT_EQ(packet->ttl(), 64);
  EXPECT_EQ(packet->protocol(), kProtocolUdp);
  EXPECT_EQ(packet->header_checksum(), 0xb861);
  EXPECT_EQ(packet->source(), 0xc0a80001u);
  EXPECT_EQ(packet->destination(), 0xc0a800c7u);
  EXPECT_EQ(packet->header().size(), 20u);
  EXPECT_TRUE(packet->options().empty());
  EXPECT_EQ(packet->payload().size(), 0x73u - 20);
  EXPECT_EQ(packet->payload().data(), bytes.data() + 20);
}

TEST(Ipv4, PayloadExcludesEthernetPadding) {
  auto bytes = padded_icmp_packet();
  const auto packet = Ipv4Packet::parse(bytes);
  ASSERT_TRUE(packet.ok());
  EXPECT_EQ(packet->total_length(), 44);
  EXPECT_EQ(packet->bytes().size(), 44u);
  EXPECT_EQ(packet->payload().size(), 24u);
  EXPECT_EQ(packet->protocol(), kProtocolIcmp);
  EXPECT_EQ(packet->identification(), 0x1c46);
  EXPECT_EQ(packet->source(), test::kHostA);
  EXPECT_EQ(packet->destination(), test::kHostB);
}

TEST(Ipv4, EveryPrefixFailsWithTheRightError) {
  const auto bytes = wikipedia_packet();
  for (std::size_t length = 0; length < bytes.size(); ++length) {
    std::vector<std::byte> prefix(bytes.begin(), bytes.begin() + length);
    const auto packet = Ipv4Packet::parse(prefix);
    ASSERT_FALSE(packet.ok()) << length;
    EXPECT_EQ(packet.error(), length < 20 ? WireError::too_short : WireError::bad_total_length)
        << length;
  }
}

TEST(Ipv4, WrongVersion) {
  for (std::uint8_t version : {0, 1, 5, 6, 15}) {
    auto bytes = wikipedia_packet();
    bytes[0] = std::byte{static_cast<std::uint8_t>(version << 4 | 5)};
    const auto packet = Ipv4Packet::parse(bytes);
    ASSERT_FALSE(packet.ok());
    EXPECT_EQ(packet.error(), WireError::bad_version) << int{version};
  }
}

TEST(Ipv4, HeaderLengthBelowFiveOrPastTheBuffer) {
  for (std::uint8_t ihl = 0; ihl < 5; ++ihl) {
    auto bytes = wikipedia_packet();
    bytes[0] = std::byte{static_cast<std::uint8_t>(0x40 | ihl)};
    const auto packet = Ipv4Packet::parse(bytes);
    ASSERT_FALSE(packet.ok());
    EXPECT_EQ(packet.error(), WireError::bad_header_length) << int{ihl};
  }
  auto bytes = hex_bytes(kWikipediaHeader);
  bytes.resize(40);
  bytes[0] = std::byte{0x4f};  // 60-byte header in a 40-byte buffer
  const auto packet = Ipv4Packet::parse(bytes);
  ASSERT_FALSE(packet.ok());
  EXPECT_EQ(packet.error(), WireError::bad_header_length);
}

TEST(Ipv4, TotalLengthBelowHeaderOrPastTheBuffer) {
  for (std::uint16_t total : {0, 1, 19, 0x74, 0xffff}) {
    auto bytes = wikipedia_packet();
    store_be16(bytes, 2, total);
    Ipv4Packet::unchecked(bytes).fill_checksum();  // only the length is wrong
    const auto packet = Ipv4Packet::parse(bytes);
    ASSERT_FALSE(packet.ok());
    EXPECT_EQ(packet.error(), WireError::bad_total_length) << total;
  }
  // A header-only packet (total length 20) is fine.
  auto bytes = wikipedia_packet();
  store_be16(bytes, 2, 20);
  Ipv4Packet::unchecked(bytes).fill_checksum();
  const auto packet = Ipv4Packet::parse(bytes);
  ASSERT_TRUE(packet.ok());
  EXPECT_TRUE(packet->payload().empty());
}

TEST(Ipv4, EveryHeaderBitFlipIsCaught) {
  const auto good = wikipedia_packet();
  for (std::size_t bit = 0; bit < 20 * 8; ++bit) {
    auto bytes = good;
    bytes[bit / 8] ^= std::byte{static_cast<std::uint8_t>(0x80 >> (bit % 8))};
    const auto packet = Ipv4Packet::parse(bytes);
    ASSERT_FALSE(packet.ok()) << "bit " << bit;
    const std::size_t byte = bit / 8;
    if (byte == 1 || byte >= 4) {  // fields no earlier check looks at
      EXPECT_EQ(packet.error(), WireError::bad_checksum) << "bit " << bit;
    }
  }
}

TEST(Ipv4, OptionsAreSeparatedFromPayload) {
  // IHL 6: a router-alert option (94 04 00 00) and 4 payload bytes.
  auto bytes = hex_bytes("46 00 00 1c 00 01 00 00 01 02 00 00 0a 4d 00 01 e0 00 00 16"
                         "94 04 00 00 de ad be ef");
  Ipv4Packet::unchecked(bytes).fill_checksum();
  const auto packet = Ipv4Packet::parse(bytes);
  ASSERT_TRUE(packet.ok()) << wire_error_name(packet.error());
  EXPECT_EQ(packet->header_length(), 24u);
  EXPECT_FALSE(packet->dont_fragment());
  ASSERT_EQ(packet->options().size(), 4u);
  EXPECT_EQ(packet->options()[0], std::byte{0x94});
  ASSERT_EQ(packet->payload().size(), 4u);
  EXPECT_EQ(load_be32(packet->payload(), 0), 0xdeadbeefu);
}

TEST(Ipv4, FragmentFields) {
  auto bytes = wikipedia_packet();
  store_be16(bytes, 6, 0x2000 | 185);  // MF, offset 185 * 8 = 1480
  Ipv4Packet::unchecked(bytes).fill_checksum();
  auto packet = Ipv4Packet::parse(bytes);
  ASSERT_TRUE(packet.ok());
  EXPECT_TRUE(packet->more_fragments());
  EXPECT_FALSE(packet->dont_fragment());
  EXPECT_EQ(packet->fragment_offset_bytes(), 1480u);
  EXPECT_TRUE(packet->is_fragment());

  store_be16(bytes, 6, 0x2000);  // first fragment
  Ipv4Packet::unchecked(bytes).fill_checksum();
  packet = Ipv4Packet::parse(bytes);
  ASSERT_TRUE(packet.ok());
  EXPECT_TRUE(packet->is_fragment());
  EXPECT_EQ(packet->fragment_offset_bytes(), 0u);

  store_be16(bytes, 6, 0x1fff);  // last fragment at the largest offset
  Ipv4Packet::unchecked(bytes).fill_checksum();
  packet = Ipv4Packet::parse(bytes);
  ASSERT_TRUE(packet.ok());
  EXPECT_FALSE(packet->more_fragments());
  EXPECT_EQ(packet->fragment_offset_bytes(), 0x1fffu * 8);
  EXPECT_TRUE(packet->is_fragment());
}

TEST(Ipv4, SettersThenFillChecksum) {
  auto bytes = wikipedia_packet();
  auto packet = Ipv4Packet::parse(bytes);
  ASSERT_TRUE(packet.ok());
  packet->set_ttl(63);
  packet->set_source(0x01020304);
  packet->set_destination(0x05060708);
  packet->set_identification(0x4242);
  EXPECT_EQ(Ipv4Packet::parse(bytes).error(), WireError::bad_checksum);
  packet->fill_checksum();
  const auto again = Ipv4Packet::parse(bytes);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->ttl(), 63);
  EXPECT_EQ(again->source(), 0x01020304u);
  EXPECT_EQ(again->destination(), 0x05060708u);
  EXPECT_EQ(again->identification(), 0x4242);
}

TEST(Ipv4, EmitMatchesKnownHeader) {
  std::vector<std::byte> out(44);
  const Ipv4Header header{.source = test::kHostA, .destination = test::kHostB,
                          .protocol = kProtocolIcmp, .identification = 0x1c46,
                          .payload_length = 24};
  ASSERT_EQ(emit_ipv4_header(out, header), kIpv4HeaderBytes);
  const auto expected = hex_bytes(test::kIpv4HeaderForIcmp);
  EXPECT_TRUE(std::equal(expected.begin(), expected.end(), out.begin()));
}

TEST(Ipv4, EmitParseRoundTrip) {
  std::vector<std::byte> out(20 + 100);
  const Ipv4Header header{.source = 0xc0000201, .destination = 0xc6336401,
                          .protocol = kProtocolTcp, .ttl = 7, .tos = 0xb8,
                          .identification = 0xbeef, .dont_fragment = false,
                          .payload_length = 100};
  ASSERT_EQ(emit_ipv4_header(out, header), kIpv4HeaderBytes);
  const auto packet = Ipv4Packet::parse(out);
  ASSERT_TRUE(packet.ok());
  EXPECT_EQ(packet->source(), header.source);
  EXPECT_EQ(packet->destination(), header.destination);
  EXPECT_EQ(packet->protocol(), kProtocolTcp);
  EXPECT_EQ(packet->ttl(), 7);
  EXPECT_EQ(packet->tos(), 0xb8);
  EXPECT_EQ(packet->identification(), 0xbeef);
  EXPECT_FALSE(packet->dont_fragment());
  EXPECT_FALSE(packet->is_fragment());
  EXPECT_EQ(packet->total_length(), 120);
  EXPECT_EQ(packet->payload().size(), 100u);
}

TEST(Ipv4, EmitRefusesSmallBufferOrOversizedPayload) {
  std::vector<std::byte> small(19);
  EXPECT_EQ(emit_ipv4_header(small, Ipv4Header{.source = 1, .destination = 2, .protocol = 17,
                                               .payload_length = 0}), 0u);
  std::vector<std::byte> out(20);
  EXPECT_EQ(emit_ipv4_header(out, Ipv4Header{.source = 1, .destination = 2, .protocol = 17,
                                             .payload_length = 65516}), 0u);
  EXPECT_EQ(emit_ipv4_header(out, Ipv4Header{.source = 1, .destination = 2, .protocol = 17,
                                             .payload_length = 65515}), 20u);
}

}  // namespace
}  // namespace flotilla::wire
