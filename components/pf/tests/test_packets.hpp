// Helpers the pf tests share: addresses, packets, rule sets that must parse.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <memory>
#include <span>

#include "components/pf/rules.hpp"

namespace flotilla::pf::testing {

constexpr std::uint32_t ip(std::uint32_t a, std::uint32_t b, std::uint32_t c, std::uint32_t d) {
  return (a << 24) | (b << 16) | (c << 8) | d;
}

inline PacketSummary tcp(Direction direction, std::uint32_t source, std::uint16_t source_port,
                         std::uint32_t destination, std::uint16_t destination_port,
                         std::uint8_t flags = kTcpAck) {
  return PacketSummary{direction, kProtocolTcp, source, destination, source_port,
                       destination_port, true, flags};
}

inline PacketSummary udp(Direction direction, std::uint32_t source, std::uint16_t source_port,
                         std::uint32_t destination, std::uint16_t destination_port) {
  return PacketSummary{direction, kProtocolUdp, source, destination, source_port,
                       destination_port, true, 0};
}

inline PacketSummary icmp(Direction direction, std::uint32_t source, std::uint32_t destination) {
  return PacketSummary{direction, kProtocolIcmp, source, destination, 0, 0, false, 0};
}

// The same connection the other way.
inline PacketSummary reply_to(const PacketSummary& packet) {
  PacketSummary reply = packet;
  reply.direction = packet.direction == Direction::in ? Direction::out : Direction::in;
  reply.source = packet.destination;
  reply.destination = packet.source;
  reply.source_port = packet.destination_port;
  reply.destination_port = packet.source_port;
  return reply;
}

inline RuleSet must_parse(std::string_view text) {
  auto parsed = parse_rules(text, "test.rules");
  if (auto* error = std::get_if<RuleError>(&parsed)) {
    ADD_FAILURE() << error->message;
    return RuleSet{};
  }
  return std::get<RuleSet>(std::move(parsed));
}

// A 64-byte aligned buffer standing in for a state-store region.
class TestRegion {
 public:
  explicit TestRegion(std::size_t bytes)
      : bytes_(bytes), memory_(static_cast<std::byte*>(::operator new(bytes, std::align_val_t{64}))) {
    std::fill_n(memory_.get(), bytes, std::byte{0});
  }
  std::span<std::byte> span() { return {memory_.get(), bytes_}; }

 private:
  struct Free {
    void operator()(std::byte* p) const { ::operator delete(p, std::align_val_t{64}); }
  };
  std::size_t bytes_;
  std::unique_ptr<std::byte, Free> memory_;
};

}  // namespace flotilla::pf::testing
