// IPv4 fragment reassembly with fixed memory and a time limit. All memory is allocated in the
// constructor: max_datagrams slots of max_datagram_bytes, each with a bitmap of the 8-byte blocks
// received and of where each fragment started.
//
// Rules:
//  - Overlaps drop the whole datagram (RFC 5722 style), including a fragment past the end the
//    last fragment set, or a last fragment that ends before data already received.
//  - An EXACT duplicate (same offset, same length, same more-fragments meaning, same bytes) is
//    harmless: it is ignored and counted in `duplicates` (retransmitted or duplicated fragments
//    are normal on real networks). A duplicate with different bytes is an overlap.
//  - bad_fragment: offset not a multiple of 8; a non-last fragment that is empty or whose length
//    is not a multiple of 8; an empty "fragment" at offset 0 that is also the last.
//  - too_large: the fragment ends past max_datagram_bytes; the datagram is dropped.
//  - no_slot: a new datagram while every slot is busy; the fragment is dropped (busy slots are not
//    evicted, so a flood cannot push out datagrams in progress; it only waits for the timeout).
//  - A datagram is dropped timeout_ms after its FIRST fragment (expire(), or noticed by offer()).
//    So endless fragments cannot grow memory: they fill at most one slot until it times out.
//  - offset 0 without more fragments is not a fragment: offer() returns complete with the payload.
// On complete, the slot is freed at once; `datagram` points into it and stays valid until the
// next call to offer() (which may reuse the slot). expire() does not touch slot bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace flotilla::ip {

struct FragmentKey {
  std::uint32_t source = 0;
  std::uint32_t destination = 0;
  std::uint16_t identification = 0;
  std::uint8_t protocol = 0;

  friend bool operator==(const FragmentKey&, const FragmentKey&) = default;
};

struct ReassemblyOutcome {
  enum class Kind { incomplete, complete, overlap, too_large, no_slot, bad_fragment } kind;
  std::span<const std::byte> datagram;  // complete: the whole payload; valid until next offer()
};

class Reassembler {
 public:
  explicit Reassembler(std::size_t max_datagrams = 16, std::size_t max_datagram_bytes = 1960,
                       std::uint64_t timeout_ms = 5000);

  ReassemblyOutcome offer(const FragmentKey& key, std::size_t offset_bytes, bool more_fragments,
                          std::span<const std::byte> payload, std::uint64_t now_ms);
  // Drops datagrams whose first fragment came timeout_ms or more ago. Returns how many.
  std::size_t expire(std::uint64_t now_ms);

  std::size_t in_progress() const;  // busy slots
  std::size_t slot_count() const { return slots_.size(); }

  // Counters.
  std::uint64_t completed = 0;
  std::uint64_t timed_out = 0;
  std::uint64_t overlaps = 0;
  std::uint64_t too_large = 0;
  std::uint64_t no_slot = 0;
  std::uint64_t duplicates = 0;
  std::uint64_t bad_fragments = 0;

 private:
  struct Slot {
    bool busy = false;
    bool has_last = false;
    FragmentKey key;
    std::uint64_t first_seen = 0;
    std::size_t total = 0;     // has_last: the datagram's length
    std::size_t received = 0;  // bytes, no overlaps so they never double count
    std::size_t max_end = 0;
    std::vector<std::byte> data;
    std::vector<bool> covered;  // per 8-byte block
    std::vector<bool> starts;   // a fragment starts at this block (one extra at the end)
  };

  Slot* find(const FragmentKey& key, std::uint64_t now_ms);
  Slot* take_free(const FragmentKey& key, std::uint64_t now_ms);
  bool timed_out_at(const Slot& slot, std::uint64_t now_ms) const {
    return now_ms - slot.first_seen >= timeout_ms_;
  }
  void release(Slot& slot) { slot.busy = false; }
  static bool is_exact_duplicate(const Slot& slot, std::size_t offset, std::size_t end,
                                 bool more_fragments, std::span<const std::byte> payload);

  std::vector<Slot> slots_;
  std::size_t max_bytes_;
  std::uint64_t timeout_ms_;
};

}  // namespace flotilla::ip
