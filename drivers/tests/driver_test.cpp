// The driver as a component, over a fake device port and an in-memory channel to IP: received
// frames go to IP with their buffers, frames from IP go to the device a burst at a time, other kinds
// are counted, a restarted IP hears the link again, and the block list pf publishes is installed
// once per new sequence, with a failed install counted.
#include "drivers/driver.hpp"

#include <gtest/gtest.h>

#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "components/formats/stack_messages.hpp"
#include "dataplane/tests/test_channels.hpp"

namespace flotilla::drivers {
namespace {

using flotilla::testing::PageMemory;
using flotilla::testing::ComponentFixture;

constexpr ComponentId kDriver = 3;
constexpr ComponentId kIp = 2;

class FakePort final : public PacketPort {
 public:
  explicit FakePort(BufferPool& pool) : pool_(pool) {}
  std::size_t receive_burst(std::span<BufferHandle> out) override {
    std::size_t count = 0;
    while (count < out.size() && !arrived.empty()) {
      out[count++] = arrived.front();
      arrived.pop_front();
    }
    return count;
  }
  std::size_t transmit_burst(std::span<const BufferHandle> frames) override {
    const std::size_t accepted = std::min(frames.size(), room);
    bursts.push_back(frames.size());
    for (std::size_t i = 0; i < accepted; ++i) (void)pool_.free(kDriver, frames[i]);
    transmitted += accepted;
    return accepted;
  }
  bool service() override { return false; }
  PortStats stats() const override { return PortStats{}; }
  std::string describe() const override { return "fake"; }

  std::deque<BufferHandle> arrived;
  std::vector<std::size_t> bursts;
  std::size_t room = SIZE_MAX;
  std::size_t transmitted = 0;

 private:
  BufferPool& pool_;
};

class DriverTest : public ::testing::Test {
 protected:
  DriverTest()
      : fixture_({{"driver-ip", kIp}}, kDriver), block_region_(4096) {
    auto port = std::make_unique<FakePort>(fixture_.pool);
    port_ = port.get();
    driver_.emplace(fixture_.channels.outputs(), 0, std::move(port), nullptr, Driver::Link{{2, 0, 0, 0, 0, 1}, 1500},
                    block_region_.bytes(),
                    [this](std::span<const flotilla_xdp_block_rule> rules) -> Status {
                      installed.emplace_back(rules.begin(), rules.end());
                      if (refuse_install) return Error{Errc::invalid_argument, 0, "fake XDP"};
                      return {};
                    },
                    [this](std::string_view why) { reports.emplace_back(why); }, fixture_.counters);
    fixture_.run(*driver_);
  }

  BufferHandle buffer() {
    BufferHandle handle{};
    EXPECT_EQ(fixture_.pool.alloc_burst(kDriver, std::span(&handle, 1)), 1u);
    handle.length = 60;
    return handle;
  }
  std::uint64_t counter(std::string_view name) { return fixture_.counter(name); }
  formats::XdpBlockList& block_list() { return *formats::xdp_block_list(block_region_.bytes()); }

  std::vector<std::vector<flotilla_xdp_block_rule>> installed;
  bool refuse_install = false;
  std::vector<std::string> reports;
  ComponentFixture fixture_;
  PageMemory block_region_;
  FakePort* port_ = nullptr;
  std::optional<Driver> driver_;
};

TEST_F(DriverTest, ReceivedFramesGoToIpWithTheirBuffers) {
  port_->arrived = {buffer(), buffer()};
  EXPECT_TRUE(fixture_.loop.poll_once());
  const auto sent = fixture_.channels.take_sent(0);
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[0].kind, stack::kFrameKind);
  EXPECT_EQ(fixture_.pool.count_owned(kIp), 2u);
  EXPECT_EQ(counter("rx_frames"), 2u);
}

TEST_F(DriverTest, FramesFromIpGoToTheDeviceInOneBurstAndRefusedOnesAreFreed) {
  port_->room = 2;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(fixture_.channels.send_from_peer(0, Message::make(stack::kFrameKind, stack::FrameBody{buffer()})));
  }
  ASSERT_TRUE(fixture_.channels.send_from_peer(0, Message::make(stack::kLinkInfoKind, stack::LinkInfoBody{})));
  (void)fixture_.loop.poll_once();
  EXPECT_EQ(port_->bursts, (std::vector<std::size_t>{3}));
  EXPECT_EQ(counter("tx_frames"), 2u);
  EXPECT_EQ(counter("tx_refused"), 1u);
  EXPECT_EQ(counter("malformed_messages"), 1u);
  EXPECT_EQ(fixture_.pool.count_owned(kDriver), 0u) << "sent or freed, none kept";
  EXPECT_EQ(fixture_.channels.link().served_count(), 1u);
}

TEST_F(DriverTest, ARestartedIpHearsTheLinkAgain) {
  driver_->on_peer_restarted(kIp + 7);
  EXPECT_TRUE(fixture_.channels.take_sent(0).empty());
  driver_->on_peer_restarted(kIp);
  const auto sent = fixture_.channels.take_sent(0);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].kind, stack::kLinkInfoKind);
  EXPECT_EQ(sent[0].read<stack::LinkInfoBody>().mac[5], 1);
}

TEST_F(DriverTest, InstallsEachNewBlockListOnItsTick) {
  EXPECT_TRUE(installed.empty()) << "nothing published yet";
  flotilla_xdp_block_rule rule{};
  rule.in_use = 1;
  rule.protocol = 17;
  (void)formats::publish_xdp_block_list(block_list(), std::span(&rule, 1));
  driver_->on_tick(0);
  ASSERT_EQ(installed.size(), 1u);
  ASSERT_EQ(installed[0].size(), 1u);
  EXPECT_EQ(installed[0][0].protocol, 17);
  driver_->on_tick(0);
  EXPECT_EQ(installed.size(), 1u) << "the same list is installed once";
  (void)formats::publish_xdp_block_list(block_list(), {});
  driver_->on_tick(0);
  ASSERT_EQ(installed.size(), 2u);
  EXPECT_TRUE(installed[1].empty());
  EXPECT_EQ(counter("xdp_offload_failed"), 0u);
}

TEST_F(DriverTest, AFailedOffloadIsCountedAndReported) {
  refuse_install = true;
  (void)formats::publish_xdp_block_list(block_list(), {});
  driver_->on_tick(0);
  EXPECT_EQ(counter("xdp_offload_failed"), 1u);
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_NE(reports[0].find("fake XDP"), std::string::npos) << reports[0];
  block_list().count = FLOTILLA_XDP_MAX_RULES + 1;
  block_list().sequence.store(block_list().sequence.load() + 2);
  driver_->on_tick(0);
  EXPECT_EQ(installed.size(), 1u) << "a list out of range is not installed";
  EXPECT_EQ(counter("xdp_offload_failed"), 2u);
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_NE(reports[1].find("refused"), std::string::npos) << reports[1];
  driver_->on_tick(0);
  EXPECT_EQ(reports.size(), 2u) << "an unchanged list is not reported again";
}

}  // namespace
}  // namespace flotilla::drivers
