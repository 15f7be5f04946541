#include "components/formats/fs_messages.hpp"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace flotilla::fs {
namespace {

FsMessage named(FsOp op, std::string_view name) {
  FsMessage message;
  message.op = op;
  message.client = 7;
  message.request = 42;
  message.inode = kRootInode;
  EXPECT_TRUE(message.set_name(name));
  return message;
}

std::optional<FsMessage> round_trip(const FsMessage& message) {
  std::array<Message, kMaxFsChunks> chunks;
  const std::size_t count = encode_chunks(message, 3, chunks);
  FsAssembler assembler;
  for (std::size_t i = 0; i + 1 < count; ++i) {
    auto partial = assembler.push(chunks[i]);
    EXPECT_TRUE(partial.ok());
    EXPECT_FALSE(partial->has_value());
  }
  auto last = assembler.push(chunks[count - 1]);
  if (!last.ok() || !last->has_value()) return std::nullopt;
  return **last;
}

TEST(FsMessages, NamelessRequestIsOneChunk) {
  FsMessage read;
  read.op = FsOp::read;
  read.client = 1;
  read.arg0 = 9;
  read.arg1 = 4096;
  std::array<Message, kMaxFsChunks> chunks;
  EXPECT_EQ(encode_chunks(read, 1, chunks), 1u);
  auto back = round_trip(read);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->op, FsOp::read);
  EXPECT_EQ(back->arg0, 9u);
  EXPECT_EQ(back->arg1, 4096u);
}

TEST(FsMessages, LongestNameRoundTrips) {
  const std::string name(kMaxNameBytes, 'n');
  auto back = round_trip(named(FsOp::resolve, name));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->name(), name);
  EXPECT_EQ(back->request, 42u);
}

TEST(FsMessages, SymlinkCarriesNameAndTarget) {
  FsMessage message = named(FsOp::symlink, "link");
  const std::string target = "../some/where";
  ASSERT_TRUE(message.set_extra(std::span(target.data(), target.size())));
  auto back = round_trip(message);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->name(), "link");
  EXPECT_EQ(std::string(back->extra().data(), back->extra().size()), target);
}

TEST(FsMessages, StatRecordRoundTrips) {
  FsMessage reply = reply_to(named(FsOp::fstat, "x"), 0);
  StatRecord stat{kRootInode, 12345, 24, 1, 2, 3, 0100644, 1, 1000, 1000};
  put_stat(reply, stat);
  auto back = round_trip(reply);
  ASSERT_TRUE(back);
  auto decoded = stat_of(*back);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->size, 12345u);
  EXPECT_EQ(decoded->mode, 0100644u);
  EXPECT_EQ(decoded->gid, 1000u);
  FsMessage empty = reply_to(reply, 0);
  EXPECT_FALSE(stat_of(empty).ok());
}

TEST(FsMessages, DirentRepliesPackEntriesUntilFull) {
  FsMessage reply = reply_to(named(FsOp::dirent, "x"), 0);
  int packed = 0;
  while (put_dirent(reply, "entry-" + std::to_string(packed), make_inode(1, 10 + packed),
                    type_word(FileType::regular, false))) {
    ++packed;
  }
  EXPECT_GT(packed, 20);
  auto back = round_trip(reply);
  ASSERT_TRUE(back);
  int seen = 0;
  EXPECT_TRUE(for_each_dirent(*back, [&](std::string_view name, InodeNumber inode, std::uint64_t type, const StatRecord* stat) {
    EXPECT_EQ(stat, nullptr);
    EXPECT_EQ(name, "entry-" + std::to_string(seen));
    EXPECT_EQ(inode, make_inode(1, 10 + seen));
    EXPECT_EQ(type_of_word(type), FileType::regular);
    ++seen;
  }));
  EXPECT_EQ(seen, packed);
  // A record cut short, or naming "..", is malformed.
  FsMessage cut = *back;
  cut.payload_length = static_cast<std::uint16_t>(cut.payload_length - 1);
  EXPECT_FALSE(for_each_dirent(cut, [](auto, auto, auto, auto) {}));
  FsMessage dots = reply_to(named(FsOp::dirent, "x"), 0);
  ASSERT_TRUE(put_dirent(dots, "..", make_inode(0, 5), type_word(FileType::directory, false)));
  EXPECT_FALSE(for_each_dirent(dots, [](auto, auto, auto, auto) {}));
}

