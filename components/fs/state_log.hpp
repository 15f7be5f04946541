// A file server's tables in its state-store region, after LFS: a checkpoint of the whole tables
// plus a log of the changes since, so a restarted server finds every change it acknowledged.
//
// Layout (all offsets 8-byte aligned, host byte order):
//   [0, 64)                 RegionHeader: magic, layout, identity (server index and count),
//                           slot_bytes, log_bytes
//   [64, 64 + slot)         checkpoint slot A: SlotHeader, then the image
//   [64 + slot, 64 + 2slot) checkpoint slot B
//   [64 + 2slot, +log)      the log: records of RecordHeader + body, back to back
//
// A checkpoint goes to the slot not holding the newest valid one, its checksum written last; the
// newest slot whose checksum holds is the one used. Each record carries a sequence number (lsn)
// and a checksum over lsn, length and body. Replay starts at the chosen checkpoint's next_lsn at
// log offset 0 and stops at the first record that is torn (bad checksum) or stale (an lsn other
// than the next one): records from before the checkpoint carry smaller lsns, so leftovers are
// never taken for new ones. The log is rewound only after a checkpoint is complete, so a crash
// while writing one leaves the previous checkpoint and its log intact.
//
// Everything read from the region is validated: a torn or hostile region gives an error or an
// empty start, never an access outside the region.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>

#include "dataplane/result.hpp"

namespace flotilla::fs {

inline constexpr std::uint64_t kStateMagic = 0x31474f4c53465346ull;  // "FSFSLOG1"
inline constexpr std::uint32_t kStateLayout = 1;

std::uint64_t checksum64(std::span<const std::byte> bytes, std::uint64_t seed);

class StateLog {
 public:
  static constexpr std::size_t kRegionHeaderBytes = 64;
  static constexpr std::size_t kSlotHeaderBytes = 48;
  static constexpr std::size_t kRecordHeaderBytes = 24;

  // Reuses the region when its header matches `identity` and the region's size; formats it
  // otherwise (fresh() is then true). invalid_argument for a region too small or misaligned.
  static Result<StateLog> attach(std::span<std::byte> region, std::uint64_t identity);

  StateLog() = default;
  bool fresh() const { return fresh_; }

  // The newest valid checkpoint's image, empty when there is none.
  std::span<const std::byte> checkpoint() const;

  // Calls `apply` for each valid record after the checkpoint, in order, and leaves the log
  // positioned after the last one. Returns how many were replayed; stops early (with that error)
  // when `apply` fails.
  Result<std::size_t> replay(const std::function<Status(std::span<const std::byte>)>& apply);

  // Appends one record. Errc::exhausted when the log has no room for it (checkpoint, then retry).
  Status append(std::span<const std::byte> body);
  // Writes `image` as the new checkpoint and rewinds the log. Errc::exhausted when it is too big.
  Status write_checkpoint(std::span<const std::byte> image);

  std::size_t slot_capacity() const { return slot_bytes_ - kSlotHeaderBytes; }
  std::size_t log_capacity() const { return log_bytes_; }
  std::size_t log_used() const { return log_offset_; }
  std::uint64_t next_lsn() const { return next_lsn_; }

 private:
  std::byte* slot(int index) const;
  int newest_valid_slot() const;

  std::span<std::byte> region_;
  std::size_t slot_bytes_ = 0;
  std::size_t log_bytes_ = 0;
  std::size_t log_offset_ = 0;
  std::uint64_t next_lsn_ = 1;
  std::uint64_t generation_ = 0;
  int current_slot_ = -1;
  bool fresh_ = false;
};

}  // namespace flotilla::fs
