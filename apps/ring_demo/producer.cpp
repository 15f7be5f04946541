// The producer: streams sequences 1..N, each with a payload in a pooled buffer, and implements the
// protocol the real stack will use when a peer restarts: "peer restarted -> resend what was
// outstanding".
//
// Why resending is needed at all: RingConsumer::recv_burst copies a burst out and publishes the new
// tail at once, so a consumer killed after recv_burst but before it committed the burst takes those
// messages with it; the ring will never show them again.
//
// What the producer keeps: not the messages (a payload is a function of its sequence number, so a
// resend re-creates it in a freshly allocated buffer) but the handles of every copy it has given
// out and may still own (`outstanding_`). A copy stops being the producer's business once the
// consumer has taken its buffer (hand_off), which the producer sees in the pool and trims.
//
// When the ring header shows a new consumer incarnation:
//   1. read the consumer's committed progress (last applied sequence L) from the state store;
//   2. free every outstanding copy the producer still owns. That covers both copies still sitting
//      in the ring and copies the dead consumer had read but never taken (those would otherwise
//      leak). Freeing moves each buffer's generation on, so the copies left in the ring now carry
//      stale handles, which the new consumer's hand_off refuses (Errc::stale_handle);
//   3. go back to sequence L + 1 and send from there again, with new buffers.
// The consumer drops anything at or below what it has applied, so resending more than needed is
// harmless; resending from L + 1 means nothing can be missing.
#include <fmt/core.h>

#include <cstdio>

#include "apps/ring_demo/roles.hpp"
#include "dataplane/channel.hpp"
#include "dataplane/clock.hpp"
#include "dataplane/component_loop.hpp"
#include "dataplane/idle_waiter.hpp"

namespace flotilla::ring_demo {
namespace {

// FIFO of handles, oldest first.
class OutstandingCopies {
 public:
  static constexpr std::size_t kCapacity = kOutstandingLimit;
  static_assert((kCapacity & (kCapacity - 1)) == 0);

  std::size_t size() const { return size_; }
  bool full() const { return size_ == kCapacity; }
  const BufferHandle& front() const { return items_[head_]; }
  void push(const BufferHandle& handle) {
    items_[(head_ + size_) & (kCapacity - 1)] = handle;
    ++size_;
  }
  void pop_front() {
    head_ = (head_ + 1) & (kCapacity - 1);
    --size_;
  }
  template <class Visit>
  void for_each(Visit&& visit) const {
    for (std::size_t i = 0; i < size_; ++i) visit(items_[(head_ + i) & (kCapacity - 1)]);
  }
  void clear() { head_ = size_ = 0; }

 private:
  std::array<BufferHandle, kCapacity> items_{};
  std::size_t head_ = 0;
  std::size_t size_ = 0;
};

class Producer {
 public:
  Producer(ChildRegions& regions, ChannelEnd& end)
      : pool_(*regions.pool),
        end_(end),
        store_(*regions.store),
        supervisor_(*regions.supervisor),
        report_(regions.role_stats->producer),
        counters_(regions.role_stats->counters),
        bell_(regions.bells->producer),
        messages_(regions.messages),
        seen_incarnation_(end.out.consumer_incarnation()) {
    report_.seen_incarnation.store(seen_incarnation_, std::memory_order_relaxed);
  }

