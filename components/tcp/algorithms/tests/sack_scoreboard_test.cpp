// RFC 6675 scoreboard and RFC 2018 receiver ranges on hand-built cases.
#include "components/tcp/algorithms/sack_scoreboard.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace flotilla::tcp {
namespace {

constexpr std::uint32_t kMss = 100;

void ack(SackScoreboard& board, std::uint32_t snd_una, std::vector<SackBlock> blocks) {
  board.on_ack(snd_una, blocks);
}

TEST(SackScoreboard, MergesBlocksAndTracksHighest) {
  SackScoreboard board;
  board.reset(1000);
  EXPECT_TRUE(board.empty());
  EXPECT_EQ(board.highest_sacked(), 1000u);
  ack(board, 1000, {{1200, 1300}, {1500, 1600}});
  ack(board, 1000, {{1300, 1400}});  // touches the first: one range [1200, 1400)
  ASSERT_EQ(board.range_count(), 2u);
  EXPECT_EQ(board.range(0).left, 1200u);
  EXPECT_EQ(board.range(0).right, 1400u);
  EXPECT_EQ(board.sacked_bytes(), 300u);
  EXPECT_EQ(board.highest_sacked(), 1600u);
  EXPECT_TRUE(board.is_sacked(1200));
  EXPECT_TRUE(board.is_sacked(1399));
  EXPECT_FALSE(board.is_sacked(1400));
  EXPECT_FALSE(board.is_sacked(1100));
}

TEST(SackScoreboard, BlocksBelowSndUnaAreDiscardedOrTrimmed) {
  SackScoreboard board;
  board.reset(1000);
  ack(board, 1000, {{1100, 1200}, {1400, 1500}});
  ack(board, 1150, {{900, 1000}, {1100, 1140}, {1300, 1450}, {1200, 1100}});
  // [900,1000) and [1100,1140) are below snd_una (D-SACK/stale); [1200,1100) is inverted;
  // [1100,1200) is trimmed to [1150,1200); [1300,1450) merges with [1400,1500).
  ASSERT_EQ(board.range_count(), 2u);
  EXPECT_EQ(board.range(0).left, 1150u);
  EXPECT_EQ(board.range(0).right, 1200u);
  EXPECT_EQ(board.range(1).left, 1300u);
  EXPECT_EQ(board.range(1).right, 1500u);
  ack(board, 1200, {});  // acknowledges exactly the first range: it goes, no empty range stays
  ASSERT_EQ(board.range_count(), 1u);
  EXPECT_EQ(board.sacked_bytes(), 200u);
  EXPECT_FALSE(board.is_lost(1200, 100));  // 200 bytes above: not more than 2 * MSS, one range
  ack(board, 1600, {});
  EXPECT_TRUE(board.empty());
  EXPECT_EQ(board.highest_sacked(), 1600u);
}

TEST(SackScoreboard, WorksAcrossTheSequenceWrap) {
  SackScoreboard board;
  const std::uint32_t una = 0xffff'ff00u;
  board.reset(una);
  ack(board, una, {{una + 0x80, una + 0x180}});  // right edge past 2^32
  EXPECT_TRUE(board.is_sacked(0x10));
  EXPECT_EQ(board.highest_sacked(), una + 0x180);
  EXPECT_EQ(board.sacked_bytes(), 0x100u);
}

TEST(SackScoreboard, IsLostNeedsDupThreshSegmentsSackedAbove) {
  SackScoreboard board;
  board.reset(0);
  ack(board, 0, {{100, 300}});  // two segments above 0
  EXPECT_FALSE(board.is_lost(0, kMss));
  ack(board, 0, {{300, 400}});  // three (one range, 300 bytes > 2 * MSS)
  EXPECT_TRUE(board.is_lost(0, kMss));
  EXPECT_TRUE(board.is_lost(150, kMss));   // 249 bytes above 150: more than 2 * MSS
  EXPECT_FALSE(board.is_lost(250, kMss));  // 149 bytes above 250
}

TEST(SackScoreboard, IsLostByThreeDiscontiguousRanges) {
  SackScoreboard board;
  board.reset(0);
  ack(board, 0, {{100, 110}, {200, 210}});
  EXPECT_FALSE(board.is_lost(0, kMss));
  ack(board, 0, {{300, 310}});
  EXPECT_TRUE(board.is_lost(0, kMss));
  EXPECT_FALSE(board.is_lost(150, kMss));
}

TEST(SackScoreboard, PipeCountsUnsackedNotLostAndRetransmitted) {
  // Sent [0, 1000). SACKed [200, 500) and [600, 700). Holes: [0,200) lost (400 bytes, 2 ranges
  // above), [500,600) not lost (100 bytes above), [700,1000) not lost.
  SackScoreboard board;
  board.reset(0);
  ack(board, 0, {{200, 500}, {600, 700}});
  EXPECT_TRUE(board.is_lost(0, kMss));
  EXPECT_FALSE(board.is_lost(500, kMss));
  EXPECT_EQ(board.pipe(0, 1000, 0, kMss), 100u + 300u);
  // After retransmitting [0, 100): those bytes count once (retransmission in flight).
  EXPECT_EQ(board.pipe(0, 1000, 100, kMss), 100u + 300u + 100u);
  // Nothing SACKed: everything outstanding is in the pipe.
  SackScoreboard clean;
  clean.reset(0);
  EXPECT_EQ(clean.pipe(0, 1000, 0, kMss), 1000u);
}

TEST(SackScoreboard, NextSegmentIsTheFirstLostHoleNotYetRetransmitted) {
  SackScoreboard board;
  board.reset(0);
  ack(board, 0, {{200, 500}, {600, 700}});
  auto first = board.next_segment(0, 1000, 0, kMss);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->first, 0u);
  EXPECT_EQ(first->second, 100u);  // one MSS
  auto second = board.next_segment(0, 1000, 100, kMss);
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->first, 100u);
  EXPECT_EQ(second->second, 200u);
  // The hole [500, 600) is not lost (only 100 bytes SACKed above): rule 1 has nothing more...
  EXPECT_FALSE(board.next_segment(0, 1000, 200, kMss).has_value());
  // ...but rule 3 offers it; the tail [700, 1000) is above the highest SACK and never offered.
  auto rescue = board.next_rescue_segment(0, 1000, 200, kMss);
  ASSERT_TRUE(rescue.has_value());
  EXPECT_EQ(rescue->first, 500u);
  EXPECT_EQ(rescue->second, 600u);
  EXPECT_FALSE(board.next_rescue_segment(0, 1000, 600, kMss).has_value());
  // Short holes give short segments.
  SackScoreboard short_hole;
  short_hole.reset(0);
  ack(short_hole, 0, {{30, 400}});
  auto segment = short_hole.next_segment(0, 1000, 0, kMss);
  ASSERT_TRUE(segment.has_value());
  EXPECT_EQ(segment->second, 30u);
}

