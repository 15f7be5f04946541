// Socket state the stack exposes to an application in shared memory, so the application can tell
// whether a socket is readable without a system call and without asking anyone. The UDP server
// writes it (the only writer); the application maps the region read-only and only loads from it.
//
// One region per application, named after its channel to the UDP server plus "-sockets" (for the
// channel "udp-echo": "udp-echo-sockets"), declared in the configuration with the UDP server as
// writer and the application as reader. Without the region, readiness falls back to whether the
// channel holds messages.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace flotilla::formats {

inline std::string exposed_region_name(std::string_view channel) { return std::string(channel) + "-sockets"; }

struct alignas(64) ExposedSocket {
  std::atomic<std::uint32_t> bound;      // 1 while the socket is open; published last
  std::uint32_t socket;                  // the application's socket id
  std::uint16_t local_port;
  std::uint16_t reserved[3];
  std::atomic<std::uint64_t> delivered;  // datagrams put on the application's channel
  std::atomic<std::uint64_t> dropped;    // datagrams lost because that channel was full
  std::atomic<std::uint64_t> sent;       // datagrams the application sent that went on to IP
};

struct alignas(64) ExposedSocketHeader {
  static constexpr std::uint64_t kMagic = 0x6b636f5370784546ull;  // "FExpSock"
  std::atomic<std::uint64_t> magic;
  std::uint32_t capacity;
  std::uint32_t reserved;
};

// A view of the region. The writer formats it; a reader checks it and treats every value as a hint
// (it was written by another process), never as an index it trusts blindly.
class ExposedSocketTable {
 public:
  static constexpr std::size_t bytes_for(std::size_t sockets) {
    return sizeof(ExposedSocketHeader) + sockets * sizeof(ExposedSocket);
  }

  // The writer's view: formats the region (all sockets closed). Empty view when it is too small.
  static ExposedSocketTable format(std::span<std::byte> region) {
    if (region.size() < bytes_for(1)) return {};
    auto* header = reinterpret_cast<ExposedSocketHeader*>(region.data());
    const auto capacity = static_cast<std::uint32_t>((region.size() - sizeof(ExposedSocketHeader)) / sizeof(ExposedSocket));
    header->magic.store(0, std::memory_order_relaxed);
    header->capacity = capacity;
    auto* slots = reinterpret_cast<ExposedSocket*>(region.data() + sizeof(ExposedSocketHeader));
    for (std::uint32_t i = 0; i < capacity; ++i) {
      slots[i].bound.store(0, std::memory_order_relaxed);
      slots[i].delivered.store(0, std::memory_order_relaxed);
      slots[i].dropped.store(0, std::memory_order_relaxed);
      slots[i].sent.store(0, std::memory_order_relaxed);
    }
    header->magic.store(ExposedSocketHeader::kMagic, std::memory_order_release);
    return ExposedSocketTable(slots, capacity);
  }

  // The reader's view: empty until the writer has formatted the region.
  static ExposedSocketTable read(std::span<const std::byte> region) {
    if (region.size() < bytes_for(1)) return {};
    const auto* header = reinterpret_cast<const ExposedSocketHeader*>(region.data());
    if (header->magic.load(std::memory_order_acquire) != ExposedSocketHeader::kMagic) return {};
    const std::size_t fits = (region.size() - sizeof(ExposedSocketHeader)) / sizeof(ExposedSocket);
    const std::size_t capacity = std::min<std::size_t>(header->capacity, fits);
    auto* slots = reinterpret_cast<ExposedSocket*>(const_cast<std::byte*>(region.data()) + sizeof(ExposedSocketHeader));
    return ExposedSocketTable(slots, static_cast<std::uint32_t>(capacity));
  }

  ExposedSocketTable() = default;
  bool valid() const { return slots_ != nullptr; }
  std::uint32_t capacity() const { return capacity_; }
  // nullptr for an index out of range.
  ExposedSocket* slot(std::uint32_t index) const { return index < capacity_ ? &slots_[index] : nullptr; }

 private:
  ExposedSocketTable(ExposedSocket* slots, std::uint32_t capacity) : slots_(slots), capacity_(capacity) {}
  ExposedSocket* slots_ = nullptr;
  std::uint32_t capacity_ = 0;
};

// Single-writer increment (the UDP server is the only writer).
inline void bump(std::atomic<std::uint64_t>& counter) {
  counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_release);
}

}  // namespace flotilla::formats
