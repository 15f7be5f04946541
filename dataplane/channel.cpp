#include "dataplane/channel.hpp"

namespace flotilla {
namespace {

struct RingPair {
  std::span<std::byte> first;
  std::span<std::byte> second;
};

Result<RingPair> split(std::span<std::byte> memory, std::uint32_t capacity) {
  if (capacity > kMaxRingCapacity || memory.size() < channel_bytes(capacity)) {
    return Error{Errc::invalid_argument, 0, "channel memory too small"};
  }
  const std::size_t ring_bytes = RingLayout::bytes_for(capacity);
  return RingPair{memory.subspan(0, ring_bytes), memory.subspan(ring_bytes, ring_bytes)};
}

}  // namespace

Status format_channel(std::span<std::byte> memory, std::uint32_t capacity) {
  auto rings = split(memory, capacity);
  if (!rings) return rings.error();
  if (auto status = format_ring(rings->first, capacity); !status) return status;
  return format_ring(rings->second, capacity);
}

Result<ChannelEnd> attach_channel(std::span<std::byte> memory, std::uint32_t capacity,
                                  ChannelSide side, std::uint64_t incarnation, Doorbell* peer_bell,
                                  CounterBlock* counters) {
  auto rings = split(memory, capacity);
  if (!rings) return rings.error();
  const auto out_memory = side == ChannelSide::a ? rings->first : rings->second;
  const auto in_memory = side == ChannelSide::a ? rings->second : rings->first;
  auto out = RingProducer::attach(out_memory, incarnation, peer_bell, counters);
  if (!out) return out.error();
  auto in = RingConsumer::attach(in_memory, incarnation, counters);
  if (!in) return in.error();
  if (out->capacity() != capacity || in->capacity() != capacity) {
    return Error{Errc::bad_layout, 0, "channel capacity differs from the ring headers"};
  }
  return ChannelEnd{out.value(), in.value()};
}

}  // namespace flotilla
