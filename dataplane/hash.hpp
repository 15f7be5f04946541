// A 64-bit mixing function (the splitmix64 finalizer): cheap, and every input bit reaches every
// output bit. For spreading keys and making checksums that catch torn or garbled messages; not
// for anything an adversary chooses.
#pragma once

#include <cstdint>

namespace flotilla {

inline std::uint64_t mix64(std::uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace flotilla
