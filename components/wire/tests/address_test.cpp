// MAC, IPv4 and CIDR parsing/formatting edge cases.
#include "components/wire/address.hpp"

#include <gtest/gtest.h>

namespace flotilla::wire {
namespace {

TEST(Mac, ParsesAndFormats) {
  const auto mac = parse_mac("02:00:0A:4d:00:ff");
  ASSERT_TRUE(mac);
  EXPECT_EQ(*mac, (MacAddress{0x02, 0x00, 0x0a, 0x4d, 0x00, 0xff}));
  EXPECT_EQ(format_mac(*mac), "02:00:0a:4d:00:ff");
  EXPECT_EQ(parse_mac("02-00-0a-4d-00-ff"), mac);
  EXPECT_EQ(format_mac(kBroadcastMac), "ff:ff:ff:ff:ff:ff");
  EXPECT_TRUE(is_multicast_mac(kBroadcastMac));
  EXPECT_FALSE(is_multicast_mac(*mac));
}

TEST(Mac, RejectsMalformed) {
  for (const char* text : {"", "02:00:0a:4d:00", "02:00:0a:4d:00:ff:", "02:00:0a:4d:00:f",
                           "02:00:0a:4d:00:fg", "02-00:0a:4d:00:ff", "02.00.0a.4d.00.ff",
                           " 02:00:0a:4d:00:ff", "2:00:0a:4d:00:fff", "02:00:0a:4d:00:ff "}) {
    EXPECT_FALSE(parse_mac(text)) << text;
  }
}

TEST(Ipv4Address, ParsesDottedQuadToHostOrder) {
  EXPECT_EQ(parse_ipv4("10.77.0.1"), 0x0a4d0001u);
  EXPECT_EQ(parse_ipv4("0.0.0.0"), 0u);
  EXPECT_EQ(parse_ipv4("255.255.255.255"), 0xffffffffu);
  EXPECT_EQ(parse_ipv4("192.168.100.200"), 0xc0a864c8u);
  EXPECT_EQ(format_ipv4(0x0a4d0001), "10.77.0.1");
  EXPECT_EQ(format_ipv4(0xffffffff), "255.255.255.255");
  EXPECT_EQ(format_ipv4(0), "0.0.0.0");
}

TEST(Ipv4Address, RejectsEverythingButAStrictDottedQuad) {
  for (const char* text : {"", "1.2.3", "1.2.3.4.5", "256.0.0.1", "1.2.3.256", "1.2.3.4 ",
                           " 1.2.3.4", "x1.2.3.4", "1.2.3.4x", "1..2.3", "1.2.3.", ".1.2.3",
                           "01.2.3.4", "1.2.3.00", "1.2.3.0004", "1.2.3.-4", "+1.2.3.4",
                           "1.2.3.4/24", "0x1.2.3.4", "99999999999.1.1.1", "1,2,3,4"}) {
    EXPECT_FALSE(parse_ipv4(text)) << text;
  }
}

TEST(Ipv4Address, ParsesAnEndpointWithAPort) {
  const auto endpoint = parse_endpoint("10.77.0.2:5001");
  ASSERT_TRUE(endpoint);
  EXPECT_EQ(endpoint->address, 0x0a4d0002u);
  EXPECT_EQ(endpoint->port, 5001);
  EXPECT_EQ(parse_endpoint("0.0.0.0:65535")->port, 65535);
  for (const char* text : {"", "10.77.0.2", "10.77.0.2:", "10.77.0.2:0", "10.77.0.2:65536",
                           "10.77.0.2:080", "10.77.0.2:5001x", "10.77.0.2: 5001", ":5001",
                           "10.77.0:5001", "10.77.0.2:5001:1", "10.77.0.2:-1"}) {
    EXPECT_FALSE(parse_endpoint(text)) << text;
  }
}

TEST(Ipv4Address, RoundTripsThroughText) {
  for (std::uint32_t address : {0u, 1u, 0x7f000001u, 0x0a4d00feu, 0xe0000001u, 0xfffffffeu}) {
    EXPECT_EQ(parse_ipv4(format_ipv4(address)), address);
  }
}

TEST(Cidr, ParsesPrefixAndComputesMasks) {
  const auto cidr = parse_cidr("10.77.0.9/24");
  ASSERT_TRUE(cidr);
  EXPECT_EQ(cidr->address, 0x0a4d0009u);
  EXPECT_EQ(cidr->prefix_length, 24);
  EXPECT_EQ(cidr->mask(), 0xffffff00u);
  EXPECT_EQ(cidr->network(), 0x0a4d0000u);
  EXPECT_EQ(cidr->broadcast(), 0x0a4d00ffu);
  EXPECT_TRUE(cidr->contains(0x0a4d00feu));
  EXPECT_FALSE(cidr->contains(0x0a4d0100u));
  EXPECT_EQ(format_cidr(*cidr), "10.77.0.9/24");
}

TEST(Cidr, BareAddressIsSlash32AndEdgesWork) {
  const auto host = parse_cidr("10.77.0.1");
  ASSERT_TRUE(host);
  EXPECT_EQ(host->prefix_length, 32);
  EXPECT_EQ(host->mask(), 0xffffffffu);
  EXPECT_TRUE(host->contains(0x0a4d0001u));
  EXPECT_FALSE(host->contains(0x0a4d0002u));

  const auto everything = parse_cidr("0.0.0.0/0");
  ASSERT_TRUE(everything);
  EXPECT_EQ(everything->mask(), 0u);
  EXPECT_TRUE(everything->contains(0xdeadbeefu));

  const auto one_bit = parse_cidr("128.0.0.0/1");
  ASSERT_TRUE(one_bit);
  EXPECT_EQ(one_bit->mask(), 0x80000000u);
}

TEST(Cidr, RejectsMalformed) {
  for (const char* text : {"10.77.0.0/33", "10.77.0.0/", "10.77.0.0/-1", "10.77.0.0/024",
                           "10.77.0.0/24x", "10.77.0.0/ 24", "10.77.0/24", "/24", "10.77.0.0/100",
                           "10.77.0.0//24", "10.77.0.0/24/8"}) {
    EXPECT_FALSE(parse_cidr(text)) << text;
  }
}

}  // namespace
}  // namespace flotilla::wire
