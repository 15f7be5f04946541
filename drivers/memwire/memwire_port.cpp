// The memwire port: see memwire_port.hpp for the file layout and the rules about the other side.
#include "drivers/memwire/memwire_port.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <ctime>

#include "dataplane/cpu.hpp"

namespace flotilla::drivers {
namespace memwire {
namespace {

struct alignas(kCacheLine) WireHeader {
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t cell_size;
  std::uint32_t cell_count;
};

struct alignas(kCacheLine) SideState {
  std::atomic<std::uint64_t> incarnation;
  std::atomic<std::uint32_t> pid;  // informational; the lock byte says who is attached
};

constexpr std::size_t kSideOffset = kCacheLine;    // side a, then side b
constexpr std::size_t kIndexOffset = 3 * kCacheLine;  // ring 0 head, tail, ring 1 head, tail
constexpr std::size_t kCellsOffset = 4096;
static_assert(kIndexOffset + 4 * kCacheLine <= kCellsOffset);

bool valid_cell_count(std::uint32_t cells) {
  return cells >= 2 && cells <= kMaxCells && (cells & (cells - 1)) == 0;
}

std::atomic<std::uint64_t>* index_at(std::byte* base, std::size_t offset) {
  return reinterpret_cast<std::atomic<std::uint64_t>*>(base + offset);
}

SideState* side_state(std::byte* base, MemwireOptions::Side side) {
  return reinterpret_cast<SideState*>(base + kSideOffset +
                                      (side == MemwireOptions::Side::a ? 0 : kCacheLine));
}

// One byte of the file per side, locked with an open-file-description lock while attached.
off_t lock_byte(MemwireOptions::Side side) { return side == MemwireOptions::Side::a ? 0 : 1; }

MemwireOptions::Side other(MemwireOptions::Side side) {
  return side == MemwireOptions::Side::a ? MemwireOptions::Side::b : MemwireOptions::Side::a;
}

// F_SETLK without waiting: true when taken, false when another description holds it.
Result<bool> try_lock(int fd, off_t byte, short type) {
  struct flock lock {};
  lock.l_type = type;
  lock.l_whence = SEEK_SET;
  lock.l_start = byte;
  lock.l_len = 1;
  if (::fcntl(fd, F_OFD_SETLK, &lock) == 0) return true;
  if (errno == EAGAIN || errno == EACCES) return false;
  return Error::from_errno("fcntl(F_OFD_SETLK) memwire");
}

bool same_file(int fd, const std::string& path) {
  struct stat by_fd {};
  struct stat by_path {};
  if (::fstat(fd, &by_fd) != 0 || ::stat(path.c_str(), &by_path) != 0) return false;
  return by_fd.st_dev == by_path.st_dev && by_fd.st_ino == by_path.st_ino;
}

// Writes a complete, empty wire under a temporary name and links it into place, so no one ever
// sees a half-written header. Returns an invalid descriptor when someone else got there first.
Result<UniqueFd> create_file(const std::string& path, std::uint32_t cells) {
  static std::atomic<std::uint32_t> serial{0};
  const std::string temporary = path + ".tmp." + std::to_string(::getpid()) + "." +
                                std::to_string(serial.fetch_add(1));
  UniqueFd fd(::open(temporary.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd.valid()) return Error::from_errno("open memwire temporary file");
  const std::size_t size = file_size_for(cells);
  WireHeader header{};
  header.magic = kMagic;
  header.version = kVersion;
  header.cell_size = kCellSize;
  header.cell_count = cells;
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0 ||
      ::pwrite(fd.get(), &header, sizeof header, kHeaderOffset) !=
          static_cast<ssize_t>(sizeof header)) {
    Error error = Error::from_errno("write memwire file");
    ::unlink(temporary.c_str());
    return error;
  }
  const int linked = ::link(temporary.c_str(), path.c_str());
  const int link_errno = errno;
  ::unlink(temporary.c_str());
  if (linked == 0) return fd;
  if (link_errno == EEXIST) return UniqueFd{};
  errno = link_errno;
  return Error::from_errno("link memwire file");
}

}  // namespace

std::size_t file_size_for(std::uint32_t cells) {
  return kCellsOffset + std::size_t{2} * cells * kCellSize;
}
std::size_t head_offset(int ring) { return kIndexOffset + (2 * ring) * kCacheLine; }
std::size_t tail_offset(int ring) { return kIndexOffset + (2 * ring + 1) * kCacheLine; }
std::size_t cell_offset(std::uint32_t cells, int ring, std::uint32_t cell) {
  return kCellsOffset + (std::size_t{static_cast<std::uint32_t>(ring)} * cells + cell) * kCellSize;
}

}  // namespace memwire

using namespace memwire;

MemwirePort::MemwirePort(BufferPool& pool, ComponentId owner)
    : pool_(&pool), cache_(pool, owner), owner_(owner) {}

Result<std::unique_ptr<MemwirePort>> MemwirePort::open(const MemwireOptions& options,
                                                        BufferPool& pool, ComponentId owner) {
  if (options.path.empty() || !valid_cell_count(options.cells) || owner == kNoComponent) {
    return Error{Errc::invalid_argument, 0, "memwire options"};
  }
  std::unique_ptr<MemwirePort> port(new MemwirePort(pool, owner));
  if (auto status = port->attach(options); !status) return status.error();
  return port;
}

Status MemwirePort::attach(const MemwireOptions& options) {
  path_ = options.path;
  side_ = options.side;
  tx_ring_ = side_ == MemwireOptions::Side::a ? 0 : 1;
  rx_ring_ = 1 - tx_ring_;

  // A side may be held for a moment by a closing peer that is removing the file; a live holder
  // keeps it. So retry for a while (about 100 ms), reopening the path each time.
  constexpr int kAttempts = 100;
  for (int attempt = 0;; ++attempt) {
    if (attempt == kAttempts) return Error{Errc::exhausted, 0, "memwire side already attached"};
    if (attempt > 0) {
      const timespec pause{0, 1'000'000};
      ::nanosleep(&pause, nullptr);
    }
    UniqueFd fd(::open(path_.c_str(), O_RDWR | O_CLOEXEC));
    if (!fd.valid()) {
      if (errno != ENOENT) return Error::from_errno("open memwire file");
      auto created = create_file(path_, options.cells);
      if (!created) return created.error();
      if (!created->valid()) continue;  // lost the race to create: attach to the winner's file
      fd = std::move(created.value());
    }
    auto locked = try_lock(fd.get(), lock_byte(side_), F_WRLCK);
    if (!locked) return locked.error();
    if (!locked.value() || !same_file(fd.get(), path_)) continue;
    fd_ = std::move(fd);
    break;
  }

  WireHeader header{};
  struct stat info {};
  if (::pread(fd_.get(), &header, sizeof header, kHeaderOffset) !=
          static_cast<ssize_t>(sizeof header) ||
      ::fstat(fd_.get(), &info) != 0) {
    return Error{Errc::bad_layout, 0, "memwire file too short"};
  }
  if (header.magic != kMagic || header.version != kVersion || header.cell_size != kCellSize ||
      !valid_cell_count(header.cell_count) ||
      static_cast<std::uint64_t>(info.st_size) != file_size_for(header.cell_count)) {
    return Error{Errc::bad_layout, 0, "memwire header"};
  }
  cell_count_ = header.cell_count;
  mask_ = cell_count_ - 1;
  size_ = file_size_for(cell_count_);
  void* base = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
  if (base == MAP_FAILED) return Error::from_errno("mmap memwire file");
  base_ = static_cast<std::byte*>(base);

  SideState* state = side_state(base_, side_);
  wire_stats_.incarnation = state->incarnation.fetch_add(1, std::memory_order_acq_rel) + 1;
  state->pid.store(static_cast<std::uint32_t>(::getpid()), std::memory_order_release);

  // Carry on from the published indices when they agree with the peer's; otherwise start from the
  // peer's (an empty ring), which is the value a live peer is using.
  auto* tx_head = index_at(base_, head_offset(tx_ring_));
  const std::uint64_t tx_tail = index_at(base_, tail_offset(tx_ring_))->load(std::memory_order_acquire);
  tx_head_ = tx_head->load(std::memory_order_acquire);
  if (tx_head_ - tx_tail > cell_count_) {
    tx_head_ = tx_tail;
    tx_head->store(tx_head_, std::memory_order_release);
    ++wire_stats_.attach_resets;
  }
  auto* rx_tail = index_at(base_, tail_offset(rx_ring_));
  const std::uint64_t rx_head = index_at(base_, head_offset(rx_ring_))->load(std::memory_order_acquire);
  rx_tail_ = rx_tail->load(std::memory_order_acquire);
  if (rx_head - rx_tail_ > cell_count_) {
    rx_tail_ = rx_head;
    rx_tail->store(rx_tail_, std::memory_order_release);
    ++wire_stats_.attach_resets;
  }
  return {};
}

MemwirePort::~MemwirePort() {
  cache_.drain();
  if (base_ != nullptr) {
    side_state(base_, side_)->pid.store(0, std::memory_order_release);
  }
  if (!fd_.valid() || base_ == nullptr) return;  // never remove a file we could not validate
  // The last one out removes the file. Holding the peer's lock byte while unlinking means a peer
  // attaching right now fails its lock, retries, and creates a fresh file.
  auto peer_free = try_lock(fd_.get(), lock_byte(other(side_)), F_WRLCK);
  if (peer_free && peer_free.value() && same_file(fd_.get(), path_)) ::unlink(path_.c_str());
  ::munmap(base_, size_);
  // Closing the descriptor drops both locks.
}

bool MemwirePort::tail_in_range(std::uint64_t tail) {
  if (tx_head_ - tail <= cell_count_) {
    tx_corrupt_ = false;
    return true;
  }
  if (!tx_corrupt_) ++wire_stats_.corrupt_indices;
  tx_corrupt_ = true;
  return false;
}

bool MemwirePort::head_in_range(std::uint64_t head) {
  if (head - rx_tail_ <= cell_count_) {
    rx_corrupt_ = false;
    return true;
  }
  if (!rx_corrupt_) ++wire_stats_.corrupt_indices;
  rx_corrupt_ = true;
  return false;
}

std::size_t MemwirePort::receive_burst(std::span<BufferHandle> out) {
  if (out.empty()) return 0;
  auto* tail_index = index_at(base_, tail_offset(rx_ring_));
  const std::uint64_t head = index_at(base_, head_offset(rx_ring_))->load(std::memory_order_acquire);
  if (!head_in_range(head)) {
    // Skip whatever the ring claims to hold: the frames in flight are lost, nothing is followed.
    // If the head was the nonsense, the producer's next publish puts it right and we resync again.
    rx_tail_ = head;
    tail_index->store(rx_tail_, std::memory_order_release);
    return 0;
  }
  const std::size_t waiting = std::min<std::uint64_t>(head - rx_tail_, out.size());
  if (waiting == 0) return 0;
  // Frames stay in the ring when the pool is short: the sender sees a full ring, nothing is lost.
  const std::size_t taken = cache_.alloc_burst(out.first(waiting));
  std::size_t delivered = 0;
  for (std::size_t i = 0; i < taken; ++i) {
    std::byte* cell = base_ + cell_offset(cell_count_, rx_ring_,
                                          static_cast<std::uint32_t>((rx_tail_ + i) & mask_));
    const std::uint32_t length =
        std::atomic_ref<std::uint32_t>(*reinterpret_cast<std::uint32_t*>(cell))
            .load(std::memory_order_relaxed);
    BufferHandle handle = out[i];
    if (length == 0 || length > kMaxFrame || length > pool_->buffer_size()) {
      ++wire_stats_.bad_cells;
      ++stats_.rx_dropped;
      (void)cache_.free(handle);  // fresh from the cache: cannot fail
      continue;
    }
    handle.offset = 0;
    handle.length = static_cast<std::uint16_t>(length);
    auto bytes = pool_->bytes(owner_, handle);
    if (!bytes) {  // cannot happen for a handle the cache just gave us; never write blind
      ++stats_.rx_dropped;
      continue;
    }
    std::memcpy(bytes->data(), cell + kCellHeaderSize, length);
    out[delivered++] = handle;
    stats_.rx_bytes += length;
  }
  rx_tail_ += taken;
  tail_index->store(rx_tail_, std::memory_order_release);
  stats_.rx_frames += delivered;
  return delivered;
}

std::size_t MemwirePort::transmit_burst(std::span<const BufferHandle> frames) {
  if (frames.empty()) return 0;
  const std::uint64_t tail = index_at(base_, tail_offset(tx_ring_))->load(std::memory_order_acquire);
  if (!tail_in_range(tail)) return 0;  // looks full until the consumer puts its index right
  const std::size_t accepted = std::min<std::uint64_t>(cell_count_ - (tx_head_ - tail), frames.size());
  std::uint64_t written = 0;
  for (std::size_t i = 0; i < accepted; ++i) {
    const BufferHandle& handle = frames[i];
    auto bytes = pool_->bytes(owner_, handle);
    if (!bytes) {  // not ours to send or free; the pool has counted it
      ++stats_.tx_dropped;
      continue;
    }
    if (handle.length == 0 || handle.length > kMaxFrame) {
      ++stats_.tx_dropped;
      (void)cache_.free(handle);
      continue;
    }
    std::byte* cell = base_ + cell_offset(cell_count_, tx_ring_,
                                          static_cast<std::uint32_t>((tx_head_ + written) & mask_));
    std::memcpy(cell + kCellHeaderSize, bytes->data(), handle.length);
    std::atomic_ref<std::uint32_t>(*reinterpret_cast<std::uint32_t*>(cell))
        .store(handle.length, std::memory_order_relaxed);
    stats_.tx_bytes += handle.length;
    ++written;
    (void)cache_.free(handle);  // checked by bytes() above
  }
  if (written > 0) {
    tx_head_ += written;
    index_at(base_, head_offset(tx_ring_))->store(tx_head_, std::memory_order_release);
    stats_.tx_frames += written;
  }
  return accepted;
}

bool MemwirePort::service() {
  // Put back our own published indices if anything scribbled on them: the peer judges us by them.
  bool repaired = false;
  auto* head = index_at(base_, head_offset(tx_ring_));
  if (head->load(std::memory_order_relaxed) != tx_head_) {
    head->store(tx_head_, std::memory_order_release);
    repaired = true;
  }
  auto* tail = index_at(base_, tail_offset(rx_ring_));
  if (tail->load(std::memory_order_relaxed) != rx_tail_) {
    tail->store(rx_tail_, std::memory_order_release);
    repaired = true;
  }
  if (repaired) ++wire_stats_.index_repairs;
  return repaired;
}

bool MemwirePort::peer_attached() const {
  struct flock lock {};
  lock.l_type = F_WRLCK;
  lock.l_whence = SEEK_SET;
  lock.l_start = lock_byte(other(side_));
  lock.l_len = 1;
  if (::fcntl(fd_.get(), F_OFD_GETLK, &lock) != 0) return false;
  return lock.l_type != F_UNLCK;
}

std::string MemwirePort::describe() const {
  return "memwire " + path_ + " side " + (side_ == MemwireOptions::Side::a ? "a" : "b") + " (" +
         std::to_string(cell_count_) + " cells, peer " +
         (peer_attached() ? "attached" : "absent") + ")";
}

}  // namespace flotilla::drivers
