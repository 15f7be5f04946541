// Reads a libFuzzer input as a sequence of choices: bytes, integers and byte strings, each taken
// from the front and zero once the input runs out, so every input is a valid program.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string_view>
#include <vector>

namespace flotilla::fuzz {

class FuzzInput {
 public:
  FuzzInput(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}

  bool empty() const { return at_ >= size_; }
  std::size_t left() const { return size_ - at_; }

  template <class Integer>
  Integer take() {
    Integer value = 0;
    for (std::size_t i = 0; i < sizeof(Integer) && at_ < size_; ++i) {
      value = static_cast<Integer>(value | static_cast<Integer>(static_cast<Integer>(data_[at_++]) << (8 * i)));
    }
    return value;
  }
  std::uint8_t byte() { return take<std::uint8_t>(); }

  // Up to `most` bytes, as many as a length byte (or word) before them says.
  std::vector<std::byte> bytes(std::size_t most) {
    const std::size_t wanted = most <= 255 ? std::size_t{byte()} : std::size_t{take<std::uint16_t>()};
    const std::size_t count = std::min({wanted, most, left()});
    std::vector<std::byte> out(count);
    for (auto& b : out) b = static_cast<std::byte>(data_[at_++]);
    return out;
  }
  std::vector<std::byte> rest() {
    std::vector<std::byte> out(left());
    for (auto& b : out) b = static_cast<std::byte>(data_[at_++]);
    return out;
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t at_ = 0;
};

// A broken invariant: libFuzzer reports the abort with its input.
[[noreturn]] inline void invariant_broken() { std::abort(); }
inline void require(bool condition) {
  if (!condition) invariant_broken();
}

}  // namespace flotilla::fuzz
