// A single-producer single-consumer ring of 64-byte messages in shared memory.
//
// Layout: a header line (magic, capacity, the two ends' incarnations), then the producer's index
// and the consumer's index on cache lines of their own, then the cells. Indices count messages
// forever (64-bit, never wrap in practice); a cell is index & mask. Each side publishes its index
// with one release store, so a producer killed between two stores leaves only whole, unpublished
// cells behind, and the next incarnation carries on from the published index.
//
// The other end is untrusted: the mask is cached locally at attach time, so a corrupted header can
// never steer an access outside the ring, and an index that claims more than `capacity` messages
// is reported as Errc::corrupt_index and counted.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "dataplane/counters.hpp"
#include "dataplane/doorbell.hpp"
#include "dataplane/message.hpp"
#include "dataplane/result.hpp"

namespace flotilla {

struct alignas(kCacheLine) RingHeader {
  static constexpr std::uint64_t kMagic = 0x676e6952'6f6c6646ull;  // "FloRing"
  static constexpr std::uint32_t kVersion = 1;

  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t capacity;
  std::atomic<std::uint64_t> producer_incarnation;
  std::atomic<std::uint64_t> consumer_incarnation;
};

struct alignas(kCacheLine) RingIndex {
  std::atomic<std::uint64_t> value;
};

struct RingLayout {
  RingHeader header;
  RingIndex head;  // next cell the producer fills; written only by the producer
  RingIndex tail;  // next cell the consumer reads; written only by the consumer
  // Message cells[capacity] follow.

  static constexpr std::size_t cells_offset() { return 3 * kCacheLine; }
  static constexpr std::size_t bytes_for(std::uint32_t capacity) {
    return cells_offset() + static_cast<std::size_t>(capacity) * sizeof(Message);
  }
};
static_assert(sizeof(RingLayout) == RingLayout::cells_offset());

inline constexpr std::uint32_t kMaxRingCapacity = 1u << 20;

// Writes an empty ring into `memory`. Capacity must be a power of two in [2, kMaxRingCapacity].
Status format_ring(std::span<std::byte> memory, std::uint32_t capacity);

// What both ends hold: the ring's shape as validated at attach. It is never read from the shared
// header again, so a header rewritten later cannot steer an access outside the ring.
class RingEnd {
 public:
  std::uint32_t capacity() const { return static_cast<std::uint32_t>(capacity_); }

 protected:
  struct Attached {
    std::uint64_t head;
    std::uint64_t tail;
  };
  // Validates the ring in `memory` and adopts its shape; a corrupt ring is counted in `counters`.
  Result<Attached> adopt(std::span<std::byte> memory, CounterBlock* counters);
  Error corrupt_index(const char* what) {
    if (counters_ != nullptr) counters_->add(Counter::corrupt);
    return Error{Errc::corrupt_index, 0, what};
  }

  RingLayout* layout_ = nullptr;
  Message* cells_ = nullptr;
  std::uint64_t capacity_ = 0;
  std::uint64_t mask_ = 0;
  CounterBlock* counters_ = nullptr;
};

class RingProducer : public RingEnd {
 public:
  RingProducer() = default;
  // Takes over the producer end of a formatted ring as incarnation `incarnation`. `consumer_bell`
  // is rung after each send; `counters` (the producer's own block) may be null.
  static Result<RingProducer> attach(std::span<std::byte> memory, std::uint64_t incarnation,
                                     Doorbell* consumer_bell, CounterBlock* counters);

