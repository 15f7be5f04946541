// Finds a connection slot by its 4-tuple: open addressing with linear probing over a power-of-two
// bucket array sized at construction (at least twice the slots, so probes stay short), with
// backward-shift deletion so no tombstones build up. No allocation after construction, and only the
// buckets ever written cost memory (zeroed_array.hpp).
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

#include "components/tcp/engine.hpp"
#include "components/tcp/zeroed_array.hpp"
#include "dataplane/hash.hpp"

namespace flotilla::tcp {

class FlowIndex {
 public:
  static constexpr std::uint32_t kMissing = UINT32_MAX;

  explicit FlowIndex(std::size_t slots)
      : mask_(std::bit_ceil(slots * 2 < 16 ? std::size_t{16} : slots * 2) - 1),
        buckets_(mask_ + 1) {}

  static std::uint64_t hash(const FourTuple& tuple) {
    const std::uint64_t addresses = (std::uint64_t{tuple.local_address} << 32) | tuple.remote_address;
    const std::uint64_t ports = (std::uint64_t{tuple.local_port} << 16) | tuple.remote_port;
    return mix64(addresses ^ mix64(ports + 0x9e3779b97f4a7c15ull));
  }

  std::uint32_t find(const FourTuple& tuple) const {
    for (std::size_t at = hash(tuple) & mask_;; at = (at + 1) & mask_) {
      const Bucket& bucket = buckets_[at];
      if (bucket.empty()) return kMissing;
      if (bucket.tuple == tuple) return bucket.slot();
    }
  }

  // The caller ensures the tuple is absent and fewer than `slots` entries exist.
  void insert(const FourTuple& tuple, std::uint32_t slot) {
    std::size_t at = hash(tuple) & mask_;
    while (!buckets_[at].empty()) at = (at + 1) & mask_;
    buckets_[at] = Bucket{tuple, slot + 1};
  }

  void erase(const FourTuple& tuple) {
    std::size_t at = hash(tuple) & mask_;
    for (;; at = (at + 1) & mask_) {
      if (buckets_[at].empty()) return;
      if (buckets_[at].tuple == tuple) break;
    }
    // Backward shift: pull later entries of the probe run into the hole when their home allows.
    std::size_t hole = at;
    for (std::size_t next = (hole + 1) & mask_; !buckets_[next].empty(); next = (next + 1) & mask_) {
      const std::size_t home = hash(buckets_[next].tuple) & mask_;
      const bool home_in_gap = hole <= next ? (home > hole && home <= next) : (home > hole || home <= next);
      if (home_in_gap) continue;
      buckets_[hole] = buckets_[next];
      hole = next;
    }
    buckets_[hole] = Bucket{};
  }

 private:
  // All zero (as the array starts) is empty: the slot is kept plus one.
  struct Bucket {
    FourTuple tuple;
    std::uint32_t slot_plus_one = 0;
    bool empty() const { return slot_plus_one == 0; }
    std::uint32_t slot() const { return slot_plus_one - 1; }
  };

  std::size_t mask_;
  ZeroedArray<Bucket> buckets_;
};

}  // namespace flotilla::tcp
