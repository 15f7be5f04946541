// Outcomes of name-fleet operations. The dataplane's Errc speaks about rings and buffers; names
// need their own vocabulary (exists, not found, stale, ...), which also travels in replies.
#pragma once

#include <cstdint>

namespace flotilla::name {

enum class NameErrc : std::uint8_t {
  ok = 0,
  bad_name,     // not absolute, empty component, bad character, or longer than kMaxNameBytes
  not_found,    // no such name (or a group whose members are all gone)
  exists,       // the name (or something beneath a reservation) is already taken
  reserved,     // beneath a sub-domain another owner reserved
  not_owner,    // changing an entry that belongs to another owner
  wrong_kind,   // e.g. adding a group member to a direct name
  conflict,     // lost to a concurrent change; the fleet retries it, a client never sees it
  stale,        // the receiver is no longer registered under that name at that incarnation
  unavailable,  // the fleet could not finish in time (members unreachable)
  bad_request,  // a request with fields out of range
};
inline constexpr std::uint8_t kLastNameErrc = static_cast<std::uint8_t>(NameErrc::bad_request);

const char* to_string(NameErrc code);

}  // namespace flotilla::name
