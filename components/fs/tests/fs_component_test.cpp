// FsComponent as flotilla-fs runs it, on in-memory channels to two clients: each client is
// answered on its own channel; malformed chunks, spoofed senders and requests that fail their
// checks are counted and dropped while the server keeps serving; replies wait in order when a
// client's ring is full; a client's restart releases its descriptors; and a new incarnation on the
// same state region finds the tables.
#include "components/fs/fs_component.hpp"

#include <fcntl.h>

#include <gtest/gtest.h>

#include <optional>
#include <vector>

#include "dataplane/tests/test_channels.hpp"

namespace flotilla::fs {
namespace {

using flotilla::testing::ComponentFixture;
using flotilla::testing::PageMemory;

constexpr ComponentId kServer = 5;
constexpr ComponentId kClient = 8;
constexpr ComponentId kOtherClient = 9;
constexpr std::size_t kClientChannel = 0;
constexpr std::size_t kOtherChannel = 1;

class FsComponentTest : public ::testing::Test {
 protected:
  FsComponentTest()
      : fixture_({{"fs0-app0", kClient}, {"fs0-app1", kOtherClient}}, kServer),
        state_(1 << 20),
        cache_(64 * kBlockBytes) {
    start();
  }

  void start() {
    ServerConfig config;
    auto created = FsComponent::create(fixture_.channels.outputs(), config, state_.bytes(), cache_.bytes(),
                                       fixture_.counters);
    if (!created) std::abort();  // nothing to test without the component
    component_ = std::move(created.value());
    fixture_.runner.reset();
    fixture_.run(*component_);
  }

  // Sends `message` from the client on `channel` as its chunks; false when the ring refused one.
  bool send(std::size_t channel, const FsMessage& message) {
    std::array<Message, kMaxFsChunks> chunks;
    const std::size_t count = encode_chunks(message, ++sequence_, chunks);
    for (std::size_t i = 0; i < count; ++i) {
      if (!fixture_.channels.send_from_peer(channel, chunks[i])) return false;
    }
    return true;
  }

  // Every complete message the server sent on `channel` since the last call.
  std::vector<FsMessage> received(std::size_t channel) {
    std::vector<FsMessage> out;
    for (const Message& chunk : fixture_.channels.take_sent(channel)) {
      auto assembled = assemblers_[channel].push(chunk);
      EXPECT_TRUE(assembled.ok());
      if (assembled && *assembled) out.push_back(**assembled);
    }
    return out;
  }

  FsMessage open_request(ComponentId client, std::uint64_t number, std::string_view name, int flags) {
    FsMessage message;
    message.op = FsOp::open;
    message.client = client;
    message.request = number;
    message.inode = kRootInode;
    message.flags = kDistributed;
    message.arg0 = static_cast<std::uint64_t>(flags);
    message.arg1 = 0644;
    message.set_name(name);
    return message;
  }

  void serve() {
    while (fixture_.loop.poll_once()) {
    }
  }

  ComponentFixture fixture_;
  PageMemory state_;
  PageMemory cache_;
  std::unique_ptr<FsComponent> component_;
  std::uint16_t sequence_ = 0;
  std::array<FsAssembler, 2> assemblers_;
};

TEST_F(FsComponentTest, EachClientIsAnsweredOnItsOwnChannel) {
  ASSERT_TRUE(send(kClientChannel, open_request(kClient, 1, "a", O_CREAT | O_RDWR)));
  ASSERT_TRUE(send(kOtherChannel, open_request(kOtherClient, 1, "b", O_CREAT | O_RDWR)));
  serve();
  const auto first = received(kClientChannel);
  const auto second = received(kOtherChannel);
  ASSERT_EQ(first.size(), 1u);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(first[0].op, FsOp::reply);
  EXPECT_EQ(first[0].status, 0);
  EXPECT_EQ(first[0].client, kClient);
  EXPECT_EQ(second[0].client, kOtherClient);
  EXPECT_NE(first[0].inode, second[0].inode);
  EXPECT_EQ(fixture_.counter("fs_requests"), 2u);
  EXPECT_EQ(fixture_.counter("fs_malformed"), 0u);
}

TEST_F(FsComponentTest, MalformedInputIsCountedAndDropped) {
  // A message of another kind, a chunk that claims to continue nothing, a spoofed sender, and a
  // request whose name breaks the rules.
  ASSERT_TRUE(fixture_.channels.send_from_peer(kClientChannel, Message::make(MessageKind::user, std::uint64_t{7})));
  MessageChunk stray;
  stray.index = 3;
  stray.count = 5;
  ASSERT_TRUE(fixture_.channels.send_from_peer(kClientChannel, Message::make(kFsChunkKind, stray)));
  ASSERT_TRUE(send(kClientChannel, open_request(kOtherClient, 1, "spoofed", O_CREAT | O_RDWR)));
  FsMessage bad_name = open_request(kClient, 2, "x", O_CREAT | O_RDWR);
  bad_name.payload[0] = '/';
  ASSERT_TRUE(send(kClientChannel, bad_name));
  serve();
  EXPECT_TRUE(received(kClientChannel).empty());
  EXPECT_TRUE(received(kOtherChannel).empty());
  EXPECT_EQ(fixture_.counter("fs_malformed"), 4u);
  EXPECT_TRUE(component_->server().entries_of(kRootInode).empty());

  // The server still serves the same client afterwards.
  ASSERT_TRUE(send(kClientChannel, open_request(kClient, 3, "good", O_CREAT | O_RDWR)));
  serve();
  const auto replies = received(kClientChannel);
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0].status, 0);
  EXPECT_EQ(replies[0].request, 3u);
}

