// A channel is a pair of rings in one shared region, one in each direction. Side `a` produces into
// the first ring and consumes the second; side `b` the other way round.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "dataplane/ring.hpp"

namespace flotilla {

enum class ChannelSide { a, b };

struct ChannelEnd {
  RingProducer out;
  RingConsumer in;
};

// Bytes a channel of `capacity` messages per direction needs.
constexpr std::size_t channel_bytes(std::uint32_t capacity) {
  return 2 * RingLayout::bytes_for(capacity);
}

Status format_channel(std::span<std::byte> memory, std::uint32_t capacity);

// Attaches one end. `peer_bell` is the doorbell of the process at the other end, rung when this end
// sends; `counters` is this end's own block (may be null).
Result<ChannelEnd> attach_channel(std::span<std::byte> memory, std::uint32_t capacity,
                                  ChannelSide side, std::uint64_t incarnation, Doorbell* peer_bell,
                                  CounterBlock* counters);

}  // namespace flotilla
