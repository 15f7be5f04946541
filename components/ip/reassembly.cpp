// Fragment bookkeeping for the reassembler (rules in reassembly.hpp).
#include "components/ip/reassembly.hpp"

#include <algorithm>
#include <cstring>

namespace flotilla::ip {
namespace {

constexpr std::size_t kBlock = 8;
using Kind = ReassemblyOutcome::Kind;

}  // namespace

Reassembler::Reassembler(std::size_t max_datagrams, std::size_t max_datagram_bytes,
                         std::uint64_t timeout_ms)
    : slots_(max_datagrams), max_bytes_(max_datagram_bytes), timeout_ms_(timeout_ms) {
  const std::size_t blocks = (max_datagram_bytes + kBlock - 1) / kBlock;
  for (Slot& slot : slots_) {
    slot.data.resize(max_datagram_bytes);
    slot.covered.assign(blocks + 1, false);
    slot.starts.assign(blocks + 1, false);
  }
}

Reassembler::Slot* Reassembler::find(const FragmentKey& key, std::uint64_t now_ms) {
  for (Slot& slot : slots_) {
    if (!slot.busy || !(slot.key == key)) continue;
    if (!timed_out_at(slot, now_ms)) return &slot;
    release(slot);
    ++timed_out;
    return nullptr;
  }
  return nullptr;
}

Reassembler::Slot* Reassembler::take_free(const FragmentKey& key, std::uint64_t now_ms) {
  Slot* chosen = nullptr;
  for (Slot& slot : slots_) {
    if (slot.busy && timed_out_at(slot, now_ms)) {
      release(slot);
      ++timed_out;
    }
    if (!slot.busy && !chosen) chosen = &slot;
  }
  if (!chosen) return nullptr;
  chosen->busy = true;
  chosen->has_last = false;
  chosen->key = key;
  chosen->first_seen = now_ms;
  chosen->total = chosen->received = chosen->max_end = 0;
  std::fill(chosen->covered.begin(), chosen->covered.end(), false);
  std::fill(chosen->starts.begin(), chosen->starts.end(), false);
  return chosen;
}

bool Reassembler::is_exact_duplicate(const Slot& slot, std::size_t offset, std::size_t end,
                                     bool more_fragments, std::span<const std::byte> payload) {
  // The earlier fragment must have meant the same thing about the end of the datagram.
  const bool same_end_meaning =
      more_fragments ? !(slot.has_last && end >= slot.total) : (slot.has_last && slot.total == end);
  if (!same_end_meaning) return false;
  const std::size_t first = offset / kBlock;
  const std::size_t past = (end + kBlock - 1) / kBlock;
  if (past == first) return true;  // an empty last fragment, repeated
  if (!slot.starts[first]) return false;
  for (std::size_t block = first; block < past; ++block) {
    if (!slot.covered[block] || (block != first && slot.starts[block])) return false;
  }
  // The earlier fragment ended exactly here: another starts, or nothing follows.
  if (past < slot.covered.size() && slot.covered[past] && !slot.starts[past]) return false;
  return std::memcmp(slot.data.data() + offset, payload.data(), payload.size()) == 0;
}

ReassemblyOutcome Reassembler::offer(const FragmentKey& key, std::size_t offset_bytes,
                                     bool more_fragments, std::span<const std::byte> payload,
                                     std::uint64_t now_ms) {
  if (offset_bytes == 0 && !more_fragments) return {Kind::complete, payload};  // not a fragment
  const std::size_t length = payload.size();
  if (offset_bytes % kBlock != 0 || (more_fragments && (length == 0 || length % kBlock != 0))) {
    ++bad_fragments;
    return {Kind::bad_fragment, {}};
  }
  const std::size_t end = offset_bytes + length;
  Slot* slot = find(key, now_ms);
  if (end > max_bytes_) {
    if (slot) release(*slot);
    ++too_large;
    return {Kind::too_large, {}};
  }
  if (!slot) slot = take_free(key, now_ms);
  if (!slot) {
    ++no_slot;
    return {Kind::no_slot, {}};
  }

  const std::size_t first = offset_bytes / kBlock;
  const std::size_t past = (end + kBlock - 1) / kBlock;
  bool any_covered = false;
  for (std::size_t block = first; block < past; ++block) any_covered |= slot->covered[block];
  // Agreement with the end of the datagram, from either side.
  const bool past_known_end = slot->has_last && end > slot->total;
  const bool end_conflict = !more_fragments && (slot->has_last ? slot->total != end
                                                               : slot->max_end > end);
  const bool second_empty_last = length == 0 && slot->has_last;
  if (any_covered || past_known_end || end_conflict || second_empty_last) {
    if (is_exact_duplicate(*slot, offset_bytes, end, more_fragments, payload)) {
      ++duplicates;
      return {Kind::incomplete, {}};
    }
    release(*slot);
    ++overlaps;
    return {Kind::overlap, {}};
  }

  if (length > 0) std::memcpy(slot->data.data() + offset_bytes, payload.data(), length);
  for (std::size_t block = first; block < past; ++block) slot->covered[block] = true;
  if (length > 0) slot->starts[first] = true;
  slot->received += length;
  slot->max_end = std::max(slot->max_end, end);
  if (!more_fragments) {
    slot->has_last = true;
    slot->total = end;
  }
  if (slot->has_last && slot->received == slot->total) {
    release(*slot);
    ++completed;
    return {Kind::complete, std::span<const std::byte>(slot->data.data(), slot->total)};
  }
  return {Kind::incomplete, {}};
}

std::size_t Reassembler::expire(std::uint64_t now_ms) {
  std::size_t expired = 0;
  for (Slot& slot : slots_) {
    if (slot.busy && timed_out_at(slot, now_ms)) {
      release(slot);
      ++timed_out;
      ++expired;
    }
  }
  return expired;
}

std::size_t Reassembler::in_progress() const {
  return static_cast<std::size_t>(
      std::count_if(slots_.begin(), slots_.end(), [](const Slot& slot) { return slot.busy; }));
}

}  // namespace flotilla::ip
