// MessageOutbox: bounded, oldest first, drained in runs across the ring's wrap; and the named
// counters' X-macro, which declares and registers a list of counters from one list.
#include "dataplane/message_outbox.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "dataplane/counters.hpp"

namespace flotilla {
namespace {

Message numbered(std::uint64_t number) { return Message::make(MessageKind::user, number); }

std::uint64_t number_of(const Message& message) { return message.read<std::uint64_t>(); }

// Takes up to `room` messages per call and records them.
struct Receiver {
  explicit Receiver(std::size_t room) : room(room) {}

  std::size_t room;
  std::vector<std::uint64_t> got;
  std::size_t calls = 0;

  std::size_t operator()(std::span<const Message> run) {
    ++calls;
    const std::size_t taken = std::min(room, run.size());
    for (std::size_t i = 0; i < taken; ++i) got.push_back(number_of(run[i]));
    room -= taken;
    return taken;
  }
};

TEST(MessageOutbox, RefusesWhatExceedsItsCapacity) {
  MessageOutbox outbox(3);
  EXPECT_TRUE(outbox.empty());
  for (std::uint64_t i = 1; i <= 3; ++i) EXPECT_TRUE(outbox.push(numbered(i)));
  EXPECT_TRUE(outbox.full());
  EXPECT_FALSE(outbox.push(numbered(4)));
  EXPECT_EQ(outbox.size(), 3u);

  Receiver receiver(10);
  EXPECT_EQ(outbox.drain(receiver), 3u);
  EXPECT_EQ(receiver.got, (std::vector<std::uint64_t>{1, 2, 3}));  // the refused one is not there
  EXPECT_TRUE(outbox.empty());
}

TEST(MessageOutbox, AnOutboxWithoutCapacityKeepsNothing) {
  MessageOutbox outbox;
  EXPECT_TRUE(outbox.full());
  EXPECT_FALSE(outbox.push(numbered(1)));
  Receiver receiver(1);
  EXPECT_EQ(outbox.drain(receiver), 0u);
  EXPECT_EQ(receiver.calls, 0u);
}

TEST(MessageOutbox, DrainStopsWhereTheReceiverRanOutOfRoomAndResumesInOrder) {
  MessageOutbox outbox(4);
  for (std::uint64_t i = 1; i <= 4; ++i) ASSERT_TRUE(outbox.push(numbered(i)));
  Receiver receiver(1);
  EXPECT_EQ(outbox.drain(receiver), 1u);
  EXPECT_EQ(outbox.size(), 3u);
  // The freed place is at the front of the storage: 5 and 6 wrap around behind 2, 3, 4.
  EXPECT_TRUE(outbox.push(numbered(5)));
  EXPECT_FALSE(outbox.push(numbered(6)));
  receiver.room = 0;
  EXPECT_EQ(outbox.drain(receiver), 0u);
  receiver.room = 10;
  EXPECT_EQ(outbox.drain(receiver), 4u);
  EXPECT_EQ(receiver.got, (std::vector<std::uint64_t>{1, 2, 3, 4, 5}));
  EXPECT_TRUE(outbox.empty());
}

TEST(MessageOutbox, ARunIsContiguousAcrossTheWrap) {
  MessageOutbox outbox(4);
  for (std::uint64_t i = 1; i <= 3; ++i) ASSERT_TRUE(outbox.push(numbered(i)));
  Receiver first(3);
  ASSERT_EQ(outbox.drain(first), 3u);
  for (std::uint64_t i = 4; i <= 7; ++i) ASSERT_TRUE(outbox.push(numbered(i)));  // 4 at the end, 5..7 wrap
  Receiver receiver(10);
  EXPECT_EQ(outbox.drain(receiver), 4u);
  EXPECT_EQ(receiver.calls, 2u);  // one run up to the end of the storage, one from its start
  EXPECT_EQ(receiver.got, (std::vector<std::uint64_t>{4, 5, 6, 7}));
}

TEST(MessageOutbox, ClearForgetsEverything) {
  MessageOutbox outbox(2);
  ASSERT_TRUE(outbox.push(numbered(1)));
  outbox.clear();
  EXPECT_TRUE(outbox.empty());
  Receiver receiver(5);
  EXPECT_EQ(outbox.drain(receiver), 0u);
}

#define TEST_COUNTERS(X) \
  X(first_thing)         \
  X(second_thing)

struct TestCounters {
  FLOTILLA_NAMED_COUNTERS(TEST_COUNTERS)
};

TEST(NamedCounters, OneListDeclaresAndRegistersEachCounterUnderItsName) {
  auto table = std::make_unique<NamedCounterTable>();
  TestCounters counters;
  EXPECT_EQ(counters.first_thing, nullptr);
  counters.register_in(*table);
  counters.second_thing->add(2);
  counters.first_thing->add();
  ASSERT_EQ(table->published(), 2u);
  EXPECT_STREQ(table->entries[0].name, "first_thing");
  EXPECT_STREQ(table->entries[1].name, "second_thing");
  EXPECT_EQ(table->counter("first_thing").read(), 1u);
  EXPECT_EQ(table->counter("second_thing").read(), 2u);
}

}  // namespace
}  // namespace flotilla
