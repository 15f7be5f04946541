#include <vector>

#include <gtest/gtest.h>

#include "dataplane/timer_wheel.hpp"

namespace flotilla {
namespace {

TEST(TimerWheel, FiresAtItsTimeAndNotBefore) {
  TimerWheel wheel(1000);
  std::vector<std::uint64_t> fired_at;
  Timer timer([&](Timer&) { fired_at.push_back(wheel.now_ms()); });
  wheel.arm(timer, 1005);
  EXPECT_EQ(wheel.advance(1004), 0u);
  EXPECT_TRUE(timer.armed());
  EXPECT_EQ(wheel.advance(1005), 1u);
  EXPECT_FALSE(timer.armed());
  ASSERT_EQ(fired_at.size(), 1u);
  EXPECT_EQ(fired_at[0], 1005u);
}

TEST(TimerWheel, FiresInDeadlineOrderAcrossSlots) {
  TimerWheel wheel(0);
  std::vector<int> order;
  Timer late([&](Timer&) { order.push_back(3); });
  Timer early([&](Timer&) { order.push_back(1); });
  Timer middle([&](Timer&) { order.push_back(2); });
  wheel.arm(late, 30);
  wheel.arm(early, 10);
  wheel.arm(middle, 20);
  EXPECT_EQ(wheel.advance(100), 3u);
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
}

TEST(TimerWheel, TimersBeyondOneTurnWaitForTheirTurn) {
  TimerWheel wheel(0);
  int fired = 0;
  Timer far([&](Timer&) { ++fired; });
  wheel.arm(far, 5000);  // nearly five turns of a 1024-slot wheel
  for (std::uint64_t now = 1; now < 5000; now += 7) ASSERT_EQ(wheel.advance(now), 0u) << now;
  EXPECT_EQ(wheel.advance(5000), 1u);
  EXPECT_EQ(fired, 1);
}

TEST(TimerWheel, LargeJumpFiresEverythingDue) {
  TimerWheel wheel(0);
  int fired = 0;
  std::vector<std::unique_ptr<Timer>> timers;
  for (int i = 1; i <= 50; ++i) {
    timers.push_back(std::make_unique<Timer>([&](Timer&) { ++fired; }));
    wheel.arm(*timers.back(), static_cast<std::uint64_t>(i) * 97);
  }
  EXPECT_EQ(wheel.advance(100'000), 50u);
  EXPECT_EQ(fired, 50);
  EXPECT_EQ(wheel.armed_count(), 0u);
}

TEST(TimerWheel, CancelAndRearm) {
  TimerWheel wheel(0);
  int fired = 0;
  Timer timer([&](Timer&) { ++fired; });
  wheel.arm(timer, 10);
  wheel.cancel(timer);
  EXPECT_EQ(wheel.advance(20), 0u);
  wheel.arm(timer, 30);
  wheel.arm(timer, 40);  // re-arming moves it
  EXPECT_EQ(wheel.advance(35), 0u);
  EXPECT_EQ(wheel.advance(40), 1u);
  EXPECT_EQ(fired, 1);
}

TEST(TimerWheel, PastDeadlineFiresOnNextAdvance) {
  TimerWheel wheel(100);
  int fired = 0;
  Timer timer([&](Timer&) { ++fired; });
  wheel.arm(timer, 50);
  EXPECT_EQ(wheel.advance(101), 1u);
}

TEST(TimerWheel, CallbackMayRearmItself) {
  TimerWheel wheel(0);
  int fired = 0;
  Timer periodic([&](Timer& self) {
    ++fired;
    wheel.arm(self, wheel.now_ms() + 10);
  });
  wheel.arm(periodic, 10);
  wheel.advance(100);
  EXPECT_EQ(fired, 10);
  EXPECT_TRUE(periodic.armed());
}

TEST(TimerWheel, DestroyedTimerLeavesTheWheel) {
  TimerWheel wheel(0);
  {
    Timer temporary([](Timer&) { FAIL() << "a destroyed timer fired"; });
    wheel.arm(temporary, 5);
  }
  EXPECT_EQ(wheel.armed_count(), 0u);
  EXPECT_EQ(wheel.advance(10), 0u);
}

TEST(TimerWheel, NextExpiryHintIsNeverLate) {
  TimerWheel wheel(0);
  EXPECT_FALSE(wheel.next_expiry_hint());
  Timer a([](Timer&) {}), b([](Timer&) {});
  wheel.arm(a, 3000);
  wheel.arm(b, 40);
  auto hint = wheel.next_expiry_hint();
  ASSERT_TRUE(hint);
  EXPECT_LE(*hint, 40u);
  wheel.cancel(b);
  hint = wheel.next_expiry_hint();
  ASSERT_TRUE(hint);
  EXPECT_LE(*hint, 3000u);
}

}  // namespace
}  // namespace flotilla
