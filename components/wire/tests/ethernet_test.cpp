// Ethernet frame view: fields, building, short frames, VLAN frames passed through undecoded.
#include "components/wire/ethernet.hpp"

#include <gtest/gtest.h>

#include <vector>

#include "components/wire/tests/hex.hpp"

namespace flotilla::wire {
namespace {

using test::hex_bytes;

// An ARP request for 10.77.0.2 from 02:00:0a:4d:00:01, as it appears on the wire.
constexpr std::string_view kArpFrame =
    "ff ff ff ff ff ff 02 00 0a 4d 00 01 08 06"
    "00 01 08 00 06 04 00 01 02 00 0a 4d 00 01 0a 4d 00 01 00 00 00 00 00 00 0a 4d 00 02";

TEST(Ethernet, ParsesEveryField) {
  auto bytes = hex_bytes(kArpFrame);
  const auto frame = EthernetFrame::parse(bytes);
  ASSERT_TRUE(frame.ok());
  EXPECT_EQ(frame->destination(), kBroadcastMac);
  EXPECT_EQ(frame->source(), (MacAddress{0x02, 0x00, 0x0a, 0x4d, 0x00, 0x01}));
  EXPECT_EQ(frame->ethertype(), kEtherTypeArp);
  EXPECT_EQ(frame->payload().size(), bytes.size() - kEthernetHeaderBytes);
  EXPECT_EQ(frame->payload().data(), bytes.data() + kEthernetHeaderBytes);
  EXPECT_EQ(frame->bytes().size(), bytes.size());
}

TEST(Ethernet, HeaderOnlyFrameHasEmptyPayload) {
  std::vector<std::byte> bytes(kEthernetHeaderBytes);
  const auto frame = EthernetFrame::parse(bytes);
  ASSERT_TRUE(frame.ok());
  EXPECT_TRUE(frame->payload().empty());
}

TEST(Ethernet, EveryShortPrefixFailsTooShort) {
  auto bytes = hex_bytes(kArpFrame);
  for (std::size_t length = 0; length < kEthernetHeaderBytes; ++length) {
    std::vector<std::byte> prefix(bytes.begin(), bytes.begin() + length);
    const auto frame = EthernetFrame::parse(prefix);
    ASSERT_FALSE(frame.ok()) << length;
    EXPECT_EQ(frame.error(), WireError::too_short);
  }
}

TEST(Ethernet, SettersAndBuilderRoundTrip) {
  std::vector<std::byte> bytes(64, std::byte{0xee});
  const MacAddress destination{0x02, 0, 0, 0, 0, 0x02};
  const MacAddress source{0x02, 0, 0, 0, 0, 0x01};
  ASSERT_EQ(emit_ethernet_header(bytes, destination, source, kEtherTypeIpv4), kEthernetHeaderBytes);
  const auto frame = EthernetFrame::parse(bytes);
  ASSERT_TRUE(frame.ok());
  EXPECT_EQ(frame->destination(), destination);
  EXPECT_EQ(frame->source(), source);
  EXPECT_EQ(frame->ethertype(), kEtherTypeIpv4);
  EXPECT_EQ(frame->payload()[0], std::byte{0xee});  // payload untouched

  frame->set_destination(source);
  frame->set_source(destination);
  frame->set_ethertype(kEtherTypeArp);
  EXPECT_EQ(frame->destination(), source);
  EXPECT_EQ(frame->source(), destination);
  EXPECT_EQ(load_be16(bytes, 12), kEtherTypeArp);

  std::vector<std::byte> small(kEthernetHeaderBytes - 1);
  EXPECT_EQ(emit_ethernet_header(small, destination, source, kEtherTypeIpv4), 0u);
}

TEST(Ethernet, VlanTaggedFrameParsesWithVlanEthertype) {
  auto bytes = hex_bytes("02 00 00 00 00 02 02 00 00 00 00 01 81 00 00 05 08 00 45 00");
  const auto frame = EthernetFrame::parse(bytes);
  ASSERT_TRUE(frame.ok());
  EXPECT_EQ(frame->ethertype(), kEtherTypeVlan);
}

}  // namespace
}  // namespace flotilla::wire
