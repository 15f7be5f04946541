// ARP view and builder: a captured request, round trips, short and unsupported packets.
#include "components/wire/arp.hpp"

#include <gtest/gtest.h>

#include <vector>

#include "components/wire/tests/hex.hpp"

namespace flotilla::wire {
namespace {

using test::hex_bytes;

// "Who has 10.77.0.2? Tell 10.77.0.1", padded to the 46-byte Ethernet minimum like on the wire.
constexpr std::string_view kArpRequestPadded =
    "00 01 08 00 06 04 00 01 02 00 0a 4d 00 01 0a 4d 00 01 00 00 00 00 00 00 0a 4d 00 02"
    "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00";

const MacAddress kMacA{0x02, 0x00, 0x0a, 0x4d, 0x00, 0x01};
const MacAddress kMacB{0x02, 0x00, 0x0a, 0x4d, 0x00, 0x02};

TEST(Arp, ParsesKnownRequest) {
  auto bytes = hex_bytes(kArpRequestPadded);
  const auto arp = ArpPacket::parse(bytes);
  ASSERT_TRUE(arp.ok()) << wire_error_name(arp.error());
  EXPECT_EQ(arp->operation(), kArpRequest);
  EXPECT_EQ(arp->sender_mac(), kMacA);
  EXPECT_EQ(arp->sender_address(), test::kHostA);
  EXPECT_EQ(arp->target_mac(), (MacAddress{}));
  EXPECT_EQ(arp->target_address(), test::kHostB);
  EXPECT_EQ(arp->bytes().size(), kArpPacketBytes);  // padding trimmed
}

TEST(Arp, EmitMatchesCaptureAndRoundTrips) {
  std::vector<std::byte> out(kArpPacketBytes);
  ASSERT_EQ(emit_arp(out, kArpRequest, kMacA, test::kHostA, MacAddress{}, test::kHostB),
            kArpPacketBytes);
  const auto expected = hex_bytes(kArpRequestPadded);
  EXPECT_TRUE(std::equal(out.begin(), out.end(), expected.begin()));

  ASSERT_EQ(emit_arp(out, kArpReply, kMacB, test::kHostB, kMacA, test::kHostA), kArpPacketBytes);
  const auto reply = ArpPacket::parse(out);
  ASSERT_TRUE(reply.ok());
  EXPECT_EQ(reply->operation(), kArpReply);
  EXPECT_EQ(reply->sender_mac(), kMacB);
  EXPECT_EQ(reply->sender_address(), test::kHostB);
  EXPECT_EQ(reply->target_mac(), kMacA);
  EXPECT_EQ(reply->target_address(), test::kHostA);
}

TEST(Arp, EmitRefusesSmallBuffer) {
  std::vector<std::byte> out(kArpPacketBytes - 1, std::byte{0x5a});
  EXPECT_EQ(emit_arp(out, kArpRequest, kMacA, 1, kMacB, 2), 0u);
  for (const auto b : out) EXPECT_EQ(b, std::byte{0x5a});  // nothing written
}

TEST(Arp, EveryShortPrefixFailsTooShort) {
  const auto bytes = hex_bytes(kArpRequestPadded);
  for (std::size_t length = 0; length < kArpPacketBytes; ++length) {
    std::vector<std::byte> prefix(bytes.begin(), bytes.begin() + length);
    const auto arp = ArpPacket::parse(prefix);
    ASSERT_FALSE(arp.ok()) << length;
    EXPECT_EQ(arp.error(), WireError::too_short);
  }
}

TEST(Arp, NonEthernetIpv4OrUnknownOperationIsUnsupported) {
  struct Patch { std::size_t offset; std::uint8_t value; };
  for (const Patch patch : {Patch{1, 6}, Patch{0, 1}, Patch{2, 0x86}, Patch{3, 0xdd},
                            Patch{4, 8}, Patch{5, 16}, Patch{7, 0}, Patch{7, 3}, Patch{7, 4},
                            Patch{6, 1}}) {
    auto bytes = hex_bytes(kArpRequestPadded);
    bytes[patch.offset] = std::byte{patch.value};
    const auto arp = ArpPacket::parse(bytes);
    ASSERT_FALSE(arp.ok()) << patch.offset << "=" << int{patch.value};
    EXPECT_EQ(arp.error(), WireError::unsupported);
  }
}

}  // namespace
}  // namespace flotilla::wire