TEST_F(FsComponentTest, RepliesWaitInOrderWhileTheClientsRingIsFull) {
  // Twice the ring's cells of one-chunk requests, sent in rounds the ring takes, none read back.
  constexpr std::uint64_t kRequests = 2 * flotilla::testing::TestChannels::kCapacity;
  std::uint64_t sent = 0;
  while (sent < kRequests) {
    FsMessage stat;
    stat.op = FsOp::fstat;
    stat.client = kClient;
    stat.request = sent + 1;
    stat.inode = kRootInode;
    if (!send(kClientChannel, stat)) {
      serve();
      continue;
    }
    ++sent;
    serve();
  }
  EXPECT_GT(fixture_.counter("fs_outbox_waits"), 0u);
  std::vector<FsMessage> replies;
  while (replies.size() < kRequests) {
    auto more = received(kClientChannel);
    ASSERT_FALSE(more.empty() && !fixture_.loop.poll_once()) << "replies lost";
    replies.insert(replies.end(), more.begin(), more.end());
  }
  for (std::uint64_t i = 0; i < kRequests; ++i) EXPECT_EQ(replies[i].request, i + 1);
  EXPECT_EQ(fixture_.counter("fs_outbox_dropped"), 0u);
}

TEST_F(FsComponentTest, AClientsRestartReleasesItsDescriptors) {
  ASSERT_TRUE(send(kClientChannel, open_request(kClient, 1, "held", O_CREAT | O_RDWR)));
  ASSERT_TRUE(send(kOtherChannel, open_request(kOtherClient, 1, "kept", O_CREAT | O_RDWR)));
  serve();
  (void)received(kClientChannel);
  (void)received(kOtherChannel);
  ASSERT_EQ(component_->server().descriptor_count(), 2u);
  component_->on_peer_restarted(kClient);
  EXPECT_EQ(component_->server().descriptor_count(), 1u);
  EXPECT_EQ(fixture_.counter("fs_clients_gone"), 1u);
  component_->on_peer_restarted(77);  // no channel leads there
  EXPECT_EQ(fixture_.counter("fs_unknown_client"), 1u);
  EXPECT_EQ(component_->server().descriptor_count(), 1u);
}

TEST_F(FsComponentTest, ANewIncarnationFindsTheTablesInItsState) {
  ASSERT_TRUE(send(kClientChannel, open_request(kClient, 1, "survivor", O_CREAT | O_RDWR)));
  serve();
  ASSERT_EQ(received(kClientChannel).size(), 1u);
  const auto before = component_->server().entries_of(kRootInode);
  start();
  EXPECT_EQ(component_->server().entries_of(kRootInode), before);
  EXPECT_EQ(component_->server().descriptor_count(), 1u);
  // The retried request is answered from the reply cache, not run twice.
  ASSERT_TRUE(send(kClientChannel, open_request(kClient, 1, "survivor", O_CREAT | O_RDWR)));
  serve();
  const auto replies = received(kClientChannel);
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0].status, 0);
  EXPECT_EQ(component_->server().descriptor_count(), 1u);
  EXPECT_GE(fixture_.counter("fs_retried"), 1u);
}

}  // namespace
}  // namespace flotilla::fs
