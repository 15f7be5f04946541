// TCP view, options and builder: a Linux-style SYN, hostile options, round trips.
#include "components/wire/tcp.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "components/wire/tests/hex.hpp"

namespace flotilla::wire {
namespace {

using test::hex_bytes;
using test::kHostA;
using test::kHostB;

// A 20-byte header with options, checksum filled, for option tests.
std::vector<std::byte> segment_with_options(std::string_view options_hex) {
  const auto options = hex_bytes(options_hex);
  std::vector<std::byte> bytes(20 + options.size());
  std::copy(options.begin(), options.end(), bytes.begin() + 20);
  store_u8(bytes, 12, static_cast<std::uint8_t>((bytes.size() / 4) << 4));
  TcpSegment::unchecked(bytes).fill_checksum(kHostA, kHostB);
  return bytes;
}

TEST(Tcp, ParsesKnownSyn) {
  auto bytes = hex_bytes(test::kTcpSyn);
  const auto tcp = TcpSegment::parse(bytes, kHostA, kHostB);
  ASSERT_TRUE(tcp.ok()) << wire_error_name(tcp.error());
  EXPECT_EQ(tcp->source_port(), 51000);
  EXPECT_EQ(tcp->destination_port(), 80);
  EXPECT_EQ(tcp->sequence(), 0x11223344u);
  EXPECT_EQ(tcp->acknowledgment(), 0u);
  EXPECT_EQ(tcp->header_length(), 40u);
  EXPECT_EQ(tcp->flags(), kTcpSyn);
  EXPECT_TRUE(tcp->has_flags(kTcpSyn));
  EXPECT_FALSE(tcp->has_flags(kTcpSyn | kTcpAck));
  EXPECT_EQ(tcp->window(), 64240);
  EXPECT_EQ(tcp->checksum(), 0x287e);
  EXPECT_EQ(tcp->urgent_pointer(), 0);
  EXPECT_EQ(tcp->options().size(), 20u);
  EXPECT_TRUE(tcp->payload().empty());
  EXPECT_EQ(tcp->sequence_length(), 1u);

  const auto options = parse_tcp_options(tcp->options());
  ASSERT_TRUE(options.ok());
  EXPECT_EQ(options->mss, 1460);
  EXPECT_TRUE(options->sack_permitted);
  ASSERT_TRUE(options->timestamps);
  EXPECT_EQ(options->timestamps->first, 0x01020304u);
  EXPECT_EQ(options->timestamps->second, 0u);
  EXPECT_EQ(options->window_scale, 7);
  EXPECT_EQ(options->sack_block_count, 0);
}

TEST(Tcp, EveryPrefixFailsWithTheRightError) {
  const auto bytes = hex_bytes(test::kTcpSyn);
  for (std::size_t length = 0; length < bytes.size(); ++length) {
    std::vector<std::byte> prefix(bytes.begin(), bytes.begin() + length);
    const auto tcp = TcpSegment::parse(prefix, kHostA, kHostB);
    ASSERT_FALSE(tcp.ok()) << length;
    EXPECT_EQ(tcp.error(), length < 20 ? WireError::too_short : WireError::bad_header_length)
        << length;
  }
}

TEST(Tcp, DataOffsetBelowFive) {
  for (std::uint8_t offset = 0; offset < 5; ++offset) {
    auto bytes = hex_bytes(test::kTcpSyn);
    bytes[12] = std::byte{static_cast<std::uint8_t>(offset << 4)};
    const auto tcp = TcpSegment::parse(bytes, kHostA, kHostB);
    ASSERT_FALSE(tcp.ok());
    EXPECT_EQ(tcp.error(), WireError::bad_header_length) << int{offset};
  }
}

TEST(Tcp, EveryBitFlipOutsideTheDataOffsetIsCaught) {
  const auto good = hex_bytes(test::kTcpSyn);
  for (std::size_t bit = 0; bit < good.size() * 8; ++bit) {
    if (bit / 8 == 12) continue;  // data offset flips may fail as bad_header_length
    auto bytes = good;
    bytes[bit / 8] ^= std::byte{static_cast<std::uint8_t>(1u << (bit % 8))};
    const auto tcp = TcpSegment::parse(bytes, kHostA, kHostB);
    ASSERT_FALSE(tcp.ok()) << bit;
    EXPECT_EQ(tcp.error(), WireError::bad_checksum) << bit;
  }
}

TEST(Tcp, WrongPseudoHeaderFailsChecksum) {
  auto bytes = hex_bytes(test::kTcpSyn);
  EXPECT_EQ(TcpSegment::parse(bytes, kHostA, 0x0a4d0003).error(), WireError::bad_checksum);
}

TEST(Tcp, MalformedOptionStructureIsBadOption) {
  for (const char* options : {
           "02 00 00 00",        // length 0
           "02 01 00 00",        // length 1
           "01 01 01 02",        // kind with no room for its length byte... then length missing
           "02 05 05 b4",        // runs past the end by one
           "01 08 0a 01 02 03 04 05",  // timestamps cut short
           "fe ff 00 00",        // unknown kind running far past the end
       }) {
    auto bytes = segment_with_options(options);
    const auto tcp = TcpSegment::parse(bytes, kHostA, kHostB);
    ASSERT_FALSE(tcp.ok()) << options;
    EXPECT_EQ(tcp.error(), WireError::bad_option) << options;
    EXPECT_EQ(parse_tcp_options(std::span(bytes).subspan(20)).error(), WireError::bad_option)
        << options;
  }
}

TEST(Tcp, EolEndsTheWalkAndNopsAreSkipped) {
  // EOL: the garbage after it is never read.
  auto bytes = segment_with_options("01 01 00 02 00 ff");
  bytes.resize(bytes.size() + 2);  // keep the header 4-byte aligned (data offset 7 = 28 bytes)
  store_u8(bytes, 12, 7 << 4);
  TcpSegment::unchecked(bytes).fill_checksum(kHostA, kHostB);
  const auto tcp = TcpSegment::parse(bytes, kHostA, kHostB);
  ASSERT_TRUE(tcp.ok()) << wire_error_name(tcp.error());
  const auto options = parse_tcp_options(tcp->options());
  ASSERT_TRUE(options.ok());
  EXPECT_FALSE(options->mss);
  EXPECT_FALSE(options->sack_permitted);
}

TEST(Tcp, KnownOptionsWithWrongLengthsAreRejectedByTheOptionParser) {
  for (const char* options : {
           "02 03 05 00",                    // MSS length 3
           "02 05 05 b4 00 00 00 00",        // MSS length 5
           "03 04 07 00",                    // window scale length 4
           "03 02 00 00",                    // window scale length 2
           "04 03 00 00",                    // SACK permitted length 3
           "08 09 00 00 00 00 00 00 00 00 00 00",  // timestamps length 9
           "05 02 00 00",                    // SACK with no blocks
           "05 09 00 00 00 00 00 00 00 00 00 00",  // SACK with a partial block
           "05 2a 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"
           "00 00 00 00 00 00 00 00 00 00 00 00",  // five SACK blocks (42 bytes > 40, still bad)
       }) {
    const auto bytes = hex_bytes(options);
    const auto parsed = parse_tcp_options(bytes);
    ASSERT_FALSE(parsed.ok()) << options;
    EXPECT_EQ(parsed.error(), WireError::bad_option) << options;
  }
}

TEST(Tcp, UnknownOptionsAreSkippedAndSackBlocksRead) {
  const auto bytes = hex_bytes("fd 04 aa bb 01 01 05 12 00 00 00 0a 00 00 00 14"
                               "00 00 00 1e 00 00 00 28 03 03 0e 00");
  const auto parsed = parse_tcp_options(bytes);
  ASSERT_TRUE(parsed.ok());
  ASSERT_EQ(parsed->sack_block_count, 2);
  EXPECT_EQ(parsed->sack_blocks[0], (std::pair<std::uint32_t, std::uint32_t>{10, 20}));
  EXPECT_EQ(parsed->sack_blocks[1], (std::pair<std::uint32_t, std::uint32_t>{30, 40}));
  EXPECT_EQ(parsed->window_scale, 14);
  EXPECT_FALSE(parsed->mss);
}

TEST(Tcp, EmitOptionsRoundTrip) {
  TcpOptions options;
  options.mss = 1460;
  options.sack_permitted = true;
  options.timestamps = std::pair{0x01020304u, 0u};
  options.window_scale = 7;
  std::array<std::byte, 40> out{};
  const std::size_t length = emit_tcp_options(out, options);
  ASSERT_EQ(length, 20u);
  // The same layout as the Linux SYN in hex.hpp.
  const auto syn = hex_bytes(test::kTcpSyn);
  EXPECT_TRUE(std::equal(out.begin(), out.begin() + 20, syn.begin() + 20));

  options = TcpOptions{};
  options.timestamps = std::pair{5u, 6u};
  options.sack_block_count = 4;  // only three fit after the timestamps
  for (std::uint32_t i = 0; i < 4; ++i) options.sack_blocks[i] = {i * 100, i * 100 + 50};
  const std::size_t sack_length = emit_tcp_options(out, options);
  ASSERT_EQ(sack_length, 40u);
  const auto parsed = parse_tcp_options(std::span(out).first(sack_length));
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->sack_block_count, 3);
  EXPECT_EQ(parsed->sack_blocks[2], (std::pair<std::uint32_t, std::uint32_t>{200, 250}));
  EXPECT_EQ(parsed->timestamps, (std::pair<std::uint32_t, std::uint32_t>{5, 6}));

