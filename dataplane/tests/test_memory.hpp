// Page-aligned plain memory standing in for a shared region (or a state store) in unit tests.
#pragma once

#include <cstddef>
#include <algorithm>
#include <new>
#include <span>

namespace flotilla::testing {

class PageMemory {
 public:
  explicit PageMemory(std::size_t bytes)
      : bytes_(static_cast<std::byte*>(::operator new(bytes, std::align_val_t{4096}))), size_(bytes) {
    std::fill_n(bytes_, size_, std::byte{0});
  }
  ~PageMemory() { ::operator delete(bytes_, std::align_val_t{4096}); }
  PageMemory(const PageMemory&) = delete;
  PageMemory& operator=(const PageMemory&) = delete;
  std::span<std::byte> bytes() const { return {bytes_, size_}; }

 private:
  std::byte* bytes_;
  std::size_t size_;
};

}  // namespace flotilla::testing
