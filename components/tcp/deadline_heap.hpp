// An indexed binary min-heap of per-slot deadlines with capacity fixed at construction: each slot
// (connection) has at most one entry, so setting, moving and clearing a deadline is O(log n) and
// finding what is due is O(1) per due slot. The TCP engine keeps one entry per connection: the
// earliest of its timers. Only the slots that have had an entry cost memory (zeroed_array.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "components/tcp/zeroed_array.hpp"

namespace flotilla::tcp {

class DeadlineHeap {
 public:
  static constexpr std::uint64_t kNever = UINT64_MAX;

  explicit DeadlineHeap(std::size_t slots)
      : heap_(std::make_unique_for_overwrite<std::uint32_t[]>(slots)),
        position_(slots),
        deadline_(std::make_unique_for_overwrite<std::uint64_t[]>(slots)),
        slots_(slots) {}

  // kNever removes the slot's entry.
  void set(std::uint32_t slot, std::uint64_t deadline) {
    if (position_[slot] == kAbsent) {
      if (deadline == kNever) return;
      deadline_[slot] = deadline;
      heap_[size_] = slot;
      place(slot, size_);
      ++size_;
      sift_up(size_ - 1);
      return;
    }
    if (deadline == kNever) {
      remove(slot);
      return;
    }
    const std::uint64_t old = deadline_[slot];
    deadline_[slot] = deadline;
    if (deadline < old) {
      sift_up(position(slot));
    } else if (deadline > old) {
      sift_down(position(slot));
    }
  }

  std::uint64_t earliest() const { return size_ == 0 ? kNever : deadline_[heap_[0]]; }
  std::uint32_t earliest_slot() const { return heap_[0]; }
  std::uint64_t deadline(std::uint32_t slot) const { return position_[slot] == kAbsent ? kNever : deadline_[slot]; }
  std::size_t size() const { return size_; }
  std::size_t slots() const { return slots_; }

 private:
  // position_ holds a slot's place in heap_ plus one, so the zeroed array starts with every slot
  // absent; a slot's deadline_ means something only while it is present.
  static constexpr std::uint32_t kAbsent = 0;
  std::size_t position(std::uint32_t slot) const { return position_[slot] - 1; }
  void place(std::uint32_t slot, std::size_t at) { position_[slot] = static_cast<std::uint32_t>(at + 1); }

  void remove(std::uint32_t slot) {
    const std::size_t at = position(slot);
    position_[slot] = kAbsent;
    --size_;
    if (at == size_) return;
    heap_[at] = heap_[size_];
    const std::uint32_t moved = heap_[at];
    place(moved, at);
    sift_up(at);
    sift_down(position(moved));
  }

  void swap_entries(std::size_t a, std::size_t b) {
    const std::uint32_t slot_a = heap_[a];
    heap_[a] = heap_[b];
    heap_[b] = slot_a;
    place(heap_[a], a);
    place(heap_[b], b);
  }

  void sift_up(std::size_t at) {
    while (at > 0) {
      const std::size_t parent = (at - 1) / 2;
      if (deadline_[heap_[parent]] <= deadline_[heap_[at]]) break;
      swap_entries(parent, at);
      at = parent;
    }
  }

  void sift_down(std::size_t at) {
    for (;;) {
      const std::size_t left = 2 * at + 1;
      if (left >= size_) break;
      std::size_t smallest = left;
      const std::size_t right = left + 1;
      if (right < size_ && deadline_[heap_[right]] < deadline_[heap_[left]]) smallest = right;
      if (deadline_[heap_[at]] <= deadline_[heap_[smallest]]) break;
      swap_entries(at, smallest);
      at = smallest;
    }
  }

  std::unique_ptr<std::uint32_t[]> heap_;
  ZeroedArray<std::uint32_t> position_;
  std::unique_ptr<std::uint64_t[]> deadline_;
  std::size_t slots_ = 0;
  std::size_t size_ = 0;
};

}  // namespace flotilla::tcp
