// SipHash-2-4 against the paper's reference vectors, and the ISNs and SYN cookies built on it.
#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "components/tcp/algorithms/isn.hpp"
#include "components/tcp/algorithms/siphash.hpp"
#include "components/tcp/algorithms/syn_cookies.hpp"

namespace flotilla::tcp {
namespace {

// Key 00 01 .. 0f, message 00 01 .. (n-1): the first entries of the reference implementation's
// vectors_sip64 (SipHash paper, appendix A gives n = 15).
constexpr std::array<std::uint64_t, 17> kReferenceVectors = {
    0x726fdb47dd0e0e31, 0x74f839c593dc67fd, 0x0d6c8009d9a94f5a, 0x85676696d7fb7e2d,
    0xcf2794e0277187b7, 0x18765564cd99a68d, 0xcbc9466e58fee3ce, 0xab0200f58b01d137,
    0x93f5f5799a932462, 0x9e0082df0ba9e4b0, 0x7a5dbbc594ddb9f3, 0xf4b32f46226bada7,
    0x751e8fbc860ee5fb, 0x14ea5627c0843d90, 0xf723ca908e7af2ee, 0xa129ca6149be45e5,
    0x3f2acc7f57c29bdb,
};
constexpr std::uint64_t kReferenceVector32 = 0x7127512f72f27cce;

constexpr std::uint64_t kReferenceKey[2] = {0x0706050403020100, 0x0f0e0d0c0b0a0908};

std::vector<std::uint8_t> counting_message(std::size_t length) {
  std::vector<std::uint8_t> message(length);
  for (std::size_t i = 0; i < length; ++i) message[i] = static_cast<std::uint8_t>(i);
  return message;
}

TEST(SipHash, MatchesTheReferenceVectors) {
  for (std::size_t length = 0; length < kReferenceVectors.size(); ++length) {
    EXPECT_EQ(siphash24(kReferenceKey, counting_message(length)), kReferenceVectors[length])
        << "message length " << length;
  }
  EXPECT_EQ(siphash24(kReferenceKey, counting_message(32)), kReferenceVector32);
}

TEST(SipHash, KeyChangesTheHash) {
  const std::uint64_t other_key[2] = {kReferenceKey[0] ^ 1, kReferenceKey[1]};
  EXPECT_NE(siphash24(other_key, counting_message(8)), kReferenceVectors[8]);
}

constexpr std::uint64_t kSecret[2] = {0x0123456789abcdef, 0xfedcba9876543210};
constexpr std::uint64_t kSecond = 1'000'000'000;
constexpr FourTuple kTuple{0x0a000001, 0x0a000002, 80, 40000};

TEST(Isn, DependsOnTheTupleAndTheSecret) {
  const std::uint64_t now = 5 * kSecond;
  const std::uint32_t isn = initial_sequence(kTuple, kSecret, now);
  EXPECT_EQ(initial_sequence(kTuple, kSecret, now), isn);  // deterministic: any replica agrees
  FourTuple other_port = kTuple;
  other_port.remote_port = 40001;
  EXPECT_NE(initial_sequence(other_port, kSecret, now), isn);
  FourTuple other_address = kTuple;
  other_address.remote_address = 0x0a000003;
  EXPECT_NE(initial_sequence(other_address, kSecret, now), isn);
  const std::uint64_t other_secret[2] = {kSecret[0], kSecret[1] + 1};
  EXPECT_NE(initial_sequence(kTuple, other_secret, now), isn);
}

TEST(Isn, AdvancesWithTheFourMicrosecondClock) {
  const std::uint32_t start = initial_sequence(kTuple, kSecret, 10 * kSecond);
  EXPECT_EQ(initial_sequence(kTuple, kSecret, 11 * kSecond) - start, 250'000u);
  EXPECT_EQ(initial_sequence(kTuple, kSecret, 10 * kSecond + 4'000) - start, 1u);
  EXPECT_EQ(initial_sequence(kTuple, kSecret, 10 * kSecond + 3'999) - start, 0u);
}

TEST(SynCookies, RoundTripTheMssTable) {
  const std::uint64_t now = 1000 * kSecond;
  for (std::uint16_t mss : kSynCookieMssTable) {
    const std::uint32_t cookie = make_syn_cookie(kTuple, 777, mss, kSecret, now);
    const auto decoded = check_syn_cookie(kTuple, 777, cookie, kSecret, now + kSecond);
    ASSERT_TRUE(decoded.has_value()) << mss;
    EXPECT_EQ(*decoded, mss);
  }
  // Between entries: the largest entry not above it; below the table: its first entry.
  auto decode = [&](std::uint16_t mss) {
    return check_syn_cookie(kTuple, 1, make_syn_cookie(kTuple, 1, mss, kSecret, now), kSecret, now);
  };
  EXPECT_EQ(decode(1459), std::optional<std::uint16_t>(1452));
  EXPECT_EQ(decode(9000), std::optional<std::uint16_t>(1460));
  EXPECT_EQ(decode(100), std::optional<std::uint16_t>(536));
}

TEST(SynCookies, RejectOtherTuplesSecretsPeerIsnsAndTampering) {
  const std::uint64_t now = 1000 * kSecond;
  const std::uint32_t cookie = make_syn_cookie(kTuple, 777, 1460, kSecret, now);
  ASSERT_TRUE(check_syn_cookie(kTuple, 777, cookie, kSecret, now).has_value());
  FourTuple other = kTuple;
  other.remote_port = 40001;
  EXPECT_FALSE(check_syn_cookie(other, 777, cookie, kSecret, now).has_value());
  EXPECT_FALSE(check_syn_cookie(kTuple, 778, cookie, kSecret, now).has_value());
  const std::uint64_t other_secret[2] = {kSecret[0] + 1, kSecret[1]};
  EXPECT_FALSE(check_syn_cookie(kTuple, 777, cookie, other_secret, now).has_value());
  // Every single-bit change is caught (the MSS and time bits are covered by the MAC too).
  for (int bit = 0; bit < 32; ++bit) {
    EXPECT_FALSE(check_syn_cookie(kTuple, 777, cookie ^ (1u << bit), kSecret, now).has_value())
        << "bit " << bit;
  }
}

TEST(SynCookies, ValidForOneToTwoPeriodsThenRejected) {
  const std::uint64_t made = 1000 * kSecond;
  const std::uint32_t cookie = make_syn_cookie(kTuple, 9, 1440, kSecret, made);
  const std::uint64_t period_start = made / kSynCookiePeriodNs * kSynCookiePeriodNs;
  // Accepted through the end of the next period (64 to 128 s after it was made)...
  EXPECT_TRUE(
      check_syn_cookie(kTuple, 9, cookie, kSecret, period_start + 2 * kSynCookiePeriodNs - 1)
          .has_value());
  // ...and not after.
  EXPECT_FALSE(check_syn_cookie(kTuple, 9, cookie, kSecret, period_start + 2 * kSynCookiePeriodNs)
                   .has_value());
  // Nor once the 5-bit counter has wrapped to the same value (32 periods later).
  EXPECT_FALSE(
      check_syn_cookie(kTuple, 9, cookie, kSecret, made + 32 * kSynCookiePeriodNs).has_value());
  // Nor from the future (a cookie cannot be checked before it is made).
  EXPECT_FALSE(check_syn_cookie(kTuple, 9, cookie, kSecret, made - kSynCookiePeriodNs).has_value());
}

}  // namespace
}  // namespace flotilla::tcp
