#include "components/name/name_errors.hpp"

namespace flotilla::name {

const char* to_string(NameErrc code) {
  switch (code) {
    case NameErrc::ok: return "ok";
    case NameErrc::bad_name: return "malformed name";
    case NameErrc::not_found: return "name not found";
    case NameErrc::exists: return "name already exists";
    case NameErrc::reserved: return "name lies in a sub-domain reserved by another owner";
    case NameErrc::not_owner: return "entry belongs to another owner";
    case NameErrc::wrong_kind: return "entry has the wrong kind for this operation";
    case NameErrc::conflict: return "lost to a concurrent change";
    case NameErrc::stale: return "receiver no longer holds that name at that incarnation";
    case NameErrc::unavailable: return "name fleet unavailable";
    case NameErrc::bad_request: return "malformed request";
  }
  return "unknown name error";
}

}  // namespace flotilla::name