  options = TcpOptions{};
  options.sack_permitted = true;
  options.sack_block_count = 4;
  EXPECT_EQ(emit_tcp_options(out, options), 4u + 36u);
  std::array<std::byte, 8> small{};
  EXPECT_EQ(emit_tcp_options(small, options), 0u);
  EXPECT_EQ(emit_tcp_options(small, TcpOptions{}), 0u);  // nothing to write is 0 bytes too
}

TEST(Tcp, EmitMatchesKnownSyn) {
  const auto syn = hex_bytes(test::kTcpSyn);
  const std::vector<std::byte> options(syn.begin() + 20, syn.end());
  std::vector<std::byte> out(40);
  const TcpHeader header{.source_port = 51000, .destination_port = 80, .sequence = 0x11223344,
                         .flags = kTcpSyn, .window = 64240, .options = options};
  ASSERT_EQ(emit_tcp(out, header, kHostA, kHostB, 0), 40u);
  EXPECT_EQ(out, syn);
}

TEST(Tcp, EmitParseRoundTripWithPayloadAndPaddedOptions) {
  const auto options = hex_bytes("02 04 05 b4 03 03 03");  // 7 bytes: padded to 8 with EOL
  ASSERT_EQ(tcp_header_length(options.size()), 28u);
  std::vector<std::byte> out(28 + 5, std::byte{0xcc});
  std::memcpy(out.data() + 28, "hello", 5);
  const TcpHeader header{.source_port = 1, .destination_port = 2, .sequence = 0xfffffff0,
                         .acknowledgment = 0x12345678, .flags = kTcpAck | kTcpPsh | kTcpFin,
                         .window = 512, .urgent_pointer = 3, .options = options};
  ASSERT_EQ(emit_tcp(out, header, kHostA, kHostB, 5), 33u);
  const auto tcp = TcpSegment::parse(out, kHostA, kHostB);
  ASSERT_TRUE(tcp.ok()) << wire_error_name(tcp.error());
  EXPECT_EQ(tcp->source_port(), 1);
  EXPECT_EQ(tcp->destination_port(), 2);
  EXPECT_EQ(tcp->sequence(), 0xfffffff0u);
  EXPECT_EQ(tcp->acknowledgment(), 0x12345678u);
  EXPECT_EQ(tcp->flags(), kTcpAck | kTcpPsh | kTcpFin);
  EXPECT_EQ(tcp->window(), 512);
  EXPECT_EQ(tcp->urgent_pointer(), 3);
  EXPECT_EQ(tcp->header_length(), 28u);
  EXPECT_EQ(tcp->options()[7], std::byte{0});
  ASSERT_EQ(tcp->payload().size(), 5u);
  EXPECT_EQ(std::memcmp(tcp->payload().data(), "hello", 5), 0);
  EXPECT_EQ(tcp->sequence_length(), 6u);
  const auto parsed = parse_tcp_options(tcp->options());
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->mss, 1460);
  EXPECT_EQ(parsed->window_scale, 3);
}

