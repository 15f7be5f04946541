#include <gtest/gtest.h>

#include "components/name/name_client.hpp"
#include "components/name/name_message.hpp"
#include "components/name/tests/change_builders.hpp"

namespace flotilla::name {
namespace {


TEST(NameMessage, ChunksRoundTripAndTrimTrailingZeros) {
  const NameMessage prepare = testing::long_prepare();
  ASSERT_TRUE(well_formed(prepare));
  std::array<Message, kMaxChunks> chunks;
  const std::size_t count = encode_chunks(prepare, 41, chunks);
  ASSERT_EQ(count, kMaxChunks);
  ChunkAssembler assembler;
  std::optional<NameMessage> got;
  for (std::size_t i = 0; i < count; ++i) {
    EXPECT_FALSE(got.has_value());
    got = assembler.push(chunks[i]);
  }
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(name_of(*got), name_of(prepare));
  EXPECT_EQ(member_of(*got), member_of(prepare));
  EXPECT_EQ(got->txn, prepare.txn);
  EXPECT_EQ(got->weight, 3u);

  NameMessage ack;
  ack.kind = NameMsgKind::prepare_ack;
  ack.from = 3;
  ack.txn = TxnId{77, 5, 2, 1};
  EXPECT_LT(encode_chunks(ack, 42, chunks), kMaxChunks);  // no names: fewer chunks
}

TEST(NameMessage, AssemblerRejectsChunksOutOfPlace) {
  std::array<Message, kMaxChunks> chunks;
  const std::size_t count = encode_chunks(testing::long_prepare(), 1, chunks);
  ChunkAssembler assembler;
  EXPECT_FALSE(assembler.push(chunks[1]).has_value());  // no start
  EXPECT_EQ(assembler.rejected(), 1u);
  EXPECT_FALSE(assembler.push(chunks[0]).has_value());
  Message wrong_kind = chunks[1];
  wrong_kind.kind = MessageKind::data;
  EXPECT_FALSE(assembler.push(wrong_kind).has_value());
  EXPECT_EQ(assembler.rejected(), 2u);
  Message bad_count = chunks[0];
  bad_count.body[3] = std::byte{200};
  EXPECT_FALSE(assembler.push(bad_count).has_value());
  EXPECT_EQ(assembler.rejected(), 3u);
  // A clean message afterwards still assembles.
  std::optional<NameMessage> got;
  for (std::size_t i = 0; i < count; ++i) got = assembler.push(chunks[i]);
  EXPECT_TRUE(got.has_value());
}

TEST(NameMessage, WellFormedRejectsBadFields) {
  const NameMessage good = testing::long_prepare();
  auto broken = [&](auto edit) {
    NameMessage message = good;
    edit(message);
    return !well_formed(message);
  };
  EXPECT_TRUE(broken([](NameMessage& m) { m.kind = static_cast<NameMsgKind>(99); }));
  EXPECT_TRUE(broken([](NameMessage& m) { m.kind = NameMsgKind::none; }));
  EXPECT_TRUE(broken([](NameMessage& m) { m.op = static_cast<ChangeOp>(42); }));
  EXPECT_TRUE(broken([](NameMessage& m) { m.op = ChangeOp::none; }));
  EXPECT_TRUE(broken([](NameMessage& m) { m.status = static_cast<NameErrc>(200); }));
  EXPECT_TRUE(broken([](NameMessage& m) { m.name[1] = '*'; }));
  EXPECT_TRUE(broken([](NameMessage& m) { m.member.fill('a'); }));
  EXPECT_TRUE(broken([](NameMessage& m) { m.weight = 0; }));
  EXPECT_TRUE(broken([](NameMessage& m) { m.weight = kMaxWeight + 1; }));
  EXPECT_TRUE(broken([](NameMessage& m) { m.txn.initiator = 3; }));  // not the sender
  EXPECT_TRUE(broken([](NameMessage& m) { m.from = kClientSource; }));
  const NameMessage lookup = NameClient::lookup_request(4, 1, "/net");
  EXPECT_TRUE(well_formed(lookup));
  NameMessage spoofed = lookup;
  spoofed.from = 1;  // a member id on a client's request
  EXPECT_FALSE(well_formed(spoofed));
}

}  // namespace
}  // namespace flotilla::name
