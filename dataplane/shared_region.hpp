// A named shared-memory region on a memfd. The creator seals its size, so a peer that maps it can
// never be made to fault by someone shrinking the file. Regions travel between processes as file
// descriptors (see fd_passing.hpp).
#pragma once

#include <cstddef>
#include <span>
#include <string_view>
#include <utility>

#include "dataplane/result.hpp"
#include "dataplane/unique_fd.hpp"

namespace flotilla {

// Zeroes `bytes` and, where they are whole memory pages of a shared mapping, gives those pages
// back to the system (MADV_REMOVE: shared memory allocates a page only when it is written again).
// Memory that is not shared (a test's buffer) is zeroed in place.
void discard_memory(std::span<std::byte> bytes);

class SharedRegion {
 public:
  enum class Access { read_write, read_only };
  // `at_map`: the page faults are taken when the region is mapped (regions up to 64 MiB), not on
  // the data path. `on_use`: pages are allocated as they are touched, for the channels of
  // application seats, which cost nothing until a program leases the seat.
  enum class Faults { at_map, on_use };

  // Creates a zero-filled region of `size` bytes (rounded up to a page), mapped read-write.
  static Result<SharedRegion> create(std::string_view name, std::size_t size, Faults faults = Faults::at_map);
  // Maps a region received from another process. Refuses a file that is not sealed against
  // shrinking, since a peer could truncate it and make every access fault.
  static Result<SharedRegion> attach(UniqueFd fd, Access access = Access::read_write, Faults faults = Faults::at_map);

  SharedRegion() = default;  // holds nothing: size 0, no descriptor
  SharedRegion(SharedRegion&& other) noexcept;
  SharedRegion& operator=(SharedRegion&& other) noexcept;
  SharedRegion(const SharedRegion&) = delete;
  SharedRegion& operator=(const SharedRegion&) = delete;
  ~SharedRegion();

  std::byte* data() const { return base_; }
  std::size_t size() const { return size_; }
  std::span<std::byte> bytes() const { return {base_, size_}; }
  int fd() const { return fd_.get(); }
  // The same memory known by another descriptor (a copy of this one); gives back the old one.
  UniqueFd replace_descriptor(UniqueFd copy) { return std::exchange(fd_, std::move(copy)); }
  Access access() const { return access_; }

  // A new descriptor to the same memory that can only be mapped read-only: what the supervisor
  // hands to a component that may look but not touch (the packet filter's view of the pool).
  Result<UniqueFd> reopen_read_only() const;

  // A pointer to a T at `offset`, or nullptr when T would not fit inside the region.
  template <class T>
  T* at(std::size_t offset) const {
    if (offset > size_ || size_ - offset < sizeof(T) || offset % alignof(T) != 0) return nullptr;
    return reinterpret_cast<T*>(base_ + offset);
  }

 private:
  SharedRegion(UniqueFd fd, std::byte* base, std::size_t size, Access access)
      : fd_(std::move(fd)), base_(base), size_(size), access_(access) {}
  void unmap();

  UniqueFd fd_;
  std::byte* base_ = nullptr;
  std::size_t size_ = 0;
  Access access_ = Access::read_write;
};

}  // namespace flotilla
