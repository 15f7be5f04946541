// Names of the wire errors, for counters and logs.
#include "components/wire/errors.hpp"

namespace flotilla::wire {

const char* wire_error_name(WireError error) {
  switch (error) {
    case WireError::too_short: return "too_short";
    case WireError::bad_version: return "bad_version";
    case WireError::bad_header_length: return "bad_header_length";
    case WireError::bad_total_length: return "bad_total_length";
    case WireError::bad_length: return "bad_length";
    case WireError::bad_checksum: return "bad_checksum";
    case WireError::bad_option: return "bad_option";
    case WireError::unsupported: return "unsupported";
  }
  return "unknown";
}

static_assert(static_cast<std::size_t>(WireError::unsupported) + 1 == kWireErrorCount,
              "kWireErrorCount must follow the last WireError");

}  // namespace flotilla::wire