TEST(SackScoreboard, OverflowForgetsTheLeftmostRanges) {
  SackScoreboard board;
  board.reset(0);
  const std::uint32_t ranges = SackScoreboard::kCapacity + 3;
  for (std::uint32_t i = 0; i < ranges; ++i) {
    const SackBlock block{100 * (i + 1), 100 * (i + 1) + 10};
    board.on_ack(0, std::span(&block, 1));
  }
  ASSERT_EQ(board.range_count(), SackScoreboard::kCapacity);
  EXPECT_EQ(board.range(0).left, 100u * 4);  // the three lowest went
  EXPECT_FALSE(board.is_sacked(100));
  EXPECT_TRUE(board.is_sacked(100 * ranges));
  EXPECT_EQ(board.highest_sacked(), 100 * ranges + 10);
  EXPECT_EQ(board.sacked_bytes(), 10u * SackScoreboard::kCapacity);
  for (std::size_t i = 1; i < board.range_count(); ++i) {
    EXPECT_LT(board.range(i - 1).right, board.range(i).left) << "ordered and disjoint";
  }
  // A block that merges still fits, and one bridging everything collapses the ranges.
  ack(board, 0, {{400, 100 * ranges + 10}});
  ASSERT_EQ(board.range_count(), 1u);
  ack(board, 0, {{50, 60}});
  EXPECT_EQ(board.range_count(), 2u);
  EXPECT_TRUE(board.is_sacked(55));
}

TEST(OutOfOrderRanges, MergesAndAdvances) {
  OutOfOrderRanges ranges;
  EXPECT_TRUE(ranges.add(200, 300));
  EXPECT_TRUE(ranges.add(400, 500));
  EXPECT_TRUE(ranges.add(300, 400));  // bridges both: one range [200, 500)
  EXPECT_EQ(ranges.count(), 1u);
  EXPECT_FALSE(ranges.add(10, 10));
  EXPECT_EQ(ranges.advance(100), 100u);  // still a hole at [100, 200)
  EXPECT_EQ(ranges.advance(200), 500u);
  EXPECT_TRUE(ranges.empty());
}

TEST(OutOfOrderRanges, AdvanceChainsAndDropsConsumedRanges) {
  OutOfOrderRanges ranges;
  EXPECT_TRUE(ranges.add(300, 400));
  EXPECT_TRUE(ranges.add(150, 250));
  EXPECT_TRUE(ranges.add(600, 700));
  // Data up to 300 arrived in order: [150,250) is consumed, [300,400) extends rcv_nxt.
  EXPECT_EQ(ranges.advance(300), 400u);
  EXPECT_EQ(ranges.count(), 1u);
}

TEST(OutOfOrderRanges, MostRecentBlockFirst) {
  OutOfOrderRanges ranges;
  ranges.add(1000, 1100);
  ranges.add(3000, 3100);
  ranges.add(2000, 2100);
  ranges.add(1100, 1200);  // latest segment extends the first range
  std::array<SackBlock, 3> out{};
  ASSERT_EQ(ranges.sack_blocks(out, 1100), 3u);
  EXPECT_EQ(out[0], SackBlock(1000, 1200));
  EXPECT_EQ(out[1], SackBlock(2000, 2100));
  EXPECT_EQ(out[2], SackBlock(3000, 3100));
  std::array<SackBlock, 2> small{};
  ASSERT_EQ(ranges.sack_blocks(small, 3000), 2u);  // named block first even if older
  EXPECT_EQ(small[0], SackBlock(3000, 3100));
  EXPECT_EQ(small[1], SackBlock(1000, 1200));
}

TEST(OutOfOrderRanges, FullRefusesANewRangeButStillMerges) {
  OutOfOrderRanges ranges;
  for (std::uint32_t i = 0; i < OutOfOrderRanges::kCapacity; ++i) {
    EXPECT_TRUE(ranges.add(1000 * (i + 1), 1000 * (i + 1) + 10));
  }
  EXPECT_FALSE(ranges.add(50, 60));
  EXPECT_EQ(ranges.count(), OutOfOrderRanges::kCapacity);
  EXPECT_TRUE(ranges.add(1010, 1020));
  EXPECT_EQ(ranges.count(), OutOfOrderRanges::kCapacity);
  std::array<SackBlock, 1> out{};
  ASSERT_EQ(ranges.sack_blocks(out, 1010), 1u);
  EXPECT_EQ(out[0], SackBlock(1000, 1020));
}

}  // namespace
}  // namespace flotilla::tcp
