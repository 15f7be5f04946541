#include "dataplane/ring.hpp"

#include <bit>
#include <new>

namespace flotilla {

Status format_ring(std::span<std::byte> memory, std::uint32_t capacity) {
  if (capacity < 2 || capacity > kMaxRingCapacity || !std::has_single_bit(capacity)) {
    return Error{Errc::invalid_argument, 0, "ring capacity must be a power of two"};
  }
  if (memory.size() < RingLayout::bytes_for(capacity) ||
      reinterpret_cast<std::uintptr_t>(memory.data()) % kCacheLine != 0) {
    return Error{Errc::invalid_argument, 0, "ring memory too small or misaligned"};
  }
  auto* layout = new (memory.data()) RingLayout{};
  layout->header.magic = RingHeader::kMagic;
  layout->header.version = RingHeader::kVersion;
  layout->header.capacity = capacity;
  layout->header.producer_incarnation.store(0, std::memory_order_relaxed);
  layout->header.consumer_incarnation.store(0, std::memory_order_relaxed);
  layout->head.value.store(0, std::memory_order_relaxed);
  layout->tail.value.store(0, std::memory_order_release);
  return {};
}

Result<RingEnd::Attached> RingEnd::adopt(std::span<std::byte> memory, CounterBlock* counters) {
  if (memory.size() < RingLayout::cells_offset() ||
      reinterpret_cast<std::uintptr_t>(memory.data()) % kCacheLine != 0) {
    return Error{Errc::invalid_argument, 0, "ring memory too small or misaligned"};
  }
  const auto refuse = [counters](Errc code, const char* what) {
    if (counters != nullptr) counters->add(Counter::corrupt);
    return Error{code, 0, what};
  };
  auto* layout = reinterpret_cast<RingLayout*>(memory.data());
  // Read each shared field once: the other end may be rewriting them as we look.
  const std::uint64_t magic = layout->header.magic;
  const std::uint32_t version = layout->header.version;
  const std::uint32_t capacity = layout->header.capacity;
  if (magic != RingHeader::kMagic || version != RingHeader::kVersion) {
    return refuse(Errc::bad_layout, "ring header magic/version");
  }
  if (capacity < 2 || capacity > kMaxRingCapacity || !std::has_single_bit(capacity) ||
      RingLayout::bytes_for(capacity) > memory.size()) {
    return refuse(Errc::bad_layout, "ring capacity");
  }
  const std::uint64_t head = layout->head.value.load(std::memory_order_acquire);
  const std::uint64_t tail = layout->tail.value.load(std::memory_order_acquire);
  if (head - tail > capacity) return refuse(Errc::corrupt_index, "ring indices out of range");

  layout_ = layout;
  cells_ = reinterpret_cast<Message*>(memory.data() + RingLayout::cells_offset());
  capacity_ = capacity;
  mask_ = capacity - 1;
  counters_ = counters;
  return Attached{head, tail};
}

Result<RingProducer> RingProducer::attach(std::span<std::byte> memory, std::uint64_t incarnation,
                                          Doorbell* consumer_bell, CounterBlock* counters) {
  RingProducer producer;
  auto indices = producer.adopt(memory, counters);
  if (!indices) return indices.error();
  producer.head_ = indices->head;
  producer.tail_seen_ = indices->tail;
  producer.bell_ = consumer_bell;
  producer.layout_->header.producer_incarnation.store(incarnation, std::memory_order_release);
  return producer;
}

Result<RingConsumer> RingConsumer::attach(std::span<std::byte> memory, std::uint64_t incarnation,
                                          CounterBlock* counters) {
  RingConsumer consumer;
  auto indices = consumer.adopt(memory, counters);
  if (!indices) return indices.error();
  consumer.tail_ = indices->tail;
  consumer.head_seen_ = indices->tail;
  consumer.layout_->header.consumer_incarnation.store(incarnation, std::memory_order_release);
  return consumer;
}

}  // namespace flotilla
