// Sequence arithmetic across the 2^32 wrap.
#include "components/tcp/algorithms/seq.hpp"

#include <gtest/gtest.h>

namespace flotilla::tcp {
namespace {

TEST(Seq, OrdersAcrossTheWrap) {
  const std::uint32_t before_wrap = 0xffff'fff0u;
  const std::uint32_t after_wrap = 0x10u;
  EXPECT_TRUE(seq_lt(before_wrap, after_wrap));
  EXPECT_TRUE(seq_le(before_wrap, after_wrap));
  EXPECT_TRUE(seq_gt(after_wrap, before_wrap));
  EXPECT_TRUE(seq_ge(after_wrap, before_wrap));
  EXPECT_FALSE(seq_lt(after_wrap, before_wrap));
  EXPECT_EQ(seq_diff(after_wrap, before_wrap), 0x20);
  EXPECT_EQ(seq_diff(before_wrap, after_wrap), -0x20);
  EXPECT_EQ(seq_max(before_wrap, after_wrap), after_wrap);
  EXPECT_EQ(seq_min(before_wrap, after_wrap), before_wrap);
}

TEST(Seq, EqualIsLeAndGeButNotLtOrGt) {
  EXPECT_TRUE(seq_le(5, 5));
  EXPECT_TRUE(seq_ge(5, 5));
  EXPECT_FALSE(seq_lt(5, 5));
  EXPECT_FALSE(seq_gt(5, 5));
  EXPECT_EQ(seq_diff(5, 5), 0);
}

TEST(Seq, HalfTheSpaceApartIsTheLimit) {
  // Within 2^31 - 1 the order holds; past 2^31 it flips, which is why windows stay below 2^30.
  EXPECT_TRUE(seq_lt(0, 0x7fff'ffffu));
  EXPECT_TRUE(seq_gt(0, 0x8000'0001u));
}

}  // namespace
}  // namespace flotilla::tcp
