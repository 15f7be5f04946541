// PfServer as the pf process runs it: verdict requests from IP on an in-memory channel, through the
// runtime's ComponentRunner, answered in one burst; what it cannot read is counted and blocked, or
// counted and dropped; its counts are kept once; its XDP block list reaches the region the driver
// reads.
#include "components/pf/pf_server.hpp"

#include <gtest/gtest.h>

#include "components/formats/xdp_block_list.hpp"
#include "components/pf/tests/test_packets.hpp"
#include "components/pf/xdp_offload.hpp"
#include "components/wire/ipv4.hpp"
#include "components/wire/udp.hpp"
#include "dataplane/tests/test_channels.hpp"

namespace flotilla::pf {
namespace {

using flotilla::testing::PageMemory;
using flotilla::testing::ComponentFixture;
using testing::ip;
using testing::must_parse;

constexpr ComponentId kPf = 4;
constexpr ComponentId kIp = 2;
constexpr std::uint32_t kPeer = ip(10, 77, 0, 1);
constexpr std::uint32_t kLocal = ip(10, 77, 0, 2);
constexpr const char* kRules = "pass all\nblock in proto udp to port 9999\n";

class PfServerTest : public ::testing::Test {
 protected:
  PfServerTest()
      : fixture_({{"ip-pf", kIp}}, kPf), state_(StateTable::bytes_for(64)), xdp_region_(4096) {}

  void start(std::string_view rules) {
    auto created = PfServer::create(fixture_.channels.outputs(), 0, must_parse(rules), state_.span(), xdp_region_.bytes(),
                                    fixture_.counters);
    ASSERT_TRUE(created) << created.error().message();
    server_ = std::move(created.value());
    fixture_.run(*server_);
  }

  // A UDP datagram from the peer to `port`, in a buffer IP keeps parked.
  BufferHandle parked_datagram(std::uint16_t port) {
    BufferHandle handle{};
    EXPECT_EQ(fixture_.pool.alloc_burst(parked_owner(kIp), std::span(&handle, 1)), 1u);
    handle.length = wire::kIpv4HeaderBytes + 8;
    auto bytes = fixture_.pool.bytes(parked_owner(kIp), handle).value();
    EXPECT_EQ(wire::emit_udp(bytes.subspan(wire::kIpv4HeaderBytes), 40000, port, kPeer, kLocal, 0), 8u);
    const wire::Ipv4Header header{.source = kPeer, .destination = kLocal, .protocol = wire::kProtocolUdp,
                                  .payload_length = 8};
    EXPECT_EQ(wire::emit_ipv4_header(bytes, header), wire::kIpv4HeaderBytes);
    return handle;
  }

  void ask(std::uint32_t ticket, const BufferHandle& packet) {
    const stack::VerdictRequestBody request{packet, ticket, stack::Direction::in, {}};
    ASSERT_TRUE(fixture_.channels.send_from_peer(0, Message::make(stack::kVerdictRequestKind, request)));
  }

  std::vector<stack::VerdictBody> verdicts() {
    std::vector<stack::VerdictBody> out;
    for (const Message& message : fixture_.channels.take_sent(0)) {
      EXPECT_EQ(message.kind, stack::kVerdictKind);
      out.push_back(message.read<stack::VerdictBody>());
    }
    return out;
  }

  std::uint64_t counter(std::string_view name) { return fixture_.counter(name); }