TEST(Tcp, SettersThenFillChecksum) {
  auto bytes = hex_bytes(test::kTcpSyn);
  const auto tcp = TcpSegment::parse(bytes, kHostA, kHostB);
  ASSERT_TRUE(tcp.ok());
  tcp->set_source_port(9);
  tcp->set_destination_port(10);
  tcp->set_sequence(11);
  tcp->set_acknowledgment(12);
  tcp->set_flags(kTcpRst | kTcpAck);
  tcp->set_window(13);
  EXPECT_EQ(TcpSegment::parse(bytes, kHostA, kHostB).error(), WireError::bad_checksum);
  tcp->fill_checksum(kHostA, kHostB);
  const auto again = TcpSegment::parse(bytes, kHostA, kHostB);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->source_port(), 9);
  EXPECT_EQ(again->destination_port(), 10);
  EXPECT_EQ(again->sequence(), 11u);
  EXPECT_EQ(again->acknowledgment(), 12u);
  EXPECT_EQ(again->flags(), kTcpRst | kTcpAck);
  EXPECT_EQ(again->window(), 13);
}

TEST(Tcp, EmitRefusesBadSizes) {
  std::vector<std::byte> options(41);
  EXPECT_EQ(tcp_header_length(41), 0u);
  std::vector<std::byte> out(200);
  EXPECT_EQ(emit_tcp(out, TcpHeader{.options = options}, 1, 2, 0), 0u);
  EXPECT_EQ(emit_tcp(out, TcpHeader{}, 1, 2, 181), 0u);
  EXPECT_EQ(emit_tcp(out, TcpHeader{}, 1, 2, 180), 200u);
  std::vector<std::byte> small(19);
  EXPECT_EQ(emit_tcp(small, TcpHeader{}, 1, 2, 0), 0u);
}

TEST(Tcp, OversizedSegmentIsRejected) {
  std::vector<std::byte> huge(0x10000);
  store_u8(huge, 12, 5 << 4);
  const auto tcp = TcpSegment::parse(huge, kHostA, kHostB);
  ASSERT_FALSE(tcp.ok());
  EXPECT_EQ(tcp.error(), WireError::bad_length);
}

}  // namespace
}  // namespace flotilla::wire