// A subdirectory's record may carry its attributes (kWithStat); a record whose attributes are cut
// short is malformed.
TEST(FsMessages, DirentRecordsCarryAttributesWhenGiven) {
  FsMessage reply = reply_to(named(FsOp::dirent, "x"), 0);
  const StatRecord stat{make_inode(1, 7), 4096, 8, 11, 22, 33, 040750, 2, 1000, 100};
  ASSERT_TRUE(put_dirent(reply, "sub", make_inode(1, 7), type_word(FileType::directory, true), &stat));
  ASSERT_TRUE(put_dirent(reply, "file", make_inode(1, 8), type_word(FileType::regular, false)));
  EXPECT_EQ(reply.payload_length, 2 * kDirentHeaderBytes + 3 + 4 + kDirentStatBytes);
  auto back = round_trip(reply);
  ASSERT_TRUE(back);
  std::vector<std::string> names;
  EXPECT_TRUE(for_each_dirent(*back, [&](std::string_view name, InodeNumber inode, std::uint64_t type,
                                         const StatRecord* attributes) {
    names.emplace_back(name);
    EXPECT_EQ(type & kWithStat, 0u);  // the marker stays in the record
    if (name == "sub") {
      EXPECT_TRUE(distributed_of_word(type));
      ASSERT_NE(attributes, nullptr);
      EXPECT_EQ(attributes->inode, inode);
      EXPECT_EQ(attributes->mode, 040750u);
      EXPECT_EQ(attributes->mtime_ns, 22u);
      EXPECT_EQ(attributes->gid, 100u);
    } else {
      EXPECT_EQ(attributes, nullptr);
    }
  }));
  EXPECT_EQ(names, (std::vector<std::string>{"sub", "file"}));
  FsMessage cut = reply_to(named(FsOp::dirent, "x"), 0);
  ASSERT_TRUE(put_dirent(cut, "sub", make_inode(1, 7), type_word(FileType::directory, false), &stat));
  cut.payload_length = static_cast<std::uint16_t>(cut.payload_length - 1);
  EXPECT_FALSE(for_each_dirent(cut, [](auto, auto, auto, auto) {}));
}

TEST(FsMessages, BadNamesAreRefused) {
  for (std::string_view bad : {std::string_view(""), std::string_view("."), std::string_view(".."), std::string_view("a/b"), std::string_view("a\0b", 3)}) {
    FsMessage message;
    message.op = FsOp::resolve;
    message.client = 1;
    message.set_name(bad);
    EXPECT_FALSE(well_formed(message)) << bad;
  }
  FsMessage too_long;
  EXPECT_FALSE(too_long.set_name(std::string(kMaxNameBytes + 1, 'x')));
}

TEST(FsMessages, StructuralChecks) {
  FsMessage message = named(FsOp::resolve, "ok");
  EXPECT_TRUE(well_formed(message));
  FsMessage no_client = message;
  no_client.client = 0;
  EXPECT_FALSE(well_formed(no_client));
  FsMessage bad_op = message;
  bad_op.op = static_cast<FsOp>(kLastFsOp + 1);
  EXPECT_FALSE(well_formed(bad_op));
  FsMessage bad_lengths = message;
  bad_lengths.name_length = 10;
  bad_lengths.payload_length = 5;
  EXPECT_FALSE(well_formed(bad_lengths));
  FsMessage status_on_request = message;
  status_on_request.status = -2;
  EXPECT_FALSE(well_formed(status_on_request));
  FsMessage add = named(FsOp::add_map, "a");
  EXPECT_FALSE(well_formed(add));  // no target inode, no type
  add.arg0 = kRootInode;
  add.arg1 = type_word(FileType::regular, false);
  EXPECT_TRUE(well_formed(add));
  FsMessage close;
  close.op = FsOp::close;
  close.client = 1;
  close.set_name("x");
  EXPECT_FALSE(well_formed(close));  // a nameless op carrying a name
}

