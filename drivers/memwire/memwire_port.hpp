// A memwire: a wire between two Flotilla stacks (each with its own supervisor and pool) made of a
// shared file, for tests and for users without root. No device, no kernel: frames are copied into
// and out of fixed cells of two single-producer single-consumer rings, one per direction. Side A
// sends on ring 0 and receives on ring 1; side B the reverse.
//
// Layout of the file (all offsets fixed by the header, which is validated once at attach and never
// read again):
//   line 0           WireHeader: magic, version, cell size, cell count
//   lines 1, 2       SideState of side A and of side B (incarnation, pid; informational)
//   lines 3..6       ring 0 head, ring 0 tail, ring 1 head, ring 1 tail (a line each)
//   page 1 onward    ring 0 cells, then ring 1 cells; a cell is a 16-byte CellHeader (length)
//                    followed by up to kCellSize - 16 bytes of frame
//
// Indices count frames forever (64-bit). Each side publishes its index with one release store, so
// a side killed at any instant leaves only whole, unpublished cells behind, and its next
// incarnation carries on from the published index. The other side is untrusted: an index claiming
// more than `cell_count` frames, or a cell length out of range, is counted and never followed.
// Nonsense is repaired by whoever owns the index: service() republishes a side's own indices from
// its private copies, and attach resets an index that disagrees with the peer's (an empty ring).
//
// Who is attached: each side holds an open-file-description lock on one byte of the file (byte 0
// for A, 1 for B). The kernel drops it when the process dies, so peer_attached() (the "carrier")
// is right even after a SIGKILL, and a second live process cannot take the same side. The last
// side to close removes the file (it takes the peer's lock byte first, so a peer attaching at the
// same moment retries on a fresh file instead of joining a removed one).
//
// The file itself is trusted not to be truncated while mapped (both sides run as the same user; a
// regular file cannot be sealed like a memfd).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "dataplane/buffer_pool.hpp"
#include "dataplane/result.hpp"
#include "dataplane/unique_fd.hpp"
#include "drivers/packet_port.hpp"

namespace flotilla::drivers {

struct MemwireOptions {
  std::string path;  // e.g. /dev/shm/flotilla-wire-<name>
  enum class Side { a, b } side = Side::a;
  // Cells per ring, a power of two in [2, kMaxCells]; used only by the side that creates the
  // file (an attaching side adopts the file's count).
  std::uint32_t cells = 1024;
};

namespace memwire {

inline constexpr std::uint64_t kMagic = 0x65726957'6f6c6646ull;  // "FloWire"
inline constexpr std::uint32_t kVersion = 1;
inline constexpr std::uint32_t kCellSize = 2048;
inline constexpr std::uint32_t kCellHeaderSize = 16;
inline constexpr std::uint32_t kMaxFrame = kCellSize - kCellHeaderSize;
inline constexpr std::uint32_t kMaxCells = 1u << 16;

// Bytes a wire file with `cells` cells per ring occupies.
std::size_t file_size_for(std::uint32_t cells);

// Offsets a test may scribble on to check that nonsense is survived.
inline constexpr std::size_t kHeaderOffset = 0;
std::size_t head_offset(int ring);
std::size_t tail_offset(int ring);
std::size_t cell_offset(std::uint32_t cells, int ring, std::uint32_t cell);

}  // namespace memwire

// What a memwire counts beyond PortStats.
struct MemwireStats {
  std::uint64_t corrupt_indices = 0;  // episodes of a peer index out of range
  std::uint64_t bad_cells = 0;        // received cells with an impossible length (also rx_dropped)
  std::uint64_t index_repairs = 0;    // own published indices found changed and rewritten
  std::uint64_t attach_resets = 0;    // indices reset at attach because they made no sense
  std::uint64_t incarnation = 0;      // how many times this side has been attached, this one included
};

class MemwirePort final : public PacketPort {
 public:
  // Creates the wire file if it is missing (complete before it becomes visible: written under a
  // temporary name and linked into place), else validates it and attaches. Fails with
  // Errc::bad_layout for a file that is not a memwire, and Errc::exhausted when a live process
  // already holds this side.
  static Result<std::unique_ptr<MemwirePort>> open(const MemwireOptions& options, BufferPool& pool,
                                                   ComponentId owner);

  ~MemwirePort() override;
  MemwirePort(const MemwirePort&) = delete;
  MemwirePort& operator=(const MemwirePort&) = delete;

  std::size_t receive_burst(std::span<BufferHandle> out) override;
  std::size_t transmit_burst(std::span<const BufferHandle> frames) override;
  bool service() override;
  PortStats stats() const override { return stats_; }
  std::string describe() const override;

  // Whether the other side is attached right now (a system call: not for the hot path).
  bool peer_attached() const;
  MemwireStats wire_stats() const { return wire_stats_; }
  std::uint32_t cell_count() const { return cell_count_; }

 private:
  MemwirePort(BufferPool& pool, ComponentId owner);
  Status attach(const MemwireOptions& options);
  bool tail_in_range(std::uint64_t tail);
  bool head_in_range(std::uint64_t head);

  BufferPool* pool_;
  PoolCache cache_;
  ComponentId owner_;
  std::string path_;
  MemwireOptions::Side side_ = MemwireOptions::Side::a;
  UniqueFd fd_;
  std::byte* base_ = nullptr;
  std::size_t size_ = 0;
  std::uint32_t cell_count_ = 0;  // validated at attach; the shared header is never re-read
  std::uint64_t mask_ = 0;
  int tx_ring_ = 0;
  int rx_ring_ = 1;
  std::uint64_t tx_head_ = 0;  // our own indices, authoritative while we live
  std::uint64_t rx_tail_ = 0;
  bool tx_corrupt_ = false;  // inside an episode of nonsense from the peer (counted once)
  bool rx_corrupt_ = false;
  PortStats stats_;
  MemwireStats wire_stats_;
};

}  // namespace flotilla::drivers
