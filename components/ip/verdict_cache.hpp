// The filter's pass verdicts, remembered per flow so that most packets skip the round trip to pf
// (issue 16: IP asked pf about every packet, 3-4 messages and 4 pool hand-offs each).
//
// pf stays the authority: it marks a verdict cacheable only when its rules and states decide that
// flow the same way for every packet (a pass of a TCP or UDP packet that carries no SYN, FIN or RST;
// blocks are never cached, so a flood of blocked packets cannot fill the cache). IP still asks pf
// about SYN, FIN and RST, which move pf's connection states, and asks again about every flow once
// an entry is kLifetimeMs old, which keeps pf's states fresh (its shortest timeout is 30 s) and
// bounds how long a changed decision goes unseen. A packet never overtakes one of its flow still
// waiting for a verdict: an entry with verdicts pending serves no packet.
//
// Private memory: a restarted IP starts empty and asks pf again. Direct-mapped, no allocation.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

namespace flotilla::ip {

class VerdictCache {
 public:
  static constexpr std::size_t kEntries = 4096;  // a power of two
  static constexpr std::uint64_t kLifetimeMs = 250;

  // What a verdict is about: one direction of one flow.
  struct FlowKey {
    std::uint32_t source = 0;
    std::uint32_t destination = 0;
    std::uint16_t source_port = 0;
    std::uint16_t destination_port = 0;
    std::uint8_t protocol = 0;
    bool inbound = false;
    friend bool operator==(const FlowKey&, const FlowKey&) = default;
  };

  // The flow of a whole IPv4 packet (starting at its header, already validated by IP), and whether
  // it is a packet pf must see (a TCP SYN, FIN or RST). nullopt for anything but TCP and UDP with
  // their ports.
  struct Lookup {
    FlowKey key;
    bool must_ask = false;
  };
  static std::optional<Lookup> flow_of(std::span<std::byte> packet, bool inbound);

  // Whether the packet may pass without asking pf.
  bool passes(const Lookup& lookup, std::uint64_t now_ms) const;
  // A packet of this flow went to pf.
  void asked(const FlowKey& key);
  // pf answered about a packet of this flow; `cacheable` only for a pass pf marked so.
  void answered(const FlowKey& key, bool cacheable, std::uint64_t now_ms);

 private:
  struct Entry {
    FlowKey key;
    std::uint32_t pending = 0;  // verdicts asked and not yet answered
    std::uint64_t valid_until_ms = 0;
  };
  static std::size_t slot_of(const FlowKey& key);

  std::array<Entry, kEntries> entries_{};
};

}  // namespace flotilla::ip
