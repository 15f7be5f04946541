// A 64-byte aligned stand-in for a state-store region, for the table tests.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

namespace flotilla::ip::testing {

class TestRegion {
 public:
  explicit TestRegion(std::size_t bytes) : lines_((bytes + sizeof(Line) - 1) / sizeof(Line)) {}
  std::span<std::byte> bytes() { return std::as_writable_bytes(std::span(lines_)); }
  template <class Entry>
  Entry& entry(std::size_t index) {  // entry `index` of the table laid out in this region
    return reinterpret_cast<Entry*>(bytes().data() + 64)[index];
  }

 private:
  struct alignas(64) Line {
    std::byte bytes[64];
  };
  std::vector<Line> lines_;
};

}  // namespace flotilla::ip::testing
