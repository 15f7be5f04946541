// ICMP view and builders: a hand-checked echo request, echo replies in place, error messages.
#include "components/wire/icmp.hpp"

#include <gtest/gtest.h>

#include <vector>

#include "components/wire/address.hpp"
#include "components/wire/checksum.hpp"
#include "components/wire/ipv4.hpp"
#include "components/wire/tests/hex.hpp"

namespace flotilla::wire {
namespace {

using test::hex_bytes;

// kIcmpEchoRequest's checksum by hand: 0800 + 0000 + 1234 + 0001 = 1a35; the data words
// 1011 + 1213 + ... + 1e1f = b8c0; 1a35 + b8c0 = d2f5; ~d2f5 = 2d0a.
TEST(Icmp, ParsesHandCheckedEchoRequest) {
  auto bytes = hex_bytes(test::kIcmpEchoRequest);
  const auto icmp = IcmpPacket::parse(bytes);
  ASSERT_TRUE(icmp.ok()) << wire_error_name(icmp.error());
  EXPECT_EQ(icmp->type(), kIcmpEchoRequest);
  EXPECT_EQ(icmp->code(), 0);
  EXPECT_EQ(icmp->checksum(), 0x2d0a);
  EXPECT_EQ(icmp->identifier(), 0x1234);
  EXPECT_EQ(icmp->sequence(), 1);
  EXPECT_EQ(icmp->rest_of_header(), 0x12340001u);
  ASSERT_EQ(icmp->payload().size(), 16u);
  EXPECT_EQ(icmp->payload()[0], std::byte{0x10});
  EXPECT_EQ(icmp->payload()[15], std::byte{0x1f});
  EXPECT_FALSE(icmp->is_error());
}

TEST(Icmp, ShortPrefixesAreTooShortLongerOnesFailTheChecksum) {
  const auto bytes = hex_bytes(test::kIcmpEchoRequest);
  for (std::size_t length = 0; length < bytes.size(); ++length) {
    std::vector<std::byte> prefix(bytes.begin(), bytes.begin() + length);
    const auto icmp = IcmpPacket::parse(prefix);
    ASSERT_FALSE(icmp.ok()) << length;
    EXPECT_EQ(icmp.error(), length < 8 ? WireError::too_short : WireError::bad_checksum) << length;
  }
}

TEST(Icmp, EveryBitFlipIsCaught) {
  const auto good = hex_bytes(test::kIcmpEchoRequest);
  for (std::size_t bit = 0; bit < good.size() * 8; ++bit) {
    auto bytes = good;
    bytes[bit / 8] ^= std::byte{static_cast<std::uint8_t>(1u << (bit % 8))};
    const auto icmp = IcmpPacket::parse(bytes);
    ASSERT_FALSE(icmp.ok()) << bit;
    EXPECT_EQ(icmp.error(), WireError::bad_checksum);
  }
}

TEST(Icmp, EchoReplyInPlace) {
  auto bytes = hex_bytes(test::kIcmpEchoRequest);
  const auto request = IcmpPacket::parse(bytes);
  ASSERT_TRUE(request.ok());
  ASSERT_EQ(emit_echo_reply(bytes, *request), bytes.size());
  const auto reply = IcmpPacket::parse(bytes);
  ASSERT_TRUE(reply.ok()) << wire_error_name(reply.error());
  EXPECT_EQ(reply->type(), kIcmpEchoReply);
  EXPECT_EQ(reply->code(), 0);
  EXPECT_EQ(reply->identifier(), 0x1234);
  EXPECT_EQ(reply->sequence(), 1);
  // Only the type changed (8 -> 0), so the checksum rises by 0x0800: 2d0a + 0800 = 350a.
  EXPECT_EQ(reply->checksum(), 0x350a);
  const auto original = hex_bytes(test::kIcmpEchoRequest);
  EXPECT_TRUE(std::equal(original.begin() + 4, original.end(), bytes.begin() + 4));
}

TEST(Icmp, EchoReplyIntoAnotherAndOverlappingBuffer) {
  auto bytes = hex_bytes(test::kIcmpEchoRequest);
  const auto request = IcmpPacket::parse(bytes);
  ASSERT_TRUE(request.ok());
  std::vector<std::byte> out(64);
  ASSERT_EQ(emit_echo_reply(out, *request), 24u);
  const auto reply = IcmpPacket::parse(std::span(out).first(24));
  ASSERT_TRUE(reply.ok());
  EXPECT_EQ(reply->sequence(), 1);
  EXPECT_EQ(load_u8(bytes, 0), kIcmpEchoRequest);  // request untouched

  std::vector<std::byte> too_small(23);
  EXPECT_EQ(emit_echo_reply(too_small, *request), 0u);

  // Overlap: the request sits 4 bytes into a buffer and the reply is built at its start.
  std::vector<std::byte> shared(28);
  std::copy(bytes.begin(), bytes.end(), shared.begin() + 4);
  const auto shifted = IcmpPacket::parse(std::span(shared).subspan(4));
  ASSERT_TRUE(shifted.ok());
  ASSERT_EQ(emit_echo_reply(std::span(shared).first(24), *shifted), 24u);
  const auto moved = IcmpPacket::parse(std::span(shared).first(24));
  ASSERT_TRUE(moved.ok());
  EXPECT_EQ(moved->type(), kIcmpEchoReply);
  EXPECT_EQ(moved->identifier(), 0x1234);
  EXPECT_EQ(moved->payload()[15], std::byte{0x1f});
}

std::vector<std::byte> udp_packet(std::size_t payload_length) {
  std::vector<std::byte> bytes(20 + payload_length);
  for (std::size_t i = 20; i < bytes.size(); ++i) {
    bytes[i] = std::byte{static_cast<std::uint8_t>(i)};
  }
  const Ipv4Header header{.source = test::kHostA, .destination = test::kHostB,
                          .protocol = kProtocolUdp,
                          .payload_length = static_cast<std::uint16_t>(payload_length)};
  EXPECT_EQ(emit_ipv4_header(bytes, header), 20u);
  return bytes;
}

TEST(Icmp, PortUnreachableQuotesHeaderAndEightBytes) {
  const auto offending = udp_packet(100);
  std::vector<std::byte> out(576);
  const std::size_t length = emit_destination_unreachable(out, kIcmpPortUnreachable, offending);
  ASSERT_EQ(length, 8u + 20 + 8);
  const auto icmp = IcmpPacket::parse(std::span(out).first(length));
  ASSERT_TRUE(icmp.ok()) << wire_error_name(icmp.error());
  EXPECT_EQ(icmp->type(), kIcmpDestinationUnreachable);
  EXPECT_EQ(icmp->code(), kIcmpPortUnreachable);
  EXPECT_EQ(icmp->rest_of_header(), 0u);
  EXPECT_TRUE(icmp->is_error());
  EXPECT_TRUE(std::equal(offending.begin(), offending.begin() + 28, icmp->payload().begin()));
  // The quoted header still parses as a header (its total length exceeds the quote).
  EXPECT_EQ(Ipv4Packet::parse(icmp->payload()).error(), WireError::bad_total_length);
}

TEST(Icmp, ErrorQuotesLessWhenThePacketIsShortAndRespectsTotalLength) {
  auto offending = udp_packet(3);
  offending.resize(60, std::byte{0xaa});  // Ethernet padding must not be quoted
  std::vector<std::byte> out(100);
  const std::size_t length = emit_time_exceeded(out, kIcmpTtlExceeded, offending);
  ASSERT_EQ(length, 8u + 23);
  const auto icmp = IcmpPacket::parse(std::span(out).first(length));
  ASSERT_TRUE(icmp.ok());
  EXPECT_EQ(icmp->type(), kIcmpTimeExceeded);
  EXPECT_EQ(icmp->code(), kIcmpTtlExceeded);
  EXPECT_TRUE(Ipv4Packet::parse(icmp->payload()).ok());

  std::vector<std::byte> small(8 + 22);
  EXPECT_EQ(emit_time_exceeded(small, kIcmpTtlExceeded, offending), 0u);
}

TEST(Icmp, ErrorWithOptionsQuotesTheWholeHeader) {
  auto offending = hex_bytes("46 00 00 28 00 01 00 00 01 11 00 00 0a 4d 00 01 0a 4d 00 02"
                             "94 04 00 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10");
  std::vector<std::byte> out(100);
  const std::size_t length = emit_destination_unreachable(out, kIcmpProtocolUnreachable, offending);
  ASSERT_EQ(length, 8u + 24 + 8);
  EXPECT_EQ(out[length - 1], std::byte{0x08});
}

TEST(Icmp, FragmentationNeededCarriesMtu) {
  const auto offending = udp_packet(1500);
  std::vector<std::byte> out(100);
  const std::size_t length = emit_fragmentation_needed(out, 1400, offending);
  ASSERT_EQ(length, 36u);
  const auto icmp = IcmpPacket::parse(std::span(out).first(length));
  ASSERT_TRUE(icmp.ok());
  EXPECT_EQ(icmp->code(), kIcmpFragmentationNeeded);
  EXPECT_EQ(icmp->sequence(), 1400);  // bytes 6-7: next-hop MTU
}

TEST(Icmp, ErrorInPlaceOverTheOffendingPacket) {
  // Build the error into the same buffer the offending packet came in (it moves 8 bytes right).
  std::vector<std::byte> buffer(200);
  const auto offending = udp_packet(50);
  std::copy(offending.begin(), offending.end(), buffer.begin());
  const std::size_t length = emit_destination_unreachable(
      buffer, kIcmpPortUnreachable, std::span<const std::byte>(buffer).first(offending.size()));
  ASSERT_EQ(length, 36u);
  const auto icmp = IcmpPacket::parse(std::span(buffer).first(length));
  ASSERT_TRUE(icmp.ok());
  EXPECT_TRUE(std::equal(offending.begin(), offending.begin() + 28, icmp->payload().begin()));
}

TEST(Icmp, NoErrorAboutGarbage) {
  std::vector<std::byte> out(100);
  std::vector<std::byte> short_packet(19, std::byte{0x45});
  EXPECT_EQ(emit_destination_unreachable(out, 3, short_packet), 0u);
  auto ipv6 = udp_packet(10);
  ipv6[0] = std::byte{0x65};
  EXPECT_EQ(emit_destination_unreachable(out, 3, ipv6), 0u);
  auto bad_ihl = udp_packet(10);
  bad_ihl[0] = std::byte{0x44};
  EXPECT_EQ(emit_destination_unreachable(out, 3, bad_ihl), 0u);
  bad_ihl[0] = std::byte{0x4f};
  EXPECT_EQ(emit_destination_unreachable(out, 3, bad_ihl), 0u);
}

TEST(Icmp, ErrorPolicy) {
  auto bytes = udp_packet(10);
  EXPECT_TRUE(icmp_error_allowed(Ipv4Packet::parse(bytes).value()));

  const auto with = [&](auto change) {
    auto copy = bytes;
    auto packet = Ipv4Packet::unchecked(copy);
    change(copy, packet);
    packet.fill_checksum();
    return icmp_error_allowed(Ipv4Packet::parse(copy).value());
  };
  EXPECT_FALSE(with([](auto&, auto p) { p.set_destination(kIpv4Broadcast); }));
  EXPECT_FALSE(with([](auto&, auto p) { p.set_destination(0xe0000001); }));
  EXPECT_FALSE(with([](auto&, auto p) { p.set_source(0); }));
  EXPECT_FALSE(with([](auto& b, auto) { store_be16(b, 6, 0x0001); }));  // non-first fragment
  EXPECT_TRUE(with([](auto& b, auto) { store_be16(b, 6, 0x2000); }));   // first fragment
  // ICMP errors about ICMP errors: no; about echo requests: yes.
  EXPECT_FALSE(with([](auto& b, auto) { b[9] = std::byte{1}; b[20] = std::byte{3}; }));
  EXPECT_FALSE(with([](auto& b, auto) { b[9] = std::byte{1}; b[20] = std::byte{11}; }));
  EXPECT_TRUE(with([](auto& b, auto) { b[9] = std::byte{1}; b[20] = std::byte{8}; }));
}

}  // namespace
}  // namespace flotilla::wire
