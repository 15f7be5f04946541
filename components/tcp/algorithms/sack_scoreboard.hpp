// Selective acknowledgment state, both sides, fixed-size POD (lives in a connection's control
// block):
// - SackScoreboard: the sender's scoreboard of RFC 6675 (what the peer SACKed above snd_una,
//   IsLost, pipe, NextSeg).
// - OutOfOrderRanges: the receiver's record of out-of-order data it holds, and the SACK blocks
//   it reports (RFC 2018).
// Ranges are half-open [left, right) in sequence space; comparisons use seq.hpp.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <type_traits>
#include <utility>

namespace flotilla::tcp {

struct SeqRange {
  std::uint32_t left = 0;
  std::uint32_t right = 0;  // exclusive
};

using SackBlock = std::pair<std::uint32_t, std::uint32_t>;  // [left, right) as on the wire

class SackScoreboard {
 public:
  static constexpr std::size_t kCapacity = 32;
  static constexpr std::uint32_t kDupThresh = 3;  // RFC 6675 2

  void reset(std::uint32_t snd_una);
  // Takes a cumulative ACK and its SACK blocks. Blocks entirely at or below snd_una (D-SACKs,
  // RFC 2883, or stale ones) are ignored, others trimmed to start at snd_una; empty or inverted
  // blocks are ignored. The caller has already dropped blocks beyond snd_nxt (untrusted input).
  // When the blocks do not fit in kCapacity disjoint ranges, the leftmost (lowest) ranges are
  // forgotten: their data then counts as not SACKed and is at worst retransmitted again, which is
  // safe, while the highest ranges drive loss detection (IsLost) and must stay.
  void on_ack(std::uint32_t snd_una, std::span<const SackBlock> blocks);

  bool is_sacked(std::uint32_t seq) const;
  // RFC 6675 4 IsLost(seq): DupThresh discontiguous SACKed ranges above seq, or more than
  // (DupThresh - 1) * MSS bytes SACKed above it.
  bool is_lost(std::uint32_t seq, std::uint32_t mss) const;
  // RFC 6675 4 SetPipe, in bytes: every byte in [snd_una, snd_nxt) not SACKed counts once if not
  // lost, and once more if it was retransmitted, i.e. lies below `high_rxt` (the end, exclusive,
  // of what was retransmitted in this recovery; snd_una when nothing was).
  std::uint64_t pipe(std::uint32_t snd_una, std::uint32_t snd_nxt, std::uint32_t high_rxt,
                     std::uint32_t mss) const;
  // RFC 6675 4 NextSeg rule 1: the first not-SACKed, not-yet-retransmitted (>= high_rxt) range
  // below the highest SACKed byte that IsLost, as [seq, seq + len) with len <= MSS.
  std::optional<SackBlock> next_segment(std::uint32_t snd_una, std::uint32_t snd_nxt,
                                        std::uint32_t high_rxt, std::uint32_t mss) const;
  // RFC 6675 4 NextSeg rule 3: the same without the IsLost condition. Rule 2 (send new data)
  // comes before it, so call this only when rule 1 found nothing and there is no new data.
  std::optional<SackBlock> next_rescue_segment(std::uint32_t snd_una, std::uint32_t snd_nxt,
                                               std::uint32_t high_rxt, std::uint32_t mss) const;

  // The end (exclusive) of the highest SACKed range; snd_una when nothing is SACKed.
  std::uint32_t highest_sacked() const;
  std::uint64_t sacked_bytes() const;
  bool empty() const { return count_ == 0; }
  std::size_t range_count() const { return count_; }
  SeqRange range(std::size_t index) const { return ranges_[index]; }  // ascending order

 private:
  void drop_below(std::uint32_t snd_una);
  void insert(SeqRange block);
  std::optional<SackBlock> first_hole(std::uint32_t snd_una, std::uint32_t snd_nxt,
                                      std::uint32_t high_rxt, std::uint32_t mss,
                                      bool must_be_lost) const;

  std::array<SeqRange, kCapacity> ranges_{};  // ascending, disjoint, not adjacent
  std::uint32_t count_ = 0;
  std::uint32_t snd_una_ = 0;
};

class OutOfOrderRanges {
 public:
  static constexpr std::size_t kCapacity = 8;

  void clear() { count_ = 0; }
  // Records data [left, right) held beyond rcv_nxt, merged with the ranges it overlaps or
  // touches; it becomes the most recent range. false when it is empty/inverted or when all
  // kCapacity ranges are taken and it merges with none: the caller then drops the segment (the
  // peer retransmits it), rather than forget data it already reported (reneging, RFC 2018 8).
  bool add(std::uint32_t left, std::uint32_t right);
  // Returns the new rcv_nxt: rcv_nxt extended through every range that now touches it; ranges
  // at or below it are forgotten.
  std::uint32_t advance(std::uint32_t rcv_nxt);
  // RFC 2018 4: the block holding `most_recent_left` (the latest segment) first, then the others
  // from the most recently changed. Writes at most out.size() blocks; returns how many.
  std::size_t sack_blocks(std::span<SackBlock> out, std::uint32_t most_recent_left) const;

  bool empty() const { return count_ == 0; }
  std::size_t count() const { return count_; }

 private:
  void remove(std::size_t index);

  std::array<SeqRange, kCapacity> ranges_{};  // most recent first
  std::uint32_t count_ = 0;
};

// Control-block state in shared memory: copyable as bytes, no pointers.
static_assert(std::is_trivially_copyable_v<SeqRange> && std::is_standard_layout_v<SeqRange>);
static_assert(std::is_trivially_copyable_v<SackScoreboard> &&
              std::is_standard_layout_v<SackScoreboard>);
static_assert(std::is_trivially_copyable_v<OutOfOrderRanges> &&
              std::is_standard_layout_v<OutOfOrderRanges>);

}  // namespace flotilla::tcp
