// Link emulation in the driver: a PacketPort that wraps the real device and drops, delays and
// reorders frames on their way in (rx: what the peer sends, as tc netem on the peer's egress would)
// and/or out (tx). For fault-injection tests and demos; this machine's kernel has no sch_netem.
//
// Spec (the driver's --impair option, the configuration's [network] impair):
//   "loss=1%,delay=25ms,reorder=25%,direction=rx,seed=7"   (every key optional)
// loss: a frame is dropped with this probability. delay: every frame is held this long. reorder: a
// frame is held a further `gap` (default 2ms), so later frames overtake it. direction: rx, tx or
// both (default rx). seed: the random source (default 1), so a run can be repeated.
//
// Held frames stay owned by the driver in the pool (a crash gives them back like any other). The
// queues are bounded; a frame that finds them full is dropped and counted.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "drivers/packet_port.hpp"

namespace flotilla::drivers {

struct LinkImpairment {
  double loss = 0;
  std::uint64_t delay_ns = 0;
  double reorder = 0;
  std::uint64_t gap_ns = 2'000'000;
  bool rx = true;
  bool tx = false;
  std::uint64_t seed = 1;

  bool active() const { return loss > 0 || delay_ns > 0 || reorder > 0; }
};

// Errc::invalid_argument with a message naming the bad part. An empty spec is no impairment.
Result<LinkImpairment> parse_impairment(std::string_view spec);

class ImpairedPort final : public PacketPort {
 public:
  static constexpr std::size_t kMaxHeld = 16384;  // per direction and queue

  ImpairedPort(std::unique_ptr<PacketPort> inner, const LinkImpairment& impairment, BufferPool& pool,
               ComponentId self);

  std::size_t receive_burst(std::span<BufferHandle> out) override;
  std::size_t transmit_burst(std::span<const BufferHandle> frames) override;
  bool service() override;
  int wait_fd() const override { return inner_->wait_fd(); }
  PortStats stats() const override;
  std::string describe() const override;

  // When the next held frame is due (UINT64_MAX: none held), on the monotonic clock.
  std::uint64_t next_release_ns() const;
  std::uint64_t impaired_drops() const { return dropped_; }

 private:
  // Frames in the order they are due: `normal` holds the delayed ones, `late` the reordered ones.
  struct Held {
    BufferHandle frame;
    std::uint64_t due_ns;
  };
  struct Queue {
    std::vector<Held> items;  // a ring of kMaxHeld, reserved up front
    std::size_t first = 0;
    std::size_t count = 0;
    bool push(const Held& held);
    const Held* front() const { return count == 0 ? nullptr : &items[first]; }
    void pop();
  };
  struct Direction {
    Queue normal;
    Queue late;
  };

  // Decides a frame's fate: false when dropped (freed), else queued.
  bool admit(Direction& direction, const BufferHandle& frame, std::uint64_t now_ns);
  // The next due frame of a direction, if any is due by now.
  bool release(Direction& direction, std::uint64_t now_ns, BufferHandle* frame);
  void free_frame(const BufferHandle& frame);

  std::unique_ptr<PacketPort> inner_;
  LinkImpairment impairment_;
  BufferPool* pool_;
  ComponentId self_;
  std::mt19937_64 random_;
  std::uniform_real_distribution<double> uniform_{0.0, 1.0};
  Direction in_;
  Direction out_;
  std::uint64_t dropped_ = 0;
  std::uint64_t overflowed_ = 0;
};

}  // namespace flotilla::drivers
