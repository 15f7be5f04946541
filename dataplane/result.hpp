// Errors every fallible runtime call returns. The caller must look at them: Result is [[nodiscard]].
#pragma once

#include <cerrno>
#include <cstdint>
#include <string>
#include <utility>
#include <variant>

namespace flotilla {

enum class Errc : std::uint16_t {
  system,            // a system call failed; Error::sys_errno says why
  invalid_argument,  // the caller passed something that cannot work
  bad_layout,        // a shared header (ring, pool, region) fails validation
  corrupt_index,     // a ring index another process wrote is out of range
  bad_handle,        // a buffer handle names no buffer of this pool, or lies outside it
  stale_handle,      // the buffer was freed or reused since the handle was made
  not_owner,         // the buffer belongs to another component
  exhausted,         // no free buffer or slot
  truncated,         // a message or control payload did not fit
  closed,            // the peer hung up
  would_block,       // nothing to do yet (no data, no room, no connection): retry when ready
};

const char* to_string(Errc code);

struct Error {
  Errc code;
  int sys_errno = 0;  // set when code == Errc::system
  const char* context = "";  // static string naming the operation, e.g. "memfd_create"

  static Error from_errno(const char* context) { return Error{Errc::system, errno, context}; }
  std::string message() const;
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Error error) : state_(error) {}         // NOLINT

  bool ok() const { return state_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(state_); }
  T&& value() && { return std::get<0>(std::move(state_)); }
  const T& value() const& { return std::get<0>(state_); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const { return std::get<1>(state_); }

 private:
  std::variant<T, Error> state_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(error), failed_(true) {}  // NOLINT

  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const Error& error() const { return error_; }

 private:
  Error error_{Errc::system};
  bool failed_ = false;
};

using Status = Result<void>;

}  // namespace flotilla
