// Why a packet failed validation, and Checked<V>: a view that either parsed or says why not.
// Every parser in wire/ returns Checked; callers count the error and drop the packet.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <variant>

namespace flotilla::wire {

enum class WireError : std::uint8_t {
  too_short,          // fewer bytes than the fixed header needs
  bad_version,        // IP version field is not 4
  bad_header_length,  // header length field too small or past the buffer
  bad_total_length,   // IPv4 total length below the header or past the buffer
  bad_length,         // a length field (UDP) below its minimum or past the buffer
  bad_checksum,       // the checksum does not verify
  bad_option,         // an option is malformed (zero length, runs past the header, wrong size)
  unsupported,        // well formed but not something we handle (e.g. non-Ethernet ARP)
};

// One past the last enumerator; sized for per-error counter arrays.
inline constexpr std::size_t kWireErrorCount = 8;

// snake_case, exactly the enumerator's name ("too_short", ...); "unknown" for out-of-range values.
const char* wire_error_name(WireError error);

template <class V>
class [[nodiscard]] Checked {
 public:
  Checked(V value) : state_(std::move(value)) {}  // NOLINT: implicit by design, like Result
  Checked(WireError error) : state_(error) {}      // NOLINT

  bool ok() const { return state_.index() == 0; }
  explicit operator bool() const { return ok(); }

  V& value() { return std::get<0>(state_); }
  const V& value() const { return std::get<0>(state_); }
  V* operator->() { return &value(); }
  const V* operator->() const { return &value(); }
  V& operator*() { return value(); }
  const V& operator*() const { return value(); }

  WireError error() const { return std::get<1>(state_); }

 private:
  std::variant<V, WireError> state_;
};

}  // namespace flotilla::wire