TEST(FsMessages, RmdirLockCarriesItsEntryOnlyWithBothFlagsAndAParent) {
  FsMessage lock;
  lock.op = FsOp::rmdir_lock;
  lock.client = 1;
  lock.inode = make_inode(0, 7);
  lock.arg0 = kRemoveAtHome;
  EXPECT_TRUE(well_formed(lock));
  FsMessage with_entry = lock;
  with_entry.arg0 = kRemoveAtHome | kRemoveEntry;
  with_entry.arg1 = kRootInode;
  EXPECT_FALSE(well_formed(with_entry));  // no name
  with_entry.set_name("d");
  EXPECT_TRUE(well_formed(with_entry));
  const auto round = round_trip(with_entry);
  ASSERT_TRUE(round.has_value());
  EXPECT_EQ(round->name(), "d");
  EXPECT_EQ(round->arg1, kRootInode);
  FsMessage no_parent = with_entry;
  no_parent.arg1 = 0;
  EXPECT_FALSE(well_formed(no_parent));
  FsMessage entry_alone = with_entry;
  entry_alone.arg0 = kRemoveEntry;  // the entry without the whole rmdir at the home
  EXPECT_FALSE(well_formed(entry_alone));
  FsMessage named_lock = lock;
  named_lock.set_name("d");  // a name without kRemoveEntry
  EXPECT_FALSE(well_formed(named_lock));
}

TEST(FsMessages, AddMapCarriesAnOldNameOnlyWhenItMovesOne) {
  FsMessage add = named(FsOp::add_map, "new");
  add.arg0 = make_inode(0, 9);
  add.arg1 = type_word(FileType::regular, false);
  EXPECT_TRUE(well_formed(add));
  const std::string_view old_name = "old";
  FsMessage stray = add;
  ASSERT_TRUE(stray.set_extra(std::span(old_name.data(), old_name.size())));
  EXPECT_FALSE(well_formed(stray));  // an old name without kMoveEntry
  FsMessage move = stray;
  move.flags |= kMoveEntry;
  EXPECT_FALSE(well_formed(move));  // no old directory
  move.arg2 = kRootInode;
  EXPECT_TRUE(well_formed(move));
  const auto round = round_trip(move);
  ASSERT_TRUE(round.has_value());
  EXPECT_EQ(std::string_view(round->extra().data(), round->extra().size()), old_name);
  FsMessage no_old = add;
  no_old.flags |= kMoveEntry;
  no_old.arg2 = kRootInode;
  EXPECT_FALSE(well_formed(no_old));  // kMoveEntry without an old name
  FsMessage bad_old = no_old;
  ASSERT_TRUE(bad_old.set_extra(std::span("a/b", 3)));
  EXPECT_FALSE(well_formed(bad_old));
}

TEST(FsMessages, DecodeRefusesShortAndOversizedInput) {
  std::array<std::byte, kHeaderBytes + kMaxPayload> bytes{};
  const std::size_t size = encode(named(FsOp::resolve, "abc"), bytes);
  EXPECT_TRUE(decode(std::span(bytes.data(), size)).ok());
  EXPECT_FALSE(decode(std::span(bytes.data(), size - 1)).ok());
  EXPECT_FALSE(decode(std::span(bytes.data(), kHeaderBytes - 1)).ok());
  std::uint16_t huge = kMaxPayload + 1;
  std::memcpy(bytes.data() + 50, &huge, sizeof(huge));
  EXPECT_FALSE(decode(bytes).ok());
}

TEST(FsMessages, AssemblerRejectsOutOfPlaceChunks) {
  std::array<Message, kMaxFsChunks> chunks;
  const std::size_t count = encode_chunks(named(FsOp::resolve, std::string(200, 'q')), 5, chunks);
  ASSERT_GT(count, 2u);
  FsAssembler assembler;
  EXPECT_TRUE(assembler.push(chunks[0]).ok());
  EXPECT_FALSE(assembler.push(chunks[2]).ok());  // skipped one
  EXPECT_EQ(assembler.rejected(), 1u);
  Message wrong_kind = chunks[0];
  wrong_kind.kind = MessageKind::data;
  EXPECT_FALSE(assembler.push(wrong_kind).ok());
  // A clean message still gets through afterwards.
  for (std::size_t i = 0; i < count; ++i) {
    auto result = assembler.push(chunks[i]);
    ASSERT_TRUE(result.ok());
    EXPECT_EQ(result->has_value(), i + 1 == count);
  }
}

TEST(FsMessages, RandomBytesNeverCrashAndMostlyFail) {
  std::mt19937_64 random(17);
  FsAssembler assembler;
  std::size_t accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    Message message;
    message.kind = random() % 4 == 0 ? MessageKind::data : kFsChunkKind;
    for (auto& byte : message.body) byte = static_cast<std::byte>(random());
    if (random() % 2) message.body[2] = std::byte{0};  // index 0: starts a message
    auto result = assembler.push(message);
    if (result.ok() && result->has_value()) {
      ++accepted;
      EXPECT_TRUE(well_formed(**result));
    }
  }
  EXPECT_LT(accepted, 200u);
}

}  // namespace
}  // namespace flotilla::fs
