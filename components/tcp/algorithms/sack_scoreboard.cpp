// SACK scoreboard (RFC 6675) and out-of-order ranges (RFC 2018); see sack_scoreboard.hpp.
#include "components/tcp/algorithms/sack_scoreboard.hpp"

#include <algorithm>

#include "components/tcp/algorithms/seq.hpp"

namespace flotilla::tcp {

namespace {
// Overlapping or touching: one range can stand for both.
bool mergeable(const SeqRange& a, const SeqRange& b) {
  return seq_le(a.left, b.right) && seq_le(b.left, a.right);
}
SeqRange merged(const SeqRange& a, const SeqRange& b) {
  return {seq_min(a.left, b.left), seq_max(a.right, b.right)};
}
}  // namespace

// ---- SackScoreboard ----

void SackScoreboard::reset(std::uint32_t snd_una) {
  count_ = 0;
  snd_una_ = snd_una;
}

void SackScoreboard::drop_below(std::uint32_t snd_una) {
  if (seq_gt(snd_una, snd_una_)) snd_una_ = snd_una;
  std::uint32_t kept = 0;
  for (std::uint32_t i = 0; i < count_; ++i) {
    SeqRange range = ranges_[i];
    if (seq_le(range.right, snd_una_)) continue;  // cumulatively acknowledged
    range.left = seq_max(range.left, snd_una_);
    ranges_[kept++] = range;
  }
  count_ = kept;
}

void SackScoreboard::insert(SeqRange block) {
  // Ranges are few (kCapacity), so: place the block in order, then merge neighbours.
  std::array<SeqRange, kCapacity + 1> all{};
  std::uint32_t total = 0;
  bool placed = false;
  for (std::uint32_t i = 0; i < count_; ++i) {
    if (!placed && seq_lt(block.left, ranges_[i].left)) {
      all[total++] = block;
      placed = true;
    }
    all[total++] = ranges_[i];
  }
  if (!placed) all[total++] = block;

  std::uint32_t merged_count = 0;
  for (std::uint32_t i = 0; i < total; ++i) {
    if (merged_count > 0 && mergeable(all[merged_count - 1], all[i])) {
      all[merged_count - 1] = merged(all[merged_count - 1], all[i]);
    } else {
      all[merged_count++] = all[i];
    }
  }
  // Overflow: forget the leftmost range (see on_ack).
  const std::uint32_t first = merged_count > kCapacity ? merged_count - kCapacity : 0;
  count_ = merged_count - first;
  std::copy_n(all.begin() + first, count_, ranges_.begin());
}

void SackScoreboard::on_ack(std::uint32_t snd_una, std::span<const SackBlock> blocks) {
  drop_below(snd_una);
  for (const auto& [left, right] : blocks) {
    if (!seq_lt(left, right)) continue;     // empty or inverted
    if (seq_le(right, snd_una_)) continue;  // D-SACK or stale (RFC 6675 5, RFC 2883)
    insert({seq_max(left, snd_una_), right});
  }
}

bool SackScoreboard::is_sacked(std::uint32_t seq) const {
  for (std::uint32_t i = 0; i < count_; ++i) {
    if (seq_le(ranges_[i].left, seq) && seq_lt(seq, ranges_[i].right)) return true;
  }
  return false;
}

bool SackScoreboard::is_lost(std::uint32_t seq, std::uint32_t mss) const {
  std::uint32_t ranges_above = 0;
  std::uint64_t bytes_above = 0;
  for (std::uint32_t i = 0; i < count_; ++i) {
    const SeqRange& range = ranges_[i];
    if (seq_le(range.right, seq + 1)) continue;  // nothing above seq
    ++ranges_above;
    bytes_above += static_cast<std::uint32_t>(range.right - seq_max(range.left, seq + 1));
  }
  return ranges_above >= kDupThresh || bytes_above > std::uint64_t{kDupThresh - 1} * mss;
}

std::uint64_t SackScoreboard::pipe(std::uint32_t snd_una, std::uint32_t snd_nxt,
                                   std::uint32_t high_rxt, std::uint32_t mss) const {
  // Within one hole (a run of not-SACKed bytes) the SACKed data above is the same for every
  // byte, so IsLost is decided once per hole rather than per segment.
  std::uint64_t in_flight = 0;
  auto count_hole = [&](std::uint32_t from, std::uint32_t to) {
    to = seq_min(to, snd_nxt);
    if (!seq_lt(from, to)) return;
    if (!is_lost(from, mss)) in_flight += static_cast<std::uint32_t>(to - from);
    const std::uint32_t retransmitted_end = seq_min(to, high_rxt);
    if (seq_lt(from, retransmitted_end))
      in_flight += static_cast<std::uint32_t>(retransmitted_end - from);
  };
  std::uint32_t cursor = seq_max(snd_una, snd_una_);
  for (std::uint32_t i = 0; i < count_; ++i) {
    count_hole(cursor, ranges_[i].left);
    cursor = seq_max(cursor, ranges_[i].right);
  }
  count_hole(cursor, snd_nxt);
  return in_flight;
}

std::optional<SackBlock> SackScoreboard::first_hole(std::uint32_t snd_una, std::uint32_t snd_nxt,
                                                    std::uint32_t high_rxt, std::uint32_t mss,
                                                    bool must_be_lost) const {
  // Only holes below a SACKed range (RFC 6675 NextSeg 1.b: below the highest SACKed byte).
  std::uint32_t cursor = seq_max(snd_una, snd_una_);
  for (std::uint32_t i = 0; i < count_; ++i) {
    const std::uint32_t hole_end = seq_min(ranges_[i].left, snd_nxt);
    const std::uint32_t start = seq_max(cursor, high_rxt);  // 1.a: not yet retransmitted
    cursor = seq_max(cursor, ranges_[i].right);
    if (!seq_lt(start, hole_end)) continue;
    // IsLost only gets weaker going up (less SACKed above), so the first hole that fails it
    // ends the search (1.c).
    if (must_be_lost && !is_lost(start, mss)) return std::nullopt;
    const std::uint32_t length = std::min<std::uint32_t>(hole_end - start, mss);
    return SackBlock{start, start + length};
  }
  return std::nullopt;
}

std::optional<SackBlock> SackScoreboard::next_segment(std::uint32_t snd_una, std::uint32_t snd_nxt,
                                                      std::uint32_t high_rxt,
                                                      std::uint32_t mss) const {
  return first_hole(snd_una, snd_nxt, high_rxt, mss, true);
}

std::optional<SackBlock> SackScoreboard::next_rescue_segment(std::uint32_t snd_una,
                                                             std::uint32_t snd_nxt,
                                                             std::uint32_t high_rxt,
                                                             std::uint32_t mss) const {
  return first_hole(snd_una, snd_nxt, high_rxt, mss, false);
}

std::uint32_t SackScoreboard::highest_sacked() const {
  return count_ == 0 ? snd_una_ : ranges_[count_ - 1].right;
}

std::uint64_t SackScoreboard::sacked_bytes() const {
  std::uint64_t total = 0;
  for (std::uint32_t i = 0; i < count_; ++i) total += ranges_[i].right - ranges_[i].left;
  return total;
}

// ---- OutOfOrderRanges ----

void OutOfOrderRanges::remove(std::size_t index) {
  std::copy(ranges_.begin() + index + 1, ranges_.begin() + count_, ranges_.begin() + index);
  --count_;
}

bool OutOfOrderRanges::add(std::uint32_t left, std::uint32_t right) {
  if (!seq_lt(left, right)) return false;
  SeqRange added{left, right};
  bool merged_any = false;
  for (std::size_t i = 0; i < count_;) {
    if (mergeable(ranges_[i], added)) {
      added = merged(ranges_[i], added);
      remove(i);
      merged_any = true;
    } else {
      ++i;
    }
  }
  if (!merged_any && count_ == kCapacity) return false;
  // Most recent first.
  std::copy_backward(ranges_.begin(), ranges_.begin() + count_, ranges_.begin() + count_ + 1);
  ranges_[0] = added;
  ++count_;
  return true;
}

std::uint32_t OutOfOrderRanges::advance(std::uint32_t rcv_nxt) {
  // Each pass either consumes a range or stops, so at most kCapacity passes.
  for (bool changed = true; changed;) {
    changed = false;
    for (std::size_t i = 0; i < count_; ++i) {
      if (seq_le(ranges_[i].left, rcv_nxt)) {
        rcv_nxt = seq_max(rcv_nxt, ranges_[i].right);
        remove(i);
        changed = true;
        break;
      }
    }
  }
  return rcv_nxt;
}

std::size_t OutOfOrderRanges::sack_blocks(std::span<SackBlock> out,
                                          std::uint32_t most_recent_left) const {
  std::size_t written = 0;
  std::size_t first = count_;  // none
  for (std::size_t i = 0; i < count_; ++i) {
    if (seq_le(ranges_[i].left, most_recent_left) && seq_lt(most_recent_left, ranges_[i].right)) {
      first = i;
      break;
    }
  }
  if (first < count_ && written < out.size()) {
    out[written++] = {ranges_[first].left, ranges_[first].right};
  }
  for (std::size_t i = 0; i < count_ && written < out.size(); ++i) {
    if (i != first) out[written++] = {ranges_[i].left, ranges_[i].right};
  }
  return written;
}

}  // namespace flotilla::tcp
