// The emulated bad link: the spec parser, and loss, delay and reordering over a fake device, with
// every buffer accounted for at the end.
#include "drivers/impaired_port.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <deque>
#include <thread>
#include <vector>

#include "dataplane/clock.hpp"

namespace flotilla::drivers {
namespace {

constexpr ComponentId kDriver = 3;

// Hands out frames the test queued, and keeps what is transmitted (freeing it, as a device would).
class FakePort final : public PacketPort {
 public:
  explicit FakePort(BufferPool& pool) : pool_(pool) {}
  std::size_t receive_burst(std::span<BufferHandle> out) override {
    std::size_t count = 0;
    while (count < out.size() && !arriving.empty()) {
      out[count++] = arriving.front();
      arriving.pop_front();
    }
    return count;
  }
  std::size_t transmit_burst(std::span<const BufferHandle> frames) override {
    for (const BufferHandle& frame : frames) {
      sent.push_back(frame.index);
      (void)pool_.free(kDriver, frame);
    }
    return frames.size();
  }
  bool service() override { return false; }
  PortStats stats() const override { return {}; }
  std::string describe() const override { return "fake"; }

  std::deque<BufferHandle> arriving;
  std::vector<std::uint32_t> sent;

 private:
  BufferPool& pool_;
};

class ImpairedPortTest : public ::testing::Test {
 protected:
  ImpairedPortTest() : pool_(make_pool()) {}
  static BufferPool make_pool() {
    auto pool = BufferPool::create(1, 2048, 1024);
    if (!pool) std::abort();
    return std::move(pool).value();
  }
  ImpairedPort& make(const std::string& spec) {
    auto impairment = parse_impairment(spec);
    EXPECT_TRUE(impairment.ok()) << spec;
    auto fake = std::make_unique<FakePort>(pool_);
    fake_ = fake.get();
    port_ = std::make_unique<ImpairedPort>(std::move(fake), impairment.value(), pool_, kDriver);
    return *port_;
  }
  BufferHandle frame() {
    BufferHandle handle;
    EXPECT_EQ(pool_.alloc_burst(kDriver, std::span(&handle, 1)), 1u);
    return handle;
  }
  // Receives until `want` frames came out or `deadline` passed; returns their buffer indices.
  std::vector<std::uint32_t> receive(std::size_t want, std::chrono::milliseconds deadline) {
    std::vector<std::uint32_t> got;
    const auto until = std::chrono::steady_clock::now() + deadline;
    std::array<BufferHandle, 32> out{};
    while (got.size() < want && std::chrono::steady_clock::now() < until) {
      const std::size_t count = port_->receive_burst(out);
      for (std::size_t i = 0; i < count; ++i) {
        got.push_back(out[i].index);
        (void)pool_.free(kDriver, out[i]);
      }
    }
    return got;
  }
  void TearDown() override {
    port_.reset();
    // Whatever the port still held is the driver's; a crashed driver's reclaim frees it.
    (void)pool_.reclaim(kDriver);
    EXPECT_EQ(pool_.count_free(), 1024u);
  }

  BufferPool pool_;
  FakePort* fake_ = nullptr;
  std::unique_ptr<ImpairedPort> port_;
};

TEST(ImpairmentSpec, ParsesEveryKeyAndRefusesNonsense) {
  auto spec = parse_impairment("loss=1%,delay=25ms,reorder=0.25,gap=500us,direction=both,seed=9");
  ASSERT_TRUE(spec.ok()) << spec.error().message();
  EXPECT_DOUBLE_EQ(spec->loss, 0.01);
  EXPECT_EQ(spec->delay_ns, 25'000'000u);
  EXPECT_DOUBLE_EQ(spec->reorder, 0.25);
  EXPECT_EQ(spec->gap_ns, 500'000u);
  EXPECT_TRUE(spec->rx);
  EXPECT_TRUE(spec->tx);
  EXPECT_EQ(spec->seed, 9u);
  auto empty = parse_impairment("");
  ASSERT_TRUE(empty.ok());
  EXPECT_FALSE(empty->active());
  for (const char* bad : {"loss", "loss=2", "loss=-1%", "delay=25", "delay=5min", "direction=up", "colour=red",
                          "seed=x", "delay=100s"}) {
    EXPECT_FALSE(parse_impairment(bad).ok()) << bad;
  }
}

TEST_F(ImpairedPortTest, LossDropsAboutTheGivenShareAndFreesWhatItDrops) {
  make("loss=10%");
  constexpr std::size_t kFrames = 1000;
  std::size_t passed = 0;
  for (std::size_t round = 0; round < kFrames / 100; ++round) {
    for (int i = 0; i < 100; ++i) fake_->arriving.push_back(frame());
    passed += receive(100, std::chrono::milliseconds(50)).size();
  }
  EXPECT_GT(passed, 850u);
  EXPECT_LT(passed, 950u);
  EXPECT_EQ(port_->impaired_drops(), kFrames - passed);
}

TEST_F(ImpairedPortTest, DelayHoldsEveryFrameInOrder) {
  make("delay=20ms");
  std::vector<std::uint32_t> order;
  for (int i = 0; i < 10; ++i) {
    const BufferHandle handle = frame();
    order.push_back(handle.index);
    fake_->arriving.push_back(handle);
  }
  const std::uint64_t start = monotonic_ns();
  std::array<BufferHandle, 32> out{};
  EXPECT_EQ(port_->receive_burst(out), 0u);  // nothing is due yet
  EXPECT_NE(port_->next_release_ns(), UINT64_MAX);
  const auto got = receive(10, std::chrono::milliseconds(2000));
  EXPECT_GE(monotonic_ns() - start, 20'000'000u);
  EXPECT_EQ(got, order);
  EXPECT_EQ(port_->next_release_ns(), UINT64_MAX);
}

TEST_F(ImpairedPortTest, ReorderLetsLaterFramesOvertake) {
  make("reorder=50%,gap=5ms,seed=3");
  std::vector<std::uint32_t> order;
  for (int i = 0; i < 40; ++i) {
    const BufferHandle handle = frame();
    order.push_back(handle.index);
    fake_->arriving.push_back(handle);
  }
  const auto got = receive(40, std::chrono::milliseconds(2000));
  ASSERT_EQ(got.size(), 40u);
  EXPECT_NE(got, order);  // some came late
  auto sorted_got = got;
  auto sorted_order = order;
  std::sort(sorted_got.begin(), sorted_got.end());
  std::sort(sorted_order.begin(), sorted_order.end());
  EXPECT_EQ(sorted_got, sorted_order);  // none lost, none doubled
}

TEST_F(ImpairedPortTest, TransmitDirectionIsHeldUntilServiced) {
  make("delay=10ms,direction=tx");
  const BufferHandle handle = frame();
  EXPECT_EQ(port_->transmit_burst(std::span(&handle, 1)), 1u);
  EXPECT_TRUE(fake_->sent.empty());
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (fake_->sent.empty() && std::chrono::steady_clock::now() < until) (void)port_->service();
  ASSERT_EQ(fake_->sent.size(), 1u);
  EXPECT_EQ(fake_->sent[0], handle.index);
  // The receive side is not impaired in this direction.
  const BufferHandle incoming = frame();
  fake_->arriving.push_back(incoming);
  std::array<BufferHandle, 4> out{};
  ASSERT_EQ(port_->receive_burst(out), 1u);
  (void)pool_.free(kDriver, out[0]);
}

}  // namespace
}  // namespace flotilla::drivers