  int run() {
    ComponentLoop loop(bell_, counters_, WaitPolicy::dedicated_core());
    if (auto added =
            loop.add_input(end_.in, [this](std::span<const Message> burst) { on_input(burst); });
        !added) {
      return fail(added.error().message());
    }
    // The loop's own run() only polls inputs; a producer also has output to make, so it drives
    // poll_once() itself and waits on its doorbell through an IdleWaiter of its own.
    IdleWaiter waiter(bell_, counters_, WaitPolicy::dedicated_core());
    std::uint64_t last_store_look_ns = 0;
    while (exit_code_ == 0) {
      bool worked = loop.poll_once();
      if (loop.input_faulted(0)) return fail("ack ring reported a corrupt index");
      if (end_.out.consumer_incarnation() != seen_incarnation_) {
        on_consumer_restart();
        worked = true;
      }
      if (applied_known_ >= messages_) break;
      worked = pump() || worked;
      const std::uint64_t now_ns = monotonic_ns();
      if (worked) {
        waiter.on_work(now_ns);
        continue;
      }
      // Idle: acks may have been dropped on a full reverse ring, so now and then look at the
      // consumer's committed progress directly.
      if (now_ns - last_store_look_ns >= 1'000'000) {
        last_store_look_ns = now_ns;
        applied_known_ = std::max(applied_known_, load_progress(store_).applied);
        if (applied_known_ >= messages_) break;
      }
      waiter.on_idle(
          now_ns,
          [this] {
            return end_.in.has_input() || end_.out.consumer_incarnation() != seen_incarnation_ ||
                   supervisor_.release_limit.load(std::memory_order_acquire) != limit_seen_;
          },
          std::chrono::milliseconds(10));
    }
    if (exit_code_ != 0) return exit_code_;
    // Done: every sequence is applied. Copies nobody consumed (duplicates still in the ring, or
    // prepared but never sent) are still ours; give them back.
    std::uint64_t released = 0;
    outstanding_.for_each([&](const BufferHandle& handle) {
      if (pool_.free(kProducerId, handle)) ++released;
    });
    outstanding_.clear();
    report_.released_at_exit.store(released, std::memory_order_relaxed);
    return 0;
  }

 private:
  int fail(std::string_view why) {
    fmt::print(stderr, "producer: {}\n", why);
    exit_code_ = 2;
    return exit_code_;
  }

  void on_input(std::span<const Message> burst) {
    for (const Message& message : burst) {
      if (message.kind == kAckKind) {
        const auto ack = message.read<AckBody>();
        // Never believe an ack for something not sent yet.
        if (ack.applied <= highest_sent_) {
          applied_known_ = std::max(applied_known_, ack.applied);
        } else {
          counters_.add(Counter::corrupt);
        }
      } else if (message.kind == MessageKind::peer_restarted) {
        // Only a wake-up: the ring header's consumer incarnation is what we act on.
      } else {
        counters_.add(Counter::corrupt);
      }
    }
  }

  void on_consumer_restart() {
    const std::uint64_t incarnation = end_.out.consumer_incarnation();
    const std::uint64_t applied = load_progress(store_).applied;
    std::uint64_t released = 0;
    outstanding_.for_each([&](const BufferHandle& handle) {
      // Fails (not_owner / stale_handle) for copies the consumer already took: those are its own.
      if (pool_.free(kProducerId, handle)) ++released;
    });
    outstanding_.clear();
    pending_begin_ = pending_end_ = 0;
    const std::uint64_t in_flight = next_seq_ - 1 > applied ? next_seq_ - 1 - applied : 0;
    applied_known_ = std::max(applied_known_, applied);
    next_seq_ = applied + 1;
    seen_incarnation_ = incarnation;

    report_.resend_from.store(next_seq_, std::memory_order_relaxed);
    report_.in_flight.store(in_flight, std::memory_order_relaxed);
    report_.released.store(released, std::memory_order_relaxed);
    report_.released_total.store(report_.released_total.load(std::memory_order_relaxed) + released,
                                 std::memory_order_relaxed);
    report_.seen_incarnation.store(incarnation, std::memory_order_relaxed);
    report_.restarts_seen.store(report_.restarts_seen.load(std::memory_order_relaxed) + 1,
                                std::memory_order_release);
  }

  // Forgets copies the consumer has taken. Copies are taken roughly in the order they were sent,
  // so looking at the front is enough.
  void trim_outstanding() {
    while (outstanding_.size() > 0 && !pool_.bytes(kProducerId, outstanding_.front())) {
      outstanding_.pop_front();
    }
  }

