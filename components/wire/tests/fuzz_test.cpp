// Seeded random input over every parser: no crash, and a successful parse never yields a span or
// accessor outside the buffer. Build with -Db_sanitize=address,undefined for the real check: each
// buffer is its own exact-size heap allocation, so any overread is reported.
#include <gtest/gtest.h>

#include <memory>
#include <random>

#include "components/wire/arp.hpp"
#include "components/wire/checksum.hpp"
#include "components/wire/ethernet.hpp"
#include "components/wire/icmp.hpp"
#include "components/wire/ipv4.hpp"
#include "components/wire/tcp.hpp"
#include "components/wire/udp.hpp"

namespace flotilla::wire {
namespace {

constexpr int kIterations = 100000;

class Buffer {
 public:
  Buffer(std::size_t size, std::mt19937& random) : size_(size), data_(new std::byte[size]) {
    for (std::size_t i = 0; i < size; ++i) {
      data_[i] = std::byte{static_cast<std::uint8_t>(random())};
    }
  }
  std::span<std::byte> span() const { return {data_.get(), size_}; }

 private:
  std::size_t size_;
  std::unique_ptr<std::byte[]> data_;
};

// True if inner lies inside outer (an empty span anywhere in [begin, end] counts).
bool within(std::span<const std::byte> inner, std::span<const std::byte> outer) {
  return inner.data() >= outer.data() && inner.data() + inner.size() <= outer.data() + outer.size();
}

// Random length, mostly small so every header boundary is hit often.
std::size_t random_length(std::mt19937& random) {
  switch (random() % 4) {
    case 0: return random() % 32;
    case 1: return random() % 80;
    case 2: return random() % 200;
    default: return random() % 1600;
  }
}

class WireFuzz : public ::testing::Test {
 protected:
  std::mt19937 random_{20240501};
  std::uint32_t source_ = 0x0a4d0001;
  std::uint32_t destination_ = 0x0a4d0002;
};

TEST_F(WireFuzz, Ethernet) {
  for (int i = 0; i < kIterations; ++i) {
    Buffer buffer(random_length(random_), random_);
    const auto frame = EthernetFrame::parse(buffer.span());
    ASSERT_EQ(frame.ok(), buffer.span().size() >= kEthernetHeaderBytes);
    if (!frame) continue;
    (void)frame->destination(), (void)frame->source(), (void)frame->ethertype();
    ASSERT_TRUE(within(frame->payload(), buffer.span()));
  }
}

TEST_F(WireFuzz, Arp) {
  int parsed = 0;
  for (int i = 0; i < kIterations; ++i) {
    Buffer buffer(random_length(random_) % 64, random_);
    const auto span = buffer.span();
    if (span.size() >= 8 && random_() % 2) {  // make the fixed fields plausible half the time
      store_be16(span, 0, 1);
      store_be16(span, 2, 0x0800);
      store_u8(span, 4, 6);
      store_u8(span, 5, 4);
      store_be16(span, 6, static_cast<std::uint16_t>(random_() % 4));
    }
    const auto arp = ArpPacket::parse(span);
    if (!arp) {
      ASSERT_TRUE(arp.error() == WireError::too_short || arp.error() == WireError::unsupported);
      continue;
    }
    ++parsed;
    ASSERT_TRUE(within(arp->bytes(), span));
    ASSERT_TRUE(arp->operation() == kArpRequest || arp->operation() == kArpReply);
    (void)arp->sender_mac(), (void)arp->sender_address(), (void)arp->target_mac(),
        (void)arp->target_address();
  }
  EXPECT_GT(parsed, 0);
}

TEST_F(WireFuzz, Ipv4AndIcmpErrors) {
  int parsed = 0;
  std::array<std::byte, 128> icmp_out{};
  for (int i = 0; i < kIterations; ++i) {
    Buffer buffer(random_length(random_), random_);
    const auto span = buffer.span();
    if (span.size() >= 20 && random_() % 2) {
      // A version-4 header with random IHL and total length and a valid checksum, so the deeper
      // checks run too.
      store_u8(span, 0, static_cast<std::uint8_t>(0x40 | (random_() % 16)));
      store_be16(span, 2, static_cast<std::uint16_t>(random_() % (span.size() + 8)));
      const std::size_t ihl = (std::to_integer<std::size_t>(span[0]) & 0x0f) * 4;
      if (ihl >= 20 && ihl <= span.size()) {
        store_be16(span, 10, 0);
        store_be16(span, 10, internet_checksum(span.first(ihl)));
      }
    }
    const auto packet = Ipv4Packet::parse(span);
    // Error messages about anything, valid or not, stay within the output.
    const std::size_t error_length = emit_destination_unreachable(icmp_out, 3, span);
    ASSERT_LE(error_length, icmp_out.size());
    if (error_length > 0) {
      ASSERT_GE(error_length, 8u + 20);
      ASSERT_TRUE(IcmpPacket::parse(std::span(icmp_out).first(error_length)).ok());
    }
    if (!packet) continue;
    ++parsed;
    ASSERT_TRUE(within(packet->bytes(), span));
    ASSERT_TRUE(within(packet->header(), packet->bytes()));
    ASSERT_TRUE(within(packet->options(), packet->bytes()));
    ASSERT_TRUE(within(packet->payload(), packet->bytes()));
    ASSERT_EQ(packet->header().size() + packet->payload().size(), packet->bytes().size());
    (void)packet->fragment_offset_bytes(), (void)packet->is_fragment(), (void)packet->source();
    (void)icmp_error_allowed(*packet);
    ASSERT_GT(error_length, 0u);  // a valid packet can always be reported
  }
  EXPECT_GT(parsed, kIterations / 10);
}

TEST_F(WireFuzz, Icmp) {
  int parsed = 0;
  for (int i = 0; i < kIterations; ++i) {
    Buffer buffer(random_length(random_), random_);
    const auto span = buffer.span();
    if (span.size() >= 8 && random_() % 2) IcmpPacket::unchecked(span).fill_checksum();
    const auto icmp = IcmpPacket::parse(span);
    if (!icmp) continue;
    ++parsed;
    ASSERT_TRUE(within(icmp->payload(), span));
    (void)icmp->type(), (void)icmp->code(), (void)icmp->identifier(), (void)icmp->sequence();
    ASSERT_EQ(emit_echo_reply(span, *icmp), span.size());  // in place
    ASSERT_TRUE(IcmpPacket::parse(span).ok());
  }
  EXPECT_GT(parsed, kIterations / 10);
}

TEST_F(WireFuzz, Udp) {
  int parsed = 0;
  for (int i = 0; i < kIterations; ++i) {
    Buffer buffer(random_length(random_), random_);
    const auto span = buffer.span();
    if (span.size() >= 8 && random_() % 2) {
      const std::size_t length = 8 + random_() % (span.size() - 8 + 4);  // sometimes too long
      if (length <= span.size()) {
        ASSERT_EQ(emit_udp(span, 1, 2, source_, destination_, length - 8), length);
      } else {
        store_be16(span, 4, static_cast<std::uint16_t>(length));
      }
    }
    const auto udp = UdpDatagram::parse(span, source_, destination_);
    if (!udp) continue;
    ++parsed;
    ASSERT_TRUE(within(udp->bytes(), span));
    ASSERT_TRUE(within(udp->payload(), udp->bytes()));
    ASSERT_EQ(udp->payload().size() + 8, udp->length());
  }
  EXPECT_GT(parsed, kIterations / 10);
}

TEST_F(WireFuzz, TcpAndOptions) {
  int parsed = 0;
  int options_parsed = 0;
  for (int i = 0; i < kIterations; ++i) {
    Buffer buffer(random_length(random_), random_);
    const auto span = buffer.span();
    if (span.size() >= 20 && random_() % 2) {
      // Options made of small kinds and lengths, so the walker meets EOL/NOP/known kinds often.
      const auto options_end = std::min<std::size_t>(span.size(), 60);
      for (std::size_t at = 20; at < options_end; ++at) {
        store_u8(span, at, static_cast<std::uint8_t>(random_() % 12));
      }
      store_u8(span, 12, static_cast<std::uint8_t>((5 + random_() % 11) << 4));
      TcpSegment::unchecked(span).fill_checksum(source_, destination_);
    }
    (void)parse_tcp_options(span.first(std::min<std::size_t>(span.size(), 40)));
    const auto tcp = TcpSegment::parse(span, source_, destination_);
    if (!tcp) continue;
    ++parsed;
    ASSERT_TRUE(within(tcp->options(), span));
    ASSERT_TRUE(within(tcp->payload(), span));
    ASSERT_EQ(tcp->header_length() + tcp->payload().size(), span.size());
    (void)tcp->sequence(), (void)tcp->flags(), (void)tcp->sequence_length();
    const auto options = parse_tcp_options(tcp->options());
    if (!options) continue;
    ++options_parsed;
    ASSERT_LE(options->sack_block_count, 4);
  }
  EXPECT_GT(parsed, kIterations / 10);
  EXPECT_GT(options_parsed, 0);
}

}  // namespace
}  // namespace flotilla::wire
