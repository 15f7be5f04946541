#include "dataplane/result.hpp"

#include <cstring>

namespace flotilla {

const char* to_string(Errc code) {
  switch (code) {
    case Errc::system: return "system call failed";
    case Errc::invalid_argument: return "invalid argument";
    case Errc::bad_layout: return "shared header fails validation";
    case Errc::corrupt_index: return "ring index out of range";
    case Errc::bad_handle: return "buffer handle out of range";
    case Errc::stale_handle: return "stale buffer handle";
    case Errc::not_owner: return "buffer owned by another component";
    case Errc::exhausted: return "no free resource";
    case Errc::truncated: return "payload truncated";
    case Errc::closed: return "peer closed";
    case Errc::would_block: return "would block";
  }
  return "unknown error";
}

std::string Error::message() const {
  std::string text = context;
  if (!text.empty()) text += ": ";
  text += to_string(code);
  if (code == Errc::system) {
    text += " (";
    text += std::strerror(sys_errno);
    text += ")";
  }
  return text;
}

}  // namespace flotilla
