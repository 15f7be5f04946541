#include "dataplane/ring.hpp"

#include <bit>
#include <new>

namespace flotilla {
namespace {

struct AttachedRing {
  RingLayout* layout;
  std::uint64_t capacity;
  std::uint64_t head;
  std::uint64_t tail;
};

Result<AttachedRing> validate(std::span<std::byte> memory) {
  if (memory.size() < RingLayout::slots_offset() ||
      reinterpret_cast<std::uintptr_t>(memory.data()) % kCacheLine != 0) {
    return Error{Errc::invalid_argument, 0, "ring memory too small or misaligned"};
  }
  auto* layout = reinterpret_cast<RingLayout*>(memory.data());
  // Read each shared field once: the other end may be rewriting them as we look.
  const std::uint64_t magic = layout->header.magic;
  const std::uint32_t version = layout->header.version;
  const std::uint32_t capacity = layout->header.capacity;
  if (magic != RingHeader::kMagic || version != RingHeader::kVersion) {
    return Error{Errc::bad_layout, 0, "ring header magic/version"};
  }
  if (capacity < 2 || capacity > kMaxRingCapacity || !std::has_single_bit(capacity) ||
      RingLayout::bytes_for(capacity) > memory.size()) {
    return Error{Errc::bad_layout, 0, "ring capacity"};
  }
  const std::uint64_t head = layout->head.value.load(std::memory_order_acquire);
  const std::uint64_t tail = layout->tail.value.load(std::memory_order_acquire);
  if (head - tail > capacity) return Error{Errc::corrupt_index, 0, "ring indices out of range"};
  return AttachedRing{layout, capacity, head, tail};
}

}  // namespace

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

Result<RingProducer> RingProducer::attach(std::span<std::byte> memory, std::uint64_t incarnation,
                                          Doorbell* consumer_bell, CounterBlock* counters) {
  auto ring = validate(memory);
  if (!ring) {
    if (counters != nullptr && ring.error().code != Errc::invalid_argument) {
      counters->add(Counter::corrupt);
    }
    return ring.error();
  }
  RingProducer producer;
  producer.layout_ = ring->layout;
  producer.slots_ = reinterpret_cast<Message*>(memory.data() + RingLayout::slots_offset());
  producer.capacity_ = ring->capacity;
  producer.mask_ = ring->capacity - 1;
  producer.head_ = ring->head;
  producer.tail_seen_ = ring->tail;
  producer.bell_ = consumer_bell;
  producer.counters_ = counters;
  ring->layout->header.producer_incarnation.store(incarnation, std::memory_order_release);
  return producer;
}

Result<RingConsumer> RingConsumer::attach(std::span<std::byte> memory, std::uint64_t incarnation,
                                          CounterBlock* counters) {
  auto ring = validate(memory);
  if (!ring) {
    if (counters != nullptr && ring.error().code != Errc::invalid_argument) {
      counters->add(Counter::corrupt);
    }
    return ring.error();
  }
  RingConsumer consumer;
  consumer.layout_ = ring->layout;
  consumer.slots_ = reinterpret_cast<Message*>(memory.data() + RingLayout::slots_offset());
  consumer.capacity_ = ring->capacity;
  consumer.mask_ = ring->capacity - 1;
  consumer.tail_ = ring->tail;
  consumer.head_seen_ = ring->tail;
  consumer.counters_ = counters;
  ring->layout->header.consumer_incarnation.store(incarnation, std::memory_order_release);
  return consumer;
}

}  // namespace flotilla
