// A single-producer single-consumer byte ring in memory shared by two processes that do not trust
// each other: a TCP socket's send ring (the application produces, the TCP replica consumes) and its
// receive ring (the other way round).
//
// Indices are 64-bit stream positions that only grow (bytes ever published / ever consumed), so
// `tail - head` is the fill level and a position maps to byte `position & (capacity - 1)`. Each
// side keeps its OWN index privately and only stores it to shared memory; it never reloads it from
// there, so the other process cannot move it. The other side's index is loaded and checked: a value
// that is behind the last one seen or claims more than the capacity marks the ring corrupt, and a
// corrupt ring reports nothing readable and no free space from then on (the owner then fails the
// socket; nothing here crashes).
//
// The consumer may read anywhere in [head, tail) before it consumes (TCP retransmits from its send
// ring), and the producer may write ahead of its tail before it publishes (TCP places out-of-order
// data in the receive ring, then publishes once the hole is filled).
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace flotilla::formats {

// The two shared indices, each on its own cache line so the two sides never write the same line.
struct alignas(64) ByteRingIndices {
  std::atomic<std::uint64_t> tail{0};  // written by the producer only
  std::uint8_t tail_pad[56];
  std::atomic<std::uint64_t> head{0};  // written by the consumer only
  std::uint8_t head_pad[56];
};
static_assert(sizeof(ByteRingIndices) == 128);

namespace detail {

// Copies between a stream position in the ring and linear bytes, in at most two pieces.
inline void copy_out(std::span<const std::byte> data, std::uint64_t position, std::span<std::byte> out) {
  const std::size_t mask = data.size() - 1;
  const std::size_t start = static_cast<std::size_t>(position) & mask;
  const std::size_t first = std::min(out.size(), data.size() - start);
  std::memcpy(out.data(), data.data() + start, first);
  std::memcpy(out.data() + first, data.data(), out.size() - first);
}

inline void copy_in(std::span<std::byte> data, std::uint64_t position, std::span<const std::byte> in) {
  const std::size_t mask = data.size() - 1;
  const std::size_t start = static_cast<std::size_t>(position) & mask;
  const std::size_t first = std::min(in.size(), data.size() - start);
  std::memcpy(data.data() + start, in.data(), first);
  std::memcpy(data.data(), in.data() + first, in.size() - first);
}

}  // namespace detail

// The producer's view. `data.size()` must be a power of two (valid() is false otherwise).
class ByteRingProducer {
 public:
  ByteRingProducer() = default;
  // `tail` is where this side's stream stands now (0 for a fresh ring); it is stored to shared
  // memory here so both sides agree. A ring taken over at a later tail may still hold unread bytes,
  // so the first head seen may be up to a capacity behind it.
  ByteRingProducer(ByteRingIndices* indices, std::span<std::byte> data, std::uint64_t tail = 0)
      : indices_(indices), data_(data), tail_(tail), seen_head_(tail > data.size() ? tail - data.size() : 0) {
    if (!std::has_single_bit(data.size())) indices_ = nullptr;
    if (indices_ != nullptr) indices_->tail.store(tail_, std::memory_order_release);
  }

  bool valid() const { return indices_ != nullptr; }
  bool corrupt() const { return corrupt_; }
  std::size_t capacity() const { return data_.size(); }
  std::uint64_t tail() const { return tail_; }

  // Bytes that may be written now (0 when corrupt).
  std::size_t free_space() {
    if (indices_ == nullptr || corrupt_) return 0;
    const std::uint64_t head = indices_->head.load(std::memory_order_acquire);
    if (head < seen_head_ || head > tail_ || tail_ - head > data_.size()) {
      corrupt_ = true;
      return 0;
    }
    seen_head_ = head;
    return data_.size() - static_cast<std::size_t>(tail_ - head);
  }

  // Copies as much of `bytes` as fits and publishes it. Returns the bytes written.
  std::size_t write(std::span<const std::byte> bytes) {
    const std::size_t count = std::min(bytes.size(), free_space());
    if (count == 0) return 0;
    detail::copy_in(data_, tail_, bytes.first(count));
    publish(count);
    return count;
  }

  // Writes `bytes` at `offset` past the tail without publishing them. False (nothing written) when
  // they do not fit the free space.
  bool write_ahead(std::size_t offset, std::span<const std::byte> bytes) {
    const std::size_t space = free_space();
    if (offset > space || bytes.size() > space - offset) return false;
    detail::copy_in(data_, tail_ + offset, bytes);
    return true;
  }

  // Makes `count` more bytes (written by write_ahead) visible to the consumer. The caller keeps
  // count <= the free space it saw.
  void publish(std::size_t count) {
    tail_ += count;
    indices_->tail.store(tail_, std::memory_order_release);
  }

 private:
  ByteRingIndices* indices_ = nullptr;
  std::span<std::byte> data_;
  std::uint64_t tail_ = 0;
  std::uint64_t seen_head_ = 0;
  bool corrupt_ = false;
};

// The consumer's view. `data.size()` must be a power of two (valid() is false otherwise).
class ByteRingConsumer {
 public:
  ByteRingConsumer() = default;
  // `head` is where this side's stream stands now (0 for a fresh ring); stored to shared memory.
  ByteRingConsumer(ByteRingIndices* indices, std::span<const std::byte> data, std::uint64_t head = 0)
      : indices_(indices), data_(data), head_(head), seen_tail_(head) {
    if (!std::has_single_bit(data.size())) indices_ = nullptr;
    if (indices_ != nullptr) indices_->head.store(head_, std::memory_order_release);
  }

  bool valid() const { return indices_ != nullptr; }
  bool corrupt() const { return corrupt_; }
  std::size_t capacity() const { return data_.size(); }
  std::uint64_t head() const { return head_; }

  // Bytes published and not yet consumed (0 when corrupt).
  std::size_t readable() {
    if (indices_ == nullptr || corrupt_) return 0;
    const std::uint64_t tail = indices_->tail.load(std::memory_order_acquire);
    if (tail < seen_tail_ || tail < head_ || tail - head_ > data_.size()) {
      corrupt_ = true;
      return 0;
    }
    seen_tail_ = tail;
    return static_cast<std::size_t>(tail - head_);
  }
  // What readable() last saw, without loading the shared index again.
  std::size_t readable_seen() const { return corrupt_ ? 0 : static_cast<std::size_t>(seen_tail_ - head_); }

  // Copies out.size() bytes starting `offset` bytes past the head; false (nothing copied) unless
  // all of them were published (as of the last readable() call).
  bool peek(std::size_t offset, std::span<std::byte> out) const {
    const std::size_t available = readable_seen();
    if (offset > available || out.size() > available - offset) return false;
    detail::copy_out(data_, head_ + offset, out);
    return true;
  }

  // Frees `count` bytes; count <= readable_seen() (clamped to it).
  void consume(std::size_t count) {
    head_ += std::min(count, readable_seen());
    indices_->head.store(head_, std::memory_order_release);
  }

  // Copies up to out.size() bytes and consumes them. Returns the bytes read.
  std::size_t read(std::span<std::byte> out) {
    const std::size_t count = std::min(out.size(), readable());
    if (count == 0) return 0;
    detail::copy_out(data_, head_, out.first(count));
    consume(count);
    return count;
  }

 private:
  ByteRingIndices* indices_ = nullptr;
  std::span<const std::byte> data_;
  std::uint64_t head_ = 0;
  std::uint64_t seen_tail_ = 0;
  bool corrupt_ = false;
};

}  // namespace flotilla::formats
