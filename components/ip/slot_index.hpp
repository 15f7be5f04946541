// A private hash index from a key's hash to an entry number in some table: open addressing with
// linear probing and backward-shift deletion, so removals leave no tombstones and lookups never
// degrade under churn. Sized once at construction (at most half full); no allocation afterwards.
// The tables (flows, ARP) keep their keys themselves; the index only stores hashes and entry
// numbers and asks the caller whether an entry matches.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace flotilla::ip {

class SlotIndex {
 public:
  explicit SlotIndex(std::size_t max_entries) {
    std::size_t size = 8;
    while (size < 2 * max_entries) size *= 2;
    cells_.assign(size, Cell{});
    mask_ = size - 1;
  }

  // The entry with this hash for which matches(entry) is true.
  template <class Matches>
  std::optional<std::uint32_t> find(std::uint64_t hash, Matches&& matches) const {
    const auto tag = static_cast<std::uint32_t>(hash);
    for (std::size_t i = tag & mask_;; i = (i + 1) & mask_) {
      const Cell& cell = cells_[i];
      if (cell.entry_plus_one == 0) return std::nullopt;
      if (cell.tag == tag && matches(cell.entry_plus_one - 1)) return cell.entry_plus_one - 1;
    }
  }

  // Precondition: fewer than max_entries are stored (the table tracks that).
  void insert(std::uint64_t hash, std::uint32_t entry) {
    const auto tag = static_cast<std::uint32_t>(hash);
    std::size_t i = tag & mask_;
    while (cells_[i].entry_plus_one != 0) i = (i + 1) & mask_;
    cells_[i] = Cell{tag, entry + 1};
  }

  // Removes `entry` (stored under `hash`). Returns false if it was not there.
  bool erase(std::uint64_t hash, std::uint32_t entry) {
    const auto tag = static_cast<std::uint32_t>(hash);
    std::size_t hole = tag & mask_;
    for (;; hole = (hole + 1) & mask_) {
      if (cells_[hole].entry_plus_one == 0) return false;
      if (cells_[hole].entry_plus_one == entry + 1) break;
    }
    // Pull later members of the cluster back into the hole when their home allows it.
    for (std::size_t next = (hole + 1) & mask_;; next = (next + 1) & mask_) {
      if (cells_[next].entry_plus_one == 0) break;
      const std::size_t home = cells_[next].tag & mask_;
      // `next` may move to `hole` unless its home lies cyclically in (hole, next].
      const bool home_after_hole = hole <= next ? (home > hole && home <= next)
                                                : (home > hole || home <= next);
      if (!home_after_hole) {
        cells_[hole] = cells_[next];
        hole = next;
      }
    }
    cells_[hole] = Cell{};
    return true;
  }

  void clear() {
    for (Cell& cell : cells_) cell = Cell{};
  }

  // The longest distance of any stored entry from its home cell: a measure of lookup cost.
  std::size_t longest_probe() const {
    std::size_t longest = 0;
    for (std::size_t i = 0; i <= mask_; ++i) {
      if (cells_[i].entry_plus_one == 0) continue;
      const std::size_t distance = (i - (cells_[i].tag & mask_)) & mask_;
      if (distance > longest) longest = distance;
    }
    return longest;
  }

 private:
  struct Cell {
    std::uint32_t tag = 0;             // the low 32 bits of the key's hash
    std::uint32_t entry_plus_one = 0;  // 0: empty cell
  };

  std::vector<Cell> cells_;
  std::size_t mask_ = 0;
};

}  // namespace flotilla::ip