  // Prepares the next burst: buffers, payloads, messages. Returns false when nothing may be sent.
  bool prepare() {
    trim_outstanding();
    limit_seen_ = supervisor_.release_limit.load(std::memory_order_acquire);
    const std::uint64_t limit = std::min(messages_, limit_seen_);
    if (next_seq_ > limit) return false;
    if (outstanding_.size() + kBurst > OutstandingCopies::kCapacity) return false;
    const std::size_t want =
        static_cast<std::size_t>(std::min<std::uint64_t>(kBurst, limit - next_seq_ + 1));
    std::array<BufferHandle, kBurst> handles{};
    const std::size_t got = pool_.alloc_burst(kProducerId, std::span(handles.data(), want));
    if (got == 0) return false;  // cannot happen with the outstanding limit; wait and retry
    for (std::size_t i = 0; i < got; ++i) {
      const std::uint64_t seq = next_seq_ + i;
      BufferHandle handle = handles[i];
      handle.length = payload_bytes(seq);
      auto bytes = pool_.bytes(kProducerId, handle);
      if (!bytes) {
        fail(fmt::format("fresh buffer refused: {}", bytes.error().message()));
        return false;
      }
      fill_payload(bytes.value(), seq);
      outstanding_.push(handle);
      pending_[i] = Message::make(kDataKind, DataBody{seq, handle, 0});
    }
    pending_first_seq_ = next_seq_;
    pending_begin_ = 0;
    pending_end_ = got;
    next_seq_ += got;
    return true;
  }

  bool pump() {
    bool worked = false;
    if (pending_begin_ == pending_end_) worked = prepare();
    if (pending_begin_ == pending_end_) return worked;
    // Stamp each message with the ring index it will occupy (the consumer checks it).
    for (std::size_t i = pending_begin_; i < pending_end_; ++i) {
      DataBody body = pending_[i].read<DataBody>();
      body.ring_position = end_.out.published() + (i - pending_begin_);
      pending_[i] = Message::make(kDataKind, body);
    }
    auto sent = end_.out.send_burst(
        std::span<const Message>(pending_.data() + pending_begin_, pending_end_ - pending_begin_));
    if (!sent) {
      fail(fmt::format("data ring: {}", sent.error().message()));
      return false;
    }
    if (sent.value() == 0) return worked;
    const std::uint64_t first = pending_first_seq_ + pending_begin_;
    const std::uint64_t last = first + sent.value() - 1;
    const std::uint64_t fresh =
        last > highest_sent_ ? last - std::max(first - 1, highest_sent_) : 0;
    report_.first_sends.store(report_.first_sends.load(std::memory_order_relaxed) + fresh,
                              std::memory_order_relaxed);
    report_.resends.store(report_.resends.load(std::memory_order_relaxed) + sent.value() - fresh,
                          std::memory_order_relaxed);
    highest_sent_ = std::max(highest_sent_, last);
    pending_begin_ += sent.value();
    return true;
  }

  BufferPool& pool_;
  ChannelEnd& end_;
  const StateStore& store_;
  const SupervisorControl& supervisor_;
  ProducerReport& report_;
  CounterBlock& counters_;
  Doorbell& bell_;
  const std::uint64_t messages_;

  std::uint64_t seen_incarnation_;
  std::uint64_t next_seq_ = 1;       // next sequence to prepare
  std::uint64_t highest_sent_ = 0;   // highest sequence ever published
  std::uint64_t applied_known_ = 0;  // highest sequence the consumer is known to have applied
  std::uint64_t limit_seen_ = 0;

  OutstandingCopies outstanding_;
  std::array<Message, kBurst> pending_{};  // prepared, not yet (all) published
  std::size_t pending_begin_ = 0;
  std::size_t pending_end_ = 0;
  std::uint64_t pending_first_seq_ = 0;
  int exit_code_ = 0;
};

}  // namespace

int run_producer(ChildRegions& regions) {
  // Side a: produces into the data ring, consumes the consumer's acks. The consumer has attached
  // already (the supervisor starts it first), so the incarnation we see now is the baseline.
  auto end =
      attach_channel(regions.channel->bytes(), kRingCapacity, ChannelSide::a, regions.incarnation,
                     &regions.bells->consumer, &regions.role_stats->counters);
  if (!end) {
    fmt::print(stderr, "producer: attach channel: {}\n", end.error().message());
    return 2;
  }
  Producer producer(regions, end.value());
  if (auto ready = send_ready(regions.control_fd, regions.incarnation); !ready) {
    fmt::print(stderr, "producer: ready: {}\n", ready.error().message());
    return 2;
  }
  return producer.run();
}

}  // namespace flotilla::ring_demo