  // Publishes up to messages.size() messages; returns how many fit.
  Result<std::size_t> send_burst(std::span<const Message> messages) {
    std::uint64_t room = capacity_ - (head_ - tail_seen_);
    if (room < messages.size()) {
      tail_seen_ = layout_->tail.value.load(std::memory_order_acquire);
      if (head_ - tail_seen_ > capacity_) return corrupt_index("ring tail out of range");
      room = capacity_ - (head_ - tail_seen_);
    }
    const std::size_t count = std::min<std::size_t>(room, messages.size());
    if (count == 0) {
      if (counters_ != nullptr && !messages.empty()) counters_->add(Counter::ring_full);
      return std::size_t{0};
    }
    const std::size_t first = head_ & mask_;
    const std::size_t before_wrap = std::min<std::size_t>(count, capacity_ - first);
    std::copy_n(messages.data(), before_wrap, cells_ + first);
    std::copy_n(messages.data() + before_wrap, count - before_wrap, cells_);
    head_ += count;
    layout_->head.value.store(head_, std::memory_order_release);
    if (counters_ != nullptr) {
      counters_->add(Counter::messages_out, count);
      counters_->add(Counter::bursts_out);
    }
    if (bell_ != nullptr) ring_doorbell(*bell_, counters_, consumer_wake_fd_);
    return count;
  }

  // Free cells right now (re-reads the consumer's index): lets a sender that must not split a
  // group of messages check before it sends.
  Result<std::size_t> room() {
    tail_seen_ = layout_->tail.value.load(std::memory_order_acquire);
    if (head_ - tail_seen_ > capacity_) return corrupt_index("ring tail out of range");
    return static_cast<std::size_t>(capacity_ - (head_ - tail_seen_));
  }

  // The consumer sleeps on this eventfd rather than a futex (doorbell.hpp, eventfd_sleep).
  void set_consumer_wake_fd(int fd) { consumer_wake_fd_ = fd; }

  std::uint64_t published() const { return head_; }
  std::uint64_t consumer_incarnation() const {
    return layout_->header.consumer_incarnation.load(std::memory_order_acquire);
  }

 private:
  std::uint64_t head_ = 0;       // our own index, authoritative while we live
  std::uint64_t tail_seen_ = 0;  // cached copy of the consumer's index
  Doorbell* bell_ = nullptr;
  int consumer_wake_fd_ = -1;
};

class RingConsumer : public RingEnd {
 public:
  RingConsumer() = default;
  static Result<RingConsumer> attach(std::span<std::byte> memory, std::uint64_t incarnation,
                                     CounterBlock* counters);

  // Copies up to out.size() messages out of the ring and frees their cells. The copy means the
  // producer cannot change a message after the caller has validated it.
  Result<std::size_t> recv_burst(std::span<Message> out) {
    if (head_seen_ == tail_) {
      head_seen_ = layout_->head.value.load(std::memory_order_acquire);
      if (head_seen_ - tail_ > capacity_) {
        head_seen_ = tail_;
        return corrupt_index("ring head out of range");
      }
      if (head_seen_ == tail_) return std::size_t{0};
    }
    const std::size_t count = std::min<std::size_t>(head_seen_ - tail_, out.size());
    const std::size_t first = tail_ & mask_;
    const std::size_t before_wrap = std::min<std::size_t>(count, capacity_ - first);
    std::copy_n(cells_ + first, before_wrap, out.data());
    std::copy_n(cells_, count - before_wrap, out.data() + before_wrap);
    tail_ += count;
    layout_->tail.value.store(tail_, std::memory_order_release);
    if (counters_ != nullptr) {
      counters_->add(Counter::messages_in, count);
      counters_->add(Counter::bursts_in);
    }
    return count;
  }

  // True when a message is waiting. Does not consume; used for the last check before sleeping.
  bool has_input() const {
    return layout_->head.value.load(std::memory_order_acquire) != tail_;
  }

  std::uint64_t consumed() const { return tail_; }
  std::uint64_t producer_incarnation() const {
    return layout_->header.producer_incarnation.load(std::memory_order_acquire);
  }

 private:
  std::uint64_t tail_ = 0;       // our own index
  std::uint64_t head_seen_ = 0;  // cached copy of the producer's index
};

}  // namespace flotilla
