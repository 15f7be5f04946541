// RFC 6528 initial sequence numbers (see isn.hpp).
#include "components/tcp/algorithms/isn.hpp"

#include "components/tcp/algorithms/siphash.hpp"

namespace flotilla::tcp {

std::uint32_t initial_sequence(const FourTuple& tuple, const std::uint64_t secret[2],
                               std::uint64_t now_ns) {
  const auto clock = static_cast<std::uint32_t>(now_ns / kIsnTickNs);  // M, wraps like RFC 9293's
  const auto offset =
      static_cast<std::uint32_t>(siphash24_tuple(secret, tuple, TupleHashPurpose::isn));
  return clock + offset;
}

}  // namespace flotilla::tcp
