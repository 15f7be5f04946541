// The region an application shares with one TCP replica: the replica's format is what the
// application's attach accepts, and a header that lies about the layout is refused.
#include <gtest/gtest.h>

#include "dataplane/tests/test_memory.hpp"
#include "components/formats/tcp_socket_page.hpp"

namespace flotilla::formats {
namespace {

using flotilla::testing::PageMemory;

constexpr std::size_t kRing = 4096;

TcpRegionHeader& header_of(PageMemory& memory) {
  return *reinterpret_cast<TcpRegionHeader*>(memory.bytes().data());
}

TEST(TcpRegion, FormatFitsAsManyPagesAsTheRegionHoldsAndAttachAgrees) {
  PageMemory memory(TcpRegion::bytes_for(5, kRing) + 100);
  const TcpRegion formatted = TcpRegion::format(memory.bytes(), kRing);
  ASSERT_TRUE(formatted.valid());
  EXPECT_EQ(formatted.page_count(), 5u);
  const TcpRegion attached = TcpRegion::attach(memory.bytes());
  ASSERT_TRUE(attached.valid());
  EXPECT_EQ(attached.page_count(), 5u);
  EXPECT_EQ(attached.ring_bytes(), kRing);
  for (std::uint32_t i = 0; i < 5; ++i) {
    EXPECT_EQ(attached.page(i), formatted.page(i));
    EXPECT_EQ(attached.page(i)->control.status.load(), TcpSocketStatus::free);
    EXPECT_EQ(attached.send_bytes(i).size(), kRing);
    // The rings lie inside the region and do not overlap the next page.
    EXPECT_LE(attached.receive_bytes(i).data() + kRing, memory.bytes().data() + memory.bytes().size());
    if (i + 1 < 5) {
      EXPECT_LE(attached.receive_bytes(i).data() + kRing, reinterpret_cast<std::byte*>(attached.page(i + 1)));
    }
  }
  EXPECT_EQ(attached.page(5), nullptr);
  EXPECT_TRUE(attached.send_bytes(5).empty());
  EXPECT_TRUE(attached.receive_bytes(5).empty());
}

TEST(TcpRegion, FormatRefusesBadRingSizesAndRegionsWithoutRoomForAPage) {
  PageMemory memory(TcpRegion::bytes_for(2, kRing));
  EXPECT_FALSE(TcpRegion::format(memory.bytes(), 3000).valid());
  EXPECT_FALSE(TcpRegion::format(memory.bytes(), 2048).valid());
  EXPECT_FALSE(TcpRegion::format(memory.bytes().first(TcpRegion::bytes_for(1, kRing) - 1), kRing).valid());
}

TEST(TcpRegion, AttachWaitsForTheReplicaToFormat) {
  PageMemory memory(TcpRegion::bytes_for(2, kRing));
  EXPECT_FALSE(TcpRegion::attach(memory.bytes()).valid());
  EXPECT_FALSE(TcpRegion::attach({}).valid());
  ASSERT_TRUE(TcpRegion::format(memory.bytes(), kRing).valid());
  EXPECT_TRUE(TcpRegion::attach(memory.bytes()).valid());
}

class TcpRegionBadHeader : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(TcpRegion::format(memory.bytes(), kRing).valid()); }
  PageMemory memory{TcpRegion::bytes_for(3, kRing)};
};

TEST_F(TcpRegionBadHeader, WrongMagicOrVersion) {
  header_of(memory).version = TcpRegionHeader::kVersion + 1;
  EXPECT_FALSE(TcpRegion::attach(memory.bytes()).valid());
  header_of(memory).version = TcpRegionHeader::kVersion;
  header_of(memory).magic.store(TcpRegionHeader::kMagic ^ 1);
  EXPECT_FALSE(TcpRegion::attach(memory.bytes()).valid());
}

TEST_F(TcpRegionBadHeader, MorePagesThanTheRegionHolds) {
  header_of(memory).page_count = 4;
  EXPECT_FALSE(TcpRegion::attach(memory.bytes()).valid());
  header_of(memory).page_count = 0;
  EXPECT_FALSE(TcpRegion::attach(memory.bytes()).valid());
  header_of(memory).page_count = 0xffffffff;
  EXPECT_FALSE(TcpRegion::attach(memory.bytes()).valid());
}

TEST_F(TcpRegionBadHeader, RingSizeOrStrideThatDoNotAgree) {
  header_of(memory).ring_bytes = 5000;
  EXPECT_FALSE(TcpRegion::attach(memory.bytes()).valid());
  header_of(memory).ring_bytes = 1024;
  EXPECT_FALSE(TcpRegion::attach(memory.bytes()).valid());
  header_of(memory).ring_bytes = kRing;
  header_of(memory).page_stride += 4096;
  EXPECT_FALSE(TcpRegion::attach(memory.bytes()).valid());
}

TEST_F(TcpRegionBadHeader, ARegionTooSmallForItsHeaderIsRefused) {
  EXPECT_FALSE(TcpRegion::attach(memory.bytes().first(100)).valid());
  // The header is fine but the mapping is shorter than its pages need.
  EXPECT_FALSE(TcpRegion::attach(memory.bytes().first(TcpRegion::bytes_for(2, kRing))).valid());
}

}  // namespace
}  // namespace flotilla::formats
