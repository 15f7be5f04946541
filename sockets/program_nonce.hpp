// A number a socket layer picks once, when it attaches to its seat, and sends with what it asks
// of a server, which echoes it in what it sends back: a program on a seat another program left
// takes none of the messages meant for that one, which may still wait in the seat's rings with
// the same socket ids and tickets (every program counts them from the same start). Only equality
// is asked of it; the file fleet's client, whose servers need its request numbers to grow across
// a seat's programs, starts them from the seat's incarnation instead (fleet_connection.cpp).
#pragma once

#include <unistd.h>

#include <atomic>
#include <cstdint>

#include "dataplane/clock.hpp"
#include "dataplane/hash.hpp"

namespace flotilla::sockets {

// Never 0 (what a zeroed body carries); differs between programs, and between the objects of one.
inline std::uint32_t program_nonce() {
  static std::atomic<std::uint64_t> picked{0};
  std::uint32_t nonce = 0;
  while (nonce == 0) {
    nonce = static_cast<std::uint32_t>(
        mix64(monotonic_ns() ^ (static_cast<std::uint64_t>(::getpid()) << 32) ^ picked.fetch_add(1)));
  }
  return nonce;
}

}  // namespace flotilla::sockets
