// The 4-tuple naming one TCP connection. Its own header so that the pure algorithms (ISNs, SYN
// cookies) can use it without the engine.
#pragma once

#include <cstdint>
#include <type_traits>

namespace flotilla::tcp {

struct FourTuple {
  std::uint32_t local_address = 0;  // host order
  std::uint32_t remote_address = 0;
  std::uint16_t local_port = 0;
  std::uint16_t remote_port = 0;
  friend bool operator==(const FourTuple&, const FourTuple&) = default;
};

// Control-block state in shared memory: copyable as bytes, no pointers.
static_assert(std::is_trivially_copyable_v<FourTuple> && std::is_standard_layout_v<FourTuple>);

}  // namespace flotilla::tcp