  ComponentFixture fixture_;
  testing::TestRegion state_;
  PageMemory xdp_region_;
  std::unique_ptr<PfServer> server_;
};

TEST_F(PfServerTest, AnswersEachRequestByTicketAndCountsEachDecisionOnce) {
  start(kRules);
  ask(1, parked_datagram(7));
  ask(2, parked_datagram(9999));
  EXPECT_TRUE(fixture_.loop.poll_once());
  const auto answers = verdicts();
  ASSERT_EQ(answers.size(), 2u);
  EXPECT_EQ(answers[0].ticket, 1u);
  EXPECT_EQ(answers[0].action, stack::Action::pass);
  EXPECT_EQ(answers[1].ticket, 2u);
  EXPECT_EQ(answers[1].action, stack::Action::block);
  EXPECT_EQ(answers[1].rule, 2u);
  // A passed datagram's verdict holds for its flow; a block is never cached.
  EXPECT_EQ(answers[0].flags, stack::kVerdictCacheable);
  EXPECT_EQ(answers[1].flags, 0);
  EXPECT_EQ(counter("passed"), 1u);
  EXPECT_EQ(counter("blocked"), 1u);
  EXPECT_EQ(fixture_.channels.link().served_count(), 1u) << "one burst served";
}

TEST_F(PfServerTest, BlocksAPacketItCannotReadAndDropsWhatIsNoRequest) {
  start(kRules);
  BufferHandle foreign{};
  ASSERT_EQ(fixture_.pool.alloc_burst(kPf, std::span(&foreign, 1)), 1u);  // not parked by IP
  foreign.length = 28;
  ask(5, foreign);
  ASSERT_TRUE(fixture_.channels.send_from_peer(0, Message::make(stack::kVerdictKind, stack::VerdictBody{})));
  (void)fixture_.loop.poll_once();
  const auto answers = verdicts();
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_EQ(answers[0].ticket, 5u);
  EXPECT_EQ(answers[0].action, stack::Action::block);
  EXPECT_EQ(counter("unreadable_packets"), 1u);
  EXPECT_EQ(counter("malformed_messages"), 1u);
  EXPECT_EQ(counter("blocked"), 0u) << "no rule decided";
}

TEST_F(PfServerTest, PublishesItsXdpBlockListForTheDriver) {
  start(kRules);
  const auto* list = formats::xdp_block_list(xdp_region_.bytes());
  ASSERT_NE(list, nullptr);
  formats::XdpBlockListCopy copy;
  ASSERT_EQ(formats::read_xdp_block_list(*list, 0, copy), formats::XdpListRead::copied);
  const auto expected = offloadable_block_rules(must_parse(kRules));
  ASSERT_EQ(copy.count, expected.size());
  ASSERT_EQ(copy.count, 1u);
  EXPECT_EQ(copy.rules[0].dst_port_min, 9999);
  EXPECT_EQ(server_->offloaded_rules(), 1u);
  EXPECT_EQ(formats::read_xdp_block_list(*list, copy.sequence, copy), formats::XdpListRead::unchanged);
}

TEST_F(PfServerTest, ARestartedPfPublishesAgainUnderANewSequence) {
  start(kRules);
  const auto* list = formats::xdp_block_list(xdp_region_.bytes());
  const std::uint64_t first = list->sequence.load();
  fixture_.runner.reset();
  server_.reset();
  auto again = PfServer::create(fixture_.channels.outputs(), 0, must_parse("block in proto tcp to port 22\n"),
                                state_.span(), xdp_region_.bytes(), fixture_.counters);
  ASSERT_TRUE(again);
  formats::XdpBlockListCopy copy;
  ASSERT_EQ(formats::read_xdp_block_list(*list, first, copy), formats::XdpListRead::copied);
  EXPECT_GT(copy.sequence, first);
  ASSERT_EQ(copy.count, 1u);
  EXPECT_EQ(copy.rules[0].dst_port_min, 22);
}

TEST(XdpBlockList, AReaderSeesNoListWhileAWriteIsUnderWayOrWasAbandoned) {
  PageMemory region(4096);
  auto* list = formats::xdp_block_list(region.bytes());
  ASSERT_NE(list, nullptr);
  formats::XdpBlockListCopy copy;
  EXPECT_EQ(formats::read_xdp_block_list(*list, 0, copy), formats::XdpListRead::unchanged);
  list->sequence.store(3);  // a writer died half way
  EXPECT_EQ(formats::read_xdp_block_list(*list, 0, copy), formats::XdpListRead::busy);
  const std::uint64_t published = formats::publish_xdp_block_list(*list, {});
  EXPECT_EQ(published % 2, 0u);
  EXPECT_GT(published, 3u);
  EXPECT_EQ(formats::read_xdp_block_list(*list, 0, copy), formats::XdpListRead::copied);
  EXPECT_EQ(copy.count, 0u);
  list->count = FLOTILLA_XDP_MAX_RULES + 1;  // what a broken writer might leave
  list->sequence.store(published + 2);
  EXPECT_EQ(formats::read_xdp_block_list(*list, published, copy), formats::XdpListRead::invalid);
}

}  // namespace
}  // namespace flotilla::pf
