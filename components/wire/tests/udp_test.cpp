// UDP view and builder: a known datagram, length and checksum checks, zero checksums.
#include "components/wire/udp.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "components/wire/tests/hex.hpp"

namespace flotilla::wire {
namespace {

using test::hex_bytes;
using test::kHostA;
using test::kHostB;

TEST(Udp, ParsesKnownDatagram) {
  auto bytes = hex_bytes(test::kUdpDatagram);
  const auto udp = UdpDatagram::parse(bytes, kHostA, kHostB);
  ASSERT_TRUE(udp.ok()) << wire_error_name(udp.error());
  EXPECT_EQ(udp->source_port(), 40000);
  EXPECT_EQ(udp->destination_port(), 53);
  EXPECT_EQ(udp->length(), 22);
  EXPECT_EQ(udp->checksum(), 0x5f0f);
  ASSERT_EQ(udp->payload().size(), 14u);
  EXPECT_EQ(std::memcmp(udp->payload().data(), "hello flotilla", 14), 0);
}

TEST(Udp, ChecksumCoversThePseudoHeader) {
  auto bytes = hex_bytes(test::kUdpDatagram);
  EXPECT_EQ(UdpDatagram::parse(bytes, kHostB, kHostA).ok(), true);  // swapping is sum-neutral
  const auto wrong = UdpDatagram::parse(bytes, kHostA, kHostA);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error(), WireError::bad_checksum);
}

TEST(Udp, EveryPrefixFails) {
  const auto bytes = hex_bytes(test::kUdpDatagram);
  for (std::size_t length = 0; length < bytes.size(); ++length) {
    std::vector<std::byte> prefix(bytes.begin(), bytes.begin() + length);
    const auto udp = UdpDatagram::parse(prefix, kHostA, kHostB);
    ASSERT_FALSE(udp.ok()) << length;
    EXPECT_EQ(udp.error(), length < 8 ? WireError::too_short : WireError::bad_length) << length;
  }
}

TEST(Udp, LengthFieldBelowEightOrPastTheBuffer) {
  for (std::uint16_t length : {0, 1, 7, 23, 0xffff}) {
    auto bytes = hex_bytes(test::kUdpDatagram);
    store_be16(bytes, 4, length);
    const auto udp = UdpDatagram::parse(bytes, kHostA, kHostB);
    ASSERT_FALSE(udp.ok());
    EXPECT_EQ(udp.error(), WireError::bad_length) << length;
  }
}

TEST(Udp, TrailingBytesBeyondTheLengthAreIgnored) {
  auto bytes = hex_bytes(test::kUdpDatagram);
  bytes.resize(40, std::byte{0x77});
  const auto udp = UdpDatagram::parse(bytes, kHostA, kHostB);
  ASSERT_TRUE(udp.ok());
  EXPECT_EQ(udp->bytes().size(), 22u);
  EXPECT_EQ(udp->payload().size(), 14u);
}

TEST(Udp, EveryBitFlipOutsideTheLengthIsCaught) {
  const auto good = hex_bytes(test::kUdpDatagram);
  for (std::size_t bit = 0; bit < good.size() * 8; ++bit) {
    const std::size_t byte = bit / 8;
    if (byte == 4 || byte == 5) continue;  // length flips fail as bad_length or bad_checksum
    auto bytes = good;
    bytes[byte] ^= std::byte{static_cast<std::uint8_t>(1u << (bit % 8))};
    const auto udp = UdpDatagram::parse(bytes, kHostA, kHostB);
    ASSERT_FALSE(udp.ok()) << bit;
    EXPECT_EQ(udp.error(), WireError::bad_checksum) << bit;
  }
}

TEST(Udp, ZeroChecksumMeansNone) {
  auto bytes = hex_bytes(test::kUdpDatagram);
  store_be16(bytes, 6, 0);
  bytes[10] ^= std::byte{0xff};  // payload damage goes unnoticed without a checksum
  const auto udp = UdpDatagram::parse(bytes, kHostA, kHostB);
  ASSERT_TRUE(udp.ok());
  EXPECT_EQ(udp->checksum(), 0);
}

TEST(Udp, EmitMatchesKnownDatagram) {
  std::vector<std::byte> out(64, std::byte{0x99});
  std::memcpy(out.data() + 8, "hello flotilla", 14);
  ASSERT_EQ(emit_udp(out, 40000, 53, kHostA, kHostB, 14), 22u);
  const auto expected = hex_bytes(test::kUdpDatagram);
  EXPECT_TRUE(std::equal(expected.begin(), expected.end(), out.begin()));
  EXPECT_EQ(out[22], std::byte{0x99});  // nothing written past the datagram
}

TEST(Udp, EmitParseRoundTripIncludingEmptyPayload) {
  for (std::size_t payload_length : {0u, 1u, 2u, 3u, 1472u}) {
    std::vector<std::byte> out(8 + payload_length);
    for (std::size_t i = 8; i < out.size(); ++i) {
      out[i] = std::byte{static_cast<std::uint8_t>(i * 7)};
    }
    ASSERT_EQ(emit_udp(out, 1234, 5678, 0xc0000201, 0xc0000202, payload_length),
              8 + payload_length);
    const auto udp = UdpDatagram::parse(out, 0xc0000201, 0xc0000202);
    ASSERT_TRUE(udp.ok()) << payload_length;
    EXPECT_NE(udp->checksum(), 0);
    EXPECT_EQ(udp->source_port(), 1234);
    EXPECT_EQ(udp->destination_port(), 5678);
    EXPECT_EQ(udp->payload().size(), payload_length);
  }
}

TEST(Udp, ComputedZeroChecksumIsSentAsAllOnes) {
  // Pick the payload word that makes the one's-complement sum 0xffff, i.e. checksum 0.
  std::vector<std::byte> out(10);
  ASSERT_EQ(emit_udp(out, 1, 2, 0, 0, 2), 10u);
  const std::uint16_t first = load_be16(out, 6);
  // Adding the old checksum value to the payload word makes the sum all ones.
  store_be16(out, 8, first);
  ASSERT_EQ(emit_udp(out, 1, 2, 0, 0, 2), 10u);
  EXPECT_EQ(load_be16(out, 6), 0xffff);
  EXPECT_TRUE(UdpDatagram::parse(out, 0, 0).ok());
}

TEST(Udp, EmitRefusesSmallBufferOrOversizedDatagram) {
  std::vector<std::byte> out(20);
  EXPECT_EQ(emit_udp(out, 1, 2, 3, 4, 13), 0u);
  EXPECT_EQ(emit_udp(out, 1, 2, 3, 4, 12), 20u);
  std::vector<std::byte> huge(70000);
  EXPECT_EQ(emit_udp(huge, 1, 2, 3, 4, 65528), 0u);
  EXPECT_EQ(emit_udp(huge, 1, 2, 3, 4, 65527), 65535u);
}

}  // namespace
}  // namespace flotilla::wire
