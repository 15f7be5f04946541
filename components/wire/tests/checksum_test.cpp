// The Internet checksum against RFC 1071's worked example and hand-computed values.
#include "components/wire/checksum.hpp"

#include <gtest/gtest.h>

#include <random>
#include <span>
#include <vector>

#include "components/wire/bytes.hpp"
#include "components/wire/tests/hex.hpp"

namespace flotilla::wire {
namespace {

using test::hex_bytes;

TEST(Bytes, BigEndianLoadsAndStores) {
  std::vector<std::byte> buffer(8);
  store_be16(buffer, 1, 0xabcd);
  store_be32(buffer, 3, 0x01020304);
  EXPECT_EQ(buffer, hex_bytes("00 ab cd 01 02 03 04 00"));
  EXPECT_EQ(load_be16(buffer, 1), 0xabcd);
  EXPECT_EQ(load_be32(buffer, 3), 0x01020304u);
  EXPECT_EQ(load_be16(buffer, 4), 0x0203);
}

TEST(Checksum, Rfc1071Example) {
  // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to 2ddf0, folds to ddf2, checksum 220d.
  const auto bytes = hex_bytes("00 01 f2 03 f4 f5 f6 f7");
  EXPECT_EQ(checksum_add(0, bytes), 0xddf2u);
  EXPECT_EQ(internet_checksum(bytes), 0x220d);
}

TEST(Checksum, ByteOrderIndependenceAndIncrementalSums) {
  // RFC 1071 1(A)/(C): summing in pieces of even length gives the same result.
  const auto bytes = hex_bytes("00 01 f2 03 f4 f5 f6 f7");
  const std::span<const std::byte> all(bytes);
  const std::uint32_t pieces = checksum_add(checksum_add(checksum_add(0, all.first(2)),
                                                         all.subspan(2, 4)), all.subspan(6));
  EXPECT_EQ(checksum_finish(pieces), 0x220d);
}

TEST(Checksum, OddLengthPadsWithZero) {
  EXPECT_EQ(internet_checksum(hex_bytes("01 02 03")), internet_checksum(hex_bytes("01 02 03 00")));
  // 0102 + 0300 = 0402 -> fbfd
  EXPECT_EQ(internet_checksum(hex_bytes("01 02 03")), 0xfbfd);
  EXPECT_EQ(internet_checksum(hex_bytes("ff")), 0x00ff);
}

TEST(Checksum, EdgeValues) {
  EXPECT_EQ(internet_checksum({}), 0xffff);
  EXPECT_EQ(internet_checksum(hex_bytes("00 00 00 00")), 0xffff);
  EXPECT_EQ(internet_checksum(hex_bytes("ff ff")), 0x0000);
  EXPECT_EQ(internet_checksum(hex_bytes("ff ff ff ff")), 0x0000);
}

TEST(Checksum, LongBuffersDoNotLoseCarries) {
  // 0xffff repeated n times sums to 0xffff in one's complement; a 32-bit accumulator that did not
  // fold would wrap after 65537 words.
  std::vector<std::byte> ones(200000, std::byte{0xff});
  EXPECT_EQ(internet_checksum(ones), 0x0000);
  std::vector<std::byte> pattern(200000);
  for (std::size_t i = 0; i < pattern.size(); i += 2) store_be16(pattern, i, 0x0001);
  // 100000 ones = 0x186a0 -> 0x86a1 -> ~ = 0x795e
  EXPECT_EQ(internet_checksum(pattern), 0x795e);
}

TEST(Checksum, VerifyingAMessageWithItsChecksumGivesZero) {
  auto header = hex_bytes(test::kIpv4HeaderForIcmp);
  EXPECT_EQ(internet_checksum(header), 0);
  store_be16(header, 10, 0);
  EXPECT_EQ(internet_checksum(header), 0x09ef);
}

// RFC 1071's definition, two bytes a step in network order: what the word-at-a-time sum must equal.
std::uint32_t reference_sum(std::uint32_t partial, std::span<const std::byte> bytes) {
  std::uint64_t sum = partial;
  std::size_t index = 0;
  for (; index + 1 < bytes.size(); index += 2) sum += load_be16(bytes, index);
  if (index < bytes.size()) sum += std::uint64_t{load_u8(bytes, index)} << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint32_t>(sum);
}

TEST(Checksum, EqualsTheDefinitionAtEveryLengthAlignmentAndPartialSum) {
  std::mt19937 random(7);
  std::vector<std::byte> buffer(2100);
  for (auto& byte : buffer) byte = std::byte{static_cast<std::uint8_t>(random())};
  const std::uint32_t partials[] = {0, 1, 0x8000, 0xfffe, 0xffff};
  for (std::size_t offset = 0; offset < 8; ++offset) {
    for (std::size_t length = 0; length + offset <= buffer.size(); length += (length < 80 ? 1 : 37)) {
      const auto bytes = std::span<const std::byte>(buffer).subspan(offset, length);
      for (const std::uint32_t partial : partials) {
        ASSERT_EQ(checksum_finish(checksum_add(partial, bytes)), checksum_finish(reference_sum(partial, bytes)))
            << "offset " << offset << " length " << length << " partial " << partial;
      }
    }
  }
  // All ones: every word at the top of its range, where a lost carry shows.
  std::vector<std::byte> ones(1501, std::byte{0xff});
  EXPECT_EQ(checksum_finish(checksum_add(0x1234, ones)), checksum_finish(reference_sum(0x1234, ones)));
}

TEST(Checksum, PseudoHeaderSum) {
  // 0a4d + 0001 + 0a4d + 0002 + 0011 + 0016 = 0x14c4
  EXPECT_EQ(pseudo_header_sum(test::kHostA, test::kHostB, 17, 0x16), 0x14c4u);
  // Carries fold: ffff+ffff+ffff+ffff+ff+ffff = 0x4fffb+0xff -> 0x500fa -> 0x00ff
  EXPECT_EQ(checksum_finish(pseudo_header_sum(0xffffffff, 0xffffffff, 0xff, 0xffff)),
            static_cast<std::uint16_t>(~0x00ffu & 0xffff));
}

}  // namespace
}  // namespace flotilla::wire
