#include "components/fs/state_log.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace flotilla::fs {
namespace {

std::vector<std::byte> bytes_of(std::string_view text) {
  std::vector<std::byte> out(text.size());
  std::memcpy(out.data(), text.data(), text.size());
  return out;
}

std::vector<std::string> replay_all(StateLog& log) {
  std::vector<std::string> out;
  auto count = log.replay([&](std::span<const std::byte> body) -> Status {
    out.emplace_back(reinterpret_cast<const char*>(body.data()), body.size());
    return {};
  });
  EXPECT_TRUE(count.ok());
  return out;
}

struct alignas(64) Region {
  std::array<std::byte, 64 * 1024> bytes{};
};

TEST(StateLog, FreshRegionFormatsAndReplaysNothing) {
  Region region;
  auto log = StateLog::attach(region.bytes, 5);
  ASSERT_TRUE(log.ok());
  EXPECT_TRUE(log->fresh());
  EXPECT_TRUE(log->checkpoint().empty());
  EXPECT_TRUE(replay_all(*log).empty());
}

TEST(StateLog, CheckpointAndRecordsSurviveReattach) {
  Region region;
  {
    auto log = StateLog::attach(region.bytes, 5);
    ASSERT_TRUE(log.ok());
    ASSERT_TRUE(log->write_checkpoint(bytes_of("image-1")).ok());
    ASSERT_TRUE(log->append(bytes_of("one")).ok());
    ASSERT_TRUE(log->append(bytes_of("two")).ok());
  }
  auto log = StateLog::attach(region.bytes, 5);
  ASSERT_TRUE(log.ok());
  EXPECT_FALSE(log->fresh());
  auto image = log->checkpoint();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(image.data()), image.size()), "image-1");
  EXPECT_EQ(replay_all(*log), (std::vector<std::string>{"one", "two"}));
  // Appending after replay continues the sequence.
  ASSERT_TRUE(log->append(bytes_of("three")).ok());
  auto again = StateLog::attach(region.bytes, 5);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(replay_all(*again), (std::vector<std::string>{"one", "two", "three"}));
}

TEST(StateLog, NewCheckpointHidesOldRecords) {
  Region region;
  auto log = StateLog::attach(region.bytes, 1);
  ASSERT_TRUE(log.ok());
  ASSERT_TRUE(log->write_checkpoint(bytes_of("a")).ok());
  ASSERT_TRUE(log->append(bytes_of("old-1")).ok());
  ASSERT_TRUE(log->append(bytes_of("old-2")).ok());
  ASSERT_TRUE(log->write_checkpoint(bytes_of("b")).ok());
  ASSERT_TRUE(log->append(bytes_of("new")).ok());
  auto back = StateLog::attach(region.bytes, 1);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(replay_all(*back), (std::vector<std::string>{"new"}));
}

TEST(StateLog, TornRecordEndsTheReplay) {
  Region region;
  std::size_t second_offset = 0;
  {
    auto log = StateLog::attach(region.bytes, 1);
    ASSERT_TRUE(log.ok());
    ASSERT_TRUE(log->write_checkpoint(bytes_of("a")).ok());
    ASSERT_TRUE(log->append(bytes_of("first")).ok());
    second_offset = log->log_used();
    ASSERT_TRUE(log->append(bytes_of("second")).ok());
  }
  // Garble a byte of the second record's body, as a crash in the middle of the copy would.
  const std::size_t log_start = StateLog::kRegionHeaderBytes +
      2 * (StateLog::attach(region.bytes, 1)->slot_capacity() + StateLog::kSlotHeaderBytes);
  region.bytes[log_start + second_offset + StateLog::kRecordHeaderBytes + 1] ^= std::byte{0xff};
  auto log = StateLog::attach(region.bytes, 1);
  ASSERT_TRUE(log.ok());
  EXPECT_EQ(replay_all(*log), (std::vector<std::string>{"first"}));
}

TEST(StateLog, TornCheckpointFallsBackToThePreviousOne) {
  Region region;
  {
    auto log = StateLog::attach(region.bytes, 1);
    ASSERT_TRUE(log.ok());
    ASSERT_TRUE(log->write_checkpoint(bytes_of("first")).ok());
    ASSERT_TRUE(log->append(bytes_of("after-first")).ok());
  }
  // A second checkpoint whose image is torn (slot B's image byte flipped after writing).
  {
    auto log = StateLog::attach(region.bytes, 1);
    ASSERT_TRUE(log.ok());
    (void)replay_all(*log);
    ASSERT_TRUE(log->write_checkpoint(bytes_of("second")).ok());
  }
  const std::size_t slot_bytes = StateLog::attach(region.bytes, 1)->slot_capacity() +
                                 StateLog::kSlotHeaderBytes;
  region.bytes[StateLog::kRegionHeaderBytes + slot_bytes + StateLog::kSlotHeaderBytes] ^=
      std::byte{1};
  auto log = StateLog::attach(region.bytes, 1);
  ASSERT_TRUE(log.ok());
  auto image = log->checkpoint();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(image.data()), image.size()), "first");
  EXPECT_EQ(replay_all(*log), (std::vector<std::string>{"after-first"}));
}

TEST(StateLog, FullLogAsksForACheckpoint) {
  Region region;
  auto log = StateLog::attach(region.bytes, 1);
  ASSERT_TRUE(log.ok());
  const std::vector<std::byte> record(1000);
  Status appended;
  int count = 0;
  while ((appended = log->append(record)).ok()) ++count;
  EXPECT_EQ(appended.error().code, Errc::exhausted);
  EXPECT_GT(count, 5);
  ASSERT_TRUE(log->write_checkpoint(bytes_of("x")).ok());
  EXPECT_TRUE(log->append(record).ok());
  const std::vector<std::byte> huge(log->slot_capacity() + 1);
  EXPECT_EQ(log->write_checkpoint(huge).error().code, Errc::exhausted);
}

TEST(StateLog, HostileRegionsNeverCrash) {
  std::mt19937_64 random(3);
  for (int round = 0; round < 200; ++round) {
    Region region;
    {
      auto log = StateLog::attach(region.bytes, 9);
      ASSERT_TRUE(log.ok());
      ASSERT_TRUE(log->write_checkpoint(bytes_of("image")).ok());
      for (int i = 0; i < 20; ++i) ASSERT_TRUE(log->append(bytes_of("record")).ok());
    }
    for (int flips = 0; flips < 50; ++flips) {
      region.bytes[random() % 4096] = static_cast<std::byte>(random());
    }
    auto log = StateLog::attach(region.bytes, 9);
    ASSERT_TRUE(log.ok());
    (void)replay_all(*log);  // whatever it finds, it stays inside the region
  }
  Region region;
  EXPECT_FALSE(StateLog::attach(std::span(region.bytes).subspan(1, 20000), 1).ok());
  EXPECT_FALSE(StateLog::attach(std::span(region.bytes).first(1024), 1).ok());
}

}  // namespace
}  // namespace flotilla::fs
